"""Figures of the interval between two collections: rates and request durations.

Everything here compares the previous reading of a target (kept by
restarts.py: in memory in the loops, in the collector state file for one-shot
runs) with this collection's; restarts.track calls ``derive`` at its one
comparison place, after it has ruled out a hard restart. Pure functions: no
I/O, no clock.

Rates: the ``Total Accesses``, ``Total kBytes`` and ``Total Duration`` deltas
over the time between the two collections' start times, measured on
CLOCK_BOOTTIME when both readings carry it from the same boot (clocks.py: a
wall-clock step is no interval), else on the wall clock. A delta that goes
down (a counter reset the restart check did not see) leaves the rate out.

Request durations: the worker table shows, per slot, how many requests the
slot has served (``Acc`` a/b/c: this connection / this child / this slot, the
third never reset while the server lives), how long its most recent request
took (``Req``, ms) and, on 2.4.35+, the sum of its durations (``Dur``, ms).
Between two collections, a slot whose count grew by n served n requests:

- n = 1: that request's duration exactly (the ``Dur`` delta, or ``Req`` on
  a slot between requests);
- n > 1 with ``Dur``: its last request (``Req``) exactly and the n - 1 others
  each at their mean, (``Dur`` delta - ``Req``) / (n - 1); a slot busy with a
  new request (its ``Req`` is not the last one's): n at the mean;
- n > 1 without ``Dur`` (2.2, 2.4.6-2.4.34): only the last one, and only on a
  slot between requests.

So the histogram's count and sum are exact wherever ``Dur`` is printed, and a
slot serving many short requests beside one long one shows them all near
their mean: percentiles are pulled towards the mean when slots serve several
requests per interval (docs/insight.md gives the bounds).

Slots are found by the ``Srv`` process slot and PID; a process slot whose PID
changed (a new worker process) is skipped for that interval. Within one
process, rows are in thread order, and a thread is on the page once it has
served a request: the rows with a count pair up by position when their number
did not change; otherwise the process is skipped for the interval (it began
using more threads; only threaded MPMs). The exporter's own status requests
(their exact request lines, as collect/clients.py knows them: not any request
for the same path) are taken out of both the sample and the total.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import compress, groupby

from apache_metrics_exporter import clocks
from apache_metrics_exporter.catalogue import BY_NAME, DURATION_BUCKETS, DURATION_STATS
from apache_metrics_exporter.collect.http import REQUEST_FIELD
from apache_metrics_exporter.collect.snapshot import Sample
from apache_metrics_exporter.collect.status import columns, key_columns
from apache_metrics_exporter.vhosts import OTHER, collected

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, List, Optional, Sequence, Tuple

    # A process slot's rows: (pid, counts, reqs, durs, row indexes).
    _Group = Tuple[int, List[int], List[int], List[int], List[int]]

# Modes of a slot between requests: its Req is its last request's.
_BETWEEN = frozenset("_KCI.")
# le labels of the buckets, +Inf last (as Prometheus writes them).
LE = tuple(repr(b) for b in DURATION_BUCKETS) + ("+Inf",)
HIST_LEN = len(LE) + 2  # bucket counts (not cumulative), sum of seconds, count
MAX_SLOT_INTS = 3 * 32768  # per target: ServerLimit x ThreadsPerChild rows, and more
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
_INT64_MAX = (1 << 63) - 1
_new = tuple.__new__  # a Sample made in C (see collect/snapshot.py)


def _acc(text: str) -> Optional[int]:
    """The slot's count from ``Acc`` (``conn/child/slot``), None if unreadable."""
    parts = text.split("/")
    if len(parts) != 3 or not parts[2].isascii() or not parts[2].isdigit() \
            or len(parts[2]) > 18:
        return None
    return int(parts[2])


