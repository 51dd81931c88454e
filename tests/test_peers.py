"""Side by side with the real peers on the same private Apache.

collectd's own apache plugin runs beside our Exec plugin in one collectd:
every value it writes must be in ours under the same type and type instance,
equal within what the time between the two reads can change.

Debian's prometheus-apache-exporter (apache_exporter 0.12) scrapes the same
server as our --format prometheus: every series it emits (its build info and
Go runtime aside) must be in ours with the same name and labels, and the same
value where the value cannot move between the two reads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import prom_series, run_exporter
from tests.harness.apache import ApacheServer, free_port
from tests.harness.apache_exporter import flags
from tests.harness.servers import Collectd

APACHE_EXPORTER = shutil.which("prometheus-apache-exporter")

# Series that move between two reads: the second read (ours) is itself a
# request, and time passes. Counters: ours >= theirs, and close; gauges: close.
MOVING = ("apache_accesses_total", "apache_sent_kilobytes_total", "apache_duration_ms_total",
          "apache_cpu_time_ms_total", "apache_cpuload", "apache_uptime_seconds_total",
          "apache_load", "apache_scoreboard", "apache_workers")


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
        [APACHE_EXPORTER, f"{flags(APACHE_EXPORTER)['listen']}=127.0.0.1:{port}",
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
                    theirs = prom_series(r.read().decode())
                break
            except OSError:
                assert peer.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        proc = run_exporter("--url", proxy_apache.status_url, "--format", "prometheus",
                            "--prometheus-naming", naming)
        assert proc.returncode == 0, proc.stderr
        ours = prom_series(proc.stdout)
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
        elif family == "apache_cpuload":
            # CPU seconds / uptime in %: on a server a second or two old one
            # more tick of CPU between the two scrapes moves it by several points
            slack = max(2, value * 0.1, 100 * 0.2 / max(1, ours["apache_uptime_seconds_total"]))
            assert abs(ours[name] - value) <= slack, (name, value, ours[name])
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


# collectd's own apache plugin, in the same collectd as our Exec plugin.
COLLECTD_APACHE = """LoadPlugin apache
<Plugin apache>
  <Instance "{name}">
    URL "{url}?auto"
  </Instance>
</Plugin>
"""


def _last(rows, at: float):
    """The row of a csv file closest in time to ``at``."""
    return min(rows, key=lambda r: abs(r[0] - at))


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="collectd's Exec needs root to switch users")
@pytest.mark.parametrize("instance", ["main", ""])
def test_every_collectd_apache_plugin_value_is_ours_too(prefork, runnable_copy, instance):
    # Theirs: <Instance "theirs-..."> (or "" in the second run, collectd's
    # v4-compatible layout, where ours runs as --instance "" beside a named one).
    theirs_name = "theirs" if instance else ""
    ours_name = instance if instance else "ours"
    for _ in range(5):
        prefork.get("/daemon")
    daemon = Collectd().start(
        "nobody:nogroup", [str(runnable_copy), "--url", prefork.status_url, "--format",
                           "collectd", "--instance", ours_name],
        interval=1.0, extra=COLLECTD_APACHE.format(name=theirs_name, url=prefork.status_url))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            files = daemon.csv_files()
            theirs = {k.split("/", 1)[1]: v for k, v in files.items()
                      if k.split("/")[0] == ("apache-" + theirs_name if theirs_name
                                             else "apache")}
            ours = {k.split("/", 1)[1]: v for k, v in files.items()
                    if k.split("/")[0] == f"apache-{ours_name}"}
            if len(theirs) >= 15 and all(len(v) >= 3 for v in theirs.values()) \
                    and set(theirs) <= set(ours):
                break
            time.sleep(0.25)
        log = daemon.log()
    finally:
        daemon.stop()
    assert len(theirs) >= 15, (sorted(files), log[-2000:])
    assert set(theirs) <= set(ours), (set(theirs) - set(ours), log[-2000:])
    for name, rows in theirs.items():
        at, value = rows[-1][0], rows[-1][1]
        mine = _last(ours[name], at)
        assert abs(mine[0] - at) <= 1.5, (name, "no value of ours near theirs in time")
        tolerance = {"apache_requests": 10, "apache_bytes": 64 * 1024}.get(name, 2)
        assert abs(mine[1] - value) <= tolerance, (name, value, mine[1])


@pytest.mark.integration
def test_empty_instance_is_collectds_v4_layout(prefork):
    proc = run_exporter("--url", prefork.status_url, "--format", "collectd",
                        "--hostname", "h", "--instance", "")
    assert proc.returncode == 0, proc.stderr
    assert 'PUTVAL "h/apache/apache_requests"' in proc.stdout
