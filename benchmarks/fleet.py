"""A /probe fleet: one --listen process probed for 1,000 targets by a real Prometheus.

The multi-target pattern of blackbox_exporter and apache_exporter: one
exporter, and a scrape job whose targets are the status URLs, relabelled so
that Prometheus asks ``/probe?target=URL`` of the exporter (``__address__``
-> ``__param_target`` -> ``instance``, the exporter's address as
``__address__``). Debian's ``prometheus`` scrapes 1,000 page servers
(pageserver.py, captured real pages) through one ``--listen`` process every
INTERVAL seconds; once every target has answered ``apache_up 1``, the
exporter's CPU is measured over WINDOW seconds and divided by the probes
Prometheus made in them (``count_over_time(apache_up[WINDOW])``).

In the benchmark's private network namespace the page servers listen on
198.18.0.1 (RFC 2544's benchmarking range, added to the namespace's ``lo``):
by address that is not loopback, so the targets are remote ones, as a fleet's
are, and cost no socket-table or /proc work. In the host's namespace they
are on 127.0.0.1 (local targets: each probe proves its listener's owner).
Everything started here is stopped in ``finally`` blocks; nothing listens
beyond loopback or the private namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from measure import Failed, Targets, one_line, proc_cpu, stop_group
from pageserver import PageServers
from scrape import HttpExporter

from tests.harness.apache import free_port

PROMETHEUS = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")
TARGETS = 1000
INTERVAL = 10  # seconds between two probes of one target
WINDOW = 30  # seconds measured
FLEET_ADDRESS = "198.18.0.1"
PER_PROBE_MS = 3.0  # the target: CPU per probe


def fleet_host(private: bool) -> str:
    """Where the page servers listen: a non-loopback address of the private
    namespace's lo when there is one, else 127.0.0.1."""
    if not private or not shutil.which("ip"):
        return "127.0.0.1"
    proc = subprocess.run(["ip", "addr", "add", f"{FLEET_ADDRESS}/32", "dev", "lo"],
                          capture_output=True, text=True)
    # Added before (the batches of section 6 ask first): iproute2 says "File
    # exists" or, in Debian 12's, "Address already assigned".
    if proc.returncode != 0 and not any(
            said in proc.stderr for said in ("File exists", "already assigned")):
        return "127.0.0.1"
    return FLEET_ADDRESS


def scrape_config(urls: list, exporter: str) -> dict:
    return {
        "global": {"scrape_interval": f"{INTERVAL}s", "scrape_timeout": "5s"},
        "scrape_configs": [{
            "job_name": "fleet",
            "metrics_path": "/probe",
            "static_configs": [{"targets": urls}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": exporter},
            ],
        }],
    }


class Prometheus:
    """Debian's prometheus on a free loopback port, its storage in ``tmp``."""

    def __init__(self, config: dict, tmp: Path) -> None:
        self.port = free_port()
        (tmp / "prometheus.yml").write_text(json.dumps(config))
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc: Optional[subprocess.Popen] = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                            timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise Failed(f"prometheus did not start: {self.why(tmp)}")
            time.sleep(0.2)

    @staticmethod
    def why(tmp: Path) -> str:
        return one_line((tmp / "prometheus.log").read_text(errors="replace"))

    def query(self, expr: str, at: Optional[float] = None) -> float:
        """The one value of an instant query (0 when it has none)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"http://127.0.0.1:{self.port}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                result = json.load(answer)["data"]["result"]
        except (OSError, ValueError, KeyError) as exc:
            raise Failed(f"prometheus query {expr!r}: {one_line(str(exc))}") from None
        return float(result[0]["value"][1]) if result else 0.0

    def close(self) -> None:
        if self.proc is None:
            return
        stop_group(self.proc, 10)
        self.proc = None
        self.log.close()


def run(root: Path, script: str, env: dict, targets: Targets, private: bool,
        count: int = TARGETS) -> None:
    data = root / "tests" / "data"
    host = fleet_host(private)
    kind = "remote (not loopback)" if host != "127.0.0.1" else "local (loopback)"
    print(f"\n7. a /probe fleet: {count} targets on {host}, {kind}, probed every {INTERVAL} s "
          f"through one --listen by Prometheus; CPU over {WINDOW} s", flush=True)
    text = f"/probe fleet of {count}: ours --listen CPU ms per probe"
    if not os.access(PROMETHEUS, os.X_OK):
        targets.not_measured(text, PER_PROBE_MS, f"{PROMETHEUS} is not installed")
        return
    exporter = prometheus = None
    try:
        with tempfile.TemporaryDirectory() as tmp, \
                PageServers(data / "2.4.71-event-ext-on.auto.txt",
                            data / "2.4.71-event-ext-on.html", pages=count, silent=0,
                            host=host) as servers:
            port = free_port()
            exporter = HttpExporter(
                "ours --listen", [script, "--url", servers.urls[0], "--listen",
                                  f"127.0.0.1:{port}", "--timeout", "5", "--probe-allow",
                                  f"http://{host}:*/server-status"],
                port, b"\napache_up 1", env=env)
            prometheus = Prometheus(scrape_config(servers.urls, f"127.0.0.1:{port}"),
                                    Path(tmp))
            # Every target scraped once (a full round), then the window; how
            # many answered apache_up 1 is counted at its end.
            deadline = time.monotonic() + 3 * INTERVAL + 30
            seen = 0.0
            while seen < count and time.monotonic() < deadline:
                time.sleep(1)
                seen = prometheus.query('count(up{job="fleet"})')
            if seen < count:
                raise Failed(f"only {seen:.0f} of {count} targets scraped after "
                             f"{3 * INTERVAL + 30} s: {exporter.why()}")
            cpu0, t0 = proc_cpu(exporter.pid), time.time()
            time.sleep(WINDOW)
            cpu1, t1 = proc_cpu(exporter.pid), time.time()
            time.sleep(1)  # the last scrapes' samples are in
            window = f"{int((t1 - t0) * 1000)}ms"  # PromQL durations are whole units
            probes = prometheus.query(
                f'sum(count_over_time(up{{job="fleet"}}[{window}]))', at=t1)
            good = prometheus.query(
                f'sum(sum_over_time(apache_up{{job="fleet"}}[{window}]))', at=t1)
            down = count - prometheus.query('count(apache_up{job="fleet"} == 1)', at=t1)
            took = prometheus.query(
                f'avg(avg_over_time(scrape_duration_seconds{{job="fleet"}}[{window}]))',
                at=t1)
    except Failed as exc:
        print(f"   failed: {exc}")
        targets.check(text, float("inf"), PER_PROBE_MS, False, one_line(str(exc)))
        return
    finally:
        if prometheus is not None:
            prometheus.close()
        if exporter is not None:
            exporter.close()
    per_probe = (cpu1 - cpu0) / probes * 1000 if probes else float("inf")
    print(f"   {probes:.0f} probes in {t1 - t0:.1f} s ({probes / (t1 - t0):.0f}/s), "
          f"{(cpu1 - cpu0) * 1000:.0f} ms CPU: {per_probe:.2f} ms per probe, "
          f"{(cpu1 - cpu0) / (t1 - t0) * 100:.0f}% of one CPU; scrape duration "
          f"{took * 1000:.1f} ms on average; {good:.0f} probes read their target, "
          f"{down:.0f} targets down at the end")
    targets.check(text, per_probe, PER_PROBE_MS, False,
                  f"{kind} targets, {probes:.0f} probes, {good:.0f} with apache_up 1")
    targets.check(f"/probe fleet of {count}: probes that read their target (%)",
                  good / probes * 100 if probes else 0.0, 99.0, True)
