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

from apache_metrics_exporter.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from socket import socket as Socket
    from threading import Lock
    from typing import Dict, List, Optional, Sequence, Set, Tuple

# The /proc root, a module setting so tests can read a captured tree.
PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_boot_time: Optional[float] = None


class NoProcess(Exception):
    """The process is gone (or never was)."""


class Denied(Exception):
    """Not allowed to read that about the process (another user's, not root)."""


class Stat(NamedTuple):

    pid: int
    name: str  # comm (at most 15 characters)
    state: str
    ppid: int
    start_ticks: int
    threads: int = 0  # num_threads (0: not told)


def boot_time() -> float:
    """System boot time (epoch seconds), from /proc/stat's btime."""
    global _boot_time
    if _boot_time is None:
        with open(f"{PROC}/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime"):
                    _boot_time = float(line.split()[1])
                    break
            else:  # pragma: no cover - every Linux has it
                raise RuntimeError("no btime in /proc/stat")
    return _boot_time


READ_SIZE = 16384  # bytes asked for per read(2); a file is read to its end
# A read of a small-record seq_file shorter than this is its end (_to_end):
# a page (seq_file's first buffer; the real one, not the PAGE_SIZE tests
# set for a captured tree) or READ_SIZE, less room for a record ("%d " of
# a PID: at most 8 bytes) and then some.
RECORDS_END = min(READ_SIZE, os.sysconf("SC_PAGE_SIZE")) - 64


def read_file(path: str) -> bytes:
    """The whole file, by open(2), read(2) to the end and close(2): Python's
    buffered open() adds two fstat, an isatty ioctl and two lseek calls to
    each one, and a cycle reads about 17 of these small files."""
    fd, data = _opened(path)
    os.close(fd)
    return data


def _opened(path: str, line: bool = False, records: bool = False) -> Tuple[int, bytes]:
    """``path`` opened and read to its end: its descriptor, left open, and
    the bytes; NoProcess when the file (its process) is gone, Denied when
    it may not be read (read_file's, and what Files holds open). ``line``,
    ``records``: see _to_end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return fd, _to_end(fd, False, line, records)
        except BaseException:
            os.close(fd)
            raise
    except (FileNotFoundError, ProcessLookupError):
        raise NoProcess(path) from None
    except PermissionError:
        raise Denied(path) from None


def stat(pid: int) -> Stat:
    """Fields of /proc/PID/stat (the name may contain spaces and parentheses)."""
    return _stat(pid, read_file(f"{PROC}/{pid}/stat"))


def _stat(pid: int, data: bytes) -> Stat:
    left, right = data.find(b"("), data.rfind(b")")
    fields = data[right + 2:].split(None, 20)  # up to starttime (field 22), the rest one
    return Stat(pid, data[left + 1:right].decode("utf-8", "replace"),
                fields[0].decode(), int(fields[1]), int(fields[19]), int(fields[17]))


def create_time(st: Stat) -> float:
    """Start time in epoch seconds, the same float psutil's create_time() gives."""
    return (float(st.start_ticks) / CLOCK_TICKS) + boot_time()


def cmdline(pid: int) -> List[str]:
    return _cmdline(read_file(f"{PROC}/{pid}/cmdline"))


def _cmdline(data: bytes) -> List[str]:
    return [a.decode("utf-8", "surrogateescape") for a in data.rstrip(b"\0").split(b"\0")] \
        if data else []


def rss(pid: int) -> int:
    """Resident set size in bytes (/proc/PID/statm, readable for any process).

    Not /proc/PID/stat's rss field, which would save a read: both count the
    same pages, but since Linux 6.2 the counters are per CPU, and statm sums
    them exactly (fs/proc/task_mmu.c, task_statm: get_mm_counter_sum, since
    commit 82241a83cd15 of 2025, also in the stable kernels) where stat
    reads their cached total (fs/proc/array.c, do_task_stat: get_mm_rss) -
    seen 2% low on a quiet 2-CPU machine, off by up to a gigabyte on large
    ones. psutil, which the figures must agree with, reads statm."""
    return _rss(read_file(f"{PROC}/{pid}/statm"))


