"""One run of apache-worker-reaper, and its bookkeeping in the state file.

The page is fetched first, without any lock; then, under the state file's
lock, the Apache tree serving --url is proven, scanned, the policy selects,
the verified signals are sent (reaper/policy.py) and the run's counts are added to
the totals. A tree that cannot be proven means no signal at all.

A page read before a wait for the lock is stale by the time of the decision
(another reaper may have spent its whole --grace meanwhile): after a wait the
page is read again, under the lock, and decided on. Before each round of
signals a fresh page confirms every native worker is still what it was
selected for. These reads happen under the lock, each bounded by --timeout:
a reaper waiting for the lock waits for them too, never longer.
"""

from __future__ import annotations

import re
import time

from apache_metrics_exporter.errors import EXIT_OK
from apache_metrics_exporter.log import INFO, log
from apache_metrics_exporter.units import hostport

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Dict

    from apache_metrics_exporter.collect.http import Fetcher, Target
    from apache_metrics_exporter.reaper.policy import Page, Thresholds
    from apache_metrics_exporter.runconfig import ReaperConfig


def run_reaper(config: ReaperConfig, target: Target, thresholds: Thresholds) -> int:
    """One reaper run: the page is fetched first, then everything that acts
    (scan, selection, signals, counters) happens under the state file's lock.
    The first read holds no lock; the reads under it (after a wait, and one
    per round of signals when a native worker is to be signalled: at most
    three) are each bounded by --timeout, so a hung Apache can make the next
    run wait a little longer, never block it."""
    from apache_metrics_exporter.collect.http import Fetcher
    from apache_metrics_exporter.collect.processes import parent_of_url, scan
    from apache_metrics_exporter.reaper.policy import execute, select, strangers
    from apache_metrics_exporter.reaper.state import RunCounts, StateFile, record_run

    exe_names = config.exe_names
    state_file = StateFile(config.state_file)
    state_file.check()  # an untrusted state file is refused before any work
    started = time.time()
    fetcher = Fetcher(target)
    page = read_page(fetcher)
    with state_file.locked(config.lock_timeout) as state:
        if state_file.waited:
            # The page predates the wait: another reaper may have acted and
            # requests may have ended or begun since. Decide on a fresh one.
            log.info("reading %s again: the page read before waiting for the lock is stale",
                     target.url)
            page = read_page(fetcher)
        workers, fetched_at = page.workers, page.received
        parent = parent_of_url(fetcher.host, fetcher.port, exe_names, config.pid_file,
                               [w.pid for w in workers or () if w.pid],
                               fetcher.peer if workers is not None else None)
        totals = state["totals"]
        # A refused connection to a loopback URL and no listener to prove are
        # one cause (Apache is not listening there): said once, with the fix.
        not_listening = page.refused and parent.pid is None and fetcher.is_local()
        if not_listening:
            log.error("nothing listens on %s (connection refused): signalling nothing "
                      "this run; start Apache, or point --url at the address and port "
                      "it listens on", hostport(fetcher.host, fetcher.port))
        elif page.error:  # a missing worker table is a setting, not a failure
            # The consequence first: the reason may end in a question
            # ("is Apache running and listening there?").
            (log.warning if page.error.endswith(NO_TABLE) else log.error)(
                "native workers are left alone this run: %s", page.error)
        if parent.pid is None:
            if not not_listening:
                log.error("cannot prove which Apache serves %s: %s; signalling nothing",
                          target.url, parent.reason)
            if not config.dry_run:  # a dry run changes no counter but would_kill
                totals["runs"] += 1
                totals["unproven_runs"] += 1
            record_run(state, RunCounts(int(started), bool(config.dry_run), result="skipped"))
            return EXIT_OK
        processes = scan(parent.pid, exe_names, config.memory,
                         config.wsgi_group_names == "config")
        for warning in processes.warnings:
            log.warning("%s", warning)
        outside = strangers(workers, processes)
        if outside:
            log.warning("the status page names PIDs outside the Apache tree of PID %d "
                        "(%s): never signalled", parent.pid,
                        ", ".join(map(str, outside[:10])) + (" ..." if len(outside) > 10
                                                              else ""))
        parent_pid = parent.pid
        selected = select(workers, processes, thresholds, fetched_at=fetched_at,
                          sent_at=page.sent, own_requests=page.own_requests, mpm=page.mpm)
        result = "ok"
        if len(selected) > config.max_kills:
            result = "circuit-breaker"
            if not config.dry_run:  # a dry run changes no counter but would_kill
                totals["circuit_breaker_trips"] += 1
            log.error("circuit breaker: %d processes are over a threshold, more than "
                      "--max-kills %d; acting on the worst %d only - check the thresholds",
                      len(selected), config.max_kills, config.max_kills)
            selected = selected[:config.max_kills]
        kills = {"native_active": 0, "native_idle": 0, "wsgi": 0}
        would_kill = escalations = skipped = at_once = 0
        if config.dry_run:
            for c in selected:
                log.action(INFO, "would kill %s", c.describe(processes.memory_kind))
            would_kill = len(selected)
            totals["would_kill"] += would_kill
            result = "dry-run" if result == "ok" else result
        elif selected:
            outcome = execute(selected, parent_pid, processes.parent_create_time or 0.0,
                              exe_names, config.grace, processes.memory_kind,
                              fresh_page=lambda: read_page(fetcher))
            for c in outcome.killed:
                totals["kills"][c.kind] += 1
                totals["reasons"][c.reason] += 1
                kills[c.kind] += 1
            escalations, skipped = len(outcome.escalated), len(outcome.skipped)
            at_once = len(outcome.at_once)
            totals["sigkill_escalations"] += escalations
            totals["skipped_for_safety"] += skipped
        if not config.dry_run:
            totals["runs"] += 1
        run = RunCounts(int(started), bool(config.dry_run), len(processes.children),
                        kills["native_active"], kills["native_idle"], kills["wsgi"],
                        would_kill, escalations, skipped, result)
        record_run(state, run)
        killed = sum(kills.values())
        if config.dry_run:
            log.action(INFO, "dry run: would kill %d of %d processes checked", would_kill,
                       run.checked)
        elif killed or skipped:
            log.action(INFO, "%s", kill_summary(killed, run.checked, kills, escalations,
                                                at_once, skipped))
        else:
            log.info("no process over a threshold (%d checked)", run.checked)
    return EXIT_OK


