"""--listen's answer head and keep-alive rule, against what they replaced.

``_Handler._send`` formats an answer's head at once instead of through
http.server's send_response/send_header/end_headers; ``_Fields.keep_alive``
reads the fields in one pass instead of collecting the Connection tokens and
Content-Length values first. Both must give the same bytes and the same
verdict as before, for every answer the endpoint sends and any fields.
"""

from __future__ import annotations

import io
from http.server import BaseHTTPRequestHandler

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apache_metrics_exporter import endpoint
from apache_metrics_exporter.endpoint import _Fields, _Handler


class _Server:
    def answering(self, request: object) -> None:
        pass


class _Web:
    def __init__(self, headers: list) -> None:
        self.headers = headers


def _handler(version: str, command: str, close: bool, web: object) -> _Handler:
    h = _Handler.__new__(type("H", (_Handler,), {"web": web}))
    h.server = _Server()  # type: ignore[assignment]
    h.request = object()
    h.client_address = ("127.0.0.1", 1)
    h.requestline = f"{command} /metrics {version}"
    h.request_version = version
    h.command = command
    h.close_connection = close
    h.protocol_version = "HTTP/1.1" if version == "HTTP/1.1" and not close else "HTTP/1.0"
    h.wfile = io.BytesIO()
    return h


def _reference(h: _Handler, code: int, body: str, content_type: str, headers: list) -> bytes:
    """What the endpoint's _send wrote before: http.server's calls, the head
    and body in one write."""
    data = body.encode("utf-8")
    BaseHTTPRequestHandler.send_response(h, code)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(data)))
    if h.close_connection and h.protocol_version == "HTTP/1.1":
        h.send_header("Connection", "close")
    for name, value in headers:
        h.send_header(name, value)
    for name, value in h.web.headers if h.web is not None else ():
        h.send_header(name, value)
    body_out = b"" if h.command == "HEAD" else data
    if h.request_version == "HTTP/0.9":
        return body_out
    h._headers_buffer.append(b"\r\n")
    head = b"".join(h._headers_buffer)
    h._headers_buffer = []
    return head + body_out


WEBS = [None, _Web([]), _Web([("X-Frame-Options", "deny"),
                             ("Content-Security-Policy", "default-src 'self' caf\u00e9")])]


@pytest.mark.parametrize("version, command", [  # (an HTTP/0.9 request is a GET)
    ("HTTP/1.1", "GET"), ("HTTP/1.1", "HEAD"), ("HTTP/1.0", "GET"), ("HTTP/1.0", "HEAD"),
    ("HTTP/0.9", "GET")])
@pytest.mark.parametrize("close", [False, True])
@pytest.mark.parametrize("web", WEBS)
@pytest.mark.parametrize("code, body, content_type, headers", [
    (200, "# HELP a b\na 1\n", endpoint.CONTENT_TYPE, []),
    (200, "", endpoint.CONTENT_TYPE, []),
    (401, "authentication required\n", "text/plain; charset=utf-8",
     [("WWW-Authenticate", 'Basic realm="apache-metrics-exporter"')]),
    (404, "not found \u00e9\u20ac\n", "text/plain; charset=utf-8", []),
    (429, "too many requests\n", "text/plain; charset=utf-8", []),
    (599, "no reason phrase known\n", "text/plain; charset=utf-8", []),
])
def test_an_answer_is_the_bytes_http_server_wrote(version, command, close, web, code, body,
                                                  content_type, headers):
    ours, theirs = (_handler(version, command, close, web) for _ in range(2))
    ours._send(code, body, content_type, headers)
    assert ours.wfile.getvalue() == _reference(theirs, code, body, content_type, headers)
    assert ours.close_connection == theirs.close_connection
    assert not getattr(ours, "_headers_buffer", [])


def test_a_web_header_latin1_cannot_carry_fails_as_send_header_did():
    web = _Web([("Content-Security-Policy", "default-src \u20ac")])
    ours, theirs = _handler("HTTP/1.1", "GET", False, web), _handler("HTTP/1.1", "GET", False, web)
    with pytest.raises(UnicodeEncodeError) as got:
        ours._send(200, "x\n")
    with pytest.raises(UnicodeEncodeError) as want:
        _reference(theirs, 200, "x\n", endpoint.CONTENT_TYPE, [])
    assert str(got.value) == str(want.value)
    assert ours.wfile.getvalue() == b""  # nothing of the answer went out


def test_the_web_headers_follow_the_handler_s_configuration():
    first, second = _Web([("X-Frame-Options", "deny")]), _Web([("X-Frame-Options", "sameorigin")])
    cls = type("H", (_Handler,), {"web": first})
    for web, want in ((first, b"X-Frame-Options: deny\r\n"),
                      (second, b"X-Frame-Options: sameorigin\r\n")):
        cls.web = web
        h = _handler("HTTP/1.1", "GET", False, web)
        h.__class__ = cls
        h._send(200, "x\n")
        assert want in h.wfile.getvalue()


def _former_keep_alive(fields: _Fields) -> bool:
    tokens = {t.strip().lower() for t in ",".join(fields.get_all("Connection")).split(",")}
    lengths = [v.strip() for v in fields.get_all("Content-Length")]
    return ("close" not in tokens and "Transfer-Encoding" not in fields
            and lengths in ([], ["0"]))


_NAMES = st.sampled_from(["connection", "content-length", "transfer-encoding", "host", "x"])
_VALUES = st.lists(st.sampled_from(["close", "Close", " close ", "keep-alive", "", "0", " 0",
                                    "00", "1", "chunked", "\xa0close", "clo se", ","]),
                   max_size=4).map(",".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=6))
def test_keep_alive_in_one_pass_is_the_former_rule(items):
    fields = _Fields(items)
    assert fields.keep_alive() == _former_keep_alive(fields)
