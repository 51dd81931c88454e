"""The clocks a reading is stamped with, and the time between two readings.

A reading carries the wall clock (``time``: epoch seconds, what every output
is stamped with) and, on Linux, a monotonic reference (``boot``): the
kernel's boot id and CLOCK_BOOTTIME, which counts every second since boot
(suspend included) and never steps. The wall clock does step (NTP, a VM
resumed, an operator's ``date -s``): between two readings of the same boot,
the time that passed is measured on CLOCK_BOOTTIME; across a reboot, or when
either reading lacks the reference (an older file, no CLOCK_BOOTTIME, an
unreadable boot id), on the wall clock as before.

Every clock the collector's previous-reading logic uses comes from here
(``wall``, ``boottime``, ``boot_id``): tests replace them to step the clock.
"""

from __future__ import annotations

import math
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, Optional

BOOT_ID = "/proc/sys/kernel/random/boot_id"  # a module setting: tests point it elsewhere
BOOT_ID_CHARS = frozenset("0123456789abcdef-")
MAX_BOOT_ID = 64  # a UUID is 36 characters
# CLOCK_BOOTTIME seconds a stored reading may be ahead of now and still be
# trusted (none, really: it is monotonic; this is rounding room only).
BOOT_SLACK = 1.0
_boot_id: Optional[str] = None
_boot_id_read = False


def wall() -> float:
    """Epoch seconds (steps with the system clock)."""
    return time.time()


def boottime() -> Optional[float]:
    """CLOCK_BOOTTIME seconds, None where there is none (not Linux, an old
    kernel refusing it)."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    if clock is None:
        return None
    try:
        value = time.clock_gettime(clock)
    except OSError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def valid_boot_id(text: Any) -> bool:
    """A boot id as the kernel writes it (lowercase hex and dashes, bounded)."""
    if type(text) is str and text == _boot_id and _boot_id is not None:
        return True  # this boot's, checked when it was read (a loop asks 20 times a cycle)
    return (type(text) is str and 0 < len(text) <= MAX_BOOT_ID
            and set(text) <= BOOT_ID_CHARS and any(c != "-" for c in text))


def boot_id() -> Optional[str]:
    """The kernel's boot id (read once per process), None when the file is
    missing or holds anything but a boot id."""
    global _boot_id, _boot_id_read
    if not _boot_id_read:
        _boot_id_read = True
        import os

        try:  # non-blocking: a FIFO put in its place gives nothing, never a hang
            fd = os.open(BOOT_ID, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
            try:
                data = os.read(fd, MAX_BOOT_ID + 2)
            finally:
                os.close(fd)
            text = data.decode("ascii").strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        _boot_id = text if valid_boot_id(text) else None
    return _boot_id


def mark() -> Optional[Dict[str, Any]]:
    """This instant on the monotonic reference: {"id": BOOT_ID, "time":
    BOOTTIME}, None without one."""
    ident, now = boot_id(), boottime()
    if ident is None or now is None:
        return None
    return {"id": ident, "time": now}


def _boot(reading: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    boot = reading.get("boot")
    if type(boot) is not dict or not valid_boot_id(boot.get("id")):
        return None
    value: Any = boot.get("time")
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        return None
    return boot


def same_boot(before: Dict[str, Any], now: Dict[str, Any]) -> bool:
    """Both readings carry a usable monotonic reference of the same boot."""
    a, b = _boot(before), _boot(now)
    return a is not None and b is not None and a["id"] == b["id"]


def elapsed(before: Dict[str, Any], now: Dict[str, Any]) -> float:
    """Seconds from reading ``before`` to reading ``now`` (negative: ``now``
    is the older): on CLOCK_BOOTTIME within one boot, else on the wall clock."""
    if same_boot(before, now):
        return float(now["boot"]["time"]) - float(before["boot"]["time"])
    return float(now["time"]) - float(before["time"])


def from_the_future(reading: Dict[str, Any], now: Dict[str, Any], slack: float) -> bool:
    """A reading later than ``now`` (a reading-like {"time", "boot"}) by more
    than the slack: within one boot the monotonic clock decides (a wall clock
    stepped back makes no honest reading look future; a stored CLOCK_BOOTTIME
    ahead of this boot's is impossible), else the wall clock with ``slack``."""
    if same_boot(reading, now):
        return float(reading["boot"]["time"]) > float(now["boot"]["time"]) + BOOT_SLACK
    return float(reading["time"]) > float(now["time"]) + slack
