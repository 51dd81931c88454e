"""One consistent snapshot per run and target: both pages once, processes once.

``collect`` never raises for an unreachable or broken server: the snapshot then
says ``up = 0`` with a one-line reason, and still carries whatever could be
measured (the process scan). Writers turn the snapshot's samples into text.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from functools import lru_cache, partial
from itertools import compress
from operator import is_not, le

from apache_metrics_exporter import clocks
from apache_metrics_exporter.catalogue import (
    BY_NAME,
    MEMORY_METRIC,
    MEMORY_STATS,
    REASONS,
    all_fit,
    fits,
)
from apache_metrics_exporter.collect.clients import client_samples
from apache_metrics_exporter.collect.host import Host
from apache_metrics_exporter.collect.http import Fetcher, redact
from apache_metrics_exporter.collect.processes import (
    EMPTY_SCAN,
    Listener,
    ProcessScan,
    Reuse,
    memory_stats,
    parent_of_url,
    scan,
)
from apache_metrics_exporter.collect.status import (
    AutoPage,
    EventProcess,
    WorkerRow,
    busy_rows,
    cell,
    columns,
    count_scoreboard,
    forget_impossible_ss,
    key_columns,
    parse_auto,
    parse_html,
)
from apache_metrics_exporter.errors import FetchError
from apache_metrics_exporter.records import NamedTuple
from apache_metrics_exporter.units import visible
from apache_metrics_exporter.vhosts import OTHER, collected, say_once, shown

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

    from apache_metrics_exporter.catalogue import Metric


class Options(NamedTuple):
    """Collector settings that shape a snapshot (not how it is written)."""

    hanging_threshold: float = 300.0
    exe_names: Tuple[str, ...] = ("apache2", "httpd")
    pid_file: Optional[str] = None
    memory: str = "rss"
    scan_processes: bool = True
    vhost_limit: int = 20  # virtual hosts reported by name (0: none)
    wsgi_group_names: str = "config"  # "title": as the process title shows them
    client_limit: int = 0  # client addresses reported by name (0: none, the default)


class Sample(NamedTuple):
    """One value of one catalogue metric, with its labels."""

    metric: Metric
    value: Any  # a number; text for the few metrics whose type is str
    labels: Tuple[Tuple[str, str], ...] = ()


# Sample(metric, value, labels) made in C where a cycle makes many (the
# namedtuple's __new__ is a Python function: 150 samples a cycle): the same
# three-item tuple of the same class. Every field is given (labels: ()).
_new = tuple.__new__


class Snapshot(NamedTuple):
    """Everything one collection learned about one target."""

    url: str
    timestamp: float  # epoch seconds at the start of collection
    up: bool
    error: Optional[str]  # why the page could not be read
    warnings: List[str]  # degraded but up (ExtendedStatus off, ...)
    auto: Optional[AutoPage]
    workers: Optional[Sequence[WorkerRow]]
    event_processes: Optional[List[EventProcess]]
    processes: ProcessScan
    samples: List[Sample]
    # The monotonic reference at the start of collection (clocks.mark):
    # how restarts.py times the interval when the wall clock steps.
    boot: Optional[Dict[str, Any]] = None

    def value(self, name: str, **labels: str) -> Optional[float]:
        """The value of a metric (with these labels), None if not measured."""
        want = tuple(sorted(labels.items()))
        for s in self.samples:
            if s.metric.name == name and s.labels == want:
                return s.value
        return None


class Pages(NamedTuple):
    """What one target's fetch learned (the first half of a collection)."""

    started: float  # epoch seconds
    took: float  # seconds the fetch and parse took
    auto: Optional[AutoPage]
    workers: Optional[Sequence[WorkerRow]]
    event: Optional[List[EventProcess]]
    error: Optional[str]
    reason: str
    warnings: List[str]
    boot: Optional[Dict[str, Any]] = None  # clocks.mark() at the fetch's start


