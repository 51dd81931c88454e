"""Fetching edge cases against real TCP peers on loopback and a real TLS Apache."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from apache_metrics_exporter.collect.http import Fetcher, Target, redact, status_url
from apache_metrics_exporter.errors import FetchError
from tests.conftest import parse_tab, run_exporter
from tests.harness.apache import ApacheServer
from tests.harness.peers import NEVER_FINISHING, DripPeer

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
    with pytest.raises(FetchError,
                       match=r"no complete answer from .* within 0.5 s \(--timeout\)"):
        fetcher.get(server.url)


def test_a_big_chunked_page_is_read_in_few_socket_reads(raw, monkeypatch):
    """A big worker table (650 KB for 2,300 rows) comes in chunks of about
    8 KB: read in socket reads of http.READ_BUFFER bytes, not 8 KiB (a
    third less CPU per fetch). The body is whole and exact."""
    from apache_metrics_exporter.collect import http as http_mod

    body = bytes(range(256)) * 2600  # 665,600 bytes
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8000]), body[i:i + 8000])
                      for i in range(0, len(body), 8000))
    server = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                 b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
    reads = []
    recv = http_mod._Bounded.recv

    def counted(self, *args):
        reads.append(args)
        return recv(self, *args)

    monkeypatch.setattr(http_mod._Bounded, "recv", counted)
    assert Fetcher(Target(server.url, timeout=10)).get(server.url) == body
    assert reads and all(size == (http_mod.READ_BUFFER,) for size in reads)
    assert len(reads) <= len(body) // http_mod.READ_BUFFER + 8 < len(body) // 8192


# -- --timeout is a wall-clock deadline, not a per-read timeout ---------------

@pytest.mark.parametrize("name,peer", NEVER_FINISHING, ids=[n for n, _ in NEVER_FINISHING])
def test_a_never_finishing_answer_is_cut_at_the_deadline(name, peer):
    # Each read gets a byte well within the timeout: a per-read timeout would
    # wait for ever. The deadline ends the fetch after --timeout of wall time.
    with DripPeer(**peer) as server:
        fetcher = Fetcher(Target(server.url, timeout=1.0, insecure=True))
        started = time.monotonic()
        with pytest.raises(FetchError) as info:
            fetcher.get(server.url)
        elapsed = time.monotonic() - started
        assert server.sent > 0  # it did drip while we waited
    assert 0.9 < elapsed < 1.75, elapsed  # the timeout and a scheduling margin
    assert str(info.value).startswith(f"no complete answer from {server.url} within 1 s "
                                      "(--timeout)")


@pytest.mark.parametrize("name,peer", NEVER_FINISHING, ids=[n for n, _ in NEVER_FINISHING])
def test_a_never_finishing_answer_ends_the_run_in_time(name, peer):
    # The whole command, as cron or Telegraf runs it: done within --timeout
    # plus start-up, one line on stderr, status-response 1 on stdout.
    with DripPeer(**peer) as server:
        started = time.monotonic()
        proc = run_exporter("--url", server.url, "--timeout", "1", "--no-processes",
                            "--insecure", "--format", "tab", timeout=20)
        elapsed = time.monotonic() - started
    assert proc.returncode == 0
    assert elapsed < 1 + 2.0, elapsed
    (line,) = proc.stderr.splitlines()
    assert "no complete answer from" in line and "within 1 s (--timeout)" in line
    assert parse_tab(proc.stdout)["status-response"] == "1"


def test_a_slow_name_lookup_is_cut_at_the_deadline(monkeypatch):
    # No lookup leaves this machine: the resolver is replaced by one that hangs
    # for names (as a dead DNS server does), numeric hosts still resolve.
    real = socket.getaddrinfo
    released = threading.Event()

    def hanging(host, *args, **kwargs):
        if kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            return real(host, *args, **kwargs)
        released.wait(10)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    fetcher = Fetcher(Target("http://status.example.invalid/server-status", timeout=0.5))
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match=r"within 0.5 s \(--timeout\)"):
            fetcher.get(fetcher.target.url)
        assert time.monotonic() - started < 1.0 + 0.75
    finally:
        released.set()


class SlowServer:
    """Answers every request on a kept-alive connection after ``delay`` s."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/server-status"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(STATUS),
                                                                             STATUS)
            try:
                while conn.recv(65536):
                    time.sleep(self.delay)
                    conn.sendall(answer)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_one_deadline_covers_both_pages_of_a_target():
    server = SlowServer(delay=0.6)
    try:
        fetcher = Fetcher(Target(server.url, timeout=1.0))
        assert fetcher.get(server.url) == STATUS  # alone, a page fits in the timeout
        started = time.monotonic()
        with fetcher.deadline():
            assert fetcher.get(fetcher.target.auto_url) == STATUS
            with fetcher.deadline():  # nested (a caller's and collect's): still one
                with pytest.raises(FetchError, match=r"within 1 s \(--timeout\)"):
                    fetcher.get(server.url)
        assert time.monotonic() - started < 1.4
        fetcher.close()
    finally:
        server.close()


