"""Measuring helpers shared by the benchmark sections.

A command that fails is never fatal: its failure is kept (one line, from its
stderr) and shown in the table and the targets as "failed: <why>", so one
broken peer does not cost the rest of the run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


class Failed(Exception):
    """A measured command failed; str() is one line saying why."""


def one_line(text: str, limit: int = 160) -> str:
    """The last meaningful line of an error output, printable and short."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    line = re.sub(r"[\x00-\x1f\x7f]", "?", line)
    return line if len(line) <= limit else line[:limit - 3] + "..."


class Command(NamedTuple):
    argv: List[str]
    runs: int
    env: Optional[Dict[str, str]] = None


class Row(NamedTuple):
    """Medians of the successful runs of one command, and what went wrong."""
    wall: float = float("nan")
    cpu: float = float("nan")
    rss: float = float("nan")
    ok_runs: int = 0
    failures: tuple = ()

    @property
    def failed(self) -> bool:
        return self.ok_runs == 0

    @property
    def why(self) -> str:
        return self.failures[-1] if self.failures else ""

    def note(self, runs: int) -> str:
        if self.failed:
            return f"failed: {self.why}"
        if self.failures:
            return f"({len(self.failures)} of {runs} runs failed: {self.why})"
        return ""


# Peak RSS comes from wait4's rusage, and Linux counts in a child's maxrss
# the memory of the process it was forked from (the parent's pages are the
# child's until exec): forked from the benchmark itself (30+ MiB with its
# imports) every command would "use" at least that. So the measured commands
# are started by this small helper process instead, which also takes the wall
# time around fork and wait4 only.
SPAWNER = r"""
import json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null = os.open(os.devnull, os.O_RDWR)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(null, 0); os.dup2(null, 1); os.dup2(err, 2)
            os.execvpe(job["argv"][0], job["argv"], job["env"])
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    os.close(err); os.close(null)
    print(json.dumps([wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
                      os.waitstatus_to_exitcode(status)]), flush=True)
"""


class Spawner:
    """The small process that runs measured commands (see SPAWNER)."""

    _proc: Optional[subprocess.Popen] = None

    @classmethod
    def run(cls, argv: Sequence[str], env: Optional[dict]) -> tuple:
        if cls._proc is None or cls._proc.poll() is not None:
            cls._proc = subprocess.Popen(["/usr/bin/python3", "-S", "-c", SPAWNER],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, bufsize=1)
        with tempfile.NamedTemporaryFile(prefix="ame-bench-stderr-") as err:
            job = {"argv": list(argv), "env": dict(os.environ if env is None else env),
                   "stderr": err.name}
            cls._proc.stdin.write(json.dumps(job) + "\n")
            cls._proc.stdin.flush()
            answer = cls._proc.stdout.readline()
            if not answer:
                raise Failed("the benchmark's spawner process ended")
            wall, cpu, rss, code = json.loads(answer)
            if code != 0:
                why = one_line(Path(err.name).read_text("utf-8", "replace"))
                raise Failed(f"exit status {code}" + (f": {why}" if why else ""))
        return wall, cpu, rss

    @classmethod
    def close(cls) -> None:
        if cls._proc is not None:
            cls._proc.stdin.close()
            cls._proc.wait(timeout=10)
            cls._proc.stdout.close()
            cls._proc = None


def run_measured(argv: Sequence[str], env: Optional[dict] = None) -> tuple:
    """(wall s, cpu s, peak RSS KiB) of one process, from wait4's rusage.

    Raises Failed with the last line of its stderr if it exits non-zero."""
    return Spawner.run(argv, env)


def interleaved_medians(commands: Dict[str, Command], runs: int) -> Dict[str, Row]:
    """Medians of (wall, cpu, rss) per command, the commands taking turns run
    after run, so a slow phase of the machine hits all of them alike. A
    command whose warm-up run fails is not run again."""
    samples: Dict[str, list] = {name: [] for name in commands}
    failures: Dict[str, list] = {name: [] for name in commands}
    dead = set()
    for name, cmd in commands.items():
        try:
            run_measured(cmd.argv, cmd.env)  # warm the page cache
        except Failed as exc:
            failures[name].append(str(exc))
            dead.add(name)
    for i in range(runs):
        for name, cmd in commands.items():
            if i < cmd.runs and name not in dead:
                try:
                    samples[name].append(run_measured(cmd.argv, cmd.env))
                except Failed as exc:
                    failures[name].append(str(exc))
    out = {}
    for name, got in samples.items():
        if got:
            medians = [statistics.median(s[i] for s in got) for i in range(3)]
            out[name] = Row(*medians, len(got), tuple(failures[name]))
        else:
            out[name] = Row(failures=tuple(failures[name]))
    return out


def stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """Stop a process the benchmark started in a session of its own, and
    everything it started: SIGTERM to its group, SIGKILL after ``timeout``
    (a group whose members are all gone already is no error)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a running process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def task_cpu(pid: int) -> tuple:
    """(CPU nanoseconds, times run) of a process's live threads so far, from
    /proc/PID/task/*/schedstat: nanoseconds where /proc/PID/stat counts
    ticks of 10 ms, fine enough for a process that is meant to sleep."""
    ns = runs = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue  # a thread that ended meanwhile
        ns, runs = ns + int(fields[0]), runs + int(fields[2])
    return ns, runs


def idle_cpu(pids: Dict[str, int], seconds: float) -> Dict[str, tuple]:
    """{name: (CPU ms per second, times run per second)} of processes left
    alone for ``seconds``, side by side: what an exporter costs between
    scrapes."""
    before = {name: task_cpu(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    out = {}
    for name, pid in pids.items():
        ns, runs = task_cpu(pid)
        out[name] = ((ns - before[name][0]) / 1e6 / seconds, (runs - before[name][1]) / seconds)
    return out


class Targets:
    """The targets of the run: PASS, FAIL, or not measured (a peer failed)."""

    def __init__(self) -> None:
        self.rows: List[tuple] = []  # (status, text, value, limit, note)

    def check(self, text: str, value: float, limit: float, higher_is_better: bool,
              note: str = "") -> bool:
        ok = value >= limit if higher_is_better else value <= limit
        self.rows.append(("PASS" if ok else "FAIL", text, value, limit, note))
        return ok

    def flag(self, text: str, ok: bool, note: str = "") -> None:
        self.rows.append(("PASS" if ok else "FAIL", text, float(not ok), 0, note))

    def not_measured(self, text: str, limit: float, why: str) -> None:
        self.rows.append(("N/A", text, float("nan"), limit, f"not measured: {why}"))

    def print(self) -> None:
        print("\ntargets:")
        for status, text, value, limit, note in self.rows:
            shown = "" if value != value else f": {value:.2f}"  # NaN: not measured
            print(f"   {status:4}  {text}{shown} (target {limit:g})"
                  + (f"  [{note}]" if note else ""))

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r[0] == "FAIL")

    @property
    def unmeasured(self) -> int:
        return sum(1 for r in self.rows if r[0] == "N/A")
