"""HTTP/1.1 on the wire, client side: a GET request's bytes, and the answer
read from a socket with every part bounded.

The collector used ``http.client``; on the one-shot path its import (with
``email`` for the headers and ``ssl``) cost about a fifth of a bare fetch,
and each answer's headers went through ``email``'s feed parser. A status
page needs a small part of HTTP/1.1: one GET, a status line, headers, and a
body sized by Content-Length, chunked, or the end of the connection. This
module reads exactly that, from peers that may be hostile:

- a line (status, header, chunk size, trailer) is at most MAX_LINE bytes,
  a head at most MAX_HEADERS headers, interim (1xx) answers are skipped but
  each is bounded the same way;
- the body is never read past ``limit`` + 1 bytes (the caller's
  --max-response-size), whatever the peer announces;
- anything that is not HTTP/1.x raises ProtocolError, a body that ends early
  CutShort, a connection closed before any answer Closed (a kept-alive
  connection the server dropped: the caller retries once);
- the socket's own deadline (collect/http.py's bounded sockets) bounds the
  time: this module never waits on its own.

Obsolete line folding is kept as it is ("value\\r\\n continued"), as
http.client kept it: callers print header values through log.printable.
"""

from __future__ import annotations

import re

from apache_metrics_exporter.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

MAX_LINE = 65536  # http.client's _MAXLINE: a header line, a chunk-size line
MAX_HEADERS = 100  # http.client's _MAXHEADERS, per head
READ_SIZE = 65536  # bytes asked of the socket per read (see collect/http.py)


class ProtocolError(Exception):
    """The peer's answer is not HTTP/1.x as a status page is sent."""


class CutShort(ProtocolError):
    """The answer ended (the connection closed) before its announced end:
    ``got`` bytes of a body of ``expected`` (None: unknown), or ``where``."""

    def __init__(self, got: int, expected: Optional[int] = None, where: str = "") -> None:
        super().__init__(where or (f"got {got} of {expected} bytes" if expected is not None
                                   else f"got {got} bytes of the body"))
        self.got, self.expected = got, expected


class TooLarge(ProtocolError):
    """The body is larger than the caller's limit (``length``: as announced)."""

    def __init__(self, length: Optional[int]) -> None:
        super().__init__("larger than the limit")
        self.length = length


class Closed(ConnectionResetError):
    """The connection closed before the status line: on a kept-alive
    connection, the server's keep-alive timeout; else not an HTTP server."""


class Head(NamedTuple):
    """A final answer's status line and headers (names lower-cased; a
    repeated header's values joined with ", ", as http.client did)."""

    version: str
    status: int
    reason: str
    headers: Dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        """The value of a header (``name`` lower case), or ``default``."""
        return self.headers.get(name, default)


# The bytes of a header field name (an RFC 9110 token).
TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def is_token(text: str) -> bool:
    """Whether ``text`` can be a header name (RFC 9110 token characters)."""
    return bool(text) and text.isascii() and not text.encode("ascii").translate(None, TCHAR)


def request(path: str, host: str, headers: Iterable[Tuple[str, str]]) -> bytes:
    """The bytes of ``GET path HTTP/1.1`` with a Host header (unless
    ``headers`` carry one) and ``headers``; ValueError, naming the header but
    not its value (it may be a credential), for what cannot be sent."""
    if not path.isascii() or any(c <= " " or c == "\x7f" for c in path):
        raise ValueError("the URL holds a space, a control or a non-ASCII character: "
                         "percent-encode it (a space is %20)")
    lines = [f"GET {path} HTTP/1.1"]
    given = [(name, value) for name, value in headers]
    names = {name.lower() for name, _ in given}
    if "host" not in names:
        lines.append(f"Host: {host}")
    if "accept-encoding" not in names:
        lines.append("Accept-Encoding: identity")  # never compressed: read as is
    for name, value in given:
        if not is_token(name):
            raise ValueError(f"the header name {name[:40]!r} is not a valid HTTP token")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"the value of the {name} header holds a line break or NUL")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"the value of the {name} header is not Latin-1 text") from None
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


# The end of a head: its first empty line ("\n", or "\r"s then "\n").
_HEAD_END = re.compile(rb"\n\r*\n")


def _status(text: str) -> Tuple[str, int, str]:
    """(version, status, reason) of a status line (its end taken off), or
    ProtocolError when it is not an HTTP/1.x one."""
    version, _, rest = text.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 \
            or not code.isascii() or not code.isdigit() or code[0] == "0":
        shown = text[:60] + ("..." if len(text) > 60 else "")
        raise ProtocolError(f"its first line is {shown!r}, not an HTTP/1.x status line")
    return version, int(code), reason


