"""The collector against real private Apache servers (prefork, worker, event)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import parse_tab, run_exporter, sections
from tests.harness.apache import WSGI_GROUP, WSGI_LONG_GROUP, ApacheServer

pytestmark = pytest.mark.integration

ORIGINAL_KEYS = ("busy-workers", "bytes-per-request", "bytes-per-second", "cpu-load",
                 "idle-workers", "requests-per-second", "total-accesses", "total-traffic",
                 "uptime", "foreign-worker-count", "native-worker-count", "status-response",
                 "workers-hanging", "workers-killed-active", "workers-killed-idle")


def auto_page(apache: ApacheServer) -> dict:
    with urllib.request.urlopen(apache.status_url + "?auto") as r:
        text = r.read().decode()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def traffic(apache: ApacheServer) -> None:
    for _ in range(3):
        for path in ("/index.html", "/embedded", "/daemon", "/long"):
            apache.get(path)


def test_live_server_every_original_key_consistent_with_auto_and_ps(apache):
    traffic(apache)
    before = auto_page(apache)
    proc = run_exporter("--url", apache.status_url)
    after = auto_page(apache)
    assert proc.returncode == 0, proc.stderr
    values = parse_tab(proc.stdout)
    for key in ORIGINAL_KEYS:
        assert key in values, key
    assert values["status-response"] == "0" and values["up"] == "1"
    # Counters lie between the pages fetched just before and just after.
    assert int(before["Total Accesses"]) <= int(values["total-accesses"]) \
        <= int(after["Total Accesses"])
    assert int(values["total-traffic"]) % 1024 == 0
    assert int(before["Total kBytes"]) * 1024 <= int(values["total-traffic"]) \
        <= int(after["Total kBytes"]) * 1024
    slots = len(after["Scoreboard"])
    assert values["scoreboard-slots"] == str(slots)
    assert sum(int(v) for k, v in values.items() if k.startswith("scoreboard ")) == slots
    assert values["server-uptime-seconds"].isdigit()
    # Memory per group agrees with the processes themselves.
    ps = subprocess.run(["ps", "--ppid", str(apache.proc.pid), "-o", "pid=,rss=,args="],
                        capture_output=True, text=True, check=True).stdout
    rss, titles = {}, {}
    for line in ps.splitlines():
        pid, kib, args = line.split(None, 2)
        rss[int(pid)] = int(kib) * 1024
        titles[int(pid)] = args.split()[0]  # argv[0], the process title
    native = [pid for pid, t in titles.items() if not t.startswith("(wsgi:")]
    example = [pid for pid, t in titles.items() if t == f"(wsgi:{WSGI_GROUP})"]
    assert values["memory-usage native count"] == str(len(native))
    assert values[f"memory-usage {WSGI_GROUP} count"] == str(len(example)) == "2"
    for group, pids in (("native", native), (WSGI_GROUP, example)):
        low, high = min(rss[p] for p in pids), max(rss[p] for p in pids)
        assert abs(int(values[f"memory-usage {group} min"]) - low) <= 0.1 * low
        assert abs(int(values[f"memory-usage {group} max"]) - high) <= 0.1 * high
    # foreign = children whose PID is not in the worker table (the 3 daemons).
    assert int(values["foreign-worker-count"]) >= 3
    assert sections(proc.stdout)[0] == "# Global Apache server metrics."


def test_wsgi_group_names_cut_by_the_title_are_resolved_from_the_config(prefork):
    # The title "(wsgi:reporting-b" is cut; Apache's configuration (read from
    # the parent's -d/-f arguments) has one group starting so.
    proc = run_exporter("--url", prefork.status_url)
    assert proc.returncode == 0
    values = parse_tab(proc.stdout)
    assert "# Memory usage of 'example' WSGI worker processes." in proc.stdout
    assert values[f"memory-usage {WSGI_LONG_GROUP} count"] == "1"
    assert not [k for k in values if k.startswith("wsgi-group-name-truncated")]
    assert "reporting-b" not in proc.stderr


def test_an_ambiguous_cut_name_stays_flagged_with_a_warning():
    extra = ("WSGIDaemonProcess reporting-bulk display-name=%{GROUP} processes=1 "
             "threads=1\n")
    with ApacheServer("prefork", extra_conf=extra) as apache:
        proc = run_exporter("--url", apache.status_url)
    values = parse_tab(proc.stdout)
    assert values["wsgi-group-name-truncated reporting-b"] == "1"
    assert values["memory-usage reporting-b count"] == "2"  # both groups' daemons
    (line,) = [x for x in proc.stderr.splitlines() if "reporting-b" in x]
    assert "cut short" in line and "10 characters" in line


def test_hanging_worker_and_longest_request(apache):
    slow = threading.Thread(target=apache.get, args=("/embedded?sleep=3",))
    slow.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until the request is 1 s old
            proc = run_exporter("--url", apache.status_url, "--hanging-threshold", "1s")
            values = parse_tab(proc.stdout)
            if int(values.get("longest-request-seconds", 0)) >= 1:
                break
        assert int(values["workers-hanging"]) >= 1
        assert int(values["longest-request-seconds"]) >= 1
        proc = run_exporter("--url", apache.status_url, "-T", "1h")
        assert parse_tab(proc.stdout)["workers-hanging"] == "0"
    finally:
        slow.join()


def test_event_process_table_figures(event):
    proc = run_exporter("--url", event.status_url)
    values = parse_tab(proc.stdout)
    assert values["event-processes-not-accepting"] == "0"
    assert values["processes"] == auto_page(event)["Processes"]


def assert_down_file(proc, reason: str):
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.search(reason, lines[0]), lines[0]
    assert "Traceback" not in proc.stderr
    values = parse_tab(proc.stdout)
    assert values["status-response"] == "1" and values["up"] == "0"
    heads = sections(proc.stdout)
    assert heads[:2] == ["# Global Apache server metrics.",
                         "# Metrics internal to apache-manager."]
    return values


def test_apache_stopped_still_writes_the_file(own_apache, tmp_path):
    url = own_apache.status_url
    out = tmp_path / "apache-manager.txt"
    assert run_exporter("--url", url, "--output", str(out)).returncode == 0
    assert parse_tab(out.read_text())["status-response"] == "0"
    own_apache.restart_stopped()
    proc = run_exporter("--url", url, "--output", str(out))
    assert proc.stdout == ""
    proc = type(proc)(proc.args, proc.returncode, out.read_text(), proc.stderr)
    assert_down_file(proc, r"connection to 127\.0\.0\.1:\d+ refused: is Apache running")


def test_apache_hung_process_memory_still_reported(own_apache):
    # Apache alive but not answering (SIGSTOP): a timeout, yet the process scan
    # through --pid-file still measures the workers' memory.
    parent = psutil.Process(own_apache.proc.pid)
    parent.suspend()
    kids = parent.children()
    for k in kids:
        k.suspend()
    try:
        proc = run_exporter("--url", own_apache.status_url, "--timeout", "1",
                            "--pid-file", str(own_apache.pid_file))
    finally:
        for p in [parent, *kids]:
            p.resume()
    values = assert_down_file(proc, r"no complete answer from .* within 1 s \(--timeout\)")
    assert int(values["memory-usage native count"]) >= 1
    assert values["memory-usage example count"] == "2"


def test_403_is_reported_with_its_code(prefork):
    proc = run_exporter("--url", prefork.base_url + "/denied-status")
    assert_down_file(proc, r"answered HTTP 403 Forbidden.*<Location /denied-status>.*Require")


def test_a_port_serving_some_other_page(prefork):
    proc = run_exporter("--url", prefork.base_url + "/index.html")
    assert_down_file(proc, r"not an Apache mod_status page")


def test_a_404(prefork):
    proc = run_exporter("--url", prefork.base_url + "/no-such-status")
    assert_down_file(proc, r"answered HTTP 404.*SetHandler server-status")


def test_oversize_answer(prefork):
    proc = run_exporter("--url", prefork.status_url, "--max-response-size", "100")
    assert_down_file(proc, r"more than --max-response-size|larger than --max-response-size")


def test_extended_status_off_is_up_with_a_warning():
    with ApacheServer("worker", extended_status=False) as apache:
        proc = run_exporter("--url", apache.status_url)
    assert proc.returncode == 0
    values = parse_tab(proc.stdout)
    assert values["status-response"] == "0"
    assert values["total-accesses"] == "0"  # the original's value for a missing key
    assert "workers-hanging" not in values
    (line,) = [x for x in proc.stderr.splitlines() if "ExtendedStatus" in x]
    assert "ExtendedStatus On" in line


def test_pid_file_and_pss(prefork):
    base = run_exporter("--url", prefork.status_url)
    proc = run_exporter("--url", prefork.status_url, "--pid-file", str(prefork.pid_file),
                        "--memory", "pss")
    assert proc.returncode == 0
    rss, pss = parse_tab(base.stdout), parse_tab(proc.stdout)
    assert pss["memory-usage native count"] == rss["memory-usage native count"]
    if "RSS instead" not in proc.stderr:  # PSS readable (root or same user)
        assert int(pss["memory-usage native max"]) < int(rss["memory-usage native max"])


def test_output_file_replaced_atomically(prefork, tmp_path):
    out = tmp_path / "metrics.txt"
    for _ in range(3):
        assert run_exporter("--url", prefork.status_url, "-f", str(out)).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.txt"]
    assert parse_tab(out.read_text())["status-response"] == "0"


def test_ports_config_discovery(prefork, tmp_path):
    conf = tmp_path / "ports.conf"
    conf.write_text(f"Listen 0.0.0.0:{prefork.port}\n")
    proc = run_exporter("--ports-config", str(conf))
    assert proc.returncode == 0
    assert parse_tab(proc.stdout)["status-response"] == "0"


def test_remote_status_page_gets_no_local_process_figures(prefork, monkeypatch):
    # A status page on another host: its worker PIDs mean nothing here, so no
    # local process may be reported (or, for the reaper, touched) for it.
    from apache_metrics_exporter.collect.http import Fetcher, Target
    from apache_metrics_exporter.collect.snapshot import collect

    monkeypatch.setattr("apache_metrics_exporter.collect.loopback.loopback_addresses",
                        lambda h: None)
    fetcher = Fetcher(Target(prefork.status_url))
    try:
        snap = collect(fetcher)
    finally:
        fetcher.close()
    assert snap.up and snap.processes.children == []
    assert any("not a loopback address" in w for w in snap.warnings)
    assert snap.value("foreign_worker_count") is None


def test_reaper_refuses_a_remote_url(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "from apache_metrics_exporter.cli import reaper_main; "
         "raise SystemExit(reaper_main())", "--url", "http://192.0.2.1/server-status",
         "--max-memory-idle", "1G", "--state-file", str(tmp_path / "s.json")],
        capture_output=True, text=True)
    assert proc.returncode == 2 and "only on an Apache reached over loopback" in proc.stderr


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           *argv], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/"})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_unprivileged_collector_reads_memory_and_falls_back_from_pss(prefork, runnable_copy):
    # An unprivileged user cannot see which process holds Apache's listening
    # socket (root's /proc/PID/fd): no process figures, and it says how to get
    # them. With --pid-file it reads the workers' RSS (/proc/PID/statm) but not
    # their smaps_rollup (PSS): RSS, and it says so.
    proc = as_nobody(str(runnable_copy), "--url", prefork.status_url, "--format", "tab")
    assert proc.returncode == 0, proc.stderr
    values = parse_tab(proc.stdout)
    assert values["status-response"] == "0"
    assert not [k for k in values if k.startswith("memory-usage")]
    assert "reading other users' /proc/PID/fd needs root" in proc.stderr
    assert "give --pid-file" in proc.stderr
    proc = as_nobody(str(runnable_copy), "--url", prefork.status_url, "--memory", "pss",
                     "--format", "tab", "--pid-file", str(prefork.pid_file))
    assert proc.returncode == 0, proc.stderr
    values = parse_tab(proc.stdout)
    assert values["status-response"] == "0"
    assert int(values["memory-usage native max"]) > 1_000_000
    assert values[f"memory-usage {WSGI_GROUP} count"] == "2"
    assert "--memory pss needs the right to read" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_unprivileged_reaper_signals_nothing(prefork, runnable_copy, tmp_path):
    state_dir = Path(tempfile.mkdtemp(prefix="ame-state-"))
    state_dir.chmod(0o777)
    try:
        before = {p.pid for p in psutil.Process(prefork.proc.pid).children()}
        reaper = str(runnable_copy.parent / "apache-worker-reaper")
        proc = as_nobody(reaper, "--url", prefork.status_url, "--max-memory-wsgi", "1M",
                         "--state-file", str(state_dir / "state.json"), "--grace", "1")
        assert proc.returncode == 0, proc.stderr
        assert "cannot prove which Apache serves" in proc.stderr
        last = json.loads((state_dir / "state.json").read_text())["last_run"]
        assert last["result"] == "skipped"
        proc = as_nobody(reaper, "--url", prefork.status_url, "--max-memory-wsgi", "1M",
                         "--state-file", str(state_dir / "state.json"), "--grace", "1",
                         "--pid-file", str(prefork.pid_file))
        assert proc.returncode == 0, proc.stderr
        assert "(run the reaper as root)" in proc.stderr
        assert {p.pid for p in psutil.Process(prefork.proc.pid).children()} == before
        totals = json.loads((state_dir / "state.json").read_text())["totals"]
        assert totals["kills"]["wsgi"] == 0 and totals["skipped_for_safety"] == 3
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
