"""The reaper's policy and its verified signals.

``select`` turns a worker table and a process scan into candidates: native
workers over their memory threshold (active or idle) or serving a request
older than ``max_time``, and mod_wsgi daemon processes over their group's
memory threshold. On threaded MPMs the worker table has a row per thread: a
process is idle only when every thread is idle, and a timeout on any thread
selects the process (the log names the other requests it was serving).
Native children without any row in the table are left alone: their state is
unknown (and mod_cgid's daemon looks just like them).

``execute`` checks each native worker against a status page fetched just
before each signal round (``confirm``: still listed, still busy or idle as
when selected, and for a request-time kill still serving the very request it
was selected for), then re-verifies each process immediately before its
signal - same PID and start time, still a child of the same Apache parent,
same executable, never the parent, never PID 1 - sends SIGTERM to all selected
processes at once, waits up to ``grace`` seconds for all of them together, and
SIGKILLs the survivors (after confirming and verifying them again).

A child of a threaded MPM (worker, event) does not end on SIGTERM: its main
thread catches it with a handler that does nothing and goes back to reading
the pipe of death, the one way its parent tells it to stop, which no other
process can use for one child (httpd's server/mpm/event/event.c child_main,
ap_mpm_podx_check). Apache itself SIGKILLs such a child after about 9 s when
it stops. So those get SIGKILL at once, without a grace period that could
only be waited out; a prefork child ends on SIGTERM (prefork.c just_die).
"""

from __future__ import annotations

import signal
import time

import psutil

from apache_metrics_exporter.catalogue import NATIVE_GROUP
from apache_metrics_exporter.collect.processes import ProcessScan
from apache_metrics_exporter.collect.status import WorkerRow
from apache_metrics_exporter.log import INFO, WARNING, log
from apache_metrics_exporter.records import NamedTuple
from apache_metrics_exporter.units import format_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Callable, Dict, List, Optional, Sequence, Tuple


PID_SLACK = 2.0  # seconds of clock granularity between a page's SS and a start time


class Page(NamedTuple):
    """One reading of the worker table and when it was taken: Apache's "now"
    for its SS column lies between ``sent`` and ``received``."""

    workers: Optional[Sequence[WorkerRow]]  # (status.WorkerTable or a list)
    sent: float      # time.time() before the request
    received: float  # time.time() once the answer was read
    error: str = ""  # why there is no worker table ('' when there is one)
    # The request line of this very read, tagged with its nonce, in the forms
    # the table can show it (http.own_lines; empty: it cannot be told apart).
    own_requests: Tuple[str, ...] = ()
    refused: bool = False  # the connection was refused: nothing listens at the URL
    mpm: str = ""  # the page's "Server MPM" (prefork, worker, event; '' unknown)


THREADED_MPMS = ("worker", "event")


def _serving(rows: Sequence[WorkerRow], own_requests: Sequence[str]) -> List[WorkerRow]:
    """The rows serving a request. The row that served the reaper's own read
    of the page (state W, that read's request line with its nonce: no other
    request has it) is not one: its worker was idle but for the reaper's
    read, and is idle again once the page has been sent. Anyone else's read
    of the same page, at the same second or not, is a request like any other."""
    return [r for r in rows if r.is_active
            and not (r.mode == "W" and r.request in own_requests)]


class Thresholds(NamedTuple):
    """0 (or absent) switches a threshold off."""

    max_memory_active: int = 0
    max_memory_idle: int = 0
    max_time: float = 0
    max_memory_wsgi: int = 0
    wsgi_groups: Tuple[Tuple[str, int], ...] = ()

    def wsgi_limit(self, group: str) -> int:
        return dict(self.wsgi_groups).get(group, self.max_memory_wsgi)

    def any(self) -> bool:
        return bool(self.max_memory_active or self.max_memory_idle or self.max_time
                    or self.max_memory_wsgi or self.wsgi_groups)


