"""apache-worker-reaper on real Apache servers and real processes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from apache_metrics_exporter.catalogue import NATIVE_GROUP
from apache_metrics_exporter.collect.http import own_lines, request_line, tagged
from apache_metrics_exporter.collect.processes import ProcessScan, ProcInfo
from apache_metrics_exporter.collect.status import parse_html
from apache_metrics_exporter.reaper.policy import (
    Candidate,
    Page,
    Thresholds,
    confirm,
    execute,
    select,
)
from tests.conftest import data, exporter_env, live_children, parse_tab, run_exporter
from tests.harness.apache import ApacheServer, free_port

REAPER = os.path.join(os.path.dirname(sys.executable), "apache-worker-reaper")

SINGLE_EVENT_PROCESS = """
StartServers 1
ServerLimit 1
ThreadsPerChild 8
ThreadLimit 8
MaxRequestWorkers 8
MinSpareThreads 1
MaxSpareThreads 8
"""


def reap(*args: str, timeout: float = 60, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([REAPER, *args], capture_output=True, text=True, timeout=timeout,
                          env=env or exporter_env())


# A sitecustomize for the reaper's interpreter (put on its PYTHONPATH): every
# signal it sends (os.kill, which psutil's send_signal uses; signal 0 is only
# a probe) is written to $AME_TEST_KILL_LOG, after a first line "loaded".
KILL_SPY = """
import os, sys
_log = os.environ["AME_TEST_KILL_LOG"]
with open(_log, "a") as fh:
    fh.write("loaded\\n")
def _spy(event, args):
    if event == "os.kill" and args[1] != 0:
        with open(_log, "a") as fh:
            fh.write(f"kill {args[0]} {args[1]}\\n")
sys.addaudithook(_spy)
"""


def state_of(path: Path) -> dict:
    return json.loads(path.read_text())


def children(apache: ApacheServer) -> dict:
    """{pid: create_time} of the Apache parent's live children."""
    return live_children(apache.proc.pid)


def background(apache: ApacheServer, path: str) -> threading.Thread:
    """A request left running (its worker may be killed: errors are expected)."""
    def go():
        try:
            apache.get(path, timeout=60)
        except (urllib.error.URLError, OSError, ConnectionError):
            pass
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def wait_for_request(apache: ApacheServer, needle: str, min_ss: int, timeout: float = 15):
    """Until the worker table shows ``needle`` running for at least ``min_ss`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(apache.status_url) as r:
            rows = parse_html(r.read()).workers or []
        for row in rows:
            if needle in row.request and row.is_active and (row.ss or 0) >= min_ss:
                return row
        time.sleep(0.2)
    raise AssertionError(f"{needle} never ran {min_ss} s")


def serves(apache: ApacheServer, path: str = "/index.html", timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            apache.get(path, timeout=5)
            return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return False


def stderr_lines(proc: subprocess.Popen, needle: str) -> tuple:
    """(event set once ``needle`` is in a line, the lines so far, the reader
    thread) for a process's stderr, read to its end in the background."""
    seen, lines = threading.Event(), []

    def read():
        for line in proc.stderr:
            lines.append(line)
            if needle in line:
                seen.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return seen, lines, reader


@pytest.fixture
def server(request):
    mpm = getattr(request, "param", "prefork")
    apache = ApacheServer(mpm).start()
    yield apache
    apache.stop()


# --- policy on its own --------------------------------------------------------

def _rows(*cells):
    head = ("<tr><th>Srv</th><th>PID</th><th>M</th><th>SS</th><th>Request</th></tr>")
    body = "".join(f"<tr><td>0-0</td><td>{pid}</td><td>{m}</td><td>{ss}</td><td>{req}</td></tr>"
                   for pid, m, ss, req in cells)
    page = f"<html><h1>Apache Status</h1><table>{head}{body}</table></html>".encode()
    return parse_html(page).workers


def _scan(*procs):
    return ProcessScan(100, 1.0, [ProcInfo(pid, 1.0, group, mem, "") for pid, group, mem in procs],
                       set(), "rss")


def test_threaded_process_is_idle_only_when_all_threads_are():
    rows = _rows((200, "_", 0, "GET /a"), (200, "W", 3, "GET /busy"), (300, "_", 0, "GET /b"),
                 (300, "I", 0, ""))
    scan = _scan((200, NATIVE_GROUP, 500), (300, NATIVE_GROUP, 500))
    picked = select(rows, scan, Thresholds(max_memory_idle=100))
    assert [(c.pid, c.kind) for c in picked] == [(300, "native_idle")]
    picked = select(rows, scan, Thresholds(max_memory_active=100))
    assert [(c.pid, c.kind, c.request) for c in picked] == [(200, "native_active", "GET /busy")]


def test_timeout_on_any_thread_selects_the_process_and_names_the_others():
    rows = _rows((200, "W", 2, "GET /quick"), (200, "W", 95, "GET /slow"),
                 (200, "K", 1, "GET /kept"), (200, "_", 999, "GET /old-idle"))
    (c,) = select(rows, _scan((200, NATIVE_GROUP, 10)), Thresholds(max_time=60))
    assert (c.reason, c.value, c.request) == ("timeout", 95, "GET /slow")
    assert c.others == ("GET /quick", "GET /kept")
    text = c.describe("rss")
    assert text == ("native worker 200 (active; request running 95 s > 60 s; GET /slow; "
                    "also serving 2 other requests: GET /quick, GET /kept)")


def test_a_pid_reused_since_the_page_was_read_is_not_blamed_for_its_request():
    # The page says PID 200 has served one request for 95 s; the process that
    # has PID 200 now started 10 s ago: the request was an earlier process's.
    rows = _rows((200, "W", 95, "GET /slow"))
    now = 1_000_000.0
    young = ProcessScan(100, 1.0, [ProcInfo(200, now - 10, NATIVE_GROUP, 10, "")], set(), "rss")
    assert select(rows, young, Thresholds(max_time=60), fetched_at=now) == []
    old = young._replace(children=[ProcInfo(200, now - 500, NATIVE_GROUP, 10, "")])
    assert [c.pid for c in select(rows, old, Thresholds(max_time=60), fetched_at=now)] == [200]


def _page(rows, sent, received=None, error=""):
    return Page(rows, sent, sent + 0.05 if received is None else received, error)


