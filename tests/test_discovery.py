"""Discovery of the status URL from Apache's configuration and /proc/net/tcp{,6}.

Every test works on copies of the configuration trees in tests/data/ (Debian's
stock /etc/apache2, a hand-made RHEL-style /etc/httpd) and on hand-written
/proc/net tables, all in temporary directories: the machine's own Apache
configuration and sockets are never read (a guard fails any test that opens a
file outside its temporary directory).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from apache_metrics_exporter.collect import discovery
from apache_metrics_exporter.collect.discovery import (
    discover_urls,
    is_listening,
    listen_url,
    listening_sockets,
    read_config,
)
from apache_metrics_exporter.errors import UsageError

DATA = Path(__file__).parent / "data"
DEBIAN = DATA / "debian-12-etc-apache2"
RHEL = DATA / "rhel-9-etc-httpd-handmade"

# What apache2's postinst enables on a fresh install (enable_default_mpm,
# enable_default_modules, enable_default_conf, install_default_site), plus the
# dependencies a2enmod resolves for each (authz_core, authn_core).
DEBIAN_MODULES = ("mpm_event", "authz_core", "authz_host", "authn_core", "auth_basic",
                  "access_compat", "authn_file", "authz_user", "alias", "dir", "autoindex",
                  "env", "mime", "negotiation", "setenvif", "filter", "deflate", "status",
                  "reqtimeout")
DEBIAN_CONFS = ("charset", "localized-error-pages", "other-vhosts-access-log", "security",
                "serve-cgi-bin")
# `a2enmod ssl` also enables its dependencies (setenvif mime socache_shmcb).
SSL_MODULES = ("socache_shmcb", "ssl")


@pytest.fixture(autouse=True)
def only_temporary_files(monkeypatch, tmp_path):
    """Fail any test whose discovery opens a file outside its temporary directory."""
    real_open = open

    def guarded(path, *args, **kwargs):
        assert os.path.realpath(path).startswith(str(tmp_path.resolve()) + os.sep), path
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(discovery, "open", guarded, raising=False)


def _enable(folder: Path, kind: str, name: str, suffixes: tuple) -> None:
    """What a2enmod / a2enconf / a2ensite do: relative symlinks into *-enabled."""
    enabled = folder / f"{kind}-enabled"
    enabled.mkdir(exist_ok=True)
    for suffix in suffixes:
        if (folder / f"{kind}-available" / f"{name}{suffix}").exists():
            link = enabled / f"{name}{suffix}"
            if not link.is_symlink():
                link.symlink_to(f"../{kind}-available/{name}{suffix}")


def debian_tree(tmp_path: Path, ssl: bool = False) -> Path:
    """A fresh Debian 12 /etc/apache2 in tmp_path, mod_ssl enabled or not."""
    etc = tmp_path / "etc" / "apache2"
    shutil.copytree(DEBIAN, etc)
    for kind in ("mods", "conf", "sites"):
        (etc / f"{kind}-enabled").mkdir()
    for mod in DEBIAN_MODULES + (SSL_MODULES if ssl else ()):
        _enable(etc, "mods", mod, (".load", ".conf"))
    for conf in DEBIAN_CONFS:
        _enable(etc, "conf", conf, (".conf",))
    _enable(etc, "sites", "000-default", (".conf",))
    return etc


def rhel_tree(tmp_path: Path, mod_ssl: bool = True) -> Path:
    """A RHEL-style /etc/httpd in tmp_path, its ServerRoot pointed there."""
    etc = tmp_path / "etc" / "httpd"
    shutil.copytree(RHEL, etc)
    conf = etc / "conf" / "httpd.conf"
    text = conf.read_text()
    assert 'ServerRoot "/etc/httpd"' in text
    conf.write_text(text.replace('ServerRoot "/etc/httpd"', f'ServerRoot "{etc}"'))
    if not mod_ssl:  # the mod_ssl package is not installed
        (etc / "conf.modules.d" / "00-ssl.conf").unlink()
        (etc / "conf.d" / "ssl.conf").unlink()
    return etc


def _hex_address(address: str) -> str:
    """An address as the kernel prints it in /proc/net/tcp{,6}: 32-bit words in
    host byte order."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = socket.inet_pton(family, address)
    return "".join(f"{int.from_bytes(raw[i:i + 4], sys.byteorder):08X}"
                   for i in range(0, len(raw), 4))


