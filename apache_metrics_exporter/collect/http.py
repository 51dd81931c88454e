"""Fetching status pages: a wall-clock deadline, size cap, auth, TLS, one
reused connection.

``--timeout`` bounds the whole fetch of a target, not each socket read: every
blocking socket call (connect, TLS handshake, send, each receive) waits at most
until the deadline, so a peer dripping one byte a second or sending endless
``100 Continue`` answers cannot hold a run longer than the timeout.

Every failure becomes a FetchError whose message is one line that says what
happened and what to do about it.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys
import time
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit, urlunsplit

from apache_metrics_exporter import __version__
from apache_metrics_exporter.collect import wire
from apache_metrics_exporter.errors import FetchError, UsageError
from apache_metrics_exporter.log import printable
from apache_metrics_exporter.records import NamedTuple
from apache_metrics_exporter.scrub import scrub
from apache_metrics_exporter.units import hostport

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    import ssl
    from typing import Any, Dict, Iterator, List, Optional, Tuple, Type

USER_AGENT = f"apache-metrics-exporter/{__version__}"
# socket.timeout is TimeoutError from Python 3.10 on, a sibling before.
_TIMEOUTS = (socket.timeout, TimeoutError)
POLLIN, POLLOUT = select.POLLIN, select.POLLOUT
# The longest wait poll takes (its timeout is a C int of milliseconds, 24.8
# days): --timeout may be up to 100 years, so a longer wait is several polls.
POLL_MAX_MS = 2**31 - 1
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)  # Linux: a socket made non-blocking


class Target(NamedTuple):
    """Where a status page lives and how to ask for it."""

    url: str  # the HTML page, without credentials; ?auto is derived from it
    timeout: float = 5.0  # seconds for the whole fetch of this target
    max_bytes: int = 16 * 1024 * 1024
    user: Optional[str] = None
    password: Optional[str] = None
    headers: Tuple[Tuple[str, str], ...] = ()
    ca_file: Optional[str] = None
    client_cert: Optional[str] = None
    client_key: Optional[str] = None
    insecure: bool = False

    @property
    def auto_url(self) -> str:
        """The machine-readable page: ``?auto`` added to the status URL."""
        parts = urlsplit(self.url)
        query = "&".join(_without_auto(parts.query) + ["auto"])
        return parts._replace(query=query, fragment="").geturl()


def _without_auto(query: str) -> List[str]:
    """The query's parameters but ``auto`` (also ``auto=...``), as mod_status names it."""
    return [p for p in query.split("&") if p and p.partition("=")[0] != "auto"]


def status_url(url: str) -> Tuple[str, Optional[str], Optional[str]]:
    """``(html_url, user, password)`` of a status URL as users write it.

    Peers' configurations name the ``?auto`` page (Telegraf ``urls``, collectd
    ``URL``, apache_exporter ``--scrape_uri``): ``auto`` is taken out of the
    query, so the HTML page is fetched from the result and ``?auto`` added for
    the other page. Credentials (``http://user:pw@host/``) are taken out too
    and returned apart (percent-decoded), so that no message or output built
    from the URL can show them; the fragment is dropped.
    """
    parts = urlsplit(url)
    user = password = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        name, sep, secret = userinfo.partition(":")
        if name or sep:
            user = unquote(name)
            password = unquote(secret) if sep else None
    query = "&".join(_without_auto(parts.query))
    return urlunsplit((parts.scheme, netloc, parts.path, query, "")), user, password


def redact(url: str) -> str:
    """``url`` with any ``user:password@`` shown as ``***@`` (for messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        # No scheme (a mistyped --url, "user:pw@host/..."): there is no telling
        # where a password would end, so everything up to the last @ goes.
        return "***@" + url.rpartition("@")[2] if "@" in url else url
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc = rest[:end]
    if "@" not in netloc:
        return url
    return f"{scheme}://***@{netloc.rpartition('@')[2]}{rest[end:]}"


REQUEST_FIELD = 63  # characters of a request line the scoreboard keeps (64 with NUL)


def shown_request(cut: str) -> str:
    """A request line as the worker table shows it: the scoreboard keeps the
    raw (cut) line and mod_status prints it through ap_escape_logitem, which
    writes ``"`` and ``\\`` as ``\\"`` and ``\\\\`` (the other characters it
    escapes, control and non-ASCII bytes, http.client never sends)."""
    return cut.replace("\\", "\\\\").replace('"', '\\"')


def request_line(url: str) -> str:
    """The request line a Fetcher's read of ``url`` shows in the worker table
    (``GET PATH?QUERY HTTP/1.1``, cut to what mod_status keeps): how the
    reaper and the client figures recognise the exporter's own reads."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return shown_request(f"GET {path} HTTP/1.1"[:REQUEST_FIELD])


