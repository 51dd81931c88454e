"""--listen: the Prometheus scrape endpoint, on real private Apaches."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from apache_metrics_exporter.endpoint import parse_listen
from apache_metrics_exporter.errors import UsageError
from tests.conftest import exporter_env, prom_series
from tests.harness.apache import free_port
from tests.harness.waiting import wait_for

EXPORTER = os.path.join(os.path.dirname(sys.executable), "apache-metrics-exporter")


@pytest.mark.parametrize("text,expected", [
    ("", ("127.0.0.1", 9117)), (":9117", ("127.0.0.1", 9117)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::1]:9200", ("::1", 9200)), ("[::]", ("::", 9117)), ("localhost", ("localhost", 9117)),
])
def test_listen_addresses(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", [":0", ":x", "1.2.3.4:70000", "[::1]:-1"])
def test_listen_bad_ports(text):
    with pytest.raises(UsageError):
        parse_listen(text)


class Running:
    """An exporter answering scrapes on a free loopback port."""

    def __init__(self, *args: str, scheme: str = "http") -> None:
        self.port = free_port()
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [EXPORTER, "--listen", f"127.0.0.1:{self.port}", "-v", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=exporter_env())
        deadline = time.monotonic() + 15
        while True:  # ready when the port accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"endpoint did not start: {self.proc.stderr.read()}") from None
                time.sleep(0.02)

    def get(self, path: str, headers=None, context=None, timeout: float = 30) -> tuple:
        req = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
                return r.status, r.read().decode(), r.headers.get("Content-Type")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.headers.get("Content-Type")

    def stop(self) -> tuple:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, err


@contextmanager
def running(*args: str, scheme: str = "http"):
    server = Running(*args, scheme=scheme)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def silent_peer():
    """A TCP peer that accepts and never answers (a hung Apache)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/server-status"
    finally:
        sock.close()


