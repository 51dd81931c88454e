"""--format influxdb: push to /api/v2/write with a spool that loses nothing."""

from __future__ import annotations

import http.server
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apache_metrics_exporter.errors import OutputError
from apache_metrics_exporter.push.client import REJECTED, InfluxPush, PushFailed, PushSettings
from apache_metrics_exporter.push.spool import MIN_BATCH_LIMIT, Spool, state_problem
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
    code = ("import sys\nfrom apache_metrics_exporter.push.spool import Spool\n"
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
def test_plain_http_to_a_tls_port_keeps_the_batch_and_names_the_fix(prefork, tmp_path):
    # A 400 about the URL, not the data: setting the batch aside would lose
    # it (only a person can fix the URL): the run fails, the batch waits.
    # (As Go's TLS server answers plain HTTP on its port: real influxd does,
    # but may reset the connection before the client reads the answer, see
    # tests/test_check_push.py.)
    spool = str(tmp_path / "spool")
    server = _answering(400, b"Client sent an HTTP request to an HTTPS server.\n",
                        (("Content-Type", "text/plain; charset=utf-8"),))
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        args = ["--url", prefork.status_url, "--no-processes",
                *push_args(url, spool, "--influxdb-token", TOKEN)]
        for batches in (1, 2):
            proc = run_exporter(*args)
            assert proc.returncode == 1
            assert "HTTP 400: Client sent an HTTP request to an HTTPS server.; give " \
                "--influxdb-url https://...; " in proc.stderr
            assert len(Spool(spool, 1).batches()) == batches
            assert not os.path.isdir(os.path.join(spool, "quarantine")) or \
                not os.listdir(os.path.join(spool, "quarantine"))
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


# --- a spool that cannot be trusted is refused ------------------------------------------

NOBODY = pwd.getpwnam("nobody").pw_uid
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to nobody)")


@pytest.fixture
def down(tmp_path):
    """A run against a dead port that reads no state or spool of the machine's."""
    return ["--url", "http://127.0.0.1:9/server-status", "--no-processes",
            "--state-file", str(tmp_path / "no-state.json"),
            "--spool-dir", str(tmp_path / "no-spool")]


def untrusted_spool(tmp_path, how: str) -> str:
    """A spool directory with one good batch in it, made untrustworthy."""
    real = tmp_path / "spool"
    spool = Spool(str(real), 10_000)
    spool.ensure()
    spool.add("planted f=1i 1\n", 1)
    if how == "symlink":
        link = tmp_path / "link"
        link.symlink_to(real)
        return str(link)
    if how == "nobody":
        os.chown(real, NOBODY, -1)
    elif how == "world-writable":
        real.chmod(0o777)
    elif how == "group-writable":
        real.chmod(0o770)
    return str(real)


SPOOL_HOW = ["symlink", pytest.param("nobody", marks=root_only), "world-writable",
             "group-writable"]
SPOOL_FIX = {"symlink": "is a symlink; refusing to follow it",
             "nobody": f"belongs to uid {NOBODY}", "world-writable": "chmod go-w",
             "group-writable": "chmod go-w"}


@pytest.mark.parametrize("how", SPOOL_HOW)
def test_untrusted_spool_is_refused_before_fetching(down, tmp_path, how):
    spool = untrusted_spool(tmp_path, how)
    with pytest.raises(OutputError) as err:
        Spool(spool, 10_000).ensure()
    assert spool in str(err.value) and SPOOL_FIX[how] in str(err.value)
    proc = run_exporter(*down, *push_args("http://127.0.0.1:9", spool, "--influxdb-token",
                                          TOKEN))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()  # before fetching: no "connection refused" line
    assert spool in line and SPOOL_FIX[how] in line


@pytest.mark.parametrize("how", SPOOL_HOW)
def test_untrusted_spool_figures_are_left_out_by_the_collector(down, tmp_path, how):
    spool = untrusted_spool(tmp_path, how)
    proc = run_exporter(*down, "--format", "tab", "--spool-dir", spool)
    assert proc.returncode == 0, proc.stderr
    assert "push-" not in proc.stdout
    said = [ln for ln in proc.stderr.splitlines() if spool in ln]
    assert len(said) == 1 and SPOOL_FIX[how] in said[0] and "push figures left out" in said[0]


def test_trusted_spool_figures_are_reported(down, tmp_path):
    spool = untrusted_spool(tmp_path, "none")
    values = parse_tab(run_exporter(*down, "--format", "tab", "--spool-dir", spool).stdout)
    assert values["push-spooled-points"] == "1"


# --- nothing inside the spool is followed; corrupt files never stop the push ---------------

class Recording(InfluxPush):
    """The push with its network write replaced by a list (or a failure)."""

    def __init__(self, spool: Spool, fail: str = "") -> None:
        super().__init__(PushSettings("http://127.0.0.1:9", "o", "b", TOKEN), spool)
        self.sent: list = []
        self.fail = fail

    def write(self, body: str) -> None:
        if self.fail:
            raise PushFailed(self.fail, "cannot reach InfluxDB at http://127.0.0.1:9: "
                                        "Connection refused")
        self.sent.append(body)


def planted(spool: Spool, name: str) -> str:
    return os.path.join(spool.dir, name)


def plant_corrupt_batches(spool: Spool, secret) -> list:
    """Every kind of bad entry named like a batch; their paths, oldest first."""
    paths = []

    def at(n: int) -> str:
        path = planted(spool, f"{n:020d}.1.1.lp")
        paths.append(path)
        return path

    os.symlink(secret, at(1))  # root must never read this and send it
    with open(at(2), "wb") as fh:
        fh.write(b"m f=1i 2\n\xff\xfe\n")  # not UTF-8
    os.mkdir(at(3))
    os.mkfifo(at(4))
    open(at(5), "wb").close()  # empty
    with open(at(6), "wb") as fh:  # bigger than any batch (sparse)
        fh.truncate(max(MIN_BATCH_LIMIT, 64 * 1024 * 1024) + 1)
    with open(at(7), "wb") as fh:  # NUL bytes: not line protocol we ever wrote
        fh.write(b"m f=1i 7\n\0\0\0\n")
    return paths