class Candidate(NamedTuple):
    """A process selected for killing, with everything the log line needs."""

    pid: int
    create_time: float
    kind: str             # native_active | native_idle | wsgi
    reason: str           # memory | timeout
    memory: int
    limit: float          # bytes (memory) or seconds (timeout)
    value: float          # what exceeded the limit
    request: str          # the request line concerned ('' if none)
    others: Tuple[str, ...]  # other requests the process was serving
    group: str
    # For a request-time kill: when the request began, as an interval
    # (earliest, latest) of epoch seconds (the page's SS is whole seconds).
    began: Optional[Tuple[float, float]] = None
    # A native worker with more than one row in the worker table: a child of
    # a threaded MPM (worker, event), which SIGTERM does not end.
    threaded: bool = False

    @property
    def excess(self) -> float:
        return self.value / self.limit if self.limit else 0.0

    def describe(self, memory_kind: str) -> str:
        """``native worker 1234 (active; RSS 512.0 MiB > 256.0 MiB; GET /x HTTP/1.1)``"""
        kind = memory_kind.upper()
        if self.kind == "wsgi":
            what = f"mod_wsgi daemon {self.pid} of group {self.group!r}"
            parts = [f"{kind} {format_bytes(self.value)} > {format_bytes(self.limit)}"]
        else:
            state = "active" if self.kind == "native_active" else "idle"
            what = f"native worker {self.pid}"
            if self.reason == "timeout":
                parts = [state, f"request running {self.value:.0f} s > {self.limit:g} s"]
            else:
                parts = [state, f"{kind} {format_bytes(self.value)} > "
                         f"{format_bytes(self.limit)}"]
            if self.request:
                parts.append(self.request)
            if self.others:
                parts.append(f"also serving {len(self.others)} other request"
                             f"{'s' if len(self.others) != 1 else ''}: "
                             + ", ".join(self.others))
        return f"{what} ({'; '.join(parts)})"


def select(workers: Optional[Sequence[WorkerRow]], scan: ProcessScan,
           thresholds: Thresholds, fetched_at: Optional[float] = None,
           sent_at: Optional[float] = None, own_requests: Sequence[str] = (),
           mpm: str = "") -> List[Candidate]:
    """Processes over a threshold, the worst (largest excess) first.

    ``fetched_at`` (when the page was read): a request the page says began
    before the process that now has its PID was started belonged to an
    earlier process (the PID was reused between fetch and scan): not this one.
    With ``sent_at`` too (when the page was asked for), a request-time
    candidate carries when its request began, for ``confirm``. The row of
    the reaper's own read (``own_requests``) makes no worker busy. A native
    worker is ``threaded`` when ``mpm`` (the page's Server MPM) is worker or
    event, or when the table shows it with more than one row (one per thread)."""
    rows: Dict[int, List[WorkerRow]] = {}
    for row in workers or ():
        if row.pid and row.mode != ".":
            rows.setdefault(row.pid, []).append(row)
    out: List[Candidate] = []
    for child in scan.children:
        if child.pid <= 1 or child.pid == scan.parent_pid:
            continue
        if child.group != NATIVE_GROUP:
            limit = thresholds.wsgi_limit(child.group)
            if limit and child.memory > limit:
                out.append(Candidate(child.pid, child.create_time, "wsgi", "memory",
                                     child.memory, limit, child.memory, "", (), child.group))
            continue
        mine = rows.get(child.pid)
        if not mine:
            continue  # not in the worker table: state unknown, leave it alone
        active = _serving(mine, own_requests)
        threaded = mpm in THREADED_MPMS or len(mine) > 1
        kind = "native_active" if active else "native_idle"
        late = [r for r in active if r.ss is not None and thresholds.max_time
                and r.ss > thresholds.max_time]
        if late and fetched_at is not None:
            late = [r for r in late if child.create_time <= fetched_at - (r.ss or 0) + PID_SLACK]
        if late:
            oldest = max(late, key=lambda r: r.ss or 0)
            others = tuple(r.request or f"(state {r.mode})" for r in active if r is not oldest)
            began = None
            if fetched_at is not None and oldest.ss is not None:
                began = _began(oldest.ss, fetched_at if sent_at is None else sent_at,
                               fetched_at)
            out.append(Candidate(child.pid, child.create_time, kind, "timeout", child.memory,
                                 thresholds.max_time, oldest.ss or 0, oldest.request, others,
                                 child.group, began, threaded))
            continue
        limit = thresholds.max_memory_active if active else thresholds.max_memory_idle
        if limit and child.memory > limit:
            request = active[0].request if active else ""
            others = tuple(r.request for r in active[1:])
            out.append(Candidate(child.pid, child.create_time, kind, "memory", child.memory,
                                 limit, child.memory, request, others, child.group,
                                 threaded=threaded))
    out.sort(key=lambda c: (-c.excess, c.pid))
    return out


