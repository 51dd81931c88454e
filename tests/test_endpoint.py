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


def test_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([EXPORTER, "--listen", f"127.0.0.1:{port}", "--url",
                               "http://127.0.0.1:9/server-status"],
                              capture_output=True, text=True, timeout=30, env=exporter_env())
    assert proc.returncode == 2 and "cannot listen on 127.0.0.1" in proc.stderr



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
