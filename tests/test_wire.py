"""The HTTP/1.1 answer reader (collect/wire.py): exact on what servers send,
bounded on what hostile peers send, and the same as http.client (the
library it replaced, used here as the oracle) on every well-formed answer.

The reader is fed from a list of byte pieces, as a socket's recv would
return them; tests/test_http.py runs it over real sockets against real and
misbehaving peers."""

from __future__ import annotations

import http.client
import io
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apache_metrics_exporter.collect import wire


def reader(*pieces: bytes) -> wire.Reader:
    """A Reader whose socket returns ``pieces`` one per recv, then EOF."""
    left = [p[i:i + wire.READ_SIZE] for p in pieces for i in range(0, len(p), wire.READ_SIZE)]

    def recv(size: int) -> bytes:
        assert size == wire.READ_SIZE
        if not left:
            return b""
        piece = left.pop(0)
        assert len(piece) <= size  # (a socket never returns more than asked)
        return piece

    return wire.Reader(recv)


def answer(data: bytes, limit: int = 1 << 20) -> tuple:
    r = reader(data)
    head = r.head()
    body, keep = r.body(head, limit)
    return head, body, keep, r.leftover


# -- well-formed answers -------------------------------------------------------

def test_content_length_answer_keeps_the_connection():
    head, body, keep, left = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                                    b"Content-Type: text/plain\r\n\r\nhello")
    assert (head.status, head.reason, head.version) == (200, "OK", "HTTP/1.1")
    assert head.get("content-type") == "text/plain" and body == b"hello"
    assert keep and left == 0


def test_chunked_answer_with_extensions_and_trailers():
    data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=x\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: y\r\n\r\n")
    head, body, keep, left = answer(data)
    assert body == b"hello world" and keep and left == 0


def test_the_second_answer_on_the_connection_is_read_after_the_first():
    r = reader(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\n",
               b"Content-Length: 2\r\n\r\nbc")
    assert r.body(r.head(), 10) == (b"a", True)
    assert r.body(r.head(), 10) == (b"bc", True)
    with pytest.raises(wire.Closed):
        r.head()


@pytest.mark.parametrize("head,keep", [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 1\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", True),
    # chunked and a Content-Length: the length is ignored, the connection not reused
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n"
     b"1\r\nx\r\n0\r\n\r\n", False),
    # HTTP/1.0 knows no Transfer-Encoding: its framing may be faulty, whatever
    # the Connection header says (RFC 9112, 6.1)
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"1\r\nx\r\n0\r\n\r\n", False),
])
def test_when_the_connection_can_carry_another_request(head, keep):
    data = head if head.endswith(b"0\r\n\r\n") else head + b"x"
    assert answer(data)[1:3] == (b"x", keep)


def test_an_answer_without_length_ends_with_the_connection():
    head, body, keep, _ = answer(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    assert body == b"all of it" and not keep
    # A coding other than chunked last: also read to the end (RFC 9112, 6.3).
    assert answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz")[1:3] == (b"zz", False)


def test_interim_answers_are_skipped():
    head, body, _, _ = answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                              b"Link: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2"
                              b"\r\n\r\nok")
    assert head.status == 200 and body == b"ok" and "link" not in head.headers


def test_bare_lf_lines_folded_headers_and_repeated_headers():
    head, body, _, _ = answer(b"HTTP/1.1 302 Found\nLocation: https://x/a\n b: c\n"
                              b"Set-Cookie: a\nSet-Cookie: b\nContent-Length: 0\n\n")
    assert head.get("location") == "https://x/a\r\n b: c"  # as http.client kept it
    assert head.get("set-cookie") == "a, b" and body == b""


def test_a_byte_at_a_time():
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    r = reader(*(data[i:i + 1] for i in range(len(data))))
    assert r.body(r.head(), 10) == (b"abc", True)


# -- what hostile or broken peers send ------------------------------------------

