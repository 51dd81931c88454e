"""An exclusive lock file (flock), waited for with a time limit.

Used by the push spool and the reaper's state file so that two overlapping
runs take turns instead of both acting.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from contextlib import contextmanager

from apache_metrics_exporter.errors import OutputError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Callable, Iterator, Optional


class Busy(OutputError):
    """The lock is held by someone else past the timeout."""


@contextmanager
def exclusive(path: str, timeout: float, holder: str, consequence: str = "is one stuck?",
              on_wait: Optional[Callable[[], None]] = None) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created 0600, never through a
    symlink); wait up to ``timeout`` seconds, then raise OutputError naming the
    ``holder``. ``on_wait`` is called once if the lock is busy at first.

    An existing lock file that is a symlink, someone else's, or writable by
    group or others is refused (OutputError naming the path and the fix).
    """
    from apache_metrics_exporter.paths import problem

    flags = (os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
             | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(problem(os.lstat(path), path, "lock file") or str(exc)) from None
        raise
    try:
        st = os.fstat(fd)
        why = problem(st, path, "lock file")
        if why is None and not stat.S_ISREG(st.st_mode):
            why = f"lock file {path} is not a regular file; remove it"
        if why:
            raise OutputError(why)
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            if time.monotonic() > deadline:
                raise Busy(f"{holder} has held {path} for {timeout:g} s; {consequence}")
            time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock
