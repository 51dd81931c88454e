"""Targets of a batch are collected concurrently under one deadline each."""

from __future__ import annotations

import builtins
import os
import socket
import time
from contextlib import ExitStack
from typing import List

import pytest

from apache_metrics_exporter.collect import procfs
from apache_metrics_exporter.collect.http import Fetcher, Target
from apache_metrics_exporter.collect.snapshot import collect, collect_all
from tests.conftest import data, run_exporter
from tests.harness.pages import serve_many_pages, serve_pages
from tests.harness.peers import DripPeer

AUTO = data("2.4.71-event-ext-on.auto.txt")
HTML = data("2.4.71-event-ext-on.html")


def page_server():
    """A stand-in serving captured real pages (HTML and ?auto) on loopback."""
    return serve_pages(AUTO, HTML)


def test_ten_targets_two_dripping_end_within_the_timeout():
    with ExitStack() as stack:
        good = [stack.enter_context(page_server()) for _ in range(8)]
        bad = [stack.enter_context(DripPeer(head=b"HTTP/1.1 200 OK\r\n", pause=0.2))
               for _ in range(2)]
        urls = good[:4] + [b.url for b in bad] + good[4:]
        args = [a for u in urls for a in ("--url", u)]
        t0 = time.monotonic()
        proc = run_exporter(*args, "--format", "influx", "--timeout", "2", "--no-processes")
        took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert took < 2 + 1.0, took  # about one --timeout, not two of them in a row
    ups = [line for line in proc.stdout.splitlines() if line.startswith("apache_exporter,")]
    ports = [u.split(":")[2].split("/")[0] for u in urls]
    got = {p: ("up=1i" in line) for p in ports for line in ups if f"port={p}," in line}
    assert [got[p] for p in ports] == [True] * 4 + [False] * 2 + [True] * 4
    assert proc.stderr.count("error:") == 2, proc.stderr


# --- what a batch reads of the host --------------------------------------------------------
#
# Proving which Apache serves a loopback URL reads the kernel's table of
# LISTEN sockets (sock_diag, else /proc/net/tcp*) and, for a listener that is
# not the Apache proven before, walks the processes for its owner. A batch
# does each at most once (collect/host.py); a remote target does neither.

REMOTE = "203.0.113.9"  # TEST-NET-3: never contacted, the fetcher below serves pages itself


class RemoteFetcher(Fetcher):
    """A fetcher of a remote URL whose pages come from tests/data: the
    collection sees exactly what a real remote fetch would leave it (host,
    port, the peer's address), and nothing leaves this machine."""

    def get(self, url: str) -> bytes:
        self.peer = REMOTE
        return AUTO if "auto" in url else HTML


