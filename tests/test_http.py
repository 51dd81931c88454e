"""Fetching edge cases against real TCP peers on loopback and a real TLS Apache."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from apache_metrics_exporter.errors import FetchError
from apache_metrics_exporter.http import Fetcher, Target
from tests.conftest import parse_tab, run_exporter
from tests.harness.apache import ApacheServer

STATUS = b"BusyWorkers: 1\nIdleWorkers: 1\nScoreboard: W_\n"


class RawServer:
    """A loopback TCP server that answers each connection with fixed bytes
    (or nothing), to produce what a misbehaving server sends."""

    def __init__(self, answer: bytes | None, close: bool = True) -> None:
        self.answer = answer
        self.close_after = close
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.conns: list = []
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/server-status"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            if self.answer is None:
                continue  # accept, then say nothing
            conn.settimeout(2)
            try:
                conn.recv(65536)
                self.requests += 1
                conn.sendall(self.answer)
            except OSError:
                pass
            if self.close_after:
                conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def raw():
    servers = []

    def make(answer, close=True):
        servers.append(RawServer(answer, close))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_silent_server_times_out(raw):
    server = raw(None)
    fetcher = Fetcher(Target(server.url, timeout=0.5))
    with pytest.raises(FetchError, match=r"no answer from .* within 0.5 s \(--timeout\)"):
        fetcher.get(server.url)


def test_truncated_answer(raw):
    server = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + STATUS)
    with pytest.raises(FetchError, match="cut short"):
        Fetcher(Target(server.url)).get(server.url)


def test_not_http_at_all(raw):
    server = raw(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    with pytest.raises(FetchError, match="did not answer with valid HTTP"):
        Fetcher(Target(server.url)).get(server.url)


def test_oversize_without_content_length(raw):
    server = raw(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 5000)
    with pytest.raises(FetchError, match="larger than --max-response-size"):
        Fetcher(Target(server.url, max_bytes=1000)).get(server.url)


def test_redirect_is_not_followed(raw):
    server = raw(b"HTTP/1.1 302 Found\r\nLocation: https://x/server-status\r\n"
                 b"Content-Length: 0\r\n\r\n")
    with pytest.raises(FetchError, match="HTTP 302 Found .*redirect to https://x/"):
        Fetcher(Target(server.url)).get(server.url)


def test_refused():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/server-status"
    with pytest.raises(FetchError, match=f"connection to 127.0.0.1:{port} refused"):
        Fetcher(Target(url)).get(url)


def test_dns_failure_message():
    # No lookup is made (tests send nothing off this machine): the mapping of
    # the resolver's error is what is checked.
    fetcher = Fetcher(Target("http://no-such-host.invalid/server-status"))
    text = fetcher._explain("u", socket.gaierror(-2, "Name or service not known"))
    assert text == "cannot resolve host 'no-such-host.invalid': Name or service not known"


def test_keepalive_connection_closed_by_server_is_retried(raw):
    # The first answer keeps the connection "alive" but the server closes it:
    # the second request must go out on a fresh connection, not fail.
    answer = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(STATUS)) + STATUS
    server = raw(answer, close=True)
    fetcher = Fetcher(Target(server.url))
    assert fetcher.get(server.url) == STATUS
    assert fetcher.get(server.url + "?auto") == STATUS
    assert server.requests == 2


@pytest.mark.integration
def test_one_connection_serves_both_pages(prefork):
    fetcher = Fetcher(Target(prefork.status_url))
    fetcher.get(fetcher.target.auto_url)
    first = fetcher._conn.sock.getsockname()
    fetcher.get(prefork.status_url)
    assert fetcher._conn.sock.getsockname() == first
    fetcher.close()


def test_auto_url():
    assert Target("http://h/server-status").auto_url == "http://h/server-status?auto"
    assert Target("http://h/s?refresh=5").auto_url == "http://h/s?refresh=5&auto"
    assert Target("http://h/s?auto").auto_url == "http://h/s?auto"


@pytest.fixture(scope="module")
def tls_apache():
    server = ApacheServer("event", wsgi=False, tls=True).start()
    yield server
    server.stop()


@pytest.mark.integration
def test_tls_verification(tls_apache):
    url = tls_apache.tls_status_url
    proc = run_exporter("--url", url, "--no-processes")
    assert proc.returncode == 0
    assert parse_tab(proc.stdout)["status-response"] == "1"
    assert "TLS certificate of 127.0.0.1" in proc.stderr and "--ca-file" in proc.stderr
    for extra in (["--ca-file", str(tls_apache.cert_file)], ["--insecure"]):
        proc = run_exporter("--url", url, "--no-processes", *extra)
        assert proc.returncode == 0 and proc.stderr == ""
        values = parse_tab(proc.stdout)
        assert values["status-response"] == "0"
        assert int(values["tls-cache-shared-memory-bytes"]) > 0


@pytest.mark.integration
def test_https_against_plain_http_port(prefork):
    url = prefork.status_url.replace("http://", "https://")
    proc = run_exporter("--url", url, "--no-processes")
    assert proc.returncode == 0
    assert "TLS handshake with 127.0.0.1" in proc.stderr


def test_is_local_sends_nothing_and_knows_this_host():
    assert Fetcher(Target("http://127.0.0.1/s")).is_local()
    assert Fetcher(Target("http://localhost/s")).is_local()
    assert Fetcher(Target("http://[::1]/s")).is_local()
    # TEST-NET-1 (RFC 5737) is never an address of this machine; binding to it
    # fails locally, no packet leaves.
    assert not Fetcher(Target("http://192.0.2.1/s")).is_local()


@pytest.mark.integration
def test_tls_client_certificate():
    apache = ApacheServer("event", wsgi=False, tls=True, client_auth=True).start()
    try:
        url = apache.tls_status_url
        tls = apache.root / "tls"
        proc = run_exporter("--url", url, "--no-processes", "--ca-file", str(tls / "cert.pem"))
        assert proc.returncode == 0
        assert parse_tab(proc.stdout)["status-response"] == "1"
        (line,) = proc.stderr.strip().splitlines()
        assert "wants a client certificate (--client-cert" in line
        assert "Traceback" not in proc.stderr
        proc = run_exporter("--url", url, "--no-processes", "--ca-file", str(tls / "cert.pem"),
                            "--client-cert", str(tls / "client.pem"),
                            "--client-key", str(tls / "client.key"))
        assert proc.returncode == 0 and proc.stderr == ""
        assert parse_tab(proc.stdout)["status-response"] == "0"
    finally:
        apache.stop()


@pytest.mark.integration
def test_basic_auth_against_a_real_apache(tmp_path):
    # Apache's workers (www-data when we are root) must read the user file:
    # not under pytest's private tmp_path.
    shared = Path(tempfile.mkdtemp(prefix="ame-auth-"))
    shared.chmod(0o755)
    users = shared / "htpasswd"
    subprocess.run(["htpasswd", "-cbB", str(users), "monitor", "s3cr3t-pw"], check=True,
                   capture_output=True)
    users.chmod(0o644)
    conf = f"""