def _began(ss: int, sent: float, received: float) -> Tuple[float, float]:
    """When a request SS seconds old began: Apache's "now" lies in [sent,
    received] and SS is that now minus the start, rounded down."""
    return (sent - ss - 1.0, received - ss)


CLOCK_SLACK = 0.1  # seconds of jitter allowed between two readings of the clock


def confirm(candidate: Candidate, page: Page) -> str:
    """'' when a fresh page still shows the worker in the state it was
    selected for, else why not (one clause for the log line).

    Same PID listed; busy if selected as active, idle if selected as idle;
    and for a request-time kill, a busy row serving the same request line
    that began when the selected one did (within the SS's whole second and
    the pages' fetch times): a request that ended and a new one that started
    are not the same. mod_wsgi daemons are not on the page: nothing to
    confirm there (their process is still re-verified)."""
    if candidate.kind == "wsgi":
        return ""
    if page.workers is None:
        return ("the status page could not be read again to confirm its state"
                + (f" ({page.error})" if page.error else ""))
    mine = [r for r in page.workers if r.pid == candidate.pid and r.mode != "."]
    if not mine:
        return "the status page no longer lists its PID"
    active = _serving(mine, page.own_requests)
    if candidate.kind == "native_idle":
        return "it is serving a request now (it was selected as idle)" if active else ""
    if not active:
        return "it is idle now (the request it was selected for has ended)"
    if candidate.reason != "timeout" or candidate.began is None:
        return ""
    lo, hi = candidate.began
    for row in active:
        if row.ss is None or row.request != candidate.request:
            continue
        new_lo, new_hi = _began(row.ss, page.sent, page.received)
        if new_lo <= hi + CLOCK_SLACK and lo <= new_hi + CLOCK_SLACK:
            return ""
    return "the request it was selected for has ended (it serves another one now)"


def strangers(workers: Optional[Sequence[WorkerRow]], scan: ProcessScan) -> List[int]:
    """PIDs the worker table names that are not in the proven tree: a page is
    not trusted to name processes, so these are never selected."""
    tree = {c.pid for c in scan.children}
    return sorted({r.pid for r in workers or () if r.pid and r.mode != "."} - tree)


def verify(candidate: Candidate, parent_pid: int, parent_create_time: float,
           exe_names: Sequence[str]) -> Tuple[Optional[psutil.Process], str]:
    """(process, '') when it may be signalled now, else (None, why not)."""
    pid = candidate.pid
    if pid <= 1:
        return None, "PID 1 is never signalled"
    if pid == parent_pid:
        return None, "it is the Apache parent"
    try:
        parent = psutil.Process(parent_pid)
        if parent.create_time() != parent_create_time:
            return None, f"the Apache parent {parent_pid} is not the one scanned"
        proc = psutil.Process(pid)
        if proc.create_time() != candidate.create_time:
            return None, "its PID now belongs to another process"
        if proc.ppid() != parent_pid:
            return None, f"it is no longer a child of the Apache parent {parent_pid}"
        if proc.name() not in exe_names:
            return None, f"it is no longer an Apache process ({proc.name()})"
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None, "it has already exited"
        same = _same_executable(pid, parent_pid)
        if same is None:
            return None, "not allowed to inspect it (run the reaper as root)"
        if not same:
            return None, "it does not run the Apache parent's executable"
    except psutil.NoSuchProcess:
        return None, "it has already exited"
    except psutil.AccessDenied:
        return None, "not allowed to inspect it (run the reaper as root)"
    return proc, ""


def _same_executable(pid: int, parent_pid: int) -> Optional[bool]:
    """Whether the process runs the very file its Apache parent runs (device
    and inode of /proc/PID/exe): the name alone is anyone's to choose. None
    when this user may not look (then it is not signalled either)."""
    import os

    try:
        mine, theirs = os.stat(f"/proc/{pid}/exe"), os.stat(f"/proc/{parent_pid}/exe")
    except PermissionError:
        return None
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


class Outcome(NamedTuple):
    killed: List[Candidate]  # all of them, however they were signalled
    escalated: List[Candidate]  # SIGTERM, still alive after the grace: SIGKILL
    skipped: List[Tuple[Candidate, str]]
    at_once: List[Candidate]  # a threaded MPM's child: SIGKILL with no SIGTERM


