"""Restart detection: did Apache restart since the last collection, and how?

A *hard* restart (stop and start, or a crash) shows as the Apache parent (PID
and start time) changing when the processes are known, else as the server's
start time - the collection time minus its uptime - moving on by more than the
rounding and clock jitter allow; a *graceful* one as the configuration or MPM
generation going up while the parent and its start time carry on. Start times
are compared, not uptimes: a server stopped and started again between two
collections can show a larger uptime than the one stored.

Each collection compares what it read with the previous reading of the same
target, kept in the collector's own state file (beside the reaper's), and
counts restarts there, so one-shot runs (Telegraf's exec, cron) see them as
well as the long-running modes. Every stored reading carries its collection
time, and the newest one wins: two collectors sharing the file (a cron job
and ``--listen``, concurrent scrapes) that save out of order neither go back
to an older reading nor count one restart twice. A reading stamped in the
future (a clock that was wrong) is stale: it is replaced, compared with
nothing, and the first to go when the file is full.

The file::

    {"version": 2, "targets": {URL: {"graceful": N, "hard": N,
        "reading": {"version": 1, "time": EPOCH, "duration": S, "parent": [PID, START] | null,
                    "figures": {"uptime": S, "config": N | null, "mpm": N | null,
                                "accesses": N | null, "kbytes": N | null,
                                "duration_ms": N | null},
                    "slots": {SRV: [PID, COUNT, REQ, DUR, ...]},     (optional)
                    "hist": {"" | VHOST: [BUCKET..., SUM, COUNT]},   (optional)
                    "boot": {"id": BOOT_ID, "time": S,              (optional)
                             "parent": TICKS | null}}}}}

``reading`` is the one previous reading per target that figures derived
from two collections compare with; a later figure goes into ``figures``, a
change of meaning into a new reading version (an unknown one is no previous
reading: the counts stay). Version 1 files are read and rewritten as 2.

Wall-clock steps (NTP, a VM resumed) are not changes of the server: ``boot``
is the monotonic reference (clocks.py: the kernel's boot id, CLOCK_BOOTTIME
at the start of the collection, the parent's start in clock ticks after
boot). Between two readings of one boot, the interval, which reading is the
newer, and whether a stored one is from the future are told by it; the
parent process is the same one when its PID and start ticks are (its epoch
start time moves with the clock). Without a parent, a hard restart is a start
time (collection time - uptime) later both on the wall clock and on the
monotonic one: Apache's uptime follows the wall clock of Apache's host, which
is ours for a local URL (our step is in its uptime too: the wall clock says
no restart) and not for a remote one (the monotonic clock says none). Across
a reboot, or when either reading has no ``boot`` (an older file, no
CLOCK_BOOTTIME, an unreadable boot id), the wall clock decides as it did.

The interval figures (intervals.py: rates, request durations) come from the
same comparison: ``slots`` is the worker table's per-slot counts and
durations (3 integers a row, about 20 bytes: 2,000 rows take some 40 kB),
``hist`` the cumulative duration histograms Prometheus' buckets count. The
loops (--interval, --execd, --listen, --watch) also keep the newest reading
of each target in memory (``Memory``) and compare with it when the file has
none as new (or there is no file): they still save to the file, so restart
counts and histograms carry on across a restart of the loop - at once when
a restart is counted or another collector changed the file, else at least
every SAVE_EVERY seconds (a cycle that needs neither reads nor writes it:
a quarter of a small server's cycle was that save). When the file
would outgrow MAX_BYTES, the slot tables of the least recently read targets
go first (their next collection has no durations, said once).

The file is bounded, written atomically under a lock that is never held across
network I/O (collection is over when it is taken), refused when untrusted
(a symlink, another user's, group/world-writable; trusted symlinks among its
directories are followed), and moved aside when its content cannot be used.
Without a usable file the restart counts are left out of every format:
unknown, never reported as 0.
"""

from __future__ import annotations

import json
import math
import os
import time