def secret_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("stolen_secret value=1i 1700000000000000000\n")
    secret.chmod(0o600)
    return secret


def test_corrupt_batches_are_set_aside_and_the_rest_is_sent(tmp_path, capsys):
    spool = Spool(str(tmp_path / "spool"), 10_000)
    spool.ensure()
    secret = secret_file(tmp_path)
    bad = plant_corrupt_batches(spool, secret)
    good = spool.add("m f=7i 7\n", 7)
    push = Recording(spool)
    push.deliver("m f=9i 9\n", 9)
    assert push.sent == ["m f=7i 7\n", "m f=9i 9\n"]  # the good spooled one, then this one
    assert secret.read_text().startswith("stolen_secret")  # the target is untouched
    assert spool.batches(everything=True) == []
    for path in bad:
        (aside,) = [n for n in os.listdir(spool.dir)
                    if n.startswith(os.path.basename(path) + ".corrupt-")]
        assert os.path.lexists(os.path.join(spool.dir, aside))
    assert os.path.islink([os.path.join(spool.dir, n) for n in os.listdir(spool.dir)
                           if n.startswith(os.path.basename(bad[0]))][0])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(bad)
    for line, why in zip(lines, ["is a symlink", "is not UTF-8", "is a directory",
                                 "is not a regular file", "is empty", "is larger than",
                                 "NUL"]):
        assert why in line and "moved aside to" in line and "(not sent)" in line
    state = json.loads(open(spool.state_path).read())
    assert state["corrupt_files"] == len(bad)
    assert spool.health().corrupt_files == len(bad)
    assert not os.path.exists(good.path)


def test_corrupt_batches_while_the_server_is_down_keep_the_new_batch(tmp_path):
    spool = Spool(str(tmp_path / "spool"), 10_000)
    spool.ensure()
    plant_corrupt_batches(spool, secret_file(tmp_path))
    push = Recording(spool, fail="transient")
    push.deliver("m f=9i 9\n", 9)
    (kept,) = spool.batches(everything=True)
    assert spool.read(kept) == "m f=9i 9\n"
    assert spool.health().corrupt_files == 7


STATE_CASES = {
    "not-json": b'{"version": 1, "last_success": ',
    "not-utf8": b'{"version": 1, "last_success": "\xff"}',
    "deep-nesting": b"[" * 100_000,
    "last-success-newline": b'{"version": 1, "last_success": "1\\nbusy-workers\\t999", '
                            b'"dropped_points": 0, "quarantined_batches": 0}',
    "last-success-bool": b'{"version": 1, "last_success": true, "dropped_points": 0, '
                         b'"quarantined_batches": 0}',
    "dropped-negative": b'{"version": 1, "last_success": null, "dropped_points": -1, '
                        b'"quarantined_batches": 0}',
    "dropped-beyond-int64": b'{"version": 1, "last_success": null, "dropped_points": '
                            b'18446744073709551616, "quarantined_batches": 0}',
    "a-list": b"[]",
    "failing-not-a-batch": b'{"version": 1, "last_success": null, "dropped_points": 0, '
                           b'"quarantined_batches": 0, "failing": {"../../etc/passwd": '
                           b'{"tries": 1, "first": 5}}}',
    "failing-bad-tries": b'{"version": 1, "last_success": null, "dropped_points": 0, '
                         b'"quarantined_batches": 0, "failing": {"00000000000000000001.1.1.lp": '
                         b'{"tries": "3", "first": 5}}}',
    "huge": "huge",
    "directory": "directory",
    "symlink": "symlink",
}


def plant_state(spool: Spool, case: str, tmp_path) -> None:
    content = STATE_CASES[case]
    if content == "huge":
        with open(spool.state_path, "wb") as fh:
            fh.truncate(300 * 1024 * 1024)
    elif content == "directory":
        os.mkdir(spool.state_path)
    elif content == "symlink":
        good = tmp_path / "elsewhere.json"
        good.write_text('{"version": 1, "last_success": 5, "dropped_points": 99, '
                        '"quarantined_batches": 0}')
        os.symlink(good, spool.state_path)
    else:
        with open(spool.state_path, "wb") as fh:
            fh.write(content)


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_corrupt_spool_state_is_set_aside_and_the_batch_sent(tmp_path, case, capsys):
    spool = Spool(str(tmp_path / "spool"), 10_000)
    spool.ensure()
    plant_state(spool, case, tmp_path)
    # The collector (no lock) reports and leaves the unknown figures out...
    health = spool.health()
    assert health is not None and health.dropped_points is None
    assert health.corrupt_files is None and health.last_success is None
    (line,) = capsys.readouterr().err.splitlines()
    assert spool.state_path in line and "push figures left out" in line
    assert not [n for n in os.listdir(spool.dir) if ".corrupt-" in n]  # ...moves nothing
    # ...the push (under the lock) sets it aside, counts it, and sends its batch.
    push = Recording(spool)
    push.deliver("m f=9i 9\n", 9)
    assert push.sent == ["m f=9i 9\n"]
    (line,) = capsys.readouterr().err.splitlines()
    assert spool.state_path in line and "moved aside to" in line
    state = json.loads(open(spool.state_path).read())
    assert state["corrupt_files"] == 1 and state["dropped_points"] == 0
    assert isinstance(state["last_success"], int)
    assert len([n for n in os.listdir(spool.dir) if n.startswith("state.json.corrupt-")]) == 1
    assert os.stat(spool.state_path).st_mode & 0o777 == 0o600