def _rss(data: bytes) -> int:
    return int(data.split(None, 2)[1]) * PAGE_SIZE


_kept = 0  # descriptors held open by every Files of this process
_locks: Dict[str, Lock] = {}  # "kept": _kept's, made on first need (one-shot runs never do)
_keep_limit: Optional[int] = None


def _may_keep() -> bool:
    """Whether one more descriptor may be held open (counted if so): at most
    a quarter of RLIMIT_NOFILE's soft limit, and 1,024, for all the Files
    of this process together; beyond that, files are read by path."""
    global _kept, _keep_limit
    if _keep_limit is None:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        _keep_limit = 1024 if soft == resource.RLIM_INFINITY else min(1024, soft // 4)
    with _locks["kept"]:
        if _kept >= _keep_limit:
            return False
        _kept += 1
        return True


def _release(count: int) -> None:
    global _kept
    with _locks["kept"]:
        _kept -= count


def _to_end(fd: int, again: bool, line: bool = False, records: bool = False) -> bytes:
    """What is left of an open file, read to its end (``again``: all of it,
    from offset 0, with pread; else from a descriptor just opened, at 0
    too). A first read that procfs has provably given whole spares the
    read(2) that would only say "end" (strace: one of them per file read):

    ``line``: the file is one line that procfs makes whole for each read
    (stat, statm: seq_file's single_open, whose one record is given whole to
    a read asking for more, fs/seq_file.c seq_read_iter), so a read that
    gives less than it asked, ending in a newline, has reached the end.

    ``records``: a seq_file of small records (a task's children list,
    fs/proc/array.c children_seq_show: "%d " per child, at most 8 bytes).
    seq_read_iter ends a read from offset 0 short of the count asked only
    when no record is left, or when the next record would not fit its
    buffer (m->size: a page at first, doubled only for a record larger than
    the buffer); so a read shorter than a page (and than READ_SIZE) by more
    than the largest record has reached the end. A longer list is read on
    to its end as any file.

    Not cmdline (proc_pid_cmdline_read): it ends a read short also where
    the process's memory could not be read (access_remote_vm faulting on a
    page of the argument area), and the next read from there is the only
    way to tell that from the end."""
    if again:
        data = os.pread(fd, READ_SIZE, 0)
    else:
        data = os.read(fd, READ_SIZE)
    if line and len(data) < READ_SIZE and data.endswith(b"\n") \
            or records and len(data) < RECORDS_END:
        return data
    if again:
        more = os.pread(fd, READ_SIZE, len(data)) if data else b""
        while more:
            data += more
            more = os.pread(fd, READ_SIZE, len(data))
        return data
    more = os.read(fd, READ_SIZE) if data else b""
    while more:
        data += more
        more = os.read(fd, READ_SIZE)
    return data


class Files:
    """The /proc/PID files of one process tree that a long-running run reads
    every cycle (each process's stat - its main thread's, see stat - and
    statm, a young child's cmdline), held open and read again at offset 0
    (pread(2)): an open(2) and a close(2) fewer per read, about half its
    cost.

    Each read is as fresh as a read by path - procfs makes a file's text
    anew for every read from offset 0 - and reads the same process or none:
    a /proc/PID descriptor is bound to the process it was opened for (its
    struct pid), so once that process has exited, every read fails (ESRCH),
    even when its PID names another process by now. Any failing read is
    forgotten and done again by path, which then says what it says today
    (that process, or NoProcess / Denied). Only these files, which anyone
    may read and whose reads take the process's memory anew (smaps_rollup
    binds the memory at open: it is read by path as today), and a
    single-threaded parent's children list (see children).

    Only for the real /proc (a captured tree's files are plain files), and
    bounded: see _may_keep. ``retain`` closes what the tree no longer has;
    ``close`` the rest. Shared by the threads of a --listen run: every use
    of a descriptor, and its closing, is under the lock."""

    def __init__(self) -> None:
        import threading

        _locks.setdefault("kept", threading.Lock())  # (atomic: one lock for all)
        self._fds: Dict[Tuple[int, str], int] = {}
        self._lock = threading.Lock()
        self._closed = False

    def read(self, pid: int, name: str, line: bool = False, records: bool = False) -> bytes:
        """The whole of /proc/PID/NAME, as read_file reads it (``line``,
        ``records``: see _to_end)."""
        key = (pid, name)
        with self._lock:
            fd = self._fds.get(key)
            if fd is not None:
                try:
                    return _to_end(fd, True, line, records)
                except OSError:  # ESRCH: its process has exited
                    del self._fds[key]
                    os.close(fd)
                    _release(1)
            path = f"{PROC}/{pid}/{name}"
            if self._closed or PROC != "/proc" or not _may_keep():
                return read_file(path)
            try:
                fd, data = _opened(path, line, records)
            except BaseException:
                _release(1)
                raise
            self._fds[key] = fd
            return data

    def stat(self, pid: int) -> Stat:
        """stat(pid), from its main thread's stat (task/PID/stat): the
        same line but for the fields the kernel sums over every thread for
        the process's (fs/proc/array.c do_task_stat, ``whole``: faults,
        CPU times, exit code), which are not parsed - name, state, parent,
        thread count and start are the main thread's in both. Spares that
        walk of the threads (2 of 6 us a read, for an event worker of 66)."""
        return _stat(pid, self.read(pid, f"task/{pid}/stat", True))

    def cmdline(self, pid: int) -> List[str]:
        return _cmdline(self.read(pid, "cmdline"))

    def rss(self, pid: int) -> int:
        return _rss(self.read(pid, "statm", True))

    def children(self, pid: int) -> List[int]:
        """children(pid, threads=1), from the list of its one task. A list
        read from a held file is the children of the process it was opened
        for, alive; once that process is gone it reads empty (the kernel
        finds no task for it), as it does for a process without children:
        then it is read by path, which tells the two apart."""
        try:
            data = self.read(pid, f"task/{pid}/children", records=True)
        except (NoProcess, Denied):
            data = b""
        return sorted({int(c) for c in data.split()}) if data else children(pid, 1)

    def let_go(self, pid: int, name: str) -> None:
        """Close /proc/PID/NAME if held (a file no longer read: a title kept)."""
        with self._lock:
            fd = self._fds.pop((pid, name), None)
            if fd is not None:
                os.close(fd)
                _release(1)

    def retain(self, pids: Set[int]) -> None:
        """Close the files of every process not in ``pids``."""
        with self._lock:
            gone = [key for key in self._fds if key[0] not in pids]
            for key in gone:
                os.close(self._fds.pop(key))
            if gone:
                _release(len(gone))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for fd in self._fds.values():
                os.close(fd)
            if self._fds:
                _release(len(self._fds))
            self._fds.clear()

    def __len__(self) -> int:
        return len(self._fds)

    @property
    def closed(self) -> bool:
        return self._closed

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def pss_uss(pid: int) -> tuple:
    """(PSS, USS) in bytes from /proc/PID/smaps_rollup (own processes, or root)."""
    pss = private = 0
    for line in read_file(f"{PROC}/{pid}/smaps_rollup").splitlines():
        if line.startswith(b"Pss:"):
            pss = int(line.split()[1]) * 1024
        elif line.startswith((b"Private_Clean:", b"Private_Dirty:", b"Private_Hugetlb:")):
            private += int(line.split()[1]) * 1024
    return pss, private


def children(pid: int, threads: int = 0) -> List[int]:
    """PIDs whose parent is ``pid`` (from the kernel's children list if it has
    one, else by reading every process's stat). ``threads``: the process's
    thread count, when its stat was just read: with one thread (Apache's
    parent), its one task's list is read without listing the tasks."""
    try:
        kids: set = set()
        for task in [str(pid)] if threads == 1 else os.listdir(f"{PROC}/{pid}/task"):
            kids.update(int(c) for c in read_file(f"{PROC}/{pid}/task/{task}/children").split())
        return sorted(kids)
    except (FileNotFoundError, NoProcess):
        if not os.path.exists(f"{PROC}/{pid}"):
            raise NoProcess(pid) from None
    except Denied:
        pass
    out = []
    for entry in os.listdir(PROC):
        if entry.isdigit():
            try:
                if stat(int(entry)).ppid == pid:
                    out.append(int(entry))
            except (NoProcess, Denied):
                continue
    return sorted(out)


TCP_LISTEN = "0A"
MAX_TABLE = 16 << 20  # bytes of /proc/net/tcp{,6} read at most


def _address(text: str) -> Optional[bytes]:
    """A /proc/net/tcp{,6} address (32-bit words in host order) as network
    bytes; an IPv4-mapped IPv6 address as the IPv4 address it is."""
    import sys

    if len(text) not in (8, 32):
        return None
    try:
        raw = b"".join(int(text[i:i + 8], 16).to_bytes(4, sys.byteorder)
                       for i in range(0, len(text), 8))
    except ValueError:
        return None
    if len(raw) == 16 and raw[:12] == b"\0" * 10 + b"\xff\xff":
        raw = raw[12:]
    return raw


def _netlink_rows(port: int = 0) -> Optional[List[tuple]]:
    """The LISTEN sockets from the kernel's sock_diag netlink interface, which
    filters by state itself: /proc/net/tcp lists every connection of the host
    (2.5 ms and more per read on a busy one) to find a few listeners. Each is
    ``(address bytes, port, inode, queue, limit)``: for a LISTEN socket the
    kernel's idiag_rqueue is the accept queue's length (connections that
    completed the handshake and wait for accept()) and idiag_wqueue its
    backlog limit, as ``ss -ltn`` shows them (Recv-Q, Send-Q). None when it
    cannot be used (then /proc/net/tcp is read).

    One request answers for IPv4 and IPv6 at once: sock_diag's original TCP
    request (TCPDIAG_GETSOCK, struct inet_diag_req), which the kernel serves
    with no address family (net/ipv4/inet_diag.c, inet_diag_dump_compat:
    ``req.sdiag_family = AF_UNSPEC``), where SOCK_DIAG_BY_FAMILY takes one
    request per family. A kernel that refuses it is asked the newer way; the
    answer is the same inet_diag_msg records either way. ``port``: only the
    sockets listening on it (the request's source port, which the kernel
    compares with each listener's: net/ipv4/inet_diag.c, idiag_sport), 0 for
    every one."""
    sock = _diag_socket()
    if sock is None:
        return None
    try:
        return _netlink_query(sock, port, 1)
    finally:
        sock.close()


def _diag_socket() -> Optional[Socket]:
    """A NETLINK_SOCK_DIAG socket, blocking, with a receive timeout: the
    kernel answers a dump request within the send and each recv
    (netlink_dump), and settimeout() would poll(2) before every recv. A
    timeout is an OSError (EAGAIN). None when there is none to be had."""
    import socket
    import struct

    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_SOCK_DIAG
    except (OSError, AttributeError):
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 2, 0))
    except OSError:
        sock.close()
        return None
    return sock


