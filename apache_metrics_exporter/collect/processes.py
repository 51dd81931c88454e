"""The Apache process tree: parent, native workers, mod_wsgi daemon groups, memory.

Scanned once per snapshot, from /proc (collect/procfs.py). Memory is RSS by default;
PSS and USS (``/proc/PID/smaps_rollup``) are fairer for forked workers but need
the rights to read other users' processes: without them the scan falls back to
RSS for all processes and says so once.
"""

from __future__ import annotations

from apache_metrics_exporter import clocks
from apache_metrics_exporter.catalogue import NATIVE_GROUP
from apache_metrics_exporter.collect import procfs
from apache_metrics_exporter.records import NamedTuple
from apache_metrics_exporter.units import hostport

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

    from apache_metrics_exporter.collect.host import Host

WSGI_PREFIX = "(wsgi:"
DEFAULT_EXE_NAMES = ("apache2", "httpd")
MEMORY_KINDS = ("rss", "pss", "uss")
# Seconds of life after which a child's title is its last (see Tree).
TITLE_SETTLED = 10.0


class ProcInfo(NamedTuple):
    """One Apache child as scanned: identity (for safe signalling) and memory."""

    pid: int
    create_time: float
    group: str  # "native" or the mod_wsgi group name
    memory: int  # bytes, of the snapshot's memory kind
    title: str  # cmdline()[0], e.g. "(wsgi:example)"


class ProcessScan(NamedTuple):
    """What one scan found, and what the user should hear about it."""

    parent_pid: Optional[int]
    parent_create_time: Optional[float]
    children: List[ProcInfo]
    truncated: Set[str]  # mod_wsgi groups whose names the title cut
    memory_kind: str
    warnings: Tuple[str, ...] = ()
    # The parent's start in clock ticks after boot: unlike parent_create_time
    # (ticks + /proc/stat's btime, which moves when the wall clock steps), it
    # never changes while the process lives (restarts.py compares it).
    parent_start_ticks: Optional[int] = None

    def groups(self) -> Dict[str, List[int]]:
        """Memory values per group, ``native`` first, then mod_wsgi groups by name."""
        out: Dict[str, List[int]] = {NATIVE_GROUP: []}
        for name in sorted({c.group for c in self.children} - {NATIVE_GROUP}):
            out[name] = []
        for c in self.children:
            out[c.group].append(c.memory)
        return out


EMPTY_SCAN = ProcessScan(None, None, [], set(), "rss")


class MemoryStats(NamedTuple):
    """apache-manager's per-group statistics; an empty group is all zeros."""

    count: int  # type: ignore[assignment]  # apache-manager's name; shadows tuple.count
    min: int
    max: int
    average: float
    median: float


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
    """The PID in a PID file; None unless it is a small regular file (a FIFO
    planted there would block for ever, a device never end)."""
    from apache_metrics_exporter.paths import Corrupt, read_bounded

    try:
        text = read_bounded(path, 64).strip()
    except (OSError, Corrupt):
        return None
    return int(text) if text.isdigit() and len(text) < 10 else None


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


class Listener(NamedTuple):
    """One listening socket of the proven Apache, as the kernel saw it while
    proving it: its accept queue (connections that completed the handshake
    and wait for Apache to accept them) and that queue's backlog limit."""

    address: str  # "127.0.0.1:8080", "[::1]:8080"
    queue: int
    limit: Optional[int]  # None when only /proc/net/tcp could be read


class Parent(NamedTuple):
    """The proven Apache parent of a URL, or None and one line saying why not."""

    pid: Optional[int]
    reason: str  # how it was proven, or why there is none
    # The listening sockets the proof found the parent's tree holding (empty
    # when proven by --pid-file alone or not at all): read in the same kernel
    # query as the proof, so they are figures of this Apache and no other.
    listeners: Tuple[Listener, ...] = ()
    # The parent's /proc/PID/stat as a kept proof was checked with, read a
    # moment ago in the same collection: the scan need not read it again.
    stat: Optional[procfs.Stat] = None
    # 'NAME (PID N)' of the program that is not Apache and holds the URL's
    # listening socket, when that is why there is no parent: what answered
    # the fetch was not Apache (--check says so instead of Apache's fixes).
    other: str = ""