def collect(fetcher: Fetcher, options: Options = Options(),
            host: Optional[Host] = None, reuse: Optional[Reuse] = None) -> Snapshot:
    """Fetch, parse, scan and derive; never raises for a broken server.
    ``reuse``: what a long-running run keeps of the process tree (Reuse)."""
    if host is None:
        host = Host((fetcher.port,), reuse.diag if reuse is not None else None)
    return prove(fetcher, fetch(fetcher), options, host, reuse)


def fetch(fetcher: Fetcher) -> Pages:
    """Both pages fetched and parsed; never raises for a broken server."""
    started, boot = clocks.wall(), clocks.mark()
    t0 = time.perf_counter()
    url = fetcher.target.url
    error: Optional[str] = None
    warnings: List[str] = []
    auto: Optional[AutoPage] = None
    workers: Optional[Sequence[WorkerRow]] = None
    event: Optional[List[EventProcess]] = None
    reason = "ok"
    try:
        auto = parse_auto(fetcher.get(fetcher.target.auto_url).decode("latin-1"),
                          source=fetcher.target.auto_url)
        if auto.extended:
            auto_at = time.monotonic()
            html = parse_html(fetcher.get(url), source=url)
            workers, event = html.workers, html.event_processes
            warnings.extend(html.warnings)
            uptime = auto.values.get("server_uptime_seconds", auto.values.get("uptime"))
            if html.uptime is None and workers and uptime is not None:
                # The HTML page did not say its uptime: ?auto's, plus the
                # time since it was read, still tells an SS that cannot be.
                forget_impossible_ss(workers, uptime + time.monotonic() - auto_at + 1)
            if workers is None:
                warnings.append(f"{url} has no worker table; hanging workers and "
                                "worker counts are not reported")
        else:
            warnings.append(f"ExtendedStatus is Off on {url}: no totals and no worker "
                            "table; add 'ExtendedStatus On' to Apache's configuration")
    except FetchError as exc:
        error = str(exc)
        reason = fetch_reason(exc)
        auto = workers = event = None
    return Pages(started, time.perf_counter() - t0, auto, workers, event, error, reason,
                 warnings, boot)


def prove(fetcher: Fetcher, pages: Pages, options: Options, host: Host,
          reuse: Optional[Reuse] = None) -> Snapshot:
    """The second half of a collection, after the fetch has ended: the Apache
    serving the URL proven (with ``host``, the batch's one reading of the
    socket table and its owners), its processes scanned, the snapshot built.
    The listening socket's accept queue is thus read after the deadline."""
    t0 = time.perf_counter()
    url = fetcher.target.url
    auto, workers, event = pages.auto, pages.workers, pages.event
    error, reason, warnings = pages.error, pages.reason, list(pages.warnings)
    processes = EMPTY_SCAN
    listeners: Tuple[Listener, ...] = ()
    if options.scan_processes:
        # Only the Apache proven to serve the URL (the owner of its listening
        # socket) is scanned; the page's PIDs are mere hints where to look.
        pids = list(filter(None, key_columns(workers)[0])) if workers else []
        parent = parent_of_url(fetcher.host, fetcher.port, options.exe_names,
                               options.pid_file, pids,
                               fetcher.peer if auto is not None else None, host,
                               reuse=reuse)
        if parent.pid is None:
            warnings.append(f"no process figures for {url}: {parent.reason}")
        else:
            processes = scan(parent.pid, options.exe_names, options.memory,
                             options.wsgi_group_names == "config", reuse, parent.stat)
        listeners = parent.listeners
    if reason == "timeout" and any(s.queue > 0 for s in listeners):
        # Read after the deadline: connections (ours among them, unless the
        # SYN was dropped because the queue was full) still wait to be
        # accepted, so no worker was free to take them: saturated.
        reason = "saturated"
        error = f"{error}; {_queued(listeners)} waiting in the accept queue: saturated"
    return build(url, pages.started, auto, workers, event, processes, options, error,
                 warnings, duration=pages.took + time.perf_counter() - t0,
                 listeners=listeners, reason=reason, boot=pages.boot)


