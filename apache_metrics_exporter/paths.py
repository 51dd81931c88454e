"""The files the commands keep between runs: where they are, when they are
trusted, how they are read, and where a corrupt one goes.

Trusted (``problem``): not a symlink, owned by this user or root, not writable
by group or others. A state file or spool that fails this is refused: someone
else could plant content there (or a symlink to a secret that root would then
read and send). Content that fails to parse is another matter: it is moved
aside (``move_aside``) and the run goes on.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from apache_metrics_exporter.errors import OutputError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Optional

STATE_DIR = "/var/lib/apache-metrics-exporter"
REAPER_STATE = STATE_DIR + "/reaper-state.json"
SPOOL_DIR = STATE_DIR + "/spool"

INT64_MAX = (1 << 63) - 1


class Corrupt(Exception):
    """A file whose kind, size or content cannot be used (move it aside)."""


def problem(st: os.stat_result, path: str, what: str, directory: bool = False) -> Optional[str]:
    """Why ``path`` (its lstat ``st``) is not to be trusted, with the fix; None if fine."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return (f"{what} {path} is a symlink; refusing to follow it: give the real "
                "path, or remove the link")
    if directory and not stat.S_ISDIR(mode):
        return f"{what} {path} is not a directory; remove it or give another path"
    if st.st_uid not in (os.geteuid(), 0):
        return (f"{what} {path} belongs to uid {st.st_uid}, not to this user "
                f"(uid {os.geteuid()}) or root; remove it or chown it to this user")
    if mode & 0o022:
        return (f"{what} {path} is writable by group or others (mode "
                f"{stat.S_IMODE(mode):04o}); run: chmod go-w {path}")
    return None


def check(path: str, what: str, directory: bool = False) -> bool:
    """Raise OutputError if ``path`` exists and is not trusted; False if missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"cannot use {what} {path}: {exc.strerror}") from None
    why = problem(st, path, what, directory)
    if why:
        raise OutputError(why)
    return True


def read_bounded(path: str, limit: int, what: Optional[str] = None) -> bytes:
    """At most ``limit`` bytes of a regular file, never through a symlink.

    FileNotFoundError when there is none; Corrupt when it is a directory, a
    special file, a symlink or bigger than ``limit``. With ``what`` the file
    must also be trusted (``problem``, checked on the open file): OutputError.
    """
    flags = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
             | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        if what:
            raise OutputError(problem(os.lstat(path), path, what) or str(exc)) from None
        raise Corrupt("is a symlink") from None
    try:
        st = os.fstat(fd)
        if what:
            why = problem(st, path, what)
            if why:
                raise OutputError(why)
        if stat.S_ISDIR(st.st_mode):
            raise Corrupt("is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise Corrupt("is not a regular file")
        if st.st_size > limit:
            raise Corrupt(f"is larger than {limit} bytes")
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise Corrupt(f"is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_json(data: bytes) -> object:
    """JSON of a file this program keeps (state, spool state); Corrupt says why
    it is not JSON at all (non-UTF-8, nested too deeply, not JSON)."""
    import json

    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise Corrupt("is not UTF-8 text") from None
    except RecursionError:
        raise Corrupt("is nested too deeply") from None
    except ValueError as exc:
        raise Corrupt(f"is not valid JSON ({exc})") from None


def is_int(value: object, minimum: int = 0) -> bool:
    """A JSON integer (not a bool, not a float) within int64."""
    return type(value) is int and minimum <= value <= INT64_MAX


def move_aside(path: str) -> str:
    """Rename ``path`` (file, directory or link) to ``PATH.corrupt-EPOCH``
    (``-N`` added if taken); the new name. OSError if impossible."""
    base = f"{path}.corrupt-{int(time.time())}"
    target = base
    for n in range(2, 1000):
        if not os.path.lexists(target):
            break
        target = f"{base}-{n}"
    os.rename(path, target)
    return target
