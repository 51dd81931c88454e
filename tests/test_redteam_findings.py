"""Red-team re-run of issue 19 against main: failures that remain.

Each test documents one bug as ``xfail(strict=True)``: it fails today and
will XPASS (and so fail the suite, to be unmarked) once the bug is fixed.
Everything runs on loopback and in temporary directories; nothing here
resolves a name.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.conftest import run_exporter

DOWN = "http://127.0.0.1:1/server-status"  # refused: an outage, no Apache needed


def _untrusted_config(tmp_path) -> str:
    """A config file anyone could have written (mode 0666)."""
    path = tmp_path / "evil.conf"
    path.write_text(f"url = {DOWN}\n")
    path.chmod(0o666)
    return str(path)


@pytest.mark.xfail(strict=True, reason=(
    "config._check_config_files only sees '-c PATH', '--config PATH' and "
    "'--config=PATH': the attached '-cPATH' form (argparse accepts it) is read by "
    "configargparse without the trust check"))
def test_attached_short_config_option_is_trust_checked(tmp_path):
    evil = _untrusted_config(tmp_path)
    result = run_exporter(f"-c{evil}", "--format", "tab", timeout=30)
    assert result.returncode == 2, result.stderr
    assert "writable by others" in result.stderr


@pytest.mark.xfail(strict=True, reason=(
    "grouped short options ('-vc PATH') bypass the trust check too: a FIFO as the "
    "config file blocks the run for ever"))
def test_grouped_short_config_option_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    try:
        result = run_exporter("-vc", str(fifo), "--url", DOWN, "--format", "tab",
                              timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the run blocked on a FIFO given as '-vc FIFO'")
    assert result.returncode == 2 and "FIFO" in result.stderr


class _BusyInflux(BaseHTTPRequestHandler):
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


@pytest.mark.xfail(strict=True, reason=(
    "push/client._kind: 503 (with Retry-After: the server asks to come back later) "
    "is FAILING, not TRANSIENT; a spooled batch that meets the busy moment three "
    "times while the run's own batch goes is quarantined for good - valid data "
    "never retried"))
def test_503_retry_after_never_quarantines_good_data(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _BusyInflux)
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
