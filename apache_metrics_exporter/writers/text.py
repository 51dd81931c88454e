"""A human summary: what apache-manager printed when run by hand, and more.

Server state (and why the page could not be read), the accept queue of
Apache's listening sockets, scoreboard, workers per group with memory in
human units, hanging workers, the slowest requests being served, and the
reaper's totals.
Columns are aligned and no line is wider than the terminal. Text from the page
or a process title never reaches the terminal raw: control characters (ESC,
CR, ...) are shown escaped (units.visible).
"""

from __future__ import annotations

import sys
import time

from apache_metrics_exporter.catalogue import NATIVE_GROUP, SCOREBOARD_STATES, fits
from apache_metrics_exporter.collect.processes import memory_stats
from apache_metrics_exporter.scrub import scrub
from apache_metrics_exporter.units import format_bytes, format_duration, format_figure, visible
from apache_metrics_exporter.writers import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, List, Optional, Sequence

    from apache_metrics_exporter.collect.snapshot import Snapshot

SLOWEST = 5


def table(header: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()
          ) -> List[str]:
    """Aligned columns; the last column takes what is left (clipped later)."""
    cells_of = [[visible(str(cell)) for cell in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells_of) for i in range(len(header))]
    out = []
    for row in cells_of:
        cells = []
        for i, cell in enumerate(row):
            text = cell
            if i == len(row) - 1:
                cells.append(text)
            else:
                cells.append(text.rjust(widths[i]) if i in right else text.ljust(widths[i]))
        out.append("  ".join(cells).rstrip())
    return out


def process_rows(snap: Any) -> List[Any]:
    """Per Apache child: pid, group, memory, busy threads, its threads (None
    when unknown), oldest request (ss, request, vhost) - what the watch view's
    table shows."""
    rows_by_pid: dict = {}
    for row in snap.workers or ():
        if row.pid and row.mode != ".":
            rows_by_pid.setdefault(row.pid, []).append(row)
    threads = threads_per_process(snap)
    out = []
    for child in snap.processes.children:
        rows = rows_by_pid.get(child.pid, [])
        active = [r for r in rows if r.is_active]
        oldest = max(active, key=lambda r: r.ss or 0, default=None)
        count = threads.get(child.pid) if child.group == NATIVE_GROUP else None
        out.append((child.pid, child.group, child.memory, len(active), count,
                    oldest.ss if oldest else None, oldest.request if oldest else "",
                    oldest.vhost if oldest else ""))
    return out


def threads_per_process(snap: Any) -> Dict[int, int]:
    """Worker threads of each native Apache child, where the pages tell.

    Not the worker table's rows: mod_status leaves out every slot that has
    never served a request, so a fresh child of 25 threads shows 1 or 20 rows.
    prefork: one per process. event: the per-process table's busy + graceful
    + idle threads. worker: the scoreboard, cut into one run of ThreadLimit
    slots per process (ThreadLimit is not on the page: every run length that
    divides the scoreboard and gives as many live runs as there are children
    is tried, and used only when they all agree)."""
    auto = snap.auto
    mpm = (auto.info.get("ServerMPM") or "").lower() if auto else ""
    pids = [c.pid for c in snap.processes.children if c.group == NATIVE_GROUP]
    if mpm == "prefork":
        return dict.fromkeys(pids, 1)
    if snap.event_processes:
        out = {}
        for proc in snap.event_processes:
            counts = [_count(proc.cells.get(f"threads {kind}"))
                      for kind in ("busy", "graceful", "idle")]
            if proc.pid is not None and None not in counts:
                out[proc.pid] = sum(c for c in counts if c is not None)
        return out
    board = auto.scoreboard if auto else ""
    if mpm != "worker" or not board or not pids:
        return {}
    found: set = set()
    for width in range(1, len(board) + 1):
        if len(board) % width:
            continue
        live = [n for n in (width - board.count(".", i, i + width)
                            for i in range(0, len(board), width)) if n]
        if len(live) == len(pids):
            found.add(live[0] if len(set(live)) == 1 else None)
    per_child = found.pop() if len(found) == 1 else None
    return {} if per_child is None else dict.fromkeys(pids, per_child)


def _count(text: Optional[str]) -> Optional[int]:
    return int(text) if text and text.isascii() and text.isdigit() and len(text) < 10 else None


def _when(stamp: Any, fmt: str) -> str:
    """A local time, '?' for one the platform cannot show (a state file's 1e20)."""
    try:
        return time.strftime(fmt, time.localtime(stamp))
    except (OverflowError, OSError, TypeError, ValueError):
        return "?"


