"""Benchmarks: ratios measured in one run, so they carry across machines.

    make bench            (or: .venv/bin/python benchmarks/run.py [--quick] [--only 1,5])

Starts a private Apache the way a host runs it (daemonised: its parent is a
child of PID 1, tests/harness/daemon.py), builds two throwaway virtualenvs -
this project installed as a user would (not editable) and apache-manager 2.2
from PyPI - and measures:

1. one-shot collection (tab and influx) vs a bare Python script fetching the
   same two pages with urllib (the floor) vs apache-manager 2.2's
   --collect-metrics on the same server: wall time, CPU time and peak RSS,
   medians of N runs;
2. worker-table parsing of generated pages (64, 1024, 4096 rows, built from a
   real captured page with varied rows): our parser to columns (what a cycle
   pays) and with a row object made for every row, vs the original's
   BeautifulSoup approach (apache-manager's own ``slots`` property);
3. the long-running mode (--execd): CPU per cycle, RSS after 10 and after
   1000 cycles;
4. the import cost of the one-shot path (python -X importtime), which must
   not contain influxdb_client for the non-push formats;
5. per-cycle CPU of --listen and --execd side by side with Debian's
   prometheus-apache-exporter per scrape, on the small server and on one with
   more than 2,000 busy worker rows (and half as many: cost per row);
6. batches of 1, 10, 100 and 1,000 targets (the live Apache plus page
   servers on loopback), with 0 and 2 silent targets: wall time, CPU, CPU
   per added target;
7. a /probe fleet: one --listen process probed for 1,000 targets (page
   servers in the benchmark's namespace) by Debian's Prometheus, with the
   multi-target relabelling of blackbox/apache_exporter: CPU per probe.

Each target is printed with PASS or FAIL and its measured value; a target
that could not be measured because a peer (apache-manager, apache_exporter)
failed is printed N/A with the peer's one-line reason, and the run goes on.
The exit status is 1 if any target failed, 0 otherwise (N/A included).
benchmarks/README.md says how to read the results.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import batch  # noqa: E402
import fleet  # noqa: E402
import scrape  # noqa: E402
from measure import (  # noqa: E402
    Command,
    Failed,
    Spawner,
    Targets,
    interleaved_medians,
    one_line,
    proc_cpu,
)

# The session helpers of the tests: an environment with the state, spool and
# collector-state files in a temporary directory (never the machine's
# /var/lib ones), and the wrapper that points apache-manager 2.2 at one given
# Apache only (tests/test_manager.py explains it).
from tests import conftest  # noqa: E402
from tests.conftest import exporter_env, parse_tab  # noqa: E402
from tests.harness.daemon import DaemonApacheServer  # noqa: E402
from tests.test_cli import NOT_ON_THE_ONE_SHOT_PATH  # noqa: E402
from tests.test_manager import WRAPPER as ORIGINAL_WRAPPER  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"
CACHE = Path(os.environ.get("BENCH_CACHE", Path(tempfile.gettempdir()) / "ame-bench-venvs"))
SECTIONS = (1, 2, 3, 4, 5, 6, 7)
# Issue 23's targets (benchmarks/README.md says what each is measured on).
ONE_SHOT_WALL = 1.10  # one-shot wall time / the bare fetch of both pages
PARSE_US_PER_ROW = 1.0  # worker-table parse, µs per row at 64, 1,024 and 4,096 rows
LISTEN_RATIO = 1.2  # small server: --listen CPU per scrape / apache_exporter's
IDLE_SECONDS = 5.0  # section 5: exporters left alone after their scrapes
IDLE_LIMIT = 0.05  # ms of CPU per second an idle --listen may cost
BIG_RATIO = 3.0  # big server (2,000+ busy rows): --execd per cycle / apache_exporter's


def venv(name: str, *packages: str) -> Path:
    """A virtualenv with these packages, reused between runs of the benchmark
    (once complete: a failed install is tried again next time). Raises
    Failed with pip's last line when it cannot be built."""
    path = CACHE / name
    python = path / "bin" / "python"
    done = path / ".complete"
    if not done.exists():
        shutil.rmtree(path, ignore_errors=True)
        for argv in ([SYSTEM_PYTHON, "-m", "venv", str(path)],
                     [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                      *packages]):
            proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
            if proc.returncode != 0:
                raise Failed(f"cannot build the {name} virtualenv: {one_line(proc.stderr)}")
        done.touch()
    return python