# The reaper's reads carry ``ame=NONCE`` so that the worker table's row of
# its own read is told from anyone else's read of the same page. mod_status
# looks for its options by substring anywhere in the query (``auto``,
# ``refresh``, ``notable``: strstr on r->args): this name and hex values
# contain none of them, so the page is the one asked for without it.
NONCE_ARG = "ame"


def tagged(url: str, nonce: str) -> str:
    """``url`` with ``ame=NONCE`` first in its query: before the user's own
    arguments, where the worker table's 63-character cut keeps it longest."""
    parts = urlsplit(url)
    query = "&".join([f"{NONCE_ARG}={nonce}"] + [p for p in parts.query.split("&") if p])
    return parts._replace(query=query, fragment="").geturl()


def own_lines(url: str, nonce: str) -> Tuple[str, ...]:
    """How the worker table can show a read of ``tagged(url, nonce)``: its
    request line cut to the first 63 characters (Apache's default) or the
    last (``SeeRequestTail On``), each only while it still shows the whole
    nonce - a line without it could be anyone's read of the same URL. Empty
    when the nonce fits in neither (a URL of some 40 characters or more)."""
    parts = urlsplit(tagged(url, nonce))
    line = f"GET {parts.path or '/'}?{parts.query} HTTP/1.1"
    marker = f"{NONCE_ARG}={nonce}"
    out: List[str] = []
    for cut in (line[:REQUEST_FIELD], line[-REQUEST_FIELD:]):
        if marker in cut and shown_request(cut) not in out:
            out.append(shown_request(cut))
    return tuple(out)


def host_port(url: str) -> tuple:
    """``(host, port)`` of a URL, the port defaulting by scheme (80, https 443)."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def check_url(url: str) -> str:
    """Validate a status URL up front (a usage error, before any fetch)."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port out of range
    except ValueError:
        raise UsageError(f"--url {shown!r}: not a valid URL (the port must be a number "
                         "between 0 and 65535, an IPv6 address in [brackets])") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = ""
        if "://" not in url and "@" not in url and url[:1] not in ("", "/"):
            # "127.0.0.1:8080/server-status": the scheme forgotten.
            guess = "http://" + url
            try:
                parts = urlsplit(guess)
                ok = bool(parts.hostname) and parts.port is not None or \
                    ":" not in parts.netloc
            except ValueError:
                ok = False
            if ok:
                hint = f"; did you mean --url {guess}{'' if parts.path else '/server-status'}?"
        raise UsageError(f"--url {shown!r}: expected http://HOST[:PORT]/server-status "
                         f"or https://...{hint}")
    return url