NO_TABLE = "has no worker table (ExtendedStatus Off?)"


def kill_summary(killed: int, checked: int, kills: Dict[str, int], escalations: int, at_once: int,
                 skipped: int) -> str:
    """The run's last line: how many were killed, and how - each kill counted
    once, by the signal that ended it: SIGTERM alone, SIGKILL after --grace
    (an escalation: it ignored the SIGTERM), or SIGKILL at once (a worker or
    event MPM child, never sent SIGTERM), so that a kill logged as "with
    SIGKILL at once" is not contradicted by "0 needed SIGKILL"."""
    by_term = killed - escalations - at_once
    return (f"killed {killed} of {checked} processes checked ({kills['native_active']} "
            f"active, {kills['native_idle']} idle, {kills['wsgi']} mod_wsgi): {by_term} "
            f"ended on SIGTERM, {escalations} needed SIGKILL after --grace, {at_once} got "
            f"SIGKILL at once (worker/event MPM); {skipped} skipped")


def read_page(fetcher: Fetcher) -> Page:
    """The worker table now, with the times around its fetch (a Page whose
    ``error`` says why there is none). The connection is closed after each
    read: none is kept open across a wait.

    Each read asks for the page with a nonce of its own in the query
    (http.tagged), so that the row serving it is told from any other read of
    the same page. The nonce is in no message: errors name the plain URL."""
    import os

    from apache_metrics_exporter.collect.http import own_lines, tagged
    from apache_metrics_exporter.collect.snapshot import fetch_reason
    from apache_metrics_exporter.collect.status import parse_html
    from apache_metrics_exporter.errors import FetchError
    from apache_metrics_exporter.reaper.policy import Page

    url = fetcher.target.url
    nonce = os.urandom(8).hex()
    asked = tagged(url, nonce)
    mine = own_lines(url, nonce)
    if not mine:
        log.once(INFO, f"{url} is too long for the worker table to show the reaper's own read "
                  "of it whole: that read's row counts as a request")
    sent = time.time()
    refused = False
    mpm = ""
    try:
        body = fetcher.get(asked)
        workers = parse_html(body, source=url).workers
        mpm = server_mpm(body)
        error = "" if workers is not None else f"{url} {NO_TABLE}"
    except FetchError as exc:
        workers, error = None, str(exc).replace(asked, url)
        refused = fetch_reason(exc) == "refused"  # nothing listening there
    finally:
        fetcher.close()
    return Page(workers, sent, time.time(), error, mine, refused, mpm)


_MPM = re.compile(rb"<dt>Server MPM: ([a-z]{1,16})</dt>")


def server_mpm(body: bytes) -> str:
    """The MPM the HTML page names (``prefork``, ``worker``, ``event``), or ''
    when it names none: the reaper signals a threaded MPM's children otherwise
    (policy.execute)."""
    found = _MPM.search(body, 0, 8192)  # in the page's head, before any table
    return found.group(1).decode() if found else ""