def summary(snap: Any, hanging_threshold: float = 300) -> List[str]:
    """The summary of one snapshot, unclipped, control characters escaped."""
    info = snap.auto.info if snap.auto else {}
    samples = [s for s in snap.samples if fits(s.metric, s.value)]

    def value(name: str) -> Any:
        return next((s.value for s in samples if s.metric.name == name and not s.labels), None)
    out = []
    version = info.get("ServerVersion", "Apache")
    mpm = info.get("ServerMPM")
    head = f"{version}" + (f", {mpm} MPM" if mpm else "") + f" - {snap.url}"
    out.append(head)
    stamp = _when(snap.timestamp, "%Y-%m-%d %H:%M:%S")
    if not snap.up:
        out.append(f"DOWN at {stamp} ({value('status_reason') or 'error'}): {snap.error}")
        out.extend(accept_queue(samples))
    else:
        uptime = value("uptime") or value("server_uptime_seconds")
        out.append(f"up {format_duration(uptime) if uptime is not None else '?'} "
                   f"(status read {stamp})")
        out.extend(accept_queue(samples))
        accesses, kbytes = value("total_accesses"), value("total_kbytes")
        if accesses is not None:
            out.append(f"requests: {accesses:,} since restart, "
                       f"{format_figure(value('requests_per_second') or 0)}/s on "
                       f"average; sent {format_bytes((kbytes or 0) * 1024)}; "
                       f"CPU load {format_figure(value('cpu_load') or 0)}%")
        now = interval_line(value)
        if now:
            out.append(now)
        busy, idle = value("busy_workers"), value("idle_workers")
        slots = value("scoreboard_slots")
        util = value("utilisation")
        out.append(f"workers: {busy} busy, {idle} idle, {value('graceful_workers') or 0} "
                   f"graceful of {slots} slots"
                   + (f" ({util * 100:.0f}% busy)" if util is not None else ""))
        hanging = value("workers_hanging")
        if hanging is not None:
            out.append(f"hanging: {hanging} request{'s' if hanging != 1 else ''} older than "
                       f"{format_duration(hanging_threshold)}")
        counts = {dict(s.labels).get("state"): s.value for s in samples
                  if s.metric.name == "scoreboard"}
        out.append("scoreboard: " + ", ".join(
            f"{name} {counts[name]}" for _c, name in SCOREBOARD_STATES if counts.get(name)))
        out.extend(slow_clients(samples))
    for warning in snap.warnings:  # page text: may echo a credential, as on stderr
        out.append(f"note: {scrub(warning)}")
    groups = snap.processes.groups()
    if snap.processes.parent_pid is not None:
        out.append("")
        kind = snap.processes.memory_kind.upper()
        rows = []
        for group, values in groups.items():
            st = memory_stats(values)
            label = group if group == NATIVE_GROUP else f"wsgi:{group}"
            if group in snap.processes.truncated:
                label += " (name cut)"
            rows.append((label, st.count, format_bytes(st.min), format_bytes(st.max),
                         format_bytes(st.average), format_bytes(st.median)))
        out.extend(table(("group", "processes", f"min {kind}", f"max {kind}", "average",
                          "median"), rows, right=(1, 2, 3, 4, 5)))
    if snap.workers is not None:
        busy_rows = sorted((r for r in snap.workers if r.is_active and r.ss is not None),
                           key=lambda r: -r.ss)[:SLOWEST]
        out.append("")
        if busy_rows:
            out.append("slowest requests being served:")
            out.extend(table(("seconds", "pid", "vhost", "request"),
                             [(r.ss, r.pid, r.vhost, r.request) for r in busy_rows],
                             right=(0, 1)))
        else:
            out.append("no request being served")
    kills = {dict(s.labels).get("kind"): s.value for s in samples
             if s.metric.name == "reaper_kills_total"}
    if kills:
        last = value("reaper_last_run_timestamp_seconds")
        when = _when(last, "%Y-%m-%d %H:%M") if last else "never"
        out.append("")
        out.append(f"reaper: {sum(kills.values())} killed since its state file was created "
                   f"({kills.get('native_active', 0)} active, {kills.get('native_idle', 0)} "
                   f"idle, {kills.get('wsgi', 0)} mod_wsgi), "
                   f"{value('reaper_sigkill_escalations_total') or 0} needed SIGKILL "
                   "after --grace, "
                   f"{value('reaper_would_kill_total') or 0} would-kill in dry runs; "
                   f"last run {when}")
    return [visible(line) for line in out]


