"""Hostile HTTP peers on loopback: they answer, but never finish answering.

Each accepts connections on a free port of 127.0.0.1, reads the request, sends
``head`` at once and then ``drip`` again and again, ``chunk`` bytes every
``pause`` seconds, until the test closes it. ``requested`` is set once a request
(or, for a TLS peer, a ClientHello) has arrived: a readiness signal for tests
that must act in the middle of a fetch.
"""

from __future__ import annotations

import itertools
import socket
import threading
from typing import List


class DripPeer:
    """A peer that sends ``head``, then drips ``drip`` for ever."""

    def __init__(self, head: bytes = b"", drip: bytes = b"x", chunk: int = 1,
                 pause: float = 0.1, scheme: str = "http") -> None:
        self.head, self.drip, self.chunk, self.pause = head, drip, chunk, pause
        self.scheme = scheme
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.requested = threading.Event()
        self.sent = 0  # bytes dripped so far, over all connections
        self.conns: List[socket.socket] = []
        self.threads: List[threading.Thread] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/server-status"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            conn.recv(65536)  # the request (or a TLS ClientHello)
            self.requested.set()
            conn.sendall(self.head)
            source = itertools.cycle(self.drip)
            while not self.stop.wait(self.pause):
                piece = bytes(itertools.islice(source, self.chunk))
                conn.sendall(piece)
                self.sent += len(piece)
        except OSError:
            pass  # the client gave up: that is the point

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for conn in self.conns:
            conn.close()
        for thread in self.threads:
            thread.join(5)
        self.sock.close()

    def __enter__(self) -> DripPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The ways to never finish an answer that tests/test_http.py and
# tests/test_loops.py run against: (name, DripPeer keyword arguments).
NEVER_FINISHING = [
    ("status-line", dict(drip=b"HTTP/1.1 200 OK")),
    ("headers", dict(head=b"HTTP/1.1 200 OK\r\n", drip=b"X-Slow: a")),
    ("body", dict(head=b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
                  drip=b"BusyWorkers: 1\n")),
    ("endless-100-continue", dict(drip=b"HTTP/1.1 100 Continue\r\n\r\n", chunk=25,
                                  pause=0.005)),
    # A TLS record header announcing a 16 KB handshake message, then a byte
    # at a time: the handshake never completes.
    ("tls-handshake", dict(head=b"\x16\x03\x03\x40\x00", drip=b"\x02", scheme="https")),
]
