"""Side by side with the real peers on the same private Apache.

Debian's prometheus-apache-exporter (apache_exporter 0.12) scrapes the same
server as our --format prometheus: every series it emits (its build info and
Go runtime aside) must be in ours with the same name and labels, and the same
value where the value cannot move between the two reads.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import run_exporter
from tests.harness.apache import ApacheServer, free_port

APACHE_EXPORTER = shutil.which("prometheus-apache-exporter")

# Series that move between two reads: the second read (ours) is itself a
# request, and time passes. Counters: ours >= theirs, and close; gauges: close.
MOVING = ("apache_accesses_total", "apache_sent_kilobytes_total", "apache_duration_ms_total",
          "apache_cpu_time_ms_total", "apache_cpuload", "apache_uptime_seconds_total",
          "apache_load", "apache_scoreboard", "apache_workers")


def series(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.fixture(scope="module")
def proxy_apache():
    """An event-MPM Apache with mod_ssl's session cache and a balancer."""
    with ApacheServer("event", proxy=True, tls=True) as server:
        yield server


@pytest.mark.integration
@pytest.mark.skipif(not APACHE_EXPORTER, reason="Debian prometheus-apache-exporter missing")
@pytest.mark.parametrize("naming", ["apache_exporter"])
def test_every_apache_exporter_series_is_ours_too(proxy_apache, naming):
    port = free_port()
    peer = subprocess.Popen(
        [APACHE_EXPORTER, f"--telemetry.address=127.0.0.1:{port}",
         f"--scrape_uri={proxy_apache.status_url}?auto"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3):
            proxy_apache.get("/index.html")
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=10) as r:
                    theirs = series(r.read().decode())
                break
            except OSError:
                assert peer.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        proc = run_exporter("--url", proxy_apache.status_url, "--format", "prometheus",
                            "--prometheus-naming", naming)
        assert proc.returncode == 0, proc.stderr
        ours = series(proc.stdout)
    finally:
        peer.terminate()
        peer.wait(10)
    compared = 0
    for name, value in theirs.items():
        family = name.partition("{")[0]
        if family.startswith(("go_", "process_", "promhttp_", "apache_exporter_")):
            continue  # the Go runtime and the peer's own health
        assert name in ours, name
        if family in MOVING and family.endswith("_total"):  # counters only grow
            assert value <= ours[name] <= value + max(50, value * 0.1), (name, value, ours[name])
        elif family in MOVING:
            assert abs(ours[name] - value) <= max(2, value * 0.1), (name, value, ours[name])
        else:
            assert ours[name] == value, (name, value, ours[name])
        compared += 1
    assert compared >= 40  # the balancer, TLS and event-MPM series are in
    # Our extra label values never enter its families (their sums stay equal).
    families = {n.partition("{")[0] for n in theirs}
    extra = [n for n in ours if n.partition("{")[0] in families and n not in theirs]
    assert not extra, extra
