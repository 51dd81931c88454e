"""The process reader over /proc trees captured from real Apache servers.

``tests/data/proc-<mpm>-wsgi-decoy/`` (scripts/capture_proc.py, provenance in
each README.md): a private Apache with mod_wsgi daemon groups ``example`` and
``reporting-backend`` (whose title is cut), one of its workers a zombie, a
decoy Apache on another port (also on [::1]), and a non-Apache listener named
``a b) (c``. ``capture.json`` names the roles and holds what psutil said about
each process at the moment of the capture: the expectations come from there
and from the captured files, never from the code under test.

Each test reads a copy in its own temporary directory, the captured ServerRoot
placeholder in the command lines pointed at the copy's ``serverroot/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from apache_metrics_exporter.catalogue import NATIVE_GROUP
from apache_metrics_exporter.collect import processes, procfs
from apache_metrics_exporter.collect.processes import find_parent, parent_of_url, scan
from tests.conftest import DATA

APACHE = ("apache2",)
CAPTURES = sorted(p.name for p in DATA.glob("proc-*") if (p / "capture.json").exists())


class Captured:
    """A captured tree, copied, with its roles and psutil's view of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = json.loads((root / "capture.json").read_text())
        self.roles = self.meta["roles"]
        self.psutil = {int(pid): view for pid, view in self.meta["psutil"].items()}
        self.parent = self.roles["parent"][0]
        self.zombie = self.roles["zombie"][0]
        self.decoy = self.roles["decoy_parent"][0]
        self.stranger = self.roles["stranger"][0]
        self.port = self.meta["port"]

    def title(self, pid: int) -> str:
        return self.meta["titles"][str(pid)]

    def rss(self, pid: int) -> int:
        """Resident pages of /proc/PID/statm, in bytes."""
        pages = (self.root / str(pid) / "statm").read_text().split()[1]
        return int(pages) * self.meta["page_size"]

    def rollup(self, pid: int) -> dict:
        """/proc/PID/smaps_rollup as {field: bytes}."""
        out = {}
        for line in (self.root / str(pid) / "smaps_rollup").read_text().splitlines()[1:]:
            key, value, unit = line.split()
            assert unit == "kB"
            out[key.rstrip(":")] = int(value) * 1024
        return out


@pytest.fixture(params=CAPTURES)
def captured(request, tmp_path, monkeypatch) -> Captured:
    root = tmp_path / request.param
    shutil.copytree(DATA / request.param, root, symlinks=True)
    tree = Captured(root)
    placeholder = tree.meta["server_root"].encode()
    for cmdline in root.glob("[0-9]*/cmdline"):
        cmdline.write_bytes(cmdline.read_bytes().replace(
            placeholder, str(root / "serverroot").encode()))
    monkeypatch.setattr(procfs, "PROC", str(root))
    monkeypatch.setattr(procfs, "_boot_time", None)  # the captured btime
    monkeypatch.setattr(procfs, "PAGE_SIZE", tree.meta["page_size"])
    monkeypatch.setattr(procfs, "CLOCK_TICKS", tree.meta["clock_ticks"])
    monkeypatch.setattr(processes, "_proven", {})
    monkeypatch.setattr(processes, "_groups_of", {})
    return tree


def test_the_captures_are_there():
    assert {"proc-prefork-wsgi-decoy", "proc-event-wsgi-decoy"} <= set(CAPTURES)


# --- which Apache: proven by the listening socket ------------------------------

def test_listening_socket_proves_the_parent(captured):
    where = f"127.0.0.1:{captured.port}"
    found = find_parent(["127.0.0.1"], captured.port, APACHE)  # a walk over every process
    assert found[:2] == (captured.parent, f"listening on {where}")
    # The proof's sockets carry their accept queue (rx_queue of the captured
    # /proc/net/tcp); that table has no backlog limit: not known, not 0.
    assert found.listeners == (processes.Listener(where, 0, None),)
    processes._proven.clear()
    native = captured.roles["native"][0]
    assert find_parent(["127.0.0.1"], captured.port, APACHE, hints=[native]).pid \
        == captured.parent  # the page's PID says where to look first
    processes._proven.clear()
    assert parent_of_url("127.0.0.1", captured.port, APACHE).pid == captured.parent


