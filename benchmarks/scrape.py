"""Per-cycle CPU of the long-running modes, side by side with apache_exporter.

Three long-running exporters read the same private Apache:

- Debian's ``prometheus-apache-exporter`` (Go; reads only the ``?auto`` page),
  scraped over HTTP on a free loopback port;
- ours with ``--listen`` (reads ``?auto``, the HTML worker table and the
  processes), scraped the same way;
- ours with ``--execd`` (Telegraf's ``signal = "STDIN"``), one line per cycle.

The CPU each one uses is read from /proc/PID/stat (user + system, all its
threads) before and after a round of cycles; the exporters take turns round
after round and the median per-cycle figure is kept, so a busy phase of the
machine hits all of them alike.

The big server is an event-MPM Apache with ServerLimit x ThreadsPerChild
slots and thousands of slow requests in flight (``/embedded?sleep=N``, the
harness's WSGI app; a bounded number of loopback connections that send one
request each and are closed at the end), so its worker table has that many
busy rows.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import statistics
import struct
import subprocess
import tempfile
import time
import urllib.request
from typing import Dict, List, Optional, Sequence

from measure import Failed, idle_cpu, one_line, proc_cpu, stop_group

from tests.harness.apache import free_port

APACHE_EXPORTER = os.environ.get("APACHE_EXPORTER_BIN", "/usr/bin/prometheus-apache-exporter")

# 36 processes x 64 threads started at once and never reaped as spare: room
# for 2,304 requests in flight (ServerLimit leaves room for 4 more processes).
BIG_MPM_CONF = """
StartServers 36
ServerLimit 40
ThreadsPerChild 64
ThreadLimit 64
MaxRequestWorkers 2560
MinSpareThreads 64
MaxSpareThreads 2560
MaxConnectionsPerChild 0
"""


class Exporter:
    """A long-running exporter process; ``cycle()`` makes it collect once."""

    name = ""
    proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cycle(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.proc is None:
            return
        stop_group(self.proc, 5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None


class HttpExporter(Exporter):
    """An exporter scraped over HTTP on a loopback port; ``up`` is the line
    that shows it read the server."""

    def __init__(self, name: str, argv: List[str], port: int, up: bytes,
                 env: Optional[dict] = None, timeout: float = 20) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.port = port
        self.conn: Optional[http.client.HTTPConnection] = None
        self.up = up
        self.err = tempfile.TemporaryFile()  # not a pipe: it could fill and block
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=self.err,
                                         env=env, start_new_session=True)
        except OSError as exc:
            self.err.close()
            raise Failed(f"cannot start {argv[0]}: {exc}") from None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                status, why = self.proc.returncode, self.why()
                self.close()
                raise Failed(f"{argv[0]} exited {status}: {why}")
            try:
                self.cycle()
                return
            except (OSError, http.client.HTTPException, Failed) as exc:
                if time.monotonic() > deadline:
                    why = one_line(str(exc))
                    self.close()
                    raise Failed(f"no good answer on {self.url}: {why}") from None
                time.sleep(0.05)

    def why(self) -> str:
        """The last line it wrote on stderr."""
        self.err.seek(0)
        return one_line(self.err.read().decode("utf-8", "replace"))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        super().close()
        self.err.close()

    def cycle(self) -> None:
        # One kept-alive connection, as Prometheus scrapes (both exporters
        # keep it; ours answered HTTP/1.0 and closed before issue 23's second
        # round): a new one per scrape would leave a TIME_WAIT socket each,
        # hundreds a second, in the table that ours reads.
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            self.conn.request("GET", "/metrics")
            answer = self.conn.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        if answer.status != 200:
            raise Failed(f"{self.name}: HTTP {answer.status}")
        if self.up not in body:
            raise Failed(f"{self.name}: no {self.up.decode()!r} in its answer")


class ExecdExporter(Exporter):
    """Ours with --execd: a line on stdin, a batch of Influx lines back."""

    def __init__(self, name: str, argv: List[str], env: Optional[dict] = None) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1,
                                     start_new_session=True)
        self.cycle()

    def cycle(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise Failed(f"{self.name}: output ended")
            if line.startswith("apache_exporter,"):
                if "up=1i" not in line:
                    raise Failed(f"{self.name}: {line.strip()[:100]}")
                return


def per_cycle(exporters: Sequence[Exporter], rounds: int, budget: float = 0.6) -> Dict:
    """{name: (CPU ms per cycle, wall ms per cycle)}, medians over ``rounds``
    interleaved rounds; each round is about ``budget`` seconds of its
    exporter's wall time (at least 5 cycles), so a CPU tick is a small error.
    An exporter that fails is reported as {name: Failed}."""
    cycles: Dict[str, int] = {}
    out: Dict[str, object] = {}
    live = []
    for e in exporters:
        try:
            for _ in range(3):  # the first cycles import and connect
                e.cycle()
            t0 = time.perf_counter()
            for _ in range(3):
                e.cycle()
            wall = (time.perf_counter() - t0) / 3
            cycles[e.name] = max(5, min(300, int(budget / max(wall, 1e-4))))
            live.append(e)
        except (OSError, http.client.HTTPException, Failed) as exc:
            out[e.name] = Failed(one_line(str(exc)))
    samples: Dict[str, list] = {e.name: [] for e in live}
    for _ in range(rounds):
        for e in list(live):
            n = cycles[e.name]
            try:
                c0, t0 = proc_cpu(e.pid), time.perf_counter()
                for _ in range(n):
                    e.cycle()
                c1, t1 = proc_cpu(e.pid), time.perf_counter()
            except (OSError, http.client.HTTPException, Failed) as exc:
                out[e.name] = Failed(one_line(str(exc)))
                live.remove(e)
                continue
            samples[e.name].append(((c1 - c0) / n * 1000, (t1 - t0) / n * 1000))
    for e in live:
        got = samples[e.name]
        out[e.name] = (statistics.median(s[0] for s in got),
                       statistics.median(s[1] for s in got))
    return out


def tcp_sockets() -> int:
    """TCP sockets of this network namespace (TIME_WAIT included): ours reads
    the whole table on every collection to find the listener's owner."""
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{table}", "rb") as fh:
                count += fh.read().count(b"\n") - 1
        except OSError:
            pass
    return count