def test_spool_state_of_an_older_version_without_corrupt_count_is_fine(tmp_path):
    spool = Spool(str(tmp_path / "spool"), 10_000)
    spool.ensure()
    with open(spool.state_path, "w") as fh:
        fh.write('{"version": 1, "last_success": 5, "dropped_points": 3, '
                 '"quarantined_batches": 2}')
    assert spool.health() == (5, 0, 3, 2, 0, 0, 0)


def test_quarantine_that_is_a_symlink_is_set_aside(tmp_path):
    spool = Spool(str(tmp_path / "spool"), 10_000)
    spool.ensure()
    os.rmdir(spool.quarantine_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, spool.quarantine_dir)
    push = Recording(spool, fail=REJECTED)
    with pytest.raises(OutputError, match="quarantine"):
        push.deliver("m f=9i 9\n", 9)
    assert os.listdir(elsewhere) == []
    assert os.path.isdir(spool.quarantine_dir) and not os.path.islink(spool.quarantine_dir)
    assert len(os.listdir(spool.quarantine_dir)) == 2  # the batch and its .error
    assert spool.health().corrupt_files == 1


@pytest.mark.parametrize("how", ["symlink", "world-writable"])
def test_untrusted_spool_lock_is_refused(tmp_path, how):
    spool = Spool(str(tmp_path / "spool"), 10_000)
    spool.ensure()
    lock = os.path.join(spool.dir, ".lock")
    if how == "symlink":
        os.symlink(tmp_path / "elsewhere", lock)
    else:
        open(lock, "w").close()
        os.chmod(lock, 0o666)
    with pytest.raises(OutputError, match=r"lock file .*\.lock"):
        Recording(spool).deliver("m f=9i 9\n", 9)
    assert not (tmp_path / "elsewhere").exists()


def test_odd_names_in_the_spool_are_not_batches(tmp_path):
    spool = Spool(str(tmp_path / "spool"), 10_000)
    spool.ensure()
    for name in ("00000000000000000001.1.\u00b2.lp", "1.1.99999999999999999999999.lp",
                 "x.1.1.lp", "00000000000000000001.1.1.lp.corrupt-5"):
        open(planted(spool, name), "w").close()
    assert spool.batches(everything=True) == []
    assert spool.health() is None


# --- the same against a real /api/v2/write server ----------------------------------------

@pytest.mark.integration
def test_corrupt_spool_never_stops_the_push(down, victoria, tmp_path):
    spool_dir = str(tmp_path / "spool")
    spool = Spool(spool_dir, 10_000)
    spool.ensure()
    bad = plant_corrupt_batches(spool, secret_file(tmp_path))
    plant_state(spool, "deep-nesting", tmp_path)
    args = [*down, *push_args(victoria.url, spool_dir, "--influxdb-token", TOKEN)]
    proc = run_exporter(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if "moved aside" in ln]) == len(bad) + 1
    assert len(timestamps(victoria, "apache_exporter_up", 1)) == 1  # the new batch arrived
    assert victoria.export('{__name__=~"stolen.*"}', timeout=1) == []  # the secret did not
    assert Spool(spool_dir, 1).batches(everything=True) == []
    # The next batch reports how many files were set aside.
    assert run_exporter(*args).returncode == 0
    newest = max(timestamps(victoria, "apache_exporter_up", 2))
    deadline = time.monotonic() + 15
    while True:
        series = victoria.export('{__name__="apache_exporter_push_corrupt_files"}')
        values = dict(zip(series[0]["timestamps"], series[0]["values"])) if series else {}
        if newest in values or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert values[newest] == len(bad) + 1


@pytest.mark.integration
def test_every_corrupt_spool_state_still_delivers_the_batch(down, victoria, tmp_path):
    spool_dir = str(tmp_path / "spool")
    args = [*down, *push_args(victoria.url, spool_dir, "--influxdb-token", TOKEN)]
    for n, case in enumerate(sorted(STATE_CASES), start=1):
        spool = Spool(spool_dir, 10_000)
        spool.ensure()
        if os.path.lexists(spool.state_path):
            os.unlink(spool.state_path)
        plant_state(spool, case, tmp_path)
        proc = run_exporter(*args)
        assert proc.returncode == 0, (case, proc.stderr)
        assert len(timestamps(victoria, "apache_exporter_up", n)) == n, case
        assert spool.health().corrupt_files == 1, case


@st.composite
def almost_valid_spool_state(draw):
    s = {"version": 1, "last_success": 1_700_000_000, "dropped_points": 3,
         "quarantined_batches": 1, "corrupt_files": 0,
         "failing": {"00000000000000000001.1.1.lp": {"tries": 1, "first": 5}}}
    s[draw(st.sampled_from(sorted(s)))] = draw(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
        | st.lists(st.integers(), max_size=3))
    return json.dumps(s).encode()


@settings(max_examples=200, deadline=None)
@given(data=almost_valid_spool_state() | st.binary(max_size=200))
def test_any_spool_state_is_good_or_set_aside(data):
    top = tempfile.mkdtemp()
    try:
        spool = Spool(os.path.join(top, "spool"), 10_000)
        spool.ensure()
        with open(spool.state_path, "wb") as fh:
            fh.write(data)
        health = spool.health()  # the collector: never raises, never a wrong type
        for value in health[1:]:
            assert value is None or (type(value) is int and 0 <= value < 2**63)
        assert health.last_success is None or type(health.last_success) is int
        push = Recording(spool)
        push.deliver("m f=9i 9\n", 9)  # the push: always sends its batch
        assert push.sent == ["m f=9i 9\n"]
        assert state_problem(json.loads(open(spool.state_path).read())) == ""
    finally:
        shutil.rmtree(top)


# --- a slow InfluxDB never holds a run (or the spool) for ever --------------------

