"""Closed standard streams (issue 19): cron and agents start commands with
stdin, stdout or stderr closed (``>&-``). Every command then still writes
where it was asked, exits with the documented status, never a traceback.

The descriptors are really closed in the child (``preexec_fn`` closes them
after subprocess has set them up), not pointed at /dev/null. Outages are a
closed loopback port; live runs use the session's private Apache.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Sequence

import pytest

from tests.conftest import exporter_env, parse_tab
from tests.harness.apache import free_port
from tests.test_manager import manager_env
from tests.validators import check_influx, check_tab

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = [sys.executable, "-m", "apache_metrics_exporter"]
REAPER = [os.path.join(os.path.dirname(sys.executable), "apache-worker-reaper")]
MANAGER = [sys.executable, "-m", "apache_metrics_exporter.manager"]
STDOUT_CLOSED = "cannot write to standard output: it was closed when the command started"


def closing(fds: Sequence[int]):
    """A preexec_fn that closes ``fds`` in the child just before exec."""
    def close() -> None:
        for fd in fds:
            os.close(fd)
    return close


def run(cmd: Sequence[str], closed: Sequence[int], *args: str, env=None, input=None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """``cmd args`` with the descriptors ``closed`` closed; the others are pipes
    (stdin: /dev/null unless ``input`` is given)."""
    stdin = {} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        [*cmd, *args], **stdin, capture_output=True, text=True, input=input,
        preexec_fn=closing(closed), env=env if env is not None else exporter_env(),
        timeout=timeout)


def start(cmd: Sequence[str], closed: Sequence[int], *args: str, **kw) -> subprocess.Popen:
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=closing(closed), env=exporter_env(), **kw)


def error_lines(proc: subprocess.CompletedProcess) -> list:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]


def stop(proc: subprocess.Popen) -> tuple:
    """SIGTERM, then the status and stderr (SIGKILL if it does not stop)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    return proc.returncode, err


def wait_for(check, proc: subprocess.Popen, what: str, timeout: float = 20) -> None:
    """Poll ``check()`` until true (a readiness check, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what}: status {proc.poll()}, {stop(proc)[1]!r}")
        time.sleep(0.02)


@pytest.fixture
def down() -> str:
    """The status URL of a closed loopback port: an outage."""
    return f"http://127.0.0.1:{free_port()}/server-status"


# --- the guard: no file ever takes a standard descriptor's number --------------

GUARD_CHILD = """
import os, sys
from apache_metrics_exporter import streams
from apache_metrics_exporter.log import log
streams.guard()
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, b"metrics\\n")
# What a library (or a stray print) writes to the standard descriptors:
os.write(1, b"stray stdout\\n")
os.write(2, b"stray stderr\\n")
print("stray print")
log.error("stray log line")
os.close(fd)
links = [os.readlink(f"/proc/self/fd/{n}") for n in (0, 1, 2)]
with open(sys.argv[2], "w") as report:
    report.write(repr((fd, sorted(streams.closed), links)))
