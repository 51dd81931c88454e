"""`make demo`: a throwaway Apache on a loopback port, some traffic, the exporter.

Starts a private Apache httpd (its own ServerRoot in a temp dir, a free port on
127.0.0.1, mod_status and mod_wsgi), sends requests to native and mod_wsgi
daemon workers, runs apache-metrics-exporter in every output format, and stops
Apache again. Nothing of the machine's own Apache is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tests.harness.apache import ApacheServer  # noqa: E402
from tests.harness.servers import VictoriaMetrics  # noqa: E402

EXPORTER = os.path.join(os.path.dirname(sys.executable), "apache-metrics-exporter")
REAPER = os.path.join(os.path.dirname(sys.executable), "apache-worker-reaper")


def bold(text: str) -> str:
    """Bold on a terminal; plain when redirected to a file or a pipe (or NO_COLOR)."""
    try:
        terminal = sys.stdout.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if terminal and os.environ.get("TERM", "dumb") != "dumb" and "NO_COLOR" not in os.environ:
        return f"\033[1m{text}\033[0m"
    return text


def banner(text: str) -> None:
    print("\n" + bold(f"==> {text}"), flush=True)


def run(*args: str) -> None:
    run_cmd(EXPORTER, *args)


def run_cmd(*cmd: str) -> None:
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    for line in proc.stderr.splitlines():
        sys.stdout.write("[stderr] " + line + "\n")
    print(f"[exit status {proc.returncode}]", flush=True)


def main() -> int:
    # The files the commands keep between runs go to a throwaway directory:
    # the demo never writes the machine's /var/lib/apache-metrics-exporter.
    keep = tempfile.mkdtemp(prefix="ame-demo-state-")
    os.environ.update({"APACHE_METRICS_COLLECTOR_STATE": f"{keep}/collector-state.json",
                       "APACHE_METRICS_STATE_FILE": f"{keep}/reaper-state.json",
                       "APACHE_METRICS_SPOOL_DIR": f"{keep}/spool"})
    try:
        return _demo()
    finally:
        shutil.rmtree(keep, ignore_errors=True)


def _demo() -> int:
    mpm = os.environ.get("DEMO_MPM", "event")
    banner(f"starting a private Apache ({mpm} MPM) on 127.0.0.1")
    with ApacheServer(mpm) as apache:
        print(f"listening on {apache.base_url}, ServerRoot {apache.root}")
        banner("sending traffic: static, embedded WSGI, two mod_wsgi daemon groups")
        for _ in range(5):
            for path in ("/index.html", "/embedded", "/daemon", "/long"):
                apache.get(path)
        slow = threading.Thread(target=apache.get, args=("/embedded?sleep=3",), daemon=True)
        slow.start()
        time.sleep(0.5)  # let the slow request reach its worker

        banner("tab format (apache-manager's metrics file) on stdout")
        run("--url", apache.status_url)

        banner("the human summary (the default on a terminal)")
        run("--url", apache.status_url, "--format", "text")

        banner("Zabbix low-level discovery and the Prometheus textfile format")
        run("--url", apache.status_url, "--zabbix-discovery")
        run("--url", apache.status_url, "--format", "prometheus", "--no-processes")

        banner("influx format (Telegraf inputs.exec / execd, InfluxDB /write)")
        run("--url", apache.status_url, "--format", "influx")

        banner("collectd format (collectd's Exec plugin)")
        run("--url", apache.status_url, "--format", "collectd", "--hostname", "demo")

        banner("influxdb format: push to a throwaway VictoriaMetrics (/api/v2/write)")
        with VictoriaMetrics() as vm, tempfile.TemporaryDirectory() as spool:
            run("--url", apache.status_url, "--format", "influxdb", "--influxdb-url", vm.url,
                "--influxdb-org", "demo", "--influxdb-bucket", "demo", "--influxdb-token",
                "demo", "--spool-dir", spool)
            for series in vm.export('{__name__=~"apache_(BusyWorkers|exporter_up)"}', 2):
                print(f"read back: {series['metric']['__name__']} = {series['values']}")

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "apache-manager.txt")
            banner(f"the same, written atomically to {path}")
            run("--url", apache.status_url, "--output", path)
            print(f"$ head -12 {path}")
            with open(path) as fh:
                print("".join(fh.readlines()[:12]), end="")
        slow.join()

        banner("reaper dry run: which workers would go at a 1 MiB limit (nothing is killed)")
        with tempfile.TemporaryDirectory() as tmp:
            state = os.path.join(tmp, "reaper-state.json")
            run_cmd(REAPER, "--url", apache.status_url, "--max-memory-idle", "1M",
                    "--max-memory-wsgi", "1M", "--max-kills", "50", "--dry-run",
                    "--state-file", state)
            banner("the exporter reports the reaper's counters from its state file")
            run("--url", apache.status_url, "--state-file", state, "--no-processes")

        banner("Apache answering 403: still a complete file, status-response 1")
        run("--url", apache.base_url + "/denied-status", "--no-processes")
    banner("Apache stopped: status-response 1, one clear line on stderr")
    run("--url", apache.status_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
