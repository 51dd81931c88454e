"""The --listen endpoint's own ``process_*`` series and its build info.

Read from /proc/self at each scrape the way client_golang's process collector
does (one read of /proc/self/stat, a listing of /proc/self/fd, getrlimit),
so an "exporter health" dashboard made for apache_exporter shows this
process. Only the endpoint reports them (see the catalogue: a one-shot
process is gone when its file is read).
"""

from __future__ import annotations

import os
import platform
import resource
import threading

from apache_metrics_exporter import __version__
from apache_metrics_exporter.catalogue import BY_NAME
from apache_metrics_exporter.collect import procfs

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import List, Optional, Tuple

    from apache_metrics_exporter.collect.snapshot import Sample

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
UNLIMITED = float(2 ** 64 - 1)  # RLIM_INFINITY as client_golang (procfs) reports it
_boot_time: Optional[float] = None


def _btime() -> Optional[float]:
    """The boot time from /proc/stat (read once: it does not change)."""
    global _boot_time
    if _boot_time is None:
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        _boot_time = float(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            return None
    return _boot_time


# /proc/self/stat held open and read again from offset 0 at each scrape (procfs
# makes the text anew for each read from 0): one pread instead of an open, a
# read to the end and a close - 16 of the process series' 32 us. (pid, fd):
# a descriptor is this process's only while it is the one that opened it.
_held: Tuple[int, int] = (0, -1)
_held_lock = threading.Lock()
STAT_MAX = 4096  # /proc/PID/stat is one line of 52 numbers and a 16-byte name


def _self_stat() -> bytes:
    """This process's /proc/self/stat (OSError when it cannot be read)."""
    global _held
    pid, fd = _held
    me = os.getpid()
    if pid != me:
        fd = _open_held(fd)
    try:
        data = os.pread(fd, STAT_MAX, 0)
    except OSError:
        data = b""
    if not data.startswith(b"%d (" % me):
        # Closed behind our back (something closing descriptors), or its
        # number now another file's: that one is left alone, ours opened anew.
        data = os.pread(_open_held(fd), STAT_MAX, 0)
    if len(data) >= STAT_MAX:  # never, as the kernel writes it: read it whole
        return procfs.read_file("/proc/self/stat")
    return data


def _open_held(seen: int) -> int:
    """A new held descriptor, unless another thread made one since ``seen``."""
    global _held
    with _held_lock:
        pid, fd = _held
        if pid != os.getpid() or fd == seen:
            fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
            _held = (os.getpid(), fd)
    return fd


def _limit(kind: int) -> float:
    soft = resource.getrlimit(kind)[0]
    return UNLIMITED if soft == resource.RLIM_INFINITY else float(soft)


def samples() -> List[Sample]:
    """This process's figures; a figure that cannot be read is left out."""
    from apache_metrics_exporter.collect.snapshot import Sample

    out = [Sample(BY_NAME["build_info"], 1, (("version", __version__),
                                             ("pythonversion", platform.python_version())))]
    try:
        stat = _self_stat()  # (this process's: not procfs.PROC)
        # After the command name in parentheses (which may hold spaces and
        # parentheses itself): field 3 (state) onwards.
        fields = stat[stat.rindex(b")") + 2:].split()
        utime, stime, start = int(fields[11]), int(fields[12]), int(fields[19])
        vsize, rss = int(fields[20]), int(fields[21])
    except (OSError, procfs.NoProcess, procfs.Denied, ValueError, IndexError):
        pass
    else:
        out.append(Sample(BY_NAME["exporter_cpu_seconds"], (utime + stime) / _TICKS))
        out.append(Sample(BY_NAME["exporter_virtual_memory_bytes"], vsize))
        out.append(Sample(BY_NAME["exporter_resident_memory_bytes"], rss * _PAGE))
        boot = _btime()
        if boot is not None:
            out.append(Sample(BY_NAME["exporter_start_time_seconds"], boot + start / _TICKS))
    try:
        out.append(Sample(BY_NAME["exporter_open_fds"], len(os.listdir("/proc/self/fd"))))
    except OSError:
        pass
    out.append(Sample(BY_NAME["exporter_max_fds"], int(_limit(resource.RLIMIT_NOFILE))))
    out.append(Sample(BY_NAME["exporter_virtual_memory_max_bytes"], _limit(resource.RLIMIT_AS)))
    return out