def tcp_table_cpu_ms(reads: int = 50) -> float:
    """CPU ms of one read of /proc/net/tcp and tcp6 here and now (the kernel
    formats every socket: the cost grows with TIME_WAIT sockets)."""
    t0 = time.process_time()
    for _ in range(reads):
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/net/{table}", "rb") as fh:
                    fh.read()
            except OSError:
                pass
    return (time.process_time() - t0) / reads * 1000


def status_counts(server) -> tuple:
    """(BusyWorkers from ?auto, rows of the HTML worker table) right now."""
    with urllib.request.urlopen(server.status_url + "?auto", timeout=30) as r:
        auto = r.read().decode("latin-1")
    with urllib.request.urlopen(server.status_url, timeout=30) as r:
        html = r.read()
    busy = re.search(r"^BusyWorkers: (\d+)", auto, re.M)
    return (int(busy.group(1)) if busy else -1), html.count(b"<tr><td><b>")


class IdleConnections:
    """Open loopback connections between two sockets of this process, doing
    nothing: entries of the TCP socket table, two per connection. Closed with
    a reset, so they leave no TIME_WAIT entry behind."""

    def __init__(self) -> None:
        self.pairs: List[tuple] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)

    def __len__(self) -> int:
        return len(self.pairs)

    def grow(self, count: int) -> None:
        while len(self.pairs) < count:
            client = socket.create_connection(self.listener.getsockname(), timeout=10)
            server, _ = self.listener.accept()
            self.pairs.append((client, server))

    def shrink(self, count: int) -> None:
        while len(self.pairs) > count:
            for sock in self.pairs.pop():
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    def close(self) -> None:
        self.shrink(0)
        self.listener.close()


