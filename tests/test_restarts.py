"""Restart detection across runs, from the collector's own state file."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import pytest

from apache_metrics_exporter import restarts
from apache_metrics_exporter.collect.processes import EMPTY_SCAN
from apache_metrics_exporter.collect.snapshot import build
from apache_metrics_exporter.collect.status import parse_auto
from tests.conftest import data, parse_tab, run_exporter

PAGE = data("2.4.71-prefork-ext-on.auto.txt").decode("latin-1")


def snap(uptime: int = 100, config: int = 1, mpm: int = 0, parent=None,
         url: str = "http://127.0.0.1:8080/server-status"):
    text = (PAGE.replace("ServerUptimeSeconds: 1", f"ServerUptimeSeconds: {uptime}")
            .replace("ParentServerConfigGeneration: 1", f"ParentServerConfigGeneration: {config}")
            .replace("ParentServerMPMGeneration: 0", f"ParentServerMPMGeneration: {mpm}"))
    scan = EMPTY_SCAN if parent is None else EMPTY_SCAN._replace(
        parent_pid=parent[0], parent_create_time=parent[1])
    return build(url, 0.0, parse_auto(text), None, None, scan)


def counts(s) -> dict:
    return {dict(x.labels)["kind"]: x.value for x in s.samples
            if x.metric.name == "restarts_total"}


def test_first_sight_then_graceful_then_hard(tmp_path):
    path = str(tmp_path / "state.json")
    s = snap(uptime=100)
    restarts.track([s], path)
    assert counts(s) == {"graceful": 0, "hard": 0}
    s = snap(uptime=160, config=2)
    restarts.track([s], path)
    assert counts(s) == {"graceful": 1, "hard": 0}
    s = snap(uptime=170, config=2, mpm=1)
    restarts.track([s], path)
    assert counts(s) == {"graceful": 2, "hard": 0}
    s = snap(uptime=3, config=1, mpm=0)  # started again: uptime went back
    restarts.track([s], path)
    assert counts(s) == {"graceful": 2, "hard": 1}
    s = snap(uptime=50)
    restarts.track([s], path)
    assert counts(s) == {"graceful": 2, "hard": 1}


def test_another_parent_is_a_hard_restart_even_if_uptime_grew():
    before = {"uptime": 10, "config": 1, "mpm": 0, "parent": [100, 1.5]}
    assert restarts.classify(before, dict(before, uptime=20, parent=[200, 9.5])) == "hard"
    assert restarts.classify(before, dict(before, uptime=20)) is None
    assert restarts.classify(before, dict(before, uptime=20, parent=None)) is None


def test_targets_are_counted_apart(tmp_path):
    path = str(tmp_path / "state.json")
    a, b = "http://127.0.0.1:1/s", "http://127.0.0.1:2/s"
    restarts.track([snap(uptime=100, url=a), snap(uptime=100, url=b)], path)
    sa, sb = snap(uptime=1, url=a), snap(uptime=200, url=b)
    restarts.track([sa, sb], path)
    assert counts(sa)["hard"] == 1 and counts(sb)["hard"] == 0


def test_a_down_target_changes_nothing(tmp_path):
    path = str(tmp_path / "state.json")
    restarts.track([snap(uptime=100)], path)
    down = build("http://127.0.0.1:8080/server-status", 0.0, None, None, None, EMPTY_SCAN,
                 error="refused")
    restarts.track([down], path)
    assert counts(down) == {}
    s = snap(uptime=120)
    restarts.track([s], path)
    assert counts(s) == {"graceful": 0, "hard": 0}


@pytest.mark.parametrize("content", [b"\xff\xfe", b"[" * 100000, b'{"version": 1}',
                                     b'{"version": 1, "targets": {"u": {"uptime": "x"}}}',
                                     b'{"version": 1, "targets": {"u": {"hard": 1e400}}}'])
def test_corrupt_state_is_moved_aside_and_counting_starts_again(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    s = snap()
    restarts.track([s], str(path))
    assert counts(s) == {"graceful": 0, "hard": 0}
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]


def test_untrusted_state_is_refused_and_counts_left_out(tmp_path, capsys):
    real = tmp_path / "real.json"
    real.write_text('{"version": 1, "targets": {}}')
    link = tmp_path / "state.json"
    link.symlink_to(real)
    s = snap()
    restarts.track([s], str(link), explicit=True)
    assert counts(s) == {}
    assert real.read_text() == '{"version": 1, "targets": {}}'
    assert "symlink" in capsys.readouterr().err
    world = tmp_path / "world.json"
    world.write_text('{"version": 1, "targets": {}}')
    world.chmod(0o666)
    s = snap()
    restarts.track([s], str(world), explicit=True)
    assert counts(s) == {}


def test_many_targets_are_bounded(tmp_path):
    path = str(tmp_path / "state.json")
    for n in range(restarts.MAX_TARGETS + 20):
        restarts.track([snap(url=f"http://127.0.0.1:{n + 1}/s")], path)
    state = json.loads(open(path).read())
    assert len(state["targets"]) == restarts.MAX_TARGETS
    assert "http://127.0.0.1:1/s" not in state["targets"]


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
