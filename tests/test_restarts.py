"""Restart detection across runs, from the collector's own state file."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from apache_metrics_exporter import cli, clocks, output, restarts
from apache_metrics_exporter.collect.processes import EMPTY_SCAN
from apache_metrics_exporter.collect.snapshot import build
from apache_metrics_exporter.collect.status import parse_auto
from apache_metrics_exporter.errors import OutputError
from tests.conftest import data, exporter_env, parse_tab, prom_series, run_exporter
from tests.harness.pages import serve_pages

PAGE = data("2.4.71-prefork-ext-on.auto.txt").decode("latin-1")
URL = "http://127.0.0.1:8080/server-status"
T0 = 1_764_460_800.0  # collection times of the synthetic readings


def snap(uptime: int = 100, config: int = 1, mpm: int = 0, parent=None, url: str = URL,
         at: float = T0, boot=None, accesses: int = 13, ticks=None):
    """A snapshot collected at ``at`` of a server up for ``uptime`` seconds;
    ``boot``: CLOCK_BOOTTIME then (boot id BOOT), ``ticks``: the parent's start
    ticks after boot."""
    text = (PAGE.replace("ServerUptimeSeconds: 1", f"ServerUptimeSeconds: {uptime}")
            .replace("ParentServerConfigGeneration: 1", f"ParentServerConfigGeneration: {config}")
            .replace("ParentServerMPMGeneration: 0", f"ParentServerMPMGeneration: {mpm}")
            .replace("Total Accesses: 13", f"Total Accesses: {accesses}"))
    scan = EMPTY_SCAN if parent is None else EMPTY_SCAN._replace(
        parent_pid=parent[0], parent_create_time=parent[1], parent_start_ticks=ticks)
    mark = None if boot is None else {"id": BOOT, "time": boot}
    return build(url, at, parse_auto(text), None, None, scan, boot=mark)


BOOT = "0f6b5a2c-3e1d-4c8b-9a7f-2d4e6b8c0a1e"


def counts(s) -> dict:
    return {dict(x.labels)["kind"]: x.value for x in s.samples
            if x.metric.name == "restarts_total"}


def track(path, s):
    restarts.track([s], str(path))
    return counts(s)


def reading(at: float, uptime: int, parent=None, config=1, mpm=0, duration=0.0) -> dict:
    return {"version": 1, "time": at, "duration": duration, "parent": parent,
            "figures": {"uptime": uptime, "config": config, "mpm": mpm}}


# --- what a restart is --------------------------------------------------------------

def test_first_sight_then_graceful_then_hard(tmp_path):
    path = tmp_path / "state.json"
    assert track(path, snap(uptime=100, at=T0)) == {"graceful": 0, "hard": 0}
    assert track(path, snap(uptime=160, config=2, at=T0 + 60)) == {"graceful": 1, "hard": 0}
    assert track(path, snap(uptime=170, config=2, mpm=1, at=T0 + 70)) == \
        {"graceful": 2, "hard": 0}
    # Started again 3 s ago: a new start time (and the uptime went back).
    assert track(path, snap(uptime=3, at=T0 + 80)) == {"graceful": 2, "hard": 1}
    assert track(path, snap(uptime=50, at=T0 + 127)) == {"graceful": 2, "hard": 1}


def test_a_hard_restart_with_a_larger_uptime_is_seen_without_process_information(tmp_path):
    # Stored uptime 5; stopped, started again, read 6 s later: uptime 6 > 5.
    # No parent known (--no-processes, or an unprivileged collector).
    path = tmp_path / "state.json"
    assert track(path, snap(uptime=5, at=T0)) == {"graceful": 0, "hard": 0}
    assert track(path, snap(uptime=6, at=T0 + 30)) == {"graceful": 0, "hard": 1}
    assert track(path, snap(uptime=36, at=T0 + 60)) == {"graceful": 0, "hard": 1}


def test_start_times_within_the_tolerance_are_the_same_server():
    before = reading(T0, 100)  # started at T0 - 100
    # Whole seconds and jitter: a start time up to TOLERANCE later is the same one.
    assert restarts.classify(before, reading(T0 + 50.9, 150)) is None
    assert restarts.classify(before, reading(T0 + 61.9, 160)) is None
    assert restarts.classify(before, reading(T0 + 62.5, 160)) == "hard"
    # An earlier start time (a clock stepped back) is no restart either.
    assert restarts.classify(before, reading(T0 + 50, 200)) is None
    # The previous page was read some time within its collection (4 s here):
    # the start time it gave can be that much early.
    slow = reading(T0, 100, duration=4.0)
    assert restarts.classify(slow, reading(T0 + 60, 155)) is None
    assert restarts.classify(slow, reading(T0 + 60, 150)) == "hard"
    # Generations only matter when the server carried on.
    assert restarts.classify(before, reading(T0 + 50, 150, config=2)) == "graceful"
    assert restarts.classify(before, reading(T0 + 50, 150, mpm=1)) == "graceful"
    assert restarts.classify(before, reading(T0 + 50, 10, config=1)) == "hard"


def test_the_parent_process_decides_when_both_readings_know_it():
    before = reading(T0, 10, parent=[100, 1.5])
    # Another parent is a hard restart even with a start time that fits.
    assert restarts.classify(before, reading(T0 + 10, 20, parent=[200, 9.5])) == "hard"
    assert restarts.classify(before, reading(T0 + 10, 20, parent=[100, 2.5])) == "hard"
    assert restarts.classify(before, reading(T0 + 10, 20, parent=[100, 1.5])) is None
    # Without a parent on one side, the start time decides.
    assert restarts.classify(before, reading(T0 + 10, 20)) is None
    assert restarts.classify(before, reading(T0 + 10, 5)) == "hard"


def test_targets_are_counted_apart(tmp_path):
    path = str(tmp_path / "state.json")
    a, b = "http://127.0.0.1:1/s", "http://127.0.0.1:2/s"
    restarts.track([snap(uptime=100, url=a), snap(uptime=100, url=b)], path)
    sa, sb = snap(uptime=1, url=a, at=T0 + 100), snap(uptime=200, url=b, at=T0 + 100)
    restarts.track([sa, sb], path)
    assert counts(sa)["hard"] == 1 and counts(sb)["hard"] == 0


def test_a_down_target_changes_nothing(tmp_path):
    path = str(tmp_path / "state.json")
    restarts.track([snap(uptime=100)], path)
    down = build(URL, T0 + 10, None, None, None, EMPTY_SCAN, error="refused")
    restarts.track([down], path)
    assert counts(down) == {}
    s = snap(uptime=120, at=T0 + 20)
    restarts.track([s], path)
    assert counts(s) == {"graceful": 0, "hard": 0}


# --- newest reading wins --------------------------------------------------------------

def test_interleaved_collectors_keep_the_newest_reading_and_count_once(tmp_path):
    """Two collectors share the file. A reads the old server at T0+10, B the
    restarted one at T0+20, B saves first: one hard restart. A's older reading
    must then neither count again nor become the stored one - or the next
    collection would compare with the old server and count the restart twice."""
    path = tmp_path / "state.json"
    assert track(path, snap(uptime=100, at=T0)) == {"graceful": 0, "hard": 0}
    a = snap(uptime=110, at=T0 + 10)  # collected first...
    b = snap(uptime=5, at=T0 + 20)  # ...restarted at T0 + 15
    assert track(path, b) == {"graceful": 0, "hard": 1}
    assert track(path, a) == {"graceful": 0, "hard": 1}  # ...saved last
    stored = json.loads(path.read_text())["targets"][URL]["reading"]
    assert stored["time"] == T0 + 20 and stored["figures"]["uptime"] == 5
    assert track(path, snap(uptime=15, at=T0 + 30)) == {"graceful": 0, "hard": 1}


def test_interleaved_graceful_restart_is_counted_once(tmp_path):
    path = tmp_path / "state.json"
    track(path, snap(uptime=100, config=1, at=T0))
    newer = snap(uptime=120, config=2, at=T0 + 20)
    older = snap(uptime=110, config=1, at=T0 + 10)
    assert track(path, newer) == {"graceful": 1, "hard": 0}
    assert track(path, older) == {"graceful": 1, "hard": 0}
    assert track(path, snap(uptime=130, config=2, at=T0 + 30)) == {"graceful": 1, "hard": 0}


# One collector in its own process: builds its snapshot (its collection time
# is fixed then), says "collected", waits for a line on stdin, then saves.
COLLECTOR = """
import sys
from tests.test_restarts import snap, counts
from apache_metrics_exporter import restarts
path, at, uptime = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
boot = float(sys.argv[4]) if len(sys.argv) > 4 else None
s = snap(uptime=uptime, at=at, boot=boot)
print("collected", flush=True)
sys.stdin.readline()
restarts.track([s], path, explicit=True)
print(counts(s)["hard"], flush=True)
"""


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def collector(path, at: float, uptime: int, boot: float = None) -> subprocess.Popen:
    extra = [] if boot is None else [repr(boot)]
    proc = subprocess.Popen([sys.executable, "-c", COLLECTOR, str(path), repr(at), str(uptime),
                             *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=exporter_env(PYTHONPATH=ROOT), cwd=ROOT)
    assert proc.stdout.readline() == "collected\n"
    return proc


def save(proc: subprocess.Popen) -> int:
    out, _ = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0
    return int(out)


def test_two_collector_processes_saving_out_of_order_count_one_restart(tmp_path):
    path = tmp_path / "state.json"
    assert save(collector(path, T0, 100)) == 0
    old = collector(path, T0 + 10, 110)  # reads the old server
    new = collector(path, T0 + 20, 5)  # reads the restarted one
    assert save(new) == 1
    assert save(old) == 1
    assert save(collector(path, T0 + 30, 15)) == 1
    assert json.loads(path.read_text())["targets"][URL]["reading"]["time"] == T0 + 30


def test_two_collector_processes_across_a_clock_step_back_count_one_restart(tmp_path):
    """As above, with the wall clock stepped back an hour between the two
    reads: the monotonic clock orders them (on the wall clock the restarted
    server's reading would be the older one, and the old one compared with it)."""
    path = tmp_path / "state.json"
    assert save(collector(path, T0, 86400, 1000.0)) == 0
    old = collector(path, T0 + 10, 86410, 1010.0)
    new = collector(path, T0 + 20 - 3600, 5, 1020.0)
    assert save(new) == 1
    assert save(old) == 1
    assert save(collector(path, T0 + 30 - 3600, 15, 1030.0)) == 1
    assert json.loads(path.read_text())["targets"][URL]["reading"]["boot"]["time"] == 1030.0


# --- clocks in the future ---------------------------------------------------------------

def future_state(path, n: int, now: float) -> None:
    targets = {f"http://127.0.0.1:{i + 1}/bogus": {
        "graceful": 0, "hard": 0, "reading": reading(now + 86400 * 365, 10)}
        for i in range(n)}
    path.write_text(json.dumps({"version": 2, "targets": targets}))


def test_targets_read_in_the_future_never_evict_the_real_one(tmp_path):
    path = tmp_path / "state.json"
    now = time.time()
    future_state(path, restarts.MAX_TARGETS, now)
    for n in range(3):
        s = snap(uptime=100 + 10 * n, at=now + 10 * n - 30)
        assert track(path, s) == {"graceful": 0, "hard": 0}
        targets = json.loads(path.read_text())["targets"]
        assert len(targets) == restarts.MAX_TARGETS
        assert URL in targets  # kept: a bogus one went instead, every time
    assert sum("/bogus" in u for u in targets) == restarts.MAX_TARGETS - 1


def test_a_reading_from_the_future_is_replaced_and_proves_nothing(tmp_path):
    path = tmp_path / "state.json"
    now = time.time()
    # Stored by a clock a year ahead, with a later generation: neither a
    # "newer reading" that blocks this one, nor a base for counting.
    path.write_text(json.dumps({"version": 2, "targets": {URL: {
        "graceful": 4, "hard": 2, "reading": reading(now + 86400 * 365, 10, config=9)}}}))
    assert track(path, snap(uptime=100, config=1, at=now - 5)) == {"graceful": 4, "hard": 2}
    assert json.loads(path.read_text())["targets"][URL]["reading"]["time"] == now - 5
    assert track(path, snap(uptime=103, config=2, at=now - 2)) == {"graceful": 5, "hard": 2}


def test_a_reading_a_little_ahead_is_still_the_newer_one(tmp_path):
    # Within FUTURE_SLACK: another collector's reading, kept.
    path = tmp_path / "state.json"
    now = time.time()
    path.write_text(json.dumps({"version": 2, "targets": {URL: {
        "graceful": 0, "hard": 0, "reading": reading(now + 5, 100)}}}))
    assert track(path, snap(uptime=5, at=now - 1)) == {"graceful": 0, "hard": 0}
    assert json.loads(path.read_text())["targets"][URL]["reading"]["time"] == now + 5


# --- wall-clock steps: the monotonic reference -------------------------------------------

def interval(s) -> tuple:
    return s.value("interval_seconds"), s.value("interval_requests_per_second")


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_wall_clock_step_is_no_restart_and_no_interval(tmp_path, step):
    """The wall clock jumps by ``step`` between two collections 60 s apart
    (CLOCK_BOOTTIME 1000 -> 1060): without process information, the server
    that went on serving (uptime +60, 600 more requests) did not restart,
    and the interval is 60 s, not 60 + step (nor left out)."""
    path = tmp_path / "state.json"
    assert track(path, snap(uptime=100, at=T0, boot=1000.0, accesses=1000)) == \
        {"graceful": 0, "hard": 0}
    after = snap(uptime=160, at=T0 + 60 + step, boot=1060.0, accesses=1600)
    assert track(path, after) == {"graceful": 0, "hard": 0}
    assert interval(after) == (60.0, 10.0)
    # And the clock that stepped carries on: the next interval is plain again.
    third = snap(uptime=190, at=T0 + 90 + step, boot=1090.0, accesses=1900)
    assert track(path, third) == {"graceful": 0, "hard": 0}
    assert interval(third) == (30.0, 10.0)


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_local_apache_whose_uptime_stepped_with_the_clock_did_not_restart(tmp_path, step):
    """Apache's uptime follows its host's wall clock: on this host, the step
    is in the uptime too. Neither clock may then see a restart."""
    path = tmp_path / "state.json"
    track(path, snap(uptime=86400, at=T0, boot=1000.0))
    after = snap(uptime=86460 + int(step), at=T0 + 60 + step, boot=1060.0)
    assert track(path, after) == {"graceful": 0, "hard": 0}
    assert interval(after)[0] == 60.0


@pytest.mark.parametrize("step", [0.0, 3600.0, -3600.0])
def test_a_real_restart_is_still_counted_when_the_clock_steps(tmp_path, step):
    path = tmp_path / "state.json"
    track(path, snap(uptime=86400, at=T0, boot=1000.0))
    after = snap(uptime=5, at=T0 + 60 + step, boot=1060.0)
    assert track(path, after) == {"graceful": 0, "hard": 1}
    assert interval(after) == (None, None)  # left out across a hard restart


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_the_parent_is_the_same_process_when_the_clock_and_btime_step(tmp_path, step):
    """The parent's epoch start time is start ticks + /proc/stat's btime,
    which moves with the wall clock: the same parent must not look new; its
    start ticks after boot decide. Another start (same PID reused) is new."""
    path = tmp_path / "state.json"
    track(path, snap(uptime=100, at=T0, boot=1000.0, parent=[4242, T0 - 100.25],
                     ticks=90025))
    same = snap(uptime=160, at=T0 + 60 + step, boot=1060.0,
                parent=[4242, T0 - 100.25 + step], ticks=90025)
    assert track(path, same) == {"graceful": 0, "hard": 0}
    assert interval(same)[0] == 60.0
    other = snap(uptime=190, at=T0 + 90 + step, boot=1090.0,
                 parent=[4242, T0 - 100.25 + step], ticks=108900)
    assert track(path, other) == {"graceful": 0, "hard": 1}


def test_another_boot_or_no_reference_falls_back_to_the_wall_clock(tmp_path):
    path = tmp_path / "state.json"
    track(path, snap(uptime=100, at=T0, boot=1000.0, accesses=1000))
    # Rebooted (another boot id, CLOCK_BOOTTIME from 0 again): the wall clock.
    rebooted = snap(uptime=40, at=T0 + 60, accesses=1600)._replace(
        boot={"id": BOOT.replace("0f", "1f"), "time": 45.0})
    assert track(path, rebooted) == {"graceful": 0, "hard": 1}
    # A reading without the reference (an older version, no CLOCK_BOOTTIME)
    # after one with it: the wall clock, as before.
    plain = snap(uptime=100, at=T0 + 120, accesses=2200)
    assert track(path, plain) == {"graceful": 0, "hard": 1}
    assert interval(plain) == (60.0, 10.0)
    stored = json.loads(path.read_text())["targets"][URL]["reading"]
    assert "boot" not in stored


def test_a_reading_stamped_ahead_by_a_wrong_clock_is_used_within_the_boot(tmp_path,
                                                                         monkeypatch):
    """Stored while the wall clock was a day ahead, read after it was set
    right: the same boot's monotonic clock says it is the previous reading,
    not one from the future."""
    monkeypatch.setattr(clocks, "boot_id", lambda: BOOT)
    monkeypatch.setattr(clocks, "boottime", lambda: 1061.0)
    path = tmp_path / "state.json"
    now = time.time()
    track(path, snap(uptime=100, at=now + 86400, boot=1000.0, accesses=1000))
    later = snap(uptime=160, at=now, boot=1060.0, accesses=1600)
    assert track(path, later) == {"graceful": 0, "hard": 0}
    assert interval(later) == (60.0, 10.0)


def test_two_collectors_order_their_readings_by_the_monotonic_clock(tmp_path):
    """A reads at CLOCK_BOOTTIME 1010, the clock steps back an hour, B reads
    the restarted server at 1020 and saves first: B's is the newer reading
    although its wall time is earlier; A's changes nothing."""
    path = tmp_path / "state.json"
    track(path, snap(uptime=86400, at=T0, boot=1000.0))
    a = snap(uptime=86410, at=T0 + 10, boot=1010.0)
    b = snap(uptime=5, at=T0 + 20 - 3600, boot=1020.0)
    assert track(path, b) == {"graceful": 0, "hard": 1}
    assert track(path, a) == {"graceful": 0, "hard": 1}
    stored = json.loads(path.read_text())["targets"][URL]["reading"]
    assert stored["boot"]["time"] == 1020.0
    assert track(path, snap(uptime=15, at=T0 + 30 - 3600, boot=1030.0)) == \
        {"graceful": 0, "hard": 1}


def test_memory_orders_and_times_by_the_monotonic_clock():
    memory = restarts.Memory()
    first = snap(uptime=100, at=T0, boot=1000.0, accesses=1000)
    restarts.track([first], None, memory=memory)
    later = snap(uptime=160, at=T0 - 3540, boot=1060.0, accesses=1600)
    restarts.track([later], None, memory=memory)
    assert interval(later) == (60.0, 10.0)


# --- attacks on the reference in the file -------------------------------------------------

@pytest.fixture
def this_boot(monkeypatch):
    """Now is CLOCK_BOOTTIME 1061 of boot BOOT."""
    monkeypatch.setattr(clocks, "boot_id", lambda: BOOT)
    monkeypatch.setattr(clocks, "boottime", lambda: 1061.0)


def stored_with(path, boot, uptime: int = 100, at: float = T0) -> None:
    entry = {"graceful": 3, "hard": 2, "reading": dict(reading(at, uptime), boot=boot)}
    path.write_text(json.dumps({"version": 2, "targets": {URL: entry}}))


@pytest.mark.parametrize("value", [1e18, 2.0 ** 62, 1062.5])
def test_a_stored_monotonic_time_ahead_of_this_boots_is_no_base(tmp_path, this_boot, value):
    """CLOCK_BOOTTIME never goes back within a boot: a stored reading ahead of
    now is made up (or corrupt). It neither blocks this reading as "newer"
    nor counts a restart; it is replaced, the counts kept."""
    path = tmp_path / "state.json"
    stored_with(path, {"id": BOOT, "time": value}, uptime=5)
    now = snap(uptime=160, at=T0 + 60, boot=1060.0)
    assert track(path, now) == {"graceful": 3, "hard": 2}
    assert interval(now) == (None, None)
    assert json.loads(path.read_text())["targets"][URL]["reading"]["boot"]["time"] == 1060.0


@pytest.mark.parametrize("boot", [
    {"id": BOOT, "time": -1e6}, {"id": BOOT, "time": 0.0, "parent": None}])
def test_a_negative_or_ancient_stored_monotonic_time_counts_no_restart(tmp_path, this_boot,
                                                                         boot):
    """Negative: not a time, the wall clock decides; 0 (a reading at boot,
    the server up 100 s then): the start times agree on the wall clock."""
    path = tmp_path / "state.json"
    stored_with(path, boot, uptime=100, at=T0)
    now = snap(uptime=160, at=T0 + 60, boot=1060.0)
    assert track(path, now) == {"graceful": 3, "hard": 2}


@pytest.mark.parametrize("boot", [
    {"id": BOOT, "time": 1e300}, {"id": BOOT, "time": "1000"}, {"id": "x" * 100, "time": 1.0},
    {"id": "", "time": 1.0}, {"time": 1.0}, {"id": BOOT, "time": 1.0, "parent": 1.5},
    {"id": BOOT, "time": 1.0, "parent": 1 << 70}, [BOOT, 1.0], "boot"])
def test_a_malformed_reference_is_a_corrupt_file(tmp_path, this_boot, boot):
    path = tmp_path / "state.json"
    stored_with(path, boot)
    assert track(path, snap(uptime=160, at=T0 + 60, boot=1060.0)) == {"graceful": 0, "hard": 0}
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]


