"""apache-manager's tab-delimited metrics file, byte-compatible for its keys.

The first sections are exactly the original's: sorted keys, ``total-traffic``
in bytes, ``status-response`` 0 when the page was read and 1 when not, and
``memory-usage<TAB>GROUP<TAB>STAT<TAB>VALUE`` lines for ``native`` then each
mod_wsgi group by name. Metrics the original lacked follow in new sections.
A value that could not be measured is left out, never written as a guess.
"""

from __future__ import annotations

from apache_metrics_exporter.catalogue import (
    HEALTH_METRICS,
    MEMORY_METRIC,
    MEMORY_STATS,
    NATIVE_GROUP,
    PROXY_METRICS,
    REAPER_METRICS,
    SCOREBOARD_METRICS,
    SERVER_METRICS,
    VHOST_METRICS,
    WORKER_METRICS,
)
from apache_metrics_exporter.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, List, Sequence

MULTI_TARGET = False
DESCRIPTION = "apache-manager's tab-delimited metrics file (default)"

_ORIGINAL_SERVER = [m for m in SERVER_METRICS if m.tab_key]
_INTERNAL_KEYS = ("foreign_worker_count", "native_worker_count", "status_response",
                  "workers_hanging", "workers_killed_active", "workers_killed_idle")
_TAG = "(apache-metrics-exporter)"


def _key(name: str) -> str:
    return name.replace("_", "-")


def _text(value: object) -> str:
    # A request line must not break the line/field structure.
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def render(snapshots: Sequence, settings: Any = None) -> str:
    """The metrics file for one snapshot."""
    if len(snapshots) != 1:
        raise UsageError("--format tab holds one Apache per file; run once per --url "
                         "with its own --output, or use --format influx/collectd")
    snap = snapshots[0]
    plain: Dict[str, float] = {}
    labelled: Dict[str, List] = {}
    for s in snap.samples:
        if s.labels:
            labelled.setdefault(s.metric.name, []).append(s)
        else:
            plain[s.metric.name] = s.value
    out = ["# Global Apache server metrics."]
    if snap.up:
        server = {}
        for m in _ORIGINAL_SERVER:
            # apache-manager wrote 0 for a key missing from a page it did read.
            value = plain.get(m.name, m.type(0))
            server[m.tab_key] = value * m.tab_scale
        out.extend(f"{k}\t{v}" for k, v in sorted(server.items()))
    out += ["", "# Metrics internal to apache-manager."]
    internal = {"status_response": 0 if snap.up else 1}
    for name in _INTERNAL_KEYS:
        if name in plain:
            internal[name] = plain[name]
    out.extend(f"{_key(k)}\t{v}" for k, v in sorted(internal.items()))
    groups: Dict[str, Dict[str, float]] = {}
    for stat in MEMORY_STATS:
        for s in labelled.get(MEMORY_METRIC[stat], ()):
            groups.setdefault(dict(s.labels)["group"], {})[stat] = s.value
    if snap.processes.parent_pid is not None:
        groups.setdefault(NATIVE_GROUP, {})
    for group in sorted(groups, key=lambda g: (g != NATIVE_GROUP, g)):
        out.append("")
        if group == NATIVE_GROUP:
            out.append("# Memory usage of native Apache worker processes.")
        else:
            out.append(f"# Memory usage of {group!r} WSGI worker processes.")
        for stat in MEMORY_STATS:
            out.append(f"memory-usage\t{group}\t{stat}\t{groups[group].get(stat, 0)}")
    # New sections, after everything the original wrote.
    original = {m.name for m in _ORIGINAL_SERVER} | set(_INTERNAL_KEYS)
    details = [m for m in SERVER_METRICS + SCOREBOARD_METRICS + WORKER_METRICS
               if not m.labels and m.name not in original and m.name in plain]
    out += ["", f"# Apache server details {_TAG}."]
    out.extend(f"{k}\t{_text(v)}" for k, v in sorted((_key(m.name), plain[m.name])
                                                    for m in details))
    if "scoreboard" in labelled:
        out += ["", f"# Scoreboard slots per state {_TAG}."]
        out.extend(f"scoreboard\t{dict(s.labels)['state']}\t{s.value}"
                   for s in labelled["scoreboard"])
    proxy = [s for m in PROXY_METRICS for s in labelled.get(m.name, ())]
    if proxy:
        out += ["", f"# Load balancer members: balancer, member, value {_TAG}."]
        out.extend(f"{_key(s.metric.name)}\t{dict(s.labels)['balancer']}\t"
                   f"{dict(s.labels)['worker']}\t{s.value}" for s in proxy)
    vhosts = [s for m in VHOST_METRICS for s in labelled.get(m.name, ())]
    if vhosts:
        out += ["", f"# Per virtual host: vhost, value {_TAG}."]
        out.extend(f"{_key(s.metric.name)}\t{_text(dict(s.labels)['vhost'])}\t{s.value}"
                   for s in vhosts)
    truncated = labelled.get("wsgi_group_name_truncated", ())
    if truncated:
        out += ["", f"# mod_wsgi groups whose names the process title cut short {_TAG}."]
        out.extend(f"wsgi-group-name-truncated\t{dict(s.labels)['group']}\t{s.value}"
                   for s in truncated)
    reaper = []
    for m in REAPER_METRICS:
        if m.name in original:
            continue
        if m.labels:
            reaper.extend(f"{_key(m.name)}\t{s.labels[0][1]}\t{s.value}"
                          for s in labelled.get(m.name, ()))
        elif m.name in plain:
            reaper.append(f"{_key(m.name)}\t{plain[m.name]}")
    if reaper:
        out += ["", f"# Reaper totals since its state file was created {_TAG}."]
        out.extend(reaper)
    restarts = labelled.get("restarts_total", ())
    if restarts:
        out += ["", f"# Apache restarts seen between collections {_TAG}."]
        out.extend(f"{s.metric.tab_key.format(**dict(s.labels))}\t{s.value}"
                   for s in restarts)
    out += ["", f"# Collection health {_TAG}."]
    out.extend(f"{_key(m.name)}\t{plain[m.name]}" for m in HEALTH_METRICS if m.name in plain)
    return "\n".join(out) + "\n"
