"""The Apache process tree: parent, native workers, mod_wsgi daemon groups, memory.

Scanned once per snapshot, from /proc (procfs.py). Memory is RSS by default;
PSS and USS (``/proc/PID/smaps_rollup``) are fairer for forked workers but need
the rights to read other users' processes: without them the scan falls back to
RSS for all processes and says so once.
"""

from __future__ import annotations

from collections import Counter, namedtuple

from apache_metrics_exporter import procfs
from apache_metrics_exporter.catalogue import NATIVE_GROUP
from apache_metrics_exporter.log import log

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Dict, Iterable, List, Optional, Sequence, Set

WSGI_PREFIX = "(wsgi:"
DEFAULT_EXE_NAMES = ("apache2", "httpd")
MEMORY_KINDS = ("rss", "pss", "uss")


class ProcInfo(namedtuple("ProcInfo", ['pid', 'create_time', 'group', 'memory', 'title'])):
    """One Apache child as scanned: identity (for safe signalling) and memory."""

    # pid: int
    # create_time: float
    # group: str  # "native" or the mod_wsgi group name
    # memory: int  # bytes, of the snapshot's memory kind
    # title: str  # cmdline()[0], e.g. "(wsgi:example)"
    __slots__ = ()


class ProcessScan(namedtuple(
        "ProcessScan",
        "parent_pid parent_create_time children truncated memory_kind warnings",
        defaults=((),))):
    """What one scan found, and what the user should hear about it."""

    # parent_pid: Optional[int]
    # parent_create_time: Optional[float]
    # children: List[ProcInfo]
    # truncated: Set[str]  # mod_wsgi groups whose names the title cut
    # memory_kind: str
    # warnings: Tuple[str, ...] = ()
    __slots__ = ()

    def groups(self) -> Dict[str, List[int]]:
        """Memory values per group, ``native`` first, then mod_wsgi groups by name."""
        out: Dict[str, List[int]] = {NATIVE_GROUP: []}
        for name in sorted({c.group for c in self.children} - {NATIVE_GROUP}):
            out[name] = []
        for c in self.children:
            out[c.group].append(c.memory)
        return out


EMPTY_SCAN = ProcessScan(None, None, [], set(), "rss")


class MemoryStats(namedtuple("MemoryStats", ['count', 'min', 'max', 'average', 'median'])):
    """apache-manager's per-group statistics; an empty group is all zeros."""

    # count: int
    # min: int
    # max: int
    # average: float
    # median: float
    __slots__ = ()


def memory_stats(values: Sequence[int]) -> MemoryStats:
    """Count, min, max, mean and median (even count: mean of the two middle values)."""
    n = len(values)
    if n == 0:
        return MemoryStats(0, 0, 0, 0, 0)
    s = sorted(values)
    mid = n // 2
    median = s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0
    return MemoryStats(n, s[0], s[-1], sum(s) / float(n), median)


def wsgi_group(title: str, room: int) -> Optional[tuple]:
    """``(name, truncated)`` for a mod_wsgi daemon title, None for other processes.

    mod_wsgi writes ``(wsgi:NAME)`` over argv[0] and cuts it to argv[0]'s
    original length (``room``). A missing ``)`` means the title was cut; the
    name may then be incomplete.
    """
    title = title.rstrip(" \x00")
    if not title.startswith(WSGI_PREFIX):
        return None
    name = title[len(WSGI_PREFIX):]
    if name.endswith(")"):
        return name[:-1], False
    return name, len(title) >= room or room == 0


def _read_pid_file(path: str) -> Optional[int]:
    # A missing PID file is normal while Apache is stopped: said at info level.
    try:
        with open(path) as fh:
            text = fh.read(64).strip()
    except OSError as exc:
        log.info("cannot read --pid-file %s: %s; looking for the Apache parent "
                 "another way", path, exc.strerror)
        return None
    if not text.isdigit():
        log.info("--pid-file %s holds no PID; looking for the Apache parent another way",
                 path)
        return None
    return int(text)


def _is_apache(pid: int, exe_names: Iterable[str]) -> bool:
    try:
        return procfs.stat(pid).name in exe_names
    except (procfs.NoProcess, procfs.Denied):
        return False


