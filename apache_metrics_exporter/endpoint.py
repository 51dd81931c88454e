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
by ``--timeout`` per target, since targets are collected concurrently. Slow
and idle clients cannot hold the endpoint (``_Server``): a request has
``REQUEST_DEADLINE`` in all to arrive, and a client still sending one gives
up its connection slot to a newcomer when all are taken. An HTTP/1.1 client
keeps its connection between scrapes (one thread and one accepted socket
per scraper, not per scrape): idle up to ``IDLE_DEADLINE`` for its next
request, which then has ``REQUEST_DEADLINE`` from its first byte; an idle
kept-alive connection is the first to give up its slot.
"""

from __future__ import annotations

import fnmatch
import hmac
import os
import select
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from apache_metrics_exporter.catalogue import BY_NAME
from apache_metrics_exporter.collect.wire import TCHAR
from apache_metrics_exporter.cycle import Cycle, report
from apache_metrics_exporter.errors import EXIT_OUTPUT, EXIT_USAGE, UsageError
from apache_metrics_exporter.log import DEBUG, log
from apache_metrics_exporter.units import hostport
from apache_metrics_exporter.webconfig import peer_allowed
from apache_metrics_exporter.writers import prometheus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence, Tuple

    from apache_metrics_exporter.collect.http import Fetcher, Target
    from apache_metrics_exporter.runconfig import RunConfig
    from apache_metrics_exporter.webconfig import WebConfig

DEFAULT_PORT = 9117
KEEP = 2  # idle connections kept per configured target (endpoint.Endpoint._idle)
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

    def __init__(self, config: RunConfig, targets: Sequence[Target]) -> None:
        self.targets = list(targets)
        self.settings = config.settings
        self.failures = 0
        self.cycle = Cycle(config)  # what is kept between scrapes
        self._lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_SCRAPES)
        self.allowed = [t.url for t in targets]
        self.patterns = list(config.probe_allow)
        # Connections to the configured targets kept between scrapes (at most
        # KEEP idle per target), as the loops keep theirs: a scrape costs no
        # new connection to Apache. Probed targets get a new one each time.
        self._idle: Dict[int, List[Fetcher]] = {}

    def _take(self, target: Target) -> Fetcher:
        from apache_metrics_exporter.collect.http import Fetcher

        with self._lock:
            idle = self._idle.get(id(target))
            if idle and any(t is target for t in self.targets):
                return idle.pop()
        return Fetcher(target)

    def _give(self, target: Target, fetcher: Fetcher) -> None:
        """Keep a configured target's connection for the next scrape."""
        if any(t is target for t in self.targets):
            with self._lock:
                idle = self._idle.setdefault(id(target), [])
                if len(idle) < KEEP:
                    idle.append(fetcher)
                    return
        fetcher.close()

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

    def scrape(self, targets: Sequence[Target], own_process: bool = False) -> str:
        """One exposition for these targets (never raises for a bad target);
        ``own_process``: with this process's process_* series and build info
        (/metrics, not /probe: a probe is about its target)."""
        from apache_metrics_exporter.collect.snapshot import Sample

        t0 = time.perf_counter()
        fetchers = [self._take(t) for t in targets]
        done = False
        try:
            # probes never reach the restart state
            snaps = self.cycle.collect(fetchers, remember=list(targets) == self.targets)
            done = True
        finally:
            # collect_all replaces a fetcher that timed out: these are the ones left
            for target, fetcher in zip(targets, fetchers):
                if done:
                    self._give(target, fetcher)
                else:
                    fetcher.close()
        for snap in snaps:
            report(snap)
        failed = sum(1 for s in snaps if not s.up)
        with self._lock:
            self.failures += failed
            total = self.failures
        own = [Sample(BY_NAME["scrape_failures_total"], total),
               Sample(BY_NAME["scrape_duration_seconds"], round(time.perf_counter() - t0, 6))]
        if own_process:
            from apache_metrics_exporter import selfmetrics

            own.extend(selfmetrics.samples())
        return prometheus.render(snaps, self.settings, own)


class _HeadTooLarge(Exception):
    """A request line and headers longer than MAX_HEAD bytes."""