def _listeners(addresses: Sequence[str], port: int, host: Host) -> Dict[int, Listener]:
    """The sockets a connection to ``addresses``:``port`` can reach, by inode:
    those bound to one of the addresses if any (the kernel prefers them), else
    those bound to the wildcard address."""
    exact: Dict[int, Listener] = {}
    wildcard: Dict[int, Listener] = {}
    v4 = {a[7:] if a.startswith("::ffff:") else a for a in addresses if "." in a}
    wanted = set(addresses) | v4 | {"::ffff:" + a for a in v4}
    any_v4 = bool(v4)
    for addr, inode, queue, limit in host.listeners(port):
        where = Listener(hostport(addr, port), queue, limit)
        if addr in wanted:
            exact[inode] = where
        elif addr == "0.0.0.0" and any_v4 or addr == "::":
            wildcard[inode] = where
    return exact or wildcard


def _by_address(found: Dict[int, Listener]) -> Tuple[Listener, ...]:
    """One Listener per address:port, sorted: sockets that share one
    (SO_REUSEPORT, ListenCoresBucketsRatio) have their queues and limits
    added, since the kernel spreads the address's connections over them."""
    merged: Dict[str, Listener] = {}
    for item in found.values():
        seen = merged.get(item.address)
        if seen is None:
            merged[item.address] = item
        else:
            limit = None if seen.limit is None or item.limit is None \
                else seen.limit + item.limit
            merged[item.address] = Listener(item.address, seen.queue + item.queue, limit)
    return tuple(merged[a] for a in sorted(merged))


def _holds(pid: int, inodes: set) -> bool:
    """Whether ``pid`` and its children hold every one of the sockets (Denied
    when that cannot be told because some of them could not be read)."""
    held: set = set()
    denied = False

    def tree() -> Iterable[int]:  # the children are listed only if the parent lacks some
        yield pid
        yield from procfs.children(pid)

    for p in tree():
        try:
            held |= procfs.socket_inodes(p) & inodes
        except procfs.NoProcess:
            continue
        except procfs.Denied:
            denied = True
        if held == inodes:
            return True
    if denied:
        raise procfs.Denied(pid)
    return False


_proven: Dict[tuple, int] = {}  # (addresses, port) -> the parent proven last time
# Keys _proven keeps, the oldest going first: a --listen's /probe reaches
# whatever addresses a --probe-allow pattern admits (127.*.*.*: 16 million).
PROVEN_LIMIT = 1024


def _learnt(key: tuple, top: int) -> None:
    """Remember ``top`` as the parent proven for ``key``, within PROVEN_LIMIT
    (--listen's scrapes run at once: a key another thread took first is
    simply gone)."""
    _proven.pop(key, None)
    while len(_proven) >= PROVEN_LIMIT:
        try:
            del _proven[next(iter(_proven))]
        except (KeyError, RuntimeError, StopIteration):  # (another thread's turn)
            break
    _proven[key] = top


class Proof(NamedTuple):
    """A tree proof as a long-running run keeps it: which listening sockets
    it covered, and the parent it proved (PID and start time). ``places``:
    the parent's descriptors that held those sockets when last seen, as
    (fd, inode) pairs, empty when unknown or when some socket is held by a
    child only (then the tree is walked every time)."""

    inodes: frozenset
    pid: int
    start_ticks: int
    places: tuple = ()


