"""Restart detection across runs, from the collector's own state file."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from apache_metrics_exporter import cli, output, restarts
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
         at: float = T0):
    """A snapshot collected at ``at`` of a server up for ``uptime`` seconds."""
    text = (PAGE.replace("ServerUptimeSeconds: 1", f"ServerUptimeSeconds: {uptime}")
            .replace("ParentServerConfigGeneration: 1", f"ParentServerConfigGeneration: {config}")
            .replace("ParentServerMPMGeneration: 0", f"ParentServerMPMGeneration: {mpm}"))
    scan = EMPTY_SCAN if parent is None else EMPTY_SCAN._replace(
        parent_pid=parent[0], parent_create_time=parent[1])
    return build(url, at, parse_auto(text), None, None, scan)


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
s = snap(uptime=uptime, at=at)
print("collected", flush=True)
sys.stdin.readline()
restarts.track([s], path, explicit=True)
print(counts(s)["hard"], flush=True)
"""


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def collector(path, at: float, uptime: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", COLLECTOR, str(path), repr(at), str(uptime)],
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
    restarts._said.clear()
    restarts.track([snap()], path, explicit=False)
    err = capsys.readouterr().err
    assert "warning: restart counts left out (so are rates and request durations" in err
    assert "give --collector-state a path this user can write" in err
    restarts._said.clear()
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