def vary_rows(page: bytes, rows: int, seed: int = 1) -> bytes:
    """A worker table of ``rows`` rows built from a real page's rows, varied."""
    text = page.decode("latin-1")
    head, first, rest = text.partition("<tr><td><b>")
    body, end, tail = rest.rpartition("</tr>")
    real = ["<tr><td><b>" + r + "</tr>" for r in (first + body + end).split("<tr><td><b>")[1:]]
    real = [r.split("</tr>")[0] + "</tr>" for r in real]
    rnd = random.Random(seed)
    out = []
    for i in range(rows):
        row = rnd.choice(real)
        row = re.sub(r"<td>\d+</td>", f"<td>{10000 + i // 25}</td>", row, count=1)
        mode = rnd.choice(["_", "_", "_", "<b>W</b>", "<b>K</b>", "<b>R</b>", "."])
        row = re.sub(r"(<td>\d+/\d+/\d+</td><td>)(?:<b>.</b>|.)", r"\g<1>" + mode, row, count=1)
        row = row.replace("GET /", f"GET /app/{rnd.randrange(10**6)}/", 1)
        out.append(row + "\n")
    return (head + "".join(out) + "</table>" + tail.split("</table>", 1)[1]).encode("latin-1")


# Two medians: parse_html alone (the table as columns: PIDs, modes and SS
# converted, what a collection cycle pays; other columns are read by the
# figures that need them), and parse_html plus a WorkerRow made for every
# row (list(workers): what the reaper or the text writer would pay).
OUR_PARSE = """
import sys, time
from apache_metrics_exporter.collect.status import parse_html
page = open(sys.argv[1], "rb").read()
parse, rows = [], []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); table = parse_html(page).workers; parse.append(time.perf_counter() - t)
    t = time.perf_counter(); every = list(parse_html(page).workers)
    rows.append(time.perf_counter() - t)
parse.sort(); rows.sort()
print(len(every), parse[len(parse) // 2], rows[len(rows) // 2])
"""

ORIGINAL_PARSE = """
import sys, time
from apache_manager import ApacheManager
page = open(sys.argv[1], "rb").read()
times = []
for _ in range(int(sys.argv[2])):
    m = ApacheManager()
    m.__dict__["html_status"] = page   # what the fetch would have cached
    t = time.perf_counter(); rows = m.slots; times.append(time.perf_counter() - t)
times.sort()
print(len(rows), times[len(times) // 2])
"""


def auto_values(url: str) -> dict:
    with urllib.request.urlopen(url + "?auto", timeout=10) as r:
        text = r.read().decode("latin-1")
    return dict(re.findall(r"^([A-Za-z ]+): (\S+)$", text, re.M))


def check_original(argv: list, env: dict, apache: DaemonApacheServer) -> None:
    """Raises Failed unless apache-manager's metrics (``-c -f -``) are those
    of the benchmark's Apache: its access count within ours before and after
    its run, its worker slots those of our ?auto page, and as many native
    worker processes as our daemon has."""
    before = auto_values(apache.status_url)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    after = auto_values(apache.status_url)
    if proc.returncode != 0:
        raise Failed(f"exit status {proc.returncode}: {one_line(proc.stderr)}")
    got = parse_tab(proc.stdout)
    native = sum(1 for p in apache.children()
                 if p.info["cmdline"] and not p.info["cmdline"][0].startswith("(wsgi:"))
    try:
        accesses = int(got["total-accesses"])
        slots = int(got["busy-workers"]) + int(got["idle-workers"])
        workers = int(got.get("memory-usage native count", "0"))
    except (KeyError, ValueError):
        raise Failed(f"no metrics in its output: {one_line(proc.stdout or proc.stderr)}") \
            from None
    ours = int(after["BusyWorkers"]) + int(after["IdleWorkers"])
    if not int(before["Total Accesses"]) <= accesses <= int(after["Total Accesses"]):
        raise Failed(f"its total-accesses {accesses} is not the benchmark Apache's "
                     f"({before['Total Accesses']}..{after['Total Accesses']})")
    if slots != ours or workers != native:
        raise Failed(f"its worker slots/processes {slots}/{workers} are not the benchmark "
                     f"Apache's {ours}/{native}")


