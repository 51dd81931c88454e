"""Command line, config file and environment: errors exit 2 before any fetch."""

import os
import socket
import subprocess
import sys
import threading

import pytest

from apache_metrics_exporter import __version__
from apache_metrics_exporter.config import build_parser, build_reaper_parser
from tests.conftest import exporter_env, run_exporter


@pytest.fixture
def listener():
    """A loopback port that counts the connections made to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            hits.append(1)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/server-status", hits
    stop.set()
    thread.join()
    sock.close()


def one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_version_and_help():
    proc = run_exporter("--version")
    assert proc.returncode == 0 and __version__ in proc.stdout
    proc = run_exporter("--help")
    assert proc.returncode == 0
    for option in ("--url", "--timeout", "--password-file", "--header", "--ca-file",
                   "--insecure", "--pid-file", "--memory", "--hanging-threshold",
                   "--format", "--output", "--config", "exit status"):
        assert option in proc.stdout, option


@pytest.mark.parametrize("args,message", [
    (["--timeout", "soon"], "--timeout"),
    (["--timeout", "0"], "--timeout"),
    (["--hanging-threshold", "5 parsecs"], "--hanging-threshold"),
    (["--memory", "vsz"], "--memory"),
    (["--format", "xml"], "--format"),
    (["--max-response-size", "lots"], "--max-response-size"),
    (["--header", "NoColonHere"], "--header"),
    (["--header", "Authorization Basic hunter2"], "--header 'Authorization'..."),
    (["--header", "Authorization: Basic\nhunter2"], "visible to every user in ps"),
    (["--ca-file", "/nonexistent/ca.pem"], "--ca-file"),
    (["--password-file", "/nonexistent/pw"], "--password-file"),
    (["--client-key", "/etc/hostname"], "--client-key needs --client-cert"),
    (["--output", "/nonexistent/dir/metrics.txt"], "--output"),
    (["--bogus-option"], "unrecognized option --bogus-option"),
    (["--bogus-option", "stray"], "unrecognized option --bogus-option (values are not "),
    (["--bogus-option=x", "stray"], "--bogus-option; 1 unexpected argument (values are not"),
    (["--pasword=hunter2"], "unrecognized option --pasword (did you mean --password?) "
                            "(values are not shown"),
    # The word after an unknown option is its value, not an unexpected argument.
    (["--pasword", "hunter2"], "unrecognized option --pasword (did you mean --password?) "
                               "(values are not shown"),
    (["--url", "http://mon:hunter2@127.0.0.1/x"], "'http://***@127.0.0.1/x': a password on "
                                                  "the command line"),
    (["--url=http://mon:hunter2@127.0.0.1/x"], "a password on the command line"),
    (["--scrape_uri", "http://mon:hunter2@127.0.0.1/x?auto"], "a password on the command"),
    (["--password", "hunter2"], "--password on the command line"),
    (["--password=hunter2"], "--password on the command line"),
    (["--url", "http://127.0.0.1/x", "--url", "http://127.0.0.2/x"], "one Apache only"),
    # A pace of 1ns collected as fast as the CPU goes: a busy loop, stderr
    # flooded while Apache is down, Apache's status page hammered while up.
    (["--interval", "1ns"], "--interval: at least 0.1 s"),
    (["--interval", "0.05"], "--interval: at least 0.1 s"),
    (["--watch", "1us"], "--watch: at least 0.1 s"),
])
def test_usage_errors_exit_2_before_fetching(listener, args, message):
    url, hits = listener
    proc = run_exporter("--url", url, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in one_error_line(proc)
    assert "hunter2" not in proc.stderr
    assert proc.stdout == ""
    assert hits == []


def test_bad_url_is_a_usage_error():
    proc = run_exporter("--url", "ftp://127.0.0.1/server-status")
    assert proc.returncode == 2
    assert "--url" in one_error_line(proc)
    proc = run_exporter("--url", "http://127.0.0.1:99999/server-status")
    assert proc.returncode == 2 and "port" in one_error_line(proc)


def test_missing_config_file(listener):
    url, hits = listener
    proc = run_exporter("--url", url, "--config", "/nonexistent/exporter.conf")
    assert proc.returncode == 2
    assert "/nonexistent/exporter.conf" in proc.stderr and "Traceback" not in proc.stderr
    assert hits == []


def test_unreadable_config_file(tmp_path, listener):
    url, hits = listener
    conf = tmp_path / "exporter.conf"
    conf.write_text("timeout = 3\n")
    conf.chmod(0)
    if os.access(conf, os.R_OK):  # root reads anything: use a directory instead
        conf = tmp_path
    proc = run_exporter("--url", url, "--config", str(conf))
    assert proc.returncode == 2
    assert str(conf) in one_error_line(proc)
    assert hits == []


def test_config_file_with_unknown_key(tmp_path, listener):
    url, hits = listener
    conf = tmp_path / "exporter.conf"
    conf.write_text("tiemout = 3\n")
    proc = run_exporter("--url", url, "--config", str(conf))
    assert proc.returncode == 2 and "tiemout" in proc.stderr
    assert hits == []


def test_config_file_with_bad_value_names_the_file_and_key(tmp_path, listener):
    url, hits = listener
    conf = tmp_path / "exporter.conf"
    conf.write_text("timeout = never\n")
    proc = run_exporter("--url", url, "--config", str(conf))
    assert proc.returncode == 2
    assert f"config file {conf}, key timeout: not a timespan" in one_error_line(proc)
    assert hits == []


def test_environment_sets_options_and_command_line_wins(listener):
    url, hits = listener
    env = exporter_env(APACHE_METRICS_URL=f"[{url}]", APACHE_METRICS_TIMEOUT="never")
    proc = run_exporter(env=env)
    assert proc.returncode == 2 and "environment variable APACHE_METRICS_TIMEOUT: " in proc.stderr
    assert hits == []
    proc = run_exporter("--timeout", "1", "--no-processes", env=env)
    assert proc.returncode == 0
    assert hits  # the URL from the environment was used


def test_password_from_file_config_or_environment_is_sent(tmp_path):
    # A real HTTP server that records the Authorization header it receives.
    import base64
    import http.server

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            body = b"BusyWorkers: 1\nIdleWorkers: 1\nScoreboard: W_\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/server-status"
    try:
        pw = tmp_path / "pw"
        pw.write_text("s3cret-file\n")
        conf = tmp_path / "c.conf"
        conf.write_text("password = s3cret-conf\n")
        cases = [
            (["--user", "mon", "--password-file", str(pw)], {}, "s3cret-file"),
            (["--user", "mon", "--config", str(conf)], {}, "s3cret-conf"),
            (["--user", "mon"], {"APACHE_METRICS_PASSWORD": "s3cret-env"}, "s3cret-env"),
        ]
        for args, env, password in cases:
            seen.clear()
            proc = run_exporter("--url", url, "--no-processes", *args, env=exporter_env(**env))
            assert proc.returncode == 0, proc.stderr
            expected = "Basic " + base64.b64encode(f"mon:{password}".encode()).decode()
            assert seen and all(h == expected for h in seen)
            assert password not in proc.stderr + proc.stdout
    finally:
        server.shutdown()
        server.server_close()


def test_password_without_user_is_a_usage_error(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    proc = run_exporter("--url", "http://127.0.0.1:9/s", "--password-file", str(pw))
    assert proc.returncode == 2 and "--user" in proc.stderr


def test_no_url_and_no_ports_config(tmp_path):
    proc = run_exporter("--ports-config", str(tmp_path / "ports.conf"))
    assert proc.returncode == 2
    assert "--ports-config" in one_error_line(proc)


def test_mistyped_config_key_is_named_without_its_value(tmp_path, listener):
    url, hits = listener
    conf = tmp_path / "exporter.conf"
    conf.write_text("timeout = 3\npasword = S3cret-conf\n")
    proc = run_exporter("--url", url, "--config", str(conf))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert f"unknown key 'pasword' in config file {conf} (did you mean 'password'?)" in line
    assert "S3cret" not in proc.stderr + proc.stdout
    assert hits == []


@pytest.mark.parametrize("content,message", [
    ("# monitoring\n=S3cret-line\n", "config file {conf}, line 2: expected 'key = value'"),
    ("insecure = S3cret\n", "config file {conf}, key insecure: expected true, false"),
    ("password = [S3cret, S3cret2]\n", "config key 'password' takes one value, not a list"),
])
def test_config_content_is_located_not_quoted(tmp_path, listener, content, message):
    url, hits = listener
    conf = tmp_path / "exporter.conf"
    conf.write_text(content)
    proc = run_exporter("--url", url, "--user", "mon", "--config", str(conf))
    assert proc.returncode == 2
    assert message.format(conf=conf) in one_error_line(proc)
    assert "S3cret" not in proc.stderr
    assert hits == []


def test_mistyped_environment_variable_is_named_without_its_value(listener):
    url, hits = listener
    proc = run_exporter("--url", url, "--no-processes", "--timeout", "1",
                        env=exporter_env(APACHE_METRICS_PASWORD="S3cret-env"))
    assert proc.returncode == 0
    warning = [line for line in proc.stderr.splitlines() if ": warning: " in line]
    assert len(warning) == 1 and "APACHE_METRICS_PASWORD" in warning[0]
    assert "S3cret" not in proc.stderr + proc.stdout
    proc = run_exporter("--url", url, "--no-processes", "--timeout", "1", "-q",
                        env=exporter_env(APACHE_METRICS_PASWORD="S3cret-env"))
    assert "APACHE_METRICS_PASWORD" not in proc.stderr


class AuthServer:
    """A real HTTP server that records the Authorization headers it receives."""

    def __init__(self, status: int = 200) -> None:
        import http.server

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.path, self.headers.get("Authorization")))
                body = b"BusyWorkers: 1\nIdleWorkers: 1\nScoreboard: W_\n"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.port = self.server.server_port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def basic(user, password):
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("fmt", ["tab", "text", "influx", "prometheus", "collectd"])
def test_url_credentials_are_used_for_basic_auth_and_never_shown(tmp_path, fmt):
    server = AuthServer()
    try:
        conf = tmp_path / "c.conf"
        conf.write_text(f"url = http://mon:S3%40cret@127.0.0.1:{server.port}/server-status"
                        "?auto\n")
        proc = run_exporter("--config", str(conf), "--no-processes", "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        assert server.seen and all(h == basic("mon", "S3@cret") for _, h in server.seen)
        assert {p for p, _ in server.seen} <= {"/server-status?auto", "/server-status"}
        assert "S3" not in proc.stdout + proc.stderr
        assert "mon:" not in proc.stdout + proc.stderr and "@127" not in proc.stdout
    finally:
        server.close()


def test_url_credentials_are_redacted_in_error_lines(tmp_path):
    server = AuthServer(status=401)
    try:
        conf = tmp_path / "c.conf"
        conf.write_text(f"url = http://mon:S3cret@127.0.0.1:{server.port}/server-status\n")
        proc = run_exporter("--config", str(conf), "--no-processes", "--format", "text")
        assert proc.returncode == 0
        assert "HTTP 401" in one_error_line(proc)
        assert "S3cret" not in proc.stdout + proc.stderr and "mon" not in proc.stderr
    finally:
        server.close()


@pytest.mark.parametrize("given", ["mon:S3cret@127.0.0.1/server-status",
                                   "mon:S3/cret@127.0.0.1/server-status"])
def test_a_url_without_scheme_never_echoes_its_password(tmp_path, given):
    conf = tmp_path / "c.conf"
    conf.write_text(f"url = {given}\n")
    proc = run_exporter("--config", str(conf))
    assert proc.returncode == 2
    assert "S3" not in proc.stderr and "mon" not in proc.stderr
    assert "'***@127.0.0.1/server-status'" in proc.stderr
    assert "did you mean" not in proc.stderr  # a guess would carry the password


@pytest.mark.parametrize("given, meant", [
    ("127.0.0.1:8080/server-status", "http://127.0.0.1:8080/server-status"),
    ("localhost", "http://localhost/server-status"),
    ("[::1]:8080/status", "http://[::1]:8080/status")])
def test_a_url_without_scheme_gets_the_url_it_meant(given, meant):
    proc = run_exporter("--url", given)
    assert proc.returncode == 2
    assert proc.stderr == (f"apache-metrics-exporter: error: --url {given!r}: expected "
                           f"http://HOST[:PORT]/server-status or https://...; did you mean "
                           f"--url {meant}?\n")


def test_url_user_with_a_password_from_elsewhere(tmp_path):
    server = AuthServer()
    try:
        url = f"http://mon@127.0.0.1:{server.port}/server-status"
        pw = tmp_path / "pw"
        pw.write_text("S3cret-file\n")
        proc = run_exporter("--url", url, "--password-file", str(pw), "--no-processes")
        assert proc.returncode == 0, proc.stderr
        assert all(h == basic("mon", "S3cret-file") for _, h in server.seen)
    finally:
        server.close()


@pytest.mark.parametrize("extra,message", [
    (["--user", "other"], "names a user and --user is given too"),
    (["--password-file", "PW"], "has a password and one is given by --password-file"),
])
def test_url_credentials_conflict_with_the_options(tmp_path, listener, extra, message):
    url, hits = listener
    conf = tmp_path / "c.conf"
    conf.write_text(f"url = {url.replace('://', '://mon:S3cret@')}\n")
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    extra = [str(pw) if a == "PW" else a for a in extra]
    proc = run_exporter("--config", str(conf), *extra)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert message in line and "http://***@127.0.0.1:" in line
    assert "S3cret" not in proc.stderr
    assert hits == []


@pytest.mark.parametrize("style,prefix", [("plain", "prog: error: "), ("telegraf", "E! [prog] ")])
def test_every_log_line_is_one_line_without_control_characters(capsys, style, prefix):
    from apache_metrics_exporter.log import Logger

    logger = Logger()
    logger.setup(0, 0, "prog", style)
    logger.error("reason %s", "OK\x1b[2J\rX\r\nprog: error: forged\x00\x7f\x85\x9b\u2028end\tz")
    err = capsys.readouterr().err
    assert err == (prefix + "reason OK\\x1b[2J\\rX\\r\\nprog: error: forged\\x00\\x7f\\x85"
                   "\\x9b\\u2028end\\tz\n")


def test_once_says_a_message_once_and_stays_bounded(capsys, monkeypatch):
    from apache_metrics_exporter import log as log_module
    from apache_metrics_exporter.log import INFO, WARNING, Logger

    logger = Logger()
    logger.setup(1, 0, "prog")  # -v: info shown
    assert logger.once(WARNING, "the state file is gone") is True
    assert logger.once(WARNING, "the state file is gone") is False
    assert logger.said("the state file is gone") and not logger.said("never said")
    assert logger.once(INFO, "another thing") is True
    assert capsys.readouterr().err == ("prog: warning: the state file is gone\n"
                                       "prog: info: another thing\n")
    # A --listen probing ever new targets cannot grow it without bound.
    monkeypatch.setattr(log_module, "ONCE_LIMIT", 10)
    for i in range(25):
        logger.once(INFO, f"target {i}")
    assert len(logger._once) <= 10
    logger.forget()
    assert logger.once(WARNING, "the state file is gone") is True


def test_fifos_where_files_are_expected_never_hang_a_run(tmp_path):
    # A FIFO planted as the PID file, a password file or a config file would
    # block an open() for ever (and the reaper while holding its lock).
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    down = ("--url", "http://127.0.0.1:9/server-status", "--format", "tab")
    proc = run_exporter(*down, "--pid-file", str(fifo), timeout=20)
    assert proc.returncode == 0 and "status-response\t1" in proc.stdout
    proc = run_exporter(*down, "--user", "u", "--password-file", str(fifo), timeout=20)
    assert proc.returncode == 2 and "is not a regular file" in proc.stderr
    proc = run_exporter(*down, "-c", str(fifo), timeout=20)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr


def test_a_config_file_others_can_write_is_refused(tmp_path):
    conf = tmp_path / "shared.conf"
    conf.write_text("apache-exe = sshd\n")
    conf.chmod(0o666)
    proc = run_exporter("--url", "http://127.0.0.1:9/server-status", "-c", str(conf))
    assert proc.returncode == 2 and "writable by others" in proc.stderr
    conf.chmod(0o644)
    proc = run_exporter("--url", "http://127.0.0.1:9/server-status", "-c", str(conf),
                        "--format", "tab")
    assert proc.returncode == 0


def test_a_credential_header_is_refused_on_the_command_line():
    proc = run_exporter("--url", "http://127.0.0.1:9/server-status",
                        "--header", "Authorization: Bearer TOPSECRET")
    assert proc.returncode == 2 and "visible to every user in ps" in proc.stderr
    assert "TOPSECRET" not in proc.stderr
    proc = run_exporter("--url", "http://127.0.0.1:9/server-status", "--format", "tab",
                        "--header", "X-Forwarded-For: 127.0.0.1")
    assert proc.returncode == 0


def test_ctrl_c_is_one_line_and_status_130():
    import signal
    import subprocess
    import sys

    from tests.conftest import exporter_env

    exe = os.path.join(os.path.dirname(sys.executable), "apache-metrics-exporter")
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/server-status"
        # Ctrl-C's SIGINT as a terminal delivers it: a suite started in the
        # background by a non-interactive shell (scripts/debian13-check.sh
        # under nohup ... &) hands its children SIGINT ignored, and Python
        # keeps an ignored SIGINT ignored, as a background job should.
        proc = subprocess.Popen([exe, "--url", url, "--timeout", "20", "--format", "tab"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=exporter_env(),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        conn, _ = silent.accept()  # the run is waiting for the answer now

        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
        conn.close()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().endswith("error: interrupted"), err


DOWN = "http://127.0.0.1:1/server-status"  # refused: an outage, no Apache needed


def _untrusted_config(tmp_path) -> str:
    """A config file anyone could have written (mode 0666)."""
    path = tmp_path / "evil.conf"
    path.write_text(f"url = {DOWN}\n")
    path.chmod(0o666)
    return str(path)


def test_attached_short_config_option_is_trust_checked(tmp_path):
    # -cPATH (argparse accepts it) was read without the trust check: the
    # check is now configargparse's only way to open a config file.
    evil = _untrusted_config(tmp_path)
    result = run_exporter(f"-c{evil}", "--format", "tab", timeout=30)
    assert result.returncode == 2, result.stderr
    assert "writable by others" in result.stderr


def test_grouped_short_config_option_fifo_does_not_hang(tmp_path):
    # -vc FIFO blocked the run for ever.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    try:
        result = run_exporter("-vc", str(fifo), "--url", DOWN, "--format", "tab",
                              timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the run blocked on a FIFO given as '-vc FIFO'")
    assert result.returncode == 2 and "FIFO" in result.stderr


# --- the rough edges a newcomer hit (issue 21) ---------------------------------------

def test_a_bad_config_value_names_the_file_and_key(tmp_path):
    # argparse says "argument --timeout", which nobody typed: the file and key
    # (or the variable) that set the value are what to fix.
    conf = tmp_path / "exporter.conf"
    conf.write_text("url = http://127.0.0.1:9/server-status\ntimeout = soon\n")
    conf.chmod(0o600)
    proc = run_exporter("-c", str(conf))
    assert proc.returncode == 2
    assert proc.stderr == (f"apache-metrics-exporter: error: config file {conf}, key timeout: "
                           "not a timespan: 'soon' (examples: 30s, 5m, 1h) (see --help)\n")
    conf.write_text("memory = lots\ninsecure = maybe\n")
    proc = run_exporter("-c", str(conf), "--url", "http://127.0.0.1:9/server-status")
    assert f"config file {conf}, key " in proc.stderr and "argument" not in proc.stderr
    proc = run_exporter("--url", "http://127.0.0.1:9/server-status",
                        env=exporter_env(APACHE_METRICS_TIMEOUT="-1"))
    assert proc.stderr.startswith("apache-metrics-exporter: error: environment variable "
                                  "APACHE_METRICS_TIMEOUT: not a timespan: '-1'")
    # Typed on the command line (over the file's value): argparse's words fit.
    conf.write_text("timeout = soon\n")
    proc = run_exporter("-c", str(conf), "--timeout", "0", "--url", "http://127.0.0.1:9/s")
    assert "error: argument --timeout: must be more than 0 seconds" in proc.stderr


def _ipv6_loopback_port() -> int:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            return s.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")


def test_ipv6_addresses_are_bracketed_in_errors(tmp_path):
    port = _ipv6_loopback_port()
    url = f"http://[::1]:{port}/server-status"
    proc = run_exporter("--url", url, "--format", "tab", "-f", str(tmp_path / "m.txt"))
    assert f"connection to [::1]:{port} refused: is Apache running" in proc.stderr
    # The reaper says it in one line, what it does before what to do.
    from tests.test_reaper import reap

    proc = reap("--url", url, "--max-time", "1h", "--dry-run", "--state-file",
                str(tmp_path / "s.json"))
    assert (f"error: nothing listens on [::1]:{port} (connection refused): signalling "
            "nothing this run; start Apache, or point --url at the address and port it "
            "listens on\n") in proc.stderr
    assert "?;" not in proc.stderr


# What a one-shot run (Telegraf's inputs.exec, cron) must not import: each was
# cut from that path because it cost time there (docs/performance.md), and
# comes back silently with one import at the top of a module.
NOT_ON_THE_ONE_SHOT_PATH = {
    "influxdb_client": "the InfluxDB push only (--format influxdb)",
    "psutil": "the reaper only; the collector reads /proc itself",
    "lxml": "the fallback for markup that is not Apache's own",
    "logging": "log.py's ten-line logger instead",
    "typing": "annotations only (TYPE_CHECKING)",
    "signal": "the loops' stop handlers only",
    "html": "cells with an entity other than the event MPM's &nbsp;",
    "urllib.request": "collect/wire.py reads the answers",
    "http.client": "collect/wire.py reads the answers (http.client imports email)",
    "email": "http.client's header parser, no longer used",
    "ssl": "https URLs only",
    "threading": "several targets or a host name to resolve",
    "subprocess": "nothing on this path",
    "encodings.idna": "a URL naming a host (an address is looked up as bytes)",
}


@pytest.mark.parametrize("fmt", ["tab", "influx", "collectd"])
def test_the_one_shot_path_imports_nothing_it_does_not_need(fmt):
    # A real event MPM page (its process table has the &nbsp; cell), both
    # pages parsed and written, the process proof and the state files run.
    import sys

    from tests.conftest import parse_tab
    from tests.harness.pages import serve_pages

    data = os.path.join(os.path.dirname(__file__), "data", "2.4.71-event-ext-on")
    with open(data + ".auto.txt", "rb") as auto, open(data + ".html", "rb") as html:
        pages = auto.read(), html.read()
    with serve_pages(*pages) as url:
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "apache_metrics_exporter",
             "--url", url, "--format", fmt],
            capture_output=True, text=True, env=exporter_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if fmt == "tab":
        tab = parse_tab(proc.stdout)
        assert tab["status-response"] == "0" and "busy-workers" in tab, proc.stdout
    else:
        assert proc.stdout.strip(), proc.stderr[-2000:]
    imported = {line.split("|")[2].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and line.split("|")[1].strip().isdigit()}
    assert "apache_metrics_exporter.collect.status" in imported  # importtime did report
    found = {name: why for name, why in NOT_ON_THE_ONE_SHOT_PATH.items()
             if name in imported or any(m.startswith(name + ".") for m in imported)}
    assert not found, f"imported on the one-shot path: {found}"


def test_the_parser_works_out_where_its_arguments_end_once_per_command_line(monkeypatch):
    # configargparse 1.10 asks this once per option (about 80 times a parse),
    # each answer a walk over every option: 4 ms of a one-shot run. The
    # parser remembers it; the answers stay those of configargparse.
    import configargparse

    from apache_metrics_exporter import config

    if not hasattr(configargparse.ArgParser, "_find_end_of_this_parsers_args"):
        pytest.skip("this configargparse does not ask (before 1.10)")
    calls = []
    real = configargparse.ArgParser._find_end_of_this_parsers_args

    def counted(self, args):
        calls.append(list(args))
        return real(self, args)

    monkeypatch.setattr(configargparse.ArgParser, "_find_end_of_this_parsers_args", counted)
    argv = ["--url", "http://127.0.0.1:9/server-status", "--format", "tab", "-v",
            "--timeout", "3", "--header", "Host: a"]
    args = config.parse(config.build_parser(), argv)
    assert args.timeout == 3.0 and args.format == "tab" and args.verbose == 1
    assert 1 <= len(calls) <= 3, len(calls)
    parser = config.build_parser()
    assert parser._find_end_of_this_parsers_args(argv + ["--", "x"]) == real(
        parser, argv + ["--", "x"]) == len(argv)


def test_the_entry_points_hold_the_garbage_collector_off_only_while_starting():
    # Start-up allocates objects by the ten thousand and frees none: the
    # entry points disable the collector before importing, cli.started()
    # freezes what exists and enables it again once the options are parsed,
    # for the rest of the run (loops included). Importing the package
    # elsewhere leaves the collector alone.
    import sys

    code = ("import gc\n"
            "import apache_metrics_exporter.cli as cli\n"
            "assert gc.isenabled()\n"
            "from apache_metrics_exporter import entry\n"
            "assert not gc.isenabled() and gc.get_freeze_count() == 0\n"
            "cli.started()\n"
            "assert gc.isenabled() and gc.get_freeze_count() > 1000, gc.get_freeze_count()\n"
            "frozen = gc.get_freeze_count()\n"
            "cli.started()\n"
            "assert gc.get_freeze_count() == frozen\n"  # enabled: nothing frozen again
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=exporter_env(), timeout=60)
    assert proc.stdout == "ok\n", proc.stderr[-2000:]
    from apache_metrics_exporter import cli

    calls = []
    real = cli.started
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "started", lambda: calls.append(1) or real())
        # (two URLs for one tab file: a usage error right after the parse)
        assert cli.main(["--url", "http://127.0.0.1:9/server-status", "--url",
                         "http://127.0.0.1:10/server-status", "--format", "tab"]) == 2
    assert calls == [1]


@pytest.mark.parametrize("key", ["collector-state", "output", "state-file", "pid-file"])
@pytest.mark.parametrize("check", [False, True])
def test_a_nul_byte_in_a_config_files_value_is_a_usage_error(tmp_path, listener, key, check):
    """Red team (redteam5): a config file can carry a NUL byte, which no
    command line or environment can; every path rule (os.lstat) raised
    ValueError on it - a traceback from the run (--output, --collector-state
    with Apache up), from --check, and from the new one-file-for-two-kinds
    check (paths.same_file) before anything was fetched."""
    from apache_metrics_exporter.paths import same_file

    url, hits = listener
    conf = tmp_path / "exporter.conf"
    conf.write_bytes(f"{key} = {tmp_path}/a\0b\n".encode())
    other = [] if key == "state-file" else ["--state-file", str(tmp_path / "r.json")]
    env = exporter_env()
    env.pop("APACHE_METRICS_" + key.upper().replace("-", "_"), None)  # (it wins)
    proc = run_exporter("--url", url, "--config", str(conf), *other,
                        *(["--check"] if check else []), env=env)
    line = one_error_line(proc)
    assert proc.returncode == 2 and f"--{key} holds a NUL byte" in line
    assert "a\0b" not in line and hits == [] and os.listdir(tmp_path) == ["exporter.conf"]
    assert not same_file(f"{tmp_path}/a\0b", str(tmp_path)) and \
        not same_file(str(tmp_path / "missing"), "x\0")


# --- every option's worst value (red team 4) ----------------------------------------

def _path_options(build) -> list:
    """(option, dest) of every option whose value is a PATH, but the two whose
    empty value means something: --collector-state ('' for none) and
    --telemetry-endpoint (a URL path; empty is the default, as for
    apache_exporter)."""
    return [(a.option_strings[0] if a.option_strings[0].startswith("--")
             else a.option_strings[1], a.dest)
            for a in build()._actions
            if a.metavar == "PATH" and a.dest not in ("collector_state", "telemetry_endpoint")]


@pytest.mark.parametrize("command,option", [
    ("exporter", o) for o, _ in _path_options(build_parser)] + [
    ("reaper", o) for o, _ in _path_options(build_reaper_parser)])
@pytest.mark.parametrize("how", ["command line", "config file", "environment"])
def test_an_empty_path_is_a_usage_error_naming_the_option(tmp_path, monkeypatch, command,
                                                         option, how):
    # os.path.join(cwd, '') is the current directory itself: an empty
    # --state-file (a 'state-file =' line, APACHE_METRICS_STATE_FILE= in a
    # unit file) made root's reaper move its working directory aside as a
    # "corrupt" state file and write JSON in its place - /root under cron.
    from apache_metrics_exporter import config
    from apache_metrics_exporter.errors import UsageError

    build = build_parser if command == "exporter" else build_reaper_parser
    argv = ["--url", "http://127.0.0.1:9/server-status", "--max-time", "1h"][
        :2 if command == "exporter" else 4]
    env_var = "APACHE_METRICS_" + option[2:].upper().replace("-", "_").replace(".", "_")
    monkeypatch.delenv(env_var, raising=False)  # the session's own state paths
    if how == "command line":
        argv.append(f"{option}=")
    elif how == "config file":
        conf = tmp_path / "c.conf"
        conf.write_text(f"{option[2:]} =\n")
        conf.chmod(0o600)
        argv += ["-c", str(conf)]
    else:
        monkeypatch.setenv(env_var, "")
    with pytest.raises(UsageError) as caught:
        config.parse(build(), argv)
    message = str(caught.value)
    assert "empty" in message and "\n" not in message
    named = {"command line": option, "config file": f"key {option[2:]}",
             "environment": f"environment variable {env_var}"}[how]
    assert named in message, message


def test_an_empty_state_file_never_moves_the_working_directory(tmp_path):
    work = tmp_path / "home"
    work.mkdir()
    (work / "keep").write_text("mine\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from apache_metrics_exporter.cli import reaper_console; "
         "reaper_console()", "--url", "http://127.0.0.1:9/server-status", "--max-time",
         "1h", "--dry-run", "--state-file="],
        capture_output=True, text=True, timeout=60, cwd=work,
        env=exporter_env(PYTHONPATH=os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == 2, proc.stderr
    assert "--state-file" in one_error_line(proc)
    assert (work / "keep").read_text() == "mine\n"
    assert sorted(os.listdir(tmp_path)) == ["home"]


def _checked_options(build) -> list:
    """Every option whose value is converted or chosen (type= or choices=)."""
    return [next(o for o in a.option_strings if o.startswith("--"))
            for a in build()._actions
            if a.option_strings and a.nargs != 0 and (a.type is not None or a.choices)
            and not a.dest.startswith("_foreign")]


@pytest.mark.parametrize("command,option", [
    ("exporter", o) for o in _checked_options(build_parser)] + [
    ("reaper", o) for o in _checked_options(build_reaper_parser)])
def test_an_option_given_a_double_dash_is_checked_like_any_value(command, option):
    # Python 3.11's argparse drops a '--' that is an option's own value
    # (--timeout=--) and sets the option to [] past its type and choices:
    # tracebacks later (a list where seconds were expected), and in the
    # reaper a --grace or --lock-timeout of [] that passed every check.
    from apache_metrics_exporter import config
    from apache_metrics_exporter.errors import UsageError

    build = build_parser if command == "exporter" else build_reaper_parser
    argv = ["--url", "http://127.0.0.1:9/server-status", "--max-time", "1h"][
        :2 if command == "exporter" else 4]
    with pytest.raises(UsageError) as caught:
        config.parse(build(), [*argv, f"{option}=--"])
    assert option in str(caught.value) and "'--'" in str(caught.value)


@pytest.mark.parametrize("args", [["--url=--"], ["--header=--"],
                                  ["-T--"], ["--format=--"], ["--vhost-limit=--"]])
def test_a_double_dash_value_is_never_a_traceback(args):
    proc = run_exporter("--url", "http://127.0.0.1:9/server-status", *args)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc)