def _netlink_query(sock: Socket, port: int, seq: int) -> Optional[List[tuple]]:
    """_netlink_rows on ``sock``, its requests numbered from ``seq``."""
    import socket
    import struct

    try:
        # nlmsghdr (TCPDIAG_GETSOCK = 18, NLM_F_REQUEST | NLM_F_DUMP) +
        # inet_diag_req: family (ignored), lengths, extensions, sockid (48
        # bytes), states = 1 << TCP_LISTEN (10), dbs
        sockid = struct.pack(">H46x", port)  # idiag_sport (network order), the rest 0
        req = struct.pack("=BBBB", socket.AF_INET, 0, 0, 0) + sockid \
            + struct.pack("=II", 1 << 10, 0)
        sock.send(struct.pack("=IHHII", 16 + len(req), 18, 0x301, seq, 0) + req)
        out = _netlink_answer(sock, seq)
        if out is not None:
            return out
        out = []
        for number, family in enumerate((socket.AF_INET, socket.AF_INET6), start=seq + 1):
            # nlmsghdr (SOCK_DIAG_BY_FAMILY = 20) + inet_diag_req_v2: TCP,
            # states = 1 << TCP_LISTEN (10)
            req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << 10) + sockid
            sock.send(struct.pack("=IHHII", 16 + len(req), 20, 0x301, number, 0) + req)
            rows = _netlink_answer(sock, number)
            if rows is None:
                return None
            out.extend(rows)
    except (OSError, struct.error, IndexError):
        return None
    return out