def test_confirm_step_against_a_fresh_page():
    t0 = 1_000_000.0
    scan = _scan((200, NATIVE_GROUP, 10), (300, NATIVE_GROUP, 500))
    chosen = _page(_rows((200, "W", 5, "GET /slow"), (300, "_", 0, "GET /x")), t0)
    slow, idle = sorted(select(chosen.workers, scan, Thresholds(max_time=2, max_memory_idle=100),
                               fetched_at=chosen.received, sent_at=chosen.sent),
                        key=lambda c: c.pid)
    assert (slow.reason, slow.kind, idle.kind) == ("timeout", "native_active", "native_idle")
    assert slow.began is not None

    def fresh(*cells, later=9.0, error=""):
        return _page(_rows(*cells) if not error else None, t0 + later, error=error)

    # Still the same: the same request 9 s later, the idle one still idle.
    same = fresh((200, "W", 14, "GET /slow"), (300, "_", 9, "GET /x"))
    assert confirm(slow, same) == "" and confirm(idle, same) == ""
    # Its request ended during the wait.
    assert "it is idle now" in confirm(slow, fresh((200, "_", 3, "GET /slow")))
    # A new request of its own: same line, but it began after the selected one.
    assert "has ended" in confirm(slow, fresh((200, "W", 2, "GET /slow")))
    assert "has ended" in confirm(slow, fresh((200, "W", 14, "GET /other")))
    # The PID is gone from the page (the process exited, another took the slot).
    assert "no longer lists" in confirm(slow, fresh((201, "W", 14, "GET /slow")))
    assert "no longer lists" in confirm(idle, fresh((300, ".", 0, "")))
    # The idle one started serving a request (on any of its threads).
    busy = fresh((300, "_", 9, "GET /x"), (300, "W", 1, "GET /new"))
    assert "serving a request now" in confirm(idle, busy)
    # Without a fresh page nothing native is confirmed; mod_wsgi daemons are not on it.
    down = fresh(error="http://127.0.0.1/server-status: connection refused")
    assert "could not be read again" in confirm(slow, down) and "refused" in confirm(idle, down)
    wsgi = select(None, _scan((400, "example", 300)), Thresholds(max_memory_wsgi=200))[0]
    assert confirm(wsgi, down) == ""
    # A memory kill of a busy worker needs it busy, not the same request.
    big = select(chosen.workers, _scan((200, NATIVE_GROUP, 500)),
                 Thresholds(max_memory_active=100), fetched_at=t0)[0]
    assert confirm(big, fresh((200, "W", 1, "GET /next"))) == ""
    assert "it is idle now" in confirm(big, fresh((200, "_", 1, "GET /next")))


def test_the_reapers_own_read_of_the_page_makes_no_worker_busy():
    # The worker that serves the status page shows itself busy with that very
    # request; it is idle again once the page is sent. The read carries a
    # nonce: its row is told from anyone else's read of the same page.
    url = "http://127.0.0.1:8080/server-status"
    assert tagged(url, "0a1b2c3d4e5f6071") == \
        "http://127.0.0.1:8080/server-status?ame=0a1b2c3d4e5f6071"
    own = own_lines(url, "0a1b2c3d4e5f6071")
    assert own == ("GET /server-status?ame=0a1b2c3d4e5f6071 HTTP/1.1",)
    rows = _rows((300, "_", 4, "GET /x"), (300, "W", 0, own[0]))
    scan = _scan((300, NATIVE_GROUP, 500))
    (c,) = select(rows, scan, Thresholds(max_memory_idle=100), own_requests=own)
    assert c.kind == "native_idle"
    assert select(rows, scan, Thresholds(max_memory_idle=100)) == []  # busy without it
    assert confirm(c, _page(rows, 1.0)._replace(own_requests=own)) == ""
    assert "serving a request now" in confirm(c, _page(rows, 1.0))
    # Someone else's read of the same page - the same second, or a long one -
    # is a request like any other (before the nonce, it looked like ours).
    for ss in (0, 7):
        other = _rows((300, "_", 4, "GET /x"), (300, "W", ss, request_line(url)))
        assert select(other, scan, Thresholds(max_memory_idle=100), own_requests=own) == []
        assert "serving a request now" in confirm(c, _page(other, 1.0)._replace(
            own_requests=own))
    # Another reaper's read (another nonce) too.
    theirs = _rows((300, "W", 0, own_lines(url, "ffffffffffffffff")[0]))
    assert "serving a request now" in confirm(c, _page(theirs, 1.0)._replace(
        own_requests=own))


def test_the_nonce_goes_first_and_is_matched_only_where_the_cut_keeps_it():
    nonce = "0a1b2c3d4e5f6071"
    # The user's query comes after it; ``auto`` never appears.
    assert tagged("http://[::1]/s?x=1#frag", nonce) == f"http://[::1]/s?ame={nonce}&x=1"
    head = own_lines("http://[::1]/s?x=1&token=" + "t" * 80, nonce)
    # The default cut (first 63 characters) keeps the nonce; the tail cut
    # (SeeRequestTail On) does not, and is no match.
    assert head == (("GET /s?ame=" + nonce + "&x=1&token=" + "t" * 80)[:63],)
    assert all(len(line) == 63 for line in head)
    # A path so long that the nonce is cut off at the head: only the tail
    # form (which shows it) matches, and never the head (anyone's read).
    long = "http://127.0.0.1/" + "p" * 60
    assert own_lines(long, nonce) == (f"GET /{'p' * 60}?ame={nonce} HTTP/1.1"[-63:],)
    # Both cut off (a long path and a long query): nothing is ours.
    assert own_lines(long + "?q=" + "q" * 60, nonce) == ()
    assert request_line("http://[::1]/s?x=1") == "GET /s?x=1 HTTP/1.1"
    assert len(request_line("http://127.0.0.1/" + "x" * 100)) == 63


def test_request_start_allows_for_whole_seconds_and_fetch_time():
    # SS is rounded down and Apache's "now" is anywhere within the fetch: the
    # same request read twice may look up to a second (plus fetch time) apart.
    rows = _rows((200, "W", 5, "GET /slow"))
    (c,) = select(rows, _scan((200, NATIVE_GROUP, 1)), Thresholds(max_time=2),
                  fetched_at=1000.9, sent_at=1000.0)
    assert c.began == (994.0, 995.9)
    for ss, sent, ok in ((5, 1000.0, True), (6, 1001.9, True), (4, 999.2, True),
                         (15, 1010.0, True), (14, 1010.0, True), (13, 1010.5, False),
                         (17, 1010.0, False)):
        page = _page(_rows((200, "W", ss, "GET /slow")), sent, sent + 0.1)
        assert (confirm(c, page) == "") is ok, (ss, sent)


def test_starting_slots_with_an_epoch_ss_are_no_timeout_candidates():
    page = parse_html(data("synth-2.4.71-event-starting.html"))
    pids = {r.pid for r in page.workers}
    assert 5511 in pids
    scan = _scan(*((pid, NATIVE_GROUP, 10) for pid in pids))
    assert select(page.workers, scan, Thresholds(max_time=60), fetched_at=time.time()) == []


def test_wsgi_thresholds_per_group_and_unknown_natives_left_alone():
    scan = _scan((400, "example", 300), (401, "reports", 300), (402, "other", 300),
                 (500, NATIVE_GROUP, 10**9))  # 500: no row in the table
    th = Thresholds(max_memory_wsgi=200, wsgi_groups=(("reports", 1000),), max_memory_idle=1)
    picked = select(_rows(), scan, th)
    assert sorted(c.pid for c in picked) == [400, 402]
    assert {c.kind for c in picked} == {"wsgi"}
    assert "mod_wsgi daemon 400 of group 'example' (RSS 300 B > 200 B)" in \
        [c.describe("rss") for c in picked]


def test_worst_excess_first():
    scan = _scan((1001, "g", 300), (1002, "g", 900), (1003, "g", 500))
    picked = select(None, scan, Thresholds(max_memory_wsgi=100))
    assert [c.pid for c in picked] == [1002, 1003, 1001]


# --- verification before signalling, with real processes ----------------------

