"""Writing output where the operator pointed, as ``>`` and ``install`` would.

``write_atomic(path, text)`` (``--output``) looks at what is at ``path``:

- ``-``, or a descriptor of this process (``/dev/stdout``, ``/dev/fd/N``,
  ``/proc/self/fd/N``): written to that descriptor;
- a character or block device, a FIFO or a socket: written in place, never
  replaced. A FIFO is opened without blocking and retried until a reader
  comes, for at most ``SPECIAL_TIMEOUT`` seconds; writes wait for the reader
  within the same deadline (a stalled reader cannot hang a run);
- a symlink owned by this user or root, outside a sticky world-writable
  directory (or owned by that directory's owner, as the kernel's
  ``fs.protected_symlinks`` rule has it): followed, link after link; the
  atomic write happens beside the real target, so the links stay;
- any other symlink: not followed; it is replaced by a regular file (one
  warning line says so);
- a directory: an error;
- a regular file (or nothing): a temporary file in the same directory
  (O_EXCL|O_NOFOLLOW, an unpredictable name: a planted file or symlink is
  never opened), fsynced and renamed over it. An existing file keeps its
  owner and permission bits; a new one gets 0644 masked by the umask.
  Readers see the old file or the new one, never half of one.

Symlinks among the directories on the way are held to the same rule
(``paths.real_directory``; an untrusted one is an error, since a directory
cannot be replaced).

``write_private(path, text, mode)`` is for the state and spool files: always
the atomic replacement of the name itself (a symlink there is replaced, never
followed), with exactly ``mode``; symlinks among its directories are followed
under the same rule as for ``--output`` (a state directory reached through
``/var/lib/apache-metrics-exporter -> /srv/...`` works).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

from apache_metrics_exporter.errors import OutputError, UsageError
from apache_metrics_exporter.log import WARNING, log
from apache_metrics_exporter.paths import MAX_LINKS, distrust, real_directory
from apache_metrics_exporter.streams import closed, require_stdout, stdout_failed

SPECIAL_TIMEOUT = 10.0  # seconds to wait for a FIFO's reader (open and writes)

def check_output_path(path: str) -> None:
    """Fail early (usage error) when the output directory does not exist."""
    if path == "-":
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--output {path}: directory {directory} does not exist")


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to the output ``path`` (module docstring); ``-`` is stdout.
    Raises OutputError with one line saying why and what to do."""
    data = text.encode("utf-8")
    if path == "-":
        _write_stdout(data)
        return
    where = _resolve(path)
    kind = where[0]
    if kind == "fd":
        _write_fd(path, where[1], data)
    elif kind == "special":
        _write_special(path, where[1], where[2], data)
    else:
        _replace(path, where[1], data, where[2], None)


def write_private(path: str, text: str, mode: int = 0o600) -> None:
    """Replace the file ``path`` atomically with ``text``, permission bits
    exactly ``mode``; whatever is at ``path`` (a symlink too) is replaced.
    Trusted symlinks among its directories are followed (paths.resolve): the
    write then goes through the real directory, opened without following."""
    p = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    directory, base = os.path.split(p)
    if base in ("", ".", ".."):
        raise OutputError(f"cannot write {path}: it is a directory; give a file name")
    real = real_directory(directory, f"cannot write {path}")
    _replace(path, os.path.join(real, base), text.encode("utf-8"), None, mode)


# -- where the output goes ----------------------------------------------------

