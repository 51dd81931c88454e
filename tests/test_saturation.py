"""Accept-queue saturation and the reason for up=0.

Unit tests first (the kernel's figures for a plain listening socket, every
reason word from a real failed fetch, the snapshot's samples), then a real
Apache. A private Apache with two workers and ``ListenBacklog 4`` on loopback: two
slow requests (the WSGI app's ``?hold=``, ended by the test's release file)
hold every worker, more clients then wait in the accept queue. The queue
figures rise, a collection with a short --timeout reports "saturated" (not
just down) in every format, and once the slow requests end the queue is empty
again and the page is read (up=1). The test checks the kernel's view with
``ss`` (iproute2), not with the code under test.

Everything is bounded: each client thread has socket timeouts and is joined,
every socket is closed, the release file is written in ``finally``.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from typing import Iterator, List, Optional

import pytest

from apache_metrics_exporter.catalogue import REASONS
from apache_metrics_exporter.collect import procfs, snapshot
from apache_metrics_exporter.collect.http import Fetcher, Target
from apache_metrics_exporter.collect.processes import EMPTY_SCAN, Listener, Parent
from apache_metrics_exporter.collect.snapshot import (
    Options,
    Snapshot,
    build,
    collect_all,
    fetch_reason,
)
from apache_metrics_exporter.collect.status import parse_auto
from apache_metrics_exporter.errors import FetchError
from apache_metrics_exporter.writers import collectd, influx, prometheus, tab, text
from tests.conftest import data, parse_tab, prom_series, run_exporter
from tests.harness.apache import ApacheServer
from tests.harness.waiting import wait_for

WORKERS = 2
BACKLOG = 4  # ListenBacklog: the kernel's limit is min(4, net.core.somaxconn)
WAITING = 2  # clients beyond the workers, left in the accept queue
HOLD = 60  # seconds a slow request holds its worker at most (the release ends it)
SHORT = 1.0  # --timeout of the collections during saturation


def ss_queue(port: int) -> tuple:
    """(Recv-Q, Send-Q) of the LISTEN socket on 127.0.0.1:PORT as ``ss -ltn``
    shows them: the accept queue's length and its backlog limit."""
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                         text=True, timeout=10, check=True).stdout.split()
    assert out and out[0] == "LISTEN", out
    return int(out[1]), int(out[2])


