"""A stand-in Apache for tests that need given page bytes on loopback: it
serves ``auto`` for ``?auto`` and ``html`` for anything else, on a free port
of 127.0.0.1, until the ``with`` block ends."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

# What a stand-in answers a GET with: (status, extra headers, body).
Answer = Tuple[int, Sequence[Tuple[str, str]], bytes]


@contextmanager
def serve_pages(auto: bytes, html: Optional[bytes] = None) -> Iterator[str]:
    """The status URL of a server answering ``auto`` / ``html`` (``auto`` for
    both when ``html`` is None: an ExtendedStatus Off server's HTML is not read)."""
    with serve_many_pages(auto, html, 1) as urls:
        yield urls[0]


@contextmanager
def serve_many_pages(auto: bytes, html: Optional[bytes], count: int) -> Iterator[List[str]]:
    """``count`` such servers, each on a port of its own; stopped together
    (each takes up to half a second to notice: fifty in a row took 25 s)."""
    def answer(request: http.server.BaseHTTPRequestHandler) -> Answer:
        return 200, (), auto if html is None or "auto" in request.path else html

    with serve_answers(answer, count=count) as urls:
        yield urls


@contextmanager
def serve_answer(answer: Callable[[http.server.BaseHTTPRequestHandler], Answer],
                 on_connect: Optional[Callable[[Tuple[str, int]], None]] = None
                 ) -> Iterator[str]:
    """The status URL of one stand-in whose every GET ``answer`` decides (a
    peer that echoes headers, redirects, ...); ``on_connect`` is told of each
    new connection (a test counting them)."""
    with serve_answers(answer, on_connect) as urls:
        yield urls[0]


@contextmanager
def serve_answers(answer: Callable[[http.server.BaseHTTPRequestHandler], Answer],
                  on_connect: Optional[Callable[[Tuple[str, int]], None]] = None,
                  count: int = 1) -> Iterator[List[str]]:
    """``count`` stand-ins answering with ``answer``, on free loopback ports,
    HTTP/1.1 with keep-alive; stopped together when the block ends."""
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            if on_connect is not None:
                on_connect(self.client_address)
            super().setup()

        def do_GET(self) -> None:  # noqa: N802
            status, headers, body = answer(self)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    servers: List[http.server.ThreadingHTTPServer] = []
    threads: List[threading.Thread] = []
    try:
        for _ in range(count):
            servers.append(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler))
            threads.append(threading.Thread(target=servers[-1].serve_forever, daemon=True))
            threads[-1].start()
        yield [f"http://127.0.0.1:{s.server_address[1]}/server-status" for s in servers]
    finally:
        stops = [threading.Thread(target=s.shutdown, daemon=True) for s in servers]
        for stop in stops:
            stop.start()
        for stop, thread in zip(stops, threads):
            stop.join(5)
            thread.join(5)
        for server in servers:
            server.server_close()