def test_a_dripping_influxdb_is_given_up_at_the_timeout_and_the_batch_kept(tmp_path):
    from tests.harness.peers import DripPeer

    spool = str(tmp_path / "spool")
    peer = DripPeer(head=b"HTTP/1.1 204 No Content\r\n", drip=b"X-A: b\r\n", pause=0.2)
    try:
        t0 = time.monotonic()
        proc = run_exporter("--url", "http://127.0.0.1:9/server-status",
                            *push_args(f"http://127.0.0.1:{peer.port}", spool,
                                       "--influxdb-token", TOKEN, "--influxdb-timeout", "1"),
                            timeout=60)
        took = time.monotonic() - t0
    finally:
        peer.close()
    assert proc.returncode == 0, proc.stderr
    assert took < 1 + 4, took
    assert "no complete answer from InfluxDB" in proc.stderr
    assert len(Spool(spool, 1).batches()) == 1


def test_a_run_that_finds_the_spool_busy_spools_its_batch(tmp_path):
    import fcntl

    spool = tmp_path / "spool"
    Spool(str(spool), 1 << 20).ensure()
    lock = os.open(spool / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # another run, stuck delivering
    try:
        proc = run_exporter("--url", "http://127.0.0.1:9/server-status",
                            *push_args("http://127.0.0.1:9", str(spool),
                                       "--influxdb-token", TOKEN), timeout=60)
    finally:
        os.close(lock)
    assert proc.returncode == 0, proc.stderr
    assert "waits in" in proc.stderr
    (batch,) = Spool(str(spool), 1 << 20).batches()
    assert batch.points >= 1


# --- delivery guarantee, bounded replay, failing batches set aside (issue 19) ------------

class WriteServer:
    """A real HTTP server on loopback in place of /api/v2/write. It keeps every
    request (query, body), stores the body in ``upstream`` first when given one
    (a real server: stored means stored), then answers ``status(body)``. The
    first ``hold`` answers wait until ``release`` is set: a server that stores a
    batch and answers after the client gave up. ``delay``: a slow server."""

    def __init__(self, status=lambda body: 204, upstream=None, hold: int = 0,
                 delay: float = 0.0) -> None:
        self.requests: list = []
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                n = len(outer.requests)
                outer.requests.append((query, body))
                if upstream is not None:
                    upstream(query, body)
                if n < hold:
                    outer.release.wait(30)
                elif delay:
                    time.sleep(delay)  # the behaviour under test: a slow server
                code = status(body)
                text = b"" if code < 300 else json.dumps(
                    {"code": "internal error", "message": f"boom {code}"}).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except OSError:
                    pass  # the client gave up on us

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    @property
    def bodies(self) -> list:
        return [body for _, body in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def to_influxdb(influxdb):
    """Store /api/v2/write bodies in InfluxDB 1.6 through its /write (1.6 has no
    /api/v2/write; 1.8 maps it to the same storage): bucket DB/RP, same precision."""
    def store(query, body):
        db = query["bucket"][0].split("/")[0]
        influxdb.write(db, body, query["precision"][0])
    return store


def to_victoria(vm):
    def store(query, body):
        req = urllib.request.Request(f"{vm.url}/api/v2/write?precision="
                                     f"{query['precision'][0]}", data=body, method="POST")
        urllib.request.urlopen(req, timeout=10).read()
    return store


class DedupVictoria(VictoriaMetrics):
    """VictoriaMetrics with -dedup.minScrapeInterval=1ms: one sample per series
    and millisecond (the setting docs/influxdb-push.md recommends)."""

    def _spawn(self, argv, stdout):
        super()._spawn([*argv, "-dedup.minScrapeInterval=1ms"], stdout)


def push_lines(stderr: str) -> list:
    """stderr without the line about the dead Apache of ``down``."""
    return [ln for ln in stderr.splitlines() if "127.0.0.1:9" not in ln]


def late_then_replayed(down, spool: str, upstream, bucket: str = "b") -> WriteServer:
    """Run 1: the server stores the batch but answers after --influxdb-timeout
    (the batch is spooled); run 2: the spooled batch is sent again, then run
    2's own. The server (closed) with the three requests."""
    server = WriteServer(upstream=upstream, hold=1)
    try:
        args = [*down, "--format", "influxdb", "--influxdb-url", server.url,
                "--influxdb-org", "-", "--influxdb-bucket", bucket, "--spool-dir", spool,
                "--influxdb-token", TOKEN, "--influxdb-timeout", "1"]
        proc = run_exporter(*args)
        assert proc.returncode == 0, proc.stderr
        (line,) = push_lines(proc.stderr)
        assert "timed out" in line and "points kept in" in line
        assert len(Spool(spool, 1).batches()) == 1
        server.release.set()
        proc = run_exporter(*args)
        assert proc.returncode == 0 and push_lines(proc.stderr) == [], proc.stderr
        assert Spool(spool, 1).batches() == []
    finally:
        server.close()
    first, replayed, own = server.bodies
    assert replayed == first  # byte for byte: never re-stamped
    assert own != first
    # Fixed precision: every write says ns, and every line ends with its own
    # 19-digit nanosecond timestamp.
    assert {q["precision"][0] for q, _ in server.requests} == {"ns"}
    for line in first.decode().splitlines():
        assert re.fullmatch(r"\d{19}", line.rsplit(" ", 1)[1]), line
    return server


@pytest.mark.integration
def test_a_batch_stored_but_answered_late_is_stored_once_by_influxdb(down, influxdb,
                                                                      influx_db, tmp_path):
    server = late_then_replayed(down, str(tmp_path / "spool"), to_influxdb(influxdb),
                                f"{influx_db}/autogen")
    first = server.bodies[0].decode().splitlines()
    result = influxdb.query("SELECT * FROM /.*/ GROUP BY *", influx_db)["results"][0]
    series = result["series"]
    # One series per line of a batch, each with exactly two points: the late
    # batch (delivered twice) once, and the second run's batch.
    assert len(series) == len(first)
    for s in series:
        times = [row[0] for row in s["values"]]
        assert len(times) == 2 == len(set(times)), s


@pytest.mark.integration
@pytest.mark.parametrize("dedup", [True, False])
def test_a_batch_delivered_twice_to_victoriametrics(down, tmp_path, dedup):
    vm = (DedupVictoria() if dedup else VictoriaMetrics()).start()
    try:
        server = late_then_replayed(down, str(tmp_path / "spool"), to_victoria(vm))
        first_ms = int(server.bodies[0].decode().split()[-1]) // 1_000_000
        # With -dedup.minScrapeInterval=1ms one sample per series and time;
        # without, VictoriaMetrics keeps both copies (as docs/influxdb-push.md says).
        copies = 1 if dedup else 2
        stamps = timestamps(vm, "apache_exporter_up", copies + 1)
        assert stamps.count(first_ms) == copies and len(stamps) == copies + 1
    finally:
        vm.stop()


def slow_spool(tmp_path, n: int) -> Spool:
    spool = Spool(str(tmp_path / "spool"), 1 << 20)
    spool.ensure()
    for i in range(1, n + 1):
        spool.add(f"m,batch={i} f={i}i {i}\n", i)
    return spool


def test_replay_stops_at_its_deadline_and_leaves_the_rest(tmp_path, capsys, monkeypatch):
    from apache_metrics_exporter.log import INFO, log

    monkeypatch.setattr(log, "level", INFO)
    spool = slow_spool(tmp_path, 40)
    server = WriteServer(delay=0.2)  # 40 batches would take 8 s
    try:
        push = InfluxPush(PushSettings(server.url, "o", "b", TOKEN, timeout=5,
                                       replay_time=1.0), spool)
        push._api()  # influxdb-client imported (0.4 s) before the clock starts
        t0 = time.monotonic()
        push.deliver("m,batch=new f=0i 99\n", 99)
        took = time.monotonic() - t0
        push.close()
    finally:
        server.close()
    sent = server.bodies
    replayed = len(sent) - 1
    assert 1 <= replayed <= 6, replayed  # about 1 s of 0.2 s writes (a busy machine: fewer)
    assert took < 1.0 + 2 * 0.2 + 1.0, took  # the deadline, the write under way, its own
    assert sent[-1] == b"m,batch=new f=0i 99\n"  # this run's batch still went
    assert sent[:-1] == [f"m,batch={i} f={i}i {i}\n".encode() for i in range(1, replayed + 1)]
    left = spool.batches()
    assert len(left) == 40 - replayed
    assert spool.read(left[0]) == f"m,batch={replayed + 1} f={replayed + 1}i {replayed + 1}\n"
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{40 - replayed} batches left for the next run" in line and "info:" in line


def test_replay_deadline_default_and_in_a_loop():
    from apache_metrics_exporter.push.client import REPLAY_TIME
    from apache_metrics_exporter.writers import Settings
    from apache_metrics_exporter.writers.influxdb import push_settings

    base = dict(influxdb_url="http://127.0.0.1:9", influxdb_org="o", influxdb_bucket="b")
    assert REPLAY_TIME == 10.0
    assert push_settings(Settings(**base)).replay_time == 10.0
    assert push_settings(Settings(**base, interval=60.0)).replay_time == 10.0
    assert push_settings(Settings(**base, interval=4.0)).replay_time == 2.0


def plant(spool: Spool, *names: str) -> None:
    """Batches oldest first, each one line whose tag says which it is."""
    for i, name in enumerate(names, start=1):
        spool.add(f"m,batch={name} f={i}i {i}\n", i)


def batch_name(body: str) -> str:
    """Which planted batch a body is ("own": a run's own batch)."""
    return body.split(",batch=")[1].split()[0] if ",batch=" in body else "own"


def spool_names(spool: Spool) -> list:
    return [batch_name(spool.read(b)) for b in spool.batches()]


def sent_names(server: WriteServer) -> list:
    return [batch_name(b.decode()) for b in server.bodies]


def test_a_batch_failing_while_later_ones_go_is_set_aside(down, tmp_path):
    spool_dir = str(tmp_path / "spool")
    spool = Spool(spool_dir, 1 << 20)
    spool.ensure()
    plant(spool, "bad", "good1", "good2")
    bad_name = os.path.basename(spool.batches()[0].path)
    server = WriteServer(status=lambda body: 500 if b"batch=bad" in body else 204)
    args = [*down, *push_args(server.url, spool_dir, "--influxdb-token", TOKEN)]
    try:
        proc = run_exporter(*args)
        assert proc.returncode == 0 and push_lines(proc.stderr) == [], proc.stderr
        # The failing batch did not hold back the ones behind it, nor this run's.
        assert sent_names(server) == ["bad", "good1", "good2", "own"]
        assert spool_names(spool) == ["bad"]
        state = json.loads(open(spool.state_path).read())
        assert state["failing"] == {bad_name: {"tries": 1, "first": state["failing"][bad_name]
                                               ["first"]}}
        for tries in (2, 3):  # 3 tries, but not yet over 10 minutes: kept
            assert run_exporter(*args).returncode == 0
            assert json.loads(open(spool.state_path).read())["failing"][bad_name]["tries"] \
                == tries
        assert spool_names(spool) == ["bad"]
        # Ten minutes later (its first failure moved back), the next failure sets it aside.
        state = json.loads(open(spool.state_path).read())
        state["failing"][bad_name]["first"] -= 600
        with open(spool.state_path, "w") as fh:
            json.dump(state, fh)
        server.requests.clear()
        proc = run_exporter(*args)
        assert proc.returncode == 0, proc.stderr
        (line,) = push_lines(proc.stderr)  # reported once, in one line
        assert "HTTP 500" in line and "failed 4 times over 10 minutes" in line
        assert "set aside in " + os.path.join(spool_dir, "quarantine", bad_name) in line
        assert spool.batches() == []
        target = os.path.join(spool.quarantine_dir, bad_name)
        assert "HTTP 500: boom 500" in open(target + ".error").read()
        health = spool.health()
        assert health.quarantined_batches == 1 and health.quarantine_batches == 1
        assert health.quarantine_bytes == os.path.getsize(target)
        assert json.loads(open(spool.state_path).read())["failing"] == {}
        # Never tried again, never said again.
        server.requests.clear()
        proc = run_exporter(*args)
        assert proc.returncode == 0 and push_lines(proc.stderr) == []
        assert sent_names(server) == ["own"]
    finally:
        server.close()
    tab = parse_tab(run_exporter(*down, "--format", "tab", "--spool-dir", spool_dir).stdout)
    assert tab["push-quarantined-batches-total"] == "1"
    assert tab["push-quarantine-batches"] == "1"
    assert tab["push-quarantine-bytes"] == str(health.quarantine_bytes)


def test_a_server_failing_everything_quarantines_nothing(down, tmp_path):
    spool_dir = str(tmp_path / "spool")
    spool = Spool(spool_dir, 1 << 20)
    spool.ensure()
    plant(spool, *(f"b{i}" for i in range(6)))
    server = WriteServer(status=lambda body: 500)
    args = [*down, *push_args(server.url, spool_dir, "--influxdb-token", TOKEN)]
    try:
        for _ in range(2):
            server.requests.clear()
            proc = run_exporter(*args)
            assert proc.returncode == 0, proc.stderr
            (line,) = push_lines(proc.stderr)
            assert "HTTP 500" in line and "points kept in" in line
            # Three failures in a row stop the replay; this run's batch is tried.
            assert sent_names(server) == ["b0", "b1", "b2", "own"]
        # No write went: no failure is the batch's own, nothing is set aside.
        assert json.loads(open(spool.state_path).read())["failing"] == {}
        assert len(spool.batches()) == 8 and spool.health().quarantine_batches == 0
    finally:
        server.close()


def test_a_rejected_spooled_batch_is_set_aside_at_once_and_the_rest_flows(down, tmp_path):
    spool_dir = str(tmp_path / "spool")
    spool = Spool(spool_dir, 1 << 20)
    spool.ensure()
    plant(spool, "bad", "good")
    server = WriteServer(status=lambda body: 400 if b"batch=bad" in body else 204)
    try:
        proc = run_exporter(*down, *push_args(server.url, spool_dir, "--influxdb-token", TOKEN))
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    (line,) = push_lines(proc.stderr)
    assert "HTTP 400" in line and "set aside in" in line
    assert sent_names(server) == ["bad", "good", "own"]
    assert spool.batches() == [] and spool.health().quarantine_batches == 1


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_stop_the_replay_and_quarantine_nothing(down, tmp_path, status):
    spool_dir = str(tmp_path / "spool")
    spool = Spool(spool_dir, 1 << 20)
    spool.ensure()
    plant(spool, "b0", "b1", "b2")
    server = WriteServer(status=lambda body: status)
    try:
        proc = run_exporter(*down, *push_args(server.url, spool_dir, "--influxdb-token", TOKEN))
    finally:
        server.close()
    assert proc.returncode == 1
    (line,) = push_lines(proc.stderr)
    assert f"HTTP {status}" in line and "check the token" in line
    assert sent_names(server) == ["b0"]  # nothing else was tried
    assert spool_names(spool) == ["b0", "b1", "b2", "own"]
    assert spool.health().quarantine_batches == 0
    assert json.loads(open(spool.state_path).read())["failing"] == {}


def test_the_quarantine_is_bounded_like_the_spool(tmp_path):
    spool = Spool(str(tmp_path / "spool"), 10_000)
    spool.ensure()
    push = Recording(spool, fail=REJECTED)
    for i in range(1, 4):
        with pytest.raises(OutputError):
            push.deliver(f"m f={i}i {i}\n", i)
    assert spool.health().quarantine_batches == 3
    spool.max_bytes = 2 * len("m f=1i 1\n")  # room for two
    with pytest.raises(OutputError):
        push.deliver("m f=4i 4\n", 4)
    kept = sorted(n for n in os.listdir(spool.quarantine_dir))
    assert kept == sorted(f"{i:020d}.{os.getpid()}.1.lp{e}" for i in (3, 4)
                          for e in ("", ".error"))
    health = spool.health()
    assert health.quarantine_batches == 2 and health.quarantined_batches == 4
    assert health.dropped_points == 2  # the two oldest, gone for good


def test_a_clock_outside_nanosecond_timestamps_pushes_nothing(tmp_path):
    from types import SimpleNamespace

    from apache_metrics_exporter.writers import Settings
    from apache_metrics_exporter.writers.influxdb import Sink

    spool_dir = str(tmp_path / "spool")
    sink = Sink(Settings(influxdb_url="http://127.0.0.1:9", influxdb_org="o",
                         influxdb_bucket="b", spool_dir=spool_dir))
    with pytest.raises(OutputError, match="fix the clock"):
        sink.send("apache_exporter up=1i\n", [SimpleNamespace(timestamp=-1.0)])
    assert Spool(spool_dir, 1).batches() == []


DOWN = "http://127.0.0.1:1/server-status"  # refused: an outage, no Apache needed


class _BusyInflux(http.server.BaseHTTPRequestHandler):
    """An InfluxDB under load: the first write of every burst gets
    '503 Service Unavailable, Retry-After: 1' (come back later), the rest 204."""

    last = [0.0]

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        first = time.monotonic() - self.last[0] > 0.5
        self.last[0] = time.monotonic()
        if first:
            self.send_response(503)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_503_retry_after_never_quarantines_good_data(tmp_path):
    # A busy server (503, Retry-After) says nothing about the batch: it must
    # not be counted towards quarantine, however often it meets the busy moment.
    server = http.server.HTTPServer(("127.0.0.1", 0), _BusyInflux)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spool = tmp_path / "spool"
    args = ("--url", DOWN, "--no-processes", "--format", "influxdb",
            "--influxdb-url", f"http://127.0.0.1:{server.server_port}",
            "--influxdb-org", "o", "--influxdb-bucket", "b", "--influxdb-token", "t0ken",
            "--spool-dir", str(spool))
    try:
        run_exporter(*args, timeout=60)  # 503: its batch is spooled
        for _ in range(3):
            state_path = spool / "state.json"
            state = json.loads(state_path.read_text())
            for entry in state.get("failing", {}).values():
                entry["first"] -= 700  # as if these runs were ten minutes apart
            state_path.write_text(json.dumps(state))
            time.sleep(0.6)
            run_exporter(*args, timeout=60)
    finally:
        server.shutdown()
    quarantined = [p for p in os.listdir(spool / "quarantine") if p.endswith(".lp")]
    assert quarantined == [], "valid points set aside after 503 Retry-After answers"


def _answering(status: int, body: bytes, headers: tuple = ()):
    """A server answering every write and /ping with ``status`` and ``body``."""
    class Handler(http.server.BaseHTTPRequestHandler):
        answer = status  # (a test may change it: server.RequestHandlerClass)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(self.answer)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:  # the client stopped reading: as it should
                pass

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _answering_400(body: bytes, content_type: str = "application/json"):
    return _answering(400, body, (("Content-Type", content_type),))



def _write_failure(server, tmp_path) -> PushFailed:
    """What one write to ``server`` fails with (the server is stopped after)."""
    push = InfluxPush(PushSettings(f"http://127.0.0.1:{server.server_port}", "o", "b", TOKEN),
                      Spool(str(tmp_path / "spool"), 1 << 20))
    try:
        with pytest.raises(PushFailed) as caught:
            push.write('apache_workers longest_request="x" 1')
    finally:
        push.close()
        server.shutdown()
        server.server_close()
    return caught.value

# A data rejection that quotes the data (InfluxDB 2.x's parse error quotes the
# line; 1.x's max-values-per-tag error the tag's value), where the data holds
# the words of a TLS port's answer to plain HTTP: longest_request is the
# request line of any client of the monitored Apache.
_ECHOED = [
    {"code": "invalid", "message": "unable to parse 'apache_workers,port=80,server=web "
     "longest_request=\"GET /Client sent an HTTP request to an HTTPS server. HTTP/1.1\" "
     "1': bad timestamp"},
    {"error": "partial write: max-values-per-tag limit exceeded (100000/100000): "
              "measurement=\"apache\" tag=\"vhost\" value=\"The plain HTTP request was "
              "sent to HTTPS port\" dropped=1"},
]


@pytest.mark.parametrize("answer", _ECHOED)
def test_a_data_rejection_quoting_a_tls_ports_words_is_still_a_rejection(tmp_path, answer):
    # Since a 400 from a TLS port spoken to in plain HTTP keeps its batch
    # (the URL, not the data), the words were looked for anywhere in the
    # message: a real rejection that quoted them was taken for it, so its
    # batch was never set aside - every later run failed on it (exit 1)
    # and the data waited for ever. Only the server's own page counts.
    server = _answering_400(json.dumps(answer).encode())
    caught = _write_failure(server, tmp_path)
    assert caught.kind == REJECTED, caught
    assert "give --influxdb-url https://" not in str(caught)


@pytest.mark.parametrize("body,content_type", [
    (b"Client sent an HTTP request to an HTTPS server.\n", "text/plain; charset=utf-8"),
    (b"<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title>"
     b"</head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The plain "
     b"HTTP request was sent to HTTPS port</center>\r\n<hr><center>nginx</center>\r\n"
     b"</body>\r\n</html>\r\n", "text/html"),
])
def test_a_tls_ports_own_answer_to_plain_http_keeps_the_batch(tmp_path, body, content_type):
    # Go's (InfluxDB's own) and nginx's (a proxy before it) pages, whole.
    from apache_metrics_exporter.push.client import AUTH

    server = _answering_400(body, content_type)
    caught = _write_failure(server, tmp_path)
    assert caught.kind == AUTH, caught
    assert "give --influxdb-url https://" in str(caught)


def test_a_huge_message_in_a_json_answer_is_cut_short(tmp_path):
    # A plain-text answer's message was cut to 300 characters, a JSON one's
    # (InfluxDB's own form) not at all: a server answering a 400 with a
    # 30 MB message made a 30 MB error line, and a 30 MB quarantine/*.error
    # beside the batch, at every run. Whitespace is made single spaces, as
    # for a plain-text one.
    server = _answering_400(json.dumps({"code": "invalid", "message": "unable to parse\n"
                                        + "x" * (8 << 20)}).encode())
    spool = Spool(str(tmp_path / "spool"), 1 << 20)
    push = InfluxPush(PushSettings(f"http://127.0.0.1:{server.server_port}", "o", "b", TOKEN),
                      spool)
    try:
        with pytest.raises(OutputError) as caught:
            push.deliver('apache_workers longest_request="x" 1', time.time_ns())
    finally:
        push.close()
        server.shutdown()
        server.server_close()
    text = str(caught.value)
    assert "HTTP 400: unable to parse xxx" in text and len(text) < 1000, len(text)
    (error,) = [n for n in os.listdir(spool.quarantine_dir) if n.endswith(".error")]
    assert os.path.getsize(os.path.join(spool.quarantine_dir, error)) < 1000


@pytest.mark.parametrize("status", [503, 400])
def test_an_answer_nested_too_deep_for_json_keeps_the_batch(tmp_path, status):
    # The error answer's body was given to json.loads, which raises
    # RecursionError (no ValueError) for "[[[[..." nested deeper than
    # Python's recursion limit: the run ended in a traceback before its batch
    # was spooled - the batch was lost - and --check's /ping ended the same.
    server = _answering_400(b"[" * 100_000)
    server.RequestHandlerClass.answer = status
    spool = Spool(str(tmp_path / "spool"), 1 << 20)
    push = InfluxPush(PushSettings(f"http://127.0.0.1:{server.server_port}", "o", "b", TOKEN),
                      spool)
    try:
        if status == 503:  # for now: spooled, the run goes on
            push.deliver('apache_workers longest_request="x" 1', time.time_ns())
            assert len(spool.batches()) == 1
        else:  # rejected: set aside
            with pytest.raises(OutputError, match=r"HTTP 400: \[\[\[\["):
                push.deliver('apache_workers longest_request="x" 1', time.time_ns())
            assert [n for n in os.listdir(spool.quarantine_dir) if not n.endswith(".error")]
        with pytest.raises(PushFailed, match=r"HTTP \d+: \[\[\[\["):
            push.ping()
    finally:
        push.close()
        server.shutdown()
        server.server_close()


_PEAK_RSS = ("import resource, subprocess, sys\n"
             "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.stderr.write(p.stderr)\n")


@pytest.mark.parametrize("case", ["gzip bomb", "huge", "not utf-8"])
def test_an_answer_is_read_only_as_far_as_its_message(tmp_path, case):
    # influxdb-client reads (and inflates) the whole of an answer: a 200 kB
    # gzip answer took a run from 220 to 641 MB. Now at most MAX_ANSWER bytes
    # of it are read and inflated - a message is all that is used of it -
    # and a body that is not UTF-8 (influxdb-client decodes it so) or cut in
    # a character is no traceback that loses the batch.
    import gzip

    from apache_metrics_exporter.push.client import MAX_ANSWER

    if case == "gzip bomb":
        body = gzip.compress(b'{"code":"invalid","message":"' + b"x" * (300 << 20) + b'"}', 9)
        assert len(body) < 1 << 20
        server = _answering(400, body, (("Content-Encoding", "gzip"),
                                        ("Content-Type", "application/json")))
    elif case == "huge":
        server = _answering(400, b"no such thing; " * (20 << 20))  # 300 MB
    else:
        server = _answering(400, b"\xff\xfe bad \xe9 bytes " + "é".encode() * MAX_ANSWER)
    spool = str(tmp_path / "spool")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "apache_metrics_exporter",
             "--url", "http://127.0.0.1:9/server-status", "--no-processes",
             *push_args(f"http://127.0.0.1:{server.server_port}", spool,
                        "--influxdb-token", TOKEN)],
            capture_output=True, text=True, timeout=120, env=exporter_env())
    finally:
        server.shutdown()
        server.server_close()
    status, peak_kib = map(int, proc.stdout.split())
    assert status == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "HTTP 400" in proc.stderr and "set aside" in proc.stderr
    assert peak_kib < 120 * 1024, peak_kib  # MiB of a run, not the answer's
    line = [x for x in proc.stderr.splitlines() if "HTTP 400" in x][0]
    assert len(line) < 1000
    if case == "gzip bomb":
        assert "HTTP 400: xxxx" in line