# A body is gathered in pieces joined once at its end (one copy into a
# bytes of the exact size). Appending each read or chunk to one bytearray
# grew it by an eighth at a time, a growth being a copy of all of it or,
# past malloc's mmap threshold, fresh pages from the kernel: a 650 KB
# worker table in 84 chunks cost some 300 page faults a fetch. A piece
# holds at least PIECE bytes (smaller chunks are gathered into one first),
# so the list's own cost stays under 1 % of the body: a peer sending
# one-byte chunks cannot make it hold many times --max-response-size.
PIECE = 4096


class _Body:
    """A body being read: its pieces and its size so far."""

    __slots__ = ("pieces", "small", "size")

    def __init__(self) -> None:
        self.pieces: List[bytes] = []
        self.small = bytearray()  # bytes not yet a piece (fewer than PIECE)
        self.size = 0

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if len(data) >= PIECE:
            if self.small:
                self.pieces.append(bytes(self.small))
                self.small.clear()
            self.pieces.append(data)
        elif data:
            self.small += data
            if len(self.small) >= PIECE:
                self.pieces.append(bytes(self.small))
                self.small.clear()

    def join(self) -> bytes:
        """The whole body (one copy)."""
        if self.small:
            self.pieces.append(bytes(self.small))
            self.small.clear()
        return self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)


