"""Reading Linux's /proc directly for the collector's process scan.

The scan needs a handful of facts per Apache child - parent, name, start time,
title, memory - which /proc gives in three small reads. Importing psutil for
them would cost more than the whole rest of a one-shot collection's own work
(see benchmarks/), so the collector reads /proc itself; the reaper, which
signals processes, keeps psutil. Start times are computed exactly as psutil
does (start ticks / clock ticks + boot time), so the two agree to the bit and
the reaper can re-verify a process the collector's scan found.
"""

from __future__ import annotations

import os
from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import List, Optional

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_boot_time: Optional[float] = None


class NoProcess(Exception):
    """The process is gone (or never was)."""


class Denied(Exception):
    """Not allowed to read that about the process (another user's, not root)."""


class Stat(namedtuple("Stat", ['pid', 'name', 'state', 'ppid', 'start_ticks'])):

    # pid: int
    # name: str  # comm (at most 15 characters)
    # state: str
    # ppid: int
    # start_ticks: int
    __slots__ = ()


def boot_time() -> float:
    """System boot time (epoch seconds), from /proc/stat's btime."""
    global _boot_time
    if _boot_time is None:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime"):
                    _boot_time = float(line.split()[1])
                    break
            else:  # pragma: no cover - every Linux has it
                raise RuntimeError("no btime in /proc/stat")
    return _boot_time


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError):
        raise NoProcess(path) from None
    except PermissionError:
        raise Denied(path) from None


def stat(pid: int) -> Stat:
    """Fields of /proc/PID/stat (the name may contain spaces and parentheses)."""
    data = _read(f"/proc/{pid}/stat")
    left, right = data.find(b"("), data.rfind(b")")
    fields = data[right + 2:].split()
    return Stat(pid, data[left + 1:right].decode("utf-8", "replace"),
                fields[0].decode(), int(fields[1]), int(fields[19]))


def create_time(st: Stat) -> float:
    """Start time in epoch seconds, the same float psutil's create_time() gives."""
    return (float(st.start_ticks) / CLOCK_TICKS) + boot_time()


def cmdline(pid: int) -> List[str]:
    data = _read(f"/proc/{pid}/cmdline")
    return [a.decode("utf-8", "surrogateescape") for a in data.rstrip(b"\0").split(b"\0")] \
        if data else []


def rss(pid: int) -> int:
    """Resident set size in bytes (/proc/PID/statm, readable for any process)."""
    return int(_read(f"/proc/{pid}/statm").split()[1]) * PAGE_SIZE


def pss_uss(pid: int) -> tuple:
    """(PSS, USS) in bytes from /proc/PID/smaps_rollup (own processes, or root)."""
    pss = private = 0
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith(b"Pss:"):
            pss = int(line.split()[1]) * 1024
        elif line.startswith((b"Private_Clean:", b"Private_Dirty:", b"Private_Hugetlb:")):
            private += int(line.split()[1]) * 1024
    return pss, private


def children(pid: int) -> List[int]:
    """PIDs whose parent is ``pid`` (from the kernel's children list if it has
    one, else by reading every process's stat)."""
    try:
        kids = set()
        for task in os.listdir(f"/proc/{pid}/task"):
            kids.update(int(c) for c in _read(f"/proc/{pid}/task/{task}/children").split())
        return sorted(kids)
    except (FileNotFoundError, NoProcess):
        if not os.path.exists(f"/proc/{pid}"):
            raise NoProcess(pid) from None
    except Denied:
        pass
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if stat(int(entry)).ppid == pid:
                    out.append(int(entry))
            except (NoProcess, Denied):
                continue
    return sorted(out)
