"""Benchmarks: ratios measured in one run, so they carry across machines.

    make bench            (or: .venv/bin/python benchmarks/run.py [--runs N])

Starts a private Apache (tests/harness/apache.py), builds two throwaway
virtualenvs - this project installed as a user would (not editable) and
apache-manager 2.2 from PyPI - and measures:

1. one-shot collection (tab and influx) vs a bare Python script fetching the
   same two pages with urllib (the floor) vs apache-manager 2.2's
   --collect-metrics: wall time, CPU time and peak RSS, medians of N runs;
2. worker-table parsing of generated pages (64, 1024, 4096 rows, built from a
   real captured page with varied rows): our parser vs the original's
   BeautifulSoup approach (apache-manager's own ``slots`` property);
3. the long-running mode (--execd): CPU per cycle, RSS after 10 and after
   1000 cycles;
4. the import cost of the one-shot path (python -X importtime), which must
   not contain influxdb_client for the non-push formats.

Each target of issue 6 is printed with PASS or FAIL; the exit status is 1 if
any target failed.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.apache import ApacheServer  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"
CACHE = Path(os.environ.get("BENCH_CACHE", Path(tempfile.gettempdir()) / "ame-bench-venvs"))


def venv(name: str, *packages: str) -> Path:
    """A virtualenv with these packages, reused between runs of the benchmark."""
    path = CACHE / name
    python = path / "bin" / "python"
    if not python.exists():
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def run_measured(argv: list, env: dict = None) -> tuple:
    """(wall s, cpu s, peak RSS KiB) of one process, from wait4's rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def interleaved_medians(commands: dict, runs: int, env: dict = None) -> dict:
    """Medians of (wall, cpu, rss) per command, the commands taking turns run
    after run, so a slow phase of the machine hits all of them alike."""
    for argv, _n in commands.values():
        run_measured(argv, env)  # warm the page cache
    samples = {name: [] for name in commands}
    for i in range(runs):
        for name, (argv, n) in commands.items():
            if i < n:
                samples[name].append(run_measured(argv, env))
    return {name: tuple(statistics.median(s[i] for s in got) for i in range(3))
            for name, got in samples.items()}


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