def test_decoy_apache_on_another_port_is_never_chosen(captured):
    decoys = [captured.decoy, *captured.roles["decoy_child"]]
    # The page of the main server "names" the decoy's processes: only hints.
    assert find_parent(["127.0.0.1"], captured.port, APACHE, hints=decoys).pid \
        == captured.parent
    found = scan(captured.parent, APACHE)
    assert found.children and not {c.pid for c in found.children} & set(decoys)
    # The decoy is found where it listens, over IPv4 and IPv6 alike...
    port = captured.meta["decoy_port"]
    assert find_parent(["127.0.0.1"], port, APACHE).pid == captured.decoy
    assert find_parent(["::1"], port, APACHE).pid == captured.decoy
    # ...and nowhere else: a port nothing listens on has no parent at all.
    free = max(captured.port, port, captured.meta["stranger_port"]) + 1
    nothing = find_parent(["127.0.0.1"], free, APACHE, hints=[captured.parent, *decoys])
    assert nothing.pid is None and f"nothing listens on 127.0.0.1:{free}" in nothing.reason


def test_pid_file_is_checked_against_the_listener(captured, tmp_path):
    pid_file = tmp_path / "apache2.pid"
    pid_file.write_text(f"{captured.roles['native'][0]}\n")  # a worker: its parent counts
    assert find_parent(["127.0.0.1"], captured.port, APACHE, str(pid_file)).pid \
        == captured.parent
    pid_file.write_text(f"{captured.decoy}\n")
    found = find_parent(["127.0.0.1"], captured.port, APACHE, str(pid_file))
    assert found.pid is None
    assert f"names PID {captured.decoy}, but the Apache listening on 127.0.0.1:" \
        f"{captured.port} is PID {captured.parent}" in found.reason
    pid_file.write_text(f"{captured.stranger}\n")
    found = find_parent(["127.0.0.1"], captured.port, APACHE, str(pid_file))
    assert found.pid is None and "names no running apache2 process" in found.reason


def test_listener_that_is_not_apache_gives_no_parent(captured):
    port = captured.meta["stranger_port"]
    found = find_parent(["127.0.0.1"], port, APACHE, hints=[captured.roles["native"][0]])
    assert found.pid is None
    assert f"is 'a b) (c' (PID {captured.stranger}), not apache2" in found.reason


# --- the tree: children, groups by title, zombies ---------------------------------

def test_children_come_from_the_kernel_list(captured):
    kids = [pid for pid, view in captured.psutil.items() if view["ppid"] == captured.parent]
    assert procfs.children(captured.parent) == sorted(kids)
    roles = captured.roles
    assert sorted(kids) == sorted(roles["native"] + roles["wsgi"] + roles["zombie"])
    # Without the kernel's list (no task/*/children): every process's stat.
    shutil.rmtree(captured.root / str(captured.parent) / "task")
    assert procfs.children(captured.parent) == sorted(kids)


def test_scan_groups_children_by_title(captured):
    found = scan(captured.parent, APACHE)
    natives = captured.roles["native"]
    wsgi = captured.roles["wsgi"]
    by_pid = {c.pid: c for c in found.children}
    assert sorted(by_pid) == sorted(natives + wsgi)
    assert {pid: c.title for pid, c in by_pid.items()} == \
        {pid: captured.title(pid) for pid in by_pid}
    example = [p for p in wsgi if captured.title(p) == "(wsgi:example)"]
    long = [p for p in wsgi if captured.title(p) == "(wsgi:reporting-b"]
    assert len(example) == 2 and len(long) == 1
    # The cut title is completed from the running server's configuration.
    assert {pid: c.group for pid, c in by_pid.items()} == {
        **{p: NATIVE_GROUP for p in natives}, **{p: "example" for p in example},
        long[0]: "reporting-backend"}
    assert found.truncated == set() and found.warnings == ()
    assert found.groups() == {NATIVE_GROUP: [by_pid[p].memory for p in natives],
                              "example": [by_pid[p].memory for p in example],
                              "reporting-backend": [by_pid[long[0]].memory]}
    assert list(found.groups()) == [NATIVE_GROUP, "example", "reporting-backend"]
    assert found.parent_pid == captured.parent


def test_cut_group_name_is_detected_when_the_configuration_cannot_tell(captured):
    (captured.root / "serverroot" / "httpd.conf").unlink()
    found = scan(captured.parent, APACHE)
    (long,) = [c for c in found.children if c.title == "(wsgi:reporting-b"]
    assert long.group == "reporting-b"
    assert found.truncated == {"reporting-b"}
    assert {c.group for c in found.children if c.title == "(wsgi:example)"} == {"example"}
    (warning,) = found.warnings
    assert "'reporting-b' is cut short by the process title (17 characters of room)" \
        in warning and "configuration could not tell" in warning


