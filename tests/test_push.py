"""--format influxdb: push to /api/v2/write with a spool that loses nothing."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from apache_metrics_exporter.spool import Spool
from tests.conftest import exporter_env, parse_tab, run_exporter
from tests.harness.servers import VictoriaMetrics

TOKEN = "tok-5e3d1c9a7f"


def push_args(server_url: str, spool: str, *extra: str) -> list:
    return ["--format", "influxdb", "--influxdb-url", server_url, "--influxdb-org", "o",
            "--influxdb-bucket", "b", "--spool-dir", spool, *extra]


def timestamps(vm: VictoriaMetrics, name: str, expected: int) -> list:
    series = vm.export(f'{{__name__="{name}"}}', min_samples=expected)
    return sorted(t for s in series for t in s["timestamps"])


# --- the spool on its own ------------------------------------------------------

def test_spool_orders_bounds_and_quarantines(tmp_path):
    spool = Spool(str(tmp_path / "s"), max_bytes=10_000)
    spool.ensure()
    assert spool.health() is None  # nothing ever pushed from here
    b2 = spool.add("m f=2i 2\nm f=3i 3\n", 2)
    b1 = spool.add("m f=1i 1\n", 1)
    assert [b.path for b in spool.batches()] == [b1.path, b2.path]  # oldest first
    assert spool.health().spooled_points == 3
    spool.max_bytes = len("m f=2i 2\nm f=3i 3\n")
    assert spool.enforce_bound() == 1  # the oldest batch (1 point) went
    assert [b.path for b in spool.batches()] == [b2.path]
    target = spool.quarantine(b2, "unable to parse 'm f=2i 2'")
    assert spool.batches() == []
    assert open(target + ".error").read() == "unable to parse 'm f=2i 2'\n"
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o700


def test_spool_lock_is_exclusive_between_processes(tmp_path):
    spool = Spool(str(tmp_path), 1000)
    spool.ensure()
    code = ("import sys\nfrom apache_metrics_exporter.spool import Spool\n"
            "from apache_metrics_exporter.errors import OutputError\n"
            f"s = Spool({str(tmp_path)!r}, 1000)\n"
            "try:\n    with s.locked(timeout=0.3):\n        print('got it')\n"
            "except OutputError as e:\n    print('busy:', e)\n")
    with spool.locked():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.startswith("busy:") and ".lock" in out.stdout
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout == "got it\n"


def test_push_options_are_checked_before_fetching(tmp_path):
    cases = [
        ([], "--influxdb-url"),
        (["--influxdb-url", "localhost:8086"], "expected http"),
        (["--influxdb-url", "http://127.0.0.1:9"], "--influxdb-bucket"),
        (["--influxdb-url", "http://127.0.0.1:9", "--influxdb-bucket", "b"], "--influxdb-org"),
        (["--influxdb-url", "http://127.0.0.1:9", "--influxdb-bucket", "b", "--influxdb-org",
          "o", "--influxdb-token-file", "/nonexistent"], "--influxdb-token-file"),
        (["--influxdb-password", "x"], "--influxdb-password on the command line"),
    ]
    for extra, message in cases:
        proc = run_exporter("--url", "http://127.0.0.1:9/server-status", "--format",
                            "influxdb", "--spool-dir", str(tmp_path), *extra)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["tab", "influx", "collectd"])
def test_influxdb_client_not_imported_for_other_formats(fmt, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "apache_metrics_exporter",
         "--url", "http://127.0.0.1:9/server-status", "--format", fmt, "--no-processes",
         "--spool-dir", str(tmp_path)],
        capture_output=True, text=True, env=exporter_env())
    assert proc.returncode == 0
    assert "apache_metrics_exporter.cli" in proc.stderr  # importtime did report
    assert "influxdb_client" not in proc.stderr


# --- a real /api/v2/write server ---------------------------------------------------

@pytest.mark.integration
def test_push_from_live_apache_is_read_back(prefork, victoria, tmp_path):
    spool = str(tmp_path / "spool")
    with urllib.request.urlopen(prefork.status_url + "?auto") as r:
        before = dict(x.split(": ", 1) for x in r.read().decode().splitlines() if ": " in x)
    proc = run_exporter("--url", prefork.status_url, *push_args(victoria.url, spool),
                        "--influxdb-token", TOKEN)
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stderr + proc.stdout
    with urllib.request.urlopen(prefork.status_url + "?auto") as r:
        after = dict(x.split(": ", 1) for x in r.read().decode().splitlines() if ": " in x)
    (accesses,) = victoria.export('{__name__="apache_TotalAccesses"}')
    assert accesses["metric"]["port"] == str(prefork.port)
    assert int(before["Total Accesses"]) <= accesses["values"][0] <= int(after["Total Accesses"])
    (up,) = victoria.export('{__name__="apache_exporter_up"}')
    assert up["values"] == [1]
    memory = victoria.export('{__name__="apache_memory_count",group="example"}')
    assert memory[0]["values"] == [2]
    # One timestamp for the whole snapshot, the collection's own time.
    stamps = {t for s in victoria.export('{__name__=~"apache.*"}', min_samples=20)
              for t in s["timestamps"]}
    assert len(stamps) == 1
    assert Spool(spool, 1).batches() == []


@pytest.mark.integration
def test_outage_loses_nothing_and_duplicates_nothing(prefork, tmp_path):
    spool = str(tmp_path / "spool")
    vm = VictoriaMetrics().start()
    try:
        args = ["--url", prefork.status_url, "--no-processes",
                *push_args(vm.url, spool, "--influxdb-token", TOKEN)]
        assert run_exporter(*args).returncode == 0
        vm.pause()
        spooled = []
        for _ in range(3):
            proc = run_exporter(*args)
            assert proc.returncode == 0
            (line,) = proc.stderr.strip().splitlines()
            assert "cannot reach InfluxDB" in line and "points kept in" in line
            assert TOKEN not in line
            spooled.append(Spool(spool, 1).health().spooled_points)
        assert spooled[0] < spooled[1] < spooled[2]  # the spool grows
        files = [b.path for b in Spool(spool, 1).batches()]
        assert len(files) == 3
        vm.start()
        proc = run_exporter(*args)
        assert proc.returncode == 0 and proc.stderr == ""
        assert Spool(spool, 1).batches() == []
        stamps = timestamps(vm, "apache_exporter_up", 5)
        assert len(stamps) == 5 and len(set(stamps)) == 5  # every run once, no duplicate
        # The spooled points kept their own timestamps (file names carry them).
        spooled_ms = sorted(int(os.path.basename(f).split(".")[0]) // 1_000_000 for f in files)
        assert stamps[1:4] == spooled_ms
        # Each batch reports the spool as it was when it was collected: the
        # recovering run still says how many points waited, the next one 0.
        assert victoria_health(vm)["push_spooled_points"] == spooled[2]
        assert run_exporter(*args).returncode == 0
        timestamps(vm, "apache_exporter_up", 6)
        assert victoria_health(vm)["push_spooled_points"] == 0
    finally:
        vm.stop()


def victoria_health(vm: VictoriaMetrics) -> dict:
    """The push health figures of the newest batch."""
    newest = max(timestamps(vm, "apache_exporter_up", 1))
    out = {}
    for field in ("push_spooled_points", "push_dropped_points"):
        deadline = time.monotonic() + 15
        while True:
            series = vm.export(f'{{__name__="apache_exporter_{field}"}}')
            values = dict(zip(series[0]["timestamps"], series[0]["values"])) if series else {}
            if newest in values or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        out[field] = values[newest]
    return out


@pytest.mark.integration
def test_spool_bound_drops_oldest_and_counts(prefork, tmp_path):
    spool = str(tmp_path / "spool")
    vm = VictoriaMetrics().start()
    try:
        base = ["--url", prefork.status_url, "--no-processes",
                *push_args(vm.url, spool, "--influxdb-token", TOKEN)]
        vm.pause()
        proc = run_exporter(*base)
        one_batch = sum(b.size for b in Spool(spool, 1).batches())
        limit = str(int(one_batch * 2.5))  # room for two batches, not three
        for _ in range(3):
            assert run_exporter(*base, "--spool-max-bytes", limit).returncode == 0
        kept = Spool(spool, 1).batches()
        assert len(kept) == 2
        health = Spool(spool, 1).health()
        assert health.dropped_points == 2 * kept[0].points
        tab = run_exporter("--url", prefork.status_url, "--no-processes", "--spool-dir", spool)
        values = parse_tab(tab.stdout)
        assert values["push-dropped-points-total"] == str(health.dropped_points)
        assert values["push-spooled-points"] == str(health.spooled_points)
        kept_ms = sorted(int(os.path.basename(b.path).split(".")[0]) // 1_000_000 for b in kept)
        vm.start()
        proc = run_exporter(*base, "--spool-max-bytes", limit)
        assert proc.returncode == 0, proc.stderr
        stamps = timestamps(vm, "apache_exporter_up", 3)
        assert stamps[:2] == kept_ms and len(stamps) == 3  # the kept two plus this run
        assert victoria_health(vm)["push_dropped_points"] == health.dropped_points
    finally:
        vm.stop()


@pytest.mark.integration
def test_wrong_credentials_keep_the_spool_and_never_show_the_secret(prefork, tmp_path):
    spool = str(tmp_path / "spool")
    vm = VictoriaMetrics(username="monitor", password="right-pass-3141").start()
    try:
        wrong = tmp_path / "wrong"
        wrong.write_text("wrong-pass-2718\n")
        right = tmp_path / "right"
        right.write_text("right-pass-3141\n")
        base = ["--url", prefork.status_url, "--no-processes", "--format", "influxdb",
                "--influxdb-url", vm.url, "--influxdb-bucket", "db/autogen",
                "--influxdb-username", "monitor", "--influxdb-auth-basic", "--spool-dir", spool]
        proc = run_exporter(*base, "--influxdb-password-file", str(wrong))
        assert proc.returncode == 1
        (line,) = proc.stderr.strip().splitlines()
        assert "HTTP 401" in line and "points kept in" in line
        assert "wrong-pass" not in proc.stderr + proc.stdout
        assert len(Spool(spool, 1).batches()) == 1
        # A token the server does not take (it wants basic auth): same story.
        tok = tmp_path / "token"
        tok.write_text(TOKEN + "\n")
        proc = run_exporter("--url", prefork.status_url, "--no-processes",
                            *push_args(vm.url, spool, "--influxdb-token-file", str(tok)))
        assert proc.returncode == 1 and TOKEN not in proc.stderr + proc.stdout
        assert len(Spool(spool, 1).batches()) == 2
        proc = run_exporter(*base, "--influxdb-password-file", str(right))
        assert proc.returncode == 0, proc.stderr
        assert Spool(spool, 1).batches() == []
        assert len(timestamps(vm, "apache_exporter_up", 3)) == 3
    finally:
        vm.stop()


class _Rejecting(http.server.BaseHTTPRequestHandler):
    """Stands in for InfluxDB 2.x rejecting data (HTTP 400): no such server can
    run here (Debian has none; VictoriaMetrics answers 204 even to bad lines)."""

    bodies: list = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self.bodies.append(self.rfile.read(length))
        body = json.dumps({"code": "invalid", "message": "partial write: field type "
                           "conflict: input field \"BusyWorkers\" is type integer"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.integration
def test_rejected_batch_is_quarantined_not_retried(prefork, tmp_path):
    spool = str(tmp_path / "spool")
    server = http.server.HTTPServer(("127.0.0.1", 0), _Rejecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        args = ["--url", prefork.status_url, "--no-processes",
                *push_args(url, spool, "--influxdb-token", TOKEN)]
        proc = run_exporter(*args)
        assert proc.returncode == 1
        assert "HTTP 400" in proc.stderr and "field type conflict" in proc.stderr
        assert "quarantine" in proc.stderr
        quarantined = os.listdir(os.path.join(spool, "quarantine"))
        assert len([q for q in quarantined if q.endswith(".lp")]) == 1
        assert Spool(spool, 1).batches() == []
        assert Spool(spool, 1).health().quarantined_batches == 1
        _Rejecting.bodies.clear()
        run_exporter(*args)
        assert len(_Rejecting.bodies) == 1  # only the new batch: no retry of the old
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_overlapping_runs_replay_each_batch_once(prefork, tmp_path):
    spool = str(tmp_path / "spool")
    vm = VictoriaMetrics().start()
    try:
        args = ["--url", prefork.status_url, "--no-processes",
                *push_args(vm.url, spool, "--influxdb-token", TOKEN)]
        vm.pause()
        for _ in range(3):
            assert run_exporter(*args).returncode == 0
        spooled_ms = [int(os.path.basename(b.path).split(".")[0]) // 1_000_000
                      for b in Spool(spool, 1).batches()]
        assert len(spooled_ms) == 3
        vm.start()
        # Two runs at once: the lock makes them take turns on the spool.
        procs = [subprocess.Popen([sys.executable, "-m", "apache_metrics_exporter", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=exporter_env()) for _ in range(2)]
        results = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        assert Spool(spool, 1).batches() == []
        stamps = timestamps(vm, "apache_exporter_up", 5)
        assert len(stamps) == 5  # 3 replayed + 2 new ...
        assert all(stamps.count(ms) == 1 for ms in spooled_ms)  # ... each batch once
        # (the two new runs may share a millisecond: VictoriaMetrics keeps ms)
    finally:
        vm.stop()


class _Busy(http.server.BaseHTTPRequestHandler):
    """Stands in for an overloaded InfluxDB (5xx/429): VictoriaMetrics here
    cannot be made to answer that way."""

    status = 503

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.integration
@pytest.mark.parametrize("status", [500, 503, 429])
def test_overloaded_server_means_spool_and_retry(prefork, tmp_path, status):
    spool = str(tmp_path / "spool")
    handler = type("H", (_Busy,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = run_exporter("--url", prefork.status_url, "--no-processes",
                            *push_args(f"http://127.0.0.1:{server.server_port}", spool,
                                       "--influxdb-token", TOKEN))
        assert proc.returncode == 0  # transient: data kept, not an error of the run
        (line,) = proc.stderr.strip().splitlines()
        assert f"HTTP {status}" in line and "points kept in" in line
        assert len(Spool(spool, 1).batches()) == 1
    finally:
        server.shutdown()
        server.server_close()
