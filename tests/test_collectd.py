"""collectd PUTVAL lines, checked by a real collectd 5.12 running the exporter."""

from __future__ import annotations

import argparse
import os
import time
import urllib.request
from pathlib import Path

import pytest

from apache_metrics_exporter.errors import UsageError
from apache_metrics_exporter.writers import collectd
from tests.conftest import run_exporter
from tests.harness.servers import Collectd
from tests.test_tab import example_snapshot

STATES = ("waiting", "starting", "reading", "sending", "keepalive", "dnslookup", "closing",
          "logging", "finishing", "idle_cleanup", "open")


def settings(**kw):
    base = dict(hostname=None, instance=None, interval=None)
    base.update(kw)
    return argparse.Namespace(**base)


def putvals(text):
    out = {}
    for line in text.splitlines():
        assert line.startswith('PUTVAL "')
        ident, rest = line[len('PUTVAL "'):].split('"', 1)
        out[ident] = rest.strip()
    return out


def test_apache_plugin_types_and_stock_types(monkeypatch):
    monkeypatch.setenv("COLLECTD_HOSTNAME", "web1")
    monkeypatch.setenv("COLLECTD_INTERVAL", "10.000")
    lines = putvals(collectd.render([example_snapshot()], settings()))
    p = "web1/apache-x_80/"
    assert lines[p + "apache_requests"] == "interval=10.000 0.000:3"
    assert lines[p + "apache_bytes"] == "interval=10.000 0.000:6144"
    assert lines[p + "apache_connections"].endswith(":1")
    assert lines[p + "apache_idle_workers"].endswith(":74")
    for state in STATES:
        assert p + f"apache_scoreboard-{state}" in lines
    assert lines[p + "apache_scoreboard-waiting"].endswith(":76")
    assert lines[p + "memory-native_max"].endswith(":12677120")
    assert lines[p + "count-processes_example"].endswith(":2")
    assert lines[p + "gauge-up"].endswith(":1")
    types_db = Path("/usr/share/collectd/types.db")
    if types_db.exists():
        known = {ln.split()[0] for ln in types_db.read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")}
        for ident in lines:
            assert ident.split("/")[2].split("-")[0] in known, ident


def test_derive_values_are_plain_integers():
    text = collectd.render([example_snapshot()], settings(hostname="h"))
    for line in text.splitlines():
        ident = line.split('"')[1]
        value = line.rsplit(":", 1)[1]
        if ident.split("/")[2].split("-")[0] in collectd.DERIVE_TYPES:
            assert value.isdigit() and (value == "0" or not value.startswith("0")), line
        assert len(line) < 1200


def test_hostname_order(monkeypatch):
    monkeypatch.delenv("COLLECTD_HOSTNAME", raising=False)
    assert collectd.hostname(settings(hostname="given")) == "given"
    monkeypatch.setenv("COLLECTD_HOSTNAME", "fromenv")
    assert collectd.hostname(settings(hostname="given")) == "fromenv"


def test_instances_per_target():
    urls = ["http://127.0.0.1:80/server-status", "http://[::1]:8080/server-status"]
    assert collectd.instances(settings(), urls) == ["127.0.0.1_80", "ipv6__1_8080"]
    assert collectd.instances(settings(instance=["a", "b"]), urls) == ["a", "b"]
    with pytest.raises(UsageError, match="give one per URL"):
        collectd.instances(settings(instance=["a"]), urls)
    with pytest.raises(UsageError, match="share"):
        collectd.instances(settings(instance=["a", "a"]), urls)


def test_sanitize():
    assert collectd.sanitize("balancer://app") == "balancer_app"
    assert collectd.sanitize("a" * 200) == "a" * 63
    assert collectd.sanitize("///") == "unknown"


# --- real collectd ----------------------------------------------------------



@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="collectd's Exec needs root to switch users")
def test_real_collectd_exec_plugin(prefork, runnable_copy):
    for _ in range(5):
        prefork.get("/daemon")
    daemon = Collectd().start("nobody:nogroup", [str(runnable_copy), "--url",
                              prefork.status_url, "--format", "collectd", "--pid-file",
                              str(prefork.pid_file)], interval=1.0)
    try:
        want = {f"apache-127.0.0.1_{prefork.port}/{t}" for t in (
            "apache_requests", "apache_bytes", "apache_connections", "apache_idle_workers",
            "memory-native_max", "memory-example_median", "count-processes_example",
            "gauge-up", "uptime", "load", "count-workers_hanging")}
        want |= {f"apache-127.0.0.1_{prefork.port}/apache_scoreboard-{s}" for s in STATES}
        deadline = time.monotonic() + 20
        files = {}
        while time.monotonic() < deadline:
            files = daemon.csv_files()
            if want <= set(files) and all(len(files[w]) >= 3 for w in want):
                break
            time.sleep(0.25)
        stdout = daemon.stdout.read_text()
        log = daemon.log()
    finally:
        daemon.stop()
    missing = want - set(files)
    assert not missing, (missing, log[-2000:])
    assert all(len(files[w]) >= 3 for w in want), "fewer than 3 intervals written"
    assert "-1" not in stdout.split(), stdout  # PUTVAL errors show on collectd's stdout
    assert "Cowardly" not in log
    with urllib.request.urlopen(prefork.status_url + "?auto") as r:
        auto = dict(x.split(": ", 1) for x in r.read().decode().splitlines() if ": " in x)
    base = f"apache-127.0.0.1_{prefork.port}/"
    requests = files[base + "apache_requests"]
    assert requests[-1][1] <= int(auto["Total Accesses"])
    assert requests[-1][1] >= requests[0][1]  # a counter: never going down
    slots = len(auto["Scoreboard"])
    last = [files[base + f"apache_scoreboard-{s}"][-1][1] for s in STATES]
    assert sum(last) == slots
    assert files[base + "gauge-up"][-1][1] == 1.0
    assert files[base + "count-processes_example"][-1][1] == 2.0


@pytest.mark.integration
def test_cli_collectd_format_two_targets(prefork, event):
    proc = run_exporter("--url", prefork.status_url, "--url", event.status_url,
                        "--format", "collectd", "--hostname", "h1")
    assert proc.returncode == 0, proc.stderr
    idents = putvals(proc.stdout)
    assert f"h1/apache-127.0.0.1_{prefork.port}/apache_requests" in idents
    assert f"h1/apache-127.0.0.1_{event.port}/apache_requests" in idents
    assert f"h1/apache-127.0.0.1_{event.port}/current_connections-total" in idents


def test_values_collectd_cannot_read_are_left_out(monkeypatch):
    from apache_metrics_exporter.catalogue import BY_NAME
    from apache_metrics_exporter.collect.snapshot import Sample

    monkeypatch.setenv("COLLECTD_INTERVAL", "nan")  # no interval=nan option
    snap = example_snapshot()
    snap.samples[:] = [Sample(BY_NAME["tls_cache_store_count"], 2 ** 63),
                       Sample(BY_NAME["cpu_user_seconds"], 1e306),  # DERIVE ms > int64
                       Sample(BY_NAME["cpu_load"], float("nan")),
                       Sample(BY_NAME["total_accesses"], 2 ** 63 - 1),
                       Sample(BY_NAME["total_accesses"], 5)]  # a second one: the first wins
    lines = putvals(collectd.render([snap], settings(hostname="h")))
    assert lines == {"h/apache-x_80/apache_requests": f"0.000:{2 ** 63 - 1}"}