def test_a_version_2_file_without_the_reference_still_loads(tmp_path, this_boot):
    """Files written before the reference existed: the wall clock decides the
    first comparison, and the reference is stored from then on."""
    path = tmp_path / "state.json"
    stored_with(path, None, uptime=100, at=T0)
    state = json.loads(path.read_text())
    del state["targets"][URL]["reading"]["boot"]
    path.write_text(json.dumps(state))
    now = snap(uptime=160, at=T0 + 60, boot=1060.0, accesses=613)
    assert track(path, now) == {"graceful": 3, "hard": 2}
    assert interval(now)[0] == 60.0
    assert json.loads(path.read_text())["targets"][URL]["reading"]["boot"] == {
        "id": BOOT, "time": 1060.0, "parent": None}


# --- the file --------------------------------------------------------------------------

def test_a_version_1_file_keeps_its_counts(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 1, "targets": {URL: {
        "seen": int(T0), "uptime": 100, "config": 1, "mpm": 0, "graceful": 3, "hard": 2,
        "parent": None}}}))
    assert track(path, snap(uptime=160, config=2, at=T0 + 60)) == {"graceful": 4, "hard": 2}
    state = json.loads(path.read_text())
    assert state["version"] == 2
    # (plus the interval figures' optional slot table and histograms)
    assert set(state["targets"][URL]["reading"]) - {"slots", "hist"} == {
        "version", "time", "duration", "parent", "figures"}