@pytest.mark.parametrize("data,error,text", [
    (b"SSH-2.0-OpenSSH_9.2p1\r\n", wire.ProtocolError, "not an HTTP/1.x status line"),
    (b"HTTP/2.0 200 OK\r\n\r\n", wire.ProtocolError, "not an HTTP/1.x"),
    (b"HTTP/1.1 20 OK\r\n\r\n", wire.ProtocolError, "not an HTTP/1.x"),
    (b"HTTP/1.1 099 OK\r\n\r\n", wire.ProtocolError, "not an HTTP/1.x"),
    (b"HTTP/1.1 \xd9\xa200 OK\r\n\r\n", wire.ProtocolError, "not an HTTP/1.x"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", wire.ProtocolError, "101"),
    (b"", wire.Closed, "before any answer"),
    (b"HTTP/1.1 200 OK", wire.CutShort, "in the status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", wire.CutShort, "in the headers"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", wire.ProtocolError,
     "more than 100 headers"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n", wire.ProtocolError,
     "a line of more than 65536 bytes"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", wire.CutShort, "got 5 of 10 bytes"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", wire.ProtocolError,
     "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nx", wire.ProtocolError,
     "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\nx", wire.ProtocolError,
     "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", wire.ProtocolError,
     "invalid chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", wire.ProtocolError,
     "invalid chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef", wire.ProtocolError,
     "does not end where its size says"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", wire.CutShort, "got 2"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", wire.CutShort,
     "got 2"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n", wire.CutShort, ""),
])
def test_broken_answers_raise_what_they_are(data, error, text):
    with pytest.raises(error) as info:
        answer(data)
    assert text in str(info.value)


def test_the_body_is_never_read_past_the_limit():
    reads = []

    def recv(size):
        reads.append(size)
        return b"x" * size  # an endless body

    r = wire.Reader(recv)
    r._buf += b"HTTP/1.1 200 OK\r\n\r\n"
    with pytest.raises(wire.TooLarge) as info:
        r.body(r.head(), 200_000)
    assert info.value.length is None and len(reads) <= 200_000 // wire.READ_SIZE + 2
    with pytest.raises(wire.TooLarge) as info:  # announced: refused before reading it
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", limit=1000)
    assert info.value.length == 2000
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + \
        b"400\r\n" + b"x" * 1024 + b"\r\n" + b"ffffffffffff\r\n"
    with pytest.raises(wire.TooLarge):  # a huge chunk size is refused, not awaited
        answer(chunked, limit=4096)


def test_a_content_length_of_thousands_of_digits_is_too_large_not_a_crash():
    # int() refuses more than 4,300 digits with a ValueError, which the
    # fetcher could only show as "ValueError: Exceeds the limit ...".
    with pytest.raises(wire.TooLarge) as info:
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nx")
    assert info.value.length is None
    # Leading zeros are digits too (1*DIGIT): the length is 5.
    head, body, keep, left = answer(b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 5000 +
                                    b"5\r\n\r\nhello")
    assert (body, keep, left) == (b"hello", True, 0)


def test_many_tiny_chunks_take_memory_in_proportion_to_the_body():
    """A peer sending one-byte chunks must not make the reader hold much more
    than the body: a list of one-byte pieces costs some 130 bytes each."""
    import tracemalloc

    count = 32768
    data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
            b"1\r\nx\r\n" * count + b"0\r\n\r\n")
    r = reader(data)
    head = r.head()
    tracemalloc.start()
    try:
        body, keep = r.body(head, 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert body == b"x" * count and keep
    # The body, its copy, the buffer and one read in flight: a few times
    # READ_SIZE here, far below 130 bytes a chunk (4 MiB).
    assert peak < 2 * count + 4 * wire.READ_SIZE


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize("split", [1000, 5000, 70000])
def test_a_big_body_is_whole_and_in_order_whatever_its_chunks_and_reads(framing, split):
    """A body is gathered in pieces (small chunks into one, big ones as they
    are) and joined at its end: chunks of every size around that piece size
    (collect/wire.py's PIECE), in reads of every size, come out whole and in
    their order; bytes past a Content-Length body stay for the next answer."""
    body = bytes(range(256)) * 1500 + b"end"  # 384,003 bytes
    if framing == "chunked":
        sizes, chunks, at = [1, 4095, 4096, 10000, 3, 70000, 2, 4097], [], 0
        for size in itertools.cycle(sizes):
            if at >= len(body):
                break
            piece = body[at:at + size]
            chunks.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            at += size
        payload = b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunks) + b"0\r\n\r\n"
    elif framing == "length":
        payload = b"Content-Length: %d\r\n\r\n%s" % (len(body), body) + b"HTTP/1.1 next"
    else:
        payload = b"\r\n" + body
    data = b"HTTP/1.1 200 OK\r\n" + payload
    head, got, keep, left = answer_in(data, split)
    assert got == body
    assert left == (len(b"HTTP/1.1 next") if framing == "length" else 0)
    assert keep == (framing != "close")


def answer_in(data: bytes, split: int) -> tuple:
    """``answer`` with the peer's bytes arriving ``split`` bytes at a time."""
    r = reader(*[data[i:i + split] for i in range(0, len(data), split)])
    head = r.head()
    body, keep = r.body(head, 1 << 20)
    return head, body, keep, r.leftover


def test_endless_interim_answers_end_with_the_connection():
    # Each 1xx is bounded like any head; their number only by the deadline
    # (the socket's), so here by the peer closing.
    with pytest.raises(wire.Closed):
        answer(b"HTTP/1.1 100 Continue\r\n\r\n" * 1000)


# -- the request ------------------------------------------------------------------

def test_the_request_names_the_host_and_asks_for_no_compression():
    data = wire.request("/server-status?auto", "127.0.0.1:8080",
                        [("User-Agent", "ame/1"), ("Authorization", "Basic eDp5")])
    assert data == (b"GET /server-status?auto HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                    b"Accept-Encoding: identity\r\nUser-Agent: ame/1\r\n"
                    b"Authorization: Basic eDp5\r\n\r\n")
    given = wire.request("/", "127.0.0.1", [("host", "www.example.org"),
                                            ("Accept-Encoding", "gzip")])
    assert given == b"GET / HTTP/1.1\r\nhost: www.example.org\r\nAccept-Encoding: gzip\r\n\r\n"


@pytest.mark.parametrize("path,headers,text", [
    ("/a b", [], "a space"),
    ("/\x00", [], "control"),
    ("/é", [], "non-ASCII"),
    ("/", [("X-A", "secret\r\nX-Forged: 1")], "the value of the X-A header holds a line"),
    ("/", [("X-A", "s\0")], "NUL"),
    ("/", [("X A", "1")], "not a valid HTTP token"),
    ("/", [("X-A", "€")], "not Latin-1"),
])
def test_what_cannot_be_sent_is_refused_without_showing_the_value(path, headers, text):
    with pytest.raises(ValueError) as info:
        wire.request(path, "h", headers)
    assert text in str(info.value) and "secret" not in str(info.value)


# -- the same as http.client on every well-formed answer ------------------------------

class _FakeSocket:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def oracle(data: bytes) -> tuple:
    resp = http.client.HTTPResponse(_FakeSocket(data), method="GET")
    resp.begin()
    return resp.status, resp.reason, resp.read(), resp.will_close


_token = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ-0123456789"),
                 min_size=1, max_size=12).filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "connection"))
