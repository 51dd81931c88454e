"""Writing output safely: a temp file in the same directory, fsync, rename.

The temporary file is created with O_EXCL|O_NOFOLLOW under an unpredictable
name (a planted file or symlink is never opened), and ``rename`` replaces the destination name
itself, so a symlink planted at the destination is replaced, never followed.
Readers see the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import os
import sys

from apache_metrics_exporter.errors import OutputError, UsageError


def check_output_path(path: str) -> None:
    """Fail early (usage error) when the output directory does not exist."""
    if path == "-":
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--output {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"--output {path} is a directory; give a file name")


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` atomically; ``-`` writes to stdout."""
    data = text.encode("utf-8")
    if path == "-":
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as exc:
            # Point stdout at /dev/null so the interpreter's final flush of
            # what is left in the buffer cannot fail again on the way out.
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, sys.stdout.fileno())
                os.close(null)
            except OSError:
                pass
            raise OutputError(f"cannot write to standard output: {exc.strerror}") from None
        return
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    tmp = None
    try:
        fd, tmp = _create_temp(directory, base)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(directory)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "; free some space - the previous file was left untouched"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = f"; the user running this needs write access to {directory}"
        raise OutputError(f"cannot write {path}: {reason}{hint}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _create_temp(directory: str, base: str) -> tuple:
    """A new file no one else can have planted: O_CREAT|O_EXCL|O_NOFOLLOW, an
    unpredictable name (what tempfile.mkstemp does, without its import cost)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = os.path.join(directory, f".{base}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "no unused temporary file name", directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