# A child that takes SIGTERM (and the test's SIGWINCH marker) one at a time
# with sigwaitinfo, notes each in the log and carries on; "ready" once they
# are blocked, so none can be missed or kill it before the log is written.
TRAP = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG: die with the family's parent
if os.getppid() == 1:
    sys.exit()  # it is gone already
wanted = {signal.SIGTERM, signal.SIGWINCH}
signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
print("ready", flush=True)
while True:
    signum = signal.sigwaitinfo(wanted).si_signo
    with open(sys.argv[1], "a") as fh:
        fh.write(f"{os.getpid()} got {signum}\\n")
"""


def spawn_family(tmp_path: Path, children: int) -> tuple:
    """(parent Popen, [child psutil.Process], log): a parent process whose
    children write every SIGTERM they get to the log and carry on. The parent
    prints its children's PIDs once every child has said it is ready."""
    log = tmp_path / "signals.log"
    script = tmp_path / "trap.py"
    script.write_text(TRAP)
    starter = tmp_path / "parent.py"
    starter.write_text(
        "import subprocess, sys\n"
        f"cs = [subprocess.Popen([sys.executable, {str(script)!r}, {str(log)!r}], "
        f"stdout=subprocess.PIPE) for _ in range({children})]\n"
        "assert [c.stdout.readline() for c in cs] == [b'ready\\n'] * len(cs)\n"
        "print(' '.join(str(c.pid) for c in cs), flush=True)\n"
        "sys.stdin.read()  # until the test closes it, or exits\n")
    parent = subprocess.Popen([sys.executable, str(starter)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    kids = [psutil.Process(int(p)) for p in parent.stdout.readline().split()]
    assert len(kids) == children, "the children never became ready"
    return parent, kids, log


def signals_noted(child: psutil.Process, log: Path, timeout: float = 10) -> list:
    """The log's lines for ``child`` once it has taken every signal sent to it
    before this call: SIGWINCH (28) is sent and its line waited for; a SIGTERM
    (15) already pending is taken first (sigwaitinfo takes the lowest number),
    one taken earlier was written earlier. The marker's line is left out."""
    marker = f"{child.pid} got {signal.SIGWINCH.value}"
    child.send_signal(signal.SIGWINCH)
    deadline = time.monotonic() + timeout
    while True:  # until the marker is in: the readiness condition itself
        lines = log.read_text().splitlines() if log.exists() else []
        if marker in lines:
            return [ln for ln in lines if ln != marker and ln.startswith(f"{child.pid} ")]
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE, \
            "the child died"
        assert time.monotonic() < deadline, "the child never noted the marker"
        time.sleep(0.01)


def end_family(parent: subprocess.Popen, kids: list) -> None:
    for p in (*kids, psutil.Process(parent.pid)):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    parent.wait()


@pytest.fixture
def family(tmp_path):
    """A parent process with one child that records every SIGTERM it gets."""
    parent, kids, log = spawn_family(tmp_path, 1)
    yield psutil.Process(parent.pid), kids[0], log
    end_family(parent, kids)


def _candidate(proc: psutil.Process, create_time=None) -> Candidate:
    return Candidate(proc.pid, create_time if create_time is not None else proc.create_time(),
                     "native_idle", "memory", 10, 1, 10, "", (), NATIVE_GROUP)


def test_pid_with_another_start_time_is_never_signalled(family):
    parent, child, log = family
    # The scan saw a process that has exited; its PID now belongs to this child
    # (same PID, another start time): no signal may reach it.
    stale = _candidate(child, create_time=child.create_time() - 50)
    outcome = execute([stale], parent.pid, parent.create_time(), (child.name(),), grace=0.5)
    assert outcome.killed == [] and len(outcome.skipped) == 1
    assert "another process" in outcome.skipped[0][1]
    assert signals_noted(child, log) == [] and child.is_running()


def test_only_children_of_the_scanned_parent_the_parent_and_pid_1(family):
    parent, child, log = family
    me = psutil.Process()
    for cand, why in ((_candidate(child), "no longer a child"),):
        outcome = execute([cand], me.pid, me.create_time(), (child.name(),), grace=0.5)
        assert why in outcome.skipped[0][1]
    outcome = execute([_candidate(parent)], parent.pid, parent.create_time(),
                      (parent.name(),), grace=0.5)
    assert "Apache parent" in outcome.skipped[0][1]
    init = psutil.Process(1)
    outcome = execute([_candidate(init)], parent.pid, parent.create_time(), ("init",), 0.5)
    assert "PID 1" in outcome.skipped[0][1]
    outcome = execute([_candidate(child)], parent.pid, parent.create_time() + 1,
                      (child.name(),), grace=0.5)
    assert "not the one scanned" in outcome.skipped[0][1]
    outcome = execute([_candidate(child)], parent.pid, parent.create_time(),
                      ("apache2",), grace=0.5)
    assert "no longer an Apache process" in outcome.skipped[0][1]
    assert signals_noted(child, log) == [] and child.is_running()


def test_vanished_process_is_skipped_not_a_crash(family):
    parent, child, log = family
    cand = _candidate(child)
    child.kill()
    deadline = time.monotonic() + 5
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.05)  # gone (a zombie until its parent reaps it)
    outcome = execute([cand], parent.pid, parent.create_time(), (child.name(),), grace=0.5)
    assert outcome.killed == [] and "already exited" in outcome.skipped[0][1]


def test_sigterm_ignored_means_sigkill_after_grace(family):
    parent, child, log = family  # the child notes SIGTERM and carries on
    started = time.monotonic()
    outcome = execute([_candidate(child)], parent.pid, parent.create_time(),
                      (child.name(),), grace=1.0)
    assert [c.pid for c in outcome.escalated] == [child.pid]
    assert [c.pid for c in outcome.killed] == [child.pid]
    assert 1.0 <= time.monotonic() - started < 8
    assert log.read_text().strip() == f"{child.pid} got {signal.SIGTERM.value}"
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def _pages(*pages):
    """A fresh_page callable handing out these pages in turn (and counting)."""
    handed = []

    def fresh_page():
        handed.append(pages[len(handed)])
        return handed[-1]
    return fresh_page, handed


def _timeout_candidate(proc: psutil.Process, now: float) -> Candidate:
    """Selected for "GET /slow", 30 s old on a page read at ``now``."""
    return Candidate(proc.pid, proc.create_time(), "native_active", "timeout", 10, 5, 30,
                     "GET /slow", (), NATIVE_GROUP, began=(now - 31, now - 30))


def test_no_sigterm_for_a_worker_the_fresh_page_shows_changed(family):
    parent, child, log = family
    now = time.time()
    idle = _candidate(child)  # selected as idle (memory)
    fresh_page, handed = _pages(_page(_rows((child.pid, "W", 0, "GET /new")), now))
    outcome = execute([idle], parent.pid, parent.create_time(), (child.name(),), grace=0.5,
                      fresh_page=fresh_page)
    assert outcome.killed == [] and len(handed) == 1
    assert "serving a request now" in outcome.skipped[0][1]
    assert signals_noted(child, log) == [] and child.is_running()
    # A request-time candidate whose request has been replaced by a new one.
    slow = _timeout_candidate(child, now - 20)
    fresh_page, handed = _pages(_page(_rows((child.pid, "W", 3, "GET /slow")), now))
    outcome = execute([slow], parent.pid, parent.create_time(), (child.name(),), grace=0.5,
                      fresh_page=fresh_page)
    assert outcome.killed == [] and "has ended" in outcome.skipped[0][1]
    assert signals_noted(child, log) == [] and child.is_running()


def test_no_sigkill_when_the_request_ended_during_grace(family):
    parent, child, log = family  # the child notes SIGTERM and carries on
    now = time.time()
    slow = _timeout_candidate(child, now)
    still = _page(_rows((child.pid, "W", 30, "GET /slow")), now + 0.2)
    ended = _page(_rows((child.pid, "_", 0, "GET /slow")), now + 1.5)
    fresh_page, handed = _pages(still, ended)
    outcome = execute([slow], parent.pid, parent.create_time(), (child.name(),), grace=1.0,
                      fresh_page=fresh_page)
    assert len(handed) == 2  # one page per signal round
    assert outcome.killed == [] and outcome.escalated == []
    assert "it is idle now" in outcome.skipped[0][1]
    assert signals_noted(child, log) == [f"{child.pid} got {signal.SIGTERM.value}"]
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    # Still serving the same request after grace: SIGKILL, as before.
    later = _page(_rows((child.pid, "W", 32, "GET /slow")), now + 2.0)
    fresh_page, handed = _pages(still, later)
    outcome = execute([slow], parent.pid, parent.create_time(), (child.name(),), grace=1.0,
                      fresh_page=fresh_page)
    assert [c.pid for c in outcome.escalated] == [child.pid] and len(handed) == 2


# --- the command against real Apache servers ---------------------------------------------

@pytest.mark.integration
def test_memory_hog_on_prefork_is_killed_exactly(server, tmp_path):
    state = tmp_path / "state.json"
    body = server.get("/embedded?hog=96").decode()
    hog = int(body.split("pid=")[1].split()[0])
    before = children(server)
    assert hog in before
    proc = reap("--url", server.status_url, "--max-memory-idle", "64M",
                "--max-memory-active", "64M", "--state-file", str(state), "--grace", "5")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    killed = [ln for ln in lines if ": killed native worker" in ln]
    assert len(killed) == 1 and f"native worker {hog} (idle; RSS " in killed[0]
    assert "> 64.0 MiB" in killed[0]
    assert "killed 1 of" in lines[-1]  # the summary
    after = children(server)
    assert hog not in after
    assert all(after.get(pid) == ct for pid, ct in before.items() if pid != hog)
    assert serves(server)
    totals = state_of(state)["totals"]
    assert totals["kills"] == {"native_active": 0, "native_idle": 1, "wsgi": 0}
    assert totals["reasons"]["memory"] == 1 and totals["runs"] == 1
    # The collector reports it, in every format.
    tab = parse_tab(run_exporter("--url", server.status_url, "--state-file", str(state)).stdout)
    assert tab["workers-killed-idle"] == "1" and tab["workers-killed-active"] == "0"
    assert tab["reaper-kills-total native_idle"] == "1"
    assert tab["reaper-kills-by-reason-total memory"] == "1"
    influx = run_exporter("--url", server.status_url, "--state-file", str(state),
                          "--format", "influx").stdout
    (reaper_line,) = [ln for ln in influx.splitlines() if ln.startswith("apache_reaper,")]
    assert "kills_native_idle=1i" in reaper_line and "runs=1i" in reaper_line
    collectd = run_exporter("--url", server.status_url, "--state-file", str(state),
                            "--format", "collectd", "--hostname", "h").stdout
    assert f'"h/apache-127.0.0.1_{server.port}/derive-reaper_kills_native_idle"' in collectd


@pytest.mark.integration
def test_request_past_max_time_is_killed_on_prefork(server, tmp_path):
    background(server, "/embedded?sleep=40")
    row = wait_for_request(server, "sleep=40", 2)
    proc = reap("--url", server.status_url, "--max-time", "1s", "--grace", "3",
                "--state-file", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ": killed native worker" in ln]
    assert f"native worker {row.pid} (active; request running" in line
    assert "GET /embedded?sleep=40 HTTP/1.1" in line
    assert row.pid not in children(server)
    assert state_of(tmp_path / "s.json")["totals"]["reasons"]["timeout"] == 1
    assert serves(server)


@pytest.mark.integration
def test_request_past_max_time_on_event_names_the_other_requests(tmp_path):
    apache = ApacheServer("event", mpm_conf=SINGLE_EVENT_PROCESS).start()
    try:
        background(apache, "/embedded?sleep=40&first=1")
        wait_for_request(apache, "first=1", 3)
        background(apache, "/embedded?sleep=40&second=1")
        wait_for_request(apache, "second=1", 0)
        proc = reap("--url", apache.status_url, "--max-time", "2s", "--grace", "3",
                    "--state-file", str(tmp_path / "s.json"))
        assert proc.returncode == 0, proc.stderr
        (line,) = [ln for ln in proc.stderr.splitlines() if ": killed native worker" in ln]
        assert "GET /embedded?sleep=40&first=1 HTTP/1.1" in line
        assert "also serving" in line and "second=1" in line
        assert serves(apache)
    finally:
        apache.stop()


@pytest.mark.integration
def test_wsgi_group_over_threshold_is_restarted_by_mod_wsgi(server, tmp_path):
    before = {p.pid for p in psutil.Process(server.proc.pid).children()
              if p.cmdline()[0].startswith("(wsgi:example)")}
    others = {p.pid for p in psutil.Process(server.proc.pid).children()
              if p.cmdline()[0].startswith("(wsgi:reporting")}
    assert len(before) == 2
    proc = reap("--url", server.status_url, "--max-memory-wsgi", "example=1M",
                "--state-file", str(tmp_path / "s.json"), "--grace", "5")
    assert proc.returncode == 0, proc.stderr
    killed = [ln for ln in proc.stderr.splitlines() if "killed mod_wsgi daemon" in ln]
    assert len(killed) == 2 and all("of group 'example'" in ln for ln in killed)
    assert serves(server, "/daemon")  # mod_wsgi started new daemon processes
    now = psutil.Process(server.proc.pid).children()
    fresh = {p.pid for p in now if p.cmdline()[0].startswith("(wsgi:example)")}
    assert len(fresh) == 2 and not fresh & before
    assert others <= {p.pid for p in now}  # the other group was not touched
    assert state_of(tmp_path / "s.json")["totals"]["kills"]["wsgi"] == 2


@pytest.mark.integration
def test_dry_run_signals_nothing_and_counts_would_kill(server, tmp_path):
    state = tmp_path / "s.json"
    for _ in range(4):
        server.get("/embedded")
    before = children(server)
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(KILL_SPY)
    kills = tmp_path / "kills.log"
    proc = reap("--url", server.status_url, "--max-memory-idle", "1M", "--dry-run",
                "--max-kills", "50", "--state-file", str(state),
                env=exporter_env(PYTHONPATH=str(spy), AME_TEST_KILL_LOG=str(kills)))
    assert proc.returncode == 0, proc.stderr
    would = [ln for ln in proc.stderr.splitlines() if "info: would kill " in ln]
    assert would
    # Not one signal left the reaper (so none can still be on its way to a
    # worker), and the workers are the same processes.
    assert kills.read_text() == "loaded\n"
    assert children(server) == before
    totals = state_of(state)["totals"]
    assert totals["would_kill"] == len(would)
    assert totals["kills"] == {"native_active": 0, "native_idle": 0, "wsgi": 0}
    # Kept apart: a dry run moves neither the last-run time nor its kills.
    assert state_of(state)["last_dry_run"]["result"] == "dry-run"
    assert state_of(state)["last_run"] is None


@pytest.mark.integration
def test_a_dry_runs_would_kills_survive_a_shared_config_files_log_level(server, tmp_path):
    # log-level = error in the config file the three commands share: a dry
    # run must still say what it would kill, not look like "nothing to do".
    for _ in range(4):
        server.get("/embedded")
    conf = tmp_path / "shared.conf"
    conf.write_text("log-level = error\n")
    conf.chmod(0o600)
    proc = reap("--config", str(conf), "--url", server.status_url, "--max-memory-idle", "1M",
                "--dry-run", "--max-kills", "50", "--state-file", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert [ln for ln in lines if ": info: would kill native worker " in ln]
    assert ": info: dry run: would kill " in lines[-1]
    assert not [ln for ln in lines if "no process over a threshold" in ln]


@pytest.mark.integration
def test_worker_ignoring_sigterm_is_sigkilled_and_counted(server, tmp_path):
    background(server, "/embedded?ignore_term=1&sleep=40")
    row = wait_for_request(server, "ignore_term=1", 2)
    proc = reap("--url", server.status_url, "--max-time", "1s", "--grace", "1",
                "--state-file", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    assert "did not exit within 1 s of SIGTERM: sent SIGKILL" in proc.stderr
    assert row.pid not in children(server)
    assert state_of(tmp_path / "s.json")["totals"]["sigkill_escalations"] == 1


@pytest.mark.integration
def test_circuit_breaker(server, tmp_path):
    # A threshold far too low: all three mod_wsgi daemons are over it.
    proc = reap("--url", server.status_url, "--max-memory-wsgi", "1M", "--max-kills", "1",
                "--state-file", str(tmp_path / "s.json"), "--grace", "5")
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "circuit breaker:" in ln]
    assert "3 processes are over a threshold, more than --max-kills 1" in line
    assert len([ln for ln in proc.stderr.splitlines() if ": killed mod_wsgi" in ln]) == 1
    state = state_of(tmp_path / "s.json")
    assert state["totals"]["circuit_breaker_trips"] == 1
    assert state["last_run"]["result"] == "circuit-breaker"


@pytest.mark.integration
def test_two_reapers_at_once_take_turns_and_lose_no_count(server, tmp_path):
    state = tmp_path / "s.json"
    lock = os.open(str(state) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # both start while a third holds the lock
    # A threshold nothing reaches: real runs (dry runs count no run) that kill nothing.
    args = [REAPER, "--url", server.status_url, "--max-memory-idle", "100G",
            "--max-kills", "50", "--state-file", str(state)]
    procs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=exporter_env())
             for _ in range(2)]
    try:
        watches = [stderr_lines(p, "another reaper is running; waiting") for p in procs]
        assert all(seen.wait(30) for seen, _, _ in watches), [w[1] for w in watches]
        assert all(p.poll() is None for p in procs)  # both waiting...
        assert not state.exists()  # ...and neither has counted its run yet
    finally:
        os.close(lock)
    for p, (_, _, reader) in zip(procs, watches):
        p.wait(timeout=60)
        reader.join(timeout=10)
    outs = ["".join(lines) for _, lines, _ in watches]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert state_of(state)["totals"]["runs"] == 2
    # A reaper that cannot get the lock in time gives up cleanly.
    lock = os.open(str(state) + ".lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        proc = reap(*args[1:], "--lock-timeout", "0.5")
    finally:
        os.close(lock)
    assert proc.returncode == 1 and "another reaper has held" in proc.stderr
    assert state_of(state)["totals"]["runs"] == 2


@pytest.mark.integration
def test_corrupt_state_file_is_set_aside_and_counted(server, tmp_path):
    state = tmp_path / "s.json"
    state.write_text('{"version": 1, "totals": {"kills": ')
    proc = reap("--url", server.status_url, "--max-memory-idle", "1G",
                "--state-file", str(state))
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "reaper state" in ln]
    assert "is not valid JSON" in line and "moved aside to" in line
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_text().startswith('{"version": 1')
    totals = state_of(state)["totals"]
    assert totals["state_resets"] == 1 and totals["runs"] == 1
    tab = parse_tab(run_exporter("--url", server.status_url, "--state-file", str(state)).stdout)
    assert tab["reaper-state-resets-total"] == "1"


# --- two reapers: the second one waits out the first one's --grace ------------

SPARE_PREFORK = """
StartServers 4
MinSpareServers 1
MaxSpareServers 10
MaxRequestWorkers 10
ServerLimit 10
"""

FIXED_PREFORK = """
StartServers 4
MinSpareServers 1
MaxSpareServers 4
MaxRequestWorkers 4
ServerLimit 4
"""


def spied(tmp_path: Path) -> tuple:
    """(environment, log) for a reaper whose every signal is written to the log."""
    spy = tmp_path / "spy"
    spy.mkdir(exist_ok=True)
    (spy / "sitecustomize.py").write_text(KILL_SPY)
    kills = tmp_path / "kills.log"
    return exporter_env(PYTHONPATH=str(spy), AME_TEST_KILL_LOG=str(kills)), kills


def wait_for_line(path: Path, line: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and line in path.read_text().splitlines()):
        assert time.monotonic() < deadline, f"never saw {line!r} in {path}"
        time.sleep(0.05)


def answered(apache: ApacheServer, path: str) -> tuple:
    """(thread, answers): a request left running; its answer or error is kept."""
    answers: list = []

    def go():
        try:
            answers.append(apache.get(path, timeout=60).decode())
        except (urllib.error.URLError, OSError, ConnectionError) as exc:
            answers.append(f"error: {exc}")
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, answers


@pytest.mark.integration
def test_second_reaper_decides_on_a_fresh_page_after_the_firsts_grace(tmp_path):
    # The red team's case: reaper A waits out --grace for a worker that ignores
    # SIGTERM; reaper B, started meanwhile, read its page before waiting for
    # the lock. B must not kill a worker for a request that ended during the
    # wait, and A must not SIGKILL its worker once that one's request has ended.
    apache = ApacheServer("prefork", mpm_conf=SPARE_PREFORK).start()
    try:
        state = tmp_path / "s.json"
        args = [REAPER, "--url", apache.status_url, "--max-time", "2s", "--grace", "15",
                "--state-file", str(state)]
        background(apache, "/embedded?ignore_term=1&sleep=13")
        w1 = wait_for_request(apache, "ignore_term=1", 3)
        env, kills = spied(tmp_path)
        a = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
        _, a_lines, a_reader = stderr_lines(a, "\0")
        wait_for_line(kills, f"kill {w1.pid} {signal.SIGTERM.value}")  # A is in its grace
        t2, answers = answered(apache, "/embedded?sleep=7")
        w2 = wait_for_request(apache, "sleep=7", 3)  # past --max-time when B reads the page
        w2_started = children(apache)[w2.pid]
        b = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=exporter_env())
        waiting, b_lines, b_reader = stderr_lines(b, "another reaper is running; waiting")
        assert waiting.wait(30), b_lines
        t2.join(30)
        assert answers and answers[0].startswith("pid="), answers  # W2's request ended...
        assert a.poll() is None  # ...while A was still in its grace
        a.wait(60)
        b.wait(60)
        a_reader.join(10)
        b_reader.join(10)
        a_out, b_out = "".join(a_lines), "".join(b_lines)
        assert (a.returncode, b.returncode) == (0, 0), (a_out, b_out)
        # B read the page again after the wait and found nothing to do.
        assert ": killed native" not in b_out and "skipped" not in b_out, b_out
        assert children(apache).get(w2.pid) == w2_started
        assert "page read before waiting for the lock is stale" in b_out
        # A: W1 ignored SIGTERM, and its request had ended when --grace was over.
        (line,) = [ln for ln in a_out.splitlines() if "did not SIGKILL" in ln]
        assert f"native worker {w1.pid} " in line and "it is idle now" in line
        assert kills.read_text().splitlines() == [
            "loaded", f"kill {w1.pid} {signal.SIGTERM.value}"]
        assert w1.pid in children(apache)
        totals = state_of(state)["totals"]
        assert totals["kills"]["native_active"] == 0 and totals["skipped_for_safety"] == 1
        assert totals["runs"] == 2
    finally:
        apache.stop()