_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xff,
                               blacklist_characters="\x7f"), max_size=30)


@st.composite
def answers(draw):
    status = draw(st.sampled_from([200, 200, 200, 204, 301, 403, 404, 500]))
    reason = draw(st.sampled_from(["OK", "Found", "Forbidden", "Not Found", "", "Weird Reason"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    headers = draw(st.lists(st.tuples(_token, _value), max_size=8))
    body = b"" if status == 204 else draw(st.binary(max_size=3000))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    connection = draw(st.sampled_from([None, "close", "keep-alive"]))
    lines = [b"%s %d %s" % (version, status, reason.encode())]
    lines += [f"{n}: {v}".encode("latin-1") for n, v in headers]
    if connection:
        lines.append(b"Connection: " + connection.encode())
    if framing == "length" or status == 204:
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
        pieces = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)]) if b > a]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        payload = body
    data = b"\r\n".join(lines) + b"\r\n\r\n" + payload
    splits = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    pieces = [data[a:b] for a, b in zip([0] + splits, splits + [len(data)]) if b > a]
    return data, pieces


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers())
def test_the_same_status_reason_body_and_keep_alive_as_http_client(case):
    data, pieces = case
    r = reader(*pieces)
    head = r.head()
    body, keep = r.body(head, 1 << 20)
    status, reason, want, will_close = oracle(data)
    assert (head.status, head.reason, body) == (status, reason, want)
    # Where http.client keeps an HTTP/1.0 chunked answer's connection, the
    # reader does not (RFC 9112, 6.1: its framing may be faulty).
    faulty = data.startswith(b"HTTP/1.0") and b"Transfer-Encoding: chunked" in data
    assert keep == (not will_close and not faulty)
    assert r.leftover == 0


_ENDS = st.sampled_from([b"\r\n", b"\n", b"\r\r\n"])
_HEAD_LINES = st.one_of(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 404 Not Found", b"HTTP/1.1 100 Continue",
                     b"HTTP/1.1 103 Early Hints", b"HTTP/1.1 101 Switching", b"HTTP/1.1 20 x",
                     b"SSH-2.0-x", b"", b"\r", b" folded", b"\tfolded too", b"no colon",
                     b"Content-Length: 3", b"X: a", b"X:b", b"x : c", b"Y: \xe9\xff"]),
    st.binary(max_size=12))


@st.composite
def heads(draw):
    """Bytes that begin like answers (status lines, headers, interim heads,
    blank lines of every kind), often broken, then a few more bytes."""
    parts = []
    for line in draw(st.lists(_HEAD_LINES, max_size=14)):
        parts.append(line + draw(_ENDS))
    if draw(st.booleans()):
        parts.append(b"X: y\r\n" * draw(st.sampled_from([99, 100, 101])) + b"\r\n")
    return b"".join(parts) + draw(st.binary(max_size=8))


def _read_head(r: wire.Reader) -> tuple:
    try:
        got = r.head()
    except wire.ProtocolError as exc:  # (wire.Closed is a ConnectionResetError)
        return type(exc), str(exc)
    except wire.Closed as exc:
        return type(exc), str(exc)
    return got, r.read(1 << 20)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads())
def test_a_head_read_whole_is_the_head_read_line_by_line(data):
    """A head found whole in the buffer is read at once (Reader._whole); one
    that arrives a byte at a time is read line by line: the same head, the
    same error, the same bytes left for the body, whatever the bytes."""
    whole = _read_head(reader(data))
    by_byte = _read_head(reader(*(data[i:i + 1] for i in range(len(data)))))
    assert whole == by_byte


def test_a_head_longer_than_a_line_may_be_is_read_line_by_line():
    """The whole-head reading looks for the head's end within MAX_LINE bytes
    only: a longer head goes line by line, and its limits hold."""
    long_head = b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 40000 + b"\r\n" + \
        b"Z: " + b"z" * 40000 + b"\r\nContent-Length: 2\r\n\r\nok"
    head, body, keep, left = answer(long_head)
    assert len(head.get("x")) == 40000 and body == b"ok" and keep and left == 0