def test_control_characters_from_the_peer_stay_out_of_the_message(raw):
    # An obs-folded Location header and a reason phrase with ESC and CR.
    server = raw(b"HTTP/1.1 302 Found\x1b[2J\rforged\r\nLocation: https://x/a\r\n"
                 b" b: error: forged line\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(FetchError) as info:
        Fetcher(Target(server.url)).get(server.url)
    text = str(info.value)
    assert "HTTP 302 Found" in text and "redirect to https://x/a" in text
    assert not any(c < " " or "\x7f" <= c <= "\x9f" for c in text), repr(text)
    assert "\\x1b[2J" in text and "\\r\\n b: error: forged line" in text


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


@pytest.mark.parametrize("host", ["b\u00fccher..example", "a..b", "x" * 64 + ".example"])
def test_a_host_name_idna_refuses_is_one_clear_fetch_error(host):
    """A name no lookup can be made for (an empty label, one of more than 63
    characters) is a failed lookup at once: not a traceback from Fetcher()
    (a non-ASCII name, whose Host header was encoded there), nor a lookup
    thread killed by UnicodeError and a fetch waiting for the whole --timeout
    (an ASCII one). Nothing is looked up: the name is refused before."""
    from apache_metrics_exporter.collect.snapshot import fetch_reason

    url = f"http://{host}/server-status"
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        Fetcher(Target(url, timeout=3)).get(url)
    assert time.monotonic() - start < 1.5
    assert str(info.value) == (f"cannot resolve host {host!r}: not a valid host name "
                               "(label empty or too long)")
    assert fetch_reason(info.value) == "resolve"


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
    assert Target("http://h/s?auto=").auto_url == "http://h/s?auto"
    assert Target("http://h/s/?auto&refresh=5").auto_url == "http://h/s/?refresh=5&auto"


def test_control_characters_from_the_peer_never_reach_stderr_or_the_summary(raw):
    server = raw(b"HTTP/1.1 302 Found\x1b]0;owned\x07\x9b2J\rX\r\nLocation: https://x/a\r\n"
                 b" apache-metrics-exporter: error: forged\r\nContent-Length: 0\r\n\r\n")
    for fmt in ("tab", "text"):
        proc = run_exporter("--url", server.url, "--no-processes", "--format", fmt)
        assert proc.returncode == 0
        (line,) = proc.stderr.splitlines()
        assert "HTTP 302 Found\\x1b]0;owned\\x07\\x9b2J\\rX" in line
        assert "https://x/a\\r\\n apache-metrics-exporter: error: forged" in line
        for text in (proc.stderr, proc.stdout):
            assert not any(c < " " and c not in "\t\n" or "\x7f" <= c <= "\x9f"
                           for c in text), repr(text)


@pytest.mark.parametrize("given,html", [
    # Telegraf's urls, collectd's URL, apache_exporter's --scrape_uri
    ("http://localhost/server-status?auto", "http://localhost/server-status"),
    ("http://localhost/server-status/?auto", "http://localhost/server-status/"),
    ("http://h:8080/server-status?auto=", "http://h:8080/server-status"),
    ("http://h/server-status?auto&refresh=5", "http://h/server-status?refresh=5"),
    ("http://h/server-status?refresh=5&auto", "http://h/server-status?refresh=5"),
    ("http://h/server-status?autocomplete=1", "http://h/server-status?autocomplete=1"),
    ("https://h/status#top", "https://h/status"),
    ("http://h/server-status", "http://h/server-status"),
])
def test_status_url_derives_the_html_page(given, html):
    assert status_url(given) == (html, None, None)


def test_a_fetcher_brings_any_target_to_that_form():
    fetcher = Fetcher(Target("http://mon:pw@127.0.0.1:81/server-status/?auto"))
    assert fetcher.target.url == "http://127.0.0.1:81/server-status/"
    assert fetcher.target.auto_url == "http://127.0.0.1:81/server-status/?auto"
    assert (fetcher.target.user, fetcher.target.password) == ("mon", "pw")
    assert (fetcher.host, fetcher.port) == ("127.0.0.1", 81)


def test_status_url_takes_credentials_out():
    assert status_url("http://mon:s%40cret:x@h:81/s?auto") == ("http://h:81/s", "mon",
                                                               "s@cret:x")
    assert status_url("http://mon@[::1]/s") == ("http://[::1]/s", "mon", None)
    assert redact("http://mon:pw@h/s") == "http://***@h/s"
    assert redact("http://h/s?a=b@c") == "http://h/s?a=b@c"
    assert redact("http://h?a=b@c") == "http://h?a=b@c"
    assert redact("http://u:p@h?a=b@c") == "http://***@h?a=b@c"
    assert redact("http://u:p@w@h:1") == "http://***@h:1"


@pytest.mark.integration
@pytest.mark.parametrize("form", [
    "http://localhost:{port}/server-status?auto",   # Telegraf inputs.apache urls
    "http://127.0.0.1:{port}/server-status?auto",   # collectd apache URL (by address)
    "http://localhost:{port}/server-status/?auto",  # apache_exporter --scrape_uri
    "http://127.0.0.1:{port}/server-status?auto=",
    "http://127.0.0.1:{port}/server-status?auto&refresh=5",
    "http://127.0.0.1:{port}/server-status/",
    "http://127.0.0.1:{port}/server-status",
], ids=["telegraf", "collectd", "apache_exporter", "auto=", "auto&", "slash", "plain"])
def test_every_peers_url_form_reads_both_pages(prefork, form):
    url = form.format(port=prefork.port)
    proc = run_exporter("--url", url, "--no-processes", "--format", "tab")
    assert proc.returncode == 0 and proc.stderr == ""
    values = parse_tab(proc.stdout)
    assert values["status-response"] == "0"
    assert int(values["total-accesses"]) > 0  # from the ?auto page
    assert values["longest-request"].startswith("GET /server-status")  # the HTML table
    text = run_exporter("--url", url, "--no-processes", "--format", "text").stdout
    assert "?auto" not in text and "auto=" not in text


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
    # OpenSSL says only "wrong version number": the port is asked in plain
    # HTTP, and the message says what it is and which URL to use.
    url = prefork.status_url.replace("http://", "https://")
    proc = run_exporter("--url", url, "--no-processes")
    assert proc.returncode == 0
    assert proc.stderr == (f"apache-metrics-exporter: error: the server at 127.0.0.1:"
                           f"{prefork.port} answered in plain HTTP, not TLS: use "
                           f"{prefork.status_url}\n")
    proc = run_exporter("--check", "--url", url, "--no-processes")
    assert f"FAIL status page: the server at 127.0.0.1:{prefork.port} answered in plain " \
        f"HTTP, not TLS: use {prefork.status_url}\n" in proc.stdout


@pytest.mark.integration
def test_http_against_a_tls_port(tls_apache):
    # mod_ssl answers plain HTTP with a 400 that says so.
    url = tls_apache.tls_status_url.replace("https://", "http://")
    proc = run_exporter("--url", url, "--no-processes")
    assert proc.returncode == 0
    assert proc.stderr == (f"apache-metrics-exporter: error: the server at 127.0.0.1:"
                           f"{tls_apache.tls_port} speaks TLS, not plain HTTP (it answered "
                           f"HTTP 400 saying so): use {tls_apache.tls_status_url}\n")
    proc = run_exporter("--check", "--url", url, "--no-processes")
    assert f"FAIL status page: the server at 127.0.0.1:{tls_apache.tls_port} speaks TLS, " \
        "not plain HTTP" in proc.stdout


@pytest.mark.parametrize("answer", [
    b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
    # What a TLS port says to a plain request: not a plain HTTP server.
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\nReason: You're speaking "
    b"plain HTTP to an SSL-enabled server port.<br />\n"])
def test_https_against_something_that_is_not_http_is_not_called_plain_http(raw, answer):
    server = raw(answer)
    url = server.url.replace("http://", "https://")
    with pytest.raises(FetchError, match="TLS handshake with 127.0.0.1:") as caught:
        Fetcher(Target(url)).get(url)
    assert "plain HTTP" not in str(caught.value)


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


def test_a_stop_in_the_middle_of_an_answer_drops_the_connection(raw, monkeypatch):
    # A BaseException (a loop's stop, Ctrl-C) while an answer is half read:
    # the next fetch must not read the rest of it as its own answer.
    from apache_metrics_exporter.collect import wire

    answer = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(STATUS)) + STATUS
    server = raw(answer, close=False)
    fetcher = Fetcher(Target(server.url))
    real = wire.Reader.body

    def stopped(self, head, limit):
        raise KeyboardInterrupt

    monkeypatch.setattr(wire.Reader, "body", stopped)
    with pytest.raises(KeyboardInterrupt):
        fetcher.get(server.url)
    assert fetcher._conn is None
    monkeypatch.setattr(wire.Reader, "body", real)