@pytest.mark.integration
def test_second_reaper_spares_workers_that_became_busy_during_the_wait(tmp_path):
    # Reaper A waits out --grace for a mod_wsgi daemon that ignores SIGTERM;
    # reaper B (--max-memory-idle below every worker's size) read its page
    # while the workers were idle, and they start serving requests while it
    # waits: none of them may be killed "as idle", no request may be cut.
    apache = ApacheServer("prefork", mpm_conf=FIXED_PREFORK).start()
    try:
        state = tmp_path / "s.json"
        daemon = int(apache.get("/long?ignore_term=1").decode().split("pid=")[1].split()[0])
        env, kills = spied(tmp_path)
        a = subprocess.Popen([REAPER, "--url", apache.status_url, "--max-memory-wsgi",
                              "reporting-backend=1M", "--grace", "12",
                              "--state-file", str(state)],
                             stderr=subprocess.PIPE, text=True, env=env)
        _, a_lines, a_reader = stderr_lines(a, "\0")
        wait_for_line(kills, f"kill {daemon} {signal.SIGTERM.value}")  # A is in its grace
        natives = {pid: ct for pid, ct in children(apache).items()
                   if not psutil.Process(pid).cmdline()[0].startswith("(wsgi:")}
        assert len(natives) == 4
        b = subprocess.Popen([REAPER, "--url", apache.status_url, "--max-memory-idle", "1M",
                              "--max-kills", "50", "--grace", "5", "--state-file", str(state)],
                             stderr=subprocess.PIPE, text=True, env=exporter_env())
        waiting, b_lines, b_reader = stderr_lines(b, "another reaper is running; waiting")
        assert waiting.wait(30), b_lines  # B has its page: three workers idle on it
        # Three of the four workers start serving (the fourth answers B's next
        # read, and is idle: B may kill that one).
        requests = [answered(apache, f"/embedded?sleep=20&n={n}") for n in range(3)]
        busy = {wait_for_request(apache, f"n={n}", 0).pid for n in range(3)}
        assert len(busy) == 3 and busy <= set(natives)
        assert a.poll() is None  # A is still in its grace
        a.wait(60)
        b.wait(60)
        a_reader.join(10)
        b_reader.join(10)
        a_out, b_out = "".join(a_lines), "".join(b_lines)
        assert (a.returncode, b.returncode) == (0, 0), (a_out, b_out)
        assert f"mod_wsgi daemon {daemon} " in a_out and "sent SIGKILL" in a_out
        killed = [ln for ln in b_out.splitlines() if ": killed native worker" in ln]
        assert not any(f"native worker {pid} " in ln for ln in killed for pid in busy), b_out
        for thread, answers in requests:  # not one request was cut
            thread.join(60)
            assert answers and answers[0].startswith("pid="), answers
        assert all(children(apache).get(pid) == natives[pid] for pid in busy)
        assert state_of(state)["totals"]["kills"]["native_idle"] == len(killed) <= 1
        assert "page read before waiting for the lock is stale" in b_out
    finally:
        apache.stop()


