import pytest

from apache_metrics_exporter.discovery import discover_urls, listen_url
from apache_metrics_exporter.errors import UsageError


@pytest.mark.parametrize("args,url", [
    (["80"], "http://127.0.0.1/server-status"),
    (["8080"], "http://127.0.0.1:8080/server-status"),
    (["0.0.0.0:81"], "http://127.0.0.1:81/server-status"),
    (["*:8081"], "http://127.0.0.1:8081/server-status"),
    (["10.1.2.3:80"], "http://10.1.2.3/server-status"),
    (["443"], "https://127.0.0.1/server-status"),
    (["8443", "https"], "https://127.0.0.1:8443/server-status"),
    (["443", "http"], "http://127.0.0.1:443/server-status"),
    (["[::]:80"], "http://[::1]/server-status"),
    (["[::1]:8080"], "http://[::1]:8080/server-status"),
    (["[2001:db8::5]:8443", "https"], "https://[2001:db8::5]:8443/server-status"),
])
def test_listen_directives(args, url):
    assert listen_url(args) == url


@pytest.mark.parametrize("args", [[], ["bogus"], ["0"], ["70000"], ["host:port"]])
def test_unusable_listen_directives(args):
    assert listen_url(args) is None


def test_debian_ports_conf(tmp_path):
    conf = tmp_path / "ports.conf"
    conf.write_text("# If you just change the port...\n"
                    "Listen 8081\n\n<IfModule ssl_module>\n\tListen 443\n</IfModule>\n"
                    "#Listen 9999\n")
    assert discover_urls(str(conf)) == ["http://127.0.0.1:8081/server-status",
                                        "https://127.0.0.1/server-status"]


def test_config_without_listen_is_a_usage_error(tmp_path):
    conf = tmp_path / "httpd.conf"
    conf.write_text("ServerName x\n")
    with pytest.raises(UsageError, match="no usable Listen directive"):
        discover_urls(str(conf))


def test_missing_ports_config(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        discover_urls(str(tmp_path / "nope.conf"))