@pytest.mark.parametrize("detail,ca,fix", [
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate",
     None, "give --influxdb-ca-file with the CA that signed"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer "
     "certificate", "/etc/ca.pem", "not signed by a CA of --influxdb-ca-file /etc/ca.pem"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, "
     "certificate is not valid for 'db'.", None, "not for the host name of --influxdb-url"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate has expired",
     None, "has expired (or this host's clock is ahead)"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate is not yet "
     "valid", None, "this host's clock is behind"),
    ("[SSL: WRONG_VERSION_NUMBER] wrong version number", None, "does not speak TLS there"),
    ("[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol", None, None),
    ("Connection refused", None, None),
])
def test_tls_failures_that_need_a_person_are_named_with_their_fix(detail, ca, fix):
    # OpenSSL's own words (Python 3.11, OpenSSL 3.0): a certificate that is
    # not trusted, not for the name or outside its dates, and TLS spoken to a
    # plain port, stop the run with their fix; an EOF mid-handshake (a
    # server restarting) or a refusal is for now (None).
    from apache_metrics_exporter.push.client import tls_fix

    got = tls_fix(detail, ca)
    assert got is None if fix is None else fix in got, got


def test_writes_keep_their_connection_to_influxdb(tmp_path):
    # The bounded reading of answers (push.client._BoundedAnswers) keeps
    # what influxdb-client's own did: an answer read whole (a 204, or a short
    # error) leaves its connection to the next write (urllib3 takes it back
    # once the body is read to its end); an answer cut at MAX_ANSWER is not
    # read on - its connection is closed and the next write opens another.
    from apache_metrics_exporter.push.client import MAX_ANSWER

    connections = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            connections.append(self.client_address)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = b"" if b"big" not in body else b"x" * (2 * MAX_ANSWER)
            self.send_response(204 if not answer else 500)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    push = InfluxPush(PushSettings(f"http://127.0.0.1:{server.server_port}", "o", "b", TOKEN),
                      Spool(str(tmp_path / "spool"), 1 << 20))
    try:
        for _ in range(3):
            push.write("m v=1i 1")
        assert len(connections) == 1
        with pytest.raises(PushFailed):
            push.write("m big=1i 1")  # cut at MAX_ANSWER: that connection is closed
        push.write("m v=1i 1")
        assert len(connections) == 2
    finally:
        push.close()
        server.shutdown()
        server.server_close()