class Client(threading.Thread):
    """One HTTP/1.0 request on its own connection, read to the end."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.sent = threading.Event()
        self.answer = b""
        self.error: Optional[BaseException] = None
        self.sock: Optional[socket.socket] = None

    def run(self) -> None:
        try:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=HOLD + 30)
            self.sock.sendall(f"GET {self.path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            self.sent.set()
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.answer += chunk
        except OSError as exc:
            self.error = exc
        finally:
            self.sent.set()
            if self.sock is not None:
                self.sock.close()

    def status(self) -> int:
        match = re.match(rb"HTTP/1\.[01] (\d{3})", self.answer)
        return int(match.group(1)) if match else 0


@pytest.fixture(params=["prefork", "event"])
def small_apache(request) -> Iterator[ApacheServer]:
    server = ApacheServer(request.param, workers=WORKERS, listen_backlog=BACKLOG).start()
    try:
        yield server
    finally:
        server.stop()


def collect_once(url: str, timeout: float) -> Snapshot:
    (snap,) = collect_all([Fetcher(Target(url, timeout=timeout))], Options())
    return snap


def hold_every_worker(port: int, clients: List[Client]) -> None:
    """Every worker held by a slow request, each accepted (none left queued)."""
    for _ in range(WORKERS):
        clients.append(Client(port, f"/embedded?hold={HOLD}"))
        clients[-1].start()
    for c in clients:
        assert c.sent.wait(20) and c.error is None, c.error
    wait_for("the slow requests to be accepted", lambda: ss_queue(port)[0] == 0)


@pytest.mark.integration
def test_saturated_apache_is_reported_saturated_in_every_format(small_apache):
    apache = small_apache
    url, port = apache.status_url, apache.port
    listen = f"127.0.0.1:{port}"

    # Idle: the queue is empty and its limit is the kernel's, as ss shows it.
    idle = collect_once(url, 5.0)
    assert idle.up and idle.value("status_reason") == "ok"
    kernel_limit = ss_queue(port)[1]
    assert kernel_limit == BACKLOG
    assert idle.value("accept_queue_length", listen=listen) == 0
    assert idle.value("accept_queue_limit", listen=listen) == kernel_limit
    assert idle.value("accept_queue_length_all") == 0
    assert idle.value("accept_queue_limit_all") == kernel_limit

    clients: List[Client] = []
    try:
        hold_every_worker(port, clients)
        # Then clients no worker can take: they wait in the accept queue.
        for _ in range(WAITING):
            clients.append(Client(port, "/index.html"))
            clients[-1].start()
        wait_for(f"{WAITING} connections in the accept queue",
                 lambda: ss_queue(port)[0] >= WAITING)

        snap = collect_once(url, SHORT)
        assert not snap.up
        assert snap.value("status_reason") == "saturated", snap.error
        assert "saturated" in (snap.error or "")
        assert snap.value("up_reason", reason="saturated") == 1
        assert snap.value("up_reason", reason="timeout") == 0
        waiting = snap.value("accept_queue_length_all")
        assert waiting is not None and waiting >= WAITING
        assert snap.value("accept_queue_length", listen=listen) == waiting
        assert snap.value("accept_queue_limit_all") == kernel_limit
        # The process proof did not need the page: the tree is still scanned.
        assert snap.processes.parent_pid == apache.proc.pid

        # Every format says so.
        tab_lines = parse_tab(tab.render([snap]))
        assert tab_lines["status-response"] == "1"
        assert tab_lines["status-reason"] == "saturated"
        assert int(tab_lines["accept-queue-length-all"]) >= WAITING
        assert int(tab_lines[f"accept-queue-length {listen}"]) >= WAITING
        assert tab_lines[f"accept-queue-limit {listen}"] == str(kernel_limit)
        lines = influx.render([snap])
        assert re.search(r'^apache_status,port=\d+,server=127\.0\.0\.1 reason="saturated" ',
                         lines, re.M), lines
        match = re.search(r"^apache_accept_queue,port=\d+,server=127\.0\.0\.1 "
                          r"length_all=(\d+)i,limit_all=(\d+)i ", lines, re.M)
        assert match and int(match.group(1)) >= WAITING, lines
        assert int(match.group(2)) == kernel_limit
        assert re.search(rf"^apache_accept_queue,listen={re.escape(listen)},port=\d+,"
                         r"server=127\.0\.0\.1 length=\d+i,limit=\d+i ", lines, re.M), lines
        assert "apache,port" not in lines  # Telegraf's measurement: nothing when down
        series = prom_series(prometheus.render([snap]))
        assert series["apache_up"] == 0
        assert series['apache_up_reason{reason="saturated"}'] == 1
        assert sum(v for k, v in series.items() if k.startswith("apache_up_reason")) == 1
        assert series[f'apache_accept_queue_length{{listen="{listen}"}}'] >= WAITING
        assert series[f'apache_accept_queue_limit{{listen="{listen}"}}'] == kernel_limit
        putval = collectd.render([snap])
        assert re.search(r'/gauge-up_reason_saturated" \S+:1$', putval, re.M), putval
        assert re.search(r'/gauge-up_reason_ok" \S+:0$', putval, re.M), putval
        assert re.search(r'/queue_length-accept_all" \S+:(\d+)$', putval, re.M)
        summary = text.render([snap])
        assert "(saturated)" in summary and "accept queue:" in summary, summary

        # End to end: the command, with a short --timeout, also says why.
        result = run_exporter("--url", url, "--timeout", str(SHORT), "--format",
                              "prometheus")
        assert result.returncode == 0, result.stderr
        series = prom_series(result.stdout)
        assert series["apache_up"] == 0
        assert series['apache_up_reason{reason="saturated"}'] == 1
        assert series["apache_accept_queue_length_all"] >= WAITING
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "saturated" in result.stderr
    finally:
        apache.release_file.write_text("")
        for c in clients:
            c.join(HOLD + 40)
    assert not any(c.is_alive() for c in clients)
    # The slow requests ended, the waiting clients were served.
    assert [c.status() for c in clients] == [200] * (WORKERS + WAITING), \
        [(c.error, c.answer[:80]) for c in clients]

    # Afterwards: the queue is empty again and the page is read.
    after = wait_for("the queue to drain and the page to be read", lambda: (
        lambda s: s if s.up and s.value("accept_queue_length_all") == 0 else None)(
            collect_once(url, 5.0)))
    assert isinstance(after, Snapshot)
    assert after.value("status_reason") == "ok"
    assert after.value("up_reason", reason="ok") == 1
    assert ss_queue(port)[0] == 0


# -- the kernel's figures -----------------------------------------------------

def test_the_kernel_reports_the_accept_queue_and_its_limit():
    server = socket.socket()
    clients = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(3)
        port = server.getsockname()[1]
        for _ in range(2):  # never accepted: they wait in the queue
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        inode = __import__("os").fstat(server.fileno()).st_ino
        assert ("127.0.0.1", inode, 2, 3) in procfs.listeners(port)
        assert ss_queue(port) == (2, 3)
        # /proc/net/tcp has the queue (rx_queue) but no limit: None, not a guess.
        table = [row for row in procfs.listener_rows("/proc/.") or () if row[2] == inode]
        assert table == [(b"\x7f\0\0\1", port, inode, 2, None)]
    finally:
        for c in clients:
            c.close()
        server.close()


# -- the reason of a failed fetch, from real failures --------------------------

class Peer(threading.Thread):
    """A loopback server that answers every connection with fixed bytes
    (None: accepts nothing, so connections wait in its accept queue)."""

    def __init__(self, answer: Optional[bytes]) -> None:
        super().__init__(daemon=True)
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()

    def run(self) -> None:
        while self.answer is not None and not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def __enter__(self) -> Peer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(5)
        self.sock.close()


def fetch_error(url: str, timeout: float = 2.0) -> FetchError:
    fetcher = Fetcher(Target(url, timeout=timeout))
    try:
        parse_auto(fetcher.get(fetcher.target.auto_url).decode("latin-1"),
                   source=url)
    except FetchError as exc:
        return exc
    finally:
        fetcher.close()
    raise AssertionError(f"{url} was read")


def _http(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


@pytest.mark.parametrize("answer,scheme,reason", [
    (_http("500 Internal Server Error", b"oops"), "http", "http_error"),
    (_http("403 Forbidden", b"no"), "http", "http_error"),
    (_http("200 OK", b"<html>a login page</html>"), "http", "not_status_page"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "http", "bad_response"),
    (_http("200 OK", b"hello"), "https", "tls"),
    (None, "http", "timeout"),
])
def test_each_failure_has_its_reason(answer, scheme, reason):
    with Peer(answer) as peer:
        exc = fetch_error(f"{scheme}://127.0.0.1:{peer.port}/server-status", timeout=1.0)
    assert fetch_reason(exc) == reason, str(exc)


def test_refused_and_unreachable():
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()  # nothing listens there now
    assert fetch_reason(fetch_error(f"http://127.0.0.1:{number}/server-status")) == "refused"
    try:
        raise FetchError("cannot reach") from OSError(101, "Network is unreachable")
    except FetchError as exc:
        assert fetch_reason(exc) == "unreachable"
    assert fetch_reason(FetchError("something else")) == "error"


# -- the snapshot: saturated or not, figures left out when not read ------------

@pytest.mark.parametrize("queue,reason", [(3, "saturated"), (0, "timeout")])
def test_a_timeout_is_saturation_only_with_connections_waiting(monkeypatch, queue, reason):
    """The rule itself, with the proof stood in for: a fetch that timed out
    is "saturated" when the proven sockets still hold waiting connections."""
    proven = (Listener("127.0.0.1:80", queue, 4),)
    monkeypatch.setattr(snapshot, "parent_of_url", lambda *a, **k: Parent(
        None, "stood in", proven))
    with Peer(None) as peer:
        snap = collect_once(f"http://127.0.0.1:{peer.port}/server-status", 0.3)
    assert not snap.up
    assert snap.value("status_reason") == reason
    assert snap.value("accept_queue_length_all") == queue
    assert ("saturated" in (snap.error or "")) == (reason == "saturated")


def test_a_socket_not_proven_apaches_has_no_queue_figures():
    """A listener that is not Apache (this test's own socket) times the fetch
    out with connections waiting, but its queue is no Apache's: no figures
    (not 0), and the reason stays "timeout"."""
    with Peer(None) as peer:
        snap = collect_once(f"http://127.0.0.1:{peer.port}/server-status", 0.3)
    assert snap.value("status_reason") == "timeout"
    assert not [s for s in snap.samples if s.metric.name.startswith("accept_queue")]
    assert "accept-queue" not in tab.render([snap])
    assert "apache_accept_queue" not in prometheus.render([snap])
    assert "apache_accept_queue" not in influx.render([snap])
    assert "queue_length-accept" not in collectd.render([snap])
    assert "accept queue" not in text.render([snap])


def test_samples_of_the_listeners_and_the_reason():
    auto = parse_auto(data("2.4.71-event-ext-on.auto.txt").decode("latin-1"))
    both = (Listener("127.0.0.1:80", 2, 511), Listener("[::1]:80", 1, 511))
    snap = build("http://127.0.0.1/server-status", 0.0, auto, None, None, EMPTY_SCAN,
                 listeners=both)
    assert snap.value("accept_queue_length", listen="[::1]:80") == 1
    assert snap.value("accept_queue_length_all") == 3
    assert snap.value("accept_queue_limit_all") == 1022
    assert snap.value("status_reason") == "ok"
    assert [snap.value("up_reason", reason=w) for w in REASONS] == [1] + [0] * 10
    # A limit /proc/net/tcp could not give is left out, and so is the sum.
    part = build("u", 0.0, None, None, None, EMPTY_SCAN, error="x", reason="refused",
                 listeners=(Listener("127.0.0.1:80", 0, None),))
    assert part.value("accept_queue_length_all") == 0
    assert part.value("accept_queue_limit_all") is None
    assert not [s for s in part.samples if s.metric.name == "accept_queue_limit"]
    assert part.value("up_reason", reason="refused") == 1
    # An unknown word is not invented into a series: "error".
    odd = build("u", 0.0, None, None, None, EMPTY_SCAN, error="x", reason="bogus")
    assert odd.value("status_reason") == "error"
    lines = tab.render([snap]).splitlines()
    head = "# Accept queue per listening address, and why the status page could not be " \
           "read (apache-metrics-exporter)."
    assert lines[lines.index(head):] == [
        head, "accept-queue-length\t127.0.0.1:80\t2", "accept-queue-length\t[::1]:80\t1",
        "accept-queue-limit\t127.0.0.1:80\t511", "accept-queue-limit\t[::1]:80\t511",
        "accept-queue-length-all\t3", "accept-queue-limit-all\t1022", "status-reason\tok"]
    assert "accept queue: 3 waiting, limit 1022 (127.0.0.1:80 2/511, [::1]:80 1/511)" \
        in text.render([snap])
    # --watch shows it in its head, also when Apache is down.
    from apache_metrics_exporter.watch import screen_lines

    assert "accept queue: 3 waiting, limit 1022 (127.0.0.1:80 2/511, [::1]:80 1/511)" \
        in screen_lines(snap, "memory", 300)
    down = build("http://127.0.0.1/server-status", 0.0, None, None, None, EMPTY_SCAN,
                 error="no complete answer", reason="saturated",
                 listeners=(Listener("127.0.0.1:80", 5, 4),))
    head = screen_lines(down, "memory", 300)
    assert "(saturated): no complete answer" in head[1]
    assert head[2] == "accept queue: 5 waiting, limit 4 (127.0.0.1:80 5/4) - FULL, new " \
                      "connections are dropped"


@pytest.mark.integration
def test_worker_mpm_full_queue_and_the_kernels_clamp_of_listen_backlog():
    """What the saturation test above leaves out, on the worker MPM: the
    reported length is the waiting clients plus (usually) the exporter's own
    connection; a full queue - the limit + 1, where Linux drops further
    SYNs, the exporter's too - still reads "saturated" with the queue at the
    limit + 1; and a ListenBacklog above net.core.somaxconn reads as
    somaxconn (docs/insight.md, Limits). Measured on 2.4.71: 2 waiting read
    3, and 3 waiting with ListenBacklog 2 read 3 of limit 2."""
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    with ApacheServer("worker", workers=WORKERS, listen_backlog=somaxconn + 100) as apache:
        snap = collect_once(apache.status_url, 5.0)
        assert snap.value("accept_queue_limit_all") == somaxconn == ss_queue(apache.port)[1]
    with ApacheServer("worker", workers=WORKERS, listen_backlog=2) as apache:
        port, listen = apache.port, f"127.0.0.1:{apache.port}"
        clients: List[Client] = []
        try:
            hold_every_worker(port, clients)
            clients.append(Client(port, "/index.html"))
            clients[-1].start()
            wait_for("one connection in the accept queue", lambda: ss_queue(port)[0] == 1)
            snap = collect_once(apache.status_url, SHORT)
            assert snap.value("status_reason") == "saturated", snap.error
            assert 1 <= snap.value("accept_queue_length", listen=listen) <= 2
            # Fill it: the limit + 1 connections wait, the next SYN is dropped.
            for _ in range(2):
                clients.append(Client(port, "/index.html"))
                clients[-1].start()
            wait_for("a full accept queue", lambda: ss_queue(port)[0] == 3)
            snap = collect_once(apache.status_url, SHORT)
            assert snap.value("status_reason") == "saturated", snap.error
            assert snap.value("accept_queue_length", listen=listen) == 3
            assert snap.value("accept_queue_limit", listen=listen) == 2
            assert "3 connections (limit 2) waiting" in (snap.error or "")
        finally:
            apache.release_file.write_text("")
            for c in clients:
                c.join(HOLD + 40)
        assert [c.status() for c in clients] == [200] * len(clients)
