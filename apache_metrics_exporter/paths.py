"""The files the commands keep between runs: where they are, when they are
trusted, how they are read, and where a corrupt one goes.

Trusted (``problem``): not a symlink, owned by this user or root, not writable
by group or others. A state file or spool that fails this is refused: someone
else could plant content there (or a symlink to a secret that root would then
read and send). Content that fails to parse is another matter: it is moved
aside (``move_aside``) and the run goes on.

Symlinks among the directories on the way (``/var/lib/apache-metrics-exporter
-> /srv/ame``, a symlinked ``/var``) are followed under the one rule that
``--output`` uses too (``distrust``, ``real_directory``): owned by this user
or root, and not another user's link in a sticky world-writable directory.
Only the last component - the state file, the spool directory - must not be a
symlink at all.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from apache_metrics_exporter.errors import OutputError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Callable, List, Optional, Tuple

STATE_DIR = "/var/lib/apache-metrics-exporter"
REAPER_STATE = STATE_DIR + "/reaper-state.json"
SPOOL_DIR = STATE_DIR + "/spool"

INT64_MAX = (1 << 63) - 1
MAX_LINKS = 40  # as the kernel's ELOOP limit


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


def distrust(st: os.stat_result, dst: os.stat_result, directory: str) -> str:
    """Why the symlink ``st`` in ``directory`` (its stat ``dst``) must not be
    followed ('' when it may be): owned by neither this user nor root, or -
    the kernel's fs.protected_symlinks rule - in a sticky world-writable
    directory and owned by neither this user nor that directory's owner."""
    uid, me = st.st_uid, os.geteuid()
    if uid not in (me, 0):
        return f"owned by uid {uid}, neither this user nor root"
    if (dst.st_mode & stat.S_ISVTX and dst.st_mode & stat.S_IWOTH
            and uid not in (me, dst.st_uid)):
        return f"owned by uid {uid} in the sticky world-writable directory {directory}"
    return ""


def walk(path: str, visit: Callable[[str, os.stat_result, str, os.stat_result], None],
         budget: Optional[List[int]] = None,
         missing_ok: bool = False) -> Tuple[str, Optional[os.stat_result]]:
    """Follow the absolute ``path`` component by component as the kernel
    would, trusting nothing: ``visit(directory, its lstat, entry, its lstat)``
    sees every entry that exists before a symlink among them is followed, and
    raises to refuse it. The one walk of every path rule here (``distrust`` for
    output and state directories, ``trust.locate`` for settings files).

    Returns the real path and the last lstat (None when it does not exist:
    with ``missing_ok`` nothing below a missing directory can be a link, so
    the rest is kept as written). OSError from lstat or readlink, ELOOP past
    ``budget`` links (a list, shared with a caller that follows links too).
    """
    if budget is None:
        budget = [MAX_LINKS]
    real = "/"
    dst = st = os.lstat("/")
    missing = False
    todo = path.split("/")[::-1]
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":  # after the real directory, not lexically
            real = os.path.dirname(real)
            try:
                dst = st = os.lstat(real)
                missing = False
            except FileNotFoundError:
                if not missing_ok:
                    raise
            continue
        here = os.path.join(real, name)
        if missing:
            real = here
            continue
        if not stat.S_ISDIR(dst.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), real)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if not missing_ok:
                raise
            real, missing = here, True
            continue
        visit(real, dst, here, st)
        if not stat.S_ISLNK(st.st_mode):
            real, dst = here, st
            continue
        budget[0] -= 1
        if budget[0] < 0:
            raise OSError(errno.ELOOP, f"more than {MAX_LINKS} symlinks in a row", here)
        target = os.readlink(here)
        if target.startswith("/"):
            real, dst = "/", os.lstat("/")
        todo.extend(target.split("/")[::-1])
    return real, None if missing else st


def real_directory(directory: str, label: str, budget: Optional[List[int]] = None,
                   missing_ok: bool = False) -> str:
    """``directory`` (absolute) without symlinks, each link on the way checked
    (``distrust``): the kernel follows any link among the directories when
    fs.protected_symlinks is off, so /tmp/evil -> /etc must be caught here.

    OutputError ``"LABEL: ..."`` for a link not followed, a loop, or a
    component that cannot be looked at. ``budget``: links left to follow
    (shared with a caller that follows a last link too). ``missing_ok``: what
    does not exist yet is kept as written (a directory to be created)."""
    def visit(real: str, dst: os.stat_result, here: str, st: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode):
            why = distrust(st, dst, real)
            if why:
                raise OutputError(f"{label}: the directory symlink {here} is not followed "
                                  f"({why}); give the real path")

    try:
        return walk(directory, visit, budget, missing_ok)[0]
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(f"{label}: more than {MAX_LINKS} symlinks in a row") from None
        raise OutputError(f"{label}: {exc.filename}: {exc.strerror}") from None


def resolve(path: str, what: str, missing_ok: bool = True) -> str:
    """``path`` made absolute with the symlinks among its directories followed
    (``real_directory``; OutputError naming ``what`` for one that is not);
    the last component is kept as given - it is checked, never followed."""
    p = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    p = p.rstrip("/") or "/"
    directory, base = os.path.split(p)
    label = f"{what} {path}"
    if base in ("", ".", ".."):  # no last component of its own: all of it
        return real_directory(p, label, missing_ok=missing_ok)
    return os.path.join(real_directory(directory, label, missing_ok=missing_ok), base)


def check(path: str, what: str, directory: bool = False) -> bool:
    """Raise OutputError if ``path`` exists and is not trusted, or a symlink
    among its directories is not to be followed, or - a file expected - it
    is a directory with anything in it (``occupied``); False if missing."""
    try:
        real = resolve(path, what)
        st = os.lstat(real)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"cannot use {what} {path}: {exc.strerror}") from None
    why = problem(st, path, what, directory)
    if why:
        raise OutputError(why)
    if not directory and stat.S_ISDIR(st.st_mode) and occupied(real):
        raise OutputError(f"{what} {path} is a directory with files in it: not a file of "
                          "this program's gone bad, so it is not moved aside; give the "
                          f"path of a file (e.g. {os.path.join(path, 'NAME.json')})")
    return True


def occupied(directory: str) -> bool:
    """Whether ``directory`` has any entry (True when it cannot be listed).
    A state file's path naming such a directory (``--state-file
    /var/lib/apache-metrics-exporter``, ``..``, a trailing slash) is a path
    given wrongly, not a corrupt file: moving it aside would take whatever
    is in it (an empty one is set aside like any corrupt file)."""
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except OSError:
        return True


def same_file(a: str, b: str) -> bool:
    """Whether the paths ``a`` and ``b`` name one file: the same path once
    every link is followed, or (both existing) the same device and inode."""
    try:
        try:
            if os.path.samefile(a, b):
                return True
        except OSError:
            pass
        return os.path.realpath(a) == os.path.realpath(b)
    except ValueError:  # a NUL byte (a config file's value): no file at all
        return False


def identity(path: str) -> Tuple[int, ...]:
    """What changes when anyone replaces, rewrites, chmods or chowns the file
    (lstat: the file itself; OSError if gone). The mode and owner besides
    the change time: a chmod in the same tick of the kernel's coarse clock
    as the last write leaves the times as they were."""
    st = os.lstat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_mode,
            st.st_uid)


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