def test_an_unknown_reading_version_keeps_the_counts(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 2, "targets": {URL: {
        "graceful": 3, "hard": 2, "reading": {"version": 7, "anything": [1, 2]}}}}))
    assert track(path, snap(uptime=1, at=T0)) == {"graceful": 3, "hard": 2}
    assert track(path, snap(uptime=2, at=T0 + 1)) == {"graceful": 3, "hard": 2}


@pytest.mark.parametrize("content", [
    b"\xff\xfe", b"[" * 100000, b'{"version": 1}', b'{"version": 2}', b'{"version": 3}',
    b'{"version": 1, "targets": {"u": {"uptime": "x"}}}',
    b'{"version": 1, "targets": {"u": {"hard": 1e400}}}',
    b'{"version": 2, "targets": {"u": {"hard": -1}}}',
    b'{"version": 2, "targets": {"u": {"hard": true}}}',
    b'{"version": 2, "targets": {"u": {"reading": {"version": 1, "time": 1e400}}}}',
    b'{"version": 2, "targets": {"u": {"reading": {"version": 1, "time": 1, '
    b'"figures": {"uptime": 1.5}}}}}',
    b'{"version": 2, "targets": {"u": {"reading": {"version": 1, "time": 1, '
    b'"figures": {"uptime": 1, "config": "2"}}}}}',
    b'{"version": 2, "targets": {"u": {"reading": {"version": 1, "time": 1, "parent": [1], '
    b'"figures": {"uptime": 1}}}}}',
    b'{"version": 2, "targets": {"u": {"reading": {"version": "1"}}}}',
])
def test_corrupt_state_is_moved_aside_and_counting_starts_again(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    s = snap()
    restarts.track([s], str(path))
    assert counts(s) == {"graceful": 0, "hard": 0}
    assert json.loads(path.read_text())["version"] == restarts.VERSION
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]


