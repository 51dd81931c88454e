"""This host's listening sockets and who holds them, read once per batch.

Proving which Apache serves a loopback URL needs two host-wide readings: the
kernel's table of LISTEN sockets (of the one port of the batch's targets, if
they share one), and - when the socket's owner is not the
Apache found last time - a walk over every process for the one holding it.
Each used to be done once per target, so a batch of N local targets paid N
table reads and N walks, each walk as long as the host's descriptors (which
grow with N): quadratic. A ``Host`` does each at most once, on first need,
and every target of the batch looks its answer up in it. A batch of remote
targets never needs either, and never reads them.

A ``Host`` is made per batch (``collect_all``) or per single collection and
thrown away after it: nothing here outlives the batch, so no stale reading
can prove anything in the next one.
"""

from __future__ import annotations

import time

from apache_metrics_exporter.collect import procfs

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Collection, Dict, List, Optional, Sequence, Set, Tuple

OWNER_WALK_SECONDS = 0.5  # naming non-Apache listeners: one bounded walk per batch


class Host:
    """One batch's view of the host's LISTEN sockets and their owners, used
    by one thread (collect_all proves its targets one after another, once
    their fetches have ended)."""

    def __init__(self, ports: Collection[int] = (), diag: Optional[procfs.SockDiag] = None
                 ) -> None:
        # The ports the batch's targets are on, when told: one port, and
        # the kernel is asked for that port's listeners only. ``diag``: a
        # long-running run's sock_diag socket, to ask instead of a new one.
        self._only = next(iter(ports)) if len(set(ports)) == 1 else 0
        self._diag = diag
        self._by_port: Optional[Dict[int, List[tuple]]] = None
        self._inodes: Set[int] = set()
        self._apache: Dict[Tuple[str, ...], Tuple[Dict[int, List[int]], bool]] = {}
        self._others: Dict[Tuple[str, ...], Dict[int, str]] = {}
        self.table_reads = 0  # how often the socket table was read (tests, benchmarks)

    def listeners(self, port: int) -> List[tuple]:
        """``(address text, inode, queue, limit)`` of the LISTEN sockets on
        ``port`` (limit None when the kernel's sock_diag could not be asked)."""
        if self._only and port != self._only:  # not the port it was made for: all of them
            self._only, self._by_port = 0, None
            self._inodes.clear()
            self._apache.clear()
            self._others.clear()
        return list(self._table().get(port, ()))

    def _table(self) -> Dict[int, List[tuple]]:
        """The table by port, read on first need."""
        if self._by_port is None:
            self._by_port = self._read_table()
        return self._by_port

    def _read_table(self) -> Dict[int, List[tuple]]:
        import socket

        self.table_reads += 1
        by_port: Dict[int, List[tuple]] = {}
        rows = procfs.listener_rows(None, self._only, self._diag)
        for raw, port, inode, queue, limit in rows or ():
            family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
            by_port.setdefault(port, []).append(
                (socket.inet_ntop(family, raw), inode, queue, limit))
            self._inodes.add(inode)
        return by_port

    def apache_holders(self, inodes: Set[int], exe_names: Sequence[str]) -> Tuple[Set[int], bool]:
        """(PIDs of processes named like Apache that hold one of the sockets,
        whether some Apache process's descriptors could not be read). Only
        processes named like Apache have their descriptors read, so another
        user's process with many descriptors cannot slow the batch down."""
        key = tuple(exe_names)
        self._table()
        if key not in self._apache:
            self._apache[key] = self._walk_apache(key)
        held, denied = self._apache[key]
        return {pid for inode in inodes for pid in held.get(inode, ())}, denied

    def _walk_apache(self, exe_names: Tuple[str, ...]) -> Tuple[Dict[int, List[int]], bool]:
        held: Dict[int, List[int]] = {}
        denied = False
        for pid in procfs.pids():
            try:
                if procfs.stat(pid).name not in exe_names:
                    continue
                mine = procfs.socket_inodes(pid) & self._inodes
            except procfs.NoProcess:
                continue
            except procfs.Denied:
                denied = True
                continue
            for inode in mine:
                held.setdefault(inode, []).append(pid)
        return held, denied

    def other_owner(self, inodes: Set[int], exe_names: Sequence[str]) -> str:
        """'NAME (PID N)' of a process not named like Apache that holds one of
        the sockets, '' if none was found by the batch's one walk (bounded by
        OWNER_WALK_SECONDS; for the message only)."""
        key = tuple(exe_names)
        self._table()
        if key not in self._others:
            self._others[key] = self._walk_all(key)
        others = self._others[key]
        for inode in sorted(inodes):
            if inode in others:
                return others[inode]
        return ""

    def _walk_all(self, exe_names: Tuple[str, ...]) -> Dict[int, str]:
        out: Dict[int, str] = {}
        deadline = time.monotonic() + OWNER_WALK_SECONDS
        for pid in procfs.pids():
            if time.monotonic() > deadline:
                break
            try:
                mine = procfs.socket_inodes(pid) & self._inodes
                if not mine:
                    continue
                name = procfs.stat(pid).name
            except (procfs.NoProcess, procfs.Denied):
                continue
            if name not in exe_names:
                for inode in mine:
                    out.setdefault(inode, f"{name!r} (PID {pid})")
        return out