class SlowRequests:
    """Requests that stay in flight: loopback connections that each send one
    request for ``/embedded?sleep=SECONDS`` and never read the answer.

    Every collection of ours reads the whole TCP socket table (to prove which
    process owns the listening socket), so each request in flight also costs
    it two table entries. To measure the cost of worker rows alone, the table
    is kept the same size at every fill level: ``total`` connections are
    always open, those not carrying a slow request being IdleConnections.
    """

    def __init__(self, server, total: int, seconds: int = 900) -> None:
        self.server = server
        self.total = total
        self.seconds = seconds
        self.socks: List[socket.socket] = []
        self.idle = IdleConnections()

    def fill(self, count: int, timeout: float = 60) -> tuple:
        """``count`` requests in flight (never fewer than before) and
        ``total - count`` idle connections; (busy workers, table rows)."""
        self.idle.grow(self.total - len(self.socks))
        while len(self.socks) < count:
            self.idle.shrink(len(self.idle) - 1)
            s = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
            self.socks.append(s)
            s.sendall(f"GET /embedded?sleep={self.seconds}&n={len(self.socks)} HTTP/1.1\r\n"
                      f"Host: 127.0.0.1\r\n\r\n".encode())
        deadline = time.monotonic() + timeout
        while True:
            busy, rows = status_counts(self.server)
            if busy >= count or time.monotonic() > deadline:
                return busy, rows
            time.sleep(0.2)

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.idle.close()
        self.socks = []


def compare(status_url: str, ours_script: str, env: dict, rounds: int,
            listen: bool = True, idle: float = 0.0) -> Dict:
    """{exporter name: (CPU ms, wall ms) per cycle | Failed} on one server;
    with ``idle`` seconds, also {"idle": measure.idle_cpu of each exporter
    that ran} left alone that long after the last round (a scraped
    exporter's cost between scrapes).

    apache_exporter and ours --execd take turns; ours --listen (unless
    ``listen`` is false) is measured after them, on its own: it used to
    connect to Apache anew for every scrape and close the scraper's
    connection, so every cycle of it left TIME_WAIT sockets in the table the
    others would then read too, and (a new connection landing on another
    thread each time) hundreds of idle worker rows that have served a
    request. It keeps both connections now; the order is kept so that runs
    compare with the earlier ones."""
    started, got = start_exporters(status_url, ours_script, env, listen)
    try:
        got.update(per_cycle([e for e in started if e.name != "ours --listen"], rounds))
        got.update(per_cycle([e for e in started if e.name == "ours --listen"], rounds))
        if idle > 0:
            got["idle"] = idle_cpu({e.name: e.pid for e in started
                                    if isinstance(got.get(e.name), tuple)}, idle)
    finally:
        for e in started:
            e.close()
    return got


def start_exporters(status_url: str, ours_script: str, env: dict,
                    listen: bool = True) -> tuple:
    """(exporters that started, {name: Failed} for those that did not)."""
    started: List[Exporter] = []
    failed: Dict[str, Failed] = {}
    specs = [
        ("apache_exporter", lambda: HttpExporter(
            "apache_exporter", [APACHE_EXPORTER, f"--telemetry.address=127.0.0.1:{port}",
                                f"--scrape_uri={status_url}?auto", "--log.level=warn"],
            port, b"\napache_up 1")),
        ("ours --listen", lambda: HttpExporter(
            "ours --listen", [ours_script, "--url", status_url, "--listen",
                              f"127.0.0.1:{port}"], port, b"\napache_up 1", env=env)),
        ("ours --execd", lambda: ExecdExporter(
            "ours --execd", [ours_script, "--url", status_url, "--format", "influx",
                             "--execd"], env=env)),
    ]
    for name, make in specs:
        if name == "ours --listen" and not listen:
            continue
        port = free_port()
        try:
            started.append(make())
        except (OSError, Failed) as exc:
            failed[name] = Failed(one_line(str(exc)))
    return started, failed
