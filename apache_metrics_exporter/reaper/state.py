"""The reaper's state file: monotonic totals since the file was created.

Versioned JSON, read and written only under an exclusive lock (``PATH.lock``),
replaced atomically. The file is trusted only when it is not a symlink, is
owned by this user or root and is not writable by group or others (likewise
its lock): otherwise the reaper refuses to run (exit 1, one line with the fix).

Content that cannot be used - not UTF-8, not JSON, nested too deep, wrong
types, larger than ``MAX_BYTES``, a directory or special file at the path -
is moved aside by the reaper, under the lock (``PATH.corrupt-EPOCH``), said in
one line, counted in ``state_resets``, and a fresh state carries on.

Symlinks among the file's directories (``/var/lib/apache-metrics-exporter ->
/srv/ame``) are followed when trusted - the rule ``--output`` uses
(paths.resolve) - and the file, its lock and its corrupt copies are used in the
real directory; an untrusted one is refused like an untrusted file.

The collector only reads the file (no lock: it is always replaced whole). A
corrupt or untrusted file is reported (one warning) and the reaper figures are
left out, but the collector never moves it: without the lock it could move
aside a good file the reaper has just put in place, and it often runs as a
user without write access there. The reaper's next run sets it aside.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from contextlib import ExitStack, contextmanager

from apache_metrics_exporter.errors import OutputError
from apache_metrics_exporter.locks import exclusive
from apache_metrics_exporter.log import WARNING, log
from apache_metrics_exporter.output import write_private
from apache_metrics_exporter.paths import (
    REAPER_STATE,
    Corrupt,
    check,
    is_int,
    move_aside,
    parse_json,
    read_bounded,
    resolve,
)
from apache_metrics_exporter.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, Iterator, Optional

VERSION = 1
MAX_BYTES = 64 * 1024  # a real state file is about 1 KiB
FILE_MODE = 0o644  # the collector may run as another user (telegraf) and reads it
KINDS = ("native_active", "native_idle", "wsgi")
REASONS = ("memory", "timeout")
COUNTERS = ("sigkill_escalations", "skipped_for_safety", "would_kill", "state_resets",
            "circuit_breaker_trips", "runs")
# Totals added after version 1 was released: a file without them is still
# valid, they start at zero.
LATER_COUNTERS = ("unproven_runs",)
LAST_DRY_RUN = "last_dry_run"  # a dry run's counts: never reported (record_run)
# last_run: the keys the collector reports, and the others' types.
_RUN_INTS = ("time", "checked", "killed_native_active", "killed_native_idle", "killed_wsgi",
             "would_kill", "escalations", "skipped",
             "killed_active", "killed_idle")  # the last two: files before 0.2.0


class RunCounts(NamedTuple):
    """One reaper run's counts: what the state file keeps as ``last_run``,
    what the collector reports (reaper_last_run_kills{kind}) and what the tab
    file derives apache-manager's workers-killed-active/-idle from. Native
    and mod_wsgi kills are kept apart."""

    time: int = 0
    dry_run: bool = False
    checked: int = 0
    killed_native_active: int = 0
    killed_native_idle: int = 0
    killed_wsgi: int = 0
    would_kill: int = 0
    escalations: int = 0
    skipped: int = 0
    result: str = "ok"

    def kills(self) -> Dict[str, int]:
        """Kills by kind (the state totals' kinds)."""
        return {"native_active": self.killed_native_active,
                "native_idle": self.killed_native_idle, "wsgi": self.killed_wsgi}

    def to_json(self) -> Dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_json(cls, run: Optional[Dict[str, Any]]) -> RunCounts:
        """The counts of a stored run (validated by problem()); a file written
        before 0.2.0 has killed_active (mod_wsgi included) and killed_idle."""
        if not run:
            return cls()
        run = dict(run)
        if "killed_native_active" not in run and "killed_active" in run:
            run["killed_native_active"] = max(0, run["killed_active"]
                                              - run.get("killed_wsgi", 0))
            run["killed_native_idle"] = run.get("killed_idle", 0)
        return cls(**{f: run[f] for f in cls._fields if f in run})


def fresh(now: Optional[float] = None) -> Dict[str, Any]:
    """A new state: every total at zero."""
    return {
        "version": VERSION,
        "created": int(now if now is not None else time.time()),
        "totals": {"kills": {k: 0 for k in KINDS}, "reasons": {r: 0 for r in REASONS},
                   **{c: 0 for c in COUNTERS + LATER_COUNTERS}},
        "last_run": None,
    }


def _scalar(value: Any) -> bool:
    if value is None or type(value) is bool:
        return True
    if type(value) is int:
        return is_int(value, -(1 << 63))
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is str and len(value) <= 1024 and value.isprintable()


def problem(state: Any) -> str:
    """What is wrong with a parsed state ('' when nothing): strict types, every
    integer an int (not a bool) within int64, no nested surprises."""
    if type(state) is not dict:
        return "is not a JSON object"
    if state.get("version") != VERSION or type(state.get("version")) is not int:
        return f"is not version {VERSION}"
    if "created" in state and not is_int(state["created"]):
        return "has a bad 'created' time"
    totals = state.get("totals")
    if type(totals) is not dict:
        return "has no totals"
    for group, names in (("kills", KINDS), ("reasons", REASONS)):
        values = totals.get(group)
        if (type(values) is not dict or set(values) != set(names)
                or not all(is_int(v) for v in values.values())):
            return f"has bad totals.{group}"
    for key, value in totals.items():
        if key not in ("kills", "reasons") and not is_int(value):
            return f"has a bad totals.{key}"
    if not all(c in totals for c in COUNTERS):
        return "lacks a total"
    for name in ("last_run", LAST_DRY_RUN):
        why = _run_problem(name, state.get(name))
        if why:
            return why
    return ""


def _run_problem(name: str, run: Any) -> str:
    if run is None:
        return ""
    if type(run) is not dict:
        return f"has a bad {name}"
    for key, value in run.items():
        if key in _RUN_INTS and not is_int(value):
            return f"has a bad {name}.{key}"
        if type(key) is not str or not _scalar(value):
            return f"has a bad {name}"
    return ""


def record_run(state: Dict[str, Any], run: RunCounts) -> None:
    """Keep ``run`` as the state's last run - unless it is a dry run.

    Dry runs change nothing the collector reports but would-kill (DESIGN):
    not the counters, and not ``last_run`` either, whose time and kills are
    reported as reaper_last_run_timestamp_seconds / reaper_last_run_kills
    (the tab file's workers-killed-*). A dry run that replaced it would move
    the timestamp while reaper_runs_total stands still, and zero the last
    real run's kills. Its counts are kept apart, as ``last_dry_run``, for
    whoever reads the file."""
    state[LAST_DRY_RUN if run.dry_run else "last_run"] = run.to_json()


def _parse(data: bytes) -> Dict[str, Any]:
    """The state in ``data``; Corrupt says why it is not one."""
    state: Any = parse_json(data)
    why = problem(state)
    if why:
        raise Corrupt(why)
    for counter in LATER_COUNTERS:
        state["totals"].setdefault(counter, 0)
    return state


def read(path: str) -> Optional[Dict[str, Any]]:
    """The state for reporting; None when there is none, or when it is
    untrusted or corrupt (one warning; the file is left where it is)."""
    try:
        return _parse(read_bounded(resolve(path, "--state-file"), MAX_BYTES, "--state-file"))
    except FileNotFoundError:
        return None
    except OutputError as exc:
        why = f"{exc}; reaper figures left out"
    except Corrupt as exc:
        why = (f"reaper state {path} {exc}; reaper figures left out until the reaper's "
               "next run sets it aside")
    except OSError as exc:
        why = f"cannot read reaper state {path} ({exc.strerror}); reaper figures left out"
    log.once(WARNING, why)  # loops say it once
    return None


class StateFile:
    """Load, change and save the state while holding its lock."""

    def __init__(self, path: str) -> None:
        self.path = path  # as given: what messages name
        self.real = path  # in the real directory (locked() resolves it)
        self.lock_path = path + ".lock"
        self.waited = False  # whether locked() had to wait for another holder

    def check(self) -> None:
        """OutputError (one line with the fix) if the file or its lock exists
        and is not to be trusted; cheap, for a check before any other work."""
        check(self.path, "--state-file")
        check(self.lock_path, "lock file")

    @contextmanager
    def locked(self, timeout: float) -> Iterator[Dict[str, Any]]:
        """Yield the state (recovered if corrupt); save it when the block ends.
        OutputError (exit 1) when the file or its lock is not to be trusted."""
        # Trusted symlinks among the directories followed once, here: the
        # lock, the reads, the moves aside and the write all use the real
        # directory, so a link swapped meanwhile cannot split them.
        self.real = resolve(self.path, "--state-file")
        self.lock_path = self.real + ".lock"
        directory = os.path.dirname(self.real)
        check(self.real, "--state-file")  # before anything is made beside it
        with ExitStack() as stack:
            try:
                if self.path == REAPER_STATE:  # a mistyped path creates nothing
                    os.makedirs(directory, mode=0o755, exist_ok=True)
                stack.enter_context(exclusive(
                    self.lock_path, timeout, "another reaper", "not acting (is one stuck?)",
                    on_wait=lambda: self._waiting(timeout)))
            except OSError as exc:
                raise OutputError(f"cannot use --state-file {self.path}: {exc.strerror}; "
                                  "give a path this user can write") from None
            state, mode = self._load()
            before = copy.deepcopy(state)
            yield state
            if state != before:
                write_private(self.real, json.dumps(state, indent=1, sort_keys=True) + "\n",
                              mode)

    def _waiting(self, timeout: float) -> None:
        self.waited = True
        log.info("another reaper is running; waiting for it (up to %g s)", timeout)

    def _load(self) -> tuple:
        """(state, permission bits to write it with)."""
        try:
            data = read_bounded(self.real, MAX_BYTES, "--state-file")
        except FileNotFoundError:
            return fresh(), FILE_MODE
        except Corrupt as exc:
            return self._reset(str(exc)), FILE_MODE
        except OSError as exc:
            return self._reset(f"cannot be read ({exc.strerror})"), FILE_MODE
        try:
            state = _parse(data)
        except Corrupt as exc:
            return self._reset(str(exc)), FILE_MODE
        return state, os.stat(self.real).st_mode & 0o755

    def _reset(self, why: str) -> Dict[str, Any]:
        try:
            where = f"moved aside to {move_aside(self.real)}"
        except OSError as exc:
            where = f"could not be moved aside ({exc.strerror})"
        log.error("reaper state %s %s; %s, starting from fresh totals", self.path, why, where)
        state = fresh()
        state["totals"]["state_resets"] = 1
        return state