def test_untrusted_state_is_refused_and_counts_left_out(tmp_path, capsys):
    real = tmp_path / "real.json"
    real.write_text('{"version": 2, "targets": {}}')
    link = tmp_path / "state.json"
    link.symlink_to(real)
    s = snap()
    restarts.track([s], str(link), explicit=True)
    assert counts(s) == {}
    assert real.read_text() == '{"version": 2, "targets": {}}'
    assert "symlink" in capsys.readouterr().err
    world = tmp_path / "world.json"
    world.write_text('{"version": 2, "targets": {}}')
    world.chmod(0o666)
    s = snap()
    restarts.track([s], str(world), explicit=True)
    assert counts(s) == {}


def test_a_directory_with_files_at_the_state_path_is_left_alone(tmp_path, capsys):
    # --collector-state /var/lib/apache-metrics-exporter (the directory, not
    # a file in it), or '..': moved aside as a "corrupt" state file, the
    # reaper's state and the spool in it went with it.
    home = tmp_path / "ame"
    home.mkdir()
    (home / "reaper-state.json").write_text("{}")
    s = snap()
    restarts.track([s], str(home), explicit=True)
    assert counts(s) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ame"]
    assert (home / "reaper-state.json").read_text() == "{}"
    err = capsys.readouterr().err
    assert "is a directory with files in it" in err and len(err.splitlines()) == 1