class HostReads:
    """Every look at the host's processes and sockets: files and directories
    under /proc, descriptor links, netlink sockets (sock_diag)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: List[str] = []
        self.netlink = 0
        real_open, real_listdir, real_readlink = builtins.open, os.listdir, os.readlink
        real_os_open = os.open
        real_socket = socket.socket

        def note(path: object) -> None:
            text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
            if text.startswith("/proc"):
                self.paths.append(text)

        def opened(file, *args, **kwargs):  # noqa: ANN001,ANN002,ANN003,ANN202
            note(file)
            return real_open(file, *args, **kwargs)

        def os_opened(path, *args, **kwargs):  # noqa: ANN001,ANN002,ANN003,ANN202
            note(path)  # procfs reads /proc/PID files with os.open
            return real_os_open(path, *args, **kwargs)

        def listed(path=".", *args, **kwargs):  # noqa: ANN001,ANN002,ANN003,ANN202
            note(path)
            return real_listdir(path, *args, **kwargs)

        def linked(path, *args, **kwargs):  # noqa: ANN001,ANN002,ANN003,ANN202
            note(path)
            return real_readlink(path, *args, **kwargs)

        class Socket(real_socket):  # type: ignore[misc,valid-type]
            def __init__(sock, family: int = -1, *args: object, **kwargs: object) -> None:
                if family == socket.AF_NETLINK:
                    self.netlink += 1
                super().__init__(family, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(builtins, "open", opened)
        monkeypatch.setattr(os, "open", os_opened)
        monkeypatch.setattr(os, "listdir", listed)
        monkeypatch.setattr(os, "readlink", linked)
        monkeypatch.setattr(socket, "socket", Socket)

    @property
    def tables(self) -> List[str]:
        return [p for p in self.paths if p.startswith("/proc/net/")]


def test_a_remote_target_costs_no_socket_table_and_no_proc_reads(monkeypatch):
    from apache_metrics_exporter import clocks

    fetchers = [RemoteFetcher(Target(f"http://{REMOTE}:{8080 + i}/server-status"))
                for i in range(3)]
    # The kernel's boot id is the clock reference of every reading, read
    # once per process whatever the targets (clocks.boot_id): read it
    # first, so that what is counted is the targets' own host work.
    clocks.boot_id()
    reads = HostReads(monkeypatch)
    single = collect(fetchers[0])
    batch = collect_all(fetchers)
    monkeypatch.undo()
    assert all(s.up for s in [single, *batch])
    assert all(any("not a loopback address" in w for w in s.warnings) for s in [single, *batch])
    assert reads.netlink == 0
    assert reads.paths == []


def test_the_instrumentation_sees_a_local_targets_reads(monkeypatch):
    """The remote test above would pass vacuously if HostReads saw nothing:
    a loopback target's proof is seen reading the socket table."""
    with page_server() as url:
        fetcher = Fetcher(Target(url))
        reads = HostReads(monkeypatch)
        try:
            snap = collect(fetcher)
        finally:
            monkeypatch.undo()
            fetcher.close()
    assert snap.up
    assert reads.netlink + len(reads.tables) >= 1
    assert any(p.endswith("/fd") for p in reads.paths)  # the walk for the owner
    assert any(p.endswith("/stat") for p in reads.paths)  # procfs's reads (os.open)


def test_a_batch_of_fifty_local_targets_reads_the_socket_table_once_per_cycle(monkeypatch):
    counts = {"table": 0, "walk": 0}
    real_rows, real_pids = procfs.listener_rows, procfs.pids

    def rows(*args: object) -> object:
        counts["table"] += 1
        return real_rows(*args)  # type: ignore[arg-type]

    def pids() -> List[int]:
        counts["walk"] += 1
        return real_pids()

    monkeypatch.setattr(procfs, "listener_rows", rows)
    monkeypatch.setattr(procfs, "pids", pids)
    with serve_many_pages(AUTO, HTML, 50) as urls:
        fetchers = [Fetcher(Target(u)) for u in urls]
        try:
            for cycle in (1, 2):
                snaps = collect_all(fetchers)
                assert [s.up for s in snaps] == [True] * 50
                # Every target was proven (and found not to be Apache's) ...
                me = f"PID {os.getpid()}"
                assert all(any(me in w and "not apache2/httpd" in w for w in s.warnings)
                           for s in snaps), snaps[0].warnings
                # ... from one reading of the table and one walk of each kind.
                assert counts == {"table": cycle, "walk": 2 * cycle}
        finally:
            for f in fetchers:
                f.close()


def test_a_long_running_batch_asks_the_socket_table_on_one_kept_socket(monkeypatch):
    """A long-running run's Reuse keeps one sock_diag socket for the socket
    table it reads every cycle; what each cycle finds is what a run without
    it finds."""
    from apache_metrics_exporter.collect.processes import Reuse

    made: List[int] = []
    real_socket = procfs._diag_socket
    monkeypatch.setattr(procfs, "_diag_socket", lambda: made.append(1) or real_socket())
    with serve_many_pages(AUTO, HTML, 2) as urls:
        fetchers = [Fetcher(Target(u)) for u in urls]
        try:
            alone = [s.warnings for s in collect_all(fetchers)]
            assert len(made) == 1
            reuse = Reuse()
            for _cycle in range(3):
                assert [s.warnings for s in collect_all(fetchers, reuse=reuse)] == alone
            assert len(made) == 2
            single = collect(fetchers[0], reuse=reuse)
            assert single.warnings == alone[0] and len(made) == 2
        finally:
            for fetcher in fetchers:
                fetcher.close()