"""


@pytest.mark.parametrize("closed", [(0,), (1,), (2,), (1, 2), (0, 1, 2)])
def test_a_file_opened_never_takes_a_closed_standard_descriptor(tmp_path, closed):
    out, report = tmp_path / "metrics.txt", tmp_path / "report"
    proc = run([sys.executable, "-c", GUARD_CHILD], closed, str(out), str(report))
    assert proc.returncode == 0, proc.stderr
    fd, noted, links = eval(report.read_text())
    assert fd > 2 and noted == list(closed)
    assert all(links[n] == "/dev/null" for n in closed)
    assert out.read_bytes() == b"metrics\n"  # nothing stray landed in it


# --- apache-metrics-exporter, one shot -----------------------------------------

@pytest.mark.parametrize("fmt", ["tab", "influx"])
def test_stdout_closed_is_an_output_error_before_any_fetch(down, fmt):
    proc = run(EXPORTER, (1,), "--url", down, "--format", fmt)
    assert proc.returncode == 1
    # One line, and only this one: no fetch was made (no "refused" line).
    (line,) = error_lines(proc)
    assert STDOUT_CLOSED in line


def test_stdout_closed_and_output_naming_it_is_an_output_error(down):
    proc = run(EXPORTER, (1,), "--url", down, "--output", "/dev/stdout")
    assert proc.returncode == 1
    assert STDOUT_CLOSED in error_lines(proc)[-1]


def test_stderr_closed_and_output_naming_it_is_an_output_error(down):
    proc = run(EXPORTER, (2,), "--url", down, "--output", "/dev/stderr")
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr == ""


def _written(path: Path, up: bool) -> None:
    text = path.read_text()
    values = check_tab(text)  # every line valid: no log line, no stray print
    assert values["status-response"] == ("0" if up else "1")
    assert "apache-metrics-exporter: " not in text and "Traceback" not in text


@pytest.mark.parametrize("closed", [(0,), (1,), (2,), (1, 2), (0, 1, 2)])
def test_output_file_is_written_during_an_outage(down, tmp_path, closed):
    out = tmp_path / "metrics.txt"
    # -vv: debug lines too, all of which must go nowhere near the file.
    proc = run(EXPORTER, closed, "--url", down, "--output", str(out), "-vv")
    assert proc.returncode == 0, proc.stderr
    _written(out, up=False)
    assert proc.stdout == ""
    if 2 not in closed:
        assert "refused" in proc.stderr and "Traceback" not in proc.stderr
    else:
        assert proc.stderr == ""


@pytest.mark.integration
@pytest.mark.parametrize("closed", [(1,), (2,), (0, 1, 2)])
def test_output_file_is_written_from_a_live_apache(prefork, tmp_path, closed):
    out = tmp_path / "metrics.txt"
    proc = run(EXPORTER, closed, "--url", prefork.status_url, "--output", str(out), "-vv")
    assert proc.returncode == 0, proc.stderr
    _written(out, up=True)


@pytest.mark.parametrize("closed", [(0,), (2,), (0, 2)])
def test_stdout_output_with_stdin_or_stderr_closed(down, closed):
    proc = run(EXPORTER, closed, "--url", down)
    assert proc.returncode == 0
    assert check_tab(proc.stdout)["status-response"] == "1"
    assert ("refused" in proc.stderr) == (2 not in closed)


@pytest.mark.integration
def test_stdout_output_from_a_live_apache_with_stderr_closed(prefork):
    proc = run(EXPORTER, (0, 2), "--url", prefork.status_url, "--format", "influx")
    assert proc.returncode == 0 and proc.stderr == ""
    check_influx(proc.stdout)
    assert "apache,port=" in proc.stdout


# --- the loops ---------------------------------------------------------------------

def test_interval_with_stdout_closed_exits_1_at_once(down):
    proc = run(EXPORTER, (1,), "--url", down, "--interval", "1", "--format", "influx",
               timeout=20)
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert STDOUT_CLOSED in line


def test_interval_with_output_naming_a_closed_stdout_exits_1(down):
    # Not a file that may come back next time: the loop ends at the first batch.
    proc = run(EXPORTER, (1,), "--url", down, "--interval", "1", "--output", "/dev/stdout",
               timeout=20)
    assert proc.returncode == 1
    assert [STDOUT_CLOSED in line for line in error_lines(proc)] == [False, True]


def test_interval_writing_a_file_with_stdin_and_stderr_closed(down, tmp_path):
    out = tmp_path / "metrics.txt"
    proc = start(EXPORTER, (0, 2), "--url", down, "--interval", "1", "--output", str(out))
    wait_for(out.exists, proc, "no batch written")
    status, err = stop(proc)
    assert status == 0 and err == ""
    _written(out, up=False)


def test_execd_with_stdin_closed_is_one_line_and_status_2(down):
    proc = run(EXPORTER, (0,), "--url", down, "--execd", "--format", "influx")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = error_lines(proc)
    assert "--execd" in line and "stdin is closed" in line


def test_execd_with_stdin_and_stderr_closed_still_exits_2(down):
    proc = run(EXPORTER, (0, 2), "--url", down, "--execd", "--format", "influx")
    assert proc.returncode == 2 and proc.stdout == proc.stderr == ""


def test_execd_at_end_of_input_is_still_a_clean_stop(down):
    # stdin open on /dev/null: at EOF at once, as when Telegraf closes it.
    proc = run(EXPORTER, (), "--url", down, "--execd", "--format", "influx")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


def test_execd_with_stdout_closed_exits_1(down):
    proc = run(EXPORTER, (1,), "--url", down, "--execd", "--format", "influx", input="\n")
    assert proc.returncode == 1
    assert STDOUT_CLOSED in error_lines(proc)[-1]


@pytest.mark.parametrize("live", [False, pytest.param(True, marks=pytest.mark.integration)])
def test_execd_with_stderr_closed_answers_each_line(request, down, live):
    url = request.getfixturevalue("prefork").status_url if live else down
    proc = start(EXPORTER, (2,), "--url", url, "--execd", "--format", "influx",
                 stdin=subprocess.PIPE)
    try:
        for _ in range(2):  # Telegraf's gather: a line in, a batch out
            proc.stdin.write("\n")
            proc.stdin.flush()
            batch = [proc.stdout.readline()]
            while batch[-1] and not batch[-1].startswith("apache_exporter,"):
                batch.append(proc.stdout.readline())  # "" if it died: ends the loop
            check_influx("".join(batch))
            assert f" up={int(live)}i" in batch[-1]
        proc.stdin.close()  # Telegraf stopping us
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr.read() == ""


@pytest.mark.parametrize("live", [False, pytest.param(True, marks=pytest.mark.integration)])
def test_listen_with_every_standard_stream_closed(request, down, live):
    url = request.getfixturevalue("prefork").status_url if live else down
    port = free_port()
    proc = start(EXPORTER, (0, 1, 2), "--url", url, "--listen", f"127.0.0.1:{port}")

    def accepting() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(accepting, proc, "endpoint did not start")
        # The listening socket (or any file) did not take fd 0, 1 or 2.
        links = [os.readlink(f"/proc/{proc.pid}/fd/{n}") for n in (0, 1, 2)]
        assert links == ["/dev/null"] * 3
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            body = r.read().decode()
        assert f"apache_up {1 if live else 0}" in body.splitlines()
    finally:
        status, err = stop(proc)
    assert status == 0 and err == ""


def test_watch_with_stdout_closed_is_a_usage_error(down):
    proc = run(EXPORTER, (1,), "--url", down, "--watch")
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "--watch needs a terminal" in line


# --- --help, --version: output asked of stdout ---------------------------------------

@pytest.mark.parametrize("cmd", [EXPORTER, REAPER, MANAGER], ids=["exporter", "reaper",
                                                                  "manager"])
@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_to_a_closed_stdout_is_an_output_error(cmd, option):
    proc = run(cmd, (1,), option, env=manager_env())
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert STDOUT_CLOSED in line


def run_to(cmd: Sequence[str], stdout: str, *args: str, env=None) -> subprocess.CompletedProcess:
    """``cmd args`` writing to a failing stdout: ``full`` (/dev/full, every write
    ENOSPC) or ``gone`` (a pipe whose reader left: EPIPE, SIGPIPE ignored as
    under Python and most agents)."""
    if stdout == "full":
        with open("/dev/full", "w") as full:
            return subprocess.run([*cmd, *args], stdin=subprocess.DEVNULL, stdout=full,
                                  stderr=subprocess.PIPE, text=True, timeout=60,
                                  env=env if env is not None else exporter_env())
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([*cmd, *args], stdin=subprocess.DEVNULL, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60,
                              env=env if env is not None else exporter_env())
    finally:
        os.close(write)


@pytest.mark.parametrize("stdout", ["full", "gone"])
@pytest.mark.parametrize("cmd", [EXPORTER, REAPER, MANAGER], ids=["exporter", "reaper",
                                                                  "manager"])
@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_to_a_failing_stdout_is_an_output_error(cmd, option, stdout):
    # It was "cannot read config file None: No space left on device", exit
    # 2 (the failed write taken for an unreadable config file), and a
    # traceback from apache-manager.
    proc = run_to(cmd, stdout, option, env=manager_env())
    assert proc.returncode == 1, proc.stderr
    (line,) = error_lines(proc)
    assert "cannot write to standard output: " in line and "config file" not in line


@pytest.mark.parametrize("stdout", ["full", "gone"])
def test_check_to_a_failing_stdout_is_one_line_and_status_1(down, stdout):
    # --check's report went out line by line with no guard: a traceback.
    proc = run_to(EXPORTER, stdout, "--url", down, "--check")
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert "cannot write to standard output: " in line


@pytest.mark.parametrize("cmd", [EXPORTER, REAPER, MANAGER], ids=["exporter", "reaper",
                                                                  "manager"])
def test_help_with_stdin_and_stderr_closed(cmd):
    proc = run(cmd, (0, 2), "--help", env=manager_env())
    assert proc.returncode == 0 and "--url" in proc.stdout


def test_usage_error_with_stderr_closed_is_still_status_2():
    proc = run(EXPORTER, (2,), "--timeout", "soon")
    assert proc.returncode == 2 and proc.stdout == ""


# --- apache-worker-reaper ------------------------------------------------------------

@pytest.mark.parametrize("closed", [(0,), (1,), (2,), (0, 1, 2)])
def test_reaper_during_an_outage(down, tmp_path, closed):
    state = tmp_path / "state.json"
    proc = run(REAPER, closed, "--url", down, "--max-time", "5m", "--state-file", str(state))
    assert proc.returncode == 0
    assert proc.stdout == ""
    if 2 in closed:
        assert proc.stderr == ""
    else:
        assert "signalling nothing" in error_lines(proc)[-1]


@pytest.mark.integration
@pytest.mark.parametrize("closed", [(1,), (0, 1, 2)])
def test_reaper_dry_run_on_a_live_apache(prefork, tmp_path, closed):
    state = tmp_path / "state.json"
    proc = run(REAPER, closed, "--url", prefork.status_url, "--max-time", "1h", "--dry-run",
               "--state-file", str(state))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(state.read_text())["last_dry_run"]["dry_run"] is True


# --- apache-manager ---------------------------------------------------------------------

def test_manager_printing_to_a_closed_stdout_exits_1(down, tmp_path):
    proc = run(MANAGER, (1,), "-c", "-f", "-", "--url", down, "--state-file",
               str(tmp_path / "state.json"), env=manager_env())
    assert proc.returncode == 1
    (line,) = error_lines(proc)
    assert STDOUT_CLOSED in line


@pytest.mark.parametrize("closed", [(1,), (2,), (0, 1, 2)])
def test_manager_metrics_file_during_an_outage(down, tmp_path, closed):
    out = tmp_path / "apache-manager.txt"
    proc = run(MANAGER, closed, "-c", "-f", str(out), "--url", down, "--state-file",
               str(tmp_path / "state.json"), env=manager_env())
    assert proc.returncode == 0, proc.stderr
    _written(out, up=False)


@pytest.mark.integration
def test_manager_metrics_file_from_a_live_apache_all_closed(prefork, tmp_path):
    out = tmp_path / "apache-manager.txt"
    proc = run(MANAGER, (0, 1, 2), "-c", "-f", str(out), "--url", prefork.status_url,
               "--state-file", str(tmp_path / "state.json"), env=manager_env())
    assert proc.returncode == 0
    assert parse_tab(out.read_text())["status-response"] == "0"