def test_the_peer_is_the_address_that_answered_on_each_connection():
    """Fetcher.peer (what the process proof checks) is the address of the
    connection that gave the answer: asked of each new connection, never
    carried over from an earlier one (a name may resolve elsewhere the next
    time; here the host is changed between two connections)."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(STATUS), STATUS)
    first = RawServer(answer)  # answers once per connection, then closes it
    port = first.sock.getsockname()[1]
    second = socket.socket()
    second.bind(("127.0.0.2", port))
    second.listen(1)
    fetcher = Fetcher(Target(first.url + "?auto", timeout=5))
    try:
        assert fetcher.peer is None
        assert fetcher.get(first.url + "?auto") == STATUS
        assert fetcher.peer == "127.0.0.1"
        fetcher.host = "127.0.0.2"
        done = threading.Event()

        def serve() -> None:
            conn, _ = second.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)
                done.wait(5)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert fetcher.get(first.url + "?auto") == STATUS
        assert fetcher.peer == "127.0.0.2"
        done.set()
        thread.join(5)
    finally:
        fetcher.close()
        first.close()
        second.close()


# -- the bounded socket: non-blocking, every wait in poll until the deadline ---

class Listener:
    """A loopback listening socket whose connections a test serves itself."""

    def __init__(self, backlog: int = 8, rcvbuf: int = 0) -> None:
        self.sock = socket.socket()
        if rcvbuf:  # (inherited by the accepted connections)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/server-status"
        self.conns: list = []

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()



@contextmanager
def dropping_listener():
    """A Listener whose accept queue is full: SYNs to it are dropped, a
    connect to it never completes (as to an address whose route goes
    nowhere)."""
    peer = Listener(backlog=0)
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue (nothing is accepted)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(peer.sock.getsockname())
            fillers.append(filler)
        time.sleep(0.2)
        yield peer
    finally:
        for filler in fillers:
            filler.close()
        peer.close()


def cut_at_deadline(fetcher: Fetcher, url: str, timeout: float, within: tuple) -> None:
    """The fetch fails with --timeout's words after ``within`` (the lowest
    and highest seconds it may take)."""
    started = time.monotonic()
    with pytest.raises(FetchError, match=rf"no complete answer from .* within {timeout:g} s"):
        fetcher.get(url)
    low, high = within
    assert low < time.monotonic() - started < high

def test_a_request_the_peer_never_reads_is_cut_at_the_deadline():
    """A send that would block (the peer reads nothing, both socket buffers
    full) waits no longer than --timeout: a request far larger than the
    buffers (a 16 MB header) to a peer that accepts and never reads."""
    peer = Listener(rcvbuf=4096)
    big = (("X-Big", "a" * (16 << 20)),)
    fetcher = Fetcher(Target(peer.url, timeout=1.0, headers=big))
    try:
        cut_at_deadline(fetcher, peer.url, 1.0, (0.9, 1.75))
    finally:
        peer.close()


def test_a_request_the_peer_reads_slowly_arrives_whole():
    """Sends that go out in part (the peer reads a little at a time) resume
    where they stopped: the peer gets the request's exact bytes, then the
    answer is read."""
    peer = Listener(rcvbuf=4096)
    fetcher = Fetcher(Target(peer.url, timeout=10.0, headers=(("X-Big", "b" * 3_000_000),)))
    expected = fetcher._request_bytes("/server-status")
    got = bytearray()

    def serve() -> None:
        conn, _ = peer.sock.accept()
        peer.conns.append(conn)
        while not got.endswith(b"\r\n\r\n"):
            time.sleep(0.001)
            got.extend(conn.recv(65536))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(STATUS), STATUS))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert fetcher.get(peer.url) == STATUS
        thread.join(5)
        assert bytes(got) == expected
    finally:
        fetcher.close()
        peer.close()


def test_a_connection_the_peer_does_not_accept_is_cut_at_the_deadline():
    """A connect that does not complete (the listener's accept queue is
    full: its SYNs are dropped) waits no longer than --timeout."""
    with dropping_listener() as peer:
        cut_at_deadline(Fetcher(Target(peer.url, timeout=1.0)), peer.url, 1.0, (0.9, 1.75))


def test_an_address_that_drops_the_connection_leaves_time_for_the_next(monkeypatch):
    """A name with two addresses whose first drops the connection silently
    (an IPv6 route that goes nowhere while IPv4 answers; here a listener
    whose full accept queue drops SYNs): the first may take its share of
    --timeout, the second is asked within the rest and answers. The first
    took the whole --timeout before, and the fetch failed where curl
    answered."""
    from apache_metrics_exporter.collect import http as chttp

    answering = Listener()

    def serve() -> None:
        conn, _ = answering.sock.accept()
        answering.conns.append(conn)
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(STATUS), STATUS))

    url = "http://status.example:80/server-status"
    with dropping_listener() as dropping:
        try:
            addresses = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", listener.sock.getsockname())
                         for listener in (dropping, answering)]
            monkeypatch.setattr(chttp, "_resolve", lambda host, port, clock: addresses)
            threading.Thread(target=serve, daemon=True).start()
            fetcher = Fetcher(Target(url, timeout=2.0))
            started = time.monotonic()
            assert fetcher.get(url) == STATUS
            assert 0.9 < time.monotonic() - started < 1.75  # its share: half of 2 s
            fetcher.close()
            # Both dropping: the fetch ends at --timeout, with its usual words.
            monkeypatch.setattr(chttp, "_resolve", lambda host, port, clock: addresses[:1] * 2)
            cut_at_deadline(Fetcher(Target(url, timeout=1.0)), url, 1.0, (0.9, 1.75))
        finally:
            answering.close()


def test_a_peer_that_accepts_late_is_read_within_the_deadline():
    """A peer that accepts the connection only after a while (the request
    waits in the kernel meanwhile), then answers: the answer is read."""
    peer = Listener()

    def serve() -> None:
        time.sleep(0.5)
        conn, _ = peer.sock.accept()
        peer.conns.append(conn)
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(STATUS), STATUS))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        assert Fetcher(Target(peer.url, timeout=3.0)).get(peer.url) == STATUS
        assert time.monotonic() - started >= 0.45
        thread.join(5)
    finally:
        peer.close()


def test_a_kept_alive_request_waits_only_for_its_answer(monkeypatch):
    """On a kept-alive connection a request is sent without waiting (an idle
    socket takes it) and the answer read after one wait in poll, with no
    per-call change of the socket's mode (each was an ioctl and a poll)."""
    from apache_metrics_exporter.collect import http as http_mod

    server = SlowServer(delay=0.0)
    fetcher = Fetcher(Target(server.url, timeout=5.0))
    try:
        assert fetcher.get(server.url) == STATUS  # connects
        waits = []
        real_wait = http_mod._Bounded._wait
        monkeypatch.setattr(http_mod._Bounded, "_wait",
                            lambda self, events: waits.append(events) or real_wait(self, events))
        monkeypatch.setattr(socket.socket, "settimeout", lambda *a: pytest.fail("settimeout"))
        monkeypatch.setattr(socket.socket, "setblocking", lambda *a: pytest.fail("setblocking"))
        for _ in range(3):
            assert fetcher.get(server.url) == STATUS
        assert waits == [http_mod.POLLIN] * 3
    finally:
        fetcher.close()
        server.close()