def _netlink_answer(sock: Socket, seq: int) -> Optional[List[tuple]]:
    """The rows of the answer to sock_diag dump request ``seq`` (see
    _netlink_rows), read to its NLMSG_DONE; None when the kernel answered
    with an error, or with a message to another request (one cut short)."""
    import struct

    out: List[tuple] = []
    unpack_from = struct.unpack_from
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return None
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, number = unpack_from("=IHHI", data, offset)
            if length < 16 or number != seq:
                return None
            if kind == 3:  # NLMSG_DONE
                return out
            if kind == 2:  # NLMSG_ERROR
                return None
            # inet_diag_msg: family, state, timer, retrans, sockid (48
            # bytes: ports, addresses, interface, cookie), expires,
            # rqueue, wqueue, uid, inode
            body = offset + 16
            port = unpack_from(">H", data, body + 4)[0]
            raw = data[body + 8:body + (12 if data[body] == 2 else 24)]  # AF_INET: 4 bytes
            queue, limit, _uid, inode = unpack_from("=IIII", data, body + 56)
            if len(raw) == 16 and raw[:12] == b"\0" * 10 + b"\xff\xff":
                raw = raw[12:]
            out.append((raw, port, inode, queue, limit))
            offset += (length + 3) & ~3


def _netlink_listeners() -> Optional[List[tuple]]:
    """``(address bytes, port, inode)`` of the LISTEN sockets, from sock_diag."""
    rows = _netlink_rows()
    return None if rows is None else [row[:3] for row in rows]