class Tree(NamedTuple):
    """What does not change in a proven parent's tree while that parent lives:
    the room of its title, and the title of each child that has its last one
    (by PID and start time: a PID used again is another process, read anew).

    A child's title is its last once it is mod_wsgi's, or once it was read
    when the child was already older than TITLE_SETTLED (10 s). A child
    changes its title in two ways only. mod_wsgi writes a daemon's
    ``(wsgi:NAME)`` right after the fork (wsgi_start_process: after its
    "Starting process" log line, before it changes priority, root or
    user, or loads Python; nothing writes it later), microseconds of the
    child's own running into its life: until then it shows the parent's
    title, so a younger child is read again every cycle. 10 s is that
    moment with room for a host so loaded that a new process waits seconds
    to run, and costs a title read per cycle only in a child's first 10 s
    (at most twice at --interval 10). An exec changes the title too, and
    with it the process name, which stat shows every cycle: scan drops a
    child whose name is not Apache's. Assumed: no child runs mod_wsgi's
    title code later than 10 s after its fork (one stopped or frozen that
    long right after it, then scanned before it ran again, keeps the
    parent's title: "native"), and none execs, after its first 10 s, a
    program whose file is named as Apache's (apache2, httpd): it would keep
    its old title in this run's figures until it exits. Neither leads to
    a signal: the reaper keeps none of this and reads every title afresh.

    The age is CLOCK_BOOTTIME (read before the titles) less the start ticks
    of /proc/PID/stat, which count CLOCK_BOOTTIME too (task->start_boottime,
    in the reader's time namespace like the clock); an age that cannot be
    (no clock, a start after now) is young. ``files``: the /proc files of
    the parent and its children read every cycle, held open (procfs.Files;
    None for a captured tree); a kept title's cmdline is let go."""

    room: int
    titles: Dict[Tuple[int, int], str]
    files: Optional[procfs.Files] = None

    def stat(self, pid: int) -> procfs.Stat:
        """``pid``'s stat, read where the tree read it last (its held file:
        the same process, or none; by path once closed), else by path."""
        return procfs.stat(pid) if self.files is None else self.files.stat(pid)


