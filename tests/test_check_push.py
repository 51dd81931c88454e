"""``--check --format influxdb``: the push target asked as the run would ask it.

Against the real InfluxDB 1.6 (Debian's influxd) on loopback: directly (it
has no /api/v2/write), over https, and with authentication behind
harness.servers.V2Write, which gives it InfluxDB 1.8's /api/v2/write (the
real server decides every answer). InfluxDB 2.x's answers (there is no 2.x
server here) come from a loopback server that answers as 2.x's write handler
does, in the order it checks: token, org, bucket, permission, then body.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading

import pytest

from tests.harness.apache import free_port
from tests.harness.servers import InfluxDB, V2Write, VictoriaMetrics
from tests.test_check import run_check

integration = pytest.mark.integration
TOKEN = "s3cret-t0ken-value"
WRITER_PASSWORD = "wr1ter-pw-value"


@pytest.fixture(scope="module")
def secured():
    """InfluxDB 1.6 with authentication, database "apache" (retention policy
    autogen), users writer (WRITE only) and reader (READ only), behind V2Write."""
    server = InfluxDB(auth=True).start()
    adapter = None
    try:
        server.query('CREATE DATABASE "apache"')
        for user, grant in (("writer", "WRITE"), ("reader", "READ")):
            server.query(f"CREATE USER \"{user}\" WITH PASSWORD '{WRITER_PASSWORD}'")
            server.query(f'GRANT {grant} ON "apache" TO "{user}"')
        adapter = V2Write(server.url)
        yield server, adapter
    finally:
        if adapter is not None:
            adapter.close()
        server.stop()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/server-status"


def push_check(tmp_path, url: str, *options: str, apache: str = "") -> tuple:
    """(exit status, {topic: (level, text)}, process) of --check with a push."""
    password = tmp_path / "password"
    password.write_text(WRITER_PASSWORD + "\n")
    password.chmod(0o600)
    return run_check("--url", apache or dead_url(), "--no-processes", "--format", "influxdb",
                     "--spool-dir", str(tmp_path / "spool"), "--influxdb-url", url,
                     *options, timeout=60)


def as_user(tmp_path, user: str = "writer", bucket: str = "apache/autogen") -> list:
    password = tmp_path / "password"
    return ["--influxdb-username", user, "--influxdb-password-file", str(password),
            "--influxdb-bucket", bucket]


def stored(server: InfluxDB) -> list:
    """Every series in database apache: a check must never write a point."""
    result = server.query("SHOW SERIES", "apache")["results"][0]
    return result.get("series", [])


@integration
def test_a_sound_push_target_is_ok_and_nothing_is_written(prefork, secured, tmp_path):
    server, adapter = secured
    before = len(adapter.bodies)
    status, found, proc = push_check(tmp_path, adapter.url, *as_user(tmp_path),
                                     apache=prefork.status_url)
    assert status == 0, proc.stdout
    assert found["InfluxDB"] == ("OK", f"{adapter.url} answers /ping: InfluxDB 1.6.7~rc0 (OSS)")
    level, text = found["InfluxDB write"]
    assert level == "OK", text
    assert text.startswith(f"user writer with the password of --influxdb-password-file "
                           f"{tmp_path}/password accepted, writes to bucket apache/autogen "
                           "allowed (an empty write was answered 204")
    assert text.endswith("no point written)")
    # A write-only user is enough, and the probe carried no line.
    assert adapter.bodies[before:] == [b""]
    assert stored(server) == []
    assert WRITER_PASSWORD not in proc.stdout + proc.stderr


@integration
def test_a_wrong_password_fails_naming_where_it_came_from(prefork, secured, tmp_path):
    server, adapter = secured
    (tmp_path / "password").write_text("not-the-password\n")
    status, found, proc = run_check(
        "--url", prefork.status_url, "--no-processes", "--format", "influxdb",
        "--spool-dir", str(tmp_path / "spool"), "--influxdb-url", adapter.url,
        "--influxdb-username", "writer", "--influxdb-password-file",
        str(tmp_path / "password"), "--influxdb-bucket", "apache/autogen")
    assert status == 1, proc.stdout
    assert found["InfluxDB"][0] == "OK"
    assert found["InfluxDB write"] == (
        "FAIL", f"{adapter.url} refused user writer with the password of "
                f"--influxdb-password-file {tmp_path}/password: HTTP 401 (authorization "
                "failed); give the user's right password")
    assert "not-the-password" not in proc.stdout + proc.stderr


def test_a_wrong_token_fails_naming_the_token_file(secured, tmp_path):
    # InfluxDB 1.8 takes a token only as USER:PASSWORD: a 2.x token is refused.
    server, adapter = secured
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    status, found, proc = push_check(tmp_path, adapter.url, "--influxdb-org", "o",
                                     "--influxdb-bucket", "apache/autogen",
                                     "--influxdb-token-file", str(token))
    level, text = found["InfluxDB write"]
    assert level == "FAIL" and status == 1
    assert text.startswith(f"{adapter.url} refused the token of --influxdb-token-file "
                           f"{token}: HTTP 401"), text
    assert TOKEN not in proc.stdout + proc.stderr


def test_a_user_who_may_only_read_fails(secured, tmp_path):
    server, adapter = secured
    status, found, proc = push_check(tmp_path, adapter.url, *as_user(tmp_path, "reader"))
    assert found["InfluxDB write"] == (
        "FAIL", f"user reader with the password of --influxdb-password-file "
                f"{tmp_path}/password is accepted but may not write to bucket "
                'apache/autogen: HTTP 403 ("reader" user is not authorized to write to '
                'database "apache"); GRANT WRITE ON "apache" TO "reader"')


def test_a_missing_database_or_retention_policy_fails_naming_it(secured, tmp_path):
    server, adapter = secured
    status, found, proc = push_check(tmp_path, adapter.url,
                                     *as_user(tmp_path, bucket="nosuchdb/autogen"))
    assert found["InfluxDB write"] == (
        "FAIL", 'database nosuchdb of --influxdb-bucket nosuchdb/autogen not found: HTTP 404 '
                '(database not found: "nosuchdb"); create it (CREATE DATABASE "nosuchdb") '
                "or fix --influxdb-bucket (DATABASE/RETENTION)")
    status, found, proc = push_check(tmp_path, adapter.url,
                                     *as_user(tmp_path, bucket="apache/nosuchrp"))
    assert found["InfluxDB write"] == (
        "FAIL", "retention policy nosuchrp of --influxdb-bucket apache/nosuchrp not found: "
                "HTTP 500 (retention policy not found: nosuchrp); fix --influxdb-bucket "
                "(DATABASE/RETENTION, SHOW RETENTION POLICIES lists them)")
    assert stored(server) == []


@integration
def test_influxdb_without_api_v2_write_is_named_with_its_version(influxdb, tmp_path):
    # The real InfluxDB 1.6 itself: /ping answers, /api/v2/write is 404.
    influxdb.query('CREATE DATABASE "apache"')
    status, found, proc = push_check(tmp_path, influxdb.url, "--influxdb-org", "-",
                                     "--influxdb-bucket", "apache/autogen")
    assert found["InfluxDB"] == ("OK", f"{influxdb.url} answers /ping: InfluxDB 1.6.7~rc0 (OSS)")
    assert found["InfluxDB write"] == (
        "FAIL", f"InfluxDB 1.6.7~rc0 at {influxdb.url} has no /api/v2/write (HTTP 404 (404 "
                "page not found); InfluxDB 1.8 and later have it): upgrade it, or let "
                "Telegraf write to it (--format influx, contrib/telegraf/)")


def test_nothing_listening_fails_with_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    status, found, proc = push_check(tmp_path, url, "--influxdb-org", "o",
                                     "--influxdb-bucket", "b", "--influxdb-token", TOKEN)
    assert status == 1
    assert found["InfluxDB"] == (
        "FAIL", f"cannot reach InfluxDB at {url}: connection refused: it is not running or "
                "does not listen there; check that it runs (systemctl status influxdb) and "
                "--influxdb-url; until then every batch waits in the spool")
    assert "InfluxDB write" not in found  # nothing more to learn


def test_a_server_that_never_answers_fails_within_the_timeout(tmp_path):
    import socket
    import time

    with socket.socket() as listener:  # takes connections, says nothing
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        status, found, proc = push_check(tmp_path, url, "--influxdb-org", "o",
                                         "--influxdb-bucket", "b", "--influxdb-timeout", "1")
        assert time.monotonic() - started < 20
    assert status == 1
    assert found["InfluxDB"] == (
        "FAIL", f"no answer from InfluxDB at {url} within 1 s (--influxdb-timeout): something "
                "there takes the connection and does not answer, or InfluxDB is overloaded; "
                "check --influxdb-url; until then every batch waits in the spool")


@pytest.fixture(scope="module")
def tls_influxdb(tmp_path_factory):
    tls = tmp_path_factory.mktemp("influxdb-tls")
    cert, key = tls / "cert.pem", tls / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    server = InfluxDB(tls=(str(cert), str(key))).start()
    try:
        yield server, cert
    finally:
        server.stop()


@integration
def test_tls_without_the_ca_fails_and_with_it_reaches(tls_influxdb, tmp_path):
    server, cert = tls_influxdb
    base = ["--influxdb-org", "-", "--influxdb-bucket", "apache/autogen"]
    status, found, proc = push_check(tmp_path, server.url, *base)
    level, text = found["InfluxDB"]
    assert level == "FAIL" and status == 1
    assert text.startswith(f"TLS with {server.url} failed: "), text
    assert "certificate verify failed" in text
    assert text.endswith("give --influxdb-ca-file with the CA that signed InfluxDB's "
                         "certificate (a self-signed one: the certificate itself); "
                         "--influxdb-insecure skips the check")
    assert "\\x0a" not in text  # the error's own words, on one line
    status, found, proc = push_check(tmp_path, server.url, *base,
                                     "--influxdb-ca-file", str(cert))
    assert found["InfluxDB"] == ("OK", f"{server.url} answers /ping: InfluxDB 1.6.7~rc0 (OSS)")
    # Another CA than the one that signed it: the line names the file.
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other), "-subj",
                    "/CN=other"], check=True, capture_output=True)
    status, found, proc = push_check(tmp_path, server.url, *base,
                                     "--influxdb-ca-file", str(other))
    level, text = found["InfluxDB"]
    assert level == "FAIL" and f"not signed by a CA of --influxdb-ca-file {other}" in text
    # The right CA, but a name the certificate does not have.
    status, found, proc = push_check(tmp_path, server.url.replace("127.0.0.1", "localhost"),
                                     *base, "--influxdb-ca-file", str(cert))
    level, text = found["InfluxDB"]
    assert level == "FAIL" and "Hostname mismatch" in text
    assert text.endswith("the certificate is not for the host name of --influxdb-url: give "
                         "the URL by a name the certificate has")
    # http:// to the https port.
    status, found, proc = push_check(tmp_path, server.url.replace("https:", "http:"), *base)
    level, text = found["InfluxDB"]
    assert level == "FAIL" and text.endswith("give --influxdb-url https://...")
    assert "InfluxDB write" not in found


@integration
def test_victoriametrics_with_http_auth(tmp_path):
    vm = VictoriaMetrics("monitor", WRITER_PASSWORD).start()
    try:
        base = ["--influxdb-username", "monitor", "--influxdb-auth-basic",
                "--influxdb-bucket", "db/autogen", "--influxdb-password-file",
                str(tmp_path / "password")]
        status, found, proc = push_check(tmp_path, vm.url, *base)
        assert found["InfluxDB"] == ("OK", f"{vm.url} answers /ping: no version given: not "
                                           "InfluxDB itself (e.g. VictoriaMetrics), or a "
                                           "proxy before it")
        level, text = found["InfluxDB write"]
        assert level == "OK" and text.endswith(
            "(an empty write was answered 204; a server without buckets (VictoriaMetrics) "
            "takes any org, bucket and token; no point written)"), text
        (tmp_path / "wrong").write_text("wrong-password\n")
        base[-1] = str(tmp_path / "wrong")
        status, found, proc = push_check(tmp_path, vm.url, *base)
        level, text = found["InfluxDB write"]
        assert level == "FAIL" and status == 1
        assert text.startswith(f"{vm.url} refused user monitor with the password of "
                               f"--influxdb-password-file {tmp_path}/wrong: HTTP 401"), text
        assert vm.export('{__name__=~".+"}', timeout=1) == []  # nothing written
    finally:
        vm.stop()


# --- InfluxDB 2.x's answers --------------------------------------------------------------------

class V2Answers:
    """A loopback server answering /ping and /api/v2/write as InfluxDB 2.x
    does (http/write_handler.go): 401 for an unknown token, 404 for an unknown
    org or bucket, 403 without write permission on the bucket, and for a
    request that passes all of them and has no line, 400 "writing requires
    points". Keeps each write's body."""

    def __init__(self, token: str, org: str, bucket: str, may_write: bool = True) -> None:
        self.bodies: list = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self, status, body=None, headers=()):
                text = json.dumps(body).encode() if body else b""
                self.send_response(status)
                for k, v in (*headers, ("X-Influxdb-Version", "v2.7.11"),
                             ("X-Influxdb-Build", "OSS")):
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def do_GET(self):
                self.answer(204 if self.path == "/ping" else 404)

            def do_POST(self):
                import urllib.parse

                split = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(split.query))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.bodies.append(body)
                if self.headers.get("Authorization") != f"Token {token}":
                    return self.answer(401, {"code": "unauthorized",
                                             "message": "unauthorized access"})
                if q.get("org") != org:
                    return self.answer(404, {"code": "not found", "message":
                                             f"organization name \"{q.get('org')}\" not found"})
                if q.get("bucket") != bucket:
                    return self.answer(404, {"code": "not found",
                                             "message": f"bucket \"{q.get('bucket')}\" not found"})
                if not may_write:
                    return self.answer(403, {"code": "forbidden",
                                             "message": "insufficient permissions for write"})
                if not body:
                    return self.answer(400, {"code": "invalid",
                                             "message": "writing requires points"})
                self.answer(204)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("case", ["sound", "token", "org", "bucket", "read-only"])
