"""Figures kept between runs by others, added to each batch: the reaper's
counters (its state file) and the push spool's health. Kept out of collect/,
which knows nothing of the reaper or the push."""

from __future__ import annotations

import os

from apache_metrics_exporter.catalogue import BY_NAME
from apache_metrics_exporter.collect.snapshot import Sample

_new = tuple.__new__  # a Sample made in C (see collect/snapshot.py)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, List, Optional, Tuple


def state_samples(spool_dir: Optional[str], spool_max_bytes: int = 0,
                  state_file: Optional[str] = None) -> List[Sample]:
    """Figures kept between runs by others: the reaper's counters (its state
    file) and the push spool's health (when a push was ever made from there)."""
    out: List[Sample] = []
    out.extend(reaper_samples(state_file))
    if spool_dir and os.path.isdir(spool_dir):  # push/spool.py only when there is one
        from apache_metrics_exporter.push.spool import Spool

        health = Spool(spool_dir, spool_max_bytes).health()
        if health is not None:
            if health.last_success is not None:
                out.append(Sample(BY_NAME["push_last_success_timestamp_seconds"],
                                  health.last_success))
            out.append(Sample(BY_NAME["push_spooled_points"], health.spooled_points))
            if health.dropped_points is not None:  # None: its state.json is unreadable
                out.append(Sample(BY_NAME["push_dropped_points_total"],
                                  health.dropped_points))
                out.append(Sample(BY_NAME["push_quarantined_batches_total"],
                                  health.quarantined_batches))
                out.append(Sample(BY_NAME["push_corrupt_files_total"], health.corrupt_files))
            if health.quarantine_batches is not None:  # None: quarantine/ unreadable
                out.append(Sample(BY_NAME["push_quarantine_batches"],
                                  health.quarantine_batches))
                out.append(Sample(BY_NAME["push_quarantine_bytes"], health.quarantine_bytes))
    return out


# The reaper's figures of the state file last read, by its path: (the file's
# identity then (paths.identity), the samples). A long-running collector
# reads and checks the file again only when it is another file or was
# written, chmodded or chowned since (the reaper replaces it whole): 27 us of
# JSON and checks a cycle otherwise, where a reaper runs beside it.
_READ: Dict[str, Tuple[Tuple[int, ...], Tuple[Sample, ...]]] = {}
# The figures when no reaper state is there (no reaper ran: every last-run
# kill count 0), asked for every cycle where no reaper runs.
_NO_REAPER: List[Tuple[Sample, ...]] = []


def reaper_samples(state_file: Optional[str]) -> List[Sample]:
    """The reaper's counters: the last run's kills by kind (0 when no reaper
    ever ran: nothing was killed) and the totals. A
    state file that is there but cannot be trusted or read gives nothing at
    all (state.read says why): its figures are unknown, not zero."""
    from apache_metrics_exporter.paths import identity

    try:  # (lstat: the directories' links followed, as read() does)
        now = identity(state_file) if state_file else None
    except OSError:
        now = None  # none (or none to be seen): no reaper ran
    if now is None or state_file is None:
        if not _NO_REAPER:  # (made once: it depends on nothing)
            _NO_REAPER.append(tuple(_reaper_samples(None)))
        return list(_NO_REAPER[0])
    kept = _READ.get(state_file)
    if kept is not None and kept[0] == now:
        return list(kept[1])
    from apache_metrics_exporter.reaper.state import read

    state = read(state_file)
    out = [] if state is None else _reaper_samples(state)
    if len(_READ) >= 8:
        _READ.clear()
    _READ[state_file] = (now, tuple(out))
    return out


def _reaper_samples(state: Optional[Dict[str, Any]]) -> List[Sample]:
    """reaper_samples of a state read (None: no state file)."""
    from apache_metrics_exporter.reaper.state import RunCounts

    last = RunCounts.from_json((state or {}).get("last_run"))
    out = [_new(Sample, (BY_NAME["reaper_last_run_kills"], n, (("kind", kind),)))
           for kind, n in last.kills().items()]
    if state is None:
        return out
    totals = state["totals"]
    for kind, n in sorted(totals["kills"].items()):
        out.append(_new(Sample, (BY_NAME["reaper_kills_total"], n, (("kind", kind),))))
    for reason, n in sorted(totals["reasons"].items()):
        out.append(_new(Sample, (BY_NAME["reaper_kills_by_reason_total"], n,
                                 (("reason", reason),))))
    for counter in ("sigkill_escalations", "skipped_for_safety", "would_kill",
                    "state_resets", "circuit_breaker_trips", "unproven_runs", "runs"):
        out.append(_new(Sample, (BY_NAME[f"reaper_{counter}_total"], totals[counter], ())))
    if last.time:
        out.append(_new(Sample, (BY_NAME["reaper_last_run_timestamp_seconds"], last.time, ())))
    return out