def _resolve(path: str) -> tuple:
    """("fd", N) | ("special", PATH, magic) | ("file", PATH, lstat or None)."""
    p = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    budget = [MAX_LINKS]
    for _ in range(MAX_LINKS):
        directory, base = os.path.split(p)
        if base in ("", ".", ".."):
            raise OutputError(f"cannot write {path}: it is a directory; give a file name")
        directory = real_directory(directory, f"cannot write {path}", budget)
        p = os.path.join(directory, base)
        try:
            dst = os.stat(directory)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {directory}: {exc.strerror}") from None
        proc = _on_procfs(dst)
        if proc and base.isdigit() and base.isascii() and _own_fd_dir(dst):
            return ("fd", int(base))
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return ("file", p, None)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror}") from None
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            if proc:  # /proc/PID/fd/N of another process: what the kernel opens
                return ("special", p, True)
            why = distrust(st, dst, directory)
            if why:
                log.once(WARNING, f"--output {path}: not following the symlink {p} "
                                  f"({why}); replacing it with a regular file")
                return ("file", p, None)
            try:
                target = os.readlink(p)
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {p}: {exc.strerror}") from None
            p = os.path.join(directory, target)  # an absolute target replaces it all
            continue
        if stat.S_ISDIR(mode):
            shown = path if p == os.path.abspath(path) else f"{path} (-> {p})"
            raise OutputError(f"cannot write {shown}: it is a directory; give a file name")
        planted = _planted(st, dst)
        if planted:
            # The kernel's protected_regular/protected_fifos rule: in a sticky
            # world-writable directory (/tmp) a file or FIFO another user put
            # there is not written into, nor does the new file become theirs.
            log.once(WARNING, f"--output {path}: {p} belongs to uid {st.st_uid} in the "
                              f"sticky world-writable directory {directory}; replacing it "
                              "with a file of this user's")
            return ("file", p, None)
        if stat.S_ISREG(mode):
            return ("file", p, st)
        return ("special", p, False)
    raise OutputError(f"cannot write {path}: more than {MAX_LINKS} symlinks in a row")


def _planted(st: os.stat_result, dst: os.stat_result) -> bool:
    """A regular file or FIFO in a sticky world-writable directory owned by
    neither this user nor the directory's owner."""
    return (bool(stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode))
            and bool(dst.st_mode & stat.S_ISVTX and dst.st_mode & stat.S_IWOTH)
            and st.st_uid not in (os.geteuid(), dst.st_uid))


_proc: list = []  # (st_dev, st_ino) of /proc, looked up once


def _key(name: str) -> tuple:
    try:
        st = os.stat(name)
    except OSError:
        return ()
    return (st.st_dev, st.st_ino)


def _on_procfs(st: os.stat_result) -> bool:
    if not _proc:
        _proc.append(_key("/proc"))
    return bool(_proc[0]) and st.st_dev == _proc[0][0]


def _own_fd_dir(st: os.stat_result) -> bool:
    """Is this directory /proc/self/fd (or this thread's)?"""
    here = (st.st_dev, st.st_ino)
    return here == _key(f"/proc/{os.getpid()}/fd") or here == _key("/proc/thread-self/fd")


# -- writing in place ---------------------------------------------------------

def _write_stdout(data: bytes) -> None:
    require_stdout()  # closed at start: an error, not a write to /dev/null
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except OSError as exc:
        raise stdout_failed(exc) from None


def _write_fd(path: str, fd: int, data: bytes) -> None:
    """A descriptor of this process, written as it is (offset, flags)."""
    if fd == 1:
        _write_stdout(data)
        return
    if fd in closed:  # stdin or stderr closed at start: /dev/null stands there
        raise OutputError(f"cannot write {path}: that descriptor was closed when the "
                          "command started")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None