@pytest.mark.parametrize("kind", ["rss", "pss", "uss"])
def test_zombie_is_in_the_tree_but_not_a_worker(captured, kind):
    assert procfs.stat(captured.zombie).state == "Z"
    assert captured.psutil[captured.zombie]["status"] == "zombie"
    assert captured.zombie in procfs.children(captured.parent)
    found = scan(captured.parent, APACHE, kind)
    assert captured.zombie not in {c.pid for c in found.children}
    assert found.warnings == ()


# --- numbers: memory and start times ----------------------------------------------

def test_memory_equals_the_captured_files(captured):
    members = captured.roles["native"] + captured.roles["wsgi"]
    rss = {c.pid: c.memory for c in scan(captured.parent, APACHE, "rss").children}
    assert rss == {pid: captured.rss(pid) for pid in members}
    assert rss == {pid: captured.psutil[pid]["rss"] for pid in members}
    pss = scan(captured.parent, APACHE, "pss")
    assert pss.memory_kind == "pss"
    assert {c.pid: c.memory for c in pss.children} == \
        {pid: captured.rollup(pid)["Pss"] for pid in members}
    uss = {c.pid: c.memory for c in scan(captured.parent, APACHE, "uss").children}
    assert uss == {pid: captured.rollup(pid)["Private_Clean"]
                   + captured.rollup(pid)["Private_Dirty"]
                   + captured.rollup(pid)["Private_Hugetlb"] for pid in members}
    # Forked workers share pages: each measure tells a different story.
    pss_of = {c.pid: c.memory for c in pss.children}
    assert all(uss[p] <= pss_of[p] < rss[p] for p in members)
    # Every captured process, Apache's or not: some of them have private
    # clean pages too (idle workers have none), so each field counts.
    rollups = {int(path.parent.name): captured.rollup(int(path.parent.name))
               for path in captured.root.glob("[0-9]*/smaps_rollup")}
    assert len(rollups) == len(captured.psutil) - 1  # all but the zombie
    assert any(r["Private_Clean"] and r["Private_Dirty"] for r in rollups.values())
    for pid, r in rollups.items():
        assert procfs.rss(pid) == captured.rss(pid) == captured.psutil[pid]["rss"]
        assert procfs.pss_uss(pid) == (
            r["Pss"], r["Private_Clean"] + r["Private_Dirty"] + r["Private_Hugetlb"])


def test_start_times_names_and_parents_agree_with_psutil_to_the_bit(captured):
    # The reaper re-verifies with psutil what the collector's scan found; the
    # stranger's name has spaces and parentheses.
    assert set(captured.psutil) == {int(p.name) for p in captured.root.glob("[0-9]*")}
    for pid, view in captured.psutil.items():
        st = procfs.stat(pid)
        assert (st.pid, st.name, st.ppid) == (pid, view["name"], view["ppid"])
        assert procfs.create_time(st) == view["create_time"]
    assert procfs.stat(captured.stranger).name == "a b) (c"
    found = scan(captured.parent, APACHE)
    assert found.parent_create_time == captured.psutil[captured.parent]["create_time"]
    assert all(c.create_time == captured.psutil[c.pid]["create_time"]
               for c in found.children)


def test_socket_inodes_are_the_fd_links(captured):
    listening = dict(procfs.listening_sockets(captured.port))
    (inode,) = listening.values()
    assert listening == {"127.0.0.1": inode}
    for pid in (captured.parent, captured.decoy, captured.stranger):
        links = [os.readlink(fd) for fd in (captured.root / str(pid) / "fd").iterdir()]
        assert any(not link.startswith("socket:") for link in links)  # pipes, epoll
        assert procfs.socket_inodes(pid) == \
            {int(link[8:-1]) for link in links if link.startswith("socket:[")}
    assert inode in procfs.socket_inodes(captured.parent)
    assert inode not in procfs.socket_inodes(captured.decoy)
    with pytest.raises(procfs.NoProcess):
        procfs.socket_inodes(2**22 + 7)


