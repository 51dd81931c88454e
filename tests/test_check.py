"""``--check``: the set-up walked through on private Apaches, one outcome each.

Every test runs the command as a user would and reads its lines; the
exposure check runs in network namespaces this test creates (a veth pair with
link-local and ULA addresses), never against the host's own addresses.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path

import pytest

from apache_metrics_exporter import check
from tests.conftest import run_exporter
from tests.harness.apache import ApacheServer, free_port
from tests.harness.pages import serve_answer, serve_pages

ROOT = Path(__file__).resolve().parent.parent
integration = pytest.mark.integration


def lines(stdout: str) -> dict:
    """{topic: (level, text)} of a --check output (the first line per topic:
    the config file given by -c comes before the machine's own)."""
    out: dict = {}
    for line in stdout.splitlines():
        m = re.match(r"^(OK|WARN|FAIL)\s+([^:]+): (.*)$", line)
        if m:
            out.setdefault(m.group(2), (m.group(1), m.group(3)))
    return out


def run_check(*args: str, **kwargs) -> tuple:
    proc = run_exporter("--check", *args, **kwargs)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, lines(proc.stdout), proc


# --- a sound set-up and the usual failures -------------------------------------------------

@integration
def test_a_sound_setup_is_all_ok(prefork):
    status, found, proc = run_check("--url", prefork.status_url)
    assert status == 0, proc.stdout
    assert "\nFAIL" not in proc.stdout and proc.stdout.rstrip().endswith(" 0 FAIL")
    assert found["status page"][0] == "OK" and "Apache/2.4" in found["status page"][1]
    assert found["HTML page"][0] == "OK"
    assert found["ExtendedStatus"][0] == "OK"
    assert found["worker table"][0] == "OK"
    assert found["Apache process"] == ("OK", found["Apache process"][1])
    assert f"PID {prefork.proc.pid} " in found["Apache process"][1]
    assert found["access rules"][0] == "OK"
    assert f"{prefork.root}/httpd.conf:" in found["access rules"][1]
    assert "Require ip 127.0.0.1" in found["access rules"][1]
    assert found["exposure"] == ("OK", "Apache listens on loopback addresses only: other "
                                       "hosts cannot reach the status page")
    assert found["access log"][0] == "OK" and "no CustomLog" in found["access log"][1]


@integration
def test_auto_url_and_plain_url_both_work(prefork):
    # apache_exporter needs ?auto and Telegraf too; here either form works,
    # and the check says so.
    for url in (prefork.status_url, prefork.status_url + "?auto"):
        status, found, proc = run_check("--url", url)
        assert status == 0, proc.stdout
        assert found["URL"][1].startswith(f"{prefork.status_url} ")
        assert "works with or without ?auto" in found["URL"][1]


@integration
def test_403_names_the_location_and_its_require_line(prefork):
    status, found, proc = run_check("--url", prefork.base_url + "/denied-status")
    assert status == 1
    level, text = found["status page"]
    assert level == "FAIL" and "HTTP 403" in text
    conf = f"{prefork.root}/httpd.conf"
    line = next(n for n, t in enumerate(Path(conf).read_text().splitlines(), 1)
                if t.strip() == "<Location /denied-status>")
    assert f"<Location /denied-status> at {conf}:{line} allows only: Require all denied" \
        in text
    assert "add 'Require local' there" in text


@integration
def test_redirect_to_a_trailing_slash_gives_the_url_to_use():
    with ApacheServer("prefork", wsgi=False, redirect=True) as apache:
        status, found, proc = run_check("--url", apache.base_url + "/moved-status")
        assert status == 1
        level, text = found["status page"]
        assert level == "FAIL" and "HTTP 301" in text
        assert f"give --url {apache.base_url}/moved-status/ (with the trailing slash" in text
        status, found, proc = run_check("--url", apache.base_url + "/moved-status/")
        assert status == 0, proc.stdout
        assert found["status page"][0] == "OK"


@contextlib.contextmanager
def echoing_server(mode: str):
    """A stand-in that echoes the request's Authorization header back: in a
    redirect's Location (``redirect``) or in an HTML page's title (``title``),
    as a broken proxy or login page may."""
    def answer(request):
        auth = request.headers.get("Authorization", "")
        if mode == "redirect":
            return 302, [("Location", "/login?was=" + urllib.parse.quote(auth))], b""
        return 200, (), f"<html><head><title>hello {auth}</title></head></html>".encode()

    with serve_answer(answer) as url:
        yield url


@pytest.mark.parametrize("mode", ["redirect", "title"])
def test_a_peer_echoing_the_credentials_never_gets_them_printed(tmp_path, mode):
    # Red-team: the check's lines quote the peer (a redirect's Location, a
    # page's title); a peer that echoes the Authorization header had the
    # base64 of user:password printed on stdout.
    password = tmp_path / "password"
    password.write_text("longsecretpassword\n")
    password.chmod(0o600)
    encoded = base64.b64encode(b"monitor:longsecretpassword").decode()
    with echoing_server(mode) as url:
        status, found, proc = run_check("--url", url, "--user", "monitor",
                                        "--password-file", str(password))
    assert status == 1
    level, text = found["status page"]
    assert level == "FAIL" and ("HTTP 302" in text if mode == "redirect" else "title" in text)
    out = proc.stdout + proc.stderr
    for form in (encoded, urllib.parse.quote(encoded, safe=""), "longsecretpassword"):
        assert form not in out, out


@integration
def test_an_html_page_instead_of_the_status_page(prefork):
    status, found, proc = run_check("--url", prefork.base_url + "/index.html")
    assert status == 1
    level, text = found["status page"]
    assert level == "FAIL"
    assert "answers with an HTML page that is not mod_status's (title 'hello')" in text
    assert f"/server-status at {prefork.root}/httpd.conf:" in text


@integration
def test_a_plain_text_page_instead_of_the_status_page_names_where_it_is(prefork):
    # Newcomer run: a 200 that is no HTML page said only "check --url", where
    # an HTML page or a 404 name the <Location> that serves mod_status.
    (prefork.root / "htdocs" / "plain.txt").write_text("just text\n")
    status, found, proc = run_check("--url", prefork.base_url + "/plain.txt")
    assert status == 1
    level, text = found["status page"]
    assert level == "FAIL" and "answers 200, but not with mod_status's page" in text
    assert f"/server-status at {prefork.root}/httpd.conf:" in text


@integration
def test_404_says_where_apache_serves_the_page(prefork):
    status, found, proc = run_check("--url", prefork.base_url + "/no-such-status")
    assert status == 1
    level, text = found["status page"]
    assert level == "FAIL" and "HTTP 404" in text
    assert f"give --url {prefork.base_url}/server-status" in text


@integration
def test_404_where_sethandler_is_but_mod_status_is_not_loaded():
    # Newcomer run: a <Location /server-status> with SetHandler server-status
    # but no LoadModule status_module answers 404, and the check said "Apache
    # serves it at /server-status: give --url" - the very URL that failed.
    with ApacheServer("prefork", wsgi=False, status_module=False) as apache:
        status, found, proc = run_check("--url", apache.status_url)
        assert status == 1
        level, text = found["status page"]
        conf = f"{apache.root}/httpd.conf"
        line = next(n for n, t in enumerate(Path(conf).read_text().splitlines(), 1)
                    if t.strip() == "<Location /server-status>")
        assert level == "FAIL" and "HTTP 404" in text
        assert text.endswith(f"'SetHandler server-status' at {conf}:{line} needs mod_status, "
                             "but no LoadModule status_module is in the configuration Apache "
                             "runs: a2enmod status (or LoadModule status_module), then "
                             "restart Apache")
        assert "give --url" not in text
        # Another path: the same fix, then the URL to give.
        status, found, proc = run_check("--url", apache.base_url + "/status")
        assert found["status page"][1].endswith(
            f"then restart Apache, and give --url {apache.status_url}")


@integration
def test_404_where_the_configuration_has_sethandler_since_the_last_reload(prefork):
    # The <Location> was added to the file after Apache started: not "give
    # --url" the same URL, but reload.
    conf = prefork.root / "httpd.conf"
    before = conf.read_text()
    try:
        conf.write_text(before + "\n<Location /late-status>\n  SetHandler server-status\n"
                        "</Location>\n")
        status, found, proc = run_check("--url", prefork.base_url + "/late-status")
        level, text = found["status page"]
        assert level == "FAIL" and "HTTP 404" in text
        assert "yet Apache answers 404: reload Apache if that was added since it started" \
            in text
        assert "give --url" not in text
    finally:
        conf.write_text(before)


def test_a_program_that_is_not_apache_on_the_port_is_named_not_mod_status():
    # Newcomer run: another program on --url's port answered 404, and the
    # check said "load mod_status (a2enmod status)" - while the next line
    # said that program (here this test's own stand-in) is not Apache.
    def answer(request):
        return 404, (), b"not found"

    with serve_answer(answer) as url:
        port = urllib.parse.urlsplit(url).port
        status, found, proc = run_check("--url", url)
    assert status == 1
    level, text = found["status page"]
    assert level == "FAIL" and "answers HTTP 404, but not from Apache: the process " \
        f"listening on 127.0.0.1:{port} is " in text and f"(PID {os.getpid()})" in text
    assert text.endswith("give --url the address and port of Apache's Listen directive (or, "
                         "with a proxy in front, let it pass the status page through to "
                         "Apache)")
    assert "a2enmod" not in text and "Location" not in text


def test_a_page_of_a_program_that_is_not_apache_is_named_with_its_title():
    def answer(request):
        return 200, (), b"<html><head><title>Grafana</title></head></html>"

    with serve_answer(answer) as url:
        status, found, proc = run_check("--url", url)
    level, text = found["status page"]
    assert level == "FAIL" and "answers with a page that is not mod_status's (title " \
        "'Grafana'), but not from Apache: the process listening on" in text
    assert "SetHandler" not in text


def test_a_program_speaking_no_http_on_the_port_is_named():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        status, found, proc = run_check("--url", f"http://127.0.0.1:{port}/server-status")
    finally:
        listener.close()
    level, text = found["status page"]
    assert level == "FAIL" and "not an HTTP/1.x status line" in text
    assert f"the process listening on 127.0.0.1:{port} is " in text
    assert f"(PID {os.getpid()}), not Apache; give --url the address and port" in text


@integration
def test_connection_refused():
    port = free_port()
    status, found, proc = run_check("--url", f"http://127.0.0.1:{port}/server-status")
    assert status == 1
    level, text = found["status page"]
    assert level == "FAIL" and f"connection to 127.0.0.1:{port} refused: Apache is not " \
        "running, or it does not listen there" in text
    assert found["Apache process"][0] == "WARN"
    assert f"nothing listens on 127.0.0.1:{port}" in found["Apache process"][1]
    # A URL the operator gave is not compared with the machine's own
    # configuration (not read without --ports-config): what to check, plainly.
    assert text.endswith(f"check that Apache runs (systemctl status apache2) and that its "
                         f"configuration has a Listen directive for 127.0.0.1:{port}")
    assert "give --url" not in text


@integration
def test_connection_refused_suggests_only_a_url_that_answers(prefork, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/server-status"
    ports = tmp_path / "ports.conf"
    # A Listen directive whose address answers with the status page: suggested.
    ports.write_text(f"Listen 127.0.0.1:{prefork.port}\n")
    status, found, proc = run_check("--url", url, "--ports-config", str(ports))
    level, text = found["status page"]
    assert status == 1 and level == "FAIL"
    assert text.endswith(f"a Listen directive of {ports} gives {prefork.status_url}, which "
                         f"answers with mod_status's page: give --url {prefork.status_url}")
    # One where nothing answers: never suggested, what to check instead.
    dead = free_port()
    ports.write_text(f"Listen 127.0.0.1:{dead}\n")
    status, found, proc = run_check("--url", url, "--ports-config", str(ports))
    level, text = found["status page"]
    assert status == 1 and level == "FAIL"
    assert "give --url" not in text
    assert "check that Apache runs (systemctl status apache2)" in text
    assert f"(http://127.0.0.1:{dead}/server-status, from {ports}, did not answer with " \
        "a status page either)" in text


@integration
def test_extended_status_off_says_what_is_lost():
    with ApacheServer("prefork", wsgi=False, extended_status=False) as apache:
        status, found, proc = run_check("--url", apache.status_url)
    assert status == 0, proc.stdout  # a warning: the basic figures still come
    level, text = found["ExtendedStatus"]
    assert level == "WARN"
    assert "lost are Total Accesses/kBytes/Duration" in text and "--max-time" in text
    assert "fix: 'ExtendedStatus On'" in text
    assert re.search(r"\(ExtendedStatus Off at .*/httpd\.conf:\d+\)", text)
    assert "worker table" not in found


@integration
def test_require_all_granted_is_flagged():
    with ApacheServer("prefork", wsgi=False, status_require="Require all granted") as apache:
        status, found, proc = run_check("--url", apache.status_url)
    assert status == 0, proc.stdout  # only on loopback here: a warning
    level, text = found["access rules"]
    assert level == "WARN" and "lets every host read the page (Require all granted" in text
    assert found["exposure"][0] == "OK"


@integration
@pytest.mark.parametrize("kept_out", [False, True])
def test_access_log(kept_out):
    mode = "excluded" if kept_out else "all"
    with ApacheServer("prefork", wsgi=False, access_log=mode) as apache:
        status, found, proc = run_check("--url", apache.status_url)
        log = (apache.root / "logs" / "access.log").read_text()
        root = apache.root
    assert status == 0, proc.stdout
    level, text = found["access log"]
    if kept_out:
        assert level == "OK", text
        assert "env=!dontlog at" in text and "(checked: this check's request is not there)" \
            in text
        assert "ame-check=" not in log
    else:
        assert level == "WARN", text
        assert f"{root}/logs/access.log" in text
        assert "this check's request was found there" in text
        assert 'SetEnvIf Request_URI "^/server\\-status" dontlog' in text
        assert "env=!dontlog" in text
        assert "ame-check=" in log


@integration
def test_a_wrong_url_gets_the_access_log_advice_for_the_status_pages_path():
    # Newcomer run: --url .../status (a 404) was told to keep "^/status"
    # out of the access log: the advice is for where mod_status is served.
    with ApacheServer("prefork", wsgi=False, access_log="all") as apache:
        status, found, proc = run_check("--url", apache.base_url + "/status")
    assert status == 1
    assert found["status page"][0] == "FAIL"
    level, text = found["access log"]
    assert level == "WARN", text
    assert 'SetEnvIf Request_URI "^/server\\-status" dontlog' in text
    assert '"^/status"' not in text


@integration
def test_discovered_url(prefork, tmp_path):
    ports = tmp_path / "ports.conf"
    ports.write_text(f"Listen 127.0.0.1:{prefork.port}\n")
    status, found, proc = run_check("--ports-config", str(ports))
    assert status == 0, proc.stdout
    assert found["URL"][1].startswith(f"{prefork.status_url} (found in the Listen "
                                      f"directives of {ports})")


def test_no_url_to_be_found_is_a_failure(tmp_path):
    status, found, proc = run_check("--ports-config", str(tmp_path / "none.conf"))
    assert status == 1
    assert found["URL"][0] == "FAIL" and "does not exist" in found["URL"][1]


# --- the --listen endpoint: made as the run makes it, then closed -----------------------------

HOLDER = ("import socket, sys\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, "
          "socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen()\n"
          "print('ok', flush=True)\nsys.stdin.read()\n")


@contextlib.contextmanager
def holding(port: int, name: str, tmp_path):
    """A process whose program file is called ``name`` listening on ``port``."""
    program = tmp_path / name
    program.symlink_to(sys.executable)
    proc = subprocess.Popen([str(program), "-c", HOLDER, str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ok"
        yield proc
    finally:
        proc.kill()
        proc.wait(5)


def test_the_endpoint_is_made_as_the_run_makes_it_and_closed(tmp_path):
    # --check took no --listen, so the endpoint's own set-up (its unit sets
    # APACHE_METRICS_LISTEN, a config file may say listen =) went unchecked.
    port = free_port()
    status, found, proc = run_check("--url", "http://127.0.0.1:9/server-status",
                                    "--no-processes", "--listen", f"127.0.0.1:{port}")
    assert found["endpoint"] == ("OK", f"would listen on http://127.0.0.1:{port}/metrics "
                                       "(no TLS, no basic auth)")
    with socket_bound(port):  # and let go of at once
        pass
    status, found, proc = run_check("--url", "http://127.0.0.1:9/server-status",
                                    "--no-processes", "--listen", f"127.0.0.1:{port}",
                                    "--web.config.file", str(tmp_path / "none.yml"))
    level, text = found["endpoint"]
    assert level == "FAIL" and "none.yml" in text and status == 1


@contextlib.contextmanager
def socket_bound(port: int):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        yield s


@pytest.mark.parametrize("name,level,words", [
    ("prometheus-apache-exporter", "FAIL", "'prometheus-apache-exporter' (PID {pid}) listens "
     "there; stop it (systemctl stop prometheus-apache-exporter; systemctl disable it), or "
     "choose another --listen"),
    ("apache-metrics-exporter", "WARN", "apache-metrics-exporter (PID {pid}) listens there "
     "already - the running service, most likely"),
    ("nginx", "FAIL", "'nginx' (PID {pid}) listens there; stop it, or choose another --listen"),
    ("apache2", "FAIL", "Apache (apache2, PID {pid}) listens there; choose another --listen "
     "(apache_exporter's port is 9117)"),  # never "stop it"
])
def test_a_taken_port_is_named_with_its_holder(tmp_path, name, level, words):
    # Switching from apache_exporter, the old one still on 9117 is the usual
    # reason the new endpoint cannot start: --check names it.
    port = free_port()
    with holding(port, name, tmp_path) as holder:
        status, found, proc = run_check("--url", "http://127.0.0.1:9/server-status",
                                        "--no-processes", "--listen", f"127.0.0.1:{port}")
    got_level, text = found["endpoint"]
    assert got_level == level, text
    assert text.startswith(f"--listen 127.0.0.1:{port}: cannot listen on 127.0.0.1:{port}: "
                           "Address already in use: "), text
    assert words.format(pid=holder.pid) in text


@pytest.mark.parametrize("name,words", [
    ("prometheus-apache-exporter", "'prometheus-apache-exporter' (PID {pid}) listens there; "
     "stop it (systemctl stop prometheus-apache-exporter; systemctl disable it), or choose "
     "another --listen"),
    ("apache-metrics-exporter", "apache-metrics-exporter (PID {pid}) listens there already - "
     "the running service, most likely (systemctl status apache-metrics-exporter-endpoint); "
     "stop it first, or choose another --listen"),
    ("apache2", "Apache (apache2, PID {pid}) listens there; choose another --listen "
     "(apache_exporter's port is 9117)"),
])
def test_the_run_names_the_holder_of_a_taken_port_too(tmp_path, name, words):
    # Newcomer run: --check named the holder, the run itself (the endpoint's
    # unit, in the journal) said only "Address already in use".
    port = free_port()
    with holding(port, name, tmp_path) as holder:
        proc = run_exporter("--url", "http://127.0.0.1:9/server-status", "--no-processes",
                            "--listen", f"127.0.0.1:{port}")
    assert proc.returncode == 2
    assert proc.stderr == (f"apache-metrics-exporter: error: --listen 127.0.0.1:{port}: "
                           f"cannot listen on 127.0.0.1:{port}: Address already in use: "
                           f"{words.format(pid=holder.pid)}\n")


def test_check_takes_no_long_running_mode():
    proc = run_exporter("--check", "--url", "http://127.0.0.1:9/server-status", "--interval",
                        "10")
    assert proc.returncode == 2
    assert "--check diagnoses the set-up once; it takes no --interval" in proc.stderr


# --- files ----------------------------------------------------------------------------------

@integration
def test_state_and_config_files(prefork, tmp_path):
    state = tmp_path / "reaper-state.json"
    state.write_text("{}")
    state.chmod(0o666)
    conf = tmp_path / "exporter.conf"
    conf.write_text("user = monitor\npassword = s3cret\n")
    conf.chmod(0o644)
    status, found, proc = run_check("--url", prefork.status_url, "--state-file", str(state),
                                    "-c", str(conf))
    assert status == 1
    assert found["reaper state"] == (
        "FAIL", f"reaper state {state} is writable by group or others (mode 0666); run: "
                f"chmod go-w {state}")
    assert found["config file"][0] == "WARN"
    assert f"{conf} holds password and is readable by others (mode 0644); run: chmod 600" \
        in found["config file"][1]
    assert "s3cret" not in proc.stdout + proc.stderr
    state.chmod(0o600)
    conf.chmod(0o600)
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    status, found, proc = run_check("--url", prefork.status_url, "--state-file", str(state),
                                    "-c", str(conf), "--format", "influxdb", "--spool-dir",
                                    str(spool))
    assert status == 0, proc.stdout
    assert found["reaper state"][0] == "OK" and "mode 0600, trusted" in found["reaper state"][1]
    assert found["config file"][0] == "OK"
    assert found["spool directory"][0] == "OK"
    spool.chmod(0o777)
    status, found, proc = run_check("--url", prefork.status_url, "--format", "influxdb",
                                    "--spool-dir", str(spool))
    assert status == 1
    assert found["spool directory"] == (
        "FAIL", f"spool directory {spool} is writable by group or others (mode 0777); run: "
                f"chmod go-w {spool}")


def test_a_state_file_whose_directory_is_missing_is_not_ok(tmp_path):
    # Newcomer run: --check said "OK collector state: ... does not exist yet;
    # it is created on first use" for a path whose directory did not exist,
    # and every run then said "restart counts left out ... (No such file or
    # directory)": only the default path's directory is made.
    url = f"http://127.0.0.1:{free_port()}/server-status"
    missing = tmp_path / "missing"
    collector, reaper = missing / "collector.json", missing / "reaper.json"
    status, found, proc = run_check("--url", url, "--collector-state", str(collector),
                                    "--state-file", str(reaper), "--format", "influxdb",
                                    "--spool-dir", str(tmp_path / "new" / "spool"))
    for topic, path in (("collector state", collector), ("reaper state", reaper)):
        assert found[topic] == (
            "WARN", f"{path} cannot be created: its directory {missing} does not exist, and "
                    "only the default path's directory is made on first use; create it "
                    f"(mkdir -p {missing}) or correct the path")
    # The spool makes its whole path: fine.
    assert found["spool directory"][0] == "OK"
    assert "created on first use" in found["spool directory"][1]
    # What the check warns of: the run cannot use it.
    with serve_pages((ROOT / "tests/data/2.4.71-prefork-ext-off.auto.txt").read_bytes()) \
            as page:
        proc = run_exporter("--url", page, "--collector-state", str(collector),
                            "--no-processes")
    assert f"cannot use the collector state {collector} (No such file or directory)" \
        in proc.stderr
    assert not missing.exists()
    missing.mkdir()
    status, found, proc = run_check("--url", url, "--collector-state", str(collector),
                                    "--state-file", str(reaper))
    assert found["collector state"] == (
        "OK", f"{collector} does not exist yet; it is created on first use")
    assert found["reaper state"][0] == "OK"


def secret_lines(**options) -> list:
    args = argparse.Namespace(**{"password_file": None, "format": "influxdb",
                                 "influxdb_token_file": None, "influxdb_username": None,
                                 "influxdb_password_file": None, **options})
    out = io.StringIO()
    check.check_secret_files(check.Report(out), args)
    return out.getvalue().splitlines()


def test_an_influxdb_token_file_the_run_cannot_read_fails_the_check(tmp_path):
    # The run stops with "cannot read --influxdb-token-file ...": --check must not say OK.
    missing = tmp_path / "token"
    (found,) = secret_lines(influxdb_token_file=str(missing))
    assert found.startswith(f"FAIL secret file: cannot read --influxdb-token-file {missing}: "
                            "No such file or directory: the run stops there (exit 2)")
    missing.mkdir()
    (found,) = secret_lines(influxdb_token_file=str(missing))
    assert found.startswith("FAIL ") and "is a directory" in found
    missing.rmdir()
    (tmp_path / "real").write_text("t0ken-value-123\n")
    missing.symlink_to(tmp_path / "real")  # read_secret never follows a symlink
    (found,) = secret_lines(influxdb_token_file=str(missing))
    assert found.startswith("FAIL ") and "is a symlink" in found
    assert "t0ken-value-123" not in found
    # Not read where the run does not read it: another format, no --influxdb-username.
    assert secret_lines(format="influx", influxdb_token_file=str(tmp_path / "none")) == []
    assert secret_lines(influxdb_password_file=str(tmp_path / "none")) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_a_secret_file_this_user_cannot_read_fails_the_check(tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    token.chmod(0o000)
    (found,) = secret_lines(influxdb_token_file=str(token))
    assert found.startswith(f"FAIL secret file: cannot read --influxdb-token-file {token}: "
                            "Permission denied")


def test_secret_files_readable_by_others_are_a_warning(tmp_path):
    token, password, http = (tmp_path / n for n in ("token", "password", "http"))
    for path in (token, password, http):
        path.write_text("s3cret-value-long\n")
    token.chmod(0o644)
    password.chmod(0o620)
    http.chmod(0o640)
    found = secret_lines(influxdb_token_file=str(token), influxdb_username="u",
                         influxdb_password_file=str(password), password_file=str(http))
    assert found[0].startswith(f"OK   secret file: --password-file {http}: owner ")
    assert found[0].endswith("mode 0640, readable by this user")
    assert found[1].startswith(f"WARN secret file: --influxdb-token-file {token}: owner ")
    assert found[1].endswith(f"mode 0644: every user of this host can read it; run: "
                             f"chmod o-r {token}")
    assert found[2].startswith("WARN secret file: --influxdb-password-file ")
    assert found[2].endswith(f"chmod go-w {password}")
    assert not [x for x in found if "s3cret" in x]


def test_check_with_an_unreadable_token_file_exits_1(tmp_path):
    port = free_port()
    status, found, proc = run_check(
        "--url", f"http://127.0.0.1:{port}/server-status", "--format", "influxdb",
        "--influxdb-url", "http://127.0.0.1:8086", "--influxdb-org", "o",
        "--influxdb-bucket", "b", "--influxdb-token-file", str(tmp_path / "token"),
        "--spool-dir", str(tmp_path / "spool"), "--state-file", str(tmp_path / "s.json"))
    assert status == 1
    assert found["secret file"][0] == "FAIL"
    assert f"cannot read --influxdb-token-file {tmp_path}/token" in found["secret file"][1]


# --- an unprivileged user --------------------------------------------------------------------

@integration
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_unprivileged_user_learns_what_needs_root(prefork, runnable_copy):
    files = Path(tempfile.mkdtemp(prefix="ame-check-"))  # pytest's tmp is root's only
    files.chmod(0o1777)  # (sticky: no other user can swap root-only/ for a link)
    try:
        _unprivileged(prefork, runnable_copy, files)
    finally:
        shutil.rmtree(files, ignore_errors=True)


def _unprivileged(prefork, runnable_copy, files: Path) -> None:
    common = ["--check", "--url", prefork.status_url, "--state-file",
              str(files / "state.json"), "--collector-state", str(files / "cs.json")]
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           str(runnable_copy), *common], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/"})
    found = lines(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    level, text = found["Apache process"]
    assert level == "WARN" and "reading other users' /proc/PID/fd needs root" in text
    assert found["reaper"][0] == "WARN"
    assert "apache-worker-reaper must run as root" in found["reaper"][1]
    assert found["access rules"][0] == "WARN"  # the configuration is not proven
    assert found["this user"][0] == "WARN" and "run as root" in found["this user"][1]
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           str(runnable_copy), *common, "--pid-file", str(prefork.pid_file)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/"})
    found = lines(proc.stdout)
    assert found["Apache process"][0] == "OK"
    assert "named by --pid-file" in found["Apache process"][1]
    assert found["this user"][0] == "WARN" and "--memory pss/uss fall back to RSS" \
        in found["this user"][1]
    assert "www-data" in found["reaper"][1]
    # State paths this user cannot create: the command that makes a new
    # directory for it, never one that hands an existing directory over.
    fixed = files / "root-only"
    fixed.mkdir(mode=0o755)
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           str(runnable_copy), "--check", "--url", prefork.status_url,
                           "--state-file", str(files / "state.json"), "--collector-state",
                           str(fixed / "new" / "cs.json"), "--format", "influxdb",
                           "--spool-dir", str(fixed / "spool")],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/"})
    found = lines(proc.stdout)
    assert found["collector state"] == (
        "WARN", f"{fixed}/new/cs.json cannot be created: its directory {fixed}/new does not "
                "exist, and only the default path's directory is made on first use; create "
                f"it (mkdir -p {fixed}/new) or correct the path")
    assert found["spool directory"] == (
        "WARN", f"{fixed}/spool does not exist and this user (nobody (uid 65534)) cannot "
                f"create it in {fixed}; as root: install -d -o nobody {fixed}/spool; or run "
                "as root")
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           str(runnable_copy), "--check", "--url", prefork.status_url,
                           "--state-file", str(files / "state.json"), "--collector-state",
                           str(fixed / "cs.json")],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/"})
    found = lines(proc.stdout)
    assert found["collector state"] == (
        "WARN", f"{fixed}/cs.json does not exist and this user (nobody (uid 65534)) cannot "
                f"create it in {fixed}; give a path in a directory this user can write (the "
                "file is replaced whole, which needs the directory), or run as root")


# --- exposure, in network namespaces of the test's own --------------------------------------

NS_A, NS_B = f"ame-chk-{os.getpid()}-a", f"ame-chk-{os.getpid()}-b"
ADDR_A, ADDR_B = "169.254.77.1", "169.254.77.2"  # link-local: never routed
ULA_A, ULA_B = "fd00:a3e:77::1", "fd00:a3e:77::2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def namespaces():
    """Two network namespaces joined by a veth pair created inside them (the
    host's own interfaces and addresses are never touched); deleted after."""
    try:
        _ip("netns", "add", NS_A)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"network namespaces are not available here ({exc})")
    try:
        _ip("netns", "add", NS_B)
        pid = os.getpid() % 100000
        va, vb = f"amc{pid}a", f"amc{pid}b"
        _ip("link", "add", va, "netns", NS_A, "type", "veth", "peer", "name", vb,
            "netns", NS_B)
        for ns, dev, v4, v6 in ((NS_A, va, ADDR_A, ULA_A), (NS_B, vb, ADDR_B, ULA_B)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            _ip("-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "up")
        yield
    finally:
        for ns in (NS_A, NS_B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


# Runs inside NS_A: a private Apache on every address of that namespace,
# --check against it, and what a client in NS_B (another host) really gets.
IN_NAMESPACE = r"""
import json, subprocess, sys
from tests.harness.apache import ApacheServer
require, other_ns, address = sys.argv[1:]
with ApacheServer("prefork", wsgi=False, listen_all=True, status_require=require) as a:
    check = subprocess.run([sys.executable, "-m", "apache_metrics_exporter", "--check",
                            "--url", a.status_url], capture_output=True, text=True,
                           timeout=120)
    remote = subprocess.run(["ip", "netns", "exec", other_ns, "curl", "-s", "-o",
                             "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                             f"http://{address}:{a.port}/server-status?auto"],
                            capture_output=True, text=True, timeout=30)
    print(json.dumps({"status": check.returncode, "stdout": check.stdout,
                      "stderr": check.stderr, "remote": remote.stdout, "port": a.port}))
"""


def exposure(require: str) -> dict:
    proc = subprocess.run(["ip", "netns", "exec", NS_A, sys.executable, "-c", IN_NAMESPACE,
                           require, NS_B, ADDR_A], capture_output=True, text=True,
                          timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "Traceback" not in result["stderr"], result["stderr"]
    result["found"] = lines(result["stdout"])
    return result


@integration
def test_exposure_require_all_granted_fails(namespaces):
    result = exposure("Require all granted")
    assert result["remote"] == "200"  # another host really reads it
    level, text = result["found"]["exposure"]
    assert level == "FAIL" and result["status"] == 1
    port = result["port"]
    assert f"answers on {ADDR_A}:{port}, [{ULA_A}]:{port}, and <Location /server-status>" \
        in text
    assert "lets every host read it (Require all granted" in text
    assert "put 'Require local' there" in text


@integration
def test_exposure_require_local_answers_only_this_host(namespaces):
    result = exposure("Require local")
    assert result["remote"] == "403"
    level, text = result["found"]["exposure"]
    assert level == "OK" and result["status"] == 0, result["stdout"]
    assert f"answers on {ADDR_A}:{result['port']}" in text
    assert "to this host itself" in text and "refuses other hosts (Require local" in text


@integration
def test_exposure_loopback_only_rule_refuses_other_addresses(namespaces):
    result = exposure("Require ip 127.0.0.1 ::1")
    assert result["remote"] == "403"
    level, text = result["found"]["exposure"]
    assert level == "OK" and result["status"] == 0, result["stdout"]
    port = result["port"]
    assert text == (f"the status page does not answer on this host's other addresses "
                    f"({ADDR_A}:{port} HTTP 403, [{ULA_A}]:{port} HTTP 403)")


@integration
def test_exposure_to_a_subnet_is_a_warning(namespaces):
    result = exposure("Require ip 127.0.0.1 ::1 169.254.77.0/24")
    assert result["remote"] == "200"
    level, text = result["found"]["exposure"]
    assert level == "WARN" and result["status"] == 0, result["stdout"]
    assert "lets other hosts read it (Require ip 127.0.0.1 ::1 169.254.77.0/24" in text


# --- the configuration reader, on written configurations --------------------------------------

def status_config(tmp_path: Path, text: str) -> check.StatusConfig:
    (tmp_path / "apache2.conf").write_text(text)
    conf = check.StatusConfig(str(tmp_path), {"APACHE_LOG_DIR": "/var/log/apache2"})
    conf.read(str(tmp_path / "apache2.conf"))
    return conf


DEBIAN_STATUS = """
LoadModule status_module /usr/lib/apache2/modules/mod_status.so
<IfModule mod_status.c>
    <Location /server-status>
        SetHandler server-status
        Require local
        #Require ip 192.0.2.0/24
    </Location>
    ExtendedStatus On
</IfModule>
SetEnvIf Request_URI "^/server-status" dontlog
CustomLog ${APACHE_LOG_DIR}/access.log combined env=!dontlog
<VirtualHost *:80>
    CustomLog ${APACHE_LOG_DIR}/other.log combined
</VirtualHost>
"""


def test_config_reader_finds_location_rules_and_logs(tmp_path):
    conf = status_config(tmp_path, DEBIAN_STATUS)
    section = conf.status_section("/server-status")
    assert section is not None and section.where == f"{tmp_path}/apache2.conf:4"
    assert section.verdict() == ("local", f"Require local at {tmp_path}/apache2.conf:6")
    assert conf.status_paths() == [("/server-status", f"{tmp_path}/apache2.conf:4")]
    assert [(log.target, log.condition, log.vhost) for log in conf.logs] == [
        ("/var/log/apache2/access.log", "env=!dontlog", ""),
        ("/var/log/apache2/other.log", "", "*:80")]
    assert check._env_set(conf, "/server-status", "127.0.0.1")["dontlog"][0] is True
    assert "dontlog" not in check._env_set(conf, "/index.html", "127.0.0.1")


def wsgi_lines(conf: check.StatusConfig) -> list:
    out = io.StringIO()
    check.report_wsgi(check.Report(out), conf)
    return out.getvalue().splitlines()


def test_a_wsgi_daemon_group_without_display_name_is_a_warning_with_the_fix(tmp_path):
    (tmp_path / "wsgi.conf").write_text(
        "WSGIDaemonProcess plain processes=2 threads=15\n"
        "WSGIDaemonProcess named display-name=%{GROUP} processes=1\n"
        "WSGIDaemonProcess custom 'display-name=my app' processes=1\n")
    conf = status_config(tmp_path, "Include wsgi.conf\n")
    assert [(g, d) for g, d, _w in conf.wsgi_daemons] == [
        ("plain", None), ("named", "%{GROUP}"), ("custom", "my app")]
    assert conf.wsgi_groups == ["plain", "named", "custom"]  # discovery's, as before
    found = wsgi_lines(conf)
    assert len(found) == 2 and all(x.startswith("WARN mod_wsgi: ") for x in found)
    assert f"WSGIDaemonProcess plain at {tmp_path}/wsgi.conf:1 has no display-name:" \
        in found[0]
    assert "counted as native workers" in found[0] and "--max-memory-wsgi never" in found[0]
    assert found[0].endswith("add display-name=%{GROUP} to that line and reload Apache")
    assert f"WSGIDaemonProcess custom at {tmp_path}/wsgi.conf:3 has display-name=my app " \
        "(its processes are titled 'my app')" in found[1]


def test_wsgi_daemon_groups_all_named_are_one_ok_line_and_none_no_line(tmp_path):
    conf = status_config(tmp_path, "<IfModule wsgi_module>\n</IfModule>\n"
                                   "WSGIDaemonProcess a display-name=%{GROUP}\n"
                                   "WSGIDaemonProcess b display-name=%{GROUP} threads=1\n")
    assert wsgi_lines(conf) == ["OK   mod_wsgi: 2 WSGIDaemonProcess groups, each with "
                                "display-name=%{GROUP}: reported per group, and "
                                "--max-memory-wsgi applies"]
    assert wsgi_lines(status_config(tmp_path, DEBIAN_STATUS)) == []
    assert wsgi_lines(None) == []


@integration
def test_check_warns_about_a_running_wsgi_group_without_display_name():
    extra = "WSGIDaemonProcess anonymous processes=1 threads=1\n"
    with ApacheServer("prefork", extra_conf=extra) as apache:
        status, found, proc = run_check("--url", apache.status_url)
    assert status == 0, proc.stdout
    level, text = found["mod_wsgi"]
    assert level == "WARN" and "WSGIDaemonProcess anonymous at " in text, proc.stdout
    assert "add display-name=%{GROUP}" in text
    assert "WSGIDaemonProcess example " not in proc.stdout  # the harness's groups have it


def test_config_reader_sections_end_with_their_file(tmp_path):
    # An unclosed section in an included file does not swallow the includer's rest.
    (tmp_path / "broken.conf").write_text("<VirtualHost *:8080>\n<Location /x>\n")
    conf = status_config(tmp_path, "Include broken.conf\n<Location /server-status>\n"
                                   "SetHandler server-status\nRequire all granted\n"
                                   "</Location>\nCustomLog logs/access.log combined\n")
    assert conf.status_section("/server-status").verdict()[0] == "open"
    assert [(log.target, log.vhost) for log in conf.logs] == [("logs/access.log", "")]
    assert conf.path_of("logs/access.log") == f"{tmp_path}/logs/access.log"


@pytest.mark.parametrize("rules,verdict", [
    ("Require local", "local"),
    ("Require ip 127.0.0.1 ::1", "local"),
    ("Require ip 127", "local"),
    ("Require ip 127.0.0.1 192.0.2.0/24", "wide"),
    ("Require host example.org", "wide"),
    ("Require all granted", "open"),
    ("Require all denied", "denied"),
    ("Require valid-user", "login"),
    ("Require env monitoring", "unknown"),
    ("Require local\nRequire all granted", "open"),  # RequireAny: the widest
    ("<RequireAll>\nRequire all granted\nRequire local\n</RequireAll>", "local"),
    ("<RequireAll>\nRequire ip 192.0.2.0/24\nRequire not ip 192.0.2.1\n</RequireAll>",
     "wide"),
    ("Order deny,allow\nDeny from all\nAllow from 127.0.0.1", "local"),
    ("Allow from all", "open"),
])
def test_require_verdicts(tmp_path, rules, verdict):
    conf = status_config(tmp_path, f"<Location /server-status>\nSetHandler server-status\n"
                                   f"{rules}\n</Location>\n")
    assert conf.status_section("/server-status").verdict()[0] == verdict


def test_location_matching():
    section = check.Section("location", "/server-status", "f:1", "")
    assert section.matches("/server-status") and section.matches("/server-status/")
    assert not section.matches("/server")
    regex = check.Section("locationmatch", "^/(status|server-status)$", "f:1", "")
    assert regex.matches("/status") and not regex.matches("/statusx")


# --- the consumer's configuration ----------------------------------------------------------

def consumer(tmp_path: Path, fmt: str, monkeypatch) -> list:
    monkeypatch.setattr(check, "ETC", str(tmp_path))
    out = io.StringIO()
    check.check_consumer(check.Report(out), argparse.Namespace(format=fmt))
    return out.getvalue().splitlines()


def test_consumer_not_installed(tmp_path, monkeypatch):
    assert consumer(tmp_path, "collectd", monkeypatch) == [
        f"WARN consumer: collectd is not installed here (no {tmp_path}/collectd); install "
        "it, then copy contrib/collectd/apache-metrics-exporter.conf to "
        f"{tmp_path}/collectd/collectd.conf.d/"]
    assert consumer(tmp_path, "tab", monkeypatch) == []  # a file for scripts as well


def test_consumer_file_in_place(tmp_path, monkeypatch):
    shipped = (ROOT / "contrib" / "collectd" / "apache-metrics-exporter.conf").read_text()
    (tmp_path / "collectd" / "collectd.conf.d").mkdir(parents=True)
    (tmp_path / "collectd" / "collectd.conf.d" / "apache-metrics-exporter.conf").write_text(
        shipped)
    (out,) = consumer(tmp_path, "collectd", monkeypatch)
    assert out.startswith("OK   consumer: ") and "collectd reads that directory" in out


def test_consumer_file_where_it_is_not_read(tmp_path, monkeypatch):
    shipped = (ROOT / "contrib" / "telegraf" / "apache-metrics-exporter.conf").read_text()
    (tmp_path / "telegraf" / "telegraf.d").mkdir(parents=True)
    (tmp_path / "telegraf" / "apache-metrics-exporter.conf").write_text(shipped)
    (out,) = consumer(tmp_path, "influx", monkeypatch)
    assert out == (f"FAIL consumer: {tmp_path}/telegraf/apache-metrics-exporter.conf names "
                   "apache-metrics-exporter, but Telegraf does not read it there: move it to "
                   f"{tmp_path}/telegraf/telegraf.d/apache-metrics-exporter.conf")


def test_consumer_without_the_file(tmp_path, monkeypatch):
    (tmp_path / "zabbix" / "zabbix_agentd.conf.d").mkdir(parents=True)
    (out,) = consumer(tmp_path, "tab", monkeypatch)
    assert out == (f"WARN consumer: no Zabbix agent configuration under {tmp_path}/zabbix "
                   "runs apache-metrics-exporter: copy "
                   "contrib/zabbix/apache-metrics-exporter.conf to "
                   f"{tmp_path}/zabbix/zabbix_agentd.conf.d/")


def test_debian_stock_configuration(tmp_path):
    # Debian 12's own /etc/apache2 (a copy): status.conf's Require local, and
    # access logs with no condition, so collections are logged.
    from tests.test_discovery import debian_tree

    etc = debian_tree(tmp_path)
    conf = check.StatusConfig(str(etc), {"APACHE_LOG_DIR": "/var/log/apache2"})
    conf.read(str(etc / "apache2.conf"))
    section = conf.status_section("/server-status")
    assert section.where == f"{etc}/mods-enabled/status.conf:5"
    assert section.verdict() == ("local", f"Require local at {etc}/mods-enabled/status.conf:7")
    assert [(log.target, log.condition) for log in conf.logs] == [
        ("/var/log/apache2/other_vhosts_access.log", ""), ("/var/log/apache2/access.log", "")]
    assert not conf.extended_off


def test_a_log_file_swapped_for_a_fifo_during_the_check_does_not_hang_it(tmp_path):
    # Red-team: the access-log check stats each log file, sends its marker
    # request, then opens the file. A user who owns the log directory (a site
    # logging into its own tree) swaps the file for a FIFO in between: the
    # open blocked for ever (root's --check hung, no deadline covers it).
    log = tmp_path / "site" / "access.log"
    log.parent.mkdir()
    log.write_text("old line\n")
    conf = status_config(tmp_path, f"CustomLog {log} combined\n")

    class SwappingFetcher:
        target = argparse.Namespace(auto_url="http://127.0.0.1:9/server-status?auto")
        _conn = None

        def fetch(self, url: str) -> tuple:
            log.unlink()
            os.mkfifo(log)
            return None, "refused", 0, ""

    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(
        check._marked(SwappingFetcher(), conf, conf.logs)), daemon=True)  # type: ignore[arg-type]
    thread.start()
    thread.join(5)
    hung = thread.is_alive()
    if hung:  # let the blocked open go: a writer on the FIFO
        os.close(os.open(log, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
    assert not hung, "the check blocked opening a FIFO"
    assert result.get(str(log)) is not True  # no marker found in a FIFO


def test_one_file_named_for_two_kinds_of_state_fails_the_check(tmp_path):
    """What the run refuses (redteam3: --collector-state naming the reaper's
    state file), --check FAILs, with the same line."""
    state = str(tmp_path / "state.json")
    status, found, proc = run_check("--url", "http://127.0.0.1:9/server-status",
                                    "--state-file", state, "--collector-state", state)
    assert status == 1
    assert found["state files"] == (
        "FAIL", f"--collector-state {state} and --state-file {state} are the same file: each "
                "would set the other's content aside as corrupt at every run; give "
                "--collector-state a file of its own")
    status, found, proc = run_check("--url", "http://127.0.0.1:9/server-status",
                                    "--state-file", state, "--collector-state",
                                    str(tmp_path / "cs.json"))
    assert "state files" not in found


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to nobody)")
@pytest.mark.parametrize("how", ["another user's", "group-writable", "under another user's"])
def test_install_d_is_never_advised_where_another_user_could_plant_a_link(
        tmp_path, monkeypatch, how):
    """Red team (redteam5): for a state path whose directory is missing,
    --check advised 'as root: install -d -o USER DIR'. GNU install -d on an
    existing symlink to a directory chowns the link's target: whoever may
    write DIR's parent (or any directory above it) could put DIR -> /etc
    there between --check and the operator's command, and root's install
    gave /etc to USER. Advised only where nobody but root can make DIR."""
    import io
    import pwd

    from apache_metrics_exporter import check as check_module

    nobody = pwd.getpwnam("nobody").pw_uid
    top = tmp_path / "top"
    top.mkdir(mode=0o755)
    parent = top / "state"
    parent.mkdir(mode=0o755)
    if how == "another user's":
        os.chown(parent, nobody, -1)
    elif how == "group-writable":
        parent.chmod(0o775)
    else:
        os.chown(top, nobody, -1)

    def advice(path):
        out = io.StringIO()
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # (as a user)
        try:
            check_module._state_path(check_module.Report(out), str(path), "spool directory",
                                     writer=True, directory=True)
        finally:
            monkeypatch.undo()
        return out.getvalue()

    said = advice(parent / "spool")
    assert "WARN" in said and "install -d" not in said
    assert "give a path in a directory this user can write" in said
    # Where only root can make it, the command is still given.
    os.chown(top, 0, -1)
    os.chown(parent, 0, -1)
    parent.chmod(0o755)
    assert f"as root: install -d -o root {parent}/spool;" in advice(parent / "spool")