def parse_header(text: str) -> Tuple[str, str]:
    """``NAME:VALUE`` from --header."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not wire.is_token(name) or any(c in value for c in "\r\n\0"):
        # The value may be a credential (Authorization: ...): name the header
        # by its first word only.
        first = (text.split() or [""])[0].partition(":")[0][:40]
        raise UsageError(f"--header {first!r}...: expected NAME:VALUE on one line, e.g. "
                         "'Host: www.example.org' (the value is not shown)")
    return name, value.strip()


TLS_FILE_MAX = 16 << 20  # a CA bundle is a few hundred kB


def tls_file_problem(path: str, option: str) -> Optional[str]:
    """Why the certificate, key or CA file ``path`` cannot be used, with the
    option that named it; None when it is a readable regular file.

    ssl loads these by path only, and opening a FIFO blocks until a writer
    comes, for ever. So they get the secret files' check first
    (paths.read_bounded: opened with O_NONBLOCK, fstat, regular files only),
    after resolving symlinks, which certificates often are (/etc/ssl/certs,
    Let's Encrypt's live/). ssl then opens the path again: a file swapped for
    a FIFO in that instant would still block. We accept that tiny window
    (only whoever can write there can use it) rather than copy private keys
    to a temporary file."""
    import os

    from apache_metrics_exporter.paths import Corrupt, read_bounded

    try:
        read_bounded(os.path.realpath(path), TLS_FILE_MAX)
    except FileNotFoundError:
        return f"{option} {path} does not exist"
    except Corrupt as exc:
        return f"{option} {path} {exc}: give a PEM file"
    except OSError as exc:
        return f"{option} {path} cannot be read: {exc.strerror or exc}"
    return None


def no_passphrase() -> bytes:
    """ssl's password callback for keys: an encrypted key is refused at once
    instead of OpenSSL prompting on the terminal (a service has none)."""
    raise ValueError("the key is encrypted: give a key without a passphrase")


# -- bounded sockets --------------------------------------------------------

class _Clock:
    """The deadline shared by a fetcher's sockets (time.monotonic seconds)."""

    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline = 0.0

    def left(self) -> float:
        """Seconds until the deadline; TimeoutError once it has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the --timeout deadline has passed")
        return left


if TYPE_CHECKING:
    _SocketBase = socket.socket
else:
    _SocketBase = object


class _Bounded(_SocketBase):
    """Mixin: a socket left non-blocking whose every call waits (in poll) at
    most until the deadline, so a dripping peer cannot stretch it.

    The deadline is checked before every call, even when the peer's bytes
    are already there: a peer sending endless interim answers fast enough
    that no read waits is cut at the deadline too. Setting the socket's
    timeout before each call instead, as this did, cost an ioctl(FIONBIO)
    per call and a poll even where the call would not block. A send is
    tried at once (an idle kept-alive connection takes a request without
    waiting); the first read after it waits first (the answer is not there
    yet), and so does a read after one that did not fill its buffer; a read
    after a full one is tried first (more is likely waiting)."""

    clock: _Clock
    _poller: Any = None  # select.poll of this socket, made at its first wait
    _events = 0  # what _poller waits for
    _read_first = False  # whether the next read is tried before any wait
    # A TLS socket's own buffer may hold what the next read returns: poll
    # cannot see it, so reads are always tried first there.
    _buffered = False
    # What a call that would block raises (a TLS socket adds its own).
    _BLOCKED: Tuple[Type[OSError], ...] = (BlockingIOError,)

    def _wait(self, events: int) -> None:
        """Until the socket is ready for ``events`` (POLLIN, POLLOUT), has an
        error or a hang-up (the next call says which), or the deadline has
        come: TimeoutError then (socket.timeout, as a timed socket raised)."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self, events)
            self._events = events
        elif events != self._events:
            poller.modify(self, events)
            self._events = events
        while True:
            left = self.clock.left() * 1000.0
            if poller.poll(min(left, POLL_MAX_MS)):  # ms, rounded up
                return
            if left <= POLL_MAX_MS:  # (else only poll's longest wait has passed)
                raise socket.timeout("timed out")

    def _needs(self, exc: OSError, events: int) -> int:
        """What to wait for after ``exc`` stopped a call that needs ``events``
        (a TLS socket may have to write to read, or read to write)."""
        return events

    def connect_within(self, address: Any) -> None:
        """connect, within the deadline (the socket is non-blocking)."""
        self.clock.left()
        err = self.connect_ex(address)
        if err in (errno.EINPROGRESS, errno.EINTR):  # under way
            self._wait(POLLOUT)
            err = self.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))  # (ConnectionRefusedError, ...)

    def _read(self, call: Any, size: int, args: tuple) -> Any:
        """``call(*args)`` (a read of ``size`` bytes) within the deadline."""
        self.clock.left()  # TimeoutError once the deadline has passed
        if not self._read_first:
            self._wait(POLLIN)
        while True:
            try:
                got = call(*args)
            except self._BLOCKED as exc:
                self._wait(self._needs(exc, POLLIN))
                continue
            self._read_first = self._buffered or \
                (got if isinstance(got, int) else len(got)) == size
            return got

    def recv(self, *args):  # noqa: ANN002,ANN201 - socket's signatures
        return self._read(super().recv, args[0], args)

    def recv_into(self, *args):  # noqa: ANN002,ANN201
        return self._read(super().recv_into, len(args) > 1 and args[1] or len(args[0]), args)

    def send(self, *args):  # noqa: ANN002,ANN201
        self.clock.left()
        while True:
            try:
                return super().send(*args)
            except self._BLOCKED as exc:
                self._wait(self._needs(exc, POLLOUT))

    def sendall(self, *args):  # noqa: ANN002,ANN201
        """All of ``args[0]`` (bytes), each send within the deadline (a wait
        only while the socket's send buffer is full)."""
        data, flags = args[0], args[1:]
        sent = self.send(data, *flags)
        if sent < len(data):
            with memoryview(data) as view:
                while sent < len(data):
                    sent += self.send(view[sent:], *flags)
        self._read_first = self._buffered  # the answer is not there yet