def test_many_targets_are_bounded(tmp_path):
    path = str(tmp_path / "state.json")
    for n in range(restarts.MAX_TARGETS + 20):
        restarts.track([snap(url=f"http://127.0.0.1:{n + 1}/s", at=T0 + n)], path)
    state = json.loads(open(path).read())
    assert len(state["targets"]) == restarts.MAX_TARGETS
    assert "http://127.0.0.1:1/s" not in state["targets"]
    assert f"http://127.0.0.1:{restarts.MAX_TARGETS + 20}/s" in state["targets"]


# --- counts that could not be kept are left out --------------------------------------

def test_a_state_that_cannot_be_written_leaves_the_counts_out(tmp_path, monkeypatch, capsys):
    path = tmp_path / "state.json"
    assert track(path, snap(uptime=100)) == {"graceful": 0, "hard": 0}

    def fail(path, text, mode=0o600):
        raise OutputError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(output, "write_private", fail)
    s = snap(uptime=110, config=2, at=T0 + 10)
    restarts.track([s], str(path), explicit=True)
    assert counts(s) == {}
    err = capsys.readouterr().err
    assert "restart counts left out" in err and "No space left" in err


def test_a_one_shot_run_says_when_its_default_state_cannot_be_used(tmp_path, capsys,
                                                                   monkeypatch):
    # Telegraf's exec as its own user: the default state (root's directory)
    # cannot be written, and a one-shot run then never has a previous reading:
    # rates and durations are lost for good, so it is a warning, not debug.
    # A loop still compares with its memory: there it stays a debug line.
    from apache_metrics_exporter.log import WARNING, log

    monkeypatch.setattr(log, "level", WARNING)  # the default, whatever ran before
    blocked = tmp_path / "file"
    blocked.write_text("")
    path = str(blocked / "collector-state.json")  # its directory is a file
    log.forget()
    restarts.track([snap()], path, explicit=False)
    err = capsys.readouterr().err
    assert "warning: restart counts left out (so are rates and request durations" in err
    assert "give --collector-state a path this user can write" in err
    log.forget()
    restarts.track([snap()], path, explicit=False, memory=restarts.Memory())
    assert "left out" not in capsys.readouterr().err


