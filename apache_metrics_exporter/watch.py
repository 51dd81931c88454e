"""``--watch``: a top-like live view of one Apache, in the terminal (curses).

Redrawn every interval from a fresh snapshot (the HTTP connection is kept;
the rates and request durations compare it with the previous one, in memory);
``s`` toggles the sort between memory and request time, ``q`` or Ctrl-C
leaves, and curses gives the terminal back as it was. Everything is clipped to
the terminal's size; a resize redraws at once; an Apache that goes away is
shown as DOWN and the view carries on.
"""

from __future__ import annotations

import curses
import time

from apache_metrics_exporter.collect.snapshot import collect
from apache_metrics_exporter.units import format_bytes, visible
from apache_metrics_exporter.writers.text import clip, process_rows, slow_clients, summary, table

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, List

SORTS = ("memory", "request time")


def screen_lines(snap: Any, sort: str, hanging_threshold: float) -> List[str]:
    """What the view shows: the summary's head, then one line per process."""
    # The head: the up/DOWN line, the accept queue, requests, workers, ...
    head = [ln for ln in summary(snap, hanging_threshold) if ln][:7]
    rows = process_rows(snap)
    if sort == "memory":
        rows.sort(key=lambda r: (-r[2], r[0]))
    else:
        rows.sort(key=lambda r: (-(r[5] if r[5] is not None else -1), -r[2], r[0]))
    kind = snap.processes.memory_kind.upper()
    # BUSY: busy threads of the process's own threads (ThreadsPerChild; 1 on
    # prefork); the count alone where the pages do not tell how many it has.
    body = table(("PID", "GROUP", kind, "BUSY", "SECS", "REQUEST"),
                 [(pid, group, format_bytes(mem),
                   f"{busy}/{threads}" if threads else str(busy) if busy else "-",
                   "" if ss is None else ss, f"{vhost} {request}".strip())
                  for pid, group, mem, busy, threads, ss, request, vhost in rows],
                 right=(0, 2, 4))
    # Slow clients (docs/insight.md) below the head, wherever the summary has them.
    clients = [visible(ln) for ln in slow_clients(snap.samples) if visible(ln) not in head]
    return head + clients + ["", f"{len(rows)} processes, sorted by {sort} (s: sort, "
                                 "q: quit)"] + body


def run(fetcher: Any, options: Any, interval: float, hanging_threshold: float) -> int:
    """Show the view until q or Ctrl-C; the terminal is restored either way."""
    try:
        return curses.wrapper(_loop, fetcher, options, interval, hanging_threshold)
    except KeyboardInterrupt:
        return 0


def _loop(stdscr: Any, fetcher: Any, options: Any, interval: float,
          hanging_threshold: float) -> int:
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    from apache_metrics_exporter.restarts import Memory, track

    memory = Memory()  # the previous reading: rates and request durations

    def fresh() -> Any:
        snap = collect(fetcher, options)
        track([snap], None, memory=memory, vhost_limit=options.vhost_limit)
        return snap

    sort = 0
    snap = fresh()
    next_at = time.monotonic() + interval
    while True:
        _draw(stdscr, screen_lines(snap, SORTS[sort], hanging_threshold))
        stdscr.timeout(max(0, int((next_at - time.monotonic()) * 1000)))
        key = stdscr.getch()
        if key in (ord("q"), ord("Q"), 27):
            return 0
        if key in (ord("s"), ord("S")):
            sort = 1 - sort
            continue
        if key == curses.KEY_RESIZE:
            continue
        if time.monotonic() >= next_at:
            snap = fresh()
            next_at = time.monotonic() + interval


def _draw(stdscr: Any, lines: List[str]) -> None:
    height, width = stdscr.getmaxyx()
    stdscr.erase()
    for y, line in enumerate(lines[:height]):
        try:
            # The last cell of the screen cannot be written without an error.
            room = width - 1 if y == height - 1 else width
            stdscr.addnstr(y, 0, clip(line, room), room,
                           curses.A_BOLD if y == 0 or line.startswith("PID ") else 0)
        except curses.error:
            pass
    stdscr.refresh()
