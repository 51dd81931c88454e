"""Batches of targets: one run of the command collecting 1, 10, 100 or 1,000 targets.

The targets are the live private Apache plus page servers that serve a
captured real page (tests/data, event MPM, ExtendedStatus On) and, for the
runs "with 2 silent", two targets that accept the connection and never
answer a byte. Targets are collected concurrently, each under one --timeout
for its whole fetch, so a batch with silent targets should end about one
--timeout after it started, whatever the number of targets.

The page servers are measured twice:

- **remote**: on a non-loopback address of the private namespace's lo (as the
  /probe fleet is): what a batch of many targets is in practice, Apaches on
  other hosts. A remote target needs no proof: no socket table, no /proc.
  The targets for the CPU per added target are checked here.
- **local**: on 127.0.0.1, so every target is a local one whose listener is
  not Apache's: its proof reads the socket table and, to name the listener's
  owner in the warning, walks every process's descriptors once per batch
  (collect/host.py; bounded by OWNER_WALK_SECONDS). That walk is a one-time
  cost of the batch, not of a target; here it reads the page servers' own
  thousand sockets, so it weighs on the 1->10 step only. Reported, and
  checked from 10 targets on.

The CPU per added target is reported for each step (1->10, 10->100,
100->1000): constant when the batch is linear. Without a private namespace
(or without `ip`) only the local measurement is made, and checked as before.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List

import scrape
from fleet import fleet_host
from measure import Command, Targets, interleaved_medians, one_line
from pageserver import PageServers

# (targets, of which silent); the runs with silent targets take about one
# --timeout each, so they are repeated fewer times.
CONFIGS = [(1, 0), (10, 0), (10, 2), (100, 0), (100, 2), (1000, 0)]
TIMEOUT = 2.0
MARGIN = 0.5  # the target: a batch ends within --timeout + MARGIN
PER_TARGET_MS = 3.0  # the target: CPU per added target at every step


def urls_for(apache_url: str, pages: List[str], silent: List[str], n: int, s: int) -> List[str]:
    """The live Apache first, then page servers, the silent ones in the middle."""
    urls = [apache_url] + pages[:n - 1 - s]
    middle = len(urls) // 2
    return urls[:middle] + silent[:s] + urls[middle:]


REMOTE_CONFIGS = [(n, 0) for n, s in CONFIGS if not s]


def _measure(data: Path, script: str, apache_url: str, env: dict, configs: List[tuple],
             runs: int, silent_runs: int, host: str) -> tuple:
    """(rows, commands, problems) of the batches ``configs`` with page servers on ``host``."""
    with PageServers(data / "2.4.71-event-ext-on.auto.txt", data / "2.4.71-event-ext-on.html",
                     pages=max(n for n, _ in configs) - 1, silent=2, host=host) as servers:
        commands, problems = {}, {}
        for n, s in configs:
            urls = urls_for(apache_url, servers.urls, servers.silent_urls, n, s)
            argv = [script, *[a for u in urls for a in ("--url", u)], "--format", "influx",
                    "--timeout", f"{TIMEOUT:g}"]
            name = (n, s)
            commands[name] = Command(argv, silent_runs if s else runs, env)
            # Once, not measured: every target is reported, the silent ones down.
            out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
            ups = [ln for ln in out.stdout.splitlines() if ln.startswith("apache_exporter,")]
            up = sum(1 for ln in ups if "up=1i" in ln)
            if out.returncode != 0 or len(ups) != n or up != n - s:
                problems[name] = (f"exit {out.returncode}, {len(ups)} targets reported, "
                                  f"{up} up: {one_line(out.stderr)}")
        rows = interleaved_medians(commands, max(runs, silent_runs))
    return rows, commands, problems


def _table(title: str, rows: dict, commands: dict, problems: dict) -> None:
    print(f"   {title}")
    print(f"   {'targets':>7} {'silent':>6} {'wall ms':>8} {'cpu ms':>8} {'RSS MiB':>8} "
          f"{'cpu ms/target':>13}")
    base = rows[(1, 0)]
    for (n, s), row in rows.items():
        note = row.note(commands[(n, s)].runs)
        if (n, s) in problems:
            note = f"wrong output: {problems[(n, s)]} {note}"
        if row.failed:
            print(f"   {n:7} {s:6} {note}")
            continue
        marginal = (row.cpu - base.cpu) / (n - 1) * 1000 if n > 1 else float("nan")
        shown = f"{marginal:13.2f}" if n > 1 else f"{'':>13}"
        print(f"   {n:7} {s:6} {row.wall * 1000:8.1f} {row.cpu * 1000:8.1f} "
              f"{row.rss / 1024:8.1f} {shown}  {note}".rstrip())


def _steps(kind: str, rows: dict, problems: dict, targets: Targets,
           checked: tuple = ((1, 10), (10, 100), (100, 1000))) -> dict:
    """CPU ms per added target at each step; the ``checked`` steps are targets,
    the others printed only."""
    steps = {}
    for a, b in ((1, 10), (10, 100), (100, 1000)):
        ra, rb = rows.get((a, 0)), rows.get((b, 0))
        text = f"batch CPU ms per added target, {kind}, {a}->{b} targets"
        if ra is None or rb is None:
            targets.not_measured(text, PER_TARGET_MS, f"no {b}-target run")
        elif ra.failed or rb.failed or (a, 0) in problems or (b, 0) in problems:
            targets.check(text, float("inf"), PER_TARGET_MS, False,
                          "a batch failed: see the table")
        else:
            steps[(a, b)] = (rb.cpu - ra.cpu) / (b - a) * 1000
            if (a, b) in checked:
                targets.check(text, steps[(a, b)], PER_TARGET_MS, False)
    return steps


def run(root: Path, script: str, apache_url: str, env: dict, runs: int,
        silent_runs: int, targets: Targets, private: bool = False) -> None:
    data = root / "tests" / "data"
    remote = fleet_host(private)
    print(f"\n6. batches of targets (--format influx --timeout {TIMEOUT:g}; medians of "
          f"{runs} runs, {silent_runs} with silent targets)", flush=True)
    rows, commands, problems = _measure(data, script, apache_url, env, CONFIGS, runs,
                                        silent_runs, "127.0.0.1")
    _table("local page servers (127.0.0.1: a local listener that is not Apache's)",
           rows, commands, problems)
    far = None
    if remote != "127.0.0.1":
        far = _measure(data, script, apache_url, env, REMOTE_CONFIGS, runs, silent_runs, remote)
        _table(f"remote page servers ({remote}: no proof, as Apaches on other hosts)", *far)
    print("   (cpu ms/target: CPU beyond the 1-target run, per added target)")
    print(f"   (TCP sockets in /proc/net/tcp* after the runs: {scrape.tcp_sockets()}; ours "
          f"reads the table once per batch; the page servers close with a reset)")

    text = f"batch of 10 targets, 2 silent: wall s (--timeout {TIMEOUT:g} + {MARGIN:g})"
    row = rows[(10, 2)]
    if row.failed or (10, 2) in problems:
        targets.check(text, float("inf"), TIMEOUT + MARGIN, False,
                      row.note(1) or f"wrong output: {problems[(10, 2)]}")
    else:
        targets.check(text, row.wall, TIMEOUT + MARGIN, False)
    if far is None:
        steps = _steps("local", rows, problems, targets)
    else:
        # The local batch's first step carries the one walk naming the
        # listeners' owner (see above): a cost per batch, shown, not checked.
        local = _steps("local", rows, problems, targets, checked=((10, 100), (100, 1000)))
        if (1, 10) in local:
            print(f"   (local 1->10: {local[(1, 10)]:.2f} ms per added target, with the "
                  f"batch's one walk naming the listeners' owner)")
        steps = _steps("remote", far[0], far[2], targets)
    text = "batch CPU per added target, 100->1000 vs 1->10 targets (roughly constant)"
    low, high = steps.get((1, 10)), steps.get((100, 1000))
    if low is None or high is None:
        targets.check(text, float("inf"), 1.5, False, "a step was not measured: see above")
    else:
        targets.check(text, high / low if low > 0 else float("inf"), 1.5, False,
                      f"{low:.2f} ms, then {steps.get((10, 100), float('nan')):.2f} ms, then "
                      f"{high:.2f} ms per target")
