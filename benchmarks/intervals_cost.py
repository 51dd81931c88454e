"""CPU per collection cycle with and without the interval figures (issue 20).

In process, on two 2,000-row worker tables (80 prefork-like process slots of
25 threads; every slot's count grows between them, as under load): parse both
pages and build the snapshot (what every cycle does), then the same plus the
comparison with the previous reading held in memory (restarts.track with a
Memory: slot table, per-slot deltas, histogram, rates), and plus the one-shot
path's state file (load, compare, save). Prints milliseconds of CPU per cycle.

    .venv/bin/python benchmarks/intervals_cost.py [--cycles N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apache_metrics_exporter import restarts  # noqa: E402
from apache_metrics_exporter.collect.processes import EMPTY_SCAN  # noqa: E402
from apache_metrics_exporter.collect.snapshot import build  # noqa: E402
from apache_metrics_exporter.collect.status import parse_auto, parse_html  # noqa: E402

ROWS = 2000
URL = "http://127.0.0.1:8080/server-status"
HEAD = ("<html><head><title>Apache Status</title></head><body><h1>Apache Server Status</h1>"
        "<table border=\"0\"><tr><th>Srv</th><th>PID</th><th>Acc</th><th>M</th><th>CPU\n"
        "</th><th>SS</th><th>Req</th><th>Dur</th><th>Conn</th><th>Child</th><th>Slot</th>"
        "<th>Client</th><th>Protocol</th><th>VHost</th><th>Request</th></tr>\n")


def page(step: int) -> bytes:
    rows = []
    for i in range(ROWS):
        count = 1000 + i + step * (1 + i % 3)
        cells = [f"<b>{i // 25}-0</b>", str(1000 + i // 25), f"0/{count}/{count}",
                 "_" if i % 4 else "W", "0.01", "1", str(5 + i % 700),
                 str(count * 40), "0.0", "0.00", "0.00", f"10.0.0.{i % 250}",
                 "http/1.1", f"site{i % 30}.example:80", "GET /page HTTP/1.1"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>\n")
    return (HEAD + "".join(rows) + "</table></body></html>").encode()


def auto(step: int, at: float) -> str:
    return (f"127.0.0.1\nServerVersion: Apache/2.4.71 (Debian)\nServerMPM: worker\n"
            f"ParentServerConfigGeneration: 1\nParentServerMPMGeneration: 0\n"
            f"ServerUptimeSeconds: {int(at)}\nTotal Accesses: {1000000 + step * 4000}\n"
            f"Total kBytes: {500000 + step * 100}\nTotal Duration: {step * 80000}\n"
            f"Uptime: {int(at)}\nBusyWorkers: 500\nIdleWorkers: 1500\nScoreboard: "
            + "_" * 2000 + "\n")


def cycle(step: int, pages, track=None) -> None:
    at = 1000.0 + step * 10
    snap = build(URL, 1.7e9 + at, parse_auto(auto(step, at)), parse_html(pages[step % 2]).workers,
                 None, EMPTY_SCAN)
    if track is not None:
        track(snap)


def measure(cycles: int, pages, track=None) -> float:
    cycle(0, pages, track)
    t0 = time.process_time()
    for step in range(1, cycles + 1):
        cycle(step, pages, track)
    return (time.process_time() - t0) / cycles * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=50)
    cycles = parser.parse_args().cycles
    pages = [page(0), page(1)]
    base = measure(cycles, pages)
    memory = restarts.Memory()
    loop = measure(cycles, pages, lambda s: restarts.track([s], None, memory=memory))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "collector-state.json")
        oneshot = measure(cycles, pages, lambda s: restarts.track([s], path))
        size = os.path.getsize(path)
    print(f"{ROWS} rows, {cycles} cycles, CPU ms per cycle:")
    print(f"  parse + build (no interval figures)      {base:7.2f}")
    print(f"  + interval figures, memory (loops)       {loop:7.2f}  (+{loop - base:.2f})")
    print(f"  + interval figures, state file (one-shot) {oneshot:6.2f}  (+{oneshot - base:.2f})")
    print(f"  state file with the slot table: {size} bytes")


if __name__ == "__main__":
    main()