def test_influxdb_2_answers(tmp_path, case):
    server = V2Answers(TOKEN, "myorg", "apache", may_write=case != "read-only")
    token = tmp_path / "token"
    token.write_text(("wrong-token" if case == "token" else TOKEN) + "\n")
    token.chmod(0o600)
    try:
        status, found, proc = push_check(
            tmp_path, server.url, "--influxdb-org", "other" if case == "org" else "myorg",
            "--influxdb-bucket", "nosuch" if case == "bucket" else "apache",
            "--influxdb-token-file", str(token))
    finally:
        server.close()
    assert found["InfluxDB"] == ("OK", f"{server.url} answers /ping: InfluxDB v2.7.11 (OSS)")
    assert server.bodies == [b""]
    creds = f"the token of --influxdb-token-file {token}"
    expected = {
        "sound": ("OK", f"{creds} accepted, writes to bucket apache of org myorg allowed "
                        "(InfluxDB 2.x answered an empty write with HTTP 400 (writing requires "
                        "points): token, org, bucket and write permission passed; no point "
                        "written)"),
        "token": ("FAIL", f"{server.url} refused {creds}: HTTP 401 (unauthorized access); "
                          "give a valid API token (influx auth list; InfluxDB 1.8: "
                          "--influxdb-username and --influxdb-password-file)"),
        "org": ("FAIL", 'org other not found: HTTP 404 (organization name "other" not '
                        'found); fix --influxdb-org (influx org list)'),
        "bucket": ("FAIL", 'bucket nosuch not found in org myorg: HTTP 404 (bucket "nosuch" '
                           'not found); create it (influx bucket create) or fix '
                           '--influxdb-bucket'),
        "read-only": ("FAIL", f"{creds} is accepted but may not write to bucket apache of "
                              "org myorg: HTTP 403 (insufficient permissions for write); give "
                              "the token write access to the bucket (influx auth create "
                              "--write-bucket BUCKET_ID)"),
    }[case]
    assert found["InfluxDB write"] == expected


