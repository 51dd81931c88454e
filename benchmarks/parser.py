"""The worker-table parser alone, in-process: µs per row at 64, 1,024 and 4,096 rows.

    .venv/bin/python benchmarks/parser.py [--rounds N] [--rows 64,1024,4096]

The pages are run.py's section 2 pages (a captured 2.4.71 event-MPM page, its
rows repeated and varied). Measured in interleaved rounds, so that a busy
machine weighs on every contender alike, and printed as the minimum and the
median over all runs, per row:

- ``parse``: ``parse_html(page).workers``, what run.py's section 2 times;
- ``+ read``: the same, then what the collector reads of every row (PID,
  mode, SS, busy or not) and the request and virtual host of the busy ones,
  so that work moved from the parse to the first read is counted too;
- ``reference``: the same two with the parser as it was before issue 23
  (tests/status_reference.py).

Target: ``parse`` and ``+ read`` at most 1 µs per row at every size. Nothing
here runs under pytest: the exit status is 1 if a minimum misses the target.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apache_metrics_exporter.collect.status import parse_html  # noqa: E402
from tests import status_reference  # noqa: E402

TARGET_US = 1.0


def vary_rows(page: bytes, rows: int) -> bytes:
    """run.py's generated page (imported late: run.py imports the harness)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import vary_rows as vary

    return vary(page, rows)


def read(workers) -> int:
    """What the collector reads of the rows (collect/snapshot.py, writers)."""
    seen = 0
    for row in workers:
        if row.pid and row.mode != "." and row.ss is not None:
            seen += 1
        if row.is_active:
            seen += len(row.request) + len(row.vhost)
    return seen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (15)")
    ap.add_argument("--rows", default="64,1024,4096", help="table sizes (64,1024,4096)")
    opts = ap.parse_args()
    real = (ROOT / "tests" / "data" / "2.4.71-event-ext-on.html").read_bytes()
    sizes = [int(n) for n in opts.rows.split(",")]
    pages = {n: vary_rows(real, n) for n in sizes}
    contenders = {
        "parse": lambda page: parse_html(page).workers,
        "+ read": lambda page: read(parse_html(page).workers),
        "reference parse": lambda page: status_reference.parse_html(page).workers,
        "reference + read": lambda page: read(status_reference.parse_html(page).workers),
    }
    for n, page in pages.items():  # same rows from both parsers, and warm caches
        assert len(parse_html(page).workers or ()) == n
        assert read(parse_html(page).workers) == read(status_reference.parse_html(page).workers)
    times: dict = {}
    for _ in range(opts.rounds):
        for n, page in pages.items():
            runs = max(1, 4096 // n)  # about as many rows per size in each round
            for name, fn in contenders.items():
                for _ in range(runs):
                    start = time.perf_counter()
                    fn(page)
                    times.setdefault((n, name), []).append(time.perf_counter() - start)
    print(f"worker-table parsing, µs per row (min / median of {opts.rounds} interleaved "
          "rounds)")
    print(f"   {'rows':>5} {'parse':>15} {'+ read':>15} {'reference parse':>17} "
          f"{'reference + read':>17} {'speed-up':>9}")
    failed = 0
    for n in sizes:
        cells = []
        for name in contenders:
            got = times[(n, name)]
            cells.append((min(got) / n * 1e6, statistics.median(got) / n * 1e6))
        failed += sum(1 for low, _med in cells[:2] if low > TARGET_US)
        print(f"   {n:5} " + " ".join(f"{low:7.2f} / {med:5.2f}" for low, med in cells[:2])
              + " " + " ".join(f"{low:8.2f} / {med:5.2f}" for low, med in cells[2:])
              + f" {cells[2][0] / cells[0][0]:8.1f}x")
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, "
          f"load average {open('/proc/loadavg').read().split()[0]}")
    print(f"target: parse and + read at most {TARGET_US:.0f} µs per row (minimum): "
          + ("PASS" if not failed else f"FAIL ({failed} over)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