class Reader:
    """Reads one connection's answers: ``head()``, then ``body()``. Bytes
    read past an answer stay for the next one (``leftover``)."""

    __slots__ = ("_recv", "_buf")

    def __init__(self, recv: Any) -> None:
        self._recv = recv  # a socket's recv (bounded by its deadline)
        self._buf = bytearray()

    @property
    def leftover(self) -> int:
        """Bytes received beyond the answers read so far."""
        return len(self._buf)

    def _more(self) -> bool:
        chunk = self._recv(READ_SIZE)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def _take(self, count: int) -> bytes:
        """The first ``count`` bytes of the buffer, taken out of it (one copy;
        a bytearray drops its front in place)."""
        with memoryview(self._buf) as view:
            out = bytes(view[:count])
        del self._buf[:count]
        return out

    def line(self) -> bytes:
        """The next line with its end ("\\n"), at most MAX_LINE bytes; what
        is left, maybe b"", if the connection closes first."""
        buf = self._buf
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end >= 0:
                if end >= MAX_LINE:
                    break
                return self._take(end + 1)
            if len(buf) >= MAX_LINE:
                break
            start = len(buf)
            if not self._more():
                return self._take(len(buf))
        raise ProtocolError(f"a line of more than {MAX_LINE} bytes")

    def read(self, count: int) -> bytes:
        """The next ``count`` bytes; fewer only if the connection closes.
        Bytes read past them stay in the buffer (``leftover``)."""
        buf = self._buf
        if len(buf) >= count:
            return self._take(count)
        body = _Body()
        body.add(self._take(len(buf)))
        while body.size < count:
            chunk = self._recv(READ_SIZE)
            if not chunk:
                break
            wanted = count - body.size
            if len(chunk) > wanted:
                buf += chunk[wanted:]
                chunk = chunk[:wanted]
            body.add(chunk)
        return body.join()

    def _texts(self) -> Iterator[str]:
        """The head's next lines, read one by one, as text without their ends."""
        while True:
            raw = self.line()
            if not raw.endswith(b"\n"):
                raise CutShort(0, where="the connection closed in the headers")
            yield raw.decode("latin-1").rstrip("\r\n")

    @staticmethod
    def _fold(texts: Iterator[str]) -> Dict[str, str]:
        """The headers of these lines, up to the blank one that ends them (at
        most MAX_HEADERS: no line is asked for past that)."""
        headers: Dict[str, str] = {}
        last: Optional[str] = None
        for _, text in zip(range(MAX_HEADERS + 1), texts):
            if not text:
                return headers
            if text[0] in " \t":  # obsolete folding: part of the last header
                if last is not None:
                    headers[last] += "\r\n" + text
                continue
            name, sep, value = text.partition(":")
            if not sep:
                last = None
                continue  # not a header line (http.client's email parser lost it too)
            name = name.lower()  # ("Name :" is no header this module knows: ignored)
            value = value.strip(" \t")
            headers[name] = headers[name] + ", " + value if name in headers else value
            last = name
        raise ProtocolError(f"more than {MAX_HEADERS} headers")

    def _whole(self) -> Optional[List[str]]:
        """The lines of the next head, as text without their ends, when all of
        it is in the buffer (after one read, if the buffer was empty) within
        its first MAX_LINE bytes, taken out of the buffer at once; else None,
        nothing taken, and head() reads it line by line: the same answer
        either way (a head of ten lines: 2 reads of the buffer, not 11)."""
        buf = self._buf
        if not buf and not self._more():
            raise Closed("before any answer")
        end = _HEAD_END.search(buf, 0, MAX_LINE)
        if end is None:
            return None
        return [line.rstrip("\r") for line in
                self._take(end.end()).decode("latin-1").split("\n")[:-1]]

    def head(self) -> Head:
        """The status line and headers of the next final answer (interim
        1xx answers skipped). Closed if the connection ends before a byte."""
        while True:
            lines = self._whole()
            texts: Iterator[str]
            if lines is not None:
                texts = iter(lines)
                version, status, reason = _status(next(texts))
            else:
                raw = self.line()
                if not raw:
                    raise Closed("before any answer")
                version, status, reason = _status(raw.decode("latin-1").rstrip("\r\n"))
                if not raw.endswith(b"\n"):
                    raise CutShort(0, where="the connection closed in the status line")
                texts = self._texts()
            headers = self._fold(texts)
            if status == 101:
                raise ProtocolError("it answered 101 Switching Protocols to a GET")
            if status >= 200:
                return Head(version, status, reason.strip(), headers)

    def body(self, head: Head, limit: int) -> Tuple[bytes, bool]:
        """The body of ``head``'s answer and whether the connection can carry
        another request (False: the answer ends with the connection, or the
        server said Connection: close). TooLarge past ``limit`` bytes."""
        connection = head.get("connection").lower()
        if head.version != "HTTP/1.0":
            keep = "close" not in connection
        else:  # HTTP/1.0 keeps the connection only if it says so (as http.client reads it)
            keep = "keep-alive" in connection or "keep-alive" in head.headers or \
                "keep-alive" in head.get("proxy-connection").lower()
        if head.status in (204, 304):
            return b"", keep
        coding = head.get("transfer-encoding").lower()
        if coding:
            if coding.rsplit(",", 1)[-1].strip() != "chunked":
                # Not chunked last: the body ends with the connection (RFC 9112, 6.3).
                return self._until_close(limit), False
            # With chunked, a Content-Length is ignored; with it, or in an
            # HTTP/1.0 answer (which knows no Transfer-Encoding), the framing
            # may be faulty: the connection is not trusted with another
            # request (RFC 9112, 6.1).
            return self._chunked(limit), keep and "content-length" not in head.headers \
                and head.version != "HTTP/1.0"
        length = head.get("content-length")
        if not length:
            return self._until_close(limit), False
        values = {v.strip() for v in length.split(",")}
        if len(values) != 1 or not all(v.isdigit() and v.isascii() for v in values):
            raise ProtocolError(f"an invalid Content-Length: {length[:40]!r}")
        # int() refuses more than 4,300 digits (a ValueError, not a size):
        # past 18, the length is beyond any limit whatever its value.
        digits = values.pop().lstrip("0") or "0"
        size = int(digits) if len(digits) <= 18 else None
        if size is None or size > limit:
            raise TooLarge(size)
        data = self.read(size)
        if len(data) < size:
            raise CutShort(len(data), size)
        return data, keep

    def _until_close(self, limit: int) -> bytes:
        body = _Body()
        body.add(self._take(len(self._buf)))
        while body.size <= limit:
            chunk = self._recv(READ_SIZE)
            if not chunk:
                break
            body.add(chunk)
        if body.size > limit:
            raise TooLarge(None)
        return body.join()

    def _chunked(self, limit: int) -> bytes:
        body = _Body()
        buf = self._buf
        while True:
            raw = self.line()
            if not raw.endswith(b"\n"):
                raise CutShort(body.size)
            size_text = raw.split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 15 or \
                    size_text.strip(b"0123456789abcdefABCDEF"):
                raise ProtocolError(f"an invalid chunk size line: {raw[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            if body.size + size > limit:
                raise TooLarge(None)
            while len(buf) < size + 2 and self._more():  # the chunk and its CRLF
                pass
            if len(buf) < size:
                raise CutShort(body.size + len(buf))
            body.add(self._take(size))
            end = buf[:2]
            if end == b"\r\n":
                del buf[:2]
            elif end[:1] == b"\n":  # a bare LF ends the chunk too
                del buf[:1]
            elif len(end) < 2:
                raise CutShort(body.size)
            else:
                raise ProtocolError("a chunk does not end where its size says")
        for _ in range(MAX_HEADERS + 1):  # trailers: read and dropped
            raw = self.line()
            if not raw.endswith(b"\n"):
                raise CutShort(body.size)
            if raw in (b"\r\n", b"\n"):
                return body.join()
        raise ProtocolError(f"more than {MAX_HEADERS} trailer lines")
