"""``--listen``: a Prometheus scrape endpoint, a drop-in for apache_exporter.

``GET /metrics`` (or ``--telemetry.endpoint``) collects every configured
target at scrape time, concurrently, and answers in the Prometheus text
format with the same families as ``--format prometheus``, plus the
endpoint's own health (``apache_exporter_scrape_failures_total``, the scrape
duration). ``GET /probe?target=URL`` collects one target, but only a URL that
is configured (``--url``) or matches a ``--probe-allow`` pattern: anything
else is refused with 403, so the endpoint is never an open proxy that makes
this host fetch arbitrary addresses.

Security model: it listens on 127.0.0.1 unless told otherwise; optional
basic auth (``--listen-user`` with a password from a file or the
environment) and TLS (``--listen-cert-file``/``--listen-key-file``). At most
``MAX_SCRAPES`` scrapes run at once (more get 503), and each one is bounded
by ``--timeout`` per target, since targets are collected concurrently.
"""

from __future__ import annotations

import argparse
import fnmatch
import hmac
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from apache_metrics_exporter.catalogue import BY_NAME
from apache_metrics_exporter.errors import UsageError
from apache_metrics_exporter.log import log
from apache_metrics_exporter.writers import Settings, prometheus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Sequence, Tuple

    from apache_metrics_exporter.collect.http import Target
    from apache_metrics_exporter.collect.snapshot import Options

DEFAULT_PORT = 9117
MAX_SCRAPES = 8
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_listen(text: str) -> Tuple[str, int]:
    """``ADDR:PORT``, ``:PORT``, ``ADDR`` or ``[V6]:PORT``; the address defaults
    to 127.0.0.1 (not every interface, as apache_exporter's ``:9117`` does) and
    the port to 9117."""
    text = text.strip()
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"--listen {text!r}: the port must be a number from 1 to 65535")
    return host or "127.0.0.1", int(port) if port else DEFAULT_PORT


def allowed(url: str, pattern: str) -> bool:
    """Whether --probe-allow ``pattern`` admits ``url``, part by part: the
    scheme as written, each dot-separated label of the host, the port (given
    explicitly, 1-65535) and each /-separated segment of the path are matched
    with shell wildcards that never cross a part; no query, no fragment, no
    user information."""
    from urllib.parse import urlsplit

    try:
        u, p = urlsplit(url), urlsplit(pattern)
        u_port, p_port = u.port, p.netloc.rpartition(":")[2] if ":" in p.netloc else ""
    except ValueError:
        return False
    if (u.query or u.fragment or "@" in u.netloc or not u.hostname or not u_port
            or not 0 < u_port < 65536 or u.scheme != p.scheme or not p_port):
        return False
    u_host, p_host = u.hostname.split("."), (p.hostname or "").split(".")
    u_path, p_path = u.path.split("/"), p.path.split("/")
    return (len(u_host) == len(p_host) and len(u_path) == len(p_path)
            and all(fnmatch.fnmatchcase(a, b) for a, b in zip(u_host, p_host))
            and fnmatch.fnmatchcase(str(u_port), p_port)
            and all(fnmatch.fnmatchcase(a, b) for a, b in zip(u_path, p_path)))


class Endpoint:
    """What a scrape does: collect targets concurrently, render, count failures."""

    def __init__(self, args: argparse.Namespace, targets: Sequence[Target],
                 options: Options) -> None:
        self.args = args
        self.targets = list(targets)
        self.options = options
        self.settings = Settings.of(args)
        self.failures = 0
        self._lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_SCRAPES)
        self.allowed = [t.url for t in targets]
        self.patterns = list(getattr(args, "probe_allow", None) or ())

    def probe_target(self, url: str) -> Optional[Target]:
        """The configured target for ``url``, a new one if a --probe-allow
        pattern admits it, None when it is refused."""
        from apache_metrics_exporter.collect.http import status_url

        try:
            url, user, password = status_url(url)  # the form configured targets have
        except (UsageError, ValueError):
            return None
        if user is not None or password is not None:
            return None  # credentials come from the options, never from a scraper
        for t in self.targets:
            if t.url == url:
                return t
        if not any(allowed(url, p) for p in self.patterns):
            return None
        from apache_metrics_exporter.collect.http import Target, check_url

        try:
            check_url(url)
        except UsageError:
            return None
        # A probed URL gets no credentials, headers or client certificate of
        # the configured targets: whoever listens there must not receive them.
        base = self.targets[0] if self.targets else Target(url)
        return Target(url, timeout=base.timeout, max_bytes=base.max_bytes,
                      ca_file=base.ca_file, insecure=base.insecure)

    def scrape(self, targets: Sequence[Target]) -> str:
        """One exposition for these targets (never raises for a bad target)."""
        from apache_metrics_exporter.collect.http import Fetcher
        from apache_metrics_exporter.collect.snapshot import Sample, collect_all
        from apache_metrics_exporter.health import state_samples

        t0 = time.perf_counter()
        fetchers = [Fetcher(t) for t in targets]
        try:
            snaps = collect_all(fetchers, self.options)
        finally:
            for fetcher in fetchers:
                fetcher.close()
        extra = state_samples(self.args.spool_dir, self.args.spool_max_bytes,
                              self.args.state_file)
        from apache_metrics_exporter.loops import report, track_restarts

        if list(targets) == self.targets:  # probes never reach the restart state
            track_restarts(self.args, snaps)
        for snap in snaps:
            snap.samples.extend(extra)
            report(snap)
        failed = sum(1 for s in snaps if not s.up)
        with self._lock:
            self.failures += failed
            total = self.failures
        own = [Sample(BY_NAME["scrape_failures_total"], total),
               Sample(BY_NAME["scrape_duration_seconds"], round(time.perf_counter() - t0, 6))]
        return prometheus.render(snaps, self.settings, own)