def _write_special(path: str, p: str, magic: bool, data: bytes) -> None:
    """A device, FIFO or socket (or another process's descriptor), in place."""
    deadline = time.monotonic() + SPECIAL_TIMEOUT
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    if not magic:
        flags |= os.O_NOFOLLOW  # what lstat saw, not a symlink put there since
    while True:
        try:
            fd = os.open(p, flags)
            break
        except OSError as exc:
            if exc.errno == errno.ENXIO and not magic:
                try:
                    mode = os.lstat(p).st_mode
                except OSError:
                    mode = 0
                if stat.S_ISSOCK(mode):
                    _write_socket(path, p, data, deadline)
                    return
                if stat.S_ISFIFO(mode):  # no reader yet
                    if time.monotonic() < deadline:
                        time.sleep(0.02)
                        continue
                    raise OutputError(f"cannot write {path}: no process read the FIFO "
                                      f"within {SPECIAL_TIMEOUT:g} s") from None
            raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            if not magic:  # replaced since lstat: write nothing rather than guess
                raise OutputError(f"cannot write {path}: it changed while being opened")
            os.ftruncate(fd, 0)  # as '>' does
        _write_until(path, fd, data, deadline)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _write_until(path: str, fd: int, data: bytes, deadline: float) -> None:
    """Write everything to a non-blocking descriptor before ``deadline``."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
            continue
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise OutputError(f"cannot write {path}: the reader took in nothing for "
                              f"{SPECIAL_TIMEOUT:g} s")
        import select

        select.select([], [fd], [], min(left, 0.5))


def _write_socket(path: str, p: str, data: bytes, deadline: float) -> None:
    import socket

    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        sock = socket.socket(socket.AF_UNIX, kind)
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                sock.connect(p)
            except OSError as exc:
                if exc.errno == errno.EPROTOTYPE and kind == socket.SOCK_STREAM:
                    continue  # a datagram socket (like /dev/log)
                raise
            if kind == socket.SOCK_STREAM:
                sock.sendall(data)
            else:
                sock.send(data)
            return
        except OSError as exc:
            reason = "timed out" if isinstance(exc, socket.timeout) else exc.strerror
            raise OutputError(f"cannot write {path}: socket {p}: {reason}") from None
        finally:
            sock.close()


# -- the atomic replacement ---------------------------------------------------

def _replace(path: str, p: str, data: bytes, old: os.stat_result | None,
             mode: int | None) -> None:
    """Temp file beside ``p``, fsync, rename over ``p``. ``old``: the file
    replaced (its owner and permission bits are kept); ``mode``: exact bits."""
    directory, base = os.path.split(p)
    tmp = None
    dfd = -1
    try:
        # Every step happens in the directory opened here, component by
        # component without following a link: a directory swapped for a
        # symlink after the checks (another user's, racing) makes the open
        # fail instead of sending the file elsewhere.
        dfd = _open_directory(directory)
        fd, tmp = _create_temp(directory, base, 0o644 if old is None and mode is None
                               else 0o600, dfd)
        try:
            if old is not None:
                _keep_owner(fd, old)
                os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777)
            elif mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
        tmp = None
        try:
            os.fsync(dfd)
        except OSError:
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "; free some space - the previous file was left untouched"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = f"; the user running this needs write access to {directory}"
        shown = path if p in (path, os.path.abspath(path)) else f"{path} (-> {p})"
        raise OutputError(f"cannot write {shown}: {reason}{hint}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        if dfd >= 0:
            os.close(dfd)


def _open_directory(directory: str) -> int:
    """An fd of ``directory`` (an absolute path without symlinks), opened one
    component at a time with O_NOFOLLOW: none of them can be a link now."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open("/", flags)
    try:
        for part in [c for c in directory.split("/") if c]:
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OSError(exc.errno, f"{directory} changed while it was written "
                                  "(a component became a symlink): nothing written") from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _keep_owner(fd: int, old: os.stat_result) -> None:
    """The replaced file's owner and group, as far as this user may give them
    (root: always; others: their own groups)."""
    if old.st_uid == os.geteuid() and old.st_gid == os.getegid():
        return
    try:
        os.fchown(fd, old.st_uid, old.st_gid)
    except PermissionError:
        try:
            os.fchown(fd, -1, old.st_gid)
        except PermissionError:
            pass


def _create_temp(directory: str, base: str, create_mode: int,
                 dir_fd: int | None = None) -> tuple:
    """A new file no one else can have planted: O_CREAT|O_EXCL|O_NOFOLLOW, an
    unpredictable name (what tempfile.mkstemp does, without its import cost).
    With ``dir_fd`` the name returned is relative to that directory."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = f".{base}.{os.urandom(6).hex()}.tmp"
        path = name if dir_fd is not None else os.path.join(directory, name)
        try:
            return os.open(path, flags, create_mode, dir_fd=dir_fd), path
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "no unused temporary file name", directory)