class Reuse:
    """What a long-running run (cycle.Cycle) keeps of the process tree between
    its cycles, so that a cycle reads only what can change.

    A tree proof is kept while the listening sockets of the URL's address
    (read every cycle anyway, for the accept queue) are the same sockets -
    the same inodes, still held by the parent's tree - and the proven parent
    is alive with the same start time: a restart makes new sockets and a
    new parent, another server on the port has other sockets, so any of
    those is proven afresh in the very cycle it is seen. A graceful restart
    keeps both: it is the children that change, and those are listed anew
    every cycle. The reaper keeps none of this: it proves and re-verifies
    right before every signal.

    Bounded: at most LIMIT proofs and trees (a --listen probing many targets);
    a tree keeps the titles of its current children only, and the /proc
    files it holds open (procfs.Files) are those of its parent and current
    children, closed with the tree, within a limit for the whole process.
    ``proved`` and ``reused`` count the proofs made and kept (for tests and
    -vv)."""

    LIMIT = 1024

    def __init__(self) -> None:
        import threading

        self.proofs: Dict[tuple, Proof] = {}
        self.trees: Dict[Tuple[int, int], Tree] = {}
        # The socket table, read every cycle (the proof's sockets, their
        # accept queues): asked on one kept sock_diag socket.
        self.diag = procfs.SockDiag()
        self.proved = 0
        self.reused = 0
        self._lock = threading.Lock()  # --listen's scrapes run at once

    def kept(self, key: tuple, inodes: set, exe_names: Sequence[str]) -> Optional[int]:
        """The parent proven for ``key`` if that proof still holds: the same
        sockets, still held by its tree, the parent alive with the same start
        time; else None."""
        st = self.kept_stat(key, inodes, exe_names)
        return None if st is None else st.pid

    def kept_stat(self, key: tuple, inodes: set,
                  exe_names: Sequence[str]) -> Optional[procfs.Stat]:
        """kept(), as the parent's stat that the check read."""
        proof = self.proofs.get(key)
        if proof is None:
            return None
        if proof.inodes != inodes:
            self.drop(key)
            return None
        identity = (proof.pid, proof.start_ticks)
        tree = self.trees.get(identity)
        try:
            st = procfs.stat(proof.pid) if tree is None else tree.stat(proof.pid)
        except (procfs.NoProcess, procfs.Denied):
            self.drop(key)
            return None
        if st.start_ticks != proof.start_ticks or st.name not in exe_names:
            self.drop(key)
            return None
        # The same sockets may have passed to a process outside the tree
        # (SCM_RIGHTS, a hand-over between servers): that one answers now.
        # The parent's descriptors that held them last time are looked at
        # first (one readlink each); if any no longer does, the tree is
        # walked as the fresh proof walks it.
        if not (proof.places and procfs.holds_at(proof.pid, proof.places)):
            try:
                if not _holds(proof.pid, set(inodes)):
                    self.drop(key)
                    return None
            except (procfs.NoProcess, procfs.Denied):
                self.drop(key)
                return None
            self._learn(key, proof)
        with self._lock:
            self.reused += 1
        return st

    def _learn(self, key: tuple, proof: Proof) -> None:
        """Note which of the parent's descriptors hold the proof's sockets
        (its tree was just seen to hold them all), if the parent itself
        holds every one."""
        try:
            fds = procfs.socket_fds(proof.pid)
        except (procfs.NoProcess, procfs.Denied):
            return
        if all(inode in fds for inode in proof.inodes):
            places = tuple(sorted((fds[inode], inode) for inode in proof.inodes))
            with self._lock:
                if self.proofs.get(key) is proof:
                    self.proofs[key] = proof._replace(places=places)

    def keep(self, key: tuple, inodes: set, pid: int) -> None:
        """Remember a proof just made (not kept if the parent is gone already).
        The tree of the parent it replaces, if another, is forgotten."""
        try:
            start = procfs.stat(pid).start_ticks
        except (procfs.NoProcess, procfs.Denied):
            return
        with self._lock:
            self.proved += 1
            old = self.proofs.pop(key, None)
            while len(self.proofs) >= self.LIMIT:
                del self.proofs[next(iter(self.proofs))]
            self.proofs[key] = Proof(frozenset(inodes), pid, start)
        if old is not None and (old.pid, old.start_ticks) != (pid, start):
            self._forget((old.pid, old.start_ticks))

    def drop(self, key: tuple) -> None:
        """Drop the proof of ``key``, which no longer holds (its sockets are
        others or none, its parent gone or no longer theirs), and the tree of
        its parent unless another proof still names that parent: a tree
        holds the /proc files of its processes open, and nothing would close
        those of a server that stopped until one was proven there again. A
        fresh proof of the same parent makes its tree anew."""
        with self._lock:
            proof = self.proofs.pop(key, None)
            if proof is None:
                return
            identity = (proof.pid, proof.start_ticks)
            if any((p.pid, p.start_ticks) == identity for p in self.proofs.values()):
                return
        self._forget(identity)

    def _forget(self, parent: Tuple[int, int]) -> None:
        """Drop the tree of a parent that is gone (or no longer proven), and
        close its files."""
        with self._lock:
            tree = self.trees.pop(parent, None)
        if tree is not None and tree.files is not None:
            tree.files.close()

    def tree(self, parent: Tuple[int, int], room: Optional[int] = None,
             titles: Optional[Dict[Tuple[int, int], str]] = None,
             files: Optional[procfs.Files] = None) -> Optional[Tree]:
        """The kept tree of ``parent`` (PID, start ticks); with ``room`` and
        ``titles`` (and ``files``), replace it."""
        if room is None or titles is None:
            return self.trees.get(parent)
        evicted = []
        with self._lock:
            old = self.trees.pop(parent, None)
            while len(self.trees) >= self.LIMIT:
                evicted.append(self.trees.pop(next(iter(self.trees))))
            # The tree kept longest without a look (another parent's) is
            # looked at now: one per tree kept, in turn.
            other = next(iter(self.trees), None)
            self.trees[parent] = Tree(room, titles, files)
        if old is not None and old.files is not None and old.files is not files:
            evicted.append(old)
        for gone in evicted:
            if gone.files is not None:
                gone.files.close()
        if other is not None:
            self._look(other)
        return None

    def _look(self, parent: Tuple[int, int]) -> None:
        """Forget the tree of ``parent`` if that process is gone (the PID
        no longer names it), else put it last in turn. A tree whose parent
        exited is otherwise dropped with its proof (drop) - but a parent
        named by --pid-file has none, and nothing else would close the
        files of a tree whose parent left (every restart of that Apache)."""
        tree = self.trees.get(parent)
        if tree is None:
            return
        try:
            alive = tree.stat(parent[0]).start_ticks == parent[1]  # (one pread)
        except (procfs.NoProcess, procfs.Denied):
            alive = False
        if not alive:
            self._forget(parent)
            return
        with self._lock:
            if self.trees.get(parent) is tree:
                self.trees[parent] = self.trees.pop(parent)