class _HeadFile:
    """The connection's input, read a line at a time: at most MAX_HEAD bytes
    of request head, and a line cut short (the client left, or was dropped
    at its deadline) is an error, never half a request to answer."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.left = MAX_HEAD

    def readline(self, limit: int = -1) -> bytes:
        fresh = self.left == MAX_HEAD
        want = self.left + 1 if limit < 0 else min(limit, self.left + 1)
        line = self.raw.readline(want)
        self.left -= len(line)
        if self.left < 0:
            raise _HeadTooLarge
        if not line and fresh:
            return line  # closed before a request: nothing to answer
        if not line.endswith(b"\n") and len(line) < want:
            raise ConnectionAbortedError("closed in the middle of its request")
        return line

    def close(self) -> None:
        self.raw.close()


_CLOSE = "Connection: close\r\n"
MAX_FIELDS = 100  # header lines of one request (http.client's limit for http.server)
# The control characters a field value may not hold (all but HTAB); a field
# name is a token (wire.TCHAR).
_CTL = bytes(range(0x00, 0x09)) + bytes(range(0x0a, 0x20)) + b"\x7f"


class _Fields:
    """A request's header fields in their order (names in lower case), asked
    as http.server's message is: get (the first), get_all, ``in``."""

    __slots__ = ("_items",)

    def __init__(self, items: List[Tuple[str, str]]) -> None:
        self._items = items

    def get(self, name: str, default: Any = None) -> Any:
        key = name.lower()
        for k, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> List[str]:
        key = name.lower()
        return [v for k, v in self._items if k == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k == name.lower() for k, _ in self._items)

    def keep_alive(self) -> bool:
        """Whether these fields let an HTTP/1.1 connection be kept: no
        ``close`` among the Connection tokens (of every Connection field),
        no Transfer-Encoding, and no Content-Length but one of 0; in one
        pass over the fields."""
        lengths = []
        for name, value in self._items:
            if name == "connection":
                if any(t.strip().lower() == "close" for t in value.split(",")):
                    return False
            elif name == "transfer-encoding":
                return False
            elif name == "content-length":
                lengths.append(value.strip())
        return lengths in ([], ["0"])


