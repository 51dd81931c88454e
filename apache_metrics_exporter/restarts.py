"""Restart detection: did Apache restart since the last collection, and how?

A *hard* restart (stop and start, or a crash) shows as the uptime going back
or the Apache parent (PID and start time) changing; a *graceful* one as the
configuration or MPM generation going up while the parent and its uptime
carry on. Each collection compares what it read with what the previous one
read, kept per target in the collector's own state file (beside the
reaper's), and counts restarts there, so one-shot runs (Telegraf's exec,
cron) see them as well as the long-running modes.

The file is small, written atomically under a lock that is never held across
network I/O (collection is over when it is taken), refused when untrusted
(a symlink, another user's, group/world-writable), and moved aside when its
content cannot be used. Without a usable file the restart counts are left
out: unknown, never reported as 0.
"""

from __future__ import annotations

import json
import os
import time

from apache_metrics_exporter.catalogue import BY_NAME
from apache_metrics_exporter.collect.snapshot import Sample
from apache_metrics_exporter.errors import OutputError
from apache_metrics_exporter.log import log
from apache_metrics_exporter.paths import STATE_DIR, Corrupt, is_int, move_aside, read_bounded

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Dict, Optional, Sequence

DEFAULT_PATH = STATE_DIR + "/collector-state.json"
VERSION = 1
MAX_BYTES = 256 * 1024
MAX_TARGETS = 256  # the targets remembered; the least recently seen go first
KINDS = ("graceful", "hard")
LOCK_TIMEOUT = 2.0

_said: set = set()


def _say(level: str, message: str) -> None:
    if message not in _said:
        _said.add(message)
        getattr(log, level)("%s", message)


def _fresh() -> Dict[str, Any]:
    return {"version": VERSION, "targets": {}}


def _valid(state: Any) -> bool:
    """Strict shape: {"version": 1, "targets": {url: {...}}}, ints within int64."""
    if type(state) is not dict or state.get("version") != VERSION:
        return False
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
                                       and type(parent[1]) in (int, float)):
            return False
    return True


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
    return state


def _reset(path: str, why: str) -> Dict[str, Any]:
    try:
        where = f"moved aside to {move_aside(path)}"
    except OSError as exc:
        where = f"could not be moved aside ({exc.strerror})"
    log.error("collector state %s %s; %s, restart counts start again from 0",
              path, why, where)
    return _fresh()


def _reading(snap: Any) -> Optional[Dict[str, Any]]:
    """What this snapshot says about the server's life, None if nothing."""
    if not snap.up or snap.auto is None:
        return None
    values = snap.auto.values
    uptime = values.get("server_uptime_seconds", values.get("uptime"))
    if uptime is None:
        return None
    parent = None
    if snap.processes.parent_pid is not None:
        parent = [snap.processes.parent_pid, snap.processes.parent_create_time]
    return {"uptime": int(uptime), "config": values.get("parent_server_config_generation"),
            "mpm": values.get("parent_server_mpm_generation"), "parent": parent}


def classify(before: Dict[str, Any], now: Dict[str, Any]) -> Optional[str]:
    """'hard', 'graceful' or None between two readings of one server."""
    if now["uptime"] < before.get("uptime", 0):
        return "hard"
    if now["parent"] and before.get("parent") and now["parent"] != before["parent"]:
        return "hard"
    for key in ("config", "mpm"):
        if now[key] is not None and before.get(key) is not None and now[key] > before[key]:
            return "graceful"
    return None


def track(snapshots: Sequence[Any], path: Optional[str], explicit: bool = False) -> None:
    """Compare, count, remember; add ``restarts_total`` samples to the snapshots
    whose server is known. Never raises: a state that cannot be used leaves
    the counts out (a warning if the path was given, else a debug line)."""
    if not path:
        return
    readings = [(snap, _reading(snap)) for snap in snapshots]
    if not any(r for _, r in readings):
        return
    from apache_metrics_exporter.locks import exclusive
    from apache_metrics_exporter.output import write_private
    from apache_metrics_exporter.paths import check

    try:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory) and path == DEFAULT_PATH:
            os.makedirs(directory, mode=0o755, exist_ok=True)  # a mistyped path: nothing
        check(path, "collector state")
        with exclusive(path + ".lock", LOCK_TIMEOUT, "another collector"):
            state = _load(path)
            targets = state["targets"]
            now = int(time.time())
            for snap, reading in readings:
                if reading is None:
                    continue
                entry = targets.get(snap.url) or {"graceful": 0, "hard": 0}
                if "uptime" in entry:
                    kind = classify(entry, reading)
                    if kind:
                        entry[kind] = entry.get(kind, 0) + 1
                        log.info("%s: Apache restarted (%s) since the last collection",
                                 snap.url, kind)
                entry.update(reading, seen=now)
                targets[snap.url] = entry
                for kind in KINDS:
                    snap.samples.append(Sample(BY_NAME["restarts_total"], entry.get(kind, 0),
                                               (("kind", kind),)))
            for url in sorted(targets, key=lambda u: targets[u].get("seen", 0))[
                    :max(0, len(targets) - MAX_TARGETS)]:
                del targets[url]
            write_private(path, json.dumps(state, sort_keys=True) + "\n", 0o644)
    except (OutputError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        message = (f"restart counts left out: cannot use the collector state {path} "
                   f"({reason}); give --collector-state a path this user can write")
        _say("warning" if explicit else "debug", message)