def find_parent(addresses: Sequence[str], port: int, exe_names: Sequence[str],
                pid_file: Optional[str] = None, hints: Iterable[int] = (),
                host: Optional[Host] = None, reuse: Optional[Reuse] = None) -> Parent:
    """The Apache parent that serves ``addresses``:``port``: the topmost Apache
    ancestor of the process holding the listening socket. Proven, never guessed.

    ``hints`` (PIDs from the worker table, the parent found last time) only
    say where to look first: a candidate counts once it is seen to hold the
    socket. ``pid_file`` is the operator's word, taken when the socket's owner
    cannot be seen (no right to read other users' /proc/PID/fd) and refused
    when it contradicts what can be seen. ``host``: the batch's shared
    reading of the socket table and its owners (collect/host.py); a new one
    when not given.

    ``reuse``: a long-running run's kept proofs (Reuse): the proof made in
    an earlier cycle stands while its sockets and parent are unchanged.
    """
    if host is None:
        from apache_metrics_exporter.collect.host import Host

        host = Host((port,), reuse.diag if reuse is not None else None)
    where = f"{_join(addresses)}:{port}"
    named = _read_pid_file(pid_file) if pid_file else None
    named_top = _top_apache(named, exe_names) if named else None
    if pid_file and named_top is None:
        return Parent(None, f"--pid-file {pid_file} names no running "
                            f"{'/'.join(exe_names)} process")
    found = _listeners(addresses, port, host) if addresses else {}
    inodes = set(found)
    key = (tuple(addresses), port)
    if not inodes:
        if reuse is not None:
            reuse.drop(key)  # (the server stopped: its tree's files are let go)
        if addresses:
            return Parent(None, f"nothing listens on {where}")
        if named_top:
            return Parent(named_top, f"named by --pid-file {pid_file}")
        return Parent(None, "the URL is not on a loopback address")
    if reuse is not None:
        kept = reuse.kept_stat(key, inodes, exe_names)
        if kept is not None and (not named_top or named_top == kept.pid):
            return Parent(kept.pid, f"listening on {where}", _by_address(found), kept)
    candidates: List[int] = []
    for pid in [_proven.get(key, 0), named_top or 0]:
        if pid and pid not in candidates:
            candidates.append(pid)
    for pid in set(hints):
        try:
            ppid = procfs.stat(pid).ppid
        except (procfs.NoProcess, procfs.Denied):
            continue
        if ppid > 1 and ppid not in candidates:
            candidates.append(ppid)
    tops = set()
    denied = False
    for pid in candidates:
        top = _top_apache(pid, exe_names)
        if top is None:
            continue
        try:
            if _holds(top, inodes):
                tops.add(top)
                break
        except (procfs.NoProcess, procfs.Denied) as exc:
            denied = denied or isinstance(exc, procfs.Denied)
    proven_early = bool(tops)
    other = ""
    if not tops:
        tops, denied_all = _apache_owners(inodes, exe_names, host)
        denied = denied or denied_all
        if not tops:
            other = host.other_owner(inodes, exe_names)
            if other:
                return Parent(None, f"the process listening on {where} is {other}, "
                                    f"not {'/'.join(exe_names)}", other=other)
            if named_top and denied:
                return Parent(named_top, f"named by --pid-file {pid_file}")
            if denied:
                return Parent(None, f"cannot see which process listens on {where}: "
                                    "reading other users' /proc/PID/fd needs root (or "
                                    "Apache's user); give --pid-file")
            return Parent(None, f"no process of this host holds the socket listening "
                                f"on {where} (another network namespace?)")
    if len(tops) > 1:
        return Parent(None, f"several Apache parents ({_join(map(str, sorted(tops)))}) "
                            f"listen on {where}; give --pid-file")
    top = tops.pop()
    if not proven_early:
        # Every socket a connection to the URL can reach must be this tree's:
        # a co-listener that is not (another user's process on the same port
        # and another address of the name, an IPv4 socket beside an IPv6-only
        # one) may be the one that answered.
        try:
            whole = _holds(top, inodes)
        except (procfs.NoProcess, procfs.Denied):
            whole = False
        if not whole:
            other = host.other_owner(inodes, exe_names) or "a process this user cannot see"
            return Parent(None, f"{other} listens on {where} beside Apache (PID {top}); "
                                "it may be the one answering, so no process is trusted")
    if named_top and named_top != top:
        return Parent(None, f"--pid-file {pid_file} names PID {named_top}, but the Apache "
                            f"listening on {where} is PID {top}")
    _learnt(key, top)
    if reuse is not None:
        reuse.keep(key, inodes, top)
    return Parent(top, f"listening on {where}", _by_address(found))