OUR_PARSE = """
import sys, time
from apache_metrics_exporter.status import parse_html
page = open(sys.argv[1], "rb").read()
best = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); rows = parse_html(page).workers; best.append(time.perf_counter() - t)
best.sort()
print(len(rows), best[len(best) // 2])
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

ORIGINAL_COLLECT = """
import sys
from apache_manager import ApacheManager
# apache-manager --collect-metrics --data-file=-, with the ports.conf path
# (which its command line cannot set) pointing at the private Apache.
ApacheManager(ports_config=sys.argv[1]).save_metrics("-")
"""


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
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    for _ in range(10):
        one()
    rss10, cpu10 = rss(), cpu()
    for _ in range(cycles - 10):
        one()
    rss_n, cpu_n = rss(), cpu()
    proc.stdin.close()
    proc.wait(timeout=10)
    return (cpu_n - cpu10) / (cycles - 10) * 1000, rss10, rss_n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=31, help="runs per one-shot measurement")
    ap.add_argument("--cycles", type=int, default=1000, help="long-running cycles")
    opts = ap.parse_args()

    print(f"building virtualenvs (cached in {CACHE}) ...", flush=True)
    ours = venv("ours", str(ROOT))
    # The dependencies stay cached; the project itself is reinstalled each run.
    subprocess.run([str(ours), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    str(ROOT)], check=True)
    script = ours.parent / "apache-metrics-exporter"  # the console script users run
    original = venv("apache-manager-2.2", "apache-manager==2.2")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APACHE_METRICS_")}
    results = []  # (target text, ratio, limit, passed)

    def target(text: str, value: float, limit: float, higher_is_better: bool) -> None:
        ok = value >= limit if higher_is_better else value <= limit
        results.append((text, value, limit, ok))

    with tempfile.TemporaryDirectory() as tmp, ApacheServer("event") as apache:
        tmp = Path(tmp)
        for _ in range(20):
            for path in ("/index.html", "/embedded", "/daemon"):
                apache.get(path)
        url = apache.status_url
        bare = tmp / "bare.py"
        bare.write_text(f"import urllib.request\nurllib.request.urlopen({url + '?auto'!r}).read()\n"
                        f"urllib.request.urlopen({url!r}).read()\n")
        ports = tmp / "ports.conf"
        ports.write_text(f"Listen 127.0.0.1:{apache.port}\n")
        orig_collect = tmp / "original_collect.py"
        orig_collect.write_text(ORIGINAL_COLLECT)

        print(f"\n1. one-shot collection ({opts.runs} runs each, medians)", flush=True)
        rows = interleaved_medians({
            "bare urllib fetch (floor)": ([str(ours), str(bare)], opts.runs),
            "ours --format tab": ([str(script), "--url", url], opts.runs),
            "ours --format influx": ([str(script), "--url", url, "--format", "influx"],
                                     opts.runs),
            "apache-manager 2.2": ([str(original), str(orig_collect), str(ports)],
                                   max(3, opts.runs // 3)),
        }, opts.runs, env)
        floor = rows["bare urllib fetch (floor)"]
        print(f"   {'':30} {'wall ms':>8} {'cpu ms':>8} {'RSS MiB':>8} {'wall/floor':>10} "
              f"{'RSS/floor':>9}")
        for name, (wall, cpu, rss) in rows.items():
            print(f"   {name:30} {wall * 1000:8.1f} {cpu * 1000:8.1f} {rss / 1024:8.1f} "
                  f"{wall / floor[0]:10.2f} {rss / floor[2]:9.2f}")
        for fmt in ("tab", "influx"):
            wall, _cpu, rss = rows[f"ours --format {fmt}"]
            target(f"one-shot {fmt}: wall time / bare fetch", wall / floor[0], 1.3, False)
            target(f"one-shot {fmt}: peak RSS / bare fetch", rss / floor[2], 1.25, False)
        orig_wall = rows["apache-manager 2.2"][0]
        target("one-shot tab: apache-manager 2.2 wall / ours (x faster)",
               orig_wall / rows["ours --format tab"][0], 5.0, True)

        print("\n2. worker-table parsing (medians; generated from a real 2.4.71 page)",
              flush=True)
        with open(ROOT / "tests" / "data" / "2.4.71-event-ext-on.html", "rb") as fh:
            real = fh.read()
        print(f"   {'rows':>6} {'ours ms':>9} {'µs/row':>7} {'original ms':>12} {'speed-up':>9}")
        per_row = {}
        for n in (64, 1024, 4096):
            page = tmp / f"page-{n}.html"
            page.write_bytes(vary_rows(real, n))
            reps = {64: 50, 1024: 10, 4096: 5}[n]
            out = subprocess.run([str(ours), "-c", OUR_PARSE, str(page), str(reps)],
                                 capture_output=True, text=True, check=True, env=env).stdout
            got, ours_s = out.split()
            out = subprocess.run([str(original), "-c", ORIGINAL_PARSE, str(page),
                                  str(max(1, reps // 5))], capture_output=True, text=True,
                                 check=True, env=env).stdout
            got_orig, orig_s = out.split()
            ours_s, orig_s = float(ours_s), float(orig_s)
            per_row[n] = ours_s / n * 1e6
            print(f"   {n:6} {ours_s * 1000:9.2f} {per_row[n]:7.2f} {orig_s * 1000:12.1f} "
                  f"{orig_s / ours_s:9.0f}x   (rows: ours {got}, original {got_orig})")
            if n == 4096:
                target("parse 4096 rows: original / ours", orig_s / ours_s, 250, True)
            if n == 1024:
                target("parse 1024 rows: original / ours", orig_s / ours_s, 150, True)
        target("parse cost per row, 4096 vs 64 rows (roughly constant)",
               per_row[4096] / per_row[64], 2.0, False)

        print(f"\n3. long-running mode (--execd, {opts.cycles} cycles)", flush=True)
        cpu_ms, rss10, rss_n = execd_cycles(ours, url, opts.cycles, env)
        print(f"   CPU per cycle {cpu_ms:.2f} ms; RSS after 10 cycles {rss10 / 1024:.1f} MiB, "
              f"after {opts.cycles} {rss_n / 1024:.1f} MiB")
        target("long-running: CPU ms per cycle", cpu_ms, 5.0, False)
        target(f"long-running: RSS growth 10 -> {opts.cycles} cycles (MiB)",
               (rss_n - rss10) / 1024, 1.0, False)

        print("\n4. import cost of the one-shot path (python -X importtime)", flush=True)
        for fmt in ("tab", "influx", "collectd"):
            out = subprocess.run([str(ours), "-X", "importtime", "-m", "apache_metrics_exporter",
                                  "--url", url, "--format", fmt], capture_output=True,
                                 text=True, env=env).stderr
            lines = [ln for ln in out.splitlines()
                     if ln.startswith("import time:") and ln.split("|")[1].strip().isdigit()]
            total = sum(int(ln.split("|")[1]) for ln in lines)  # self times
            has_influx = any("influxdb_client" in ln for ln in lines)
            print(f"   --format {fmt:9} {len(lines):4} modules, {total / 1000:6.1f} ms "
                  f"(sum of self times), influxdb_client imported: {has_influx}")
            results.append((f"--format {fmt} does not import influxdb_client",
                            float(has_influx), 0, not has_influx))

    print(f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {platform.platform()}")
    print("\ntargets:")
    for text, value, limit, ok in results:
        print(f"   {'PASS' if ok else 'FAIL'}  {text}: {value:.2f} (target {limit:g})")
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
