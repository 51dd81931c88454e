"""Page servers and silent targets on loopback, for the batch benchmark.

One separate process (so its CPU is never counted as the exporter's, and the
benchmark's own process stays idle) listens on ``pages`` free ports of
127.0.0.1 (or ``host``) that answer like mod_status with captured real pages (the ``?auto``
page for a query containing ``auto``, the HTML page otherwise; keep-alive as
Apache does), and on ``silent`` ports that accept connections and never
answer a byte. It prints the ports as one JSON line and runs until its stdin
is closed.

    with PageServers(auto_bytes, html_bytes, pages=9, silent=2) as servers:
        servers.urls, servers.silent_urls
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

SERVER = r'''
import asyncio, json, os, socket, struct, sys

AUTO = open(sys.argv[1], "rb").read()
HTML = open(sys.argv[2], "rb").read()
PAGES, SILENT, HOST = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]


def answer(body):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=ISO-8859-1\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


READY = {True: answer(AUTO), False: answer(HTML)}
RESET = struct.pack("ii", 1, 0)


def close(writer):
    # With a reset: the client that closed first then leaves no TIME_WAIT
    # socket either. Hundreds of batches a minute would otherwise fill the
    # socket table that every collection of ours reads, far beyond what a
    # host's agent (one batch per interval) leaves there.
    try:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    except OSError:
        pass
    writer.close()


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0]
            writer.write(READY[b"auto" in line])
            await writer.drain()
            if b"connection: close" in head.lower():
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        close(writer)


async def silent(reader, writer):
    # Accept and never answer; hold the connection until the client leaves.
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    finally:
        close(writer)


async def main():
    servers = []
    for handler, count in ((serve, PAGES), (silent, SILENT)):
        for _ in range(count):
            servers.append(await asyncio.start_server(handler, HOST, 0, backlog=64))
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps({"pages": ports[:PAGES], "silent": ports[PAGES:]}), flush=True)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(sys.stdin.fileno(),
                    lambda: done.done() or (sys.stdin.buffer.read1(4096) or done.set_result(1)))
    await done
    # Leave at once: kept-alive connections (a scraper's) would otherwise be
    # torn down by a closed event loop, printing "Event loop is closed".
    sys.stdout.flush()
    os._exit(0)


asyncio.run(main())
'''


class PageServers:
    """``pages`` page servers and ``silent`` silent targets in one child process."""

    def __init__(self, auto: Path, html: Path, pages: int, silent: int,
                 python: str = sys.executable, host: str = "127.0.0.1") -> None:
        self.argv = [python, "-c", SERVER, str(auto), str(html), str(pages), str(silent), host]
        self.host = host
        self.proc: subprocess.Popen = None  # type: ignore[assignment]
        self.urls: List[str] = []
        self.silent_urls: List[str] = []

    def __enter__(self) -> PageServers:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True)
        try:
            line = self.proc.stdout.readline()
            ports = json.loads(line)
        except (ValueError, OSError):
            self.__exit__()
            raise RuntimeError("the page server did not start") from None
        url = f"http://{self.host}:{{}}/server-status"
        self.urls = [url.format(p) for p in ports["pages"]]
        self.silent_urls = [url.format(p) for p in ports["silent"]]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()   # its signal to stop
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)
        self.proc.stdout.close()
        self.proc = None