def socket_table(indent: str = "") -> float:
    """A line saying how big the TCP socket table is now: every collection of
    ours reads all of it, so a host's TIME_WAIT sockets show in its cost.
    Returns the CPU ms of one read of it."""
    cost = scrape.tcp_table_cpu_ms()
    print(f"   {indent}(TCP sockets in /proc/net/tcp*: {scrape.tcp_sockets()}, reading them "
          f"{cost:.2f} ms CPU)")
    return cost


def one_shot(ctx, opts: argparse.Namespace, targets: Targets) -> None:
    url, tmp = ctx.apache.status_url, ctx.tmp
    bare = tmp / "bare.py"
    bare.write_text(f"import urllib.request\nurllib.request.urlopen({url + '?auto'!r}).read()\n"
                    f"urllib.request.urlopen({url!r}).read()\n")
    # What the exporter's libraries cost before its own code runs: both pages
    # on one connection with http.client, leaving with os._exit as it does,
    # then with configargparse and json imported too ("The one-shot path" in
    # benchmarks/README.md: the floor of this design).
    parts = urllib.parse.urlsplit(url)
    libs = (f"import http.client\nc = http.client.HTTPConnection({parts.hostname!r}, "
            f"{parts.port})\nc.request('GET', {parts.path + '?auto'!r})\n"
            f"c.getresponse().read()\nc.request('GET', {parts.path!r})\n"
            f"c.getresponse().read()\nimport os\nos._exit(0)\n")
    (tmp / "libs.py").write_text(libs)
    (tmp / "libs-options.py").write_text("import configargparse, json\n" + libs)
    commands = {
        "bare urllib fetch (floor)": Command([str(ctx.ours), str(bare)], opts.runs),
        "  http.client, one connection": Command([str(ctx.ours), str(tmp / "libs.py")],
                                                 opts.runs),
        "  + configargparse, json": Command([str(ctx.ours), str(tmp / "libs-options.py")],
                                            opts.runs),
        "ours --format tab": Command([ctx.script, "--url", url], opts.runs, ctx.env),
        "ours --format influx": Command([ctx.script, "--url", url, "--format", "influx"],
                                        opts.runs, ctx.env),
    }
    original_why = ctx.original_why
    if ctx.original is not None:
        # apache-manager --collect-metrics --data-file=- as its users run it,
        # through the tests' wrapper: the ports.conf it reads names our
        # Apache's port, and of PID 1's apache2 children it sees ours only.
        wrapper = tmp / "apache-manager-original.py"
        wrapper.write_text(ORIGINAL_WRAPPER)
        ports = tmp / "ports.conf"
        ports.write_text(f"Listen 127.0.0.1:{ctx.apache.port}\n")
        home = tmp / "home"
        home.mkdir(exist_ok=True)
        env = exporter_env(AM_PORTS_CONF=str(ports), AM_APACHE_PID=str(ctx.apache.proc.pid),
                           AM_INI_FILES="", HOME=str(home))
        argv = [str(ctx.original), str(wrapper), "--collect-metrics", "--data-file=-"]
        try:
            check_original(argv, env, ctx.apache)
            commands["apache-manager 2.2"] = Command(argv, max(3, opts.runs // 3), env)
        except (Failed, subprocess.TimeoutExpired) as exc:
            original_why = one_line(str(exc))

    print(f"\n1. one-shot collection ({opts.runs} runs each, medians)", flush=True)
    rows = interleaved_medians(commands, opts.runs)
    floor = rows["bare urllib fetch (floor)"]
    print(f"   {'':30} {'wall ms':>8} {'cpu ms':>8} {'RSS MiB':>8} {'wall/floor':>10} "
          f"{'RSS/floor':>9}")
    for name, row in rows.items():
        note = row.note(commands[name].runs)
        if row.failed:
            print(f"   {name:30} {note}")
            continue
        print(f"   {name:30} {row.wall * 1000:8.1f} {row.cpu * 1000:8.1f} {row.rss / 1024:8.1f} "
              f"{row.wall / floor.wall:10.2f} {row.rss / floor.rss:9.2f}  {note}".rstrip())
    if original_why:
        print(f"   {'apache-manager 2.2':30} failed: {original_why}")
    socket_table()
    for fmt in ("tab", "influx"):
        row = rows[f"ours --format {fmt}"]
        if row.failed or floor.failed:
            for what, limit in (("wall time", ONE_SHOT_WALL), ("peak RSS", 1.25)):
                targets.check(f"one-shot {fmt}: {what} / bare fetch", float("inf"), limit,
                              False, (row if row.failed else floor).note(1))
            continue
        targets.check(f"one-shot {fmt}: wall time / bare fetch", row.wall / floor.wall,
                      ONE_SHOT_WALL,
                      False)
        targets.check(f"one-shot {fmt}: peak RSS / bare fetch", row.rss / floor.rss, 1.25,
                      False)
    text = "one-shot tab: apache-manager 2.2 wall / ours (x faster)"
    theirs, ours = rows.get("apache-manager 2.2"), rows["ours --format tab"]
    if theirs is None or theirs.failed:
        targets.not_measured(text, 5.0, f"apache-manager 2.2 failed: "
                                        f"{original_why or theirs.why}")
    elif ours.failed:
        targets.check(text, 0.0, 5.0, True, ours.note(1))
    else:
        targets.check(text, theirs.wall / ours.wall, 5.0, True,
                      f"5x would be {theirs.wall / 5 * 1000:.0f} ms, the bare fetch takes "
                      f"{floor.wall * 1000:.0f} ms here" if not floor.failed else "")


def parsing(ctx, opts: argparse.Namespace, targets: Targets) -> None:
    print("\n2. worker-table parsing (medians; generated from a real 2.4.71 page):\n"
          "   'columns' is parse_html alone (the table as columns, PIDs, modes and SS\n"
          "   converted: what a collection cycle pays), 'rows' the same plus a WorkerRow\n"
          "   made for every row (the original is compared with 'rows')", flush=True)
    real = (ROOT / "tests" / "data" / "2.4.71-event-ext-on.html").read_bytes()
    print(f"   {'rows':>6} {'columns ms':>10} {'µs/row':>7} {'rows ms':>8} {'µs/row':>7} "
          f"{'original ms':>12} {'speed-up':>9}")
    per_row = {}
    original_why = ctx.original_why
    for n in (64, 1024, 4096):
        page = ctx.tmp / f"page-{n}.html"
        page.write_bytes(vary_rows(real, n))
        reps = {64: 50, 1024: 10, 4096: 5}[n]
        out = subprocess.run([str(ctx.ours), "-c", OUR_PARSE, str(page), str(reps)],
                             capture_output=True, text=True, check=True, env=ctx.env).stdout
        got, columns_s, ours_s = out.split()
        columns_s, ours_s = float(columns_s), float(ours_s)
        per_row[n] = columns_s / n * 1e6
        orig = ""
        if not original_why:
            proc = subprocess.run([str(ctx.original), "-c", ORIGINAL_PARSE, str(page),
                                   str(max(1, reps // 5))], capture_output=True, text=True,
                                  env=ctx.env)
            if proc.returncode == 0:
                got_orig, orig_s = proc.stdout.split()
                orig_s = float(orig_s)
                orig = (f"{orig_s * 1000:12.1f} {orig_s / ours_s:9.0f}x   "
                        f"(rows: ours {got}, original {got_orig})")
            else:
                original_why = f"exit status {proc.returncode}: {one_line(proc.stderr)}"
        if original_why:
            orig = f"   original failed: {original_why}"
        print(f"   {n:6} {columns_s * 1000:10.2f} {per_row[n]:7.2f} {ours_s * 1000:8.2f} "
              f"{ours_s / n * 1e6:7.2f} {orig}")
        for rows, limit in ((4096, 250), (1024, 150)):
            if n == rows:
                text = f"parse {rows} rows: original / ours"
                if original_why:
                    targets.not_measured(text, limit, f"apache-manager 2.2 failed: "
                                                      f"{original_why}")
                else:
                    targets.check(text, orig_s / ours_s, limit, True)
    targets.check("parse cost per row, 4096 vs 64 rows (roughly constant)",
                  per_row[4096] / per_row[64], 2.0, False)
    for n in (64, 1024, 4096):
        targets.check(f"parse cost per row at {n} rows, as columns (µs)", per_row[n],
                      PARSE_US_PER_ROW, False)


def execd_cycles(python: Path, url: str, cycles: int, env: dict) -> tuple:
    """(CPU ms per cycle, RSS KiB after 10 cycles, after ``cycles``) of --execd."""
    proc = subprocess.Popen([str(python), "-m", "apache_metrics_exporter", "--url", url,
                             "--format", "influx", "--execd"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            text=True, bufsize=1)

    def one() -> None:
        proc.stdin.write("\n")
        proc.stdin.flush()
        while not proc.stdout.readline().startswith("apache_exporter,"):
            pass

    def rss() -> int:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))

    def cpu() -> float:
        return proc_cpu(proc.pid)

    for _ in range(10):
        one()
    rss10, cpu10 = rss(), cpu()
    for _ in range(cycles - 10):
        one()
    rss_n, cpu_n = rss(), cpu()
    proc.stdin.close()
    proc.wait(timeout=10)
    return (cpu_n - cpu10) / (cycles - 10) * 1000, rss10, rss_n


def long_running(ctx, opts: argparse.Namespace, targets: Targets) -> None:
    print(f"\n3. long-running mode (--execd, {opts.cycles} cycles)", flush=True)
    cpu_ms, rss10, rss_n = execd_cycles(ctx.ours, ctx.apache.status_url, opts.cycles, ctx.env)
    print(f"   CPU per cycle {cpu_ms:.2f} ms; RSS after 10 cycles {rss10 / 1024:.1f} MiB, "
          f"after {opts.cycles} {rss_n / 1024:.1f} MiB")
    socket_table()
    targets.check("long-running: CPU ms per cycle", cpu_ms, 5.0, False)
    targets.check(f"long-running: RSS growth 10 -> {opts.cycles} cycles (MiB)",
                  (rss_n - rss10) / 1024, 1.0, False)


def import_cost(ctx, opts: argparse.Namespace, targets: Targets) -> None:
    print("\n4. import cost of the one-shot path (python -X importtime)", flush=True)
    for fmt in ("tab", "influx", "collectd"):
        out = subprocess.run([str(ctx.ours), "-X", "importtime", "-m", "apache_metrics_exporter",
                              "--url", ctx.apache.status_url, "--format", fmt],
                             capture_output=True, text=True, env=ctx.env).stderr
        lines = [ln for ln in out.splitlines()
                 if ln.startswith("import time:") and ln.split("|")[1].strip().isdigit()]
        total = sum(int(ln.split("|")[1]) for ln in lines)  # self times
        has_influx = any("influxdb_client" in ln for ln in lines)
        names = {ln.split("|")[2].strip() for ln in lines}
        cut = sorted(m for m in NOT_ON_THE_ONE_SHOT_PATH
                     if m in names or any(n.startswith(m + ".") for n in names))
        print(f"   --format {fmt:9} {len(lines):4} modules, {total / 1000:6.1f} ms "
              f"(sum of self times), influxdb_client imported: {has_influx}, "
              f"modules cut from this path imported: {', '.join(cut) or 'none'}")
        targets.flag(f"--format {fmt} does not import influxdb_client", not has_influx)
        targets.flag(f"--format {fmt} imports none of the modules cut from the one-shot path",
                     not cut, ", ".join(cut))


def batches(ctx, opts: argparse.Namespace, targets: Targets) -> None:
    batch.run(ROOT, ctx.script, ctx.apache.status_url, ctx.env, opts.batch_runs,
              max(3, opts.batch_runs // 2), targets, opts.in_private_network)


def probe_fleet(ctx, opts: argparse.Namespace, targets: Targets) -> None:
    fleet.run(ROOT, ctx.script, ctx.env, targets, opts.in_private_network,
              opts.fleet_targets)


def _print_cycles(label: str, got: dict) -> None:
    """One line per exporter of a scrape.per_cycle result."""
    theirs = got.get("apache_exporter")
    for name in ("apache_exporter", "ours --listen", "ours --execd"):
        value = got.get(name)
        if value is None:
            continue
        if isinstance(value, Failed):
            print(f"   {label:26} {name:16} failed: {value}")
            continue
        ratio = ""
        if name != "apache_exporter" and isinstance(theirs, tuple) and theirs[0] > 0:
            ratio = f"{value[0] / theirs[0]:8.2f}x"
        print(f"   {label:26} {name:16} {value[0]:8.2f} {value[1]:8.2f} {ratio}")


def _print_idle(idle: dict, got: dict, targets: Targets) -> None:
    """Each exporter left alone after its scrapes: CPU and wake-ups per
    second, and what one Prometheus interval costs it in all (a scrape and
    the idle time up to the next one), which the back-to-back scrapes above
    do not show."""
    if not idle:
        return
    print(f"   between scrapes ({IDLE_SECONDS:g} s left alone after the last; CPU from "
          "schedstat), and per 15-s Prometheus interval (one scrape + 15 s idle):")
    theirs = None
    for name in ("apache_exporter", "ours --listen", "ours --execd"):
        if name not in idle or not isinstance(got.get(name), tuple):
            continue
        ms, runs = idle[name]
        interval = got[name][0] + 15 * ms
        if name == "apache_exporter":
            theirs = interval
        ratio = f"{interval / theirs:8.2f}x" if theirs and name != "apache_exporter" else ""
        print(f"   {'idle':26} {name:16} {ms:8.3f} ms/s, {runs:5.1f} wake-ups/s; "
              f"{interval:6.2f} ms per interval {ratio}")
    if "ours --listen" in idle:
        targets.check("small server: ours --listen CPU between scrapes, ms per second "
                      "(apache_exporter's: about 0)", idle["ours --listen"][0], IDLE_LIMIT,
                      False, f"{idle['ours --listen'][1]:.1f} wake-ups/s")


def _against_theirs(targets: Targets, text: str, got: dict, ours_name: str, limit: float,
                    note: str = "") -> None:
    """One target row: our CPU per cycle over apache_exporter's, from a
    scrape.compare result; not measured when apache_exporter failed."""
    theirs, ours = got.get("apache_exporter"), got.get(ours_name)
    if not isinstance(theirs, tuple):
        targets.not_measured(text, limit, f"apache_exporter failed: {theirs}")
    elif not isinstance(ours, tuple):
        targets.check(text, float("inf"), limit, False, f"failed: {ours}")
    else:
        targets.check(text, ours[0] / theirs[0], limit, False,
                      f"{ours[0]:.2f} ms vs {theirs[0]:.2f} ms" + (f"; {note}" if note else ""))


def per_scrape(ctx, opts: argparse.Namespace, targets: Targets) -> None:
    print(f"\n5. per-cycle CPU vs apache_exporter {scrape.APACHE_EXPORTER} (medians of "
          f"{opts.rounds} interleaved rounds)", flush=True)
    print(f"   {'server':26} {'exporter':16} {'cpu ms':>8} {'wall ms':>8} {'vs a_e':>9}")
    # The small server: the benchmark's own Apache (event, 2 x 5 threads).
    got = scrape.compare(ctx.apache.status_url, ctx.script, ctx.env, opts.rounds,
                         idle=IDLE_SECONDS)
    busy, rows = scrape.status_counts(ctx.apache)
    _print_cycles(f"small: {rows} rows", got)
    socket_table(" " * 27)
    _print_idle(got.get("idle", {}), got, targets)
    # The same with a busy host's socket table: idle loopback connections.
    idle = scrape.IdleConnections()
    try:
        idle.grow(opts.extra_sockets // 2)
        crowded = scrape.compare(ctx.apache.status_url, ctx.script, ctx.env, opts.rounds)
        _print_cycles(f"small, +{2 * len(idle)} sockets", crowded)
        socket_table(" " * 27)
    except OSError as exc:
        crowded = {}
        print(f"   {'small, more sockets':26} failed: {one_line(str(exc))}")
    finally:
        idle.close()
    a, b = got.get("ours --execd"), crowded.get("ours --execd")
    table_note = ""
    if isinstance(a, tuple) and isinstance(b, tuple):
        per_socket = (b[0] - a[0]) / (2 * (opts.extra_sockets // 2)) * 1000
        print(f"   ours --execd: {per_socket:.2f} µs of CPU per TCP socket of the host, per cycle")
        # Ours asks sock_diag for the listeners only: no read of the whole
        # table (/proc/net/tcp, whose cost socket_table printed above).
        table_note = f"ours: {per_socket:.2f} µs per TCP socket of the host"
    # The 1.0 target is on --execd: the same collection as --listen without
    # the HTTP server (see scrape.compare for why --listen has rounds of its own).
    _against_theirs(targets, "small server: ours --execd CPU per cycle / apache_exporter's "
                    "per scrape", got, "ours --execd", 1.0, table_note)
    _against_theirs(targets, "small server: ours --listen CPU per scrape / apache_exporter's",
                    got, "ours --listen", LISTEN_RATIO)

    # The big server: thousands of requests in flight, at three fill levels.
    # The exporters start after each fill: a kept-alive connection parked in
    # an Apache process whose threads all fill up with slow requests would
    # wait for one of them to end; a new connection goes to a process with an
    # idle thread (the event MPM's listener stops accepting when it has none).
    big = DaemonApacheServer("event", mpm_conf=scrape.BIG_MPM_CONF)
    slow = scrape.SlowRequests(big, opts.busy_rows)
    levels = []  # (busy, rows, {name: (cpu ms, wall ms) | Failed})
    try:
        big.start(timeout=60)
        for count in (0, opts.busy_rows // 2, opts.busy_rows):
            busy, rows = slow.fill(count)
            # --listen only at the last level: the idle rows its scrapes
            # leave would make the rows of the next level a different mix.
            got = scrape.compare(big.status_url, ctx.script, ctx.env, opts.rounds,
                                 listen=count == opts.busy_rows)
            levels.append((busy, rows, got))
            _print_cycles(f"big: {busy} busy/{rows} rows", got)
            socket_table(" " * 27)
    finally:
        slow.close()
        big.stop()
    busy = levels[-1][0]
    targets.check("big server: busy worker rows reached (at least 2,000)", busy, 2000, True)
    _against_theirs(targets, "big server, full: ours --execd CPU per cycle / "
                    "apache_exporter's per scrape", levels[-1][2], "ours --execd", BIG_RATIO)
    # CPU per row added to the idle server, at the full level against the
    # half one: 1 when linear, the rows' ratio (about 1.6) when quadratic.
    # Both differences are taken from the idle level, so a noisy middle
    # level weighs less than in a comparison of the two halves.
    text = "big server: ours --execd CPU per row over idle, full / half (roughly constant)"
    values = [lvl[2].get("ours --execd") for lvl in levels]
    if any(isinstance(v, Failed) or v is None for v in values):
        targets.check(text, float("inf"), 1.5, False, "ours --execd failed: see the table")
    else:
        (r0, r1, r2), (c0, c1, c2) = [lvl[1] for lvl in levels], [v[0] for v in values]
        half, full = (c1 - c0) / (r1 - r0), (c2 - c0) / (r2 - r0)
        targets.check(text, full / half if half > 0 else float("inf"), 1.5, False,
                      f"{half * 1000:.1f} µs per row at {r1} rows, {full * 1000:.1f} µs at "
                      f"{r2}")


def private_network(opts: argparse.Namespace) -> str:
    """Re-enter this benchmark in a network namespace of its own (root only).

    Every collection of ours reads the whole TCP socket table, so on a shared
    machine other jobs' connections would be measured too, and differently
    from one run to the next. In a namespace of its own only the benchmark's
    sockets are there (and its servers are unreachable from outside), so runs
    compare; section 5 measures the effect of a big socket table on its own.
    Returns how the run is networked, for the results."""
    if opts.in_private_network:
        loopback_up()
        return "private network namespace"
    if opts.host_network:
        return f"host network namespace ({scrape.tcp_sockets()} TCP sockets)"
    unshare = shutil.which("unshare")
    if os.geteuid() == 0 and unshare and subprocess.run(
            [unshare, "--net", "true"], capture_output=True).returncode == 0:
        sys.stdout.flush()
        shutil.rmtree(conftest.SESSION_FILES, ignore_errors=True)  # the new process has its own
        os.execv(unshare, [unshare, "--net", "--", sys.executable, str(Path(__file__).resolve()),
                           *sys.argv[1:], "--in-private-network"])
    return (f"host network namespace ({scrape.tcp_sockets()} TCP sockets; a private one "
            f"needs root and unshare)")


def loopback_up() -> None:
    """``ip link set lo up`` without iproute2: a new namespace's lo is down."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket() as sock:
        ifr = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, siocgifflags, ifr))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def raise_fd_limit() -> None:
    """The big server's slow requests and idle connections need a few
    thousand descriptors: the soft limit goes up to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Context:
    """What the sections share: the virtualenvs, the Apache, the environment."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=31, help="runs per one-shot measurement")
    ap.add_argument("--cycles", type=int, default=1000, help="long-running cycles")
    ap.add_argument("--batch-runs", type=int, default=9,
                    help="runs per batch measurement (half as many with silent targets)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleaved rounds of the per-cycle CPU comparison")
    ap.add_argument("--busy-rows", type=int, default=2100,
                    help="slow requests in flight on the big server")
    ap.add_argument("--extra-sockets", type=int, default=10000,
                    help="TCP sockets added to show their cost per cycle (section 5)")
    ap.add_argument("--fleet-targets", type=int, default=fleet.TARGETS,
                    help="targets of the /probe fleet (section 7)")
    ap.add_argument("--quick", action="store_true",
                    help="a fast, rough run (while developing): few runs, rounds and cycles")
    ap.add_argument("--only", default="", help="comma-separated sections, e.g. 5,6")
    ap.add_argument("--host-network", action="store_true",
                    help="measure in the host's network namespace, among its sockets "
                         "(default, as root: a private one, see README.md)")
    ap.add_argument("--in-private-network", action="store_true", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.quick:
        opts.runs, opts.cycles, opts.batch_runs, opts.rounds = 5, 100, 3, 3
    only = {int(x) for x in opts.only.split(",") if x.strip()} or set(SECTIONS)
    started = time.monotonic()

    ctx = Context()
    if not opts.in_private_network:  # pip needs the network: done before re-entering
        print(f"building virtualenvs (cached in {CACHE}) ...", flush=True)
        ctx.ours = venv("ours", str(ROOT))
        # The dependencies stay cached; the project itself is reinstalled each run.
        subprocess.run([str(ctx.ours), "-m", "pip", "install", "-q", "--no-deps",
                        "--force-reinstall", str(ROOT)], check=True)
    ctx.ours = CACHE / "ours" / "bin" / "python"
    ctx.script = str(ctx.ours.parent / "apache-metrics-exporter")  # what users run
    ctx.original, ctx.original_why = None, ""
    try:
        ctx.original = venv("apache-manager-2.2", "apache-manager==2.2")
    except Failed as exc:
        ctx.original_why = str(exc)
    network = private_network(opts)
    raise_fd_limit()
    ctx.env = exporter_env()
    targets = Targets()
    # The batches run last: their thousands of short connections leave as
    # many TIME_WAIT sockets in /proc/net/tcp for a minute, which every
    # collection of ours reads (section 5 says how many there were).
    sections = {1: one_shot, 2: parsing, 3: long_running, 4: import_cost, 5: per_scrape,
                6: batches, 7: probe_fleet}
    try:
        with tempfile.TemporaryDirectory() as tmp, DaemonApacheServer("event") as apache:
            ctx.tmp, ctx.apache = Path(tmp), apache
            for _ in range(20):
                for path in ("/index.html", "/embedded", "/daemon"):
                    apache.get(path)
            for number, section in sections.items():
                if number in only:
                    section(ctx, opts, targets)
    finally:
        Spawner.close()
        shutil.rmtree(conftest.SESSION_FILES, ignore_errors=True)

    print(f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.platform()}; {network}; "
          f"load average {os.getloadavg()[0]:.1f}; "
          f"benchmark took {time.monotonic() - started:.0f} s")
    targets.print()
    if targets.unmeasured:
        print(f"   ({targets.unmeasured} target(s) not measured: a peer failed, see above)")
    return 1 if targets.failed else 0


if __name__ == "__main__":
    sys.exit(main())