def test_a_file_is_read_to_its_end_whatever_its_size(tmp_path, monkeypatch):
    """procfs reads with os.read in READ_SIZE pieces: a file of several pieces
    (a long command line) comes whole, an empty one as b''; a missing one is
    NoProcess."""
    monkeypatch.setattr(procfs, "PROC", str(tmp_path))
    (tmp_path / "7").mkdir()
    args = [b"x" * 1000 + str(i).encode() for i in range(3 * procfs.READ_SIZE // 1000)]
    (tmp_path / "7" / "cmdline").write_bytes(b"\0".join(args) + b"\0")
    assert procfs.cmdline(7) == [a.decode() for a in args]
    (tmp_path / "7" / "cmdline").write_bytes(b"")
    assert procfs.cmdline(7) == []
    with pytest.raises(procfs.NoProcess):
        procfs.cmdline(8)


def test_a_short_read_is_not_the_end_of_a_file(tmp_path, monkeypatch):
    """read(2) of a /proc file may return less than asked before its end (a
    seq_file stops at a record that does not fit): only an empty read ends
    it, so a file read in pieces shorter than READ_SIZE still comes whole."""
    monkeypatch.setattr(procfs, "PROC", str(tmp_path))
    (tmp_path / "7").mkdir()
    args = [b"/usr/sbin/apache2", b"-k", b"start", b"-d", b"/etc/apache2"]
    (tmp_path / "7" / "cmdline").write_bytes(b"\0".join(args) + b"\0")
    real = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real(fd, min(n, 5)))
    assert procfs.cmdline(7) == [a.decode() for a in args]


def test_holds_at_reads_the_named_descriptors(tmp_path, monkeypatch):
    """procfs.holds_at: each (fd, inode) must be that socket's link now."""
    monkeypatch.setattr(procfs, "PROC", str(tmp_path))
    fd_dir = tmp_path / "9" / "fd"
    fd_dir.mkdir(parents=True)
    os.symlink("socket:[111]", fd_dir / "3")
    os.symlink("socket:[222]", fd_dir / "4")
    os.symlink("/dev/null", fd_dir / "5")
    assert procfs.socket_fds(9) == {111: "3", 222: "4"}
    assert procfs.holds_at(9, (("3", 111), ("4", 222)))
    assert not procfs.holds_at(9, (("3", 111), ("4", 111)))  # another socket there
    assert not procfs.holds_at(9, (("5", 111),))
    assert not procfs.holds_at(9, (("6", 111),))  # closed
    assert not procfs.holds_at(10, (("3", 111),))  # no such process


def test_children_of_a_thread_are_found_with_the_thread_count_from_stat(tmp_path):
    """The kernel lists a child under the task (thread) that forked it. With
    one thread, children() reads that task's list alone (the count comes
    from stat); with more, every task's: a child forked by a second thread
    is found either way the count is told."""
    import subprocess
    import sys

    script = ("import subprocess, threading, sys, time\n"
              "def spawn():\n"
              "    p = subprocess.Popen(['sleep', '30'])\n"
              "    print(p.pid, flush=True)\n"
              "    time.sleep(30)\n"
              "threading.Thread(target=spawn, daemon=True).start()\n"
              "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        child = int(proc.stdout.readline())
        st = procfs.stat(proc.pid)
        assert st.threads == 2
        assert child in procfs.children(proc.pid, st.threads) == procfs.children(proc.pid)
        assert procfs.stat(child).threads == 1
        assert procfs.children(child, 1) == procfs.children(child) == []
    finally:
        if child:
            os.kill(child, 9)
        proc.kill()
        proc.wait()


def test_the_parents_own_task_list_is_the_same_as_all_of_them(captured):
    st = procfs.stat(captured.parent)
    assert st.threads == 1
    assert procfs.children(captured.parent, st.threads) == procfs.children(captured.parent)


# --- titles a long-running run keeps (Reuse) -------------------------------------

def _title_reads(monkeypatch) -> dict:
    """{pid: how many times its cmdline was read}, counted from now on."""
    reads: dict = {}
    real = procfs.cmdline

    def counted(pid: int) -> list:
        reads[pid] = reads.get(pid, 0) + 1
        return real(pid)

    monkeypatch.setattr(procfs, "cmdline", counted)
    return reads


def _clock_at(monkeypatch, seconds: list) -> None:
    """CLOCK_BOOTTIME as ``seconds[0]`` (a list: the test moves it)."""
    from apache_metrics_exporter import clocks

    monkeypatch.setattr(clocks, "boottime", lambda: seconds[0])


def _started(pid: int) -> float:
    """The process's start, CLOCK_BOOTTIME seconds."""
    return procfs.stat(pid).start_ticks / procfs.CLOCK_TICKS


def _rewrite(captured, pid: int, start_ticks=None, title=None) -> None:
    """The captured process ``pid`` with another start (another process
    with the same PID) and/or another title (argv[0] written over)."""
    if start_ticks is not None:
        path = captured.root / str(pid) / "stat"
        data = path.read_bytes()
        right = data.rindex(b")")
        fields = data[right + 2:].split(b" ")
        fields[19] = str(start_ticks).encode()  # field 22, starttime
        path.write_bytes(data[:right + 2] + b" ".join(fields))
    if title is not None:
        path = captured.root / str(pid) / "cmdline"
        path.write_bytes(title.encode() + b"\0" + path.read_bytes().partition(b"\0")[2])


def test_a_native_title_read_past_the_settling_time_is_not_read_again(captured, monkeypatch):
    """A native worker's title read when it was older than TITLE_SETTLED is
    its last: later cycles take it from the kept tree, and report what a
    scan that reads every title reports."""
    (native,) = captured.roles["native"]
    _clock_at(monkeypatch, [_started(native) + processes.TITLE_SETTLED + 1])
    fresh = scan(captured.parent, APACHE)
    reads = _title_reads(monkeypatch)
    reuse = processes.Reuse()
    for _ in range(3):
        assert scan(captured.parent, APACHE, reuse=reuse) == fresh
    assert reads[native] == 1
    assert all(reads[pid] == 1 for pid in captured.roles["wsgi"])
    (tree,) = reuse.trees.values()
    assert tree.titles[(native, procfs.stat(native).start_ticks)] == captured.title(native)


def test_a_child_young_when_its_title_was_read_is_read_again(captured, monkeypatch):
    """A child not older than TITLE_SETTLED may be a mod_wsgi daemon that
    has not written its title yet: read every cycle until a read finds it
    older (then kept). An age that cannot be (no clock, a start after now)
    is young."""
    (native,) = captured.roles["native"]
    start = _started(native)
    now = [start + 1]
    _clock_at(monkeypatch, now)
    reads = _title_reads(monkeypatch)
    reuse = processes.Reuse()

    def cycle() -> str:
        (child,) = [c for c in scan(captured.parent, APACHE, reuse=reuse).children
                    if c.pid == native]
        return child.group

    assert [cycle(), cycle()] == [NATIVE_GROUP] * 2 and reads[native] == 2
    now[0] = start + processes.TITLE_SETTLED - 0.5
    assert cycle() == NATIVE_GROUP and reads[native] == 3
    now[0] = start - 100  # before it started: the clocks disagree, so young
    assert cycle() == NATIVE_GROUP and reads[native] == 4
    from apache_metrics_exporter import clocks

    monkeypatch.setattr(clocks, "boottime", lambda: None)  # no clock: young
    assert cycle() == NATIVE_GROUP and reads[native] == 5
    _clock_at(monkeypatch, now)
    now[0] = start + processes.TITLE_SETTLED + 1
    assert [cycle(), cycle(), cycle()] == [NATIVE_GROUP] * 3 and reads[native] == 6


def test_a_daemon_titled_within_the_settling_time_is_seen_in_its_group(captured,
                                                                      monkeypatch):
    """mod_wsgi writes a daemon's title just after its fork: a cycle that
    found it still showing the parent's title reads it again, and the next
    cycle reports it in its group (then keeps that title)."""
    (native,) = captured.roles["native"]
    _clock_at(monkeypatch, [_started(native) + 2])
    reads = _title_reads(monkeypatch)
    reuse = processes.Reuse()
    groups = {c.pid: c.group for c in scan(captured.parent, APACHE, reuse=reuse).children}
    assert groups[native] == NATIVE_GROUP
    _rewrite(captured, native, title="(wsgi:example)")
    for _ in range(2):
        groups = {c.pid: c.group for c in scan(captured.parent, APACHE,
                                               reuse=reuse).children}
        assert groups[native] == "example"
    assert reads[native] == 2


def test_a_pid_used_again_has_its_title_read_anew(captured, monkeypatch):
    """A title is kept by PID and start time: another process under the
    same PID (another start) is read, never given the title kept for the
    one before it."""
    (native,) = captured.roles["native"]
    start = procfs.stat(native).start_ticks
    now = [_started(native) + processes.TITLE_SETTLED + 1]
    _clock_at(monkeypatch, now)
    reads = _title_reads(monkeypatch)
    reuse = processes.Reuse()
    for _ in range(2):
        groups = {c.pid: c.group for c in scan(captured.parent, APACHE,
                                               reuse=reuse).children}
        assert groups[native] == NATIVE_GROUP
    assert reads[native] == 1
    _rewrite(captured, native, start_ticks=start + 500, title="(wsgi:example)")
    now[0] += 5  # the newcomer: old enough too (its title kept from now on)
    for _ in range(2):
        groups = {c.pid: c.group for c in scan(captured.parent, APACHE,
                                               reuse=reuse).children}
        assert groups[native] == "example"
    assert reads[native] == 2
    (tree,) = reuse.trees.values()
    assert (native, start) not in tree.titles
    assert tree.titles[(native, start + 500)] == "(wsgi:example)"