from apache_metrics_exporter import clocks, intervals
from apache_metrics_exporter.catalogue import BY_NAME
from apache_metrics_exporter.collect.snapshot import Sample
from apache_metrics_exporter.errors import OutputError
from apache_metrics_exporter.log import DEBUG, INFO, WARNING, log
from apache_metrics_exporter.paths import (
    STATE_DIR,
    Corrupt,
    identity,
    is_int,
    move_aside,
    read_bounded,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, List, Optional, Sequence, Tuple

DEFAULT_PATH = STATE_DIR + "/collector-state.json"
VERSION = 2
READING_VERSION = 1
MAX_BYTES = 4 * 1024 * 1024  # room for a few targets' slot tables of thousands of rows
MAX_TARGETS = 256  # the targets remembered; the least recently read go first
KINDS = ("graceful", "hard")
LOCK_TIMEOUT = 2.0
# Seconds two start times of one server may differ by without a restart:
# the uptime is whole seconds (1) and clocks jitter; the previous reading's
# collection time is added on top (its page was read at some point in it).
TOLERANCE = 2.0
# A reading time later than now by more than this comes from a wrong clock.
FUTURE_SLACK = 60.0
MAX_FIGURES = 64
# A loop saves the file at least this often (seconds of its monotonic clock),
# and at once whenever a restart is counted or the file was changed by someone
# else (Memory.held): between saves nothing of it is lost but the time its
# stored reading is from, which later comparisons take into account anyway.
SAVE_EVERY = 60.0
_new = tuple.__new__  # a Sample made in C (see collect/snapshot.py)

def _loudness(explicit: bool, memory: object) -> int:
    """How loud a collector state that cannot be used is: a warning when it
    was asked for, or when a one-shot run (no memory: Telegraf's exec as its
    own user) loses every interval figure with it; a loop still compares with
    its memory and only the restart counts go (debug)."""
    return WARNING if explicit or memory is None else DEBUG


def _fresh() -> Dict[str, Any]:
    return {"version": VERSION, "targets": {}}


def _number(value: Any) -> bool:
    """A JSON number that is a time or a figure: int within int64, finite float."""
    if type(value) is float:
        return math.isfinite(value) and abs(value) < 2.0 ** 63
    return is_int(value, -(1 << 63))


def _valid_reading(reading: Any) -> bool:
    """A reading of this version with its fields' types; other versions pass
    (they are not used, see _usable), as long as they are objects."""
    if type(reading) is not dict:
        return False
    if reading.get("version") != READING_VERSION:
        return type(reading.get("version")) is int
    if not _number(reading.get("time")) or not _number(reading.get("duration", 0)):
        return False
    parent = reading.get("parent")
    if parent is not None and not (type(parent) is list and len(parent) == 2
                                   and is_int(parent[0]) and _number(parent[1])):
        return False
    figures = reading.get("figures")
    if type(figures) is not dict or len(figures) > MAX_FIGURES:
        return False
    if not is_int(figures.get("uptime")):
        return False
    if "slots" in reading and reading["slots"] is not None \
            and not intervals.valid_slots(reading["slots"]):
        return False
    if "hist" in reading and not intervals.valid_hist(reading["hist"]):
        return False
    if "boot" in reading and not _valid_boot(reading["boot"]):
        return False
    return all(type(k) is str and (v is None or _number(v)) for k, v in figures.items())


def _valid_boot(boot: Any) -> bool:
    """The monotonic reference's shape; a value that is the right type but
    impossible (negative, ahead of now) is not used (clocks.same_boot,
    clocks.from_the_future), not a corrupt file."""
    if type(boot) is not dict or not clocks.valid_boot_id(boot.get("id")) \
            or not _number(boot.get("time")):
        return False
    parent = boot.get("parent")
    return parent is None or is_int(parent)


def _valid(state: Any) -> bool:
    """Strict shape (module docstring), ints within int64; a version 1 file
    is checked by _valid_v1."""
    if type(state) is not dict:
        return False
    if state.get("version") == 1 and type(state["version"]) is int:
        return _valid_v1(state)
    if state.get("version") != VERSION or type(state["version"]) is not int:
        return False
    targets = state.get("targets")
    if type(targets) is not dict or len(targets) > MAX_TARGETS:
        return False
    for url, entry in targets.items():
        if type(url) is not str or type(entry) is not dict:
            return False
        if not all(is_int(entry.get(kind, 0)) for kind in KINDS):
            return False
        if "reading" in entry and entry["reading"] is not None \
                and not _valid_reading(entry["reading"]):
            return False
    return True


def _valid_v1(state: Dict[str, Any]) -> bool:
    """The version 1 shape: {url: {seen, uptime, config, mpm, graceful, hard, parent}}."""
    targets = state.get("targets")
    if type(targets) is not dict or len(targets) > MAX_TARGETS:
        return False
    for url, entry in targets.items():
        if type(url) is not str or type(entry) is not dict:
            return False
        for key in ("seen", "uptime", "config", "mpm", "graceful", "hard"):
            if key in entry and entry[key] is not None and not is_int(entry[key]):
                return False
        parent = entry.get("parent")
        if parent is not None and not (type(parent) is list and len(parent) == 2
                                       and is_int(parent[0])
                                       and type(parent[1]) in (int, float)
                                       and _number(parent[1])):
            return False
    return True


def _upgrade(state: Dict[str, Any]) -> Dict[str, Any]:
    """A version 1 state as version 2: the counts kept, the reading timed by
    its 'seen' (the save, a little after the collection: its start time comes
    out a little late, which never looks like a restart)."""
    targets = {}
    for url, old in state["targets"].items():
        entry: Dict[str, Any] = {kind: old.get(kind) or 0 for kind in KINDS}
        if old.get("uptime") is not None and old.get("seen") is not None:
            entry["reading"] = {
                "version": READING_VERSION, "time": old["seen"], "duration": 0.0,
                "parent": old.get("parent"),
                "figures": {"uptime": old["uptime"], "config": old.get("config"),
                            "mpm": old.get("mpm")}}
        targets[url] = entry
    return {"version": VERSION, "targets": targets}


def _load(path: str) -> Dict[str, Any]:
    try:
        data = read_bounded(path, MAX_BYTES, "collector state")
    except FileNotFoundError:
        return _fresh()
    except Corrupt as exc:
        return _reset(path, str(exc))
    try:
        state = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _reset(path, "is not valid JSON")
    if not _valid(state):
        return _reset(path, "does not have the expected fields")
    if state["version"] == 1:
        return _upgrade(state)
    return state


def _reset(path: str, why: str) -> Dict[str, Any]:
    try:
        where = f"moved aside to {move_aside(path)}"
    except OSError as exc:
        where = f"could not be moved aside ({exc.strerror})"
    log.error("collector state %s %s; %s, restart counts start again from 0",
              path, why, where)
    return _fresh()


def _duration(samples: Sequence[Any]) -> Optional[float]:
    """The snapshot's collection_duration_seconds: build() adds it once, near
    the end, so it is looked for from the end (Snapshot.value reads the
    hundred samples before it)."""
    for sample in reversed(samples):
        if sample.metric.name == "collection_duration_seconds" and not sample.labels:
            return sample.value
    return None


def _reading(snap: Any) -> Optional[Dict[str, Any]]:
    """What this snapshot says about the server's life, None if nothing."""
    if not snap.up or snap.auto is None:
        return None
    values = snap.auto.values
    uptime = values.get("server_uptime_seconds", values.get("uptime"))
    if uptime is None or not math.isfinite(snap.timestamp):
        return None
    parent = None
    if snap.processes.parent_pid is not None and snap.processes.parent_create_time is not None:
        parent = [snap.processes.parent_pid, snap.processes.parent_create_time]
    duration = _duration(snap.samples) or 0.0
    reading = {"version": READING_VERSION, "time": snap.timestamp,
               "duration": float(duration) if math.isfinite(duration) else 0.0,
               "parent": parent,
               "figures": {"uptime": int(uptime),
                           "config": values.get("parent_server_config_generation"),
                           "mpm": values.get("parent_server_mpm_generation"),
                           "accesses": values.get("total_accesses"),
                           "kbytes": values.get("total_kbytes"),
                           "duration_ms": values.get("total_duration_ms")}}
    table = intervals.slots(snap.workers)
    if table is not None:
        reading["slots"] = table
    boot = getattr(snap, "boot", None)
    if boot is not None:
        ticks = snap.processes.parent_start_ticks if parent is not None else None
        reading["boot"] = {"id": boot["id"], "time": boot["time"], "parent": ticks}
    return reading


def _start(reading: Dict[str, Any]) -> float:
    """When the server started, as this reading saw it (collection time - uptime)."""
    return float(reading["time"]) - reading["figures"]["uptime"]


def _same_parent(before: Dict[str, Any], now: Dict[str, Any]) -> bool:
    """Both readings name one parent process: same PID and start ticks after
    boot within one boot; else same PID and epoch start time."""
    if before["parent"][0] != now["parent"][0]:
        return False
    if clocks.same_boot(before, now):
        ticks = before["boot"].get("parent"), now["boot"].get("parent")
        if None not in ticks:
            return ticks[0] == ticks[1]
    return float(before["parent"][1]) == float(now["parent"][1])


def _start_moved(before: Dict[str, Any], now: Dict[str, Any]) -> float:
    """How much later the server's start time is in ``now`` (collection time
    minus uptime): on the wall clock, and within one boot also on the
    monotonic clock, the smaller of the two (module docstring: a wall-clock
    step moves one of them only, a restart both)."""
    moved = _start(now) - _start(before)
    if clocks.same_boot(before, now):
        moved = min(moved, clocks.elapsed(before, now)
                    - (now["figures"]["uptime"] - before["figures"]["uptime"]))
    return moved


def classify(before: Dict[str, Any], now: Dict[str, Any]) -> Optional[str]:
    """'hard', 'graceful' or None between two readings of one server.

    The parent process (PID and start) decides when both readings know it;
    otherwise the server's start time: the page was read some time within
    the previous collection (its duration), and uptimes are whole seconds, so
    a start time later by more than TOLERANCE + that duration is a new server.
    """
    if before.get("parent") and now.get("parent"):
        if not _same_parent(before, now):
            return "hard"
    elif _start_moved(before, now) > TOLERANCE + float(before.get("duration") or 0.0):
        return "hard"
    old, new = before["figures"], now["figures"]
    for key in ("config", "mpm"):
        if new.get(key) is not None and old.get(key) is not None and new[key] > old[key]:
            return "graceful"
    return None


def _usable(entry: Dict[str, Any], now: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The entry's previous reading, or None: none, another reading version,
    or stamped in the future (a clock that was wrong: it proves nothing;
    within one boot the monotonic clock tells, clocks.from_the_future)."""
    reading = entry.get("reading")
    if not reading or reading.get("version") != READING_VERSION:
        return None
    if clocks.from_the_future(reading, now, FUTURE_SLACK):
        return None
    return reading


def now_mark() -> Dict[str, Any]:
    """Now, as a reading is stamped: {"time": wall clock, "boot": reference}."""
    return {"time": clocks.wall(), "boot": clocks.mark()}


def newer(before: Dict[str, Any], reading: Dict[str, Any]) -> bool:
    """``reading`` was collected after ``before`` (clocks.elapsed)."""
    return clocks.elapsed(before, reading) > 0


def _age_key(now: Dict[str, Any]) -> Any:
    """Eviction order: the least recently read first; no reading, or a reading
    from the future (a wrong clock), counts as the oldest of all."""
    def key(item: Tuple[str, Dict[str, Any]]) -> float:
        reading = _usable(item[1], now)
        return float(reading["time"]) if reading else -math.inf
    return key


def update(state: Dict[str, Any], url: str, reading: Dict[str, Any],
           now: Dict[str, Any]) -> Dict[str, Any]:
    """Compare ``reading`` with the target's previous one, count a restart,
    keep the newer of the two; the target's entry (its counts)."""
    return advance(state, url, reading, now)[0]


def _previous(entry: Dict[str, Any], now: Dict[str, Any],
              remembered: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """What a new reading of the target is compared with: the stored one, or
    the one a loop ``remembered`` when it is newer (and not from the future)."""
    before = _usable(entry, now)
    if remembered is not None and (before is None or newer(before, remembered)) \
            and not clocks.from_the_future(remembered, now, FUTURE_SLACK):
        before = remembered
    return before


def advance(state: Dict[str, Any], url: str, reading: Dict[str, Any], now: Dict[str, Any],
            remembered: Optional[Dict[str, Any]] = None, known: Optional[Dict[str, Any]] = None
            ) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """update(), with the previous reading a loop ``remembered`` (used when it
    is newer than the stored one); also returns what the interval figures
    compare with: the previous reading, or None (none, one newer than this
    one, or a hard restart in between). ``known``: the previous reading the
    caller has just found (_held: older than this one, no restart between),
    not looked up and compared again."""
    targets = state["targets"]
    entry = targets.get(url) or {kind: 0 for kind in KINDS}
    if known is not None:
        entry["reading"] = reading
        targets[url] = entry
        return entry, known
    before = _previous(entry, now, remembered)
    compared = None
    if before is not None and not newer(before, reading):
        # A newer reading is already there (another collector saved after
        # this one collected): it was compared already, this one changes nothing.
        log.debug("%s: a newer reading is stored; this one is not kept", url)
    else:
        if before is not None:
            kind = classify(before, reading)
            if kind:
                entry[kind] = entry.get(kind, 0) + 1
                log.info("%s: Apache restarted (%s) since the last collection", url, kind)
            compared = before if kind != "hard" else None
            if kind == "hard":
                reading["hist"] = before.get("hist") or {}
                log.once(INFO, f"{url}: interval figures left out (Apache restarted since "
                             "the previous collection)")
        elif entry.get("reading"):
            log.debug("%s: the stored reading is unusable (from the future, or another "
                      "version); starting again from this one", url)
        entry["reading"] = reading
    targets[url] = entry
    return entry, compared


class Memory:
    """The newest reading of each target, kept by a long-running mode (loops,
    --listen, --watch) between its collections; concurrent scrapes compare
    and replace under its lock."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.readings: Dict[str, Dict[str, Any]] = {}
        # The collector state as this loop last saved it: (the file's real
        # path, its identity and size after the save, the state, when saved);
        # see _held.
        self.held: Optional[Tuple[str, Tuple[int, ...], Dict[str, Any], float]] = None

    def compare(self, url: str, reading: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Without a state file: the remembered reading the interval figures
        compare with (None: none, newer, or a hard restart), then remember
        the newer of the two."""
        before = self.readings.get(url)
        if before is not None and not newer(before, reading):
            return None
        self.readings[url] = reading
        if before is None:
            return None
        if classify(before, reading) == "hard":
            reading["hist"] = before.get("hist") or {}
            log.once(INFO, f"{url}: interval figures left out (Apache restarted since the "
                         "previous collection)")
            return None
        return before

    def remember(self, url: str, reading: Dict[str, Any]) -> None:
        before = self.readings.get(url)
        if before is None or newer(before, reading):
            self.readings[url] = reading


def _derive(snap: Any, before: Optional[Dict[str, Any]], reading: Dict[str, Any],
            vhost_limit: int) -> None:
    """The interval figures of one snapshot (left out, said once, without a
    previous reading to compare with)."""
    if before is None:
        log.once(INFO, f"{snap.url}: interval figures (rates, request durations) start at the "
                     "next collection: there is no previous reading to compare with")
        return
    if before.get("slots") is None and snap.workers is not None:
        log.once(INFO, f"{snap.url}: request durations start at the next collection: the "
                     "previous reading has no worker table")
    from apache_metrics_exporter.collect.clients import own_requests

    mpm = snap.auto.info.get("ServerMPM", "") if snap.auto is not None else ""
    snap.samples.extend(intervals.derive(before, reading, snap.workers, own_requests(snap.url),
                                         vhost_limit, mpm))


def _fit(state: Dict[str, Any], now: Dict[str, Any]) -> str:
    """The state as JSON within MAX_BYTES: slot tables of the least recently
    read targets are dropped first."""
    text = json.dumps(state, sort_keys=True, separators=(",", ":")) + "\n"
    if len(text) <= MAX_BYTES:
        return text
    for url, entry in sorted(state["targets"].items(), key=_age_key(now)):
        reading = entry.get("reading")
        if reading and reading.pop("slots", None) is not None:
            log.once(WARNING, f"collector state: the worker table of {url} is not kept (the "
                            f"file would outgrow {MAX_BYTES} bytes); its request durations "
                            "are left out next time")
            text = json.dumps(state, sort_keys=True, separators=(",", ":")) + "\n"
            if len(text) <= MAX_BYTES:
                break
    return text


def _held(readings: Sequence[Tuple[Any, Optional[Dict[str, Any]]]], memory: Memory,
          vhost_limit: int) -> Optional[List[Tuple[Any, Dict[str, int]]]]:
    """A loop's cycle without reading or writing the collector state, when
    that changes nothing anyone can see: the file is still the one this loop
    saved (same inode, times and size), saved less than SAVE_EVERY ago, every
    target is in it, and no restart is counted (the counts reported are the
    ones saved). The readings are compared and remembered as track() does;
    the file gets them at the next save. None: not possible, save as usual
    (nothing has been changed). Called under memory.lock."""
    if memory.held is None:
        return None
    real, kept, state, saved = memory.held
    if time.monotonic() - saved >= SAVE_EVERY:
        return None
    try:
        if identity(real) != kept:
            return None
    except OSError:
        return None
    targets = state["targets"]
    now = now_mark()
    compared = []
    for snap, reading in readings:
        if reading is None:
            continue
        entry = targets.get(snap.url)
        if entry is None:
            return None
        before = _previous(entry, now, memory.readings.get(snap.url))
        if before is None or not newer(before, reading) or classify(before, reading):
            return None  # first sight, an older reading, a restart: the full path
        compared.append((snap, reading, before))
    counted = []
    done = set()
    for snap, reading, before in compared:
        url = snap.url
        # What the check found stands for the first snapshot of a URL (only
        # this URL's entry and memory change in this loop); a second one of
        # the same URL compares with the first's reading.
        entry, before = advance(state, url, reading, now, memory.readings.get(url),
                                known=None if url in done else before)
        done.add(url)
        _derive(snap, before, reading, vhost_limit)
        memory.remember(url, entry["reading"])
        counted.append((snap, {kind: entry.get(kind, 0) for kind in KINDS}))
    return counted


def track(snapshots: Sequence[Any], path: Optional[str], explicit: bool = False,
          memory: Optional[Memory] = None, vhost_limit: int = 20) -> None:
    """Compare, count, remember; add ``restarts_total`` samples to the snapshots
    whose server is known, once the state is saved, and the interval figures
    (intervals.py) wherever a previous reading allows. Never raises: a state
    that cannot be read or written leaves the counts out (``_loudness``); a
    loop's memory still gives the interval figures."""
    if not path and memory is None:
        return
    readings = [(snap, _reading(snap)) for snap in snapshots]
    if not any(r for _, r in readings):
        return
    if not path:
        assert memory is not None
        with memory.lock:
            for snap, reading in readings:
                if reading is not None:
                    _derive(snap, memory.compare(snap.url, reading), reading, vhost_limit)
        return
    from contextlib import nullcontext

    from apache_metrics_exporter.locks import exclusive
    from apache_metrics_exporter.output import write_private
    from apache_metrics_exporter.paths import check, resolve

    counted: List[Tuple[Any, Dict[str, int]]] = []
    done = set()
    try:
        with memory.lock if memory is not None else nullcontext():
            if memory is not None:
                quick = _held(readings, memory, vhost_limit)
                if quick is not None:
                    for snap, values in quick:
                        _report(snap, values)
                    return
                memory.held = None
            try:
                real = resolve(path, "collector state")  # trusted directory links followed
                directory = os.path.dirname(real)
                if not os.path.isdir(directory) and path == DEFAULT_PATH:
                    os.makedirs(directory, mode=0o755, exist_ok=True)  # a mistyped path: nothing
                check(real, "collector state")
                with exclusive(real + ".lock", LOCK_TIMEOUT, "another collector"):
                    state = _load(real)
                    targets = state["targets"]
                    now = now_mark()
                    for snap, reading in readings:
                        if reading is not None:
                            remembered = memory.readings.get(snap.url) if memory else None
                            entry, before = advance(state, snap.url, reading, now, remembered)
                            _derive(snap, before, reading, vhost_limit)
                            done.add(id(snap))
                            if memory is not None:
                                memory.remember(snap.url, entry["reading"])
                            counted.append((snap, {kind: entry.get(kind, 0) for kind in KINDS}))
                    for url, _ in sorted(targets.items(), key=_age_key(now))[
                            :max(0, len(targets) - MAX_TARGETS)]:
                        del targets[url]
                    write_private(real, _fit(state, now), 0o644)
                    if memory is not None:  # still under the lock: no one wrote since
                        memory.held = (real, identity(real), state, time.monotonic())
            finally:
                # Without a usable file, a loop still compares with its memory.
                if memory is not None:
                    for snap, reading in readings:
                        if reading is not None and id(snap) not in done:
                            _derive(snap, memory.compare(snap.url, reading), reading,
                                    vhost_limit)
    except (OutputError, OSError) as exc:
        also = "" if memory is not None else \
            " (so are rates and request durations: a one-shot run keeps no other reading)"
        if isinstance(exc, OutputError):  # says what, and mostly the fix
            what = str(exc)
        else:
            what = f"cannot use the collector state {path} ({exc.strerror or exc})"
        if ";" not in what:
            what += "; give --collector-state a path this user can write"
        log.once(_loudness(explicit, memory), f"restart counts left out{also}: {what}")
        return
    # Only counts that were kept are reported: a state that could not be
    # saved would count the same restart again next time.
    for snap, values in counted:
        _report(snap, values)


def _report(snap: Any, values: Dict[str, int]) -> None:
    """The restart counts of a snapshot, as saved."""
    for kind in KINDS:
        snap.samples.append(_new(Sample, (BY_NAME["restarts_total"], values[kind],
                                   (("kind", kind),))))