def _queued(listeners: Sequence[Listener]) -> str:
    """'3 connections (limit 4)' for the message of a saturated target."""
    waiting = sum(s.queue for s in listeners)
    limits = [s.limit for s in listeners]
    limit = f" (limit {sum(x or 0 for x in limits)})" if None not in limits else ""
    return f"{waiting} connection{'s' if waiting != 1 else ''}{limit}"


def fetch_reason(exc: BaseException) -> str:
    """The status_reason word of a failed fetch (catalogue.REASONS): the one
    its raiser gave (FetchError.reason), else told from the exception it was
    raised from (``raise FetchError(...) from None`` still keeps that as its
    __context__). "saturated" needs the accept queue: collect() decides it."""
    import socket

    from apache_metrics_exporter.collect.wire import ProtocolError

    ssl = sys.modules.get("ssl")  # (no TLS error without it)

    chain: List[BaseException] = []
    seen: Optional[BaseException] = exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for item in chain:
        given = getattr(item, "reason", None)
        if isinstance(item, FetchError) and given in REASONS:
            return str(given)
    for item in chain:
        if isinstance(item, FetchError):
            continue
        if isinstance(item, ConnectionRefusedError):
            return "refused"
        if isinstance(item, (socket.timeout, TimeoutError)):
            return "timeout"
        if ssl is not None and isinstance(item, ssl.SSLError):
            return "tls"
        if isinstance(item, socket.gaierror):
            return "resolve"
        if isinstance(item, (ProtocolError, ConnectionResetError,
                             BrokenPipeError)):
            return "bad_response"
        if isinstance(item, OSError):
            return "unreachable"
    return "error"


JOIN_MARGIN = 1.0  # seconds past --timeout before a target is given up as late


def collect_all(fetchers: List[Fetcher], options: Options = Options(),
                reuse: Optional[Reuse] = None) -> List[Snapshot]:
    """Every target at once, each bounded by one --timeout for its whole fetch;
    the batch ends within the longest --timeout plus a small margin whatever
    the targets do. A target still running then is reported down, and its
    fetcher is replaced in ``fetchers`` (the late one keeps its connection
    until it gives up), so a loop's next batch starts clean.

    The fetches run concurrently; the proofs and process scans follow, one
    after another, sharing one Host: the socket table is read once per batch
    (not at all when every target is remote), so a target costs the same in
    a batch of 10 as in one of 1,000."""
    host = Host([f.port for f in fetchers], reuse.diag if reuse is not None else None)

    def one(fetcher: Fetcher) -> Pages:
        with fetcher.deadline():
            return fetch(fetcher)

    if len(fetchers) == 1:
        return [prove(fetchers[0], one(fetchers[0]), options, host, reuse)]
    import threading

    results: List[Optional[Pages]] = [None] * len(fetchers)

    def run(i: int) -> None:
        results[i] = one(fetchers[i])

    started, boot = clocks.wall(), clocks.mark()
    threads = [threading.Thread(target=run, args=(i,), name=f"collect-{i}", daemon=True)
               for i in range(len(fetchers))]
    for thread in threads:
        thread.start()
    end = time.monotonic() + max(f.target.timeout for f in fetchers) + JOIN_MARGIN
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    out = []
    for i, fetcher in enumerate(fetchers):
        pages = results[i]
        if pages is not None:
            snap = prove(fetcher, pages, options, host, reuse)
        else:
            target = fetcher.target
            snap = build(target.url, started, None, None, None, EMPTY_SCAN, options,
                         error=f"no complete answer from {redact(target.url)} within "
                               f"{target.timeout:g} s (--timeout)", reason="timeout",
                         boot=boot)
            fetchers[i] = Fetcher(target)
        out.append(snap)
    return out


