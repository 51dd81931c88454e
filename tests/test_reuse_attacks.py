"""Red-team (redteam3): what a long-running run keeps between cycles
(collect/processes.Reuse) must not outlive what it describes.

These start small fake "Apache" trees: Python started through a symlink named
``apache2`` (so its process name is apache2), whose child later execs another
program through a second symlink named apache2 - same PID, same start time,
same name, another process title. Loopback only, every process stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.killing import kill_all
from tests.harness.waiting import wait_for

PARENT = r"""
import os, sys, time
trigger, sleeper = sys.argv[1], sys.argv[2]
pid = os.fork()
if pid == 0:
    # A child as Apache forks it: the parent's title until it is replaced
    # (mod_wsgi writes "(wsgi:NAME)" over it; here: an exec, same PID and
    # start time, through a symlink named apache2 so the name stays).
    while not os.path.exists(trigger):
        time.sleep(0.01)
    os.execv(sleeper, ["(wsgi:late)", "60"])
print(pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def fake_tree(tmp_path: Path):
    """(parent Popen, child PID, trigger path) of a fake apache2 parent with one child."""
    (tmp_path / "py").mkdir()
    (tmp_path / "sl").mkdir()
    os.symlink(sys.executable, tmp_path / "py" / "apache2")
    os.symlink("/bin/sleep", tmp_path / "sl" / "apache2")
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    trigger = tmp_path / "go"
    proc = subprocess.Popen([str(tmp_path / "py" / "apache2"), str(script), str(trigger),
                             str(tmp_path / "sl" / "apache2")],
                            stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        yield proc, child, trigger
    finally:
        kill_all((child, proc.pid))
        proc.wait(5)
        try:
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass


def test_a_child_that_takes_a_mod_wsgi_title_later_is_seen_so_by_the_next_cycle(fake_tree):
    """A mod_wsgi daemon carries the parent's title for a moment after its
    fork; a cycle that scans it then must not keep "native" for its whole
    life (hours): the next cycle sees it in its group. Here the child execs
    (same PID and start time, same process name) as case (d) of the brief."""
    from apache_metrics_exporter.collect import procfs
    from apache_metrics_exporter.collect.processes import Reuse, scan

    proc, child, trigger = fake_tree
    reuse = Reuse()
    first = scan(proc.pid, ("apache2",), reuse=reuse)
    assert [(c.pid, c.group) for c in first.children] == [(child, "native")]
    ticks = procfs.stat(child).start_ticks
    trigger.touch()
    wait_for("the child's exec", lambda: procfs.cmdline(child)[:1] == ["(wsgi:late)"])
    assert procfs.stat(child).start_ticks == ticks and procfs.stat(child).name == "apache2"
    second = scan(proc.pid, ("apache2",), reuse=reuse)
    assert [(c.pid, c.group) for c in second.children] == [(child, "late")]
    fresh = scan(proc.pid, ("apache2",))
    assert [(c.pid, c.group) for c in fresh.children] == [(child, "late")]


HOLDER = r"""
import os, socket, sys, time
chan = socket.socket(fileno=int(sys.argv[1]))
if sys.argv[2] == "listen":
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    print(s.getsockname()[1], flush=True)
    sys.stdin.readline()
    socket.send_fds(chan, [b"x"], [s.fileno()])
    s.close()
    print("given", flush=True)
else:
    _msg, fds, _flags, _addr = socket.recv_fds(chan, 1, 1)
    print("taken", flush=True)
time.sleep(60)
"""


@pytest.fixture
def handed_over(tmp_path: Path):
    """A fake apache2 that listens on a loopback port and, when told, hands
    its listening socket to a process outside its tree ('python3') and
    closes its own: the same socket (same inode), another holder."""
    os.symlink(sys.executable, tmp_path / "apache2")
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    import socket

    a, b = socket.socketpair()
    procs = []
    try:
        apache = subprocess.Popen([str(tmp_path / "apache2"), str(script), str(a.fileno()),
                                   "listen"], pass_fds=[a.fileno()], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        procs.append(apache)
        port = int(apache.stdout.readline())
        other = subprocess.Popen([sys.executable, str(script), str(b.fileno()), "take"],
                                 pass_fds=[b.fileno()], stdout=subprocess.PIPE, text=True)
        procs.append(other)
        a.close()
        b.close()

        def hand_over() -> None:
            apache.stdin.write("go\n")
            apache.stdin.flush()
            assert apache.stdout.readline().strip() == "given"
            assert other.stdout.readline().strip() == "taken"

        yield apache, port, hand_over
    finally:
        for p in procs:
            p.kill()
            p.wait(5)


def test_a_kept_proof_ends_when_the_parent_no_longer_holds_the_socket(handed_over):
    """Same socket inodes and a live parent with the same start time are not
    enough: the socket may now be held by a process outside the tree, which
    answers the URL. A fresh proof names that process; a kept one must not
    go on naming the old parent."""
    from apache_metrics_exporter.collect.host import Host
    from apache_metrics_exporter.collect.processes import Reuse, find_parent

    apache, port, hand_over = handed_over
    reuse = Reuse()
    first = find_parent(["127.0.0.1"], port, ("apache2",), host=Host(), reuse=reuse)
    assert first.pid == apache.pid, first.reason
    hand_over()
    fresh = find_parent(["127.0.0.1"], port, ("apache2",), host=Host())
    assert fresh.pid is None and "python" in fresh.reason, fresh.reason
    again = find_parent(["127.0.0.1"], port, ("apache2",), host=Host(), reuse=reuse)
    assert again.pid is None, again.reason


def test_a_proof_checked_at_the_parents_descriptors_ends_at_a_hand_over(handed_over,
                                                                        monkeypatch):
    """A kept proof learns which of the parent's descriptors hold its sockets
    and then reads only those links (procfs.holds_at), not every descriptor:
    the socket handed over and closed in the parent still ends it."""
    from apache_metrics_exporter.collect import procfs
    from apache_metrics_exporter.collect.host import Host
    from apache_metrics_exporter.collect.processes import Reuse, find_parent

    apache, port, hand_over = handed_over
    reuse = Reuse()
    for _ in range(2):  # proven, then kept (and the descriptors learnt)
        assert find_parent(["127.0.0.1"], port, ("apache2",), host=Host(),
                           reuse=reuse).pid == apache.pid
    (proof,) = reuse.proofs.values()
    assert proof.places and proof.pid == apache.pid
    walks = []
    real = procfs.socket_fds
    monkeypatch.setattr(procfs, "socket_fds", lambda pid: walks.append(pid) or real(pid))
    kept = find_parent(["127.0.0.1"], port, ("apache2",), host=Host(), reuse=reuse)
    assert kept.pid == apache.pid and walks == []  # its descriptors' links only
    assert kept.stat is not None and kept.stat.pid == apache.pid
    hand_over()
    again = find_parent(["127.0.0.1"], port, ("apache2",), host=Host(), reuse=reuse)
    assert again.pid is None, again.reason
    assert reuse.reused == 2


SPAWNER = r"""
import os, signal, sys, time
sleeper = sys.argv[1]
kids = []
print("ready", flush=True)
for line in sys.stdin:
    word, _, title = line.strip().partition(" ")
    if word == "spawn":
        pid = os.fork()
        if pid == 0:
            os.execv(sleeper, [title, "60"])
        kids.append(pid)
        print(pid, flush=True)
    elif word == "stop":
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        kids = []
        print("stopped", flush=True)
"""


def test_a_graceful_restart_that_adds_a_mod_wsgi_group_is_not_resolved_with_the_old_config(
        tmp_path: Path):
    """Cut-short daemon names are resolved against the running configuration,
    read once per parent. A graceful restart keeps the parent (PID and start
    time) but may bring new WSGIDaemonProcess lines (and always new daemons):
    a name the new configuration makes ambiguous must not be resolved with
    the old one ('reporting-a' was only 'reporting-alpha'; now 'reporting-alpine'
    starts so too)."""
    from apache_metrics_exporter.collect.processes import scan

    root = tmp_path / "root"
    root.mkdir()
    conf = root / "apache2.conf"
    conf.write_text("WSGIDaemonProcess reporting-alpha processes=1\n")
    (tmp_path / "py").mkdir()
    (tmp_path / "sl").mkdir()
    os.symlink(sys.executable, tmp_path / "py" / "apache2")
    os.symlink("/bin/sleep", tmp_path / "sl" / "apache2")
    script = tmp_path / "spawner.py"
    script.write_text(SPAWNER)
    # argv[0] "/usr/sbin/apache2" (17 characters of room, as on Debian): the
    # titles of both groups are cut to "(wsgi:reporting-a".
    parent = subprocess.Popen(["/usr/sbin/apache2", str(script), str(tmp_path / "sl" / "apache2"),
                               "-d", str(root), "-f", str(conf)],
                              executable=str(tmp_path / "py" / "apache2"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    title = "(wsgi:reporting-a"

    def say(line: str) -> str:
        parent.stdin.write(line + "\n")
        parent.stdin.flush()
        return parent.stdout.readline().strip()

    def execed(pid: int) -> bool:
        from apache_metrics_exporter.collect import procfs

        return procfs.cmdline(pid)[:1] == [title]

    try:
        assert parent.stdout.readline().strip() == "ready"
        first = int(say(f"spawn {title}"))
        wait_for("the daemon's exec", lambda: execed(first))
        before = scan(parent.pid, ("apache2",))
        assert [c.group for c in before.children] == ["reporting-alpha"]
        # The graceful restart: a new group in the configuration, every daemon anew.
        conf.write_text("WSGIDaemonProcess reporting-alpha processes=1\n"
                        "WSGIDaemonProcess reporting-alpine processes=1\n")
        assert say("stop") == "stopped"
        kids = [int(say(f"spawn {title}")) for _ in range(2)]
        wait_for("the daemons' exec", lambda: all(execed(k) for k in kids))
        after = scan(parent.pid, ("apache2",))
        assert sorted(c.pid for c in after.children) == sorted(kids)
        assert {c.group for c in after.children} == {"reporting-a"}, after.children
        assert after.truncated == {"reporting-a"}
    finally:
        parent.kill()
        parent.wait(5)


def test_the_reaper_proves_afresh_and_keeps_nothing_between_runs():
    """The reaper signals only what it has just proven and re-verified: no
    module of it may take a kept proof or tree (Reuse, reuse=) or the loops'
    Cycle that holds one."""
    import ast

    package = Path(__file__).resolve().parent.parent / "apache_metrics_exporter" / "reaper"
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword):
                assert node.arg != "reuse", f"{path.name}:{node.value.lineno} passes reuse="
            elif isinstance(node, ast.Name):
                assert node.id not in ("Reuse", "Cycle"), f"{path.name}:{node.lineno}"
            elif isinstance(node, ast.Attribute):
                assert node.attr not in ("Reuse", "reuse", "Cycle"), f"{path.name}:{node.lineno}"
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {a.name for a in node.names}
                assert not names & {"Reuse", "Cycle"}, f"{path.name}:{node.lineno}"
                assert node.module != "apache_metrics_exporter.cycle", path.name


# --- redproof: the kept proof's descriptor check against a fresh proof -------

PLAYER = r"""
import os, signal, socket, sys, time
chan = socket.socket(fileno=int(sys.argv[1]))
fd = None
if sys.argv[2] in ("listen", "split"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    port = s.getsockname()[1]
    fd = s.detach()
    if sys.argv[2] == "split":
        # A second socket on the same address (SO_REUSEPORT) that only a
        # child holds: the parent closes its copy after the fork.
        s2 = socket.socket()
        s2.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s2.bind(("127.0.0.1", port))
        s2.listen(8)
        fd2 = s2.detach()
        r, w = os.pipe()
        kid = os.fork()
        if kid == 0:
            os.close(fd)

            def move(*_):
                socket.send_fds(chan, [b"x"], [fd2])
                os.close(fd2)
                os.write(w, b"!")

            signal.signal(signal.SIGUSR1, move)
            while True:
                signal.pause()
        os.close(fd2)
        print(port, kid, flush=True)
    else:
        print(port, 0, flush=True)
for line in sys.stdin:
    word = line.strip()
    if word == "give":  # the socket to the process at the other end, kept here too
        socket.send_fds(chan, [b"x"], [fd])
    elif word == "close":
        os.close(fd)
    elif word == "socket":  # another socket at the same descriptor number
        other = socket.socket()
        os.dup2(other.fileno(), fd)
        other.close()
    elif word == "file":  # a file at the same descriptor number
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, fd)
        os.close(null)
    elif word == "take":  # a socket from the other end, at the old number if any
        _msg, fds, _flags, _addr = socket.recv_fds(chan, 1, 1)
        if fd is None:
            fd = fds[0]
        elif fds[0] != fd:
            os.dup2(fds[0], fd)
            os.close(fds[0])
    elif word == "move":  # the child hands its socket over and closes it
        os.kill(kid, signal.SIGUSR1)
        os.read(r, 1)
    elif word in ("exec", "exec-python"):  # same PID and start time, the socket kept
        os.set_inheritable(fd, True)
        # sys.executable: the symlink named apache2; else python by its own name
        program = sys.executable if word == "exec" else os.path.realpath(sys.executable)
        os.execv(program, [program, "-c", "import time; print('ok', flush=True); time.sleep(60)"])
    elif word == "exit":  # a zombie until the test waits for it
        os._exit(0)
    print("ok", flush=True)
"""


@pytest.fixture
def players(tmp_path: Path):
    """start(mode) -> (apache, port, say): a fake apache2 listening on a
    loopback port ('listen'; 'split': a second socket on the same address
    that only its child holds) and a process outside its tree (python, not
    apache2) at the other end of a socket pair; ``say(who, word)`` gives one
    of PLAYER's commands to 'apache' or 'other' and waits for it."""
    import socket

    os.symlink(sys.executable, tmp_path / "apache2")
    script = tmp_path / "player.py"
    script.write_text(PLAYER)
    procs: list = []
    kids: list = []

    def start(mode: str = "listen"):
        a, b = socket.socketpair()
        try:
            apache = subprocess.Popen([str(tmp_path / "apache2"), str(script), str(a.fileno()),
                                       mode], pass_fds=[a.fileno()], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
            procs.append(apache)
            port, kid = map(int, apache.stdout.readline().split())
            if kid:
                kids.append(kid)
            other = subprocess.Popen([sys.executable, str(script), str(b.fileno()), "wait"],
                                     pass_fds=[b.fileno()], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
            procs.append(other)
        finally:
            a.close()
            b.close()

        def say(who: str, word: str) -> None:
            p = apache if who == "apache" else other
            p.stdin.write(word + "\n")
            p.stdin.flush()
            if word != "exit":
                assert p.stdout.readline().strip() == "ok", (who, word)

        return apache, port, say

    try:
        yield start
    finally:
        kill_all(kids)
        for p in procs:
            p.kill()
            p.wait(5)


def _proofs(port: int, reuse, monkeypatch) -> tuple:
    """(the kept proof's parent, a one-shot run's fresh proof's parent)."""
    from apache_metrics_exporter.collect import processes
    from apache_metrics_exporter.collect.host import Host
    from apache_metrics_exporter.collect.processes import find_parent

    kept = find_parent(["127.0.0.1"], port, ("apache2",), host=Host(), reuse=reuse)
    monkeypatch.setattr(processes, "_proven", {})  # nothing learnt by earlier proofs
    fresh = find_parent(["127.0.0.1"], port, ("apache2",), host=Host())
    return kept.pid, fresh.pid


@pytest.mark.parametrize("steps, holds", [
    # The parent's descriptor number, its socket handed out, now names ...
    ([("apache", "give"), ("other", "take"), ("apache", "socket")], False),  # another socket
    ([("apache", "give"), ("other", "take"), ("apache", "file")], False),  # a file
    # ... the same socket again, handed back (and closed by the other end)
    ([("apache", "give"), ("other", "take"), ("apache", "close"), ("other", "give"),
      ("other", "close"), ("apache", "take")], True),
    # The socket shared with a process outside the tree, the parent keeping
    # it: a tree that holds every socket is the one proven, fresh or kept.
    ([("apache", "give"), ("other", "take")], True),
    # The parent execs (same PID and start time), keeping the socket: a
    # program of an Apache name, and one of another name.
    ([("apache", "exec")], True),
    ([("apache", "exec-python")], False),
    # The parent exits (a zombie: same PID and start time), its socket held on outside.
    ([("apache", "give"), ("other", "take"), ("apache", "exit")], False),
], ids=["another-socket", "a-file", "handed-back", "shared", "exec", "exec-python", "zombie"])
def test_a_proof_kept_at_the_parents_descriptors_agrees_with_a_fresh_one(players, monkeypatch,
                                                                        steps, holds):
    """A kept proof is checked at the descriptors of the parent that held its
    sockets last time (procfs.holds_at); whatever that number names now, the
    kept proof must conclude what a one-shot run's fresh proof concludes."""
    from apache_metrics_exporter.collect import procfs
    from apache_metrics_exporter.collect.processes import Reuse

    apache, port, say = players()
    reuse = Reuse()
    for _ in range(2):  # proven, then kept (and the descriptors learnt)
        assert _proofs(port, reuse, monkeypatch) == (apache.pid, apache.pid)
    (proof,) = reuse.proofs.values()
    assert proof.places
    for who, word in steps:
        say(who, word)
    if word == "exit":
        wait_for("the zombie", lambda: procfs.stat(apache.pid).state == "Z")
    assert procfs.stat(apache.pid).start_ticks == proof.start_ticks
    expected = apache.pid if holds else None
    assert _proofs(port, reuse, monkeypatch) == (expected, expected)


def test_a_proof_with_a_socket_only_a_child_holds_is_never_checked_at_the_parent_alone(
        players, monkeypatch):
    """Two sockets on the URL's address (SO_REUSEPORT), one held by the
    parent and one by its child only: the parent's descriptors cannot vouch
    for both, so no descriptor is learnt and the tree is walked every cycle.
    When the child hands its socket out, the kept proof ends as a fresh
    proof does (it fails when places are learnt for the parent's socket alone)."""
    from apache_metrics_exporter.collect.processes import Reuse

    apache, port, say = players("split")
    reuse = Reuse()
    for _ in range(3):
        assert _proofs(port, reuse, monkeypatch) == (apache.pid, apache.pid)
    (proof,) = reuse.proofs.values()
    assert len(proof.inodes) == 2 and proof.places == ()
    say("apache", "move")
    say("other", "take")
    assert _proofs(port, reuse, monkeypatch) == (None, None)


def test_a_scan_takes_no_stat_of_another_process(fake_tree):
    """scan(parent_stat=...) uses the stat the proof read only when it is the
    parent's: the start time reported (restart detection) and the tree kept
    are the scanned parent's, never another process's."""
    from apache_metrics_exporter.collect import procfs
    from apache_metrics_exporter.collect.processes import scan

    proc, child, _trigger = fake_tree
    other = procfs.stat(os.getpid())
    got = scan(proc.pid, ("apache2",), parent_stat=other)
    mine = procfs.stat(proc.pid)
    assert other.start_ticks != mine.start_ticks
    assert got.parent_start_ticks == mine.start_ticks
    assert got.parent_create_time == procfs.create_time(mine)
    assert [c.pid for c in got.children] == [child]


# --- redteam3: the proofs every run learns from are bounded --------------------

def test_the_parents_learnt_by_proofs_are_bounded(monkeypatch):
    """Red team (redteam3): every proof remembers its parent, by address and
    port, as the first place the next proof looks (processes._proven, kept
    for the life of the process). A --listen's /probe admits any address a
    --probe-allow pattern does: 127.*.*.* reaching one wildcard listener is
    16 million keys, each kept for ever. Bounded as the kept proofs are."""
    import socket

    from apache_metrics_exporter.collect import processes, procfs
    from apache_metrics_exporter.collect.host import Host

    monkeypatch.setattr(processes, "_proven", {})
    monkeypatch.setattr(processes, "PROVEN_LIMIT", 4)
    listener = socket.socket()
    try:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        port = listener.getsockname()[1]
        me = (procfs.stat(os.getpid()).name,)  # this process stands for Apache
        for i in range(1, 11):
            parent = processes.find_parent([f"127.0.0.{i}"], port, me, host=Host())
            assert parent.pid is not None, parent.reason
            assert len(processes._proven) <= 4
        assert (("127.0.0.10",), port) in processes._proven  # the newest kept
    finally:
        listener.close()
