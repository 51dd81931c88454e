"""A stand-in Apache for tests that need given page bytes on loopback: it
serves ``auto`` for ``?auto`` and ``html`` for anything else, on a free port
of 127.0.0.1, until the ``with`` block ends."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager
from typing import Iterator, Optional


@contextmanager
def serve_pages(auto: bytes, html: Optional[bytes] = None) -> Iterator[str]:
    """The status URL of a server answering ``auto`` / ``html`` (``auto`` for
    both when ``html`` is None: an ExtendedStatus Off server's HTML is not read)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            body = auto if html is None or "auto" in self.path else html
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/server-status"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