# --- nothing to contact, settings the run refuses ------------------------------------------------

def test_no_push_settings_is_one_warning_and_nothing_contacted(tmp_path):
    status, found, proc = run_check("--url", dead_url(), "--no-processes", "--format",
                                    "influxdb", "--spool-dir", str(tmp_path / "spool"))
    assert found["InfluxDB"] == (
        "WARN", "nothing to contact: no --influxdb-url, --influxdb-org nor --influxdb-bucket "
                "given; a run with --format influxdb stops (exit 2) until they are")
    assert proc.stdout.count("InfluxDB") == 1
    # Another format: no line at all.
    status, found, proc = run_check("--url", dead_url(), "--no-processes", "--format", "tab",
                                    "--spool-dir", str(tmp_path / "spool"))
    assert "InfluxDB" not in proc.stdout


def test_incomplete_push_settings_fail_as_the_run_would(tmp_path):
    status, found, proc = push_check(tmp_path, "http://127.0.0.1:9", "--influxdb-org", "o")
    assert status == 1
    assert found["InfluxDB"] == (
        "FAIL", "--format influxdb needs --influxdb-bucket (InfluxDB 1.8: DATABASE/RETENTION, "
                "e.g. telegraf/autogen): the run stops there (exit 2)")
    # An unreadable token file: its own FAIL line, and the server is not asked.
    status, found, proc = push_check(tmp_path, "http://127.0.0.1:9", "--influxdb-org", "o",
                                     "--influxdb-bucket", "b", "--influxdb-token-file",
                                     str(tmp_path / "none"))
    assert found["secret file"][0] == "FAIL"
    assert found["InfluxDB"] == (
        "WARN", f"not contacted: the run cannot read its secret (cannot read "
                f"--influxdb-token-file {tmp_path}/none: No such file or directory)")