class _Handler(BaseHTTPRequestHandler):
    """One connection, in its own thread: one request, or with HTTP/1.1 one
    after another on the kept-alive connection (as Prometheus scrapes), each
    with its whole deadline and head budget again (_Server.reading)."""

    server_version = "apache-metrics-exporter"
    sys_version = ""  # the Server header names no Python version

    def version_string(self) -> str:
        return self.server_version
    # A backstop per socket call; the deadlines that matter (request, answer)
    # are the server's (_Server.service_actions).
    timeout = 60
    endpoint: Endpoint
    metrics_path = "/metrics"
    auth: Optional[str] = None  # the expected Authorization header value
    web: Optional[WebConfig] = None  # --web.config.file
    server: _Server
    raw_requestline: bytes  # set by http.server's handle_one_request
    _headers_buffer: List[bytes]  # http.server's, of an answer's head (_send, send_error)

    def setup(self) -> None:
        super().setup()
        self._head = _HeadFile(self.rfile)
        self.rfile = self._head  # type: ignore[assignment]

    def handle(self) -> None:
        try:
            handshake = getattr(self.connection, "do_handshake", None)
            if handshake is not None:  # TLS: in this thread, under the request deadline
                handshake()
                sans = self.web.allowed_sans if self.web is not None else None
                if sans is not None and not peer_allowed(self.connection, sans):
                    log.debug("%s: client certificate has none of client_allowed_sans",
                              self.address_string())
                    return
            super().handle()
        except OSError as exc:  # a client that went away, was dropped or spoke no TLS
            log.debug("%s: %s", self.address_string(), _why(exc))

    _answered = False  # a request of this connection was answered: the next one waits

    def handle_one_request(self) -> None:
        if self._answered:
            # Kept alive: idle (the idle deadline) until the next request's
            # first byte, then one being read again, with the whole request
            # deadline (from that byte) and MAX_HEAD; the first to go when
            # room is needed either way.
            if not self.server.idle(self.request):
                self.close_connection = True  # dropped already
                return
            self.connection.settimeout(self.server.idle_deadline + self.timeout)
            try:
                waiting = self._head.raw.peek(1)
            finally:
                self.connection.settimeout(self.timeout)
            if not waiting or not self.server.reading(self.request):
                self.close_connection = True  # closed by the client, or dropped
                return
            self._head.left = MAX_HEAD
        self._answered = True
        # Answers are HTTP/1.0 (and the connection closed) unless the request
        # is an HTTP/1.1 one that may be kept alive (parse_request).
        self.protocol_version = "HTTP/1.0"
        self.requestline, self.request_version, self.command = "", "", ""
        try:
            super().handle_one_request()
        except _HeadTooLarge:
            self.close_connection = True
            self.send_error(431, f"request head longer than {MAX_HEAD} bytes")

    def parse_request(self) -> bool:
        """The request line as http.server reads it (Python 3.11's, with the
        version's digits checked as later releases do), then the head's
        fields read here, not by email.parser (a third of the request's
        handling): at most MAX_FIELDS lines, within MAX_HEAD in all
        (_HeadFile), each a token name, a colon and a value without control
        characters; anything else is refused (400), never skipped. False
        when the request was answered already (an error)."""
        self.command = None  # type: ignore[assignment]
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        if not requestline.strip(" \t"):
            return False
        # Words apart by one space each, printable ASCII only (as Go's
        # net/http reads it): str.split() would also take NBSP, VT, FF or
        # the separators \x1c-\x1f as spaces, and let NUL or ESC into the path.
        words = requestline.split(" ")
        if "" in words or not requestline.isascii() or not requestline.isprintable():
            self.send_error(400, "Bad request syntax")
            return False
        if len(words) >= 3:  # enough to tell the version
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                base_version_number = version.split("/", 1)[1]
                parts = base_version_number.split(".")
                if len(parts) != 2 or not all(p.isdigit() and len(p) <= 10 for p in parts):
                    raise ValueError
                version_number = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                self.send_error(400, f"Bad request version ({version!r})")
                return False
            if version_number >= (2, 0):
                self.send_error(505, f"Invalid HTTP version ({base_version_number})")
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(400, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2 and command != "GET":
            self.send_error(400, f"Bad HTTP/0.9 request type ({command!r})")
            return False
        self.command, self.path = command, path
        if self.path.startswith("//"):  # gh-87389: never an absolute URI without scheme
            self.path = "/" + self.path.lstrip("/")
        fields = self._fields()
        if fields is None:
            return False
        self.headers = fields  # type: ignore[assignment]
        # Keep-alive only for an HTTP/1.1 request that does not ask to close
        # and has no body (a body is never read: its bytes must not be taken
        # for the next request, so any sign of one closes the connection).
        if self.request_version == "HTTP/1.1" and fields.keep_alive():
            self.protocol_version = "HTTP/1.1"
            self.close_connection = False
        return True

    def _fields(self) -> Optional[_Fields]:
        """The head's fields, up to its empty line; None when refused (the
        answer is sent: 431 for too many, 400 for a line that is no field)."""
        found: List[Tuple[str, str]] = []
        while True:
            line = self.rfile.readline(MAX_HEAD + 1)  # _HeadFile: MAX_HEAD in all, 431
            if line in (b"\r\n", b"\n", b""):
                return _Fields(found)
            if len(found) >= MAX_FIELDS:
                self.send_error(431, "Too many headers", f"more than {MAX_FIELDS} header lines")
                return None
            if line.endswith(b"\r\n"):  # one line end, no more
                line = line[:-2]
            elif line.endswith(b"\n"):
                line = line[:-1]
            name, colon, value = line.partition(b":")
            value = value.lstrip(b" \t")
            if (not colon or not name or name.translate(None, TCHAR)
                    or len(value.translate(None, _CTL)) != len(value)):
                # A folded line (obs-fold), a name with spaces or without
                # a colon, a control character (a bare CR): refused, never
                # taken as the end of the head or as two fields.
                self.send_error(400, "Bad header line")
                return None
            found.append((name.decode("ascii").lower(), value.decode("iso-8859-1")))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # The one place where the -vv access-log line is formatted (only
        # when it is shown: every answer passes here).
        if log.level <= DEBUG:
            log.debug("%s %s", self.address_string(), format % args)

    _date = (0, "")  # (second, Date header text): one formatting per second

    def date_time_string(self, timestamp: Optional[float] = None) -> str:
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        second, text = _Handler._date
        if second != now:
            text = super().date_time_string(now)
            _Handler._date = (now, text)
        return text

    def _send(self, code: int, body: str, content_type: str = "text/plain; charset=utf-8",
              headers: Sequence[Tuple[str, str]] = ()) -> None:
        self.server.answering(self.request)
        data = body.encode("utf-8")
        # What send_response, send_header and end_headers would buffer (the
        # same lines, in the same order, each encoded as latin-1 as they do),
        # formatted at once: five calls and a list of encoded lines a scrape
        # cost more than the rest of the answer's Python.
        self.log_request(code)
        if self.request_version == "HTTP/0.9":  # no head (http.server's rule)
            if data and self.command != "HEAD":
                self.wfile.write(data)
            return
        message = self.responses[code][0] if code in self.responses else ""
        close = _CLOSE if self.close_connection and self.protocol_version == "HTTP/1.1" else ""
        lines = getattr(self, "_headers_buffer", None) or []
        lines.append(f"{self.protocol_version} {code} {message}\r\n"
                     f"Server: {self.version_string()}\r\n"
                     f"Date: {self.date_time_string()}\r\n"
                     f"Content-Type: {content_type}\r\n"
                     f"Content-Length: {len(data)}\r\n{close}".encode("latin-1", "strict"))
        for name, value in headers:
            lines.append(f"{name}: {value}\r\n".encode("latin-1", "strict"))
        if self.web is not None:
            lines.extend(self._web_lines())
        lines.append(b"\r\n")
        self._headers_buffer = []
        self.wfile.write(b"".join(lines) if self.command == "HEAD" else b"".join(lines) + data)

    # (the web configuration, its header lines encoded): _web_lines
    _web_head: Tuple[Optional[WebConfig], List[bytes]] = (None, [])

    def _web_lines(self) -> List[bytes]:
        """--web.config.file's response headers as send_header encodes them
        (one line at a time: a value latin-1 cannot carry fails as it did),
        encoded once per configuration."""
        web, lines = self._web_head
        if web is not self.web:
            lines = [f"{name}: {value}\r\n".encode("latin-1", "strict")
                     for name, value in self.web.headers]  # type: ignore[union-attr]
            type(self)._web_head = (self.web, lines)
        return lines

    def flush_headers(self) -> None:
        # (send_error's head; _send writes its head and body in one write)
        head = b"".join(getattr(self, "_headers_buffer", ()))
        self._headers_buffer = []
        if head:
            self.wfile.write(head)

    def _authorised(self) -> bool:
        """--listen-user, or basic_auth_users of --web.config.file (bcrypt);
        the web configuration's rate limit first, as the toolkit does."""
        web = self.web
        if web is not None and web.limiter is not None and not web.limiter.allow():
            self._send(429, "too many requests\n")
            return False
        if self.auth is None and (web is None or not web.users):
            return True
        given = self.headers.get("Authorization", "")
        if self.auth is not None:
            if hmac.compare_digest(given.encode("latin-1", "replace"), self.auth.encode()):
                return True
        elif web is not None:
            verdict = web.check_basic(given)
            if verdict is None:  # a request is held while checked: never all of them
                self._send(503, "too many password checks at once; try again\n")
                return False
            if verdict:
                return True
        self._send(401, "authentication required\n",
                   headers=[("WWW-Authenticate", 'Basic realm="apache-metrics-exporter"')])
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        # The request is complete: from here on the connection is not dropped
        # to make room, and the scrape takes what --timeout allows.
        if not self.server.working(self.request):
            self.close_connection = True
            return  # dropped at its deadline while the head was parsed
        if not self._authorised():
            return
        parts = urlsplit(self.path)
        if parts.path == self.metrics_path:
            self._scrape(self.endpoint.targets, own_process=True)
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

    def _scrape(self, targets: Sequence[Target], own_process: bool = False) -> None:
        if not self.endpoint.slots.acquire(blocking=False):
            self._send(503, f"more than {MAX_SCRAPES} scrapes at once; try again\n")
            return
        try:
            body = self.endpoint.scrape(targets, own_process)
        finally:
            self.endpoint.slots.release()
        self._send(200, body, CONTENT_TYPE)


def _why(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


MAX_CONNECTIONS = 64  # clients served at once
MAX_HEAD = 16 * 1024  # bytes of request line and headers
REQUEST_DEADLINE = 10.0  # seconds from accept to a complete request (TLS handshake included)
# Seconds a kept-alive connection may wait idle for its next request's first
# byte: longer than the scrape intervals people use (Prometheus' default is
# 1 m) and Prometheus' own idle-connection timeout (5 m), so a scraper keeps
# one connection; an idle connection is the first dropped when room is needed.
IDLE_DEADLINE = 330.0
ANSWER_DEADLINE = 30.0  # seconds to write an answer to a client that reads slowly
# The longest the accept loop sleeps towards a deadline: poll(2) takes at most
# 2**31-1 ms (24.8 days), and a longer wait raised OverflowError, which ended
# the loop (--listen-idle-deadline 30d). A day: one wake-up a day at most.
MAX_SLEEP = 86400.0

_IDLE, _READING, _WORKING, _ANSWERING = -1, 0, 1, 2  # (the lowest is dropped first)


class _Conn:
    """A client's address, phase and deadline (time.monotonic; None: none)."""

    __slots__ = ("peer", "phase", "since", "deadline")

    def __init__(self, peer: str, deadline: float) -> None:
        self.peer = peer
        self.phase = _READING
        self.since = time.monotonic()
        self.deadline: Optional[float] = self.since + deadline


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most MAX_CONNECTIONS of them, none of
    which a slow or idle client can hold.

    A connection first has ``request_deadline`` for its TLS handshake,
    request line and headers (in its own thread: the accept loop never waits
    for a client); kept alive (HTTP/1.1), it may wait ``idle_deadline`` for
    its next request and then has ``request_deadline`` again, from that
    request's first byte. When every slot is taken, a new connection takes
    the slot of a kept-alive one waiting idle (the longest idle first), else
    of the oldest one still sending its request - an idle, dripping or mute
    client - so a client that sends its request promptly is always served.
    A complete request is never dropped for room: it runs its scrape
    (bounded by --timeout, at most MAX_SCRAPES at once, others get 503), then
    has ANSWER_DEADLINE to take the answer. Dropping is a shutdown of the
    socket, which wakes its thread from any read or write; the thread closes
    it.

    The accept loop (serve_forever) sleeps until a connection arrives, the
    earliest deadline is due, or it is woken: by shutdown(), or by a
    connection whose new deadline is earlier than the loop's wake-up
    (_phase). An idle endpoint makes no system call at all - the stdlib's
    loop woke every poll interval (a quarter second), which between
    Prometheus' scrapes cost more CPU than the scrapes themselves - and a
    deadline is kept to the moment, not to the next poll.
    """

    daemon_threads = True
    request_queue_size = 128  # a burst of connections waits in the kernel, not refused
    request_deadline = REQUEST_DEADLINE
    idle_deadline = IDLE_DEADLINE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conns: Dict[Any, _Conn] = {}
        self._conns_lock = threading.Lock()
        # The accept loop's wake-up: a pipe it watches, and when it means to
        # wake by itself (None: no deadline ahead), under _conns_lock. (Made
        # first: a failed bind calls server_close from the constructor.)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_at: Optional[float] = None
        self._stop_asked = False
        self._stopped = threading.Event()
        self._stopped.set()
        super().__init__(*args, **kwargs)

    def serve_forever(self, poll_interval: float = 0.0) -> None:
        """Accept connections and drop the clients past their deadline until
        shutdown() (``poll_interval``: unused; the loop wakes when needed)."""
        import selectors

        self._stopped.clear()
        try:
            with selectors.PollSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stop_asked:
                    ready = selector.select(self._until_due())
                    if self._stop_asked:
                        break
                    for key, _events in ready:
                        if key.fileobj is self:
                            self._handle_request_noblock()  # type: ignore[attr-defined]
                        else:
                            _drain(self._wake_r)
                    self.service_actions()
        finally:
            self._stop_asked = False
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever and wait until it has (from another thread)."""
        self._stop_asked = True
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def _wake(self) -> None:
        """Wake the accept loop (a byte in its pipe)."""
        _poke(self._wake_w)

    def _until_due(self) -> Optional[float]:
        """Seconds until the earliest deadline (None: none ahead), noted as
        the loop's wake-up so that an earlier one set meanwhile wakes it; at
        most MAX_SLEEP (poll(2) takes no longer wait: the loop then wakes
        early, finds nothing due and sleeps again)."""
        with self._conns_lock:
            due = min((c.deadline for c in self._conns.values() if c.deadline is not None),
                      default=None)
            self._wake_at = due
        return None if due is None else min(max(0.0, due - time.monotonic()), MAX_SLEEP)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            if len(self._conns) >= MAX_CONNECTIONS and not self._make_room():
                full = True
            else:
                full = False
                self._conns[request] = _Conn(str(client_address[0]), self.request_deadline)
        if full:  # every slot is a complete request being answered
            log.debug("%s: %d clients already being answered; connection closed",
                      client_address[0], MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        try:
            threading.Thread(target=self.process_request_thread,
                             args=(request, client_address), daemon=True).start()
        except RuntimeError as exc:  # no thread to be had
            log.debug("%s: %s; connection closed", client_address[0], exc)
            self._forget(request)
            self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except OSError as exc:
            log.debug("%s: %s", client_address[0], _why(exc))
        except Exception as exc:  # a bug: one line, and the server goes on
            log.error("answering %s failed: %s: %s", client_address[0],
                      type(exc).__name__, _why(exc))
        finally:
            self._forget(request)
            self.shutdown_request(request)

    def _forget(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.pop(request, None)

    def _make_room(self) -> bool:
        """Drop the client that has been sending its request longest (else
        the slowest reader of an answer); False when none can go. Called
        with the lock held."""
        victim, oldest = None, (9, 0.0)
        for request, conn in self._conns.items():
            if conn.phase != _WORKING and (conn.phase, conn.since) < oldest:
                victim, oldest = request, (conn.phase, conn.since)
        if victim is None:
            return False
        self._drop(victim, "dropped to make room for a new connection")
        return True

    def _drop(self, request: Any, why: str) -> None:
        """Wake the connection's thread with a shutdown (it closes the socket:
        closing here could close a reused descriptor); its slot is free now."""
        peer = self._conns.pop(request).peer
        try:
            # socket.socket's own shutdown: ssl.SSLSocket's also unwraps,
            # under the feet of the thread in the middle of a read.
            socket.socket.shutdown(request, socket.SHUT_RDWR)
        except OSError:
            pass
        log.debug("%s: %s", peer, why)

    def service_actions(self) -> None:
        """Drop the clients past their deadline (from serve_forever)."""
        now = time.monotonic()
        with self._conns_lock:
            late = [(r, c) for r, c in self._conns.items()
                    if c.deadline is not None and c.deadline <= now]
            for request, conn in late:
                self._drop(request, f"kept alive and idle for {self.idle_deadline:g} s; "
                                    "connection closed" if conn.phase == _IDLE else
                           "no complete request within "
                           f"{self.request_deadline:g} s; connection closed"
                           if conn.phase == _READING else
                           f"did not take its answer within {ANSWER_DEADLINE:g} s; "
                           "connection closed")

    def _phase(self, request: Any, phase: int, deadline: Optional[float]) -> bool:
        with self._conns_lock:
            conn = self._conns.get(request)
            if conn is None:
                return False  # dropped already
            conn.phase, conn.since = phase, time.monotonic()
            conn.deadline = None if deadline is None else conn.since + deadline
            if conn.deadline is not None and (self._wake_at is None
                                              or conn.deadline < self._wake_at):
                self._wake_at = conn.deadline
                self._wake()  # the loop sleeps past this deadline
            return True

    def idle(self, request: Any) -> bool:
        """A kept-alive connection waits for the first byte of its next
        request: the idle deadline, from now; the first to go when room is
        needed. False if it was dropped already."""
        return self._phase(request, _IDLE, self.idle_deadline)

    def reading(self, request: Any) -> bool:
        """A kept-alive connection waits for its next request: the request
        deadline again, from now. False if it was dropped already."""
        return self._phase(request, _READING, self.request_deadline)

    def working(self, request: Any) -> bool:
        """The request is complete: no deadline while it is worked on, and it
        is not dropped for room. False if it was dropped already."""
        return self._phase(request, _WORKING, None)

    def answering(self, request: Any) -> None:
        """The answer is being written: ANSWER_DEADLINE for the client to take it."""
        self._phase(request, _ANSWERING, ANSWER_DEADLINE)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: connection failed", client_address[0])


def _auth_value(config: RunConfig) -> Optional[str]:
    if not config.listen_user:
        if config.listen_password_file or config.listen_password:
            raise UsageError("a --listen password was given but no --listen-user")
        return None
    from apache_metrics_exporter.config import read_secret

    password = config.listen_password
    if config.listen_password_file:
        password = read_secret(config.listen_password_file, "--listen-password-file")
    if not password:
        raise UsageError("--listen-user needs a password: --listen-password-file, "
                         "'listen-password = ...' in the config file, or "
                         "APACHE_METRICS_LISTEN_PASSWORD")
    import base64

    token = base64.b64encode(f"{config.listen_user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


class Listeners:
    """The endpoint's servers: one per --listen address (or systemd socket),
    sharing one Endpoint, serving and stopping together."""

    def __init__(self, servers: Sequence[_Server]) -> None:
        self.servers = list(servers)


def make_server(config: RunConfig, targets: Sequence[Target]) -> Listeners:
    """The bound servers (UsageError when an address, the web configuration
    or the TLS files are wrong; nothing is left bound then)."""
    path = config.telemetry_endpoint or "/metrics"
    if not path.startswith("/"):
        raise UsageError(f"--telemetry.endpoint {path!r}: a path starting with /")
    web = None
    if config.web_config_file:
        from apache_metrics_exporter.webconfig import load

        web = load(config.web_config_file)
        if web.users and (config.listen_user or config.listen_password_file
                          or config.listen_password):
            raise UsageError("basic auth is set twice: by --listen-user and by "
                             "basic_auth_users of --web.config.file; keep one")
        if web.ssl_context is not None and (config.listen_cert_file or config.listen_key_file):
            raise UsageError("TLS is set twice: by --listen-cert-file and by "
                             "tls_server_config of --web.config.file; keep one")
    handler = type("Handler", (_Handler,), {
        "endpoint": Endpoint(config, targets),
        "metrics_path": path, "auth": _auth_value(config), "web": web})
    ctx = web.ssl_context if web is not None and web.ssl_context is not None \
        else _tls_context(config)
    attributes: Dict[str, Any] = {
        "request_deadline": config.listen_request_deadline or REQUEST_DEADLINE,
        "idle_deadline": config.listen_idle_deadline or IDLE_DEADLINE}
    servers: List[_Server] = []
    try:
        if config.systemd_socket:
            for sock in _systemd_sockets():
                cls = type("Server", (_Server,), {**attributes, "address_family": sock.family})
                server = cls(sock.getsockname()[:2], handler, bind_and_activate=False)
                server.socket.close()
                server.socket = sock
                servers.append(server)
        else:
            for given in _addresses(config.listen):
                host, port = parse_listen(given)
                cls = type("Server", (_Server,), {
                    **attributes, "address_family": socket.AF_INET6 if ":" in host
                    else socket.AF_INET})
                try:
                    servers.append(cls((host, port), handler))
                except OSError as exc:
                    raise UsageError(f"--listen {given}: cannot listen on {hostport(host, port)}: "
                                     f"{exc.strerror}") from None
    except BaseException:
        for server in servers:
            server.server_close()
        raise
    if ctx is not None:
        # No handshake on accept: it happens in the connection's thread
        # (_Handler.handle), under its deadline, never in the accept loop.
        for server in servers:
            server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
    return Listeners(servers)


def _addresses(given: Any) -> List[str]:
    """--listen's addresses: a list (repeatable option), a text (a caller that
    set one), each given once."""
    items = [given] if isinstance(given, str) else list(given or ())
    return list(dict.fromkeys(items)) or [""]


SD_LISTEN_FDS_START = 3


def _systemd_sockets() -> List[socket.socket]:
    """The listening sockets systemd passed (LISTEN_PID, LISTEN_FDS), as
    sd_listen_fds(3) finds them; UsageError when there are none."""
    pid, count = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    if pid != str(os.getpid()) or not count.isdigit() or int(count) < 1:
        raise UsageError("--web.systemd-socket: systemd passed no socket (LISTEN_FDS); start "
                         "it from a .socket unit, or give --listen")
    out = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise UsageError(f"--web.systemd-socket: descriptor {fd}: {exc.strerror}") from None
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET,
                                                                  socket.AF_INET6):
            sock.detach()
            raise UsageError(f"--web.systemd-socket: descriptor {fd} is not a TCP socket")
        out.append(sock)
    return out


def _tls_context(config: RunConfig) -> Any:
    """The server's TLS context, None without --listen-cert-file."""
    if not config.listen_cert_file:
        if config.listen_key_file:
            raise UsageError("--listen-key-file needs --listen-cert-file")
        return None
    import ssl

    from apache_metrics_exporter.collect.http import no_passphrase, tls_file_problem

    for given, option in ((config.listen_cert_file, "--listen-cert-file"),
                          (config.listen_key_file, "--listen-key-file")):
        why = given and tls_file_problem(given, option)
        if why:  # a FIFO would block ssl's own open for ever
            raise UsageError(why)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(config.listen_cert_file, config.listen_key_file,
                            password=no_passphrase)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise UsageError(f"cannot load --listen-cert-file/--listen-key-file: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    return ctx


def serve(listeners: Listeners) -> int:
    """Answer scrapes on every server until SIGTERM or SIGINT; then stop them
    all cleanly (exit 0). An accept loop that fails (an exception: a bug)
    stops them all too, with exit 1: a supervisor restarts a process that
    failed, where one port left closed, or an exit 0, would go unnoticed."""
    servers = listeners.servers

    def stop(signum: int, frame: object) -> None:
        for server in servers:
            threading.Thread(target=server.shutdown, daemon=True).start()

    woken_r, woken_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    earlier = signal.set_wakeup_fd(woken_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = []
    ended: List[_Server] = []  # serving loops that have returned
    failed: List[_Server] = []  # ... of them, those that ended by an exception
    stopping = False
    for server in servers:
        # One line at the default level (-q hides it): where, and for what.
        host, port = server.server_address[:2]
        scheme = "https" if server.socket.__class__.__name__ == "SSLSocket" else "http"
        shown = hostport(str(host))
        handler = server.RequestHandlerClass
        endpoint = getattr(handler, "endpoint", None)
        urls = [t.url for t in getattr(endpoint, "targets", ())]  # no userinfo; log scrubs
        patterns = getattr(endpoint, "patterns", ())
        log.notice("listening on %s://%s:%d%s for %s%s", scheme, shown, port,
                   getattr(handler, "metrics_path", "/metrics"),
                   ", ".join(urls) or "no configured target",
                   f"; /probe?target= for URLs matching {', '.join(patterns)}" if patterns
                   else "")
        thread = threading.Thread(target=_serving, args=(server, woken_w, ended, failed),
                                  daemon=True)
        thread.start()
        threads.append(thread)
    try:
        # The main thread sleeps until a signal or a serving thread's end
        # wakes it: a signal caught by any thread writes to the wake-up
        # pipe (signal.set_wakeup_fd), and the handler runs here once the
        # wait returns - no timed wake-ups to look for either.
        waiting = select.poll()
        waiting.register(woken_r, select.POLLIN)
        while len(ended) < len(threads):
            waiting.poll()
            _drain(woken_r)
            if failed and not stopping:  # the others too (said by _serving)
                stopping = True
                stop(signal.SIGTERM, None)
        for thread in threads:
            thread.join()  # (each is past its loop: in its last lines)
    finally:
        signal.set_wakeup_fd(earlier)
        os.close(woken_r)
        os.close(woken_w)
        for server in servers:
            server.server_close()
    return EXIT_OUTPUT if failed else 0


def _serving(server: _Server, woken: int, ended: List[_Server],
             failed: List[_Server]) -> None:
    """serve_forever, then the server added to ``ended`` (and to ``failed``,
    said in one line, when the loop raised) and a byte in ``woken``
    (serve's wait: the thread itself is still alive then)."""
    try:
        server.serve_forever()
    except Exception as exc:
        failed.append(server)
        host, port = server.server_address[:2]
        log.error("the endpoint's accept loop on %s:%d failed (%s: %s); stopping (exit 1)",
                  hostport(str(host)), port, type(exc).__name__, _why(exc))
    finally:
        ended.append(server)
        _poke(woken)


def _poke(fd: int) -> None:
    """A byte into a wake-up pipe (non-blocking: a full pipe already wakes
    its reader; a closed one has none)."""
    try:
        os.write(fd, b"\0")
    except OSError:
        pass


def _drain(fd: int) -> None:
    """Empty a non-blocking wake-up pipe."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def run_endpoint(config: RunConfig, targets: List[Target]) -> int:
    """--listen: serve scrapes until SIGTERM/SIGINT."""
    try:
        server = make_server(config, targets)
    except UsageError as exc:
        message = str(exc)
        if "Address already in use" in message:  # who holds it, and what to do
            from apache_metrics_exporter.check import listen_failure

            message = listen_failure(message, config.options.exe_names, run=True)[2]
        log.error("%s", message)
        return EXIT_USAGE
    return serve(server)
