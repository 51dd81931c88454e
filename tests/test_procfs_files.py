"""Held-open /proc files (procfs.Files): the stat, statm and cmdline of the
processes a long-running run scans every cycle, read again at offset 0
instead of opened by path each time. Each read must say what a read by path
says at that moment, of the same process or of none, and the descriptors
must stay bounded and be closed with what they describe.

Live processes only: a captured tree's files are plain files, never held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from apache_metrics_exporter.collect import procfs
from tests.harness.killing import kill_all
from tests.harness.waiting import wait_for

CHILD = r"""
import os, sys
blocks = []
for line in sys.stdin:
    if line.startswith("grow"):
        blocks.append(b"x" * (16 << 20))  # written: resident
    elif line.startswith("exec"):
        os.execv("/bin/sleep", ["renamed", "60"])
    print("ok", flush=True)
"""


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(5)


def _say(proc: subprocess.Popen, word: str) -> None:
    proc.stdin.write(word + "\n")
    proc.stdin.flush()
    if word != "exec":
        assert proc.stdout.readline().strip() == "ok"


def _my_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_held_file_reads_what_a_read_by_path_reads_now(child, monkeypatch):
    files = procfs.Files()
    pid = child.pid
    _say(child, "hello")
    assert files.stat(pid) == procfs.stat(pid)
    assert files.rss(pid) == procfs.rss(pid)
    assert files.cmdline(pid) == procfs.cmdline(pid)
    assert len(files) == 3
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(path)
                        or real_open(path, *a, **k))

    def held(read, *args):  # noqa: ANN001,ANN002,ANN202
        seen = len(opened)
        value = read(*args)
        assert len(opened) == seen, "read by path, not from the held file"
        return value

    before = held(files.rss, pid)
    _say(child, "grow")
    after = held(files.rss, pid)
    assert after >= before + (16 << 20) - (1 << 20)  # read anew, not the first reading again
    assert after == procfs.rss(pid)
    assert held(files.stat, pid) == procfs.stat(pid)
    _say(child, "exec")  # same PID, same start time, another program and title
    wait_for("the exec", lambda: held(files.cmdline, pid) == ["renamed", "60"])
    assert held(files.stat, pid) == procfs.stat(pid)
    assert held(files.stat, pid).name == "sleep"
    assert held(files.rss, pid) == procfs.rss(pid)
    assert len(files) == 3
    files.close()


def test_a_held_stat_of_a_threaded_process_reads_what_its_stat_by_path_does(tmp_path):
    """Files.stat reads the main thread's stat (task/PID/stat), which the
    kernel writes without summing every thread's times: the fields parsed -
    name, state, parent, thread count, start - are the process's, as
    /proc/PID/stat (and psutil) give them."""
    import psutil

    script = ("import threading, time\n"
              "for _ in range(8):\n"
              "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
              "print('ok', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    files = procfs.Files()
    try:
        assert proc.stdout.readline().strip() == "ok"
        for _ in range(2):  # opened, then held
            st = files.stat(proc.pid)
            assert st == procfs.stat(proc.pid) and st.threads == 9
            assert procfs.create_time(st) == psutil.Process(proc.pid).create_time()
        assert [key[1] for key in files._fds] == [f"task/{proc.pid}/stat"]
    finally:
        files.close()
        proc.kill()
        proc.wait(5)


def test_a_held_file_of_a_process_that_is_gone_reads_nothing(child):
    files = procfs.Files()
    pid = child.pid
    start = files.stat(pid).start_ticks
    files.rss(pid)
    assert len(files) == 2
    child.kill()
    # Exited, not reaped: a zombie, read as by path.
    wait_for("the zombie", lambda: files.stat(pid).state == "Z")
    assert files.stat(pid) == procfs.stat(pid) and files.stat(pid).start_ticks == start
    child.wait(5)  # reaped: the held files are of no process now, whatever the PID names
    with pytest.raises(procfs.NoProcess):
        files.stat(pid)
    with pytest.raises(procfs.NoProcess):
        files.rss(pid)
    assert len(files) == 0


def test_held_files_are_bounded_and_closed(child, monkeypatch):
    pid = child.pid
    _say(child, "hello")  # started: its memory no longer changes
    before = _my_fds()
    monkeypatch.setattr(procfs, "_keep_limit", procfs._kept + 2)
    files = procfs.Files()
    assert (files.stat(pid), files.rss(pid)) == (procfs.stat(pid), procfs.rss(pid))
    assert files.cmdline(pid) == procfs.cmdline(pid)  # read by path: over the limit
    assert len(files) == 2 and _my_fds() == before + 2
    other = procfs.Files()
    other.stat(os.getpid())  # the limit is this process's, for all trees together
    assert len(other) == 0
    files.retain({pid})
    assert len(files) == 2
    files.retain({os.getpid()})  # the tree no longer has that child
    assert len(files) == 0 and _my_fds() == before
    assert files.stat(pid) == procfs.stat(pid)
    files.close()
    assert len(files) == 0 and _my_fds() == before
    assert files.stat(pid) == procfs.stat(pid)  # read by path once closed, never held again
    assert len(files) == 0 and _my_fds() == before


def test_the_children_list_of_a_parent_that_is_gone_is_read_by_path(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text("import os, time\nif os.fork() == 0:\n    time.sleep(60)\n"
                      "    os._exit(0)\nprint('ok', flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    kids = []
    try:
        assert parent.stdout.readline().strip() == "ok"
        kids = procfs.children(parent.pid, 1)
        files = procfs.Files()
        assert len(kids) == 1 and files.children(parent.pid) == kids
        assert files.children(parent.pid) == kids and len(files) == 1
        parent.kill()
        parent.wait(5)
        with pytest.raises(procfs.NoProcess):
            files.children(parent.pid)
    finally:
        kill_all(kids)
        parent.kill()
        parent.wait(5)


def test_a_tree_that_is_not_the_real_proc_is_never_held(tmp_path, monkeypatch):
    monkeypatch.setattr(procfs, "PROC", str(tmp_path))
    (tmp_path / "42").mkdir()
    path = tmp_path / "42" / "statm"
    path.write_text("100 10 0 0 0 0 0\n")
    files = procfs.Files()
    assert files.rss(42) == 10 * procfs.PAGE_SIZE
    path.unlink()  # another file at the path: a plain file held open would still read the old
    path.write_text("100 20 0 0 0 0 0\n")
    assert files.rss(42) == 20 * procfs.PAGE_SIZE and len(files) == 0


@pytest.fixture
def young(monkeypatch):
    """Every child young for the whole test (processes.TITLE_SETTLED out of
    reach): the held-files counts below include its title's cmdline, which
    a child past 10 s - a slow machine - lets go."""
    from apache_metrics_exporter.collect import processes

    monkeypatch.setattr(processes, "TITLE_SETTLED", 1e9)


def test_a_long_running_scan_holds_its_trees_files_and_lets_go_of_them(tmp_path, young):
    """scan(reuse=...) reads the tree through held files, and finds what a
    scan without them finds; a child that is gone has its files closed, and
    a parent proven no more its tree's."""
    from apache_metrics_exporter.collect.processes import Reuse, scan

    os.symlink(sys.executable, tmp_path / "apache2")
    script = tmp_path / "parent.py"
    script.write_text("import os, sys, time\npid = os.fork()\nif pid == 0:\n"
                      "    time.sleep(60)\n    os._exit(0)\nprint(pid, flush=True)\n"
                      "sys.stdin.readline()\nos.kill(pid, 9)\nos.waitpid(pid, 0)\n"
                      "print('ok', flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([str(tmp_path / "apache2"), str(script)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        kid = int(parent.stdout.readline())
        reuse = Reuse()
        fresh = scan(parent.pid, ("apache2",))
        for _ in range(3):
            kept = scan(parent.pid, ("apache2",), reuse=reuse)
            # (the memory apart: a child just forked still grows for a moment)
            assert [c._replace(memory=0) for c in kept.children] == \
                [c._replace(memory=0) for c in fresh.children]
            assert [c.pid for c in kept.children] == [kid]
        # ... and the memory as a read by path gives it, once the child is still
        wait_for("the held statm to read what the path does", lambda: scan(
            parent.pid, ("apache2",), reuse=reuse).children[0].memory == procfs.rss(kid))
        (tree,) = reuse.trees.values()
        assert tree.files is not None
        assert len(tree.files) == 4  # the parent's children list; the child's stat, statm, title
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "ok"
        assert scan(parent.pid, ("apache2",), reuse=reuse).children == []
        assert len(tree.files) == 1
        # The URL's proof moves to another parent: the old one's tree goes, files closed.
        reuse.keep(("k",), {1}, parent.pid)
        reuse.keep(("k",), {1}, os.getpid())
        assert reuse.trees == {} and len(tree.files) == 0
    finally:
        parent.kill()
        parent.wait(5)


SERVER = r"""
import os, socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
print(sock.getsockname()[1], pid, flush=True)
sys.stdin.readline()  # "stop": the child first, then this parent and its socket
os.kill(pid, 9)
os.waitpid(pid, 0)
"""


def test_the_tree_of_a_server_that_stopped_lets_go_of_its_files(tmp_path, young):
    """redteam: a long-running run whose Apache stopped (nothing listens on
    the URL's port any more) held the /proc files of the gone parent and
    children open until a server was proven there again - for as long as
    the outage lasted, in the budget every other tree shares."""
    from apache_metrics_exporter.collect.host import Host
    from apache_metrics_exporter.collect.processes import Reuse, find_parent, scan

    os.symlink(sys.executable, tmp_path / "apache2")
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    server = subprocess.Popen([str(tmp_path / "apache2"), str(script)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        port, kid = map(int, server.stdout.readline().split())
        before = _my_fds()
        reuse = Reuse()
        for _ in range(2):
            parent = find_parent(["127.0.0.1"], port, ("apache2",), host=Host(), reuse=reuse)
            assert parent.pid == server.pid
            assert [c.pid for c in scan(parent.pid, ("apache2",), reuse=reuse,
                                        parent_stat=parent.stat).children] == [kid]
        (tree,) = reuse.trees.values()
        # the parent's stat (the kept proof) and children list; the child's stat, statm, title
        assert tree.files is not None and len(tree.files) == 5
        server.stdin.write("stop\n")
        server.stdin.flush()
        server.wait(5)
        parent = find_parent(["127.0.0.1"], port, ("apache2",), host=Host(), reuse=reuse)
        assert parent.pid is None and "nothing listens" in parent.reason
        assert reuse.trees == {} and len(tree.files) == 0
        reuse.diag.close()
        assert _my_fds() == before
    finally:
        server.kill()
        server.wait(5)


def _spawn_at(pid: int, argv: list) -> subprocess.Popen:
    """A process started with PID ``pid`` (root: /proc/sys/kernel/ns_last_pid)."""
    for _ in range(20):
        with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
            fh.write(str(pid - 1))
        proc = subprocess.Popen(argv)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait(5)
    pytest.skip("could not start a process at a chosen PID")


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK),
                    reason="choosing a PID needs root")
def test_a_pid_used_again_is_read_as_the_new_process_never_the_old(tmp_path):
    """redteam: a held file is bound to its process, not to its PID. Once the
    process is gone and another one has its PID - here at once, possibly in
    the same clock tick, so with the same start time - every held file
    (stat, statm, cmdline, the children list) reads the newcomer as a read
    by path does, and none the gone one's text."""
    files = procfs.Files()
    old = subprocess.Popen(["/bin/sleep", "60"])
    pid = old.pid
    try:
        wait_for("its exec", lambda: procfs.cmdline(pid) == ["/bin/sleep", "60"])
        assert files.stat(pid).name == "sleep" and files.cmdline(pid) == ["/bin/sleep", "60"]
        files.rss(pid)
        assert files.children(pid) == [] and len(files) == 4
        old.kill()
        old.wait(5)
        new = _spawn_at(pid, ["/bin/sh", "-c", "sleep 61 & wait"])
        try:
            wait_for("the newcomer's child", lambda: procfs.children(pid, 1)
                     and procfs.cmdline(pid) == ["/bin/sh", "-c", "sleep 61 & wait"])
            assert files.stat(pid) == procfs.stat(pid) and files.stat(pid).name == "sh"
            assert files.cmdline(pid) == ["/bin/sh", "-c", "sleep 61 & wait"]
            assert files.rss(pid) == procfs.rss(pid)
            assert files.children(pid) == procfs.children(pid, 1) != []
        finally:
            for kid in procfs.children(pid, 1):
                os.kill(kid, signal.SIGKILL)
            new.kill()
            new.wait(5)
    finally:
        files.close()


def test_the_tree_of_a_parent_named_by_a_pid_file_lets_go_when_it_is_gone(tmp_path, young):
    """redteam: with --pid-file and a URL whose socket is not looked at (not
    a loopback address, or not readable), no proof is kept, and nothing
    dropped the tree of a parent that exited: every restart of Apache left
    the gone tree's /proc files open, until the run's whole budget of held
    descriptors was taken by processes that no longer exist."""
    from apache_metrics_exporter.collect.processes import Reuse, find_parent, scan

    os.symlink(sys.executable, tmp_path / "apache2")
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    pid_file = tmp_path / "apache2.pid"
    reuse = Reuse()
    servers: list = []
    gone: list = []
    try:
        for _generation in range(3):
            server = subprocess.Popen([str(tmp_path / "apache2"), str(script)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            servers.append(server)
            _port, kid = map(int, server.stdout.readline().split())
            pid_file.write_text(f"{server.pid}\n")
            for _ in range(2):
                parent = find_parent([], 80, ("apache2",), str(pid_file), reuse=reuse)
                assert parent.pid == server.pid
                assert [c.pid for c in scan(parent.pid, ("apache2",), reuse=reuse,
                                            parent_stat=parent.stat).children] == [kid]
            assert [identity[0] for identity in reuse.trees] == [server.pid]
            assert all(len(tree.files) == 0 for tree in gone)
            gone.extend(reuse.trees.values())
            assert len(gone[-1].files) == 4  # no proof: the parent's stat is read by path
            server.stdin.write("stop\n")  # Apache restarted: a new parent, a new PID
            server.stdin.flush()
            server.wait(5)
    finally:
        for server in servers:
            server.kill()
            server.wait(5)


# --- reads that procfs has given whole: no read to say "end" ---------------------

PARENT = ("import os, sys, time\npid = os.fork()\nif pid == 0:\n"
          "    time.sleep(60)\n    os._exit(0)\nprint(pid, flush=True)\ntime.sleep(60)\n")


@pytest.fixture
def parent(tmp_path):
    """(a parent named apache2, its one child's PID)."""
    os.symlink(sys.executable, tmp_path / "apache2")
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    proc = subprocess.Popen([str(tmp_path / "apache2"), str(script)], stdout=subprocess.PIPE,
                            text=True)
    kid = int(proc.stdout.readline())
    try:
        yield proc, kid
    finally:
        kill_all([kid])
        proc.kill()
        proc.wait(5)


def _reads(monkeypatch) -> list:
    """Every os.read / os.pread from now on, as (call, descriptor)."""
    calls: list = []
    real_read, real_pread = os.read, os.pread
    monkeypatch.setattr(os, "read", lambda fd, n: calls.append(("read", fd))
                        or real_read(fd, n))
    monkeypatch.setattr(os, "pread", lambda fd, n, at: calls.append(("pread", fd))
                        or real_pread(fd, n, at))
    return calls


def test_a_short_children_list_is_read_in_one_read(parent, monkeypatch):
    """A task's children list is a seq_file of "PID " records: a read that
    gives less than a page (less a record) has every one of them, so no
    second read asks for an end already reached - when the file is opened
    nor when it is read again."""
    proc, kid = parent
    files = procfs.Files()
    calls = _reads(monkeypatch)
    assert files.children(proc.pid) == [kid]
    assert [call for call, _fd in calls] == ["read"]
    (fd,) = [fd for key, fd in files._fds.items() if key[1].endswith("children")]
    del calls[:]
    for _ in range(3):
        assert files.children(proc.pid) == [kid]
    assert calls == [("pread", fd)] * 3
    monkeypatch.undo()
    assert files.children(proc.pid) == procfs.children(proc.pid, 1)
    files.close()


def test_a_children_list_of_a_page_or_more_is_read_to_its_end(tmp_path, monkeypatch):
    """seq_file stops a read at a page (its buffer) when the next record
    does not fit: a read no shorter than RECORDS_END may be such a stop,
    and is read on; a shorter one is the end."""
    text = b"".join(b"%d " % pid for pid in range(1000000, 1000000 + 3 * procfs.READ_SIZE // 8))
    path = tmp_path / "children"
    path.write_bytes(text)
    fd = os.open(path, os.O_RDONLY)
    try:
        real = os.pread
        monkeypatch.setattr(os, "pread", lambda fd, n, at: real(fd, min(n, procfs.RECORDS_END),
                                                                 at))
        assert procfs._to_end(fd, True, records=True) == text
        calls = _reads(monkeypatch)
        path.write_bytes(text[:procfs.RECORDS_END - 1])
        assert procfs._to_end(fd, True, records=True) == text[:procfs.RECORDS_END - 1]
        assert len(calls) == 1
    finally:
        os.close(fd)


def test_a_held_command_line_is_read_to_its_end_after_a_short_read(child, monkeypatch):
    """cmdline is no seq_file: a short read may stop where the process's
    memory could not be read, so it is read on until a read says "end"."""
    files = procfs.Files()
    _say(child, "hello")
    whole = procfs.cmdline(child.pid)
    assert files.cmdline(child.pid) == whole and len(files) == 1
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: real(fd, min(n, 5), at))
    assert files.cmdline(child.pid) == whole
    files.close()


def test_a_kept_title_lets_go_of_its_held_command_line(parent, monkeypatch):
    """A long-running scan reads a young child's title through a held file
    every cycle; once it keeps the title (read past TITLE_SETTLED of the
    child's life) it reads it no more, and closes that file."""
    from apache_metrics_exporter import clocks
    from apache_metrics_exporter.collect import processes

    proc, kid = parent
    start = procfs.stat(kid).start_ticks / procfs.CLOCK_TICKS
    now = [start + 1]
    monkeypatch.setattr(clocks, "boottime", lambda: now[0])
    titles = []
    real = procfs.Files.cmdline
    monkeypatch.setattr(procfs.Files, "cmdline", lambda self, pid: titles.append(pid)
                        or real(self, pid))
    reuse = processes.Reuse()
    fresh = processes.scan(proc.pid, ("apache2",))
    for _ in range(2):
        got = processes.scan(proc.pid, ("apache2",), reuse=reuse)
        assert [c._replace(memory=0) for c in got.children] == \
            [c._replace(memory=0) for c in fresh.children]
    (tree,) = reuse.trees.values()
    assert titles == [kid, kid] and (kid, "cmdline") in tree.files._fds
    assert len(tree.files) == 4  # the children list; the child's stat, statm, title
    now[0] = start + processes.TITLE_SETTLED + 1
    for _ in range(3):
        got = processes.scan(proc.pid, ("apache2",), reuse=reuse)
        assert [c._replace(memory=0) for c in got.children] == \
            [c._replace(memory=0) for c in fresh.children]
    assert titles == [kid] * 3
    (tree,) = reuse.trees.values()
    assert (kid, "cmdline") not in tree.files._fds and len(tree.files) == 3
    tree.files.close()