def test_reaper_usage_errors(tmp_path):
    for args, message in (
        ([], "no threshold given"),
        (["--max-memory-idle", "lots"], "--max-memory-idle"),
        (["--max-memory-idle", "1G", "--max-kills", "0"], "--max-kills"),
        (["--max-memory-wsgi", "=1G"], "--max-memory-wsgi"),
        (["--max-memory-idle", "1G", "--format", "influx"], "--format is not an option"),
        (["--max-memory-idle", "1G", "--url", "http://127.0.0.1:9/s"], "one --url"),
    ):
        proc = reap("--url", "http://127.0.0.1:9/server-status", "--state-file",
                    str(tmp_path / "s.json"), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_apache_stopped_is_one_line_with_the_fix(tmp_path, dry_run):
    # Connection refused on a loopback URL and no listener to prove are one
    # cause: one error line saying what happened and what to do, not a failed
    # read followed by a failed proof.
    port = free_port()
    state = tmp_path / "s.json"
    proc = reap("--url", f"http://127.0.0.1:{port}/server-status", "--max-time", "5m",
                "--state-file", str(state), *(["--dry-run"] if dry_run else []))
    assert proc.returncode == 0 and proc.stdout == ""
    assert proc.stderr == (
        f"apache-worker-reaper: error: nothing listens on 127.0.0.1:{port} (connection "
        "refused): signalling nothing this run; start Apache, or point --url at the "
        "address and port it listens on\n")
    if not dry_run:  # a dry run moves only "would kill"
        assert state_of(state)["last_run"]["result"] == "skipped"


def test_shared_config_file_keys_of_the_other_command_are_ignored(tmp_path):
    conf = tmp_path / "shared.conf"
    conf.write_text("format = influx\nmax-memory-idle = 1G\ndry-run = true\n")
    # The collector ignores the reaper's keys...
    proc = run_exporter("--url", "http://127.0.0.1:9/server-status", "--config", str(conf),
                        "--no-processes")
    assert proc.returncode == 0
    assert [x.split(",")[0] for x in proc.stdout.splitlines()] == [
        "apache_reaper", "apache_status", "apache_exporter"]  # status: the down reason
    # ...and refuses them on its command line.
    proc = run_exporter("--url", "http://127.0.0.1:9/s", "--dry-run")
    assert proc.returncode == 2 and "--dry-run is not an option" in proc.stderr


def test_all_selected_processes_share_one_grace_period(tmp_path):
    # Three children that ignore SIGTERM: SIGKILL after one grace period for
    # all of them together, not one grace period after another.
    parent, kids, log = spawn_family(tmp_path, 3)
    try:
        me = psutil.Process(parent.pid)
        started = time.monotonic()
        outcome = execute([_candidate(k) for k in kids], me.pid, me.create_time(),
                          (kids[0].name(),), grace=1.5)
        took = time.monotonic() - started
        assert len(outcome.escalated) == 3 and len(outcome.killed) == 3
        assert 1.5 <= took < 3.0  # one grace period, not three
        assert len(log.read_text().splitlines()) == 3  # each got its SIGTERM first
    finally:
        end_family(parent, kids)


def test_a_process_named_like_apache_but_running_another_file_is_not_signalled(tmp_path):
    # The name is anyone's to choose; the executable file is compared too.
    from apache_metrics_exporter.reaper.policy import _same_executable

    same = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    other = subprocess.Popen(["sleep", "30"])
    try:
        assert _same_executable(same.pid, os.getpid()) is True
        assert _same_executable(other.pid, os.getpid()) is False
        assert _same_executable(2**22 + 7, os.getpid()) is False  # no such process
    finally:
        for p in (same, other):
            p.kill()
            p.wait()


# --- the reaper's own read, on a real Apache ------------------------------------------

NONCE = "0a1b2c3d4e5f6071"


@pytest.mark.integration
def test_mod_status_ignores_the_nonce_argument(prefork):
    """mod_status finds its options (auto, refresh, notable) by substring in
    the query: ``ame=HEX`` is none of them, on either page, and the worker
    table shows the tagged read's request line exactly as own_lines says."""
    url = prefork.status_url
    html = urllib.request.urlopen(tagged(url, NONCE), timeout=10)
    assert html.headers.get_content_type() == "text/html"
    assert "Refresh" not in html.headers
    workers = parse_html(html.read(), source=url).workers
    (mine,) = [w for w in workers if w.request in own_lines(url, NONCE)]
    assert mine.mode == "W"
    for auto in (tagged(url + "?auto", NONCE), tagged(url, NONCE) + "&auto"):
        with urllib.request.urlopen(auto, timeout=10) as r:
            assert r.headers.get_content_type() == "text/plain", auto
            assert b"Total Accesses: " in r.read()


SLOW_STATUS = """
LoadModule ratelimit_module {modules}/mod_ratelimit.so
LoadModule env_module {modules}/mod_env.so
# The status page sent at 2 KiB/s: a read of it keeps its worker in W for
# seconds, so reads of it overlap for sure.
<Location /slow-status>
  SetHandler server-status
  SetOutputFilter RATE_LIMIT
  SetEnv rate-limit 2
  Require ip 127.0.0.1
</Location>
"""


def held_read(port: int, target: str) -> socket.socket:
    """A read of ``target`` whose answer has begun (its worker is in W,
    sending the rate-limited page): the caller closes it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                 .encode())
    assert sock.recv(1).startswith(b"H")  # the status line: the handler is running
    return sock


@pytest.mark.integration
def test_concurrent_reads_of_the_same_url_only_the_reapers_own_row_is_excluded(tmp_path):
    """While someone else's read of the reaper's URL and another reaper's
    read of it (another nonce) are being served, the reaper reads the page
    (run.read_page, the real code): its own row is excluded, theirs are
    requests; and the other reaper, given the same page, excludes only its
    own. Before the nonce, all three rows had one request line, and every
    one of them begun within the second was taken for the reaper's own."""
    from apache_metrics_exporter.collect.http import Fetcher, Target
    from apache_metrics_exporter.collect.processes import parent_of_url, scan
    from apache_metrics_exporter.reaper.run import read_page
    from tests.harness.apache import MODULES

    with ApacheServer("prefork", wsgi=False,
                      extra_conf=SLOW_STATUS.format(modules=MODULES)) as apache:
        url = f"{apache.base_url}/slow-status"
        other_nonce = "ffffffffffffffff"
        plain = held_read(apache.port, "/slow-status")
        theirs = held_read(apache.port, f"/slow-status?ame={other_nonce}")
        try:
            fetcher = Fetcher(Target(url, timeout=60))
            page = read_page(fetcher)
        finally:
            plain.close()
            theirs.close()
        assert page.error == "" and page.workers
        busy = [w for w in page.workers if w.mode == "W"]
        by_line = {w.request: w for w in busy}
        assert len(busy) == 3, busy  # the three reads at once, each in a worker of its own
        assert request_line(url) in by_line  # the plain read
        (own,) = page.own_requests
        assert own in by_line and own_lines(url, other_nonce)[0] in by_line
        assert by_line[request_line(url)].ss <= 1  # "the same second"
        pids = {line: w.pid for line, w in by_line.items()}
        parent = parent_of_url("127.0.0.1", apache.port, ("apache2",), None,
                               [w.pid for w in page.workers if w.pid])
        processes = scan(parent.pid, ("apache2",))
        chosen = select(page.workers, processes, Thresholds(max_memory_idle=1),
                        fetched_at=page.received, sent_at=page.sent,
                        own_requests=page.own_requests)
        idle = {c.pid for c in chosen if c.kind == "native_idle"}
        # The reaper's own worker is idle but for its read; the two others serve.
        assert pids[own] in idle
        assert pids[request_line(url)] not in idle
        assert pids[own_lines(url, other_nonce)[0]] not in idle
        # The other reaper, on the same page, excludes its own row only.
        other = select(page.workers, processes, Thresholds(max_memory_idle=1),
                       own_requests=own_lines(url, other_nonce))
        other_idle = {c.pid for c in other if c.kind == "native_idle"}
        assert pids[own_lines(url, other_nonce)[0]] in other_idle
        assert pids[own] not in other_idle and pids[request_line(url)] not in other_idle


@pytest.mark.integration
def test_the_nonce_is_in_no_message(prefork):
    """The reaper's errors name the URL it was given, never the tagged one."""
    from apache_metrics_exporter.collect.http import Fetcher, Target
    from apache_metrics_exporter.reaper.run import read_page
    from tests.harness.apache import free_port

    for url, named in ((f"{prefork.base_url}/no-such-status?x=1", True),
                       (f"http://127.0.0.1:{free_port()}/server-status", False)):
        page = read_page(Fetcher(Target(url, timeout=5)))
        assert page.workers is None and page.error
        assert "ame=" not in page.error, page.error
        assert (url in page.error) == named, page.error


@pytest.mark.parametrize("option", ["--max-memory-idle", "--max-memory-active",
                                    "--max-memory-wsgi"])
def test_a_memory_limit_without_its_unit_is_refused_before_anything_runs(option, tmp_path):
    # "--max-memory-idle 10" is 10 bytes: every worker is over it, so every
    # one would be selected. Refused (exit 2, one line) before any read.
    state = tmp_path / "state.json"
    proc = reap("--url", "http://127.0.0.1:9/server-status", option, "10",
                "--state-file", str(state))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "'10' without a unit is 10 bytes" in line and "10M" in line, line
    assert not state.exists()


@pytest.mark.integration
@pytest.mark.parametrize("query", ['q="x"', "q=a\\b"])
def test_the_reapers_own_row_is_found_when_the_url_has_characters_mod_status_escapes(
        prefork, query):
    """mod_status shows a request line through ap_escape_logitem: ``"`` and
    ``\\`` come out as ``\\"`` and ``\\\\``. A status URL with one in its query
    (as given, http.client sends it unchanged) must still have its own read's
    row recognised, else that worker counts as serving a request and can be
    selected for the reaper's own read."""
    from apache_metrics_exporter.collect.http import Fetcher, Target
    from apache_metrics_exporter.reaper.run import read_page

    url = f"{prefork.status_url}?{query}"
    page = read_page(Fetcher(Target(url, timeout=5)))
    assert page.workers is not None, page.error
    assert page.own_requests, "the URL is short: its nonce fits in the cut"
    mine = [w for w in page.workers if w.request in page.own_requests]
    assert len(mine) == 1, [w.request for w in page.workers if w.mode == "W"]


def test_the_collectors_own_read_line_is_escaped_as_mod_status_shows_it():
    # The client figures leave out the exporter's own reads by this line;
    # mod_status prints '"' and '\' escaped (ap_escape_logitem), after the cut.
    assert request_line('http://127.0.0.1/s?a="b\\') == 'GET /s?a=\\"b\\\\ HTTP/1.1'
    long = "http://127.0.0.1/" + '"' * 70
    assert request_line(long) == "GET /" + '\\"' * 58


# --- a threaded MPM's child does not end on SIGTERM ----------------------------

@pytest.mark.parametrize("page, mpm", [("2.4.71-event-ext-on.html", "event"),
                                       ("2.4.71-worker-ext-on.html", "worker"),
                                       ("2.4.71-prefork-ext-on.html", "prefork"),
                                       ("handmade-2.2-prefork.html", "")])
def test_the_server_mpm_is_read_from_the_page(page, mpm):
    from apache_metrics_exporter.reaper.run import server_mpm
    assert server_mpm(data(page)) == mpm


def test_a_threaded_mpms_child_gets_sigkill_at_once_without_grace(family):
    parent, child, log = family  # the child notes SIGTERM and carries on
    threaded = _candidate(child)._replace(threaded=True)
    started = time.monotonic()
    outcome = execute([threaded], parent.pid, parent.create_time(), (child.name(),), grace=5.0)
    assert time.monotonic() - started < 4  # no grace period waited out
    assert [c.pid for c in outcome.killed] == [child.pid] and outcome.escalated == []
    assert not log.exists() or f"{child.pid} got {signal.SIGTERM.value}" not in log.read_text()
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_the_summary_counts_sigkill_at_once_apart_from_escalations(family):
    # After "killed ... with SIGKILL at once", the run's last line must not
    # read "0 needed SIGKILL": at-once kills are counted on their own.
    parent, child, log = family
    threaded = _candidate(child)._replace(threaded=True)
    outcome = execute([threaded], parent.pid, parent.create_time(), (child.name(),), grace=5.0)
    assert [c.pid for c in outcome.at_once] == [child.pid] and outcome.escalated == []
    from apache_metrics_exporter.reaper.run import kill_summary
    kinds = {"native_active": 0, "native_idle": 1, "wsgi": 0}
    line = kill_summary(len(outcome.killed), 6, kinds, len(outcome.escalated),
                        len(outcome.at_once), len(outcome.skipped))
    assert line == ("killed 1 of 6 processes checked (0 active, 1 idle, 0 mod_wsgi): "
                    "0 ended on SIGTERM, 0 needed SIGKILL after --grace, "
                    "1 got SIGKILL at once (worker/event MPM); 0 skipped")
    mixed = kill_summary(4, 14, {"native_active": 2, "native_idle": 1, "wsgi": 1}, 1, 1, 2)
    assert ": 2 ended on SIGTERM, 1 needed SIGKILL after --grace, 1 got SIGKILL at once" in mixed


def test_an_escalation_is_not_counted_as_sigkill_at_once(family):
    parent, child, log = family  # the child notes SIGTERM and carries on
    outcome = execute([_candidate(child)], parent.pid, parent.create_time(),
                      (child.name(),), grace=0.5)
    assert [c.pid for c in outcome.escalated] == [child.pid] and outcome.at_once == []


@pytest.fixture
def quiet_log():
    """The process's logger, restored after the test sets its level."""
    from apache_metrics_exporter.log import log
    saved = (log.prog, log.level, log.style)
    yield log
    log.prog, log.level, log.style = saved


@pytest.mark.parametrize("level,quiet", [("warn", 0), ("error", 0), ("error", 1)])
@pytest.mark.parametrize("threaded", [False, True], ids=["sigterm", "sigkill-at-once"])
def test_a_kill_is_logged_whatever_the_log_level(family, quiet_log, capsys, level, quiet,
                                                 threaded):
    # A config file shared by the three commands says log-level = warn (or
    # error): the reaper's kills must still be in the log at 3 a.m.
    parent, child, log = family  # the child ignores SIGTERM: escalated after the grace
    quiet_log.setup(0, quiet, "apache-worker-reaper", "plain", level)
    quiet_log.info("an info line the level hides")
    cand = _candidate(child)._replace(threaded=threaded)
    outcome = execute([cand], parent.pid, parent.create_time(), (child.name(),), grace=0.5)
    assert [c.pid for c in outcome.killed] == [child.pid]
    err = capsys.readouterr().err
    assert "an info line the level hides" not in err
    assert f"apache-worker-reaper: info: killed native worker {child.pid} (" in err
    if not threaded:
        assert f"native worker {child.pid} (" in err and "sent SIGKILL" in err


def test_action_lines_ignore_the_threshold_other_lines_do_not(quiet_log, capsys):
    from apache_metrics_exporter.log import CRITICAL, INFO
    quiet_log.setup(0, 9, "apache-worker-reaper")  # far past every level
    assert quiet_log.level > CRITICAL
    quiet_log.info("hidden")
    quiet_log.action(INFO, "would kill %s", "native worker 1")
    assert capsys.readouterr().err == "apache-worker-reaper: info: would kill native worker 1\n"


@pytest.mark.integration
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_event_children_are_sigkilled_at_once_and_prefork_ones_end_on_sigterm(tmp_path, busy):
    # An event child's SIGTERM handler does nothing (event.c child_main): a
    # SIGTERM and --grace 20 would keep the reaper 20 s and end in SIGKILL.
    env, kills = spied(tmp_path)
    for mpm in ("event", "prefork"):
        apache = ApacheServer(mpm).start()
        try:
            for _ in range(4):
                apache.get("/embedded")
            if busy:
                background(apache, "/embedded?sleep=40")
                wait_for_request(apache, "sleep=40", 2)
                args = ["--max-time", "1s"]
            else:
                args = ["--max-memory-idle", "1K", "--max-kills", "1"]
            kills.write_text("")
            state = tmp_path / f"{mpm}.json"
            started = time.monotonic()
            proc = reap("--url", apache.status_url, *args, "--grace", "20",
                        "--state-file", str(state), env=env)
            took = time.monotonic() - started
            assert proc.returncode == 0, proc.stderr
            (line,) = [ln for ln in proc.stderr.splitlines() if ": killed native worker" in ln]
            pid = int(line.split("native worker ")[1].split()[0])
            assert pid not in children(apache)
            sent = [ln for ln in kills.read_text().splitlines() if ln.startswith("kill ")]
            if mpm == "event":
                assert sent == [f"kill {pid} {signal.SIGKILL.value}"]
                assert "with SIGKILL at once: a worker or event MPM child" in line
            else:  # prefork's just_die: SIGTERM is enough, well within the grace
                assert sent == [f"kill {pid} {signal.SIGTERM.value}"]
            assert took < 15, f"{mpm}: {took:.1f} s"
            assert state_of(state)["totals"]["sigkill_escalations"] == 0
            assert serves(apache)
        finally:
            apache.stop()