def proc_tables(tmp_path: Path, listening: list, connected: list = ()) -> Path:
    """A proc root whose net/tcp and net/tcp6 have LISTEN sockets at
    (address, port) and established connections from (address, port)."""
    root = tmp_path / "proc"
    (root / "net").mkdir(parents=True)
    tables = {"tcp": [], "tcp6": []}
    for state, entries in (("0A", listening), ("01", connected)):
        for address, port in entries:
            table = "tcp6" if ":" in address else "tcp"
            zero = "0" * (32 if table == "tcp6" else 8)
            tables[table].append(f"{_hex_address(address)}:{port:04X} {zero}:0000 {state}")
    for table, rows in tables.items():
        lines = ["  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
                 "retrnsmt   uid  timeout inode"]
        for i, row in enumerate(rows):
            lines.append(f"{i:4d}: {row} 00000000:00000000 00:00000000 00000000     0"
                         f"        0 {1000 + i} 1 0000000000000000 100 0 0 10 0")
        (root / "net" / table).write_text("\n".join(lines) + "\n")
    return root


SSHD_AND_A_CLIENT = dict(listening=[("0.0.0.0", 22), ("::", 22)],
                         connected=[("127.0.0.1", 80), ("127.0.0.1", 443)])


# --- Listen directives -> URLs ------------------------------------------------------------

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


# --- Debian's stock tree --------------------------------------------------------------------

def test_stock_debian_without_mod_ssl_gives_port_80_only(tmp_path):
    # The bug this fixes: Listen 443 inside <IfModule ssl_module> was taken too,
    # so the first README command exited 2 ("2 URLs were given").
    etc = debian_tree(tmp_path)
    config = read_config(str(etc / "ports.conf"))
    assert config.listens == [["80"]]
    assert "ssl_module" not in config.modules and "status_module" in config.modules
    read = [os.path.relpath(f, etc) for f in config.files]
    assert read[0] == "apache2.conf"  # ports.conf is read through the main config
    assert {"mods-enabled/status.load", "mods-enabled/mpm_event.conf", "ports.conf",
            "conf-enabled/security.conf", "sites-enabled/000-default.conf"} <= set(read)
    assert not any(f.startswith(("mods-available", "sites-available/default-ssl")) for f in read)
    apache = proc_tables(tmp_path, [("::", 80)], **{"connected": SSHD_AND_A_CLIENT["connected"]})
    assert discover_urls(str(etc / "ports.conf"), str(apache)) == [
        "http://127.0.0.1/server-status"]
    # Apache stopped, or /proc unreadable: the configured address all the same.
    assert discover_urls(str(etc / "ports.conf"), str(tmp_path / "no-proc")) == [
        "http://127.0.0.1/server-status"]
    assert discover_urls(str(etc / "apache2.conf"), str(apache)) == [
        "http://127.0.0.1/server-status"]


def test_stock_debian_with_mod_ssl_prefers_plain_http(tmp_path):
    etc = debian_tree(tmp_path, ssl=True)
    config = read_config(str(etc / "ports.conf"))
    assert config.listens == [["80"], ["443"]]  # gnutls's block stays out
    both = proc_tables(tmp_path / "both", [("::", 80), ("::", 443), ("0.0.0.0", 22)])
    assert discover_urls(str(etc / "ports.conf"), str(both)) == [
        "http://127.0.0.1/server-status"]
    # Only 443 really listening: that one, although port 80 comes first.
    tls = proc_tables(tmp_path / "tls", [("::", 443)], [("127.0.0.1", 80)])
    assert discover_urls(str(etc / "ports.conf"), str(tls)) == [
        "https://127.0.0.1/server-status"]


def test_debian_includes_sites_and_confs_in_order(tmp_path):
    etc = debian_tree(tmp_path)
    (etc / "ports.conf").write_text("Listen 8080\n")
    (etc / "sites-available" / "shop.conf").write_text(
        "Listen 127.0.0.2:8090\n<VirtualHost 127.0.0.2:8090>\n</VirtualHost>\n")
    (etc / "sites-available" / "unused.conf").write_text("Listen 9999\n")
    _enable(etc, "sites", "shop", (".conf",))
    (etc / "conf-enabled" / "local.conf~").write_text("Listen 7777\n")  # an editor's backup
    assert read_config(str(etc / "ports.conf")).listens == [["8080"], ["127.0.0.2:8090"]]
    # Nothing listening (Apache down): the first in configuration order.
    down = proc_tables(tmp_path / "down", [("0.0.0.0", 22)])
    assert discover_urls(str(etc / "ports.conf"), str(down)) == [
        "http://127.0.0.1:8080/server-status"]
    # Only the site's address listening: that one.
    site = proc_tables(tmp_path / "site", [("127.0.0.2", 8090), ("127.0.0.1", 8080 + 1)])
    assert discover_urls(str(etc / "ports.conf"), str(site)) == [
        "http://127.0.0.2:8090/server-status"]