def _top_apache(pid: int, exe_names: Sequence[str]) -> Optional[int]:
    """Walk up from an Apache process to the topmost Apache ancestor."""
    try:
        st = procfs.stat(pid)
        if st.name not in exe_names:
            return None
        while st.ppid > 1:
            parent = procfs.stat(st.ppid)
            if parent.name not in exe_names:
                break
            st = parent
        return st.pid
    except (procfs.NoProcess, procfs.Denied):
        return None


def find_parent(exe_names: Sequence[str], pid_file: Optional[str] = None,
                worker_pids: Iterable[int] = (), port: Optional[int] = None) -> Optional[int]:
    """The Apache parent PID: from the PID file, the worker table, the listening
    port, or a unique process of that executable name (in this order).

    The first two read /proc only; the last two (Apache down, or no worker
    table) need psutil, imported only then."""
    if pid_file:
        pid = _read_pid_file(pid_file)
        if pid is not None:
            if _is_apache(pid, exe_names):
                return pid
            log.info("--pid-file %s names PID %d, which is not a running %s process",
                     pid_file, pid, "/".join(exe_names))
    parents: Counter = Counter()
    for pid in set(worker_pids):
        try:
            parents[procfs.stat(pid).ppid] += 1
        except (procfs.NoProcess, procfs.Denied):
            continue
    for ppid, _n in parents.most_common():
        if ppid > 1 and _is_apache(ppid, exe_names):
            return ppid
    import psutil

    if port:
        try:
            conns = psutil.net_connections("tcp")
        except (psutil.Error, OSError):
            conns = []
        for c in conns:
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                top = _top_apache(c.pid, exe_names)
                if top:
                    return top
    candidates = []
    for proc in psutil.process_iter(["pid", "ppid", "name"]):
        if proc.info["name"] in exe_names:
            ppid = proc.info["ppid"]
            if ppid <= 1 or not _is_apache(ppid, exe_names):
                candidates.append(proc.info["pid"])
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        # Said at info level: when the page is down this is a side note to the
        # one line that matters (why the page could not be read).
        log.info("found %d Apache parent processes (%s) and cannot tell which one "
                 "serves this URL; give --pid-file to pick one",
                 len(candidates), ", ".join(map(str, sorted(candidates))))
    return None


def _memory(pid: int, kind: str) -> int:
    if kind == "rss":
        return procfs.rss(pid)
    pss, uss = procfs.pss_uss(pid)
    return pss if kind == "pss" else uss


def scan(parent_pid: Optional[int], exe_names: Sequence[str],
         memory_kind: str = "rss") -> ProcessScan:
    """Children of the parent with the same executable, grouped and measured."""
    if parent_pid is None:
        return EMPTY_SCAN._replace(memory_kind=memory_kind)
    try:
        parent = procfs.stat(parent_pid)
        parent_ctime = procfs.create_time(parent)
        title = procfs.cmdline(parent_pid)
        room = len(title[0]) if title else 0
        kids = procfs.children(parent_pid)
    except (procfs.NoProcess, procfs.Denied):
        return EMPTY_SCAN._replace(memory_kind=memory_kind)
    children: List[ProcInfo] = []
    truncated: Set[str] = set()
    for pid in kids:
        try:
            st = procfs.stat(pid)
            if st.name not in exe_names or st.ppid != parent_pid:
                continue
            cmd = procfs.cmdline(pid)
            mem = _memory(pid, memory_kind)
        except procfs.NoProcess:
            continue  # gone between listing and reading: not an error
        except procfs.Denied:
            if memory_kind == "rss":
                continue
            fallback = scan(parent_pid, exe_names, "rss")
            return fallback._replace(warnings=fallback.warnings + (
                f"--memory {memory_kind} needs the right to read other users' "
                "/proc/PID/smaps_rollup (run as root or as Apache's user); "
                "reporting RSS instead",))
        title = cmd[0] if cmd else ""
        info = wsgi_group(title, room)
        group = NATIVE_GROUP if info is None else info[0]
        if info is not None and info[1]:
            truncated.add(group)
        children.append(ProcInfo(pid, procfs.create_time(st), group, mem,
                                 title.rstrip(" \x00")))
    warnings = tuple(
        f"mod_wsgi daemon group name {name!r} is cut short by the process title "
        f"({room} characters of room), the real name may be longer; WSGIDaemonProcess "
        f"names of at most {max(room - 7, 0)} characters are reported whole"
        for name in sorted(truncated))
    return ProcessScan(parent_pid, parent_ctime, children, truncated, memory_kind, warnings)