class _Socket(_Bounded, socket.socket):
    """A TCP socket bounded by a deadline."""


_TLS_SOCKET: Any = None


def _tls_socket_class() -> Any:
    """A TLS socket bounded by a deadline, the handshake included (made on
    first use: ``ssl`` is imported for https URLs only, 4 ms of a one-shot
    run otherwise)."""
    global _TLS_SOCKET
    if _TLS_SOCKET is None:
        import ssl

        class _TLSSocket(_Bounded, ssl.SSLSocket):
            _buffered = True
            _BLOCKED = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError)

            def _needs(self, exc: OSError, events: int) -> int:
                if isinstance(exc, ssl.SSLWantWriteError):
                    return POLLOUT
                if isinstance(exc, ssl.SSLWantReadError):
                    return POLLIN
                return events

            def do_handshake(self, *args):  # noqa: ANN002,ANN201
                while True:
                    self.clock.left()
                    try:
                        return super().do_handshake(*args)
                    except self._BLOCKED as exc:
                        self._wait(self._needs(exc, POLLIN))

        _TLS_SOCKET = _TLSSocket
    return _TLS_SOCKET


def _idna(host: str) -> str:
    """``host`` as sent in the Host header and looked up: a non-ASCII name in
    its IDNA form (as http.client and socket encode it). A name IDNA refuses
    (an empty label, one of more than 63 characters) is a failed lookup
    (socket.gaierror): socket's own encoding raised UnicodeError, which
    killed the lookup thread with a traceback and left the fetch waiting for
    the whole --timeout."""
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise socket.gaierror(socket.EAI_NONAME,
                              f"not a valid host name ({exc.__cause__ or exc})") from None


def _resolve(host: str, port: int, clock: _Clock) -> list:
    """getaddrinfo, within the deadline: a name is looked up in a thread that is
    abandoned if the resolver is slower than the time left."""
    try:
        # As bytes: socket encodes a str host with the idna codec, whose
        # import is 1 to 3 ms of a one-shot run; an address is ASCII.
        return socket.getaddrinfo(host.encode("ascii"), port, type=socket.SOCK_STREAM,
                                  flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeEncodeError):
        pass  # a name, not an address
    import threading

    result: list = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(_idna(host), port, type=socket.SOCK_STREAM))
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=lookup, name="resolve", daemon=True)
    thread.start()
    thread.join(clock.left())
    if not result:
        raise TimeoutError(f"looking up {host} took longer than --timeout")
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