def test_negated_and_nested_ifmodule(tmp_path):
    for ssl in (False, True):
        etc = debian_tree(tmp_path / str(ssl), ssl=ssl)
        (etc / "conf-available" / "local.conf").write_text(
            "<IfModule !mod_ssl.c>\n"
            "  <IfModule status_module>\n    Listen 127.0.0.1:8081\n  </IfModule>\n"
            "  <IfModule nonexistent_module>\n    Listen 8082\n"
            "    <IfModule status_module>\n      Listen 8083\n    </IfModule>\n"
            "  </IfModule>\n"
            "  <IfModule !nonexistent_module>\n    Listen 8084\n  </IfModule>\n"
            "</IfModule>\n"
            "<IfModule ssl_module>\n  Listen 8443 https\n</IfModule>\n")
        _enable(etc, "conf", "local", (".conf",))
        listens = read_config(str(etc / "ports.conf")).listens
        if ssl:
            assert listens == [["80"], ["443"], ["8443", "https"]]
        else:
            assert listens == [["80"], ["127.0.0.1:8081"], ["8084"]]


def test_ifdefine_define_variables_and_quoted_include(tmp_path):
    etc = debian_tree(tmp_path)
    (etc / "extra dir").mkdir()
    (etc / "extra dir" / "b.conf").write_text("Listen ${SHOP_PORT}\nListen ${UNSET}\n")
    (etc / "ports.conf").write_text(
        "Define SHOP_PORT 8085\n"
        "<IfDefine SHOP_PORT>\n  Include \"extra dir/b.conf\"\n</IfDefine>\n"
        "<IfDefine !SHOP_PORT>\n  Listen 8086\n</IfDefine>\n"
        "<IfDefine SSL>\n  Listen 8087\n</IfDefine>\n"
        "Listen \\\n    8088\n")
    assert read_config(str(etc / "ports.conf")).listens == [["8085"], ["8088"]]


# --- RHEL / Fedora ---------------------------------------------------------------------------

def test_rhel_with_mod_ssl(tmp_path):
    etc = rhel_tree(tmp_path)
    config = read_config(str(etc / "conf" / "httpd.conf"))
    assert config.listens == [["80"], ["443", "https"]]
    assert {"ssl_module", "mod_ssl.c", "status_module", "mpm_event_module"} <= config.modules
    assert all(f.startswith(str(etc)) for f in config.files)
    both = proc_tables(tmp_path, [("::", 80), ("::", 443)])
    assert discover_urls(str(etc / "conf" / "httpd.conf"), str(both)) == [
        "http://127.0.0.1/server-status"]


def test_rhel_without_mod_ssl(tmp_path):
    etc = rhel_tree(tmp_path, mod_ssl=False)
    config = read_config(str(etc / "conf" / "httpd.conf"))
    assert config.listens == [["80"]]
    assert "ssl_module" not in config.modules
    apache = proc_tables(tmp_path, [("0.0.0.0", 80)])
    assert discover_urls(str(etc / "conf" / "httpd.conf"), str(apache)) == [
        "http://127.0.0.1/server-status"]


def test_rhel_mod_ssl_turned_off_by_the_admin(tmp_path):
    # LoadModule commented out, a third-party snippet guarding its Listen.
    etc = rhel_tree(tmp_path)
    (etc / "conf.d" / "ssl.conf").rename(etc / "conf.d" / "ssl.conf.disabled")
    (etc / "conf.modules.d" / "00-ssl.conf").write_text(
        "#LoadModule ssl_module modules/mod_ssl.so\n")
    (etc / "conf.d" / "app.conf").write_text(
        "<IfModule mod_ssl.c>\n  Listen 8443 https\n</IfModule>\n"
        "<IfModule !mod_ssl.c>\n  Listen 127.0.0.1:8080\n</IfModule>\n")
    config = read_config(str(etc / "conf" / "httpd.conf"))
    assert config.listens == [["80"], ["127.0.0.1:8080"]]