def parent_of_url(host: str, port: int, exe_names: Sequence[str],
                  pid_file: Optional[str] = None, hints: Iterable[int] = (),
                  peer: Optional[str] = None, shared: Optional[Host] = None,
                  reuse: Optional[Reuse] = None) -> Parent:
    """The proven Apache parent serving ``host``:``port`` (see find_parent); a
    host that is not a loopback address has none, unless --pid-file names it
    (and then no socket is read: a remote target costs no /proc work beyond
    the PID file's process). ``peer``, the address that answered the fetch,
    is what is proven when known: the name is not resolved a second time.
    ``shared``: the batch's Host (collect/host.py)."""
    from apache_metrics_exporter.collect.loopback import loopback_addresses

    addresses = loopback_addresses(peer if peer else host)
    if addresses is None and not pid_file:
        return Parent(None, f"{host} is not a loopback address of this host (run the "
                            "exporter on Apache's host, or give --pid-file)")
    return find_parent(addresses or (), port, exe_names, pid_file, hints, host=shared,
                       reuse=reuse)


def _apache_owners(inodes: set, exe_names: Sequence[str], host: Host) -> tuple:
    """(Apache parents whose processes hold one of the sockets, whether some
    could not be read), from the batch's one walk (Host.apache_holders)."""
    pids, denied = host.apache_holders(inodes, exe_names)
    tops: Set[int] = set()
    for pid in pids:
        top = _top_apache(pid, exe_names)
        if top is not None:
            tops.add(top)
    return tops, denied


def _join(items: Iterable[str]) -> str:
    return ", ".join(hostport(a) for a in items)


# Where Apache reads its configuration when its command line does not say:
# (ServerRoot, config file) compiled into Debian's apache2 and RHEL's httpd.
DEFAULT_CONFIGS = {"apache2": ("/etc/apache2", "apache2.conf"),
                   "httpd": ("/etc/httpd", "conf/httpd.conf")}
# parent pid -> ((its start time, its daemons), its groups): one per parent, bounded
_groups_of: Dict[int, Tuple[tuple, List[str]]] = {}
GROUPS_LIMIT = 64


def configured_groups(parent_pid: int, exe_names: Sequence[str],
                      daemons: frozenset = frozenset(),
                      start_ticks: Optional[int] = None) -> List[str]:
    """The ``WSGIDaemonProcess`` names in the running Apache's configuration
    (``running_config``); read once per parent and set of mod_wsgi daemons
    (``daemons``, their (PID, start time)): a graceful restart keeps the
    parent but may change the configuration, and it always starts the
    daemons anew, so the configuration is read again then. ``start_ticks``:
    the parent's start, when the caller has just read it."""
    if start_ticks is None:
        try:
            start_ticks = procfs.stat(parent_pid).start_ticks
        except (procfs.NoProcess, procfs.Denied):
            return []
    key = (start_ticks, daemons)
    seen = _groups_of.get(parent_pid)
    if seen is not None and seen[0] == key:
        return seen[1]
    config = running_config(parent_pid)
    if config is None:
        return []
    _groups_of.pop(parent_pid, None)
    while len(_groups_of) >= GROUPS_LIMIT:
        del _groups_of[next(iter(_groups_of))]
    _groups_of[parent_pid] = (key, config.wsgi_groups)
    return config.wsgi_groups