class SockDiag:
    """A sock_diag socket kept by a long-running run (processes.Reuse) for the
    socket table it reads every cycle: one socket made, bound and closed
    fewer per cycle. Each query is numbered, and an answer that is not to
    it (left over from one cut short), or any failure, closes the socket:
    that query is then made as without one, on a new socket, and the next
    one makes another. One query at a time (--listen's scrapes run at once)."""

    def __init__(self) -> None:
        import threading

        self._sock: Optional[Socket] = None
        self._seq = 0
        self._lock = threading.Lock()

    def rows(self, port: int = 0) -> Optional[List[tuple]]:
        """_netlink_rows(port), asked on the kept socket."""
        with self._lock:
            if self._sock is None:
                self._sock = _diag_socket()
            if self._sock is not None:
                self._seq = self._seq % 0x3FFFFFFF + 3  # a query uses up to three numbers
                rows = _netlink_query(self._sock, port, self._seq)
                if rows is not None:
                    return rows
                self._sock.close()
                self._sock = None
        return _netlink_rows(port)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def listener_rows(root: Optional[str] = None, only: int = 0,
                  diag: Optional[SockDiag] = None) -> Optional[List[tuple]]:
    """``(address bytes, port, inode, queue, limit)`` of every TCP socket in
    LISTEN state, IPv4 and IPv6, as this process's network namespace sees
    them; None when neither table can be read (then nothing can be told).
    ``queue`` is the accept queue's length; ``limit`` its backlog limit, None
    when read from /proc/net/tcp (its rx_queue is the queue's length for a
    listener, but the table has no column for the limit). ``only``: those
    listening on that port (the kernel is asked for no other). ``diag``: a
    long-running run's sock_diag socket (SockDiag), asked instead of a new one."""
    base = root or PROC
    if base == "/proc":
        found = _netlink_rows(only) if diag is None else diag.rows(only)
        if found is not None:
            return found
    out = []
    readable = False
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{base}/net/{table}", "rb") as fh:
                lines = fh.read(MAX_TABLE).decode("ascii", "replace").splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != TCP_LISTEN:
                continue
            addr, _, hex_port = fields[1].partition(":")
            raw = _address(addr)
            try:
                port, inode = int(hex_port, 16), int(fields[9])
                queue: Optional[int] = int(fields[4].partition(":")[2], 16)
            except ValueError:
                continue
            if raw is not None and (port == only or not only):
                out.append((raw, port, inode, queue, None))
    return out if readable else None