class _Handler(BaseHTTPRequestHandler):
    server_version = "apache-metrics-exporter"
    timeout = 30  # a client that stalls mid-request is dropped (and its thread ends)
    endpoint: Endpoint
    metrics_path = "/metrics"
    auth: Optional[str] = None  # the expected Authorization header value

    def setup(self) -> None:
        super().setup()
        handshake = getattr(self.request, "do_handshake", None)
        if handshake is not None:  # TLS: in this thread, bounded by the timeout
            handshake()

    def handle(self) -> None:
        try:
            super().handle()
        except OSError as exc:  # a client that went away or spoke no TLS
            log.debug("%s: %s", self.address_string(), exc)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, body: str, content_type: str = "text/plain; charset=utf-8",
              headers: Sequence[Tuple[str, str]] = ()) -> None:
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.auth is None:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode("latin-1", "replace"), self.auth.encode()):
            return True
        self._send(401, "authentication required\n",
                   headers=[("WWW-Authenticate", 'Basic realm="apache-metrics-exporter"')])
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._authorised():
            return
        parts = urlsplit(self.path)
        if parts.path == self.metrics_path:
            self._scrape(self.endpoint.targets)
        elif parts.path == "/probe":
            wanted = parse_qs(parts.query).get("target", [])
            if len(wanted) != 1:
                self._send(400, "give exactly one target: /probe?target=URL\n")
                return
            target = self.endpoint.probe_target(wanted[0])
            if target is None:
                self._send(403, "target not allowed: it must be a configured --url or "
                                "match a --probe-allow pattern\n")
                return
            self._scrape([target])
        elif parts.path == "/":
            self._send(200, "<html><head><title>apache-metrics-exporter</title></head><body>"
                            f'<h1>apache-metrics-exporter</h1><p><a href="{self.metrics_path}">'
                            "Metrics</a></p></body></html>\n", "text/html; charset=utf-8")
        else:
            self._send(404, "not found\n")

    do_HEAD = do_GET

    def _scrape(self, targets: Sequence[Target]) -> None:
        if not self.endpoint.slots.acquire(blocking=False):
            self._send(503, f"more than {MAX_SCRAPES} scrapes at once; try again\n")
            return
        try:
            body = self.endpoint.scrape(targets)
        finally:
            self.endpoint.slots.release()
        self._send(200, body, CONTENT_TYPE)


MAX_CONNECTIONS = 64  # clients served at once; more are closed at once


class _Capped:
    """A threading server that serves at most MAX_CONNECTIONS clients at once:
    a flood of idle connections cannot grow threads without bound."""

    _slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self._slots.release()


def _auth_value(args: argparse.Namespace) -> Optional[str]:
    if not args.listen_user:
        if args.listen_password_file or args.listen_password:
            raise UsageError("a --listen password was given but no --listen-user")
        return None
    from apache_metrics_exporter.config import read_secret

    password = args.listen_password
    if args.listen_password_file:
        password = read_secret(args.listen_password_file, "--listen-password-file")
    if not password:
        raise UsageError("--listen-user needs a password: --listen-password-file, "
                         "'listen-password = ...' in the config file, or "
                         "APACHE_METRICS_LISTEN_PASSWORD")
    import base64

    token = base64.b64encode(f"{args.listen_user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def make_server(args: argparse.Namespace, targets: Sequence[Target],
                options: Options) -> ThreadingHTTPServer:
    """The bound server (UsageError when the address or TLS files are wrong)."""
    host, port = parse_listen(args.listen)
    path = args.telemetry_endpoint or "/metrics"
    if not path.startswith("/"):
        raise UsageError(f"--telemetry.endpoint {path!r}: a path starting with /")
    handler = type("Handler", (_Handler,), {
        "endpoint": Endpoint(args, targets, options),
        "metrics_path": path, "auth": _auth_value(args)})
    server_class: Any = ThreadingHTTPServer
    if ":" in host:
        import socket

        server_class = type("Server6", (ThreadingHTTPServer,),
                            {"address_family": socket.AF_INET6})
    server_class = type("Server", (_Capped, server_class), {})
    server_class.daemon_threads = True
    try:
        server = server_class((host, port), handler)
    except OSError as exc:
        raise UsageError(f"--listen {args.listen}: cannot listen on {host}:{port}: "
                         f"{exc.strerror}") from None
    if args.listen_cert_file:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(args.listen_cert_file, args.listen_key_file)
        except (OSError, ssl.SSLError) as exc:
            server.server_close()
            raise UsageError(f"cannot load --listen-cert-file/--listen-key-file: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
        # The handshake happens in the request's thread (see _Handler.setup): a
        # client that connects and says nothing cannot stall the accept loop.
        server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    elif args.listen_key_file:
        server.server_close()
        raise UsageError("--listen-key-file needs --listen-cert-file")
    return server


def serve(server: ThreadingHTTPServer) -> int:
    """Answer scrapes until SIGTERM or SIGINT; then stop cleanly (exit 0)."""
    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    scheme = "https" if server.socket.__class__.__name__ == "SSLSocket" else "http"
    shown = f"[{host!s}]" if ":" in str(host) else str(host)
    log.info("listening on %s://%s:%d%s", scheme, shown, port,
             getattr(server.RequestHandlerClass, "metrics_path", "/metrics"))
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0