def build(url: str, started: float, auto: Optional[AutoPage],
          workers: Optional[Sequence[WorkerRow]], event: Optional[List[EventProcess]],
          processes: ProcessScan, options: Options = Options(), error: Optional[str] = None,
          warnings: Optional[List[str]] = None, duration: float = 0.0,
          listeners: Sequence[Listener] = (), reason: Optional[str] = None,
          boot: Optional[Dict[str, Any]] = None) -> Snapshot:
    """A snapshot from parsed pages and a process scan (no I/O).

    ``listeners`` are the proven Apache's listening sockets (their accept
    queues: reported whether the page was read or not); ``reason`` the
    status_reason word of a failed fetch ("ok" when the page was read).

    Every sample is checked against what the outputs can carry (catalogue.fits):
    one that does not fit is left out with one warning, so that no writer ever
    gets a value it would have to refuse or bend."""
    samples = _samples(auto, workers, event, processes, options)
    samples.extend(saturation_samples(listeners, "ok" if auto is not None
                                      else reason if reason in REASONS else "error"))
    samples.append(_new(Sample, (BY_NAME["up"], 1 if auto is not None else 0, ())))
    samples.append(_new(Sample, (BY_NAME["collection_duration_seconds"], round(duration, 6), ())))
    if workers is not None:  # slow clients (collect/clients.py): no table, no figures
        samples.extend(client_samples(workers, url, options.client_limit))
    warnings = list(auto.warnings if auto is not None else ()) + list(warnings or ()) \
        + list(processes.warnings)
    if not all_fit(samples):
        kept = []
        for s in samples:
            if fits(s.metric, s.value):
                kept.append(s)
            else:
                warnings.append(f"{visible(url)}: {s.metric.name} is out of the range the "
                                "outputs can carry; left out")
        samples = kept
    return Snapshot(url, started, auto is not None, error, warnings, auto,
                    workers, event, processes, samples, boot)


def _samples(auto: Optional[AutoPage], workers: Optional[Sequence[WorkerRow]],
             event: Optional[Sequence[EventProcess]], processes: ProcessScan,
             options: Options) -> List[Sample]:
    out: List[Sample] = []
    add = out.append
    if auto is not None:
        for name, value in auto.values.items():
            add(_new(Sample, (BY_NAME[name], value, ())))
        for metric, labels, value, _key in auto.proxy:
            add(_new(Sample, (metric, value, tuple(sorted(labels.items())))))
        out.extend(_derived(auto))
        board = count_scoreboard(auto.scoreboard)
        scoreboard = BY_NAME["scoreboard"]
        for state, n in board.items():
            add(_new(Sample, (scoreboard, n, (("state", state),))))
        slots = len(auto.scoreboard)
        add(Sample(BY_NAME["scoreboard_slots"], slots))
        busy = auto.values.get("busy_workers")
        if busy is not None and slots:
            add(Sample(BY_NAME["utilisation"], round(busy / slots, 6)))
    if workers is not None:
        out.extend(_worker_samples(workers, processes, options))
    if event is not None:
        add(Sample(BY_NAME["event_processes_not_accepting"],
                   sum(1 for p in event if p.accepting is False)))
    if processes.parent_pid is not None:
        for group, values in processes.groups().items():
            stats = memory_stats(values)
            label = (("group", group),)
            for stat in MEMORY_STATS:
                add(_new(Sample, (BY_NAME[MEMORY_METRIC[stat]], getattr(stats, stat), label)))
        for group in sorted(processes.truncated):
            add(Sample(BY_NAME["wsgi_group_name_truncated"], 1, (("group", group),)))
    return out


def saturation_samples(listeners: Sequence[Listener], reason: str) -> List[Sample]:
    """The accept queue of each listening socket and their sums (none at all
    when no socket was read: left out, never 0), and the reason as a word
    and as a state set."""
    out = []
    length, limit = BY_NAME["accept_queue_length"], BY_NAME["accept_queue_limit"]
    for item in listeners:
        label = (("listen", item.address),)
        out.append(_new(Sample, (length, item.queue, label)))
        if item.limit is not None:
            out.append(_new(Sample, (limit, item.limit, label)))
    if listeners:
        out.append(_new(Sample, (BY_NAME["accept_queue_length_all"],
                                 sum(s.queue for s in listeners), ())))
        if all(s.limit is not None for s in listeners):
            out.append(_new(Sample, (BY_NAME["accept_queue_limit_all"],
                                     sum(s.limit or 0 for s in listeners), ())))
    out.append(_new(Sample, (BY_NAME["status_reason"], reason, ())))
    state = BY_NAME["up_reason"]
    out.extend(_new(Sample, (state, 1 if word == reason else 0, (("reason", word),)))
               for word in REASONS)
    return out


