"""A slowloris-style client for tests: connections that send their request a
header line at a time and never finish it, so each holds an Apache worker in
state R (reading the request).

Bounded on every side: at most MAX_CONNECTIONS connections, to a loopback
address only, for at most ``limit`` seconds, and every socket is closed when
it stops (``stop()``, leaving the ``with`` block, or the time limit).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import List, Optional

MAX_CONNECTIONS = 16


class Slowloris:
    """``connections`` slow requests from ``threads`` threads, one header line
    per connection every ``every`` seconds, from ``source`` (a loopback address
    of its own, so the server sees a client of its own)."""

    def __init__(self, port: int, connections: int = 4, threads: int = 2, every: float = 1.0,
                 limit: float = 60.0, host: str = "127.0.0.1",
                 source: Optional[str] = None) -> None:
        for address in (host, source or host):
            if not ipaddress.ip_address(address).is_loopback:
                raise ValueError(f"{address} is not a loopback address")
        if not 0 < connections <= MAX_CONNECTIONS or not 0 < threads <= connections:
            raise ValueError("1..16 connections, 1..connections threads")
        self.port, self.host, self.source = port, host, source
        self.connections, self.threads = connections, threads
        self.every, self.limit = every, limit
        self.sent = 0  # header lines sent, all connections
        self._stop = threading.Event()
        self._open = threading.Semaphore(0)  # released once per connection opened
        self._lock = threading.Lock()
        self._socks: List[socket.socket] = []
        self._workers: List[threading.Thread] = []
        self.errors: List[str] = []

    def start(self, timeout: float = 10.0) -> Slowloris:
        """Open every connection and send its first line; return once all are open."""
        share = [self.connections // self.threads + (i < self.connections % self.threads)
                 for i in range(self.threads)]
        for i, count in enumerate(share):
            t = threading.Thread(target=self._run, args=(i, count), daemon=True,
                                 name=f"slowloris-{i}")
            t.start()
            self._workers.append(t)
        deadline = time.monotonic() + timeout
        for _ in range(self.connections):
            if not self._open.acquire(timeout=max(0.0, deadline - time.monotonic())):
                self.stop()
                raise RuntimeError(f"slowloris: connections not open within {timeout} s: "
                                   f"{self.errors}")
        return self

    def _run(self, thread: int, count: int) -> None:
        socks = []
        try:
            for n in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                with self._lock:
                    self._socks.append(s)
                s.settimeout(5)
                if self.source:
                    s.bind((self.source, 0))
                s.connect((self.host, self.port))
                s.sendall(f"GET /?slowloris={thread}-{n} HTTP/1.1\r\n"
                          f"Host: {self.host}\r\n".encode())
                socks.append(s)
                self._open.release()
            end = time.monotonic() + self.limit
            line = 0
            while not self._stop.wait(self.every) and time.monotonic() < end:
                line += 1
                for s in socks:
                    s.sendall(f"X-Slow-{line}: {'a' * 8}\r\n".encode())
                    with self._lock:
                        self.sent += 1
        except OSError as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            for s in socks:
                s.close()

    def stop(self) -> None:
        """Stop sending and close every connection (idempotent)."""
        self._stop.set()
        for t in self._workers:
            t.join(timeout=10)
        with self._lock:
            for s in self._socks:
                s.close()

    def __enter__(self) -> Slowloris:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
