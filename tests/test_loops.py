"""Long-running modes: Telegraf execd (signal = "STDIN"), --interval (collectd's Exec).

Telegraf itself cannot be installed here: these tests drive the exporter the
way Telegraf's execd and exec inputs do (reference/integrations.md) - a newline
per gather on stdin, stdin closed on stop, SIGTERM, stdout read line by line.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.conftest import exporter_env
from tests.harness.peers import NEVER_FINISHING, DripPeer

pytestmark = pytest.mark.integration


def spawn(*args: str, **env: str) -> subprocess.Popen:
    """The exporter with pipes; its stdout lines arrive on ``proc.lines``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "apache_metrics_exporter", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=exporter_env(**env), text=True, bufsize=1)
    proc.lines = queue.Queue()

    def pump():
        try:
            for line in proc.stdout:
                proc.lines.put(line)
        except (OSError, ValueError):
            pass  # the test closed the pipe on purpose
        proc.lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc


def read_batch(proc: subprocess.Popen, timeout: float = 10.0) -> list:
    """Lines up to and including the batch's last line (apache_exporter ...)."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = proc.lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("apache_exporter,"):
            return lines
    raise AssertionError(f"no complete batch within {timeout} s: {lines}")


def up_value(batch: list) -> str:
    return re.search(r" up=(\d)i", batch[-1]).group(1)


def finish(proc: subprocess.Popen, timeout: float = 5.0) -> tuple:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, proc.stderr.read()


def test_execd_one_batch_per_line_and_exit_on_eof(prefork):
    proc = spawn("--url", prefork.status_url, "--format", "influx", "--execd")
    try:
        # Nothing is written before Telegraf asks.
        with pytest.raises(queue.Empty):
            proc.lines.get(timeout=0.5)
        proc.stdin.write("\n")
        proc.stdin.flush()
        first = read_batch(proc)
        assert first[0].startswith("apache,") and up_value(first) == "1"
        proc.stdin.write("\n")
        proc.stdin.flush()
        second = read_batch(proc)
        assert second[0].split(" ")[-1] != first[0].split(" ")[-1]  # a new snapshot
        started = time.monotonic()
        proc.stdin.close()
        code, err = finish(proc)
        assert code == 0 and time.monotonic() - started < 1.0
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_interval_survives_apache_stop_and_start(own_apache):
    proc = spawn("--url", own_apache.status_url, "--format", "influx", "--interval", "0.3")
    try:
        assert up_value(read_batch(proc)) == "1"
        own_apache.restart_stopped()
        seen = [up_value(read_batch(proc)) for _ in range(3)]
        assert seen[-1] == "0"
        own_apache.start_again()
        for _ in range(10):
            if up_value(read_batch(proc)) == "1":
                break
        else:
            raise AssertionError("never recovered after Apache came back")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
        assert code == 0
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if ": error: " in line]
        # While Apache stops, a connection it had already accepted is reset.
        assert errors and all("refused" in e or "closed the connection" in e for e in errors)
        assert any("refused" in e for e in errors)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigint_ends_the_loop_cleanly(prefork):
    proc = spawn("--url", prefork.status_url, "--format", "collectd", "--interval", "5")
    try:
        line = proc.lines.get(timeout=10)
        assert line.startswith("PUTVAL ")
        time.sleep(0.2)  # now waiting for the next tick
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc)
        assert code == 0 and time.monotonic() - started < 2
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("mode,signum", [
    ("--interval", signal.SIGTERM), ("--interval", signal.SIGINT), ("--execd", signal.SIGTERM),
], ids=["interval-SIGTERM", "interval-SIGINT", "execd-SIGTERM"])
def test_a_signal_ends_the_loop_in_the_middle_of_a_dripping_fetch(mode, signum):
    # The peer never finishes its answer and --timeout is long: only the
    # signal can end the fetch, and it must within a second, cleanly.
    with DripPeer(**dict(NEVER_FINISHING)["body"]) as peer:
        args = ["--url", peer.url, "--format", "influx", "--no-processes", "--timeout", "60",
                mode] + (["5"] if mode == "--interval" else [])
        proc = spawn(*args)
        try:
            if mode == "--execd":
                proc.stdin.write("\n")
                proc.stdin.flush()
            assert peer.requested.wait(10), "the exporter never asked"
            sent = peer.sent
            deadline = time.monotonic() + 5
            while peer.sent < sent + 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # in the middle of the body now
            assert proc.poll() is None
            started = time.monotonic()
            proc.send_signal(signum)
            code, err = finish(proc, timeout=5)
            assert time.monotonic() - started < 1.0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert proc.lines.get(timeout=5) is None  # no half batch was written


def test_collectd_interval_from_environment_and_stdin_closed(prefork):
    # collectd's Exec closes stdin at once and sets COLLECTD_INTERVAL: the
    # exporter must keep running, paced by that interval.
    proc = subprocess.Popen(
        [sys.executable, "-m", "apache_metrics_exporter", "--url", prefork.status_url,
         "--format", "collectd"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=exporter_env(COLLECTD_INTERVAL="0.300", COLLECTD_HOSTNAME="cd1"))
    try:
        stamps = set()
        deadline = time.monotonic() + 10
        while len(stamps) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line.startswith('PUTVAL "cd1/apache-') and " interval=0.300 " in line
            stamps.add(line.split(" ")[-1].split(":")[0])
        assert len(stamps) >= 3 and proc.poll() is None
    finally:
        proc.terminate()
        code, _ = finish(proc)
        assert code == 0


def test_connection_is_reused_between_cycles(prefork):
    proc = spawn("--url", prefork.status_url, "--format", "influx", "--interval", "0.2",
                 "--no-processes")
    try:
        for _ in range(5):
            read_batch(proc)
        with urllib.request.urlopen(prefork.status_url) as r:
            html = r.read().decode()
    finally:
        proc.terminate()
        finish(proc)
    # Acc = accesses this connection / this child / this slot: one kept-alive
    # connection served all ten requests (5 cycles x 2 pages).
    per_connection = [int(a) for a in re.findall(r"<td>(\d+)/\d+/\d+</td>", html)]
    assert max(per_connection) >= 10, per_connection


def test_execd_and_interval_exclude_each_other():
    proc = subprocess.run([sys.executable, "-m", "apache_metrics_exporter", "--url",
                           "http://127.0.0.1:9/s", "--execd", "--interval", "1"],
                          capture_output=True, text=True, env=exporter_env())
    assert proc.returncode == 2 and "exclude each other" in proc.stderr


def test_stdout_closed_by_the_agent_ends_the_loop(prefork):
    proc = spawn("--url", prefork.status_url, "--format", "influx", "--interval", "0.2",
                 "--no-processes")
    read_batch(proc)
    os.close(proc.stdout.fileno())  # the agent is gone: the pipe has no reader
    try:
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1
    err = proc.stderr.read()
    assert "cannot write to standard output: Broken pipe" in err
    assert "Traceback" not in err and "Exception ignored" not in err




def test_telegraf_log_format_prefixes_levels(own_apache):
    own_apache.restart_stopped()
    proc = spawn("--url", own_apache.status_url, "--format", "influx", "--execd",
                 "--log-format", "telegraf")
    try:
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert up_value(read_batch(proc)) == "0"
        proc.stdin.close()
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    (line,) = err.strip().splitlines()
    assert line.startswith("E! [apache-metrics-exporter] connection to 127.0.0.1:")


@pytest.mark.parametrize("value", ["inf", "1e308", "nan ", "1e-9", "0.001"])
def test_collectd_interval_out_of_range_is_one_line(monkeypatch, value):
    # COLLECTD_INTERVAL=inf or 1e308 ended in a traceback (time.sleep cannot
    # wait that long), 1e-9 in a loop collecting as fast as the CPU goes.
    from apache_metrics_exporter.errors import UsageError
    from apache_metrics_exporter.loops import MIN_INTERVAL, collectd_interval

    monkeypatch.setenv("COLLECTD_INTERVAL", value)
    with pytest.raises(UsageError, match="COLLECTD_INTERVAL") as caught:
        collectd_interval()
    assert "\n" not in str(caught.value)
    monkeypatch.setenv("COLLECTD_INTERVAL", str(MIN_INTERVAL))
    assert collectd_interval() == MIN_INTERVAL
    monkeypatch.setenv("COLLECTD_INTERVAL", "0")  # not under collectd's Exec: once
    assert collectd_interval() is None