# --- the run itself, on the same failures -------------------------------------------------------
# What --check names, a run must not take for a passing problem or for bad
# data: each one needs a person, so the run fails (exit 1) with the fix and
# every batch stays in the spool, none set aside in quarantine.

def push_run(prefork, tmp_path, url: str, *options: str):
    from tests.conftest import run_exporter

    return run_exporter("--url", prefork.status_url, "--no-processes", "--format", "influxdb",
                        "--spool-dir", str(tmp_path / "spool"), "--influxdb-url", url,
                        "--influxdb-org", "-", "--influxdb-bucket", "apache/autogen",
                        *options)


def spooled(tmp_path) -> tuple:
    """(batches waiting in the spool, batches set aside in its quarantine)."""
    from apache_metrics_exporter.push.spool import Spool

    spool = Spool(str(tmp_path / "spool"), 1 << 20)
    quarantine = tmp_path / "spool" / "quarantine"
    return (len(spool.batches()),
            len(list(quarantine.iterdir())) if quarantine.is_dir() else 0)


@integration
def test_a_run_stops_on_tls_problems_and_keeps_every_batch(prefork, tls_influxdb, tmp_path):
    server, cert = tls_influxdb
    proc = push_run(prefork, tmp_path, server.url)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"apache-metrics-exporter: error: TLS with InfluxDB at {server.url} "
                           "failed: "), line
    assert "certificate verify failed: self-signed certificate" in line
    assert "give --influxdb-ca-file with the CA that signed" in line and "\\n" not in line
    assert spooled(tmp_path) == (1, 0)
    # A name the certificate does not have.
    proc = push_run(prefork, tmp_path, server.url.replace("127.0.0.1", "localhost"),
                    "--influxdb-ca-file", str(cert))
    assert proc.returncode == 1
    assert "the certificate is not for the host name of --influxdb-url" in proc.stderr
    assert spooled(tmp_path) == (2, 0)
    # http:// to the TLS port: the server's 400 is about the URL, not the data.
    # (Go answers 400 and closes with the request's body unread: that close
    # can be a reset that reaches the client first, a connection error for
    # now. Either way the batch is kept and none is set aside.)
    proc = push_run(prefork, tmp_path, server.url.replace("https:", "http:"))
    if "HTTP 400" in proc.stderr:
        assert proc.returncode == 1, proc.stderr
        assert "HTTP request to an HTTPS server.; give --influxdb-url https://...; " \
            in proc.stderr
    else:
        assert proc.returncode == 0 and "Connection reset" in proc.stderr, proc.stderr
    assert spooled(tmp_path) == (3, 0)
    # With its CA the TLS problem is gone; what is left is InfluxDB 1.6's want
    # of /api/v2/write (no 2.x or 1.8 here), still no batch set aside.
    proc = push_run(prefork, tmp_path, server.url, "--influxdb-ca-file", str(cert))
    assert proc.returncode == 1 and "TLS" not in proc.stderr
    assert "the server has no /api/v2/write" in proc.stderr
    assert spooled(tmp_path) == (4, 0)


@integration
def test_a_run_against_influxdb_before_1_8_names_the_missing_endpoint(prefork, influxdb,
                                                                       tmp_path):
    proc = push_run(prefork, tmp_path, influxdb.url)
    assert proc.returncode == 1
    assert "the server has no /api/v2/write: InfluxDB before 1.8" in proc.stderr
    assert "check --influxdb-org" not in proc.stderr
    assert spooled(tmp_path) == (1, 0)