@pytest.mark.parametrize("timeout", ["30d", "100y"])
def test_a_timeout_longer_than_poll_can_wait_still_fetches(timeout):
    """--timeout takes up to 100 years; poll takes at most 2**31 - 1 ms (24.8
    days). A wait for the answer under a longer --timeout failed every fetch
    with "OverflowError: timeout is too large" (the timed socket before it
    waited, whatever the timeout)."""
    from apache_metrics_exporter.units import parse_timespan

    server = SlowServer(delay=0.05)  # the read waits in poll
    fetcher = Fetcher(Target(server.url, timeout=parse_timespan(timeout)))
    try:
        assert fetcher.get(server.url) == STATUS
        assert fetcher.get(server.url) == STATUS  # and on the kept-alive connection
    finally:
        fetcher.close()
        server.close()


def test_a_wait_longer_than_one_poll_ends_at_the_deadline(monkeypatch):
    """A wait past poll's longest is made of several polls: an answer that
    comes after the first poll's end is read, a silent peer is cut at the
    deadline, not at the end of the first poll (POLL_MAX_MS made small
    here to see it)."""
    from apache_metrics_exporter.collect import http as http_mod

    monkeypatch.setattr(http_mod, "POLL_MAX_MS", 50)
    server = SlowServer(delay=0.3)
    fetcher = Fetcher(Target(server.url, timeout=5.0))
    try:
        assert fetcher.get(server.url) == STATUS
    finally:
        fetcher.close()
        server.close()
    peer = Listener()
    fetcher = Fetcher(Target(peer.url, timeout=0.5))
    try:
        cut_at_deadline(fetcher, peer.url, 0.5, (0.45, 1.2))
    finally:
        fetcher.close()
        peer.close()