def test_rhel_server_root_from_the_layout(tmp_path):
    # Without a ServerRoot line, conf/httpd.conf's ServerRoot is one level up.
    etc = rhel_tree(tmp_path)
    conf = etc / "conf" / "httpd.conf"
    conf.write_text("\n".join(ln for ln in conf.read_text().splitlines()
                              if not ln.startswith("ServerRoot")))
    assert read_config(str(conf)).listens == [["80"], ["443", "https"]]


# --- a lone file, broken and hostile trees -----------------------------------------------------

def test_lone_ports_conf_knows_no_modules(tmp_path):
    conf = tmp_path / "ports.conf"
    conf.write_text("# If you just change the port...\n"
                    "Listen 8081\n\n<IfModule ssl_module>\n\tListen 443\n</IfModule>\n"
                    "#Listen 9999\n")
    assert discover_urls(str(conf), str(tmp_path / "no-proc")) == [
        "http://127.0.0.1:8081/server-status"]


def test_include_loops_and_depth_are_bounded(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_text(f"Listen 8001\nInclude {b}\nInclude {a}\n")
    b.write_text(f"Include {a}\nListen 8002\n")
    assert read_config(str(a)).listens == [["8001"], ["8002"]]
    # A chain deeper than Apache would go still ends.
    for i in range(100):
        (tmp_path / f"chain{i}.conf").write_text(
            f"Listen {9000 + i}\nInclude {tmp_path}/chain{i + 1}.conf\n")
    listens = read_config(str(tmp_path / "chain0.conf")).listens
    assert listens[0] == ["9000"] and len(listens) == discovery.MAX_DEPTH


def test_hostile_content_is_survived(tmp_path):
    conf = tmp_path / "httpd.conf"
    conf.write_bytes(b"\x00\xff<IfModule\n</IfModule>>>\n<\n\"unclosed\nListen 8123\n"
                     + b"x" * (2 * discovery.MAX_LINE) + b"\n</Nothing>\nListen \\")
    assert read_config(str(conf)).listens == [["8123"]]


def test_fifo_and_device_includes_are_not_read(tmp_path):
    os.mkfifo(tmp_path / "fifo.conf")
    conf = tmp_path / "httpd.conf"
    conf.write_text(f"Include {tmp_path}/fifo.conf\nInclude {tmp_path}/*.conf\n"
                    "Include /dev/zero\nListen 8124\n")
    assert read_config(str(conf)).listens == [["8124"]]
    with pytest.raises(UsageError, match="no usable Listen directive"):
        discover_urls(str(tmp_path / "fifo.conf"), str(tmp_path / "no-proc"))


def test_a_file_swapped_for_a_fifo_after_its_check_is_not_waited_on(tmp_path, monkeypatch):
    """Red team (redteam3): whoever may write an included file (a site's own
    vhost file) can swap it for a FIFO between the check that it is a regular
    file and its opening; the open then waited for a writer for ever - in
    root's reaper resolving a cut mod_wsgi group name, under the state file's
    lock, so every later reaper gave up. The file is judged as opened."""
    import threading

    included = tmp_path / "site.conf"
    included.write_text("Listen 8125\n")
    conf = tmp_path / "httpd.conf"
    conf.write_text(f"Include {included}\nListen 8126\n")
    real_isfile = os.path.isfile
    checks = []

    def isfile(path):  # the swap lands right after the last check before the open
        found = real_isfile(path)
        if found and os.path.realpath(path) == str(included.resolve()):
            checks.append(path)
            if len(checks) == 2:  # the Include's, then read()'s own
                os.unlink(included)
                os.mkfifo(included)
        return found
    monkeypatch.setattr(discovery.os.path, "isfile", isfile)
    done = []
    reader = threading.Thread(target=lambda: done.append(read_config(str(conf))),
                              daemon=True)
    reader.start()
    reader.join(5)
    blocked = reader.is_alive()
    if blocked:  # let the blocked open go before failing
        os.close(os.open(included, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
    assert not blocked, "the read waited on the FIFO"
    assert done and done[0].listens == [["8126"]]


def test_include_of_a_big_tree_stops_early(tmp_path, monkeypatch):
    monkeypatch.setattr(discovery, "MAX_FILES", 20)
    for i in range(30):
        (tmp_path / "tree" / f"d{i:02}").mkdir(parents=True)
        for j in range(5):
            (tmp_path / "tree" / f"d{i:02}" / f"f{j}.conf").write_text(f"Listen {8000 + i}\n")
    walked = []
    real_walk = os.walk

    def walk(top):
        for entry in real_walk(top):
            walked.append(entry[0])
            yield entry
    monkeypatch.setattr(discovery.os, "walk", walk)
    conf = tmp_path / "httpd.conf"
    conf.write_text(f"Include {tmp_path}/tree\nInclude {tmp_path}/tree/*/*.conf\n")
    config = read_config(str(conf))
    assert len(config.files) == 20 and len(walked) <= 6
    assert config.listens[:5] == [["8000"]] * 5


def test_config_without_listen_is_a_usage_error(tmp_path):
    conf = tmp_path / "httpd.conf"
    conf.write_text("ServerName x\n<IfModule ssl_module>\nListen 443\n</IfModule>\n")
    with pytest.raises(UsageError, match="no usable Listen directive"):
        discover_urls(str(conf), str(tmp_path / "no-proc"))


def test_missing_ports_config(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        discover_urls(str(tmp_path / "nope.conf"), str(tmp_path / "no-proc"))


# --- /proc/net/tcp{,6} ---------------------------------------------------------------------------

def test_listening_sockets_from_proc(tmp_path):
    root = proc_tables(tmp_path, [("0.0.0.0", 22), ("127.0.0.1", 8080), ("::", 80),
                                  ("::1", 8443), ("::ffff:10.0.0.7", 81)],
                       [("127.0.0.1", 9000), ("::1", 9001)])
    with open(root / "net" / "tcp", "a") as fh:
        fh.write("garbage\n   9: ZZZZ:0050 00000000:0000 0A\n")
    found = listening_sockets(str(root))
    assert found == {(b"\0" * 4, 22), (bytes([127, 0, 0, 1]), 8080), (b"\0" * 16, 80),
                     (socket.inet_pton(socket.AF_INET6, "::1"), 8443),
                     (bytes([10, 0, 0, 7]), 81)}
    assert listening_sockets(str(tmp_path / "nothing")) is None
    assert is_listening(["80"], found) and is_listening(["127.0.0.1:80"], found)
    assert is_listening(["[::1]:8443"], found) and is_listening(["10.0.0.7:81"], found)
    assert is_listening(["127.0.0.1:8080"], found) and is_listening(["*:8080"], found)
    assert not is_listening(["127.0.0.2:8080"], found)
    assert not is_listening(["9000"], found)  # a connection, not a listener
    assert is_listening(["localhost:8080"], found)  # names are not resolved: the port


def test_discovery_is_imported_only_without_url(tmp_path):
    import subprocess

    from tests.conftest import exporter_env

    argv = [sys.executable, "-X", "importtime", "-m", "apache_metrics_exporter",
            "--url", "http://127.0.0.1:9/server-status", "--format", "tab", "--no-processes",
            "--state-file", str(tmp_path / "state"), "--spool-dir", str(tmp_path / "spool")]
    proc = subprocess.run(argv, capture_output=True, text=True, env=exporter_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "apache_metrics_exporter.errors" in proc.stderr  # importtime did report
    assert "apache_metrics_exporter.collect.discovery" not in proc.stderr


@pytest.mark.integration
def test_first_readme_command_on_a_stock_debian_tree(prefork, tmp_path):
    # The stock tree (mod_ssl off, its <IfModule ssl_module> Listen 443 kept),
    # with ports.conf's "Listen 80" moved to the private Apache's port: the
    # README's first commands work unchanged, one Apache, one URL.
    from tests.conftest import parse_tab, run_exporter

    etc = debian_tree(tmp_path)
    ports = etc / "ports.conf"
    ports.write_text(ports.read_text().replace("Listen 80\n",
                                               f"Listen 127.0.0.1:{prefork.port}\n"))
    tab = run_exporter("--ports-config", str(ports), "--format", "tab")
    assert tab.returncode == 0, tab.stderr
    assert parse_tab(tab.stdout)["status-response"] == "0"
    piped = run_exporter("--ports-config", str(ports))
    assert piped.returncode == 0 and piped.stdout.startswith("# Global Apache server metrics.")
