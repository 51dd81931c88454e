"""When a config file may be read: the one rule for every settings file.

A config file says which Apache to watch and whom the reaper may signal (an
apache-manager INI file sets the reaper's thresholds), so it is read only when
nobody but this user and root could have written it:

- a regular file: a FIFO would block the run for ever, ``/dev/zero`` would
  fill the memory, a directory or socket is a mistake;
- owned by this user or root and not writable by group or others;
- in directories owned by this user or root, none writable by group or
  others unless sticky (``/tmp``) with the entry in it this user's or root's;
- symlinks on the way are followed when they are this user's or root's, and
  the directories they lead through are checked the same way.

The walk uses ``lstat`` only, so nothing is opened before it is known to be a
trusted regular file; ``read_trusted`` then opens it without blocking and
without following a link, checks that it is the same file, and reads at most
``limit`` bytes. An untrusted file is a UsageError (exit 2) naming the file,
why and the fix; a file that cannot be looked at raises OSError.
"""

from __future__ import annotations

import errno
import os
import stat

from apache_metrics_exporter.errors import UsageError
from apache_metrics_exporter.paths import MAX_LINKS, walk

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Optional, Tuple

CONFIG_LIMIT = 64 * 1024  # bytes: a settings file, not a data file

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _entry_problem(dst: os.stat_result, directory: str, st: os.stat_result,
                   here: str) -> Optional[str]:
    """Why the entry ``here`` (lstat ``st``) of ``directory`` (stat ``dst``)
    could have been put there by someone else; None if it could not."""
    me = os.geteuid()
    mode = stat.S_IMODE(dst.st_mode)
    if dst.st_uid not in (me, 0):
        return (f"the directory {directory} belongs to uid {dst.st_uid}, neither this "
                f"user (uid {me}) nor root; move the file elsewhere")
    if mode & 0o022:
        if not mode & stat.S_ISVTX:
            return (f"the directory {directory} is writable by others than its owner "
                    f"(mode {mode:04o}); run: chmod go-w {directory}")
        if st.st_uid not in (me, 0):
            return (f"{here} belongs to uid {st.st_uid} in the shared directory "
                    f"{directory} (mode {mode:04o}); remove it, or use a file of this "
                    "user's or root's")
    if stat.S_ISLNK(st.st_mode) and st.st_uid not in (me, 0):
        return (f"the symlink {here} belongs to uid {st.st_uid}, neither this user "
                f"(uid {me}) nor root; remove it or give the real path")
    return None


def file_problem(st: os.stat_result, real: str) -> Optional[str]:
    """Why the file itself (stat ``st``, at ``real``) is not trusted, with the fix."""
    me = os.geteuid()
    if not stat.S_ISREG(st.st_mode):
        return f"is not a regular file ({_kind(st.st_mode)}); give a regular file"
    if st.st_uid not in (me, 0):
        return (f"belongs to uid {st.st_uid}, neither this user (uid {me}) nor root; "
                "make it this user's or root's (chown), or remove it")
    if st.st_mode & 0o022:
        return (f"is writable by others than its owner (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run: chmod go-w {real}")
    return None


def locate(path: str, what: str) -> Tuple[str, os.stat_result]:
    """The real path of ``path`` and its lstat, every directory and symlink on
    the way checked (``_entry_problem``) and the file itself (``file_problem``).

    UsageError when untrusted; OSError (FileNotFoundError, PermissionError,
    NotADirectoryError) when it cannot be looked at. Opens nothing.
    """
    def visit(real: str, dst: os.stat_result, here: str, st: os.stat_result) -> None:
        why = _entry_problem(dst, real, st, here)
        if why:
            raise UsageError(f"{what} {path}: {why}")

    # Not os.path.abspath: its lexical ".." is wrong after a symlinked directory.
    try:
        real, found = walk(os.path.join(os.getcwd(), path), visit)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{what} {path}: more than {MAX_LINKS} symlinks in a row") \
                from None
        raise
    if found is None:  # not with missing_ok off; for the type checker
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), real)
    st = found
    why = file_problem(st, real)
    if why:
        shown = path if real == os.path.join(os.getcwd(), path) else f"{path} (-> {real})"
        raise UsageError(f"{what} {shown} {why}")
    return real, st


def check_trusted(path: str, what: str) -> bool:
    """UsageError if ``path`` exists and is not trusted; False if it is missing."""
    try:
        locate(path, what)
    except FileNotFoundError:
        return False
    return True


def read_trusted(path: str, what: str, limit: int = CONFIG_LIMIT) -> bytes:
    """The content of a trusted config file of at most ``limit`` bytes.

    UsageError when it is not trusted or larger; OSError when it cannot be read
    (FileNotFoundError when it is missing). Never blocks, never reads more
    than ``limit + 1`` bytes.
    """
    real, st = locate(path, what)
    flags = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
             | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink since the walk
            raise UsageError(f"{what} {path} changed while it was checked; try again") \
                from None
        raise
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise UsageError(f"{what} {path} changed while it was checked; try again")
        why = file_problem(now, real)
        if why:
            raise UsageError(f"{what} {path} {why}")
        too_big = (f"{what} {path} is larger than {limit // 1024} KiB: not a settings "
                   "file; give the right file")
        if now.st_size > limit:
            raise UsageError(too_big)
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise UsageError(too_big)
        return b"".join(chunks)
    finally:
        os.close(fd)