def test_a_kept_alive_tls_connection_reset_between_cycles_is_retried(tmp_path):
    """A kept-alive TLS connection the peer (or a firewall that forgot it)
    reset between two fetches: the next fetch's request fails at once
    (ssl.SSLEOFError, "EOF occurred in violation of protocol", where a
    plain socket raises ConnectionResetError) and is sent again on a new
    connection, as a reset plain connection's is. It was reported as "TLS
    handshake ... failed", after a plain HTTP probe of the port."""
    import ssl
    import struct

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    peer = Listener()
    url = peer.url.replace("http://", "https://")
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(STATUS), STATUS)
    reset, requests = threading.Event(), []

    def serve() -> None:
        peer.sock.settimeout(5)
        for n in range(2):
            raw, _ = peer.sock.accept()
            peer.conns.append(raw)
            try:
                conn = ctx.wrap_socket(raw, server_side=True)
                conn.settimeout(5)
                while True:
                    request = conn.recv(65536)
                    if not request:
                        break
                    requests.append((n, request.split(b" ", 1)[0]))
                    conn.sendall(answer)
                    if n == 0:  # one answer, then (once it is read) a reset
                        time.sleep(0.2)
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                        conn.close()
                        reset.set()
                        break
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    fetcher = Fetcher(Target(url, timeout=5.0, insecure=True))
    try:
        assert fetcher.get(url) == STATUS
        assert reset.wait(5)
        time.sleep(0.1)  # the reset has arrived
        assert fetcher.get(url) == STATUS
        assert requests == [(0, b"GET"), (1, b"GET")]
    finally:
        fetcher.close()
        peer.close()
        thread.join(5)


@pytest.mark.integration
def test_tls_big_answers_on_one_kept_alive_connection(tls_apache):
    """A TLS connection (a non-blocking socket whose TLS layer may hold
    bytes poll cannot see) reads big answers whole, one after another on
    the same connection, and the status page after them."""
    body = bytes(range(256)) * 4000 + b"end"
    (tls_apache.root / "htdocs" / "big.bin").write_bytes(body)
    base = tls_apache.tls_status_url.rsplit("/", 1)[0]
    fetcher = Fetcher(Target(tls_apache.tls_status_url, insecure=True))
    try:
        with fetcher.deadline():
            assert fetcher.get(base + "/big.bin") == body
            first = fetcher._conn.sock.getsockname()
            assert fetcher.get(base + "/big.bin") == body
            assert b"Apache Server Status" in fetcher.get(tls_apache.tls_status_url)
        assert fetcher._conn.sock.getsockname() == first
    finally:
        fetcher.close()