def page_server():
    """A stand-in serving a captured real ?auto page (ExtendedStatus off) on loopback."""
    return serve_pages(data("2.4.71-prefork-ext-off.auto.txt"))


# How each format spells a restart count (text shows none; Zabbix reads the
# tab file; its discovery lists targets, no values).
SPELLING = {"tab": "restarts-", "influx": "restarts_", "collectd": "restarts_",
            "prometheus": "apache_restarts_total"}


@pytest.mark.parametrize("fmt", sorted(SPELLING))
def test_every_format_leaves_out_counts_that_were_not_kept(tmp_path, fmt, monkeypatch, capfd):
    path = tmp_path / "state.json"
    with page_server() as url:
        args = ["--url", url, "--no-processes", "--format", fmt,
                "--collector-state", str(path), "--state-file", str(tmp_path / "r.json"),
                "--spool-dir", str(tmp_path / "spool")]
        assert cli.main(args) == 0
        out = capfd.readouterr().out
        assert SPELLING[fmt] in out
        def fail(where, text, mode=0o600):
            raise OutputError(f"cannot write {where}: Read-only file system")

        monkeypatch.setattr(output, "write_private", fail)
        assert cli.main(args) == 0
        out, err = capfd.readouterr()
        assert SPELLING[fmt] not in out, out
        assert "restart counts left out" in err
        monkeypatch.undo()
        path.chmod(0o666)  # cannot be read either: anyone could have written it
        assert cli.main(args) == 0
        out, err = capfd.readouterr()
        assert SPELLING[fmt] not in out, out