@pytest.mark.integration
def test_metrics_page_is_valid_and_has_apache_exporter_names(prefork):
    with running("--url", prefork.status_url, "--prometheus-naming", "base-units") as ep:
        code, body, ctype = ep.get("/metrics")
        assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
        values = prom_series(body)
        assert values["apache_up"] == 1
        assert values["apache_exporter_scrape_failures_total"] == 0
        assert 'apache_workers{state="busy"}' in values
        assert "# TYPE apache_exporter_scrape_failures_total counter" in body
        if shutil.which("promtool"):
            check = subprocess.run(["promtool", "check", "metrics"], input=body,
                                   capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
        code, _, _ = ep.get("/nothing-here")
        assert code == 404
        status, err = ep.stop()
    assert status == 0, err


@pytest.mark.integration
def test_probe_only_for_configured_or_allowed_targets(prefork, event):
    allowed = f"http://127.0.0.1:{event.port}/*"
    with running("--url", prefork.status_url, "--probe-allow", allowed) as ep:
        code, body, _ = ep.get("/probe?target=" + prefork.status_url)
        assert code == 200 and prom_series(body)["apache_up"] == 1
        code, body, _ = ep.get("/probe?target=" + event.status_url)
        assert code == 200 and prom_series(body)["apache_up"] == 1
        for refused in (f"http://127.0.0.1:{free_port()}/server-status",
                        "http://192.0.2.1/server-status",
                        f"http://u:p@127.0.0.1:{event.port}/server-status",
                        "file:///etc/passwd"):
            code, body, _ = ep.get("/probe?target=" + urllib.request.quote(refused, safe=""))
            assert code == 403, (refused, body)
        code, _, _ = ep.get("/probe")
        assert code == 400


@pytest.mark.integration
def test_a_hung_apache_delays_a_scrape_by_at_most_the_timeout(event):
    # The event MPM: four scrapes at once need four workers at once, which a
    # prefork server with 2 spare children forks only within about a second.
    with silent_peer() as hung:
        with running("--url", event.status_url, "--url", hung, "--timeout", "1") as ep:
            results = []

            def scrape():
                t0 = time.monotonic()
                results.append((ep.get("/metrics"), time.monotonic() - t0))

            threads = [threading.Thread(target=scrape) for _ in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(30)
            assert len(results) == 4
            for (code, body, _), took in results:
                assert code == 200 and took < 1 + 2.5, took
                values = prom_series(body)
                port = event.port
                assert values[f'apache_up{{server="127.0.0.1",port="{port}"}}'] == 1
                hung_port = hung.split(":")[2].split("/")[0]
                assert values[f'apache_up{{server="127.0.0.1",port="{hung_port}"}}'] == 0
            # Every scrape counted its one failed target.
            _, body, _ = ep.get("/metrics")
            assert prom_series(body)["apache_exporter_scrape_failures_total"] == 5


@pytest.mark.integration
def test_basic_auth(prefork, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    with running("--url", prefork.status_url, "--listen-user", "prom",
                 "--listen-password-file", str(secret)) as ep:
        assert ep.get("/metrics")[0] == 401
        wrong = base64.b64encode(b"prom:nope").decode()
        assert ep.get("/metrics", {"Authorization": f"Basic {wrong}"})[0] == 401
        right = base64.b64encode(b"prom:s3cret").decode()
        assert ep.get("/metrics", {"Authorization": f"Basic {right}"})[0] == 200
        _, err = ep.stop()
    assert "s3cret" not in err


@pytest.mark.integration
def test_tls_and_a_client_that_never_handshakes(prefork, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with running("--url", prefork.status_url, "--listen-cert-file", str(cert),
                 "--listen-key-file", str(key), scheme="https") as ep:
        mute = socket.create_connection(("127.0.0.1", ep.port))  # says nothing
        try:
            ctx = ssl.create_default_context(cafile=str(cert))
            code, body, _ = ep.get("/metrics", context=ctx, timeout=10)
            assert code == 200 and prom_series(body)["apache_up"] == 1
        finally:
            mute.close()


@pytest.mark.integration
def test_apache_exporter_flags_work_unchanged(prefork):
    port = free_port()
    proc = subprocess.Popen(
        [EXPORTER, f"--telemetry.address=127.0.0.1:{port}", "--telemetry.endpoint=/m",
         f"--scrape_uri={prefork.status_url}", "--insecure", "--host_override=localhost"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=exporter_env())
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/m", timeout=10) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
        assert prom_series(body)["apache_up"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0


def test_usage_errors_before_listening(tmp_path):
    for args, message in (
            (["--format", "tab"], "drop --format tab"),
            (["--output", str(tmp_path / "x")], "no --output"),
            (["--interval", "5"], "no --interval"),
            (["--listen-user", "u"], "needs a password"),
            (["--listen-key-file", str(tmp_path / "k")], "needs --listen-cert-file")):
        proc = subprocess.run(
            [EXPORTER, "--listen", f"127.0.0.1:{free_port()}", "--url",
             "http://127.0.0.1:9/server-status", *args],
            capture_output=True, text=True, timeout=30, env=exporter_env())
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_sigterm_stops_it_cleanly_at_once():
    with running("--url", "http://127.0.0.1:9/server-status") as ep:
        t0 = time.monotonic()
        status, err = ep.stop()
    assert status == 0 and time.monotonic() - t0 < 2, err
    assert "Traceback" not in err


@pytest.mark.parametrize("family,host,shown", [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1:{port}"),
    (socket.AF_INET6, "::1", "[::1]:{port}")])  # an IPv6 address in brackets
def test_the_port_is_taken(family, host, shown):
    with socket.socket(family) as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        proc = subprocess.run([EXPORTER, "--listen", listen, "--url",
                               "http://127.0.0.1:9/server-status"],
                              capture_output=True, text=True, timeout=30, env=exporter_env())
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on {shown.format(port=port)}: " in proc.stderr, proc.stderr



@pytest.mark.parametrize("url,ok", [
    ("http://127.0.0.1:8080/server-status", True),
    ("http://127.0.0.1:80/x?/server-status", False),      # a query
    ("http://127.0.0.1:80/a/b/server-status", False),     # * never crosses a /
    ("http://127.0.0.1:0/server-status", False),          # port 0
    ("http://127.0.0.1/server-status", False),            # no explicit port
    ("http://u:p@127.0.0.1:80/server-status", False),     # user information
    ("https://127.0.0.1:80/server-status", False),        # another scheme
    ("http://127.0.0.1:80/server-status#x", False),
])
def test_probe_patterns_match_part_by_part(url, ok):
    from apache_metrics_exporter.endpoint import allowed

    assert allowed(url, "http://127.0.0.1:*/server-status") is ok
    assert not allowed("http://localhost.evil.example:80/s", "http://localhost*:*/s")


def test_a_probed_target_gets_none_of_the_configured_credentials(tmp_path):
    import http.server

    seen = []

    class Capture(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(dict(self.headers))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    peer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    secret = tmp_path / "pw"
    secret.write_text("Sup3rSecret\n")
    try:
        with running("--url", "http://127.0.0.1:9/server-status", "--user", "admin",
                     "--password-file", str(secret), "--header", "X-Token: t0ken",
                     "--probe-allow", "http://127.0.0.1:*/server-status") as ep:
            target = f"http://127.0.0.1:{peer.server_address[1]}/server-status"
            code, body, _ = ep.get("/probe?target=" + urllib.request.quote(target, safe=""))
            assert code == 200 and prom_series(body)["apache_up"] == 0
    finally:
        peer.shutdown()
        peer.server_close()
    assert seen, "the probe did not reach the peer"
    for headers in seen:
        assert "Authorization" not in headers and "X-Token" not in headers, headers


# -- slow, idle and hostile clients (issue 19) -------------------------------

DEAD_URL = "http://127.0.0.1:9/server-status"  # refused at once: a quick scrape, up = 0


def self_signed(directory) -> tuple:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def connections(port: int, count: int) -> list:
    """``count`` TCP connections to the endpoint, established, saying nothing."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def close_all(socks) -> None:
    for s in socks:
        s.close()


def prompt_scrape(ep, context=None) -> None:
    """A scrape that must be answered at once, slow clients or not."""
    t0 = time.monotonic()
    code, body, _ = ep.get("/metrics", context=context, timeout=5)
    took = time.monotonic() - t0
    assert code == 200 and prom_series(body)["apache_up"] == 0, (code, body)
    assert took < 3, took  # the old endpoint failed these at once, or after 20 s


def test_idle_connections_cannot_starve_a_scrape():
    with running("--url", DEAD_URL) as ep:
        idle = connections(ep.port, 80)
        try:
            prompt_scrape(ep)
            prompt_scrape(ep)
        finally:
            close_all(idle)


def test_dripping_clients_cannot_starve_a_scrape():
    with running("--url", DEAD_URL) as ep:
        drips = connections(ep.port, 70)
        for s in drips:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        stop = threading.Event()
        dripped = threading.Semaphore(0)

        def drip():  # a header line every second on every connection still open
            while not stop.wait(1):
                for s in drips:
                    try:
                        s.sendall(b"X-Drip: 1\r\n")
                    except OSError:
                        pass
                dripped.release()

        dripper = threading.Thread(target=drip)
        dripper.start()
        try:
            for _ in range(3):  # a scrape after each round of drips
                assert dripped.acquire(timeout=5)
                prompt_scrape(ep)
        finally:
            stop.set()
            dripper.join()
            close_all(drips)


def test_mute_tls_clients_cannot_starve_a_scrape(tmp_path):
    cert, key = self_signed(tmp_path)
    with running("--url", DEAD_URL, "--listen-cert-file", str(cert),
                 "--listen-key-file", str(key), scheme="https") as ep:
        mute = connections(ep.port, 70)  # never a ClientHello
        try:
            ctx = ssl.create_default_context(cafile=str(cert))
            prompt_scrape(ep, ctx)
            prompt_scrape(ep, ctx)
        finally:
            close_all(mute)


def closed_after(sock, drip: bytes = b"") -> float:
    """Seconds until the endpoint closes ``sock``, sending ``drip`` every 0.2 s."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < 15:
        try:
            if not sock.recv(1024):
                break
        except socket.timeout:
            if drip:
                try:
                    sock.sendall(drip)
                except OSError:
                    break
        except OSError:
            break
    return time.monotonic() - t0


@pytest.mark.parametrize("tls", [False, True])
def test_a_request_has_one_deadline_not_one_per_read(tmp_path, tls):
    args = ["--url", DEAD_URL, "--listen-request-deadline", "1.5"]
    if tls:
        cert, key = self_signed(tmp_path)
        args += ["--listen-cert-file", str(cert), "--listen-key-file", str(key)]
    with running(*args, scheme="https" if tls else "http") as ep:
        sock = socket.create_connection(("127.0.0.1", ep.port), timeout=5)
        try:
            if tls:  # a client that never sends its ClientHello
                took = closed_after(sock)
            else:  # a header line every 0.2 s: each read is quick, the request never ends
                sock.sendall(b"GET /metrics HTTP/1.0\r\n")
                took = closed_after(sock, b"X-Drip: 1\r\n")
        finally:
            sock.close()
    assert 1.3 < took < 5, took  # the old endpoint: 30 s per read, for ever in all


def test_a_complete_request_is_not_dropped_to_make_room():
    # A scrape waiting for a hung Apache holds a complete request; a flood of
    # new connections takes the slots of idle ones, never its slot.
    with socket.socket() as hung:  # an Apache that accepts and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(4)
        hung.settimeout(10)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/server-status"
        with running("--url", url, "--timeout", "2") as ep:
            results = []
            scraper = threading.Thread(target=lambda: results.append(ep.get("/metrics")))
            scraper.start()
            fetch, _ = hung.accept()  # the scrape is under way (for the 2 s --timeout)
            flood = connections(ep.port, 100)
            try:
                scraper.join(10)
            finally:
                close_all(flood)
                fetch.close()
    assert results and results[0][0] == 200, results
    assert prom_series(results[0][1])["apache_up"] == 0


def test_a_request_head_is_bounded():
    with running("--url", DEAD_URL) as ep:
        with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
            answer = sock.recv(100)
    assert answer.startswith(b"HTTP/1.0 431"), answer


def test_failed_handshakes_and_resets_leave_no_traceback(tmp_path):
    cert, key = self_signed(tmp_path)
    with running("--url", DEAD_URL, "--listen-cert-file", str(cert),
                 "--listen-key-file", str(key), "-vv", scheme="https") as ep:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")  # plain HTTP to the TLS port
                closed_after(sock)
            reset = socket.create_connection(("127.0.0.1", ep.port), timeout=5)
            reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            reset.close()  # a port scan: RST at once
        ctx = ssl.create_default_context(cafile=str(cert))
        prompt_scrape(ep, ctx)
        status, err = ep.stop()
    assert status == 0 and "Traceback" not in err, err
    lines = err.splitlines()
    assert all(line.startswith("apache-metrics-exporter") for line in lines), err
    assert sum("[SSL: HTTP_REQUEST]" in line for line in lines) == 3, err


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo.pem"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize("option", ["--listen-cert-file", "--listen-key-file"])
def test_listen_tls_files_that_are_fifos_are_refused(tmp_path, fifo, option):
    cert, _ = self_signed(tmp_path)
    files = {"--listen-cert-file": str(cert), option: fifo}
    args = [a for pair in files.items() for a in pair]
    proc = subprocess.run([EXPORTER, "--listen", f"127.0.0.1:{free_port()}", "--url", DEAD_URL,
                           *args], capture_output=True, text=True, timeout=15,
                          env=exporter_env())
    assert proc.returncode == 2, proc.stderr
    assert f"{option} {fifo} is not a regular file" in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("command", ["exporter", "reaper"])
@pytest.mark.parametrize("option", ["--ca-file", "--client-cert", "--client-key", "device"])
def test_tls_files_that_are_fifos_or_devices_are_refused(tmp_path, fifo, command, option):
    cert, key = self_signed(tmp_path)
    path = "/dev/null" if option == "device" else fifo
    option = "--ca-file" if option == "device" else option
    files = {"--client-cert": str(cert), option: path}
    program = EXPORTER if command == "exporter" else os.path.join(
        os.path.dirname(EXPORTER), "apache-worker-reaper")
    extra = ["--max-time", "1m", "--dry-run"] if command == "reaper" else ["--no-processes"]
    proc = subprocess.run([program, "--url", "https://127.0.0.1:9/server-status", *extra,
                           *[a for pair in files.items() for a in pair]],
                          capture_output=True, text=True, timeout=15, env=exporter_env())
    assert proc.returncode == 2, proc.stderr
    assert f"{option} {path} is not a regular file" in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


def test_a_loop_rechecks_the_tls_files_at_every_load(fifo):
    # config.targets() checked the file at start; a loop builds TLS contexts
    # again later, when the file may have become a FIFO.
    from apache_metrics_exporter.collect.http import Fetcher, Target
    from apache_metrics_exporter.errors import FetchError

    url = "https://127.0.0.1:9/server-status"
    outcome = []

    def fetch():
        try:
            Fetcher(Target(url, ca_file=fifo)).get(url)
        except FetchError as exc:
            outcome.append(str(exc))

    th = threading.Thread(target=fetch, daemon=True)
    th.start()
    th.join(5)
    if th.is_alive():  # blocked in open(): let it go before failing
        with open(fifo, "w"):
            pass
    assert outcome and "is not a regular file" in outcome[0], outcome


def _start_line(*args: str, env=None) -> tuple:
    """The exporter's stderr up to its first line (or its end), then its whole
    stderr once stopped."""
    port = free_port()
    proc = subprocess.Popen([EXPORTER, "--listen", f"127.0.0.1:{port}", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env or exporter_env())
    try:
        deadline = time.monotonic() + 15
        while True:  # ready when the port accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    return port, err


def test_it_says_where_it_listens_and_for_what():
    # One line at the default level: the address, the scheme, the targets
    # (credentials never shown) and what /probe accepts; -q hides it.
    env = exporter_env(APACHE_METRICS_URL="http://mon:s3cret@127.0.0.1:9/server-status")
    port, err = _start_line("--probe-allow", "http://127.0.0.1:*/server-status", env=env)
    assert err == (f"apache-metrics-exporter: notice: listening on http://127.0.0.1:{port}"
                   "/metrics for http://127.0.0.1:9/server-status; /probe?target= for URLs "
                   "matching http://127.0.0.1:*/server-status\n")
    _port, err = _start_line("-q", env=env)
    assert err == ""


def test_scrapes_keep_their_connection_to_the_target_and_probes_do_not():
    """--listen keeps the connection to a configured target between scrapes
    (as the loops do: no new connection to Apache per scrape); a /probe of
    another URL gets a connection of its own, closed after the probe."""
    from tests.conftest import data
    from tests.harness.pages import serve_answer

    auto, html = data("2.4.71-event-ext-on.auto.txt"), data("2.4.71-event-ext-on.html")
    opened = []
    with serve_answer(lambda request: (200, (), auto if "auto" in request.path else html),
                      opened.append) as url:
        with running("--url", url, "--probe-allow", "http://127.0.0.1:*/other-status") as ep:
            for _ in range(3):
                status, body, _ = ep.get("/metrics")
                assert status == 200 and "\napache_up 1" in body
            assert len(opened) == 1
            other = url.replace("server-status", "other-status")
            for _ in range(2):
                status, body, _ = ep.get(f"/probe?target={other}")
                assert status == 200 and "\napache_up 1" in body
            assert len(opened) == 3


# -- keep-alive (issue 23: a scrape per request, not per connection) ---------

def read_answer(f) -> tuple:
    """(status line, {header: value}, body) of one answer read from ``f``
    (the socket's makefile("rb")); ('', {}, b'') when the connection ended."""
    status = f.readline().decode("latin-1").rstrip("\r\n")
    if not status:
        return "", {}, b""
    headers = {}
    for line in iter(f.readline, b"\r\n"):
        assert line, "the connection ended inside an answer's head"
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, f.read(int(headers["content-length"]))


def test_an_http11_scraper_keeps_its_connection_and_an_http10_one_does_not():
    get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    with running("--url", DEAD_URL) as ep:
        with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as sock:
            f = sock.makefile("rb")
            port = sock.getsockname()[1]
            for _ in range(3):  # one after another on the same connection
                sock.sendall(get)
                status, headers, body = read_answer(f)
                assert status == "HTTP/1.1 200 OK" and b"\napache_up 0" in body, status
                assert headers.get("connection") != "close"
            sock.sendall(get + get)  # pipelined: both answered, in order
            assert read_answer(f)[0] == read_answer(f)[0] == "HTTP/1.1 200 OK"
            assert sock.getsockname()[1] == port
        with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as sock:
            f = sock.makefile("rb")
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            status, _, body = read_answer(f)
            assert status == "HTTP/1.0 200 OK" and b"\napache_up 0" in body
            assert f.read() == b""  # closed, as before


@pytest.mark.parametrize("request_head", [
    b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
    # A body is never read, so its bytes must never be taken for a request:
    # here the body is a whole request, which must not be answered.
    b"GET /metrics HTTP/1.1\r\nContent-Length: 23\r\n\r\nGET /probe HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 23\r\n\r\n"
    b"GET /probe HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nContent-Length: x\r\n\r\nGET /probe HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"17\r\nGET /probe HTTP/1.1\r\n\r\n\r\n0\r\n\r\n",
    b"GET /metrics HTTP/1.2\r\n\r\nGET /probe HTTP/1.1\r\n\r\n",
])
def test_a_connection_that_asks_to_close_or_sends_a_body_is_answered_once(request_head):
    with running("--url", DEAD_URL) as ep:
        with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as sock:
            f = sock.makefile("rb")
            sock.sendall(request_head)
            status, headers, body = read_answer(f)
            assert status.endswith(" 200 OK") and b"\napache_up 0" in body, status
            assert f.read() == b"", "a second answer, or the connection kept"


def test_a_kept_alive_connection_has_the_request_deadline_for_each_next_request():
    """After an answer the connection waits idle for its next request up to
    the idle deadline (3 s here; 330 s by default, past the scrape intervals
    people use), then has the whole request deadline again (1.5 s here) from
    that request's first byte: idle, it is closed at the idle deadline; a
    next request dripped a header line every 0.2 s is cut off at the request
    deadline, not per read; a next request after an idle time longer than
    the request deadline is served; and each request has the whole
    MAX_HEAD, no more."""
    get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    with running("--url", DEAD_URL, "--listen-request-deadline", "1.5",
                 "--listen-idle-deadline", "3") as ep:
        def served() -> tuple:
            sock = socket.create_connection(("127.0.0.1", ep.port), timeout=5)
            f = sock.makefile("rb")
            sock.sendall(get)
            assert read_answer(f)[0] == "HTTP/1.1 200 OK"
            return sock, f

        sock, f = served()  # idle after its answer
        with sock:
            took = closed_after(sock)
        assert 2.8 < took < 6.5, took
        sock, f = served()  # idle longer than the request deadline: still served
        with sock:
            time.sleep(2.2)
            sock.sendall(get)
            assert read_answer(f)[0] == "HTTP/1.1 200 OK"
        sock, f = served()  # drips its next request
        with sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            took = closed_after(sock, b"X-Drip: 1\r\n")
        assert 1.3 < took < 5, took
        sock, f = served()  # answered within 1.5 s, three times: each has the deadline anew
        with sock:
            for _ in range(3):
                time.sleep(1.0)
                sock.sendall(get)
                assert read_answer(f)[0] == "HTTP/1.1 200 OK"
        sock, f = served()  # a big next head: 431, as on a new connection
        with sock:
            head = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
            for _ in range(10):  # 10 heads of 15 KiB: each within MAX_HEAD
                sock.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 15000 + b"\r\n\r\n")
                assert read_answer(f)[0] == "HTTP/1.1 200 OK"
            sock.sendall(head)
            assert read_answer(f)[0].startswith("HTTP/1.0 431")  # then closed
            assert f.read() == b""


def test_idle_kept_alive_connections_cannot_starve_a_scrape():
    """70 scrapers that each got an answer and keep their connection idle:
    a new scraper is still answered at once (an idle kept-alive connection
    is the first dropped to make room)."""
    with running("--url", DEAD_URL) as ep:
        kept = connections(ep.port, 70)
        try:
            for sock in kept:
                try:
                    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    pass  # dropped already to make room for a later one
            prompt_scrape(ep)
            prompt_scrape(ep)
        finally:
            close_all(kept)


# -- the request head, read without email.parser (issue 23) ------------------

def status_of(port: int, head: bytes) -> str:
    """The status line answering ``head`` on a new connection ('' if none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        return read_answer(sock.makefile("rb"))[0]


def raw_answer(port: int, head: bytes) -> bytes:
    """Everything the endpoint sends back for ``head`` until it closes."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        try:
            for chunk in iter(lambda: sock.recv(65536), b""):
                out += chunk
        except ConnectionResetError:  # closed with part of the head unread
            pass
    return out


def test_hostile_request_heads_are_refused_never_half_read(tmp_path):
    """Every line of the head is a field (a token name, a colon, a value
    without control characters) or the request is refused: a folded line, a
    line without a colon, a name with a space, a bare CR or NUL inside a
    value are 400, never taken as the end of the head (which left the rest
    unread) or as two fields (a bare CR used to let 'X: a\\rAuthorization: ...'
    through as an Authorization field)."""
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    good = base64.b64encode(b"prom:s3cret").decode().encode()
    auth = b"Authorization: Basic " + good + b"\r\n"
    with running("--url", DEAD_URL, "--listen-user", "prom",
                 "--listen-password-file", str(secret)) as ep:
        def status(head: bytes) -> str:
            return status_of(ep.port, head).split(" ", 2)[1] if head else ""

        get = b"GET /metrics HTTP/1.1\r\n"
        assert status(get + auth + b"\r\n") == "200"
        assert status(get + b"AUTHORIZATION: Basic " + good + b"\r\n\r\n") == "200"
        assert status(get + b"Authorization:   Basic " + good + b"\r\n\r\n") == "200"
        assert status(get + b"Authorization: Basic " + good + b" \r\n\r\n") == "401"  # as before
        assert status(get + b"X-Tab: a\tb\r\nX-Latin: \xe9\r\n" + auth + b"\r\n") == "200"
        prometheus_head = (b"Host: 127.0.0.1:9117\r\nUser-Agent: Prometheus/2.45.0\r\n"
                           b"Accept: application/openmetrics-text;version=1.0.0,text/plain;"
                           b"version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\n"
                           b"X-Prometheus-Scrape-Timeout-Seconds: 10\r\n")
        assert status(get + prometheus_head + auth + b"\r\n") == "200"
        fields = b"".join(b"X-F%d: %d\r\n" % (i, i) for i in range(99))
        assert status(get + fields + auth + b"\r\n") == "200"  # 100 fields
        assert status(get + fields + b"X-More: 1\r\n" + auth + b"\r\n") == "431"  # 101
        for bad in [b"X-Fold: a\r\n  b\r\n", b"\tX-Fold: a\r\n", b"Just text\r\n",
                    b"Bad Name: x\r\n", b"Name : x\r\n", b": x\r\n", b"X\x00: x\r\n",
                    b"X-Nul: a\x00b\r\n", b"X-Del: a\x7fb\r\n", b"X-Esc: \x1b[31m\r\n",
                    b"X-Cr: a\r\r\n", b"X-Cr: a\r" + auth]:
            assert status(get + bad + auth + b"\r\n") == "400", bad
            assert status(get + auth + bad + b"\r\n") == "400", bad
        # A request line that tells no version is answered as HTTP/0.9 was
        # (http.server: the error page alone, no status line).
        for line, code in [(b"GET /metrics HTTP/1.x", b"400"), (b"GET /metrics HTTP/+1.1", b"400"),
                           (b"GET /metrics HTTP/1.1 x", b"400"), (b"PUT /metrics", b"400"),
                           (b"GET /metrics HTTP/2.0", b"505")]:
            answer = raw_answer(ep.port, line + b"\r\n\r\n")
            assert b"Error code: " + code in answer and b"HTTP/" not in answer[:8], line
        assert status(b"POST /metrics HTTP/1.1\r\n" + auth + b"\r\n") == "501"
        _, err = ep.stop()
    assert "s3cret" not in err and "Traceback" not in err, err


def test_field_names_are_case_insensitive_for_keep_alive_too():
    with running("--url", DEAD_URL) as ep:
        for head in [b"GET /metrics HTTP/1.1\r\nconnection: CLOSE\r\n\r\n",
                     b"GET /metrics HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
                     b"GET /metrics HTTP/1.1\r\ncontent-length: 1\r\n\r\nx"]:
            with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as sock:
                f = sock.makefile("rb")
                sock.sendall(head)
                assert read_answer(f)[0].endswith(" 200 OK")
                assert f.read() == b"", head


# -- password checks (basic_auth_users: bcrypt, one at a time) ---------------

def test_wrong_passwords_cannot_hold_every_connection_slot(tmp_path):
    """A request waiting for its bcrypt check is complete, so its connection
    is never dropped for room: 70 clients sending wrong passwords (each a
    bcrypt of ~60 ms, one at a time) used to hold all 64 slots, and every new
    connection of the real scraper was closed unanswered. At most CHECKS
    requests wait for a check now (others: 503 at once), and a password found
    right once is answered from the cache, never behind the queue."""
    import bcrypt

    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(10)).decode()  # the toolkit's cost
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prom: '{hashed}'\n")
    good = {"Authorization": "Basic " + base64.b64encode(b"prom:s3cret").decode()}

    def request(password: bytes) -> bytes:
        return (b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
                + base64.b64encode(b"prom:" + password) + b"\r\n\r\n")

    with running("--url", DEAD_URL, "--web.config.file", str(web)) as ep:
        assert ep.get("/metrics", headers=good)[0] == 200  # the scraper, before the attack
        stop = threading.Event()

        def attacker(n: int) -> None:  # a new wrong password as soon as answered
            count = 0
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as sock:
                        f = sock.makefile("rb")
                        while not stop.is_set():
                            count += 1
                            sock.sendall(request(b"guess-%d-%d" % (n, count)))
                            status = read_answer(f)[0]
                            if not status:
                                break
                            if " 401 " not in status:
                                stop.wait(0.1)  # told to come back: do, a bit later
                except OSError:
                    stop.wait(0.05)

        attackers = [threading.Thread(target=attacker, args=(n,)) for n in range(70)]
        for th in attackers:
            th.start()
        try:
            time.sleep(2)  # every slot held by now, before the fix
            for _ in range(3):
                t0 = time.monotonic()
                code, body, _ = ep.get("/metrics", headers=good, timeout=5)
                assert code == 200 and prom_series(body)["apache_up"] == 0, (code, body)
                assert time.monotonic() - t0 < 3, time.monotonic() - t0
                time.sleep(0.5)
        finally:
            stop.set()
            for th in attackers:
                th.join(15)


def test_wrong_passwords_never_push_a_right_one_out_of_the_cache(monkeypatch):
    """Anyone can send many wrong passwords: 300 of them used to empty the
    cache of verdicts (256 at most), and the scraper's right one needed a
    bcrypt again, in the queue behind theirs."""
    import bcrypt

    from apache_metrics_exporter.webconfig import WebConfig

    web = WebConfig()
    web.users["prom"] = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4))

    def header(password: bytes) -> str:
        return "Basic " + base64.b64encode(b"prom:" + password).decode()

    assert web.check_basic(header(b"s3cret")) is True
    for n in range(300):
        assert web.check_basic(header(b"guess-%d" % n)) is False

    def no_bcrypt(*args):
        raise AssertionError("a known right password checked again")

    monkeypatch.setattr(bcrypt, "checkpw", no_bcrypt)
    assert web.check_basic(header(b"s3cret")) is True
    assert web.check_basic(header(b"guess-299")) is False  # the last wrong ones are known too


def test_a_request_line_is_three_words_apart_by_single_spaces_in_printable_ascii():
    # str.split() took NBSP, VT, FF and \x1c-\x1f for spaces and let NUL or
    # ESC into the path; Go's net/http refuses all of these (red-team note).
    with running("--url", DEAD_URL) as ep:
        for line in [b"GET  /metrics HTTP/1.1", b"GET /metrics  HTTP/1.1",
                     b"GET /metrics HTTP/1.1 ", b"GET\xa0/metrics HTTP/1.1",
                     b"GET\x0b/metrics HTTP/1.1", b"GET\x1c/metrics HTTP/1.1",
                     b"GET /met\x00rics HTTP/1.1", b"GET /\x1b[31m HTTP/1.1",
                     b"GET\t/metrics HTTP/1.1", b"GET /m\xe9trics HTTP/1.1"]:
            # (refused before the version is known: the error page alone, as
            # http.server answers any request line it cannot read)
            answer = raw_answer(ep.port, line + b"\r\n\r\n")
            assert b"Error code: 400" in answer and b"HTTP/" not in answer[:8], line
        answer = raw_answer(ep.port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 200 "), answer[:60]
        head = answer.split(b"\r\n\r\n", 1)[0]
        assert b"\r\nServer: apache-metrics-exporter\r\n" in head and b"Python" not in head


def _switches(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid`` so far: one per
    wake-up from a wait (poll, a lock, a sleep)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return total


def test_an_idle_endpoint_does_not_wake_up():
    """Between scrapes nothing runs: the accept loop sleeps until a connection,
    a deadline or shutdown wakes it, the main thread until a signal does (the
    stdlib's loop polled every quarter second and the main thread joined
    every half: 6 wake-ups a second, more CPU between Prometheus' scrapes than
    the scrapes). Also with a kept-alive connection waiting idle for its
    next request (its idle deadline is 330 s away)."""
    with running("--url", "http://127.0.0.1:9/server-status") as ep:
        ep.get("/metrics")
        before = _switches(ep.proc.pid)
        time.sleep(2)
        assert _switches(ep.proc.pid) - before <= 2
        with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as sock:
            f = sock.makefile("rb")
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(f)[0] == "HTTP/1.1 200 OK"
            time.sleep(0.5)  # (the answer's last steps)
            before = _switches(ep.proc.pid)
            time.sleep(2)
            assert _switches(ep.proc.pid) - before <= 2
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # still served
            assert read_answer(f)[0] == "HTTP/1.1 200 OK"


def test_a_stop_signal_caught_by_any_thread_stops_it_at_once():
    """SIGTERM is handled in the main thread, but the kernel may hand it to
    any thread that does not block it: sent to a connection's thread (kill
    with that thread's id goes to it first), it still stops the endpoint."""
    with running("--url", "http://127.0.0.1:9/server-status") as ep:
        with socket.create_connection(("127.0.0.1", ep.port), timeout=5):
            pid = ep.proc.pid
            wait_for("a connection thread", lambda: len(os.listdir(f"/proc/{pid}/task")) >= 3)
            others = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
            os.kill(others[-1], signal.SIGTERM)
            try:
                status = ep.proc.wait(timeout=2)  # (stop() would send one more)
            except subprocess.TimeoutExpired:
                status = None
            _status, err = ep.stop()
    assert status == 0, err
    assert "Traceback" not in err


def test_a_deadline_further_than_poll_can_sleep_does_not_end_the_accept_loop():
    """The accept loop sleeps until its earliest deadline, but poll(2) takes
    at most 2**31-1 ms (24.8 days): a kept-alive connection going idle
    under a longer --listen-idle-deadline (30d) raised OverflowError in the
    accept loop, which ended it - the port closed, and the process exited
    0 (nothing for a supervisor to restart) at its next scrape's end."""
    with running("--url", DEAD_URL, "--listen-idle-deadline", "30d") as ep:
        with socket.create_connection(("127.0.0.1", ep.port), timeout=5) as sock:
            f = sock.makefile("rb")
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(f)[0] == "HTTP/1.1 200 OK"
            time.sleep(0.5)  # idle now: the loop sleeps towards its deadline
            assert ep.get("/metrics")[0] == 200
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # still kept
            assert read_answer(f)[0] == "HTTP/1.1 200 OK"
        status, err = ep.stop()
    assert status == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize("others", [0, 1])
def test_an_accept_loop_that_fails_stops_the_endpoint_with_exit_1(monkeypatch, capsys, others):
    """An exception inside an accept loop ended that loop (a traceback on
    stderr); the process then went on with its other addresses, one port
    closed, or - its only one - exited 0, which a supervisor (systemd's
    Restart=on-failure) takes for a clean stop and does not restart. Now
    every loop is stopped and the exit status is 1, with one line saying
    why. (A SIGTERM after 10 s ends a test that would otherwise wait for
    ever.)"""
    from apache_metrics_exporter import endpoint

    def broken(self):
        raise RuntimeError("boom")

    bad = endpoint._Server(("127.0.0.1", 0), endpoint._Handler)
    good = [endpoint._Server(("127.0.0.1", 0), endpoint._Handler) for _ in range(others)]
    monkeypatch.setattr(bad, "_until_due", broken.__get__(bad))
    timer = threading.Timer(10, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    try:
        t0 = time.monotonic()
        status = endpoint.serve(endpoint.Listeners([*good, bad]))
        took = time.monotonic() - t0
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
    err = capsys.readouterr().err
    assert status == 1 and took < 5, (status, took, err)
    assert "RuntimeError: boom" in err and "Traceback" not in err
