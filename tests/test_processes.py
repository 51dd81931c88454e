"""Process grouping and memory statistics."""

import os
import subprocess
import sys
import time

import psutil
import pytest

from apache_metrics_exporter.processes import (
    find_parent,
    memory_stats,
    scan,
    wsgi_group,
)


def test_median_of_even_count_is_mean_of_middle_values():
    s = memory_stats([4, 1, 3, 2])
    assert s == (4, 1, 4, 2.5, 2.5)


def test_median_of_odd_count_is_the_middle_value():
    s = memory_stats([12677120, 12050432, 12632064])
    assert s.median == 12632064 and isinstance(s.median, int)
    assert s.average == pytest.approx(12453205.333333334)
    assert s.min == 12050432 and s.max == 12677120


def test_empty_group_is_all_zero():
    assert memory_stats([]) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("title,room,expected", [
    ("(wsgi:example)   ", 17, ("example", False)),
    ("(wsgi:reporting-b", 17, ("reporting-b", True)),
    ("(wsgi:exampl", 12, ("exampl", True)),
    ("(wsgi:e", 7, ("e", True)),
    ("(wsgi:a)", 8, ("a", False)),
    ("/usr/sbin/apache2", 17, None),
    ("", 17, None),
])
def test_wsgi_titles(title, room, expected):
    assert wsgi_group(title, room) == expected


def test_scan_of_a_process_tree_groups_children_by_title(tmp_path):
    # A real parent with two children named like Apache, one titled like a
    # mod_wsgi daemon; the scan must find both and measure their memory.
    script = tmp_path / "tree.py"
    script.write_text(
        "import os, sys, time\n"
        "kids = []\n"
        "for title in ('native', '(wsgi:grp)'):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.execv(sys.executable, [title, '-c', 'import time; time.sleep(60)'])\n"
        "    kids.append(pid)\n"
        "print(' '.join(map(str, kids)), flush=True)\n"
        "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    kids: list = []
    try:
        kids += [int(p) for p in proc.stdout.readline().split()]
        deadline = time.monotonic() + 10  # until both children have exec'd
        while [psutil.Process(k).cmdline()[:1] for k in kids] != [["native"], ["(wsgi:grp)"]]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        name = psutil.Process(kids[0]).name()
        result = scan(proc.pid, (name,))
        by_pid = {c.pid: c for c in result.children}
        assert set(by_pid) == set(kids)
        assert by_pid[kids[0]].group == "native"
        assert by_pid[kids[1]].group == "grp"
        rss = psutil.Process(kids[1]).memory_info().rss
        assert abs(by_pid[kids[1]].memory - rss) < 4 * 2**20
        assert result.groups() == {"native": [by_pid[kids[0]].memory],
                                   "grp": [by_pid[kids[1]].memory]}
    finally:
        # Only the tree this test started: the session's Apache servers are
        # children of this process too.
        for pid in kids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        proc.kill()
        proc.wait()


def test_scan_without_parent_is_empty():
    assert scan(None, ("apache2",)).children == []


def test_pid_file_pointing_elsewhere_is_not_trusted(tmp_path):
    pid_file = tmp_path / "apache2.pid"
    pid_file.write_text(str(os.getpid()))  # this Python, not Apache
    assert find_parent((), 80, ("apache2-not-running",), str(pid_file)).pid is None


def test_procfs_agrees_with_psutil_to_the_bit():
    # The reaper re-verifies with psutil what the collector's /proc scan found:
    # start times must be the same float, memory the same figure.
    from apache_metrics_exporter import procfs

    me = psutil.Process()
    st = procfs.stat(me.pid)
    assert procfs.create_time(st) == me.create_time()
    assert st.ppid == me.ppid() and st.name == me.name()
    assert procfs.cmdline(me.pid) == me.cmdline()
    assert abs(procfs.rss(me.pid) - me.memory_info().rss) < 2 * 2**20
    pss, uss = procfs.pss_uss(me.pid)
    full = me.memory_full_info()
    assert abs(pss - full.pss) < 2 * 2**20 and abs(uss - full.uss) < 2 * 2**20
    assert me.pid in procfs.children(me.ppid())
    with pytest.raises(procfs.NoProcess):
        procfs.stat(2**22 + 7)


def test_procfs_name_with_spaces_and_parentheses(tmp_path):
    from apache_metrics_exporter import procfs

    weird = tmp_path / "a b) (c"
    os.symlink(sys.executable, weird)
    proc = subprocess.Popen([str(weird), "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 5
        while procfs.stat(proc.pid).name != "a b) (c" and time.monotonic() < deadline:
            time.sleep(0.02)
        st = procfs.stat(proc.pid)
        assert st.name == "a b) (c" and st.ppid == os.getpid()
        assert procfs.create_time(st) == psutil.Process(proc.pid).create_time()
    finally:
        proc.kill()
        proc.wait()
