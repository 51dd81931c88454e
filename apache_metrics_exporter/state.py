"""The reaper's state file: monotonic totals since the file was created.

Versioned JSON, read and written only under an exclusive lock (``PATH.lock``),
replaced atomically. A file that cannot be parsed is moved aside
(``PATH.corrupt-EPOCH``), said in one line, counted in ``state_resets``, and a
fresh state carries on: the reaper never stops working because of it. The
collector only reads the file (no lock needed: it is always whole).
"""

from __future__ import annotations

import copy
import json
import os
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterator, Optional

from apache_metrics_exporter.errors import OutputError
from apache_metrics_exporter.locks import exclusive
from apache_metrics_exporter.log import log
from apache_metrics_exporter.output import write_atomic

VERSION = 1
KINDS = ("native_active", "native_idle", "wsgi")
REASONS = ("memory", "timeout")
COUNTERS = ("sigkill_escalations", "skipped_for_safety", "would_kill", "state_resets",
            "circuit_breaker_trips", "runs")


def fresh(now: Optional[float] = None) -> Dict[str, Any]:
    """A new state: every total at zero."""
    return {
        "version": VERSION,
        "created": int(now if now is not None else time.time()),
        "totals": {"kills": {k: 0 for k in KINDS}, "reasons": {r: 0 for r in REASONS},
                   **{c: 0 for c in COUNTERS}},
        "last_run": None,
    }


def _valid(state: Any) -> bool:
    try:
        totals = state["totals"]
        return (state["version"] == VERSION
                and all(isinstance(totals["kills"][k], int) for k in KINDS)
                and all(isinstance(totals["reasons"][r], int) for r in REASONS)
                and all(isinstance(totals[c], int) for c in COUNTERS))
    except (KeyError, TypeError):
        return False


def read(path: str) -> Optional[Dict[str, Any]]:
    """The state for reporting, None when there is none (or it is unreadable)."""
    try:
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read reaper state %s (%s); reaper figures left out", path,
                    getattr(exc, "strerror", None) or exc)
        return None
    return state if _valid(state) else None


class StateFile:
    """Load, change and save the state while holding its lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = path + ".lock"

    @contextmanager
    def locked(self, timeout: float) -> Iterator[Dict[str, Any]]:
        """Yield the state (recovered if corrupt); save it when the block ends."""
        directory = os.path.dirname(os.path.abspath(self.path))
        with ExitStack() as stack:
            try:
                os.makedirs(directory, mode=0o755, exist_ok=True)
                stack.enter_context(exclusive(
                    self.lock_path, timeout, "another reaper", "not acting (is one stuck?)",
                    on_wait=lambda: log.info("another reaper is running; waiting for it "
                                             "(up to %g s)", timeout)))
            except OSError as exc:
                raise OutputError(f"cannot use --state-file {self.path}: {exc.strerror}; "
                                  "give a path this user can write") from None
            state = self._load()
            before = copy.deepcopy(state)
            yield state
            if state != before:
                write_atomic(self.path, json.dumps(state, indent=1, sort_keys=True) + "\n")

    def _load(self) -> Dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            return fresh()
        except OSError as exc:
            return self._reset(f"cannot be read ({exc.strerror})")
        try:
            state = json.loads(text)
        except ValueError as exc:
            return self._reset(f"is not valid JSON ({exc})")
        if not _valid(state):
            return self._reset("does not have the expected fields")
        return state

    def _reset(self, why: str) -> Dict[str, Any]:
        aside = f"{self.path}.corrupt-{int(time.time())}"
        try:
            os.replace(self.path, aside)
            where = f"moved aside to {aside}"
        except OSError as exc:
            where = f"could not be moved aside ({exc.strerror})"
        log.error("reaper state %s %s; %s, starting from fresh totals", self.path, why, where)
        state = fresh()
        state["totals"]["state_resets"] = 1
        return state