def _int(text: str) -> int:
    """A Req/Dur cell as an int, -1 when absent or not a plain number."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else -1


def _srv(text: str) -> Optional[str]:
    """The process slot of ``Srv`` (``slot-generation``)."""
    slot = text.partition("-")[0]
    return slot if slot.isascii() and slot.isdigit() and len(slot) <= 9 else None


class _Memo(dict):
    """Cell text -> value, each distinct text converted once (Req, Dur and
    Srv repeat a lot); cleared beyond 65536 texts to stay bounded."""

    def __init__(self, convert: Any) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, text: str) -> Any:
        if len(self) >= 65536:
            self.clear()
        value = self[text] = self.convert(text)
        return value


_INTS, _SRVS = _Memo(_int), _Memo(_srv)
_COUNTS = _Memo(lambda text: int(text) if text.isascii() and text.isdigit()
                and len(text) <= 18 else None)


def _accs(texts: List[str]) -> List[Optional[int]]:
    """_acc of every cell of the Acc column: when every cell has its two
    slashes (Apache's), one join and split for the column and the counts
    converted once per distinct text; else cell by cell."""
    if list(map(str.count, texts, ["/"] * len(texts))).count(2) != len(texts):
        return list(map(_acc, texts))
    return list(map(_COUNTS.__getitem__, "/".join(texts).split("/")[2::3]))
_cache: Dict[int, Tuple[Any, Any]] = {}


def _groups(workers: Sequence[Any]) -> Dict[str, _Group]:
    """Rows with a count, by process slot: {srv: (pid, counts, reqs, durs,
    row indexes)}, four lists in row order; a process slot whose rows name
    two PIDs (a page changing as it was written) is left out. The four
    columns are read in bulk from the table (status.columns), once per
    table: slots and observe share it."""
    cached = _cache.get(id(workers))
    if cached is not None and cached[0] is workers:
        return cached[1]
    out: Dict[str, _Group] = {}
    bad = set()
    srvs, accs, reqs, durs = columns(workers, ("srv", "acc", "req", "dur"))
    # (None or 0 where a row lacks one: those rows are dropped below)
    pids: List[Any] = key_columns(workers)[0]  # (no row is made of a fast reader's table)
    counts: List[Any] = _accs(accs)
    ids = list(map(_SRVS.__getitem__, srvs))
    # Rows with a PID, a process slot and a count (each is None or 0 when
    # not): picked column by column, then cut into runs of one process slot
    # (Apache lists a process's threads together; a slot seen again further
    # down is added to its first run).
    keep = list(map(all, zip(pids, counts, ids)))
    if False in keep:
        pids, counts, ids, reqs, durs = (list(compress(column, keep)) for column in
                                         (pids, counts, ids, reqs, durs))
        rows: List[int] = list(compress(range(len(keep)), keep))
    else:
        rows = list(range(len(keep)))
    req_ms: List[int] = list(map(_INTS.__getitem__, reqs))
    dur_ms: List[int] = list(map(_INTS.__getitem__, durs))
    start = 0
    for srv, run in groupby(ids):
        end = start + len(list(run))
        pid = pids[start]
        if pids[start:end].count(pid) != end - start:
            bad.add(srv)
        group = out.get(srv)
        if group is None:
            out[srv] = (pid, counts[start:end], req_ms[start:end], dur_ms[start:end],
                        rows[start:end])
        else:
            if group[0] != pid:
                bad.add(srv)
            group[1].extend(counts[start:end])
            group[2].extend(req_ms[start:end])
            group[3].extend(dur_ms[start:end])
            group[4].extend(rows[start:end])
        start = end
    for srv in bad:
        del out[srv]
    if len(_cache) > 8:
        _cache.clear()
    _cache[id(workers)] = (workers, out)  # the list is kept: its id stays its own
    return out


def slots(workers: Optional[Sequence[Any]]) -> Optional[Dict[str, List[int]]]:
    """What the next collection compares with: {srv: [pid, count, req, dur, ...]}
    (req, dur -1 when absent); None without a worker table or beyond the bound."""
    if workers is None:
        return None
    out: Dict[str, List[int]] = {}
    used = 0
    for srv, (pid, counts, reqs, durs, _rows) in _groups(workers).items():
        used += 3 * len(counts) + 1
        if used > MAX_SLOT_INTS:
            return None  # a partial table would make the rest look new next time
        flat = [pid] * (3 * len(counts) + 1)
        flat[1::3], flat[2::3], flat[3::3] = counts, reqs, durs
        out[srv] = flat
    return out


# The MPMs that serve a request synchronously (ap_process_request): there both
# ap_process_request_after_handler and ap_process_request itself stop the
# request's clock (http_request.c, every 2.4 since 2.4.35, the first to keep
# Dur), so the scoreboard adds each duration twice; event serves it
# asynchronously and adds it once.
SYNCHRONOUS_MPMS = frozenset(("prefork", "worker", "winnt"))


def mpm_scale(mpm: str) -> Optional[float]:
    """The Dur factor the MPM (?auto's ServerMPM) implies, for the intervals
    where no slot tells (dur_scale): 0.5 for the synchronous MPMs, 1.0 for
    event, None when unknown. What the slots show, when they show it, wins:
    an Apache that fixed the double count is measured, not assumed."""
    name = mpm.strip().lower()
    if name in SYNCHRONOUS_MPMS:
        return 0.5
    if name == "event":
        return 1.0
    return None


def dur_scale(pairs: Sequence[Tuple[int, int, int, int, int, int]],
              modes: Sequence[str]) -> Optional[float]:
    """How many times ``Dur`` counts a request, as the slots that served one
    request between the collections show it (their Dur delta against Req):
    Apache 2.4.71 adds each request's duration twice (to Dur and to Total
    Duration), so 0.5; 1.0 where it counts once; None when no slot tells."""
    ratios = sorted((row_dur - max(dur0, 0)) / req
                    for (count0, dur0, count, req, row_dur, _i), mode in zip(pairs, modes)
                    if count - count0 == 1 and mode in _BETWEEN and req >= 5
                    and row_dur >= 0 and (dur0 >= 0 or count0 == 0))
    if not ratios:
        return None
    middle = ratios[len(ratios) // 2]
    if 1.6 <= middle <= 2.4:
        return 0.5
    if 0.8 <= middle <= 1.25:
        return 1.0
    return None


def observe(before: Dict[str, List[int]], workers: Sequence[Any], own: Sequence[str] = (),
            scale: Optional[float] = None, own_ms: Optional[float] = None
            ) -> Tuple[List[Tuple[float, int, str]], int, Optional[float]]:
    """The requests the worker table shows since ``before``: a list of
    (milliseconds, how many requests, vhost), how many of the interval's
    requests were the exporter's own status requests (left out: a slot that
    served at most 2 requests, the last one's line one of ``own``, the
    request lines of its ?auto and HTML reads, clients.own_requests), and the
    Dur scale (dur_scale; ``scale``, the one found before, when no slot tells;
    None, taken as 1, until one has).

    ``own_ms``: the most our own reads can have taken together (the two
    collections' durations; None: unknown). A slot showing our line whose
    requests took longer (by Dur) also served a client - on the event MPM
    our HTML read goes to any idle thread, often one that has just served
    one: only one of two is ours (the last, whose Req is exact, or the ?auto
    read before our HTML read on its connection), none of one in W (the read
    in progress is not counted yet), and the client's is sampled.

    At least two of our reads finished in the interval (the previous HTML
    read, this ?auto read). The event MPM blanks a slot's request line (and
    host) when the thread next handles a connection without a request (a
    lingering close): when fewer than two show our line, requests of slots
    between requests that show no line and took no longer than our reads
    can have are ours, the quickest first, up to two - a slot's only
    request, or the first of two (the last, a client's, has Req)."""
    obs: List[Tuple[float, int, str]] = []
    blank: List[int] = []  # obs of slots that may be our reads with the line blanked
    ours = 0
    matched: List[Tuple[int, int, int, int, int, int]] = []
    for srv, (pid, counts, reqs, durs, rows) in _groups(workers).items():
        old = before.get(srv)
        if old is None:
            # Not on the previous page: none of its threads had served a request.
            matched.extend(zip([0] * len(rows), [-1] * len(rows), counts, reqs, durs, rows))
            continue
        if old[0] != pid or (len(old) - 1) // 3 != len(rows):
            continue  # a new process in the slot, or more threads used: skipped
        # Only the slots that served a request since: the others add nothing
        # below (nor to dur_scale), and on a big server they are most rows.
        matched.extend([pair for pair in zip(old[1::3], old[3::3], counts, reqs, durs, rows)
                        if pair[2] > pair[0]])
    table_modes = key_columns(workers)[1]
    modes = [table_modes[i] for *_, i in matched]
    found = dur_scale(matched, modes)
    scale = found if found is not None else scale
    factor = 1.0 if scale is None else scale
    vhosts, requests = columns(workers, ("vhost", "request"))
    for (count0, dur0, count, req, dur, i), mode in zip(matched, modes):
        n = count - count0
        if n <= 0:
            continue
        between = mode in _BETWEEN
        vhost = vhosts[i]
        if n <= 2 and requests[i][:REQUEST_FIELD] in own:
            timed = dur >= 0 and (dur0 >= 0 or count0 == 0)
            total = (dur - max(dur0, 0)) * factor if timed else 0.0
            if own_ms is None or not timed or total <= own_ms + n \
                    or (between and n == 1):
                ours += n  # our own ?auto and HTML requests (keep-alive: one worker)
                continue
            # Longer than our reads can have taken: a client's request too.
            if n == 2:
                ours += 1
                obs.append((total - req if between and 0 <= req <= total else total, 1, vhost))
            else:  # in W: our read in progress, the one completed a client's
                obs.append((total, 1, vhost))
            continue
        if dur >= 0 and (dur0 >= 0 or count0 == 0):
            total = (dur - max(dur0, 0)) * factor
            if total < 0:
                continue
            if n == 1:
                if between and not requests[i] and own_ms is not None \
                        and total <= own_ms + 1:
                    blank.append(len(obs))
                obs.append((float(req) if between and req >= 0 else total, 1, vhost))
            elif between and 0 <= req <= total:
                obs.append((float(req), 1, vhost))
                if n == 2 and not requests[i] and own_ms is not None \
                        and total - req <= own_ms + 1:
                    blank.append(len(obs))  # (our read, then a client's)
                obs.append(((total - req) / (n - 1), n - 1, vhost))
            else:
                obs.append((total / n, n, vhost))
        elif between and req >= 0:
            obs.append((float(req), 1, vhost))
    if blank and ours < 2:
        taken = set(sorted(blank, key=lambda at: obs[at][0])[:2 - ours])
        ours += len(taken)
        obs = [value for at, value in enumerate(obs) if at not in taken]
    return obs, ours, scale


def quantile(values: Sequence[Tuple[float, int]], q: float) -> float:
    """Nearest-rank quantile of weighted values (sorted by value)."""
    return _quantiles(values, (q,))[0]


def _quantiles(values: Sequence[Tuple[float, int]], qs: Sequence[float]) -> List[float]:
    """Nearest-rank quantiles of weighted values (sorted by value), for
    ascending ``qs``, in one pass over the values."""
    total = sum([w for _, w in values])
    ranks = [max(1, math.ceil(q * total - 1e-9)) for q in qs]
    out: List[float] = []
    seen = 0
    for value, weight in values:
        seen += weight
        while seen >= ranks[len(out)]:
            out.append(value)
            if len(out) == len(ranks):
                return out
    return out + [values[-1][0]] * (len(ranks) - len(out))


_STATS = [stat for stat in DURATION_STATS if stat in QUANTILES]
_STAT_QS = sorted(QUANTILES[stat] for stat in _STATS)


def _stats(values: List[Tuple[float, int]]) -> Dict[str, float]:
    values.sort()
    found = dict(zip(_STAT_QS, _quantiles(values, _STAT_QS)))
    out = {stat: round(found[QUANTILES[stat]] / 1000, 6) for stat in _STATS}
    out["max"] = round(values[-1][0] / 1000, 6)
    return out


def _add(hist: Optional[List[float]], values: Sequence[Tuple[float, int]]) -> List[float]:
    hist = list(hist) if hist and len(hist) == HIST_LEN else [0] * HIST_LEN
    seconds = hist[-2]
    count = hist[-1]
    bounds = DURATION_BUCKETS
    for ms, weight in values:
        hist[bisect_left(bounds, ms / 1000)] += weight
        seconds = round(seconds + ms * weight / 1000, 6)  # (as each was always added)
        count += weight
    hist[-2], hist[-1] = seconds, count
    return hist


def _own_ms(before: Dict[str, Any], now: Dict[str, Any]) -> Optional[float]:
    """The most the exporter's own reads in the interval can have taken, in
    ms: its previous HTML read within the previous collection, its ?auto read
    within this one (each reading's collection_duration_seconds, which spans
    the fetches); None when either reading lacks it."""
    total = 0.0
    for span in (before.get("duration"), now.get("duration")):
        if not isinstance(span, (int, float)) or isinstance(span, bool) \
                or not 0 < span < 1e6:
            return None
        total += span
    return total * 1000


def rates(before: Dict[str, Any], now: Dict[str, Any]) -> List[Sample]:
    """Requests/s, bytes/s and mean duration over the interval (each left out
    when either reading lacks it or it went down)."""
    span = clocks.elapsed(before, now)  # monotonic within one boot: a stepped clock
    if not span > 0:
        return []
    old, new = before["figures"], now["figures"]
    out = [_new(Sample, (BY_NAME["interval_seconds"], round(span, 6), ()))]

    def delta(key: str) -> Optional[float]:
        a, b = old.get(key), new.get(key)
        return b - a if a is not None and b is not None and b >= a else None

    accesses, kbytes, duration = delta("accesses"), delta("kbytes"), delta("duration_ms")
    if accesses is not None:
        out.append(_new(Sample, (BY_NAME["interval_requests_per_second"],
                                 round(accesses / span, 6), ())))
    if kbytes is not None:
        out.append(_new(Sample, (BY_NAME["interval_bytes_per_second"],
                                 round(kbytes * 1024 / span, 6), ())))
    if duration is not None and accesses:
        out.append(_new(Sample, (BY_NAME["interval_request_duration_seconds"],
                                 round(duration / accesses / 1000, 6), ())))
    return out


def derive(before: Dict[str, Any], now: Dict[str, Any], workers: Optional[Sequence[Any]],
           own: Sequence[str], vhost_limit: int, mpm: str = "") -> List[Sample]:
    """The interval's samples; sets ``now["hist"]``, the cumulative histograms
    (carried over from ``before``) that Prometheus' buckets count. ``mpm``
    (ServerMPM) gives the Dur factor until a slot measures it (mpm_scale)."""
    out = rates(before, now)
    hist_before = before.get("hist") or {}
    now["hist"] = dict(hist_before)
    old_slots = before.get("slots")
    known = before["figures"].get("dur_scale")
    # (a one-shot run's from the state file: only what dur_scale can find)
    scale = known if known in (0.5, 1.0) else mpm_scale(mpm)
    if old_slots is not None and workers is not None:
        obs, ours, scale = observe(old_slots, workers, own, scale, _own_ms(before, now))
        now["figures"]["dur_scale"] = scale
    if scale is not None and scale != 1.0:
        for sample in out:
            if sample.metric.name == "interval_request_duration_seconds":
                out[out.index(sample)] = sample._replace(value=round(sample.value * scale, 6))
    if old_slots is None or workers is None:
        return out
    everything = [(ms, weight) for ms, weight, _vhost in obs]
    by_name: Dict[str, List[Tuple[float, int]]] = {}  # the page's names, each labelled once
    for pair, (_ms, _weight, vhost) in zip(everything, obs):
        values = by_name.get(vhost)
        if values is None:
            by_name[vhost] = [pair]
        else:
            values.append(pair)
    per: Dict[str, List[Tuple[float, int]]] = {}
    for name, values in by_name.items():
        per.setdefault(collected(name), []).extend(values)
    sampled = sum(w for _, w in everything)
    accesses = now["figures"].get("accesses")
    previous = before["figures"].get("accesses")
    if accesses is not None and previous is not None and accesses - previous - ours > 0:
        out.append(_new(Sample, (BY_NAME["request_duration_sampled_ratio"],
                                 round(min(1.0, sampled / (accesses - previous - ours)), 6), ())))
    out.append(_new(Sample, (BY_NAME["request_duration_sampled"], sampled, ())))
    hist = now["hist"]
    hist[""] = _add(hist_before.get(""), everything)
    out.extend(_hist_samples("request_duration", hist[""], ()))
    if everything:
        for stat, value in _stats(everything).items():
            out.append(_new(Sample, (BY_NAME[f"request_duration_{stat}_seconds"], value, ())))
    if vhost_limit <= 0:
        return out
    ranked = sorted(per.items(), key=lambda item: (-sum(w for _, w in item[1]), item[0]))
    shown = dict(ranked[:vhost_limit])
    rest = [v for _, values in ranked[vhost_limit:] for v in values]
    if rest:
        shown[OTHER] = shown.get(OTHER, []) + rest
    # The hosts shown now, then those shown before while there is room: their
    # counters carry on (a host that comes back after being forgotten restarts
    # from 0, which Prometheus' rate() takes as a counter reset).
    kept = {"": hist[""]}
    names = sorted(shown) + sorted(k for k in hist_before if k and k not in shown)
    for name in names:
        if name not in shown and len(kept) > vhost_limit + 1:
            break
        values = shown.get(name, [])
        kept[name] = _add(hist_before.get(name), values)
        label = (("vhost", name),)
        out.extend(_hist_samples("vhost_request_duration", kept[name], label))
        out.append(_new(Sample, (BY_NAME["vhost_request_duration_sampled"],
                                 sum(w for _, w in values), label)))
        if values:
            for stat, value in _stats(values).items():
                out.append(_new(Sample, (BY_NAME[f"vhost_request_duration_{stat}_seconds"],
                                         value, label)))
    now["hist"] = kept
    return out


def _hist_samples(prefix: str, hist: List[float], label: Tuple[Tuple[str, str], ...]
                  ) -> List[Sample]:
    """Prometheus' cumulative buckets, sum and count of a stored histogram."""
    out = []
    running = 0
    bucket = BY_NAME[f"{prefix}_bucket"]
    for le, count in zip(LE, hist):
        running += int(count)
        out.append(_new(Sample, (bucket, running, label + (("le", le),))))
    out.append(_new(Sample, (BY_NAME[f"{prefix}_sum"], float(hist[-2]), label)))
    out.append(_new(Sample, (BY_NAME[f"{prefix}_count"], int(hist[-1]), label)))
    return out


def valid_slots(value: Any) -> bool:
    """A stored slot table: {srv digits: [pid, (count, req, dur)...]} of ints, bounded."""
    if type(value) is not dict:
        return False
    used = 0
    for key, flat in value.items():
        if type(key) is not str or type(flat) is not list or len(flat) % 3 != 1:
            return False
        used += len(flat)
        # What a page can give: PIDs and counts of 0..int64, Req/Dur too or
        # -1 for an absent cell (a stored -10**18 would be 10**18 requests).
        if used > MAX_SLOT_INTS + len(value) or not all(
                type(x) is int and -1 <= x <= _INT64_MAX for x in flat):
            return False
    return True


def valid_hist(value: Any, limit: int = 1000) -> bool:
    """Stored histograms: {vhost: [bucket counts..., sum, count]}, bounded."""
    if type(value) is not dict or len(value) > limit:
        return False
    for key, hist in value.items():
        if type(key) is not str or type(hist) is not list or len(hist) != HIST_LEN:
            return False
        if not all(type(x) in (int, float) and math.isfinite(x) and 0 <= x < 2.0 ** 62
                   for x in hist):
            return False
    return True