def execute(candidates: Sequence[Candidate], parent_pid: int, parent_create_time: float,
            exe_names: Sequence[str], grace: float, memory_kind: str = "rss",
            fresh_page: Optional[Callable[[], Page]] = None) -> Outcome:
    """SIGTERM every verified candidate at once, SIGKILL those left after ``grace``;
    a threaded MPM's child (``Candidate.threaded``) gets SIGKILL at once.

    ``fresh_page`` reads the status page again: once before the SIGTERMs and
    once before the SIGKILLs (only when a native worker is concerned), and
    each native worker is confirmed against it (``confirm``); without it only
    the processes are verified."""
    termed: List[Tuple[Candidate, psutil.Process]] = []
    killed_at_once: List[Tuple[Candidate, psutil.Process]] = []
    skipped: List[Tuple[Candidate, str]] = []
    page = _page_for(candidates, fresh_page)
    for c in candidates:
        why = confirm(c, page) if page is not None else ""
        if why:
            skipped.append((c, why))
            log.info("skipped %s: %s", c.describe(memory_kind), why)
            continue
        proc, why = verify(c, parent_pid, parent_create_time, exe_names)
        if proc is None:
            skipped.append((c, why))
            log.warning("skipped %s: %s", c.describe(memory_kind), why)
            continue
        at_once = c.threaded and c.kind != "wsgi"
        try:  # psutil refuses a reused PID too
            proc.send_signal(signal.SIGKILL if at_once else signal.SIGTERM)
        except psutil.NoSuchProcess:
            skipped.append((c, "it has already exited"))
            log.info("skipped %s: it has already exited", c.describe(memory_kind))
            continue
        except psutil.AccessDenied:
            skipped.append((c, "not allowed to signal it (run the reaper as root)"))
            log.error("could not signal %s: permission denied (run the reaper as root)",
                      c.describe(memory_kind))
            continue
        if at_once:
            killed_at_once.append((c, proc))
            log.action(INFO, "killed %s with SIGKILL at once: a worker or event MPM child "
                       "does not end on SIGTERM", c.describe(memory_kind))
        else:
            termed.append((c, proc))
    alive_pids = _wait_gone([p for _, p in termed], grace)
    page = _page_for([c for c, _ in termed if c.pid in alive_pids], fresh_page)
    killed: List[Candidate] = [c for c, _ in killed_at_once]
    escalated: List[Candidate] = []
    for c, _proc in termed:
        if c.pid in alive_pids:
            why = confirm(c, page) if page is not None else ""
            if why:  # it ignored SIGTERM, but is no longer what it was selected for
                skipped.append((c, why))
                log.info("did not SIGKILL %s after SIGTERM: %s", c.describe(memory_kind), why)
                continue
            again, why = verify(c, parent_pid, parent_create_time, exe_names)
            if again is None:  # exited meanwhile, or changed: either way not ours
                if why != "it has already exited":
                    skipped.append((c, why))
                    log.warning("did not SIGKILL %s: %s", c.describe(memory_kind), why)
                    continue
            else:
                try:
                    again.send_signal(signal.SIGKILL)
                    escalated.append(c)
                    log.action(WARNING, "%s did not exit within %g s of SIGTERM: "
                               "sent SIGKILL", c.describe(memory_kind), grace)
                except psutil.NoSuchProcess:
                    pass
        killed.append(c)
        log.action(INFO, "killed %s", c.describe(memory_kind))
    if escalated or killed_at_once:
        _wait_gone([p for c, p in termed if c in escalated] + [p for _, p in killed_at_once],
                   5.0)
    return Outcome(killed, escalated, skipped, [c for c, _ in killed_at_once])


def _page_for(candidates: Sequence[Candidate],
              fresh_page: Optional[Callable[[], Page]]) -> Optional[Page]:
    """One fresh page for a signal round, if any native worker is in it."""
    if fresh_page is None or all(c.kind == "wsgi" for c in candidates):
        return None
    return fresh_page()


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(procs: Sequence[psutil.Process], timeout: float) -> set:
    """PIDs still alive after waiting up to ``timeout`` for all of them at once.

    A process that has exited but not yet been reaped by its parent (a zombie)
    counts as gone: psutil's wait_procs would wait for the reaping, which for
    Apache's children is the parent's business, not ours."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        alive = [p for p in alive if not _gone(p)]
    return {p.pid for p in alive}