def tcp_listeners(root: Optional[str] = None) -> Optional[List[tuple]]:
    """``(address bytes, port, inode)`` of every TCP socket in LISTEN state,
    IPv4 and IPv6, as this process's network namespace sees them; None when
    neither table can be read (then nothing can be told)."""
    rows = listener_rows(root)
    return None if rows is None else [row[:3] for row in rows]


def listeners(port: int) -> List[tuple]:
    """``(address text, inode, queue, limit)`` of the LISTEN sockets on ``port``
    (limit None when the kernel's sock_diag could not be asked)."""
    import socket

    return [(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw),
             inode, queue, limit)
            for raw, p, inode, queue, limit in listener_rows() or () if p == port]


def listening_sockets(port: int) -> List[tuple]:
    """``(address text, inode)`` of the LISTEN sockets on ``port``."""
    return [(addr, inode) for addr, inode, _queue, _limit in listeners(port)]


def socket_inodes(pid: int) -> set:
    """Inodes of the sockets process ``pid`` holds open (Denied without the
    right to read another user's /proc/PID/fd)."""
    return set(socket_fds(pid))


def socket_fds(pid: int) -> Dict[int, str]:
    """The sockets process ``pid`` holds open: inode -> a descriptor (its
    name in /proc/PID/fd) that holds it (Denied without the right to read
    another user's /proc/PID/fd)."""
    path = f"{PROC}/{pid}/fd"
    try:
        names = os.listdir(path)
    except (FileNotFoundError, ProcessLookupError):
        raise NoProcess(pid) from None
    except PermissionError:
        raise Denied(path) from None
    out: Dict[int, str] = {}
    for fd in names:
        try:
            link = os.readlink(f"{path}/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            try:
                out.setdefault(int(link[8:-1]), fd)
            except ValueError:
                continue
    return out


def holds_at(pid: int, places: Sequence[Tuple[str, int]]) -> bool:
    """Whether each descriptor ``fd`` of process ``pid`` still holds the
    socket ``inode`` of ``places`` ((fd, inode) pairs): one readlink each,
    where socket_fds reads every descriptor. False when any does not, or
    cannot be read."""
    path = f"{PROC}/{pid}/fd"
    try:
        for fd, inode in places:
            if os.readlink(f"{path}/{fd}") != f"socket:[{inode}]":
                return False
    except OSError:
        return False
    return True


def pids() -> List[int]:
    """Every process ID."""
    return [int(e) for e in os.listdir(PROC) if e.isdigit()]