def limit_file_size() -> None:
    """In the child: no regular file may grow (Python ignores SIGXFSZ, so a
    write fails with EFBIG): the state can be read, not written."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["tab", "prometheus"])
def test_unwritable_state_means_no_restart_counts_on_a_live_apache(prefork, tmp_path, fmt):
    state = str(tmp_path / "collector.json")
    args = ["--url", prefork.status_url, "--format", fmt, "--collector-state", state]
    first = run_exporter(*args)
    assert first.returncode == 0, first.stderr
    if fmt == "tab":
        assert parse_tab(first.stdout)["restarts-hard"] == "0"
    else:
        assert prom_series(first.stdout)['apache_restarts_total{kind="hard"}'] == 0
    proc = subprocess.run([sys.executable, "-m", "apache_metrics_exporter", *args],
                          capture_output=True, text=True, timeout=60, env=exporter_env(),
                          preexec_fn=limit_file_size)
    assert proc.returncode == 0, proc.stderr
    assert "restarts" not in proc.stdout, proc.stdout
    (line,) = [ln for ln in proc.stderr.splitlines() if "restart counts left out" in ln]
    assert state in line and "File too large" in line
    if fmt == "tab":  # the rest is there
        assert parse_tab(proc.stdout)["status-response"] == "0"
    else:
        assert prom_series(proc.stdout)["apache_up"] == 1


# --- live Apache -------------------------------------------------------------------------

def uptime_of(url: str) -> int:
    with urllib.request.urlopen(url + "?auto", timeout=5) as r:
        page = r.read().decode()
    return int(page.split("ServerUptimeSeconds: ", 1)[1].split()[0])


def wait_for_uptime(url: str, seconds: int) -> None:
    """Until the server has been up ``seconds`` (time itself is the condition)."""
    deadline = time.monotonic() + seconds + 20
    while uptime_of(url) < seconds:
        assert time.monotonic() < deadline, "the uptime does not grow"
        time.sleep(0.2)


@pytest.mark.integration
def test_live_graceful_and_hard_restart(own_apache, tmp_path):
    state = str(tmp_path / "collector.json")

    def run() -> dict:
        proc = run_exporter("--url", own_apache.status_url, "--format", "tab",
                            "--collector-state", state)
        assert proc.returncode == 0, proc.stderr
        return parse_tab(proc.stdout)

    def generation() -> bytes:
        with urllib.request.urlopen(own_apache.status_url + "?auto", timeout=5) as r:
            return r.read()

    first = run()
    assert (first["restarts-graceful"], first["restarts-hard"]) == ("0", "0")
    os.kill(own_apache.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 20
    while True:
        try:
            if b"ParentServerConfigGeneration: 2" in generation():
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "no graceful restart"
        time.sleep(0.1)
    second = run()
    assert (second["restarts-graceful"], second["restarts-hard"]) == ("1", "0")
    own_apache.restart_stopped()
    own_apache.start_again()
    third = run()
    assert (third["restarts-graceful"], third["restarts-hard"]) == ("1", "1")


@pytest.mark.integration
def test_live_hard_restart_with_a_larger_uptime_and_no_processes(own_apache, tmp_path):
    """Stop and start between two runs that know no processes, the second run
    when the new server has been up longer than the first run saw."""
    state = str(tmp_path / "collector.json")
    args = ["--url", own_apache.status_url, "--format", "tab", "--no-processes",
            "--collector-state", state]
    # Restarted later than TOLERANCE (+ rounding) after it started: up 4 s first.
    wait_for_uptime(own_apache.status_url, 4)
    first = run_exporter(*args)
    assert first.returncode == 0, first.stderr
    before = int(parse_tab(first.stdout)["uptime"])
    own_apache.restart_stopped()
    own_apache.start_again()
    wait_for_uptime(own_apache.status_url, before + 1)  # a larger uptime than stored
    second = run_exporter(*args)
    assert second.returncode == 0, second.stderr
    tab = parse_tab(second.stdout)
    assert int(tab["uptime"]) > before
    assert (tab["restarts-graceful"], tab["restarts-hard"]) == ("0", "1")
    third = parse_tab(run_exporter(*args).stdout)
    assert (third["restarts-graceful"], third["restarts-hard"]) == ("0", "1")


@pytest.mark.integration
@pytest.mark.parametrize("processes", [False, True], ids=["no-processes", "processes"])
def test_live_clock_steps_count_no_restart_and_a_real_restart_is_counted(
        own_apache, tmp_path, monkeypatch, capfd, processes):
    """The real one-shot path (cli.main) against a real Apache, its wall
    clock stepped an hour forward, then an hour back, between collections:
    no restart, and the interval is the real time between them. With process
    information, the kernel's btime (in the parent's epoch start time) steps
    with it. Then a real stop and start is counted."""
    from apache_metrics_exporter.collect import procfs

    offset = [0.0]
    monkeypatch.setattr(clocks, "wall", lambda: time.time() + offset[0])
    real_btime = procfs.boot_time()
    args = ["--url", own_apache.status_url, "--format", "tab",
            "--collector-state", str(tmp_path / "collector.json"),
            "--state-file", str(tmp_path / "r.json"), "--spool-dir", str(tmp_path / "spool")]
    if not processes:
        args.append("--no-processes")

    def run(step: float) -> dict:
        offset[0] = step
        monkeypatch.setattr(procfs, "_boot_time", real_btime + step)
        started = time.monotonic()
        assert cli.main(args) == 0
        tab = parse_tab(capfd.readouterr().out)
        return dict(tab, started=started)

    wait_for_uptime(own_apache.status_url, 4)  # a restart then moves the start time on
    first = run(0.0)
    assert (first["restarts-graceful"], first["restarts-hard"]) == ("0", "0")
    stored = json.loads((tmp_path / "collector.json").read_text())["targets"]
    boot = stored[own_apache.status_url]["reading"]["boot"]
    assert boot["id"] == clocks.boot_id()
    assert (boot["parent"] is not None) == processes  # the parent proven, or not asked for
    previous = first
    for step in (3600.0, -3600.0):
        time.sleep(1.5)
        now = run(step)
        assert (now["restarts-graceful"], now["restarts-hard"]) == ("0", "0"), step
        real = now["started"] - previous["started"]
        assert abs(float(now["interval-seconds"]) - real) < 0.5, (step, now, real)
        assert float(now["interval-requests-per-second"]) > 0  # our own reads at least
        previous = now
    own_apache.restart_stopped()
    own_apache.start_again()
    last = run(0.0)
    assert (last["restarts-graceful"], last["restarts-hard"]) == ("0", "1")
    assert "interval-seconds" not in last


# --- a loop between saves (restarts.Memory.held) ------------------------------------

@pytest.fixture
def saves(monkeypatch):
    """The collector state saves made (paths written by output.write_private)."""
    made = []
    real = output.write_private

    def counting(path, text, mode=0o600):
        made.append(path)
        real(path, text, mode)
    monkeypatch.setattr(output, "write_private", counting)
    return made


def loop_track(path, memory, s) -> dict:
    restarts.track([s], str(path), memory=memory)
    return counts(s)


def test_a_loop_saves_once_while_nothing_changes_and_at_once_on_a_restart(tmp_path, saves):
    """A loop neither reads nor writes the state while the file is the one it
    saved and no restart is counted; the counts and interval figures are the
    same as with a save per cycle; a restart is saved before it is reported."""
    path = tmp_path / "state.json"
    memory = restarts.Memory()
    assert loop_track(path, memory, snap(uptime=100, at=T0, accesses=100)) == \
        {"graceful": 0, "hard": 0}
    assert len(saves) == 1
    stored = path.read_text()
    for i in (1, 2, 3):
        s = snap(uptime=100 + 10 * i, at=T0 + 10 * i, accesses=100 + 50 * i)
        assert loop_track(path, memory, s) == {"graceful": 0, "hard": 0}
        assert interval(s) == (10.0, 5.0)  # compared with the cycle before
    assert len(saves) == 1 and path.read_text() == stored
    # A graceful restart: saved before it is reported, with the newest reading.
    assert loop_track(path, memory, snap(uptime=140, config=2, at=T0 + 40)) == \
        {"graceful": 1, "hard": 0}
    assert len(saves) == 2
    entry = json.loads(path.read_text())["targets"][URL]
    assert entry["graceful"] == 1 and entry["reading"]["time"] == T0 + 40
    # A hard one too.
    assert loop_track(path, memory, snap(uptime=3, config=2, at=T0 + 50)) == \
        {"graceful": 1, "hard": 1}
    assert len(saves) == 3


def test_a_loop_reads_the_file_again_when_another_collector_wrote_it(tmp_path, saves):
    path = tmp_path / "state.json"
    memory = restarts.Memory()
    loop_track(path, memory, snap(uptime=100, at=T0))
    # A one-shot run (cron) sees a graceful restart and saves it.
    assert track(path, snap(uptime=110, config=2, at=T0 + 10)) == {"graceful": 1, "hard": 0}
    assert len(saves) == 2
    # The loop's next cycle counts from the file, not from what it held.
    assert loop_track(path, memory, snap(uptime=120, config=2, at=T0 + 20)) == \
        {"graceful": 1, "hard": 0}
    assert len(saves) == 3
    # A file removed is saved again.
    path.unlink()
    assert loop_track(path, memory, snap(uptime=130, config=2, at=T0 + 30)) == \
        {"graceful": 0, "hard": 0}
    assert len(saves) == 4 and path.exists()


def test_a_loop_saves_at_least_every_save_every_seconds(tmp_path, saves, monkeypatch):
    path = tmp_path / "state.json"
    memory = restarts.Memory()
    loop_track(path, memory, snap(uptime=100, at=T0))
    loop_track(path, memory, snap(uptime=110, at=T0 + 10))
    assert len(saves) == 1
    monkeypatch.setattr(restarts, "SAVE_EVERY", 0.0)
    loop_track(path, memory, snap(uptime=120, at=T0 + 20))
    assert len(saves) == 2
    assert json.loads(path.read_text())["targets"][URL]["reading"]["time"] == T0 + 20


@pytest.mark.integration
def test_execd_counts_each_restart_once_across_restarts_of_the_exporter(own_apache, tmp_path):
    """Telegraf's execd restarts the exporter (a reload, an upgrade): the
    counts carry on in the collector state. A graceful restart seen by one
    loop, a graceful restart while no exporter runs and a hard restart are
    each counted once, and never again by the next exporter.

    Measured on 2.4.71 prefork: the loop's kept-alive connection is served by
    an old child after a graceful restart, for one more ?auto read that still
    shows the old generation; the restart is counted at the next collection."""
    from tests.test_loops import read_batch, spawn

    state = str(tmp_path / "collector.json")

    def counts(batch: list) -> tuple:
        line = batch[-1]
        return tuple(int(re.search(rf"restarts_{kind}=(\d+)i", line).group(1))
                     for kind in ("graceful", "hard"))

    def loop():
        return spawn("--url", own_apache.status_url, "--format", "influx", "--execd",
                     "--collector-state", state)

    def gather(proc) -> list:
        proc.stdin.write("\n")
        proc.stdin.flush()
        return read_batch(proc)

    def stop(proc) -> None:
        proc.stdin.close()
        assert proc.wait(10) == 0, proc.stderr.read()

    def graceful(generation: int) -> None:
        os.kill(own_apache.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while f"ParentServerConfigGeneration: {generation}\n".encode() not in \
                urllib.request.urlopen(own_apache.status_url + "?auto", timeout=5).read():
            assert time.monotonic() < deadline, "no graceful restart"
            time.sleep(0.1)

    first = loop()
    try:
        assert counts(gather(first)) == (0, 0)
        time.sleep(0.5)
        assert counts(gather(first)) == (0, 0)
        graceful(2)
        seen = [counts(gather(first)) for _ in range(3)]
        assert seen[-1] == (1, 0) and set(seen) <= {(0, 0), (1, 0)}, seen
        assert seen[1] == (1, 0), seen  # at most one collection late
    finally:
        stop(first)
    second = loop()
    try:
        batch = gather(second)
        assert counts(batch) == (1, 0)
        # The reading saved by the first loop is this one's previous reading.
        assert any(line.startswith("apache_interval,") for line in batch), batch
    finally:
        stop(second)
    graceful(3)  # while no exporter runs
    third = loop()
    try:
        assert counts(gather(third)) == (2, 0)
        assert counts(gather(third)) == (2, 0)
        own_apache.restart_stopped()
        own_apache.start_again()
        assert counts(gather(third)) == (2, 1)
        assert counts(gather(third)) == (2, 1)
    finally:
        stop(third)
    fourth = loop()
    try:
        assert counts(gather(fourth)) == (2, 1)
    finally:
        stop(fourth)


OTHER_URL = "http://127.0.0.1:8081/server-status"


@pytest.mark.parametrize("batches", [
    # (uptime, config, at, url) of each snapshot of a batch
    [[(110, 1, 10, URL)], [(120, 1, 20, URL)]],
    [[(110, 1, 10, URL), (110, 1, 10, OTHER_URL)], [(120, 1, 20, OTHER_URL), (120, 1, 20, URL)]],
    # one URL twice in a batch: the second compares with the first (a restart
    # between them is counted, an older one is not kept)
    [[(110, 1, 10, URL), (120, 1, 20, URL)], [(130, 1, 30, URL), (125, 1, 25, URL)]],
    [[(110, 1, 10, URL), (120, 2, 20, URL)], [(130, 2, 30, URL), (5, 2, 40, URL)]],
])
def test_a_loops_held_cycle_keeps_what_the_full_path_keeps(tmp_path, saves, monkeypatch,
                                                             batches):
    """Without reading or writing the file, a loop's cycle counts, remembers,
    and keeps for its next save what a cycle that reads and saves the file
    does (the counts, the figures, the memory and the state)."""
    def run(held: bool) -> tuple:
        path = tmp_path / ("held" if held else "full") / "state.json"
        path.parent.mkdir()
        monkeypatch.setattr(restarts, "SAVE_EVERY", 60.0 if held else 0.0)
        memory = restarts.Memory()
        first = [snap(uptime=100, at=T0), snap(uptime=100, at=T0, url=OTHER_URL)]
        restarts.track(first, str(path), memory=memory)
        seen = []
        for batch in batches:
            snaps = [snap(uptime=u, config=c, at=T0 + a, url=url, accesses=100 + a)
                     for u, c, a, url in batch]
            restarts.track(snaps, str(path), memory=memory)
            seen.append([(counts(s), interval(s)) for s in snaps])
        return seen, memory.readings, memory.held[2]

    full = run(held=False)
    made = len(saves)
    held = run(held=True)
    assert held == full
    if all(c == {"graceful": 0, "hard": 0} for b in full[0] for c, _ in b):
        assert len(saves) - made == 1  # (the first cycle's save only: the rest held)
