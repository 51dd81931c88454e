"""Fetching status pages: timeouts, size cap, auth, TLS, one reused connection.

Every failure becomes a FetchError whose message is one line that says what
happened and what to do about it.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections import namedtuple
from urllib.parse import urlsplit

from apache_metrics_exporter import __version__
from apache_metrics_exporter.errors import FetchError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Dict, Optional, Tuple

USER_AGENT = f"apache-metrics-exporter/{__version__}"


class Target(namedtuple(
        "Target",
        "url timeout max_bytes user password headers ca_file client_cert client_key "
        "insecure",
        defaults=(5.0, 16 * 1024 * 1024, None, None, (), None, None, None, False))):
    """Where a status page lives and how to ask for it."""

    # url: str  # the HTML page; ?auto is derived from it
    # timeout: float = 5.0
    # max_bytes: int = 16 * 1024 * 1024
    # user: Optional[str] = None
    # password: Optional[str] = None
    # headers: Tuple[Tuple[str, str], ...] = ()
    # ca_file: Optional[str] = None
    # client_cert: Optional[str] = None
    # client_key: Optional[str] = None
    # insecure: bool = False
    __slots__ = ()

    @property
    def auto_url(self) -> str:
        """The machine-readable page: ``?auto`` added to the status URL."""
        parts = urlsplit(self.url)
        query = parts.query
        if "auto" not in query.split("&"):
            query = f"{query}&auto" if query else "auto"
        return parts._replace(query=query, fragment="").geturl()


def host_port(url: str) -> tuple:
    """``(host, port)`` of a URL, the port defaulting by scheme (80, https 443)."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def check_url(url: str) -> str:
    """Validate a status URL up front (a usage error, before any fetch)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url {url!r}: expected http://HOST[:PORT]/server-status "
                         "or https://...")
    try:
        _ = parts.port  # raises for a port out of range
    except ValueError:
        raise UsageError(f"--url {url!r}: the port is not a number between 0 and 65535") from None
    return url


def parse_header(text: str) -> Tuple[str, str]:
    """``NAME:VALUE`` from --header."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n") or "\n" in value:
        raise UsageError(f"--header {text!r}: expected NAME:VALUE, e.g. 'Host: www.example.org'")
    return name, value.strip()


class Fetcher:
    """Fetches pages of one target, keeping the connection open between requests."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._https = urlsplit(target.url).scheme == "https"
        self.host, self.port = host_port(target.url)
        self._conn: Optional[http.client.HTTPConnection] = None
        self._headers: Dict[str, str] = {"User-Agent": USER_AGENT, "Accept": "*/*"}
        if target.user is not None:
            import base64  # only with basic auth

            token = f"{target.user}:{target.password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        for name, value in target.headers:
            self._headers[name] = value

    # -- connection --------------------------------------------------------
    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is not None:
            return self._conn
        if self._https:
            self._conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.target.timeout, context=self._tls())
        else:
            self._conn = http.client.HTTPConnection(
                self.host, self.port, timeout=self.target.timeout)
        return self._conn

    def _tls(self) -> ssl.SSLContext:
        t = self.target
        try:
            ctx = ssl.create_default_context(cafile=t.ca_file)
            if t.client_cert:
                ctx.load_cert_chain(t.client_cert, t.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise FetchError(f"cannot load TLS files (--ca-file/--client-cert/--client-key): "
                             f"{_reason(exc)}") from None
        if t.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def is_local(self) -> bool:
        """Whether the URL's host is a loopback address of this machine (by
        address: a name counts only if everything it resolves to is loopback).
        Nothing is sent."""
        from apache_metrics_exporter.loopback import loopback_addresses

        return loopback_addresses(self.host) is not None

    def close(self) -> None:
        """Drop the connection (the next fetch opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- fetching ----------------------------------------------------------
    def get(self, url: str) -> bytes:
        """The body of a 200 answer for ``url``, or a FetchError saying why not."""
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
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue
                raise FetchError(f"{url}: the server closed the connection "
                                 f"({_reason(exc)}); is something else on that port?") from None
            except Exception as exc:  # mapped to one clear line below
                self.close()
                raise FetchError(self._explain(url, exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, path: str, url: str) -> bytes:
        conn = self._connect()
        conn.request("GET", path, headers=self._headers)
        resp = conn.getresponse()
        if resp.status != 200:
            body_hint = ""
            if resp.status in (301, 302, 303, 307, 308):
                body_hint = f" (redirect to {resp.getheader('Location')}); point --url there"
            elif resp.status == 401:
                body_hint = "; give --user and a password (--password-file)"
            elif resp.status == 403:
                body_hint = ("; allow this host in Apache's <Location /server-status> "
                             "(Require ip ...)")
            elif resp.status == 404:
                body_hint = "; is mod_status enabled with SetHandler server-status at that path?"
            resp.read(65536)
            self.close()  # don't reuse a connection after an error answer
            raise FetchError(f"{url} answered HTTP {resp.status} {resp.reason}{body_hint}")
        limit = self.target.max_bytes
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            self.close()
            raise FetchError(f"{url}: the answer is {length} bytes, more than "
                             f"--max-response-size ({limit}); raise it if that is expected")
        body = resp.read(limit + 1)
        if len(body) > limit:
            self.close()
            raise FetchError(f"{url}: the answer is larger than --max-response-size "
                             f"({limit} bytes); raise it if that is expected")
        if length and length.isdigit() and len(body) < int(length):
            self.close()
            raise FetchError(f"{url}: the answer was cut short (got {len(body)} of "
                             f"{length} bytes)")
        if not resp.isclosed():
            # Anything left over (there should be none) would corrupt the
            # next answer on this connection.
            self.close()
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        return body

    def _explain(self, url: str, exc: BaseException) -> str:
        where = f"{self.host}:{self.port}"
        if isinstance(exc, ConnectionRefusedError):
            return f"connection to {where} refused: is Apache running and listening there?"
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return (f"no answer from {url} within {self.target.timeout:g} s "
                    "(--timeout); Apache may be overloaded or hung")
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve host {self.host!r}: {exc.strerror or exc}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (f"TLS certificate of {where} not trusted ({exc.verify_message}); "
                    "give --ca-file, or --insecure to skip verification")
        if isinstance(exc, ssl.SSLError):
            hint = ""
            if "CERTIFICATE_REQUIRED" in str(exc) or "certificate required" in str(exc):
                hint = "; the server wants a client certificate (--client-cert/--client-key)"
            return f"TLS handshake with {where} failed: {_reason(exc)}{hint}"
        if isinstance(exc, http.client.IncompleteRead):
            return (f"{url}: the answer was cut short (got {len(exc.partial)} bytes, "
                    f"{exc.expected} more expected)")
        if isinstance(exc, http.client.HTTPException):
            return f"{url} did not answer with valid HTTP ({type(exc).__name__}: {exc}); " \
                   "is something else on that port?"
        if isinstance(exc, OSError):
            return f"cannot reach {where}: {_reason(exc)}"
        return f"{url}: {type(exc).__name__}: {exc}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