def _open(host: str, port: int, clock: _Clock) -> _Socket:
    """A connected bounded socket to the first address of ``host`` that answers.

    Each address but the last may take its share of the time left to
    connect (the time left over the addresses not tried yet), so that one
    that drops the connection silently - an IPv6 route that goes nowhere
    while IPv4 answers - does not take the whole --timeout from the next
    one, as it did: the fetch timed out where curl answered."""
    error: Optional[OSError] = None
    addresses = _resolve(host, port, clock)
    for i, (family, type_, proto, _name, address) in enumerate(addresses):
        # Non-blocking from the start (no ioctl): every call waits in poll.
        sock = _Socket(family, type_ | _NONBLOCK, proto)
        left = len(addresses) - i
        if left > 1:
            sock.clock = _Clock()
            sock.clock.deadline = min(clock.deadline,
                                      time.monotonic() + clock.left() / left)
        else:
            sock.clock = clock
        try:
            if not _NONBLOCK:
                sock.setblocking(False)
            sock.connect_within(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            sock.close()
            if isinstance(exc, _TIMEOUTS):
                if sock.clock is clock or time.monotonic() >= clock.deadline:
                    raise
                exc = TimeoutError(f"connecting to {hostport(address[0], address[1])} "
                                   "timed out")
            error = exc
            continue
        sock.clock = clock
        return sock
    raise error or OSError(f"no address for {host}")


# Bytes asked of the socket per read: a big server's worker table (650 KB for
# 2,300 rows, sent in chunks of about 8 KB) cost 2.6-3.0 ms of CPU per fetch
# through http.client's 8 KiB buffer, 1.7-2.2 through 64 KiB reads.
READ_BUFFER = wire.READ_SIZE


class _Connection:
    """One kept-alive HTTP/1.1 connection: its bounded socket (TLS when given
    a context) and the reader of its answers."""

    __slots__ = ("sock", "reader", "_peer")

    def __init__(self, host: str, port: int, clock: _Clock,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        sock: Any = _open(host, port, clock)
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_hostname=host,
                                       do_handshake_on_connect=False)
                sock.clock = clock
                sock.do_handshake()
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.reader = wire.Reader(sock.recv)
        self._peer: Optional[str] = None

    def peer(self) -> Optional[str]:
        """The address that answers on this connection (asked of the socket
        once it is known: it cannot change while the connection lasts)."""
        if self._peer is None:
            try:
                self._peer = str(self.sock.getpeername()[0])
            except OSError:
                return None
        return self._peer

    def close(self) -> None:
        self.sock.close()


class Fetcher:
    """Fetches pages of one target, keeping the connection open between requests."""

    def __init__(self, target: Target) -> None:
        # config.targets() gives URLs in this form already; a Target made
        # elsewhere (a probe, a test) is brought to it here, so that the HTML
        # page is never fetched from an ?auto URL and no credentials stay in
        # the URL that snapshots and messages show.
        url, user, password = status_url(target.url)
        if url != target.url:
            if user is not None and target.user is None:
                target = target._replace(user=user, password=password)
            target = target._replace(url=url)
        self.target = target
        self._https = urlsplit(target.url).scheme == "https"
        self.host, self.port = host_port(target.url)
        self._conn: Optional[_Connection] = None
        # The address that answered the last request: what the process proof
        # checks (a name could resolve differently a second time).
        self.peer: Optional[str] = None
        self._clock = _Clock()
        self._shared_deadline = False
        self._headers: Dict[str, str] = {"User-Agent": USER_AGENT, "Accept": "*/*"}
        if target.user is not None:
            import base64  # only with basic auth

            token = f"{target.user}:{target.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        for name, value in target.headers:
            self._headers[name] = value
        self._requests: Dict[str, bytes] = {}  # path -> the request's bytes
        # The status line and Location of the last answer (check.py reports them).
        self.status, self.location = 0, ""

    # -- connection --------------------------------------------------------
    def _connect(self) -> _Connection:
        if self._conn is None:
            self._conn = _Connection(self.host, self.port, self._clock,
                                     self._tls() if self._https else None)
        return self._conn

    def _tls(self) -> ssl.SSLContext:
        import ssl

        t = self.target
        for path, option in ((t.ca_file, "--ca-file"), (t.client_cert, "--client-cert"),
                             (t.client_key, "--client-key")):
            why = path and tls_file_problem(path, option)
            if why:  # checked at every load: a loop outlives the file it started with
                raise FetchError(f"cannot load TLS files: {why}", reason="tls")
        try:
            ctx = ssl.create_default_context(cafile=t.ca_file)
            if t.client_cert:
                ctx.load_cert_chain(t.client_cert, t.client_key, password=no_passphrase)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise FetchError(f"cannot load TLS files (--ca-file/--client-cert/--client-key): "
                             f"{_reason(exc)}", reason="tls") from None
        if t.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.sslsocket_class = _tls_socket_class()
        return ctx

    def is_local(self) -> bool:
        """Whether the URL's host is a loopback address of this machine (by
        address: a name counts only if everything it resolves to is loopback).
        Nothing is sent."""
        from apache_metrics_exporter.collect.loopback import loopback_addresses

        return loopback_addresses(self.host) is not None

    def close(self) -> None:
        """Drop the connection (the next fetch opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- fetching ----------------------------------------------------------
    @contextmanager
    def deadline(self) -> Iterator[None]:
        """One ``--timeout`` for every page fetched inside the block (a target's
        whole fetch); outside such a block each get() has its own. A nested
        block keeps the outer deadline."""
        if self._shared_deadline:
            yield
            return
        self._clock.deadline = time.monotonic() + self.target.timeout
        self._shared_deadline = True
        try:
            yield
        finally:
            self._shared_deadline = False

    def get(self, url: str) -> bytes:
        """The body of a 200 answer for ``url``, or a FetchError saying why not
        (one line, control characters from the peer escaped, and any echo of
        a credential - a reason phrase or Location that repeats the
        Authorization header - scrubbed)."""
        if not self._shared_deadline:
            self._clock.deadline = time.monotonic() + self.target.timeout
        self.status, self.location = 0, ""
        try:
            return self._get(url)
        except FetchError as exc:
            raise FetchError(printable(scrub(str(exc)))) from None

    def _get(self, url: str) -> bytes:
        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        # A kept-alive connection the server has closed fails on first use:
        # retry once on a fresh connection before calling it a failure.
        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                return self._request(path, url)
            except FetchError:
                self.close()
                raise
            except (BrokenPipeError, ConnectionResetError) as exc:  # wire.Closed too
                self.close()
                if reused and attempt == 1:
                    continue
                raise FetchError(f"{url}: the server closed the connection "
                                 f"({_reason(exc)}); is something else on that port?") from None
            except wire.ProtocolError as exc:
                self.close()
                raise FetchError(self._explain(url, exc), reason="bad_response") from None
            except Exception as exc:  # mapped to one clear line below
                self.close()
                if reused and attempt == 1 and _reset_tls(exc):
                    continue
                raise FetchError(self._explain(url, exc)) from None
            except BaseException:
                # A stop (a loop's signal, Ctrl-C) in the middle of an answer:
                # never leave a half-read connection to the next fetch.
                self.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _request_bytes(self, path: str) -> bytes:
        """The request for ``path`` (kept: a loop asks for the same two)."""
        data = self._requests.get(path)
        if data is None:
            # A name IDNA refuses fails here as a lookup would (socket.gaierror,
            # told by _explain), not in the constructor.
            host = self.host if self.host.isascii() else _idna(self.host)
            host = hostport(host) if self.port == (443 if self._https else 80) \
                else hostport(host, self.port)
            try:
                data = wire.request(path, host, self._headers.items())
            except ValueError as exc:
                raise FetchError(f"cannot send the request: {exc}", reason="error") from None
            if len(self._requests) >= 8:
                self._requests.clear()
            self._requests[path] = data
        return data

    def _request(self, path: str, url: str) -> bytes:
        request = self._request_bytes(path)
        conn = self._connect()
        conn.sock.sendall(request)
        head = conn.reader.head()
        self.peer = conn.peer()
        self.status, self.location = head.status, head.get("location")
        if head.status != 200:
            body_hint = ""
            if head.status in (301, 302, 303, 307, 308):
                body_hint = (f" (redirect to {head.get('location')}); point --url there"
                             if head.get("location") else " (a redirect without a Location)")
            elif head.status == 401:
                body_hint = "; give --user and a password (--password-file)"
            elif head.status == 403:
                where = printable(urlsplit(url).path or "/")[:200]
                body_hint = (f"; allow this host in Apache's <Location {where}> "
                             "(Require ip ...)")
            elif head.status == 404:
                body_hint = "; is mod_status enabled with SetHandler server-status at that path?"
            if head.status == 400 and not self._https:
                try:
                    body = conn.reader.body(head, 65536)[0]
                except (wire.ProtocolError, OSError):
                    body = b""
                if any(text in body for text in PLAIN_TO_TLS):
                    self.close()
                    where = hostport(self.host, self.port)
                    raise FetchError(f"the server at {where} speaks TLS, not plain HTTP (it "
                                     f"answered HTTP 400 saying so): use "
                                     f"{_with_scheme(self.target.url, 'https')}",
                                     reason="http_error")
            self.close()  # don't reuse a connection after an error answer
            raise FetchError(f"{url} answered HTTP {head.status} {head.reason}{body_hint}",
                             reason="http_error")
        limit = self.target.max_bytes
        try:
            body, keep = conn.reader.body(head, limit)
        except wire.TooLarge as exc:
            self.close()
            if exc.length is not None:
                raise FetchError(f"{url}: the answer is {exc.length} bytes, more than "
                                 f"--max-response-size ({limit}); raise it if that is "
                                 "expected", reason="bad_response") from None
            raise FetchError(f"{url}: the answer is larger than --max-response-size "
                             f"({limit} bytes); raise it if that is expected",
                             reason="bad_response") from None
        if not keep or conn.reader.leftover:
            # Anything left over (there should be none) would corrupt the
            # next answer on this connection.
            self.close()
        return body

    def _speaks_plain_http(self) -> bool:
        """After a failed TLS handshake: whether the port answers a plain HTTP
        request with an HTTP answer that is not a TLS port's "use https"
        (OpenSSL only says "wrong version number", as for any other
        protocol). One request for the URL's path, no credentials, at most
        8 KiB read, within what is left of --timeout."""
        try:
            sock = _open(self.host, self.port, self._clock)
        except (OSError, TimeoutError):
            return False
        try:
            host = hostport(self.host) if self.port == 80 else hostport(self.host, self.port)
            path = urlsplit(self.target.url).path or "/"
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}"
                         f"\r\nConnection: close\r\n\r\n".encode("ascii", "replace"))
            answer = b""
            while len(answer) < 8192:
                chunk = sock.recv(8192 - len(answer))
                if not chunk:
                    break
                answer += chunk
            return answer.startswith(b"HTTP/") and not any(t in answer for t in PLAIN_TO_TLS)
        except (OSError, TimeoutError):
            return False
        finally:
            sock.close()

    def _explain(self, url: str, exc: BaseException) -> str:
        where = hostport(self.host, self.port)
        if isinstance(exc, ConnectionRefusedError):
            return f"connection to {where} refused: is Apache running and listening there?"
        if isinstance(exc, _TIMEOUTS):
            return (f"no complete answer from {url} within {self.target.timeout:g} s "
                    "(--timeout); Apache may be overloaded or hung, or the peer is "
                    "not Apache")
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve host {self.host!r}: {exc.strerror or exc}"
        ssl = sys.modules.get("ssl")  # (no TLS error without it)
        if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
            return (f"TLS certificate of {where} not trusted ({exc.verify_message}); "
                    "give --ca-file, or --insecure to skip verification")
        if ssl is not None and isinstance(exc, ssl.SSLError):
            # An alert (a client certificate wanted, a protocol refused) comes
            # from a TLS peer; only a record OpenSSL could not read is asked.
            spoke_tls = "ALERT" in str(exc.reason) or "CERTIFICATE" in str(exc.reason)
            if not spoke_tls and self._speaks_plain_http():
                return (f"the server at {where} answered in plain HTTP, not TLS: use "
                        f"{_with_scheme(self.target.url, 'http')}")
            hint = ""
            if "CERTIFICATE_REQUIRED" in str(exc) or "certificate required" in str(exc):
                hint = "; the server wants a client certificate (--client-cert/--client-key)"
            return f"TLS handshake with {where} failed: {_reason(exc)}{hint}"
        if isinstance(exc, wire.CutShort):
            return f"{url}: the answer was cut short ({exc})"
        if isinstance(exc, wire.ProtocolError):
            return f"{url} did not answer with valid HTTP ({exc}); " \
                   "is something else on that port?"
        if isinstance(exc, OSError):
            return f"cannot reach {where}: {_reason(exc)}"
        return f"{url}: {type(exc).__name__}: {exc}"


# What a TLS port answers to a plain HTTP request (HTTP 400): Apache's
# mod_ssl and nginx.
PLAIN_TO_TLS = (b"speaking plain HTTP to an SSL-enabled server port",
                b"The plain HTTP request was sent to HTTPS port")


def _with_scheme(url: str, scheme: str) -> str:
    """``url`` with another scheme (the user's URL, to copy into --url)."""
    return scheme + url[url.index(":"):]


def _reset_tls(exc: BaseException) -> bool:
    """Whether ``exc`` is how a TLS socket tells that the peer reset the
    connection before a write: ssl.SSLEOFError ("EOF occurred in violation
    of protocol"), where a plain socket raises ConnectionResetError. A
    kept-alive connection's request is sent again then, as after a reset
    plain connection (a firewall that forgot an idle connection resets it)."""
    ssl = sys.modules.get("ssl")  # (no TLS socket without it)
    return ssl is not None and isinstance(exc, ssl.SSLEOFError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