def running_config(parent_pid: int,
                   make: Optional[Callable[[str], Any]] = None) -> Optional[Any]:
    """The configuration the Apache parent ``parent_pid`` runs, read as it
    reads it (discovery.ApacheConfig, or ``make(server_root)``): its ``-d``/``-f``/
    ``-D`` arguments, else its build's defaults, with ``Include``s followed;
    None when the process cannot be read."""
    try:
        st = procfs.stat(parent_pid)
        argv = procfs.cmdline(parent_pid)
    except (procfs.NoProcess, procfs.Denied):
        return None
    root, conf = DEFAULT_CONFIGS.get(st.name, DEFAULT_CONFIGS["apache2"])
    defines = {}
    args = iter(argv[1:])
    for arg in args:
        flag, value = arg[:2], arg[2:]
        if flag in ("-d", "-f", "-D") and not value:
            value = next(args, "")
        if flag == "-d" and value:
            root = value
        elif flag == "-f" and value:
            conf = value
        elif flag == "-D" and value:
            defines[value] = ""
    from apache_metrics_exporter.collect.discovery import ApacheConfig

    config = (make or ApacheConfig)(root)
    config.defines.update(defines)
    config.read(conf if conf.startswith("/") else f"{root}/{conf}")
    return config


def resolve_groups(parent_pid: int, exe_names: Sequence[str],
                   truncated: Iterable[str], daemons: frozenset = frozenset(),
                   start_ticks: Optional[int] = None) -> Dict[str, str]:
    """Cut-short group names mapped to the one configured group each can be
    (``daemons``, ``start_ticks``: see configured_groups)."""
    groups = configured_groups(parent_pid, exe_names, daemons, start_ticks)
    out = {}
    for name in truncated:
        matches = {g for g in groups if g.startswith(name)}
        if len(matches) == 1:
            out[name] = matches.pop()
    return out


def _memory(pid: int, kind: str) -> int:
    if kind == "rss":
        return procfs.rss(pid)
    pss, uss = procfs.pss_uss(pid)
    return pss if kind == "pss" else uss


