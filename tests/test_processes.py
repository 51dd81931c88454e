"""Process grouping and memory statistics.

Scans of real Apache trees (children grouped by title, cut mod_wsgi names,
memory, zombies, names with spaces and parentheses, the parent proven by its
listening socket) run over captured /proc trees: tests/test_procfs_fixtures.py.
The one real-process test here checks that procfs and psutil agree on a live
process, which is what lets captures stand in for processes.
"""

import os

import psutil
import pytest

from apache_metrics_exporter.collect.processes import (
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


def test_scan_without_parent_is_empty():
    assert scan(None, ("apache2",)).children == []


def test_pid_file_pointing_elsewhere_is_not_trusted(tmp_path):
    pid_file = tmp_path / "apache2.pid"
    pid_file.write_text(str(os.getpid()))  # this Python, not Apache
    assert find_parent((), 80, ("apache2-not-running",), str(pid_file)).pid is None


def test_procfs_agrees_with_psutil_to_the_bit():
    # The reaper re-verifies with psutil what the collector's /proc scan found:
    # start times must be the same float, memory the same figure.
    from apache_metrics_exporter.collect import procfs

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