def accept_queue(samples: Sequence[Any]) -> List[str]:
    """'accept queue: 3 waiting, limit 511 (127.0.0.1:80 3/511)': nothing when
    the listening sockets could not be read (docs/insight.md)."""
    total = next((s.value for s in samples if s.metric.name == "accept_queue_length_all"),
                 None)
    if total is None:
        return []
    limit = next((s.value for s in samples if s.metric.name == "accept_queue_limit_all"),
                 None)
    limits = {s.labels: s.value for s in samples if s.metric.name == "accept_queue_limit"}
    each = [f"{dict(s.labels).get('listen', '?')} {s.value}"
            + (f"/{limits[s.labels]}" if s.labels in limits else "")
            for s in samples if s.metric.name == "accept_queue_length"]
    full = " - FULL, new connections are dropped" if limit and total >= limit else ""
    return [f"accept queue: {total} waiting"
            + (f", limit {limit}" if limit is not None else "")
            + f" ({', '.join(each)}){full}"]


def _ms(seconds: float) -> str:
    return f"{format_figure(seconds * 1000)} ms" if seconds < 10 else f"{seconds:.1f} s"


def interval_line(value: Any) -> str:
    """Rates and request durations since the previous collection ('' when
    there was none to compare with: first collection, restart)."""
    rate = value("interval_requests_per_second")
    if rate is None:
        return ""
    text = f"now: {format_figure(rate)} requests/s"
    sent = value("interval_bytes_per_second")
    if sent is not None:
        text += f", {format_bytes(sent)}/s"
    mean = value("interval_request_duration_seconds")
    if mean is not None:
        text += f", mean {_ms(mean)}"
    p50 = value("request_duration_p50_seconds")
    if p50 is not None:
        # Each figure only when measured (a snapshot may hold p50 alone).
        text += "; " + " ".join(
            f"{label} {_ms(figure)}" for label, figure in (
                ("p50", p50), ("p90", value("request_duration_p90_seconds")),
                ("p99", value("request_duration_p99_seconds")),
                ("max", value("request_duration_max_seconds"))) if figure is not None)
        share = value("request_duration_sampled_ratio")
        if share is not None:
            text += f" ({share * 100:.0f}% sampled)"
    return f"{text} over {format_figure(value('interval_seconds') or 0)} s"


def slow_clients(samples: Sequence[Any]) -> List[str]:
    """'slow clients: 3 reading (oldest 12s); 2 clients hold the busy workers,
    top 60%' and, with --client-limit, 'busy workers per client: ...';
    nothing without a worker table (docs/insight.md)."""
    plain = {s.metric.name: s.value for s in samples if not s.labels}
    reading = plain.get("reading_workers")
    if reading is None:
        return []
    oldest = plain.get("reading_oldest_seconds")
    line = f"slow clients: {reading} reading"
    if reading and oldest is not None:
        line += f" (oldest {format_duration(oldest)})"
    clients, share = plain.get("busy_clients"), plain.get("top_client_share")
    if clients is not None and share is not None:
        line += (f"; {clients} client{'s hold' if clients != 1 else ' holds'} the busy workers"
                 + (f", top {share * 100:.0f}%" if clients else ""))
    out = [line]
    per = sorted(((s.value, dict(s.labels).get("client", "")) for s in samples
                  if s.metric.name == "client_busy_workers"), key=lambda x: (-x[0], x[1]))
    if per:
        out.append("busy workers per client: " + ", ".join(f"{c} {n}" for n, c in per))
    return out


def clip_width(settings: Optional[Settings] = None) -> Optional[int]:
    """The terminal's width when the summary goes to a terminal, else None:
    piped, redirected or written with --output, no line is cut."""
    if Settings.of(settings).output not in ("-", None):
        return None
    try:
        if not sys.stdout.isatty():
            return None
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return None
    import shutil  # only for a terminal: with bz2 and lzma behind it

    return shutil.get_terminal_size((100, 24)).columns


def render(snapshots: Sequence[Snapshot], settings: Optional[Settings] = None) -> str:
    width = clip_width(settings)
    threshold = Settings.of(settings).hanging_threshold
    lines: List[str] = []
    for snap in snapshots:
        if lines:
            lines.append("")
        lines.extend(summary(snap, threshold))
    if width is None:
        return "".join(visible(line).rstrip() + "\n" for line in lines)
    return "".join(clip(visible(line).rstrip(), width) + "\n" for line in lines)


def clip(line: str, width: int) -> str:
    """``line`` within ``width`` columns; a cut line ends in '…', so that a
    reason or a URL cut short never reads as the whole of it."""
    if len(line) <= width:
        return line
    return line[:max(0, width - 1)].rstrip() + "…"


def tells_problems(settings: Optional[Settings] = None) -> bool:
    """True when the summary goes to the very terminal stderr shows: it
    carries the reason Apache is down and the notes itself, so the collector
    does not say them a second time on stderr. Piped, redirected or with
    stderr elsewhere (a log), stderr keeps every line."""
    if clip_width(settings) is None:
        return False
    import os

    try:
        if not sys.stderr.isatty():
            return False
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (out.st_rdev, out.st_ino) == (err.st_rdev, err.st_ino)