def scan(parent_pid: Optional[int], exe_names: Sequence[str],
         memory_kind: str = "rss", resolve_names: bool = True,
         reuse: Optional[Reuse] = None, parent_stat: Optional[procfs.Stat] = None
         ) -> ProcessScan:
    """Children of the parent with the same executable, grouped and measured.

    ``reuse``: a long-running run's kept tree (Reuse): the parent's title
    room, and a child's title once the tree holds its last one (same PID
    and start time; mod_wsgi's, or one read past TITLE_SETTLED of the
    child's life: see Tree for why that is safe and what it assumes), are
    not read again; the children are listed, and each one's identity,
    name, state and memory read, every time. ``parent_stat``: the parent's
    stat, when the proof has just read it (Parent.stat)."""
    if parent_pid is None:
        return EMPTY_SCAN._replace(memory_kind=memory_kind)
    try:
        if parent_stat is not None and parent_stat.pid == parent_pid:
            parent = parent_stat
        else:
            parent = procfs.stat(parent_pid)
        parent_ctime = procfs.create_time(parent)
        identity = (parent_pid, parent.start_ticks)
        kept = reuse.tree(identity) if reuse is not None else None
        if kept is not None:
            room, known, files = kept.room, kept.titles, kept.files
        else:
            parent_argv = procfs.cmdline(parent_pid)
            room, known, files = (len(parent_argv[0]) if parent_argv else 0), {}, None
        if reuse is not None and (files is None or files.closed) and procfs.PROC == "/proc":
            files = procfs.Files()  # (closed: by another thread, whose tree went meanwhile)
        kids = files.children(parent_pid) if files is not None and parent.threads == 1 \
            else procfs.children(parent_pid, parent.threads)
    except (procfs.NoProcess, procfs.Denied):
        return EMPTY_SCAN._replace(memory_kind=memory_kind)
    # The children's stat, statm and (native ones') cmdline: from the
    # tree's open files in a long-running run, each read as fresh as by path.
    stat, cmdline = (procfs.stat, procfs.cmdline) if files is None \
        else (files.stat, files.cmdline)
    rss = procfs.rss if files is None else files.rss
    children: List[ProcInfo] = []
    truncated: Set[str] = set()
    titles: Dict[Tuple[int, int], str] = {}
    daemons: Set[Tuple[int, int]] = set()
    # Before any title is read: a child older than TITLE_SETTLED now was so
    # when its title was read (Tree).
    now = clocks.boottime() if reuse is not None else None
    for pid in kids:
        try:
            st = stat(pid)
            if st.name not in exe_names or st.ppid != parent_pid or st.state in "ZX":
                continue  # not Apache's, or exited (a zombie has no memory left)
            title = known.get((pid, st.start_ticks))
            read = title is None
            if title is None:
                cmd = cmdline(pid)
                title = cmd[0] if cmd else ""
            mem = rss(pid) if memory_kind == "rss" else _memory(pid, memory_kind)
        except procfs.NoProcess:
            continue  # gone between listing and reading: not an error
        except procfs.Denied:
            if memory_kind == "rss":
                continue
            fallback = scan(parent_pid, exe_names, "rss", resolve_names, reuse, parent)
            return fallback._replace(warnings=fallback.warnings + (
                f"--memory {memory_kind} needs the right to read other users' "
                "/proc/PID/smaps_rollup (run as root or as Apache's user); "
                "reporting RSS instead",))
        if not read or title.startswith(WSGI_PREFIX) or _settled(st.start_ticks, now):
            # Its last title (Tree); a younger child still showing the
            # parent's may be a daemon that has not written its own yet,
            # so it is read again next cycle.
            titles[(pid, st.start_ticks)] = title
            if read and files is not None:
                files.let_go(pid, "cmdline")
        info = wsgi_group(title, room)
        group = NATIVE_GROUP if info is None else info[0]
        if info is not None:
            daemons.add((pid, st.start_ticks))
        if info is not None and info[1]:
            truncated.add(group)
        children.append(ProcInfo(pid, procfs.create_time(st), group, mem,
                                 title.rstrip(" \x00")))
    if reuse is not None:
        if files is not None:
            files.retain({parent_pid, *kids})
        reuse.tree(identity, room, titles, files)
    if truncated and resolve_names:
        resolved = resolve_groups(parent_pid, exe_names, truncated, frozenset(daemons),
                                  parent.start_ticks)
        if resolved:
            children = [c._replace(group=resolved.get(c.group, c.group)) for c in children]
            truncated = truncated - set(resolved)
    warnings = (cut_names_warning(sorted(truncated), room, resolve_names),) if truncated \
        else ()
    return ProcessScan(parent_pid, parent_ctime, children, truncated, memory_kind, warnings,
                       parent.start_ticks)


def _settled(start_ticks: int, now: Optional[float]) -> bool:
    """Whether a child started ``start_ticks`` clock ticks after boot was
    older than TITLE_SETTLED at ``now`` (CLOCK_BOOTTIME seconds; None: no
    clock, young). The ticks are the start rounded down: one more is added."""
    if now is None:
        return False
    return now - (start_ticks + 1) / procfs.CLOCK_TICKS > TITLE_SETTLED


def cut_names_warning(names: Sequence[str], room: int, resolved: bool) -> str:
    """One warning for every group name the process title cut short, saying
    only what this run does with them: with --wsgi-group-names config the
    configuration was asked and could not tell (unreadable, or several groups
    start so); with title (apache-manager) it was not asked."""
    several = len(names) > 1
    listed = ", ".join(repr(n) for n in names)
    text = (f"mod_wsgi daemon group name{'s' if several else ''} {listed} "
            f"{'are' if several else 'is'} cut short by the process title ({room} "
            f"characters of room) and reported so")
    if resolved:
        text += (": Apache's configuration could not tell the whole name (unreadable, "
                 "or several WSGIDaemonProcess names start so)")
    return text + (f"; names of at most {max(room - 7, 0)} characters fit whole")