LoadModule auth_basic_module /usr/lib/apache2/modules/mod_auth_basic.so
LoadModule authn_file_module /usr/lib/apache2/modules/mod_authn_file.so
LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so
LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so
<Location /private-status>
  SetHandler server-status
  AuthType Basic
  AuthName "status"
  AuthUserFile {users}
  Require valid-user
</Location>
"""
    apache = ApacheServer("prefork", wsgi=False, extra_conf=conf).start()
    try:
        url = apache.base_url + "/private-status"
        proc = run_exporter("--url", url, "--no-processes")
        assert "answered HTTP 401 Unauthorized; give --user" in proc.stderr
        assert parse_tab(proc.stdout)["status-response"] == "1"
        wrong = tmp_path / "wrong"
        wrong.write_text("nope\n")
        proc = run_exporter("--url", url, "--no-processes", "--user", "monitor",
                            "--password-file", str(wrong))
        assert "HTTP 401" in proc.stderr and "nope" not in proc.stderr
        right = tmp_path / "right"
        right.write_text("s3cr3t-pw\n")
        proc = run_exporter("--url", url, "--no-processes", "--user", "monitor",
                            "--password-file", str(right))
        assert proc.returncode == 0 and proc.stderr == ""
        assert parse_tab(proc.stdout)["status-response"] == "0"
    finally:
        apache.stop()
        shutil.rmtree(shared, ignore_errors=True)