def _worker_samples(workers: Sequence[WorkerRow], processes: ProcessScan,
                    options: Options) -> List[Sample]:
    """The figures of the worker table, read from its columns (the PIDs,
    modes and SS, and the virtual hosts of the busy rows) in bulk: no row is
    made, and no Python loop runs per row (2,100 busy rows: 1.0 -> 0.2 ms)."""
    pids, modes, ages = key_columns(workers)
    out: List[Sample] = []
    add = out.append
    # Busy: not idle (apache-manager: not "_", "I" or "."); live: not ".".
    active = busy_rows(modes)
    active_ages = list(map(ages.__getitem__, active))
    measured: List[int] = list(filter(_known, active_ages))  # type: ignore[arg-type]
    hanging = sum(map(partial(le, options.hanging_threshold), measured))
    longest = max(measured) if measured else None
    # the first busy row with the largest SS
    oldest = active[active_ages.index(longest)] if longest is not None else -1
    live = len(modes) - modes.count(".")
    add(_new(Sample, (BY_NAME["workers_hanging"], hanging, ())))
    add(_new(Sample, (BY_NAME["native_worker_count"], live, ())))
    add(_new(Sample, (BY_NAME["active_requests"], len(active), ())))
    request = cell(workers, "request", oldest) if oldest >= 0 else ""
    add(_new(Sample, (BY_NAME["longest_request_seconds"], longest if oldest >= 0 else 0, ())))
    add(_new(Sample, (BY_NAME["longest_request"],  # (row.request)
                      "" if request == "NULL" else request, ())))
    add(_new(Sample, (BY_NAME["longest_request_vhost"],
                      cell(workers, "vhost", oldest) if oldest >= 0 else "", ())))
    if options.vhost_limit > 0:
        vhosts = columns(workers, ("vhost",))[0]
        out.extend(_vhost_samples(list(map(vhosts.__getitem__, active)),
                                  list(map(modes.__getitem__, active)), active_ages,
                                  options.vhost_limit))
    if processes.parent_pid is not None:
        table_pids = set(compress(pids, map(".".__ne__, modes)))
        add(_new(Sample, (BY_NAME["foreign_worker_count"], sum(
            1 for c in processes.children if c.pid not in table_pids), ())))
    return out


_known = partial(is_not, None)  # a value that is not None


def _largest(values: Iterable[Optional[int]]) -> int:
    """The largest of the values that are not None (0 without one)."""
    return max(filter(_known, values), default=0)  # type: ignore[type-var,return-value]
_FEW_VHOSTS = 8  # up to this many hosts with requests in flight: one pass per host, in C


def vhost_samples(active: Sequence[WorkerRow], limit: int) -> List[Sample]:
    """Busy workers, requests in flight and the longest request per virtual
    host of these busy rows (see _vhost_samples)."""
    return _vhost_samples([r.vhost for r in active], [r.mode for r in active],
                          [r.ss for r in active], limit)


def vhost_stats(vhosts: Sequence[str], modes: Sequence[str],
                ages: Sequence[Optional[int]]) -> Dict[str, List[int]]:
    """{virtual host: [busy workers, requests in flight (W), longest request
    in flight (SS; 0 without one)]} of the busy rows' columns, counted in
    bulk: a big table's rows are not looped over in Python unless more than
    _FEW_VHOSTS hosts have requests in flight."""
    working = list(map("W".__eq__, modes))
    serving = list(compress(vhosts, working))
    flight = Counter(serving)
    served = list(compress(ages, working))
    longest: Dict[str, int] = {}
    if len(flight) == 1:
        longest = {serving[0]: _largest(served)}
    elif len(flight) <= _FEW_VHOSTS:
        longest = {v: _largest(compress(served, map(v.__eq__, serving))) for v in flight}
    else:
        for vhost, age in zip(serving, served):
            if age is not None and age > longest.get(vhost, age - 1):
                longest[vhost] = age
    return {vhost: [busy, flight.get(vhost, 0), max(0, longest.get(vhost, 0))]
            for vhost, busy in Counter(vhosts).items()}


def _vhost_samples(vhosts: Sequence[str], modes: Sequence[str],
                   ages: Sequence[Optional[int]], limit: int) -> List[Sample]:
    """Busy workers, requests in flight and the longest request per virtual
    host, from the columns of the busy rows: the ``limit`` hosts with most
    busy workers by name, the rest summed as ``other`` (bounded cardinality,
    whatever the page says). Each host keeps a label of its own
    (vhosts.collected: a host named ``other`` is not the aggregate); two
    that would still share one are counted in ``other``."""
    ranked = sorted(vhost_stats(vhosts, modes, ages).items(),
                    key=lambda item: (-item[1][0], item[0]))
    rest = [s for _, s in ranked[limit:]]
    named: dict = {}
    for raw, stats in ranked[:limit]:
        name = collected(raw)
        if name in named:
            say_once(f"virtual hosts {shown(named[name][0])} and {shown(raw)} would "
                     f"share the label {shown(name)}; the second is counted in vhost "
                     f"{OTHER!r}")
            rest.append(stats)
        else:
            named[name] = (raw, stats)
    labelled = [(name, stats) for name, (_raw, stats) in named.items()]
    if rest:
        labelled.append((OTHER, [sum(s[0] for s in rest), sum(s[1] for s in rest),
                                 max(s[2] for s in rest)]))
    out = []
    for name, (busy, flight, longest) in sorted(labelled):
        label = (("vhost", name),)
        out.append(_new(Sample, (BY_NAME["vhost_busy_workers"], busy, label)))
        out.append(_new(Sample, (BY_NAME["vhost_requests_in_flight"], flight, label)))
        out.append(_new(Sample, (BY_NAME["vhost_longest_request_seconds"], longest, label)))
    return out


_CPU_TOTALS = (("cpu_total_user_seconds", "cpu_user_seconds", "cpu_children_user_seconds"),
               ("cpu_total_system_seconds", "cpu_system_seconds",
                "cpu_children_system_seconds"))
MAX_INFO = 200  # characters of ServerVersion/ServerMPM kept in a label


def _derived(auto: AutoPage) -> List[Sample]:
    """Figures apache_exporter makes from several lines: CPU time with the
    children's added in, apache_info's labels and the version as a number."""
    out = []
    for total, own, children in _CPU_TOTALS:
        if own in auto.values:
            out.append(_new(Sample, (BY_NAME[total],
                                     auto.values[own] + auto.values.get(children, 0), ())))
    version = auto.info.get("ServerVersion", "")[:MAX_INFO] or "UNKNOWN"
    mpm = auto.info.get("ServerMPM", "")[:MAX_INFO] or "UNKNOWN"
    out.append(_new(Sample, (BY_NAME["info"], 1, (("mpm", mpm), ("version", version)))))
    number = version_number(version)
    if number is not None:
        out.append(_new(Sample, (BY_NAME["version"], number, ())))
    return out


@lru_cache(maxsize=16)  # the same ServerVersion every cycle
def version_number(server_version: str) -> Optional[float]:
    """``Apache/2.4.71 (Debian) ...`` -> 2.04071 (major.minor(2)patch(3)), None
    when the version cannot be read that way."""
    product, _, rest = server_version.partition("/")
    parts = rest.split(" ", 1)[0].split(".")
    if not product or len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 3
                                                 for p in parts):
        return None
    major, minor, patch = (int(p) for p in parts)
    if minor > 99:
        return None
    return float(f"{major}.{minor:02d}{patch:03d}")
