"""apache-manager's tab-delimited metrics file, byte-compatible for its keys.

The first sections are exactly the original's: sorted keys, ``total-traffic``
in bytes, ``status-response`` 0 when the page was read and 1 when not, and
``memory-usage<TAB>GROUP<TAB>STAT<TAB>VALUE`` lines for ``native`` then each
mod_wsgi group by name. Metrics the original lacked follow in new sections.
A value that could not be measured is left out, never written as a guess.

Every line is ``KEY[<TAB>LABEL...]<TAB>VALUE``, a ``# comment`` or empty: a
name or text from the page or a process title never holds a tab, a line break
or any other control character (each is written as a ``\\xHH`` escape, see
units.visible), so no name can forge a line or a field; a line whose keys
repeat an earlier one's is left out (the first wins).

Virtual hosts (``vhost_name``): the per-vhost lines are read by Zabbix too
(contrib/zabbix: discovery, then ``apache.labelled[KEY,VHOST]`` items), so a
name is written as it is only when a Zabbix item key parameter and the agent's
UserParameter (UnsafeUserParameters=0) take it unchanged: printable, no
``\\ ' " ` * ? [ ] { } ~ $ ! & ; ( ) < > | # @ ,``, no space at either end.
Any other name has those characters as ``_`` and a ``_`` + 8 hex digit
suffix (vhosts.py), so distinct hosts stay distinct.
"""

from __future__ import annotations

from apache_metrics_exporter.catalogue import (
    HEALTH_METRICS,
    INT64_MAX,
    INTERVAL_METRICS,
    MEMORY_METRIC,
    MEMORY_STATS,
    NATIVE_GROUP,
    PROXY_METRICS,
    REAPER_METRICS,
    SATURATION_METRICS,
    SCOREBOARD_METRICS,
    SERVER_METRICS,
    VHOST_METRICS,
    WORKER_METRICS,
    fits,
)
from apache_metrics_exporter.errors import UsageError
from apache_metrics_exporter.units import visible
from apache_metrics_exporter.vhosts import renamed, suffixed
from apache_metrics_exporter.writers import MAX_TEXT

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, List, Optional, Sequence

    from apache_metrics_exporter.collect.snapshot import Snapshot
    from apache_metrics_exporter.writers import Settings


_ORIGINAL_SERVER = [m for m in SERVER_METRICS if m.tab_key]
_INTERNAL_KEYS = ("foreign_worker_count", "native_worker_count", "status_response",
                  "workers_hanging", "workers_killed_active", "workers_killed_idle")
_TAG = "(apache-metrics-exporter)"
# Characters a Zabbix agent refuses in UserParameter arguments (unless
# UnsafeUserParameters=1), and the item key's parameter separator.
_ZABBIX_UNSAFE = frozenset("\\'\"`*?[]{}~$!&;()<>|#@,")


def _key(name: str) -> str:
    return name.replace("_", "-")


def _label(text: object) -> str:
    """A name as one field: control characters (tab, CR, LF, ESC, ...) escaped."""
    return visible(str(text)[:MAX_TEXT])


def vhost_name(name: str) -> str:
    """A virtual host as the per-vhost lines name it: unchanged when Zabbix can
    discover and query it as it is, else made safe and given a digest suffix."""
    if (len(name) <= MAX_TEXT and name.isprintable() and name == name.strip()
            and _ZABBIX_UNSAFE.isdisjoint(name)):
        return name
    safe = "".join("_" if c in _ZABBIX_UNSAFE or not c.isprintable() else c
                   for c in name[:MAX_TEXT]).strip()
    return suffixed(safe, name, MAX_TEXT)


def _text(value: object) -> str:
    # A request line must not break the line/field structure: whitespace runs
    # become one space, other control characters are escaped.
    if isinstance(value, str):
        return visible(" ".join(value[:MAX_TEXT].split()))
    return _format(value)


def _format(number: Any) -> str:
    """A number that fits its metric: an integer (int64) or a float's repr;
    a float metric's integer beyond int64 is written as the float it is."""
    if isinstance(number, int) and not -INT64_MAX <= number <= INT64_MAX:
        number = float(number)
    return str(int(number) if isinstance(number, bool) else number)


def _number(metric: Any, value: Any, scale: int = 1) -> Optional[str]:
    """The value as written, None when the outputs cannot carry it."""
    if not fits(metric, value) or isinstance(value, str):
        return None
    return _format(value * scale)


def render(snapshots: Sequence[Snapshot], settings: Optional[Settings] = None) -> str:
    """The metrics file for one snapshot."""
    if len(snapshots) != 1:
        raise UsageError("--format tab holds one Apache per file; run once per --url "
                         "with its own --output, or use --format influx/collectd")
    snap = snapshots[0]
    plain: Dict[str, Any] = {}
    labelled: Dict[str, List] = {}
    for s in renamed(snap.samples, vhost_name, "tab"):
        if s.labels:
            labelled.setdefault(s.metric.name, []).append(s)
        elif s.metric.name not in plain and fits(s.metric, s.value):
            plain[s.metric.name] = s.value  # the first one wins
    out = ["# Global Apache server metrics."]
    if snap.up:
        left_out = snap.auto.left_out if snap.auto is not None else ()
        server = {}
        for m in _ORIGINAL_SERVER:
            if m.name in left_out:
                continue  # on the page but unreadable: not a 0
            # apache-manager wrote 0 for a key missing from a page it did read.
            text = _number(m, plain.get(m.name, m.type(0)), m.tab_scale)
            if text is not None:
                server[m.tab_key] = text
        out.extend(f"{k}\t{v}" for k, v in sorted(server.items()))
    out += ["", "# Metrics internal to apache-manager."]
    internal = {"status_response": 0 if snap.up else 1}
    for name in _INTERNAL_KEYS:
        if name in plain:
            internal[name] = plain[name]
    kills = {dict(s.labels).get("kind"): s.value
             for s in labelled.get("reaper_last_run_kills", ())}
    if kills:  # apache-manager's keys: active counts mod_wsgi daemons too
        internal["workers_killed_active"] = (kills.get("native_active", 0)
                                             + kills.get("wsgi", 0))
        internal["workers_killed_idle"] = kills.get("native_idle", 0)
    out.extend(f"{_key(k)}\t{_format(v)}" for k, v in sorted(internal.items()))
    groups: Dict[str, Dict[str, str]] = {}
    for stat in MEMORY_STATS:
        for s in labelled.get(MEMORY_METRIC[stat], ()):
            text = _number(s.metric, s.value)
            if text is not None:
                groups.setdefault(_label(dict(s.labels).get("group", "")), {}) \
                    .setdefault(stat, text)
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
    seen = set()

    def rows(key: str, samples: Sequence, *names: str) -> List[str]:
        """``key<TAB>label...<TAB>value`` lines, each key and labels once."""
        lines = []
        for s in samples:
            text = _number(s.metric, s.value)
            labels = dict(s.labels)
            head = "\t".join([key] + [_label(labels.get(n, "")) for n in names])
            if text is not None and head not in seen:
                seen.add(head)
                lines.append(f"{head}\t{text}")
        return lines

    if "scoreboard" in labelled:
        out += ["", f"# Scoreboard slots per state {_TAG}."]
        out.extend(rows("scoreboard", labelled["scoreboard"], "state"))
    proxy = [line for m in PROXY_METRICS if "tab" not in dict(m.absent)
             for line in rows(_key(m.name), labelled.get(m.name, ()), "balancer", "worker")]
    if proxy:
        out += ["", f"# Load balancer members: balancer, member, value {_TAG}."]
        out.extend(proxy)
    vhosts = [line for m in VHOST_METRICS
              for line in rows(_key(m.name), labelled.get(m.name, ()), "vhost")]
    if vhosts:
        out += ["", f"# Per virtual host: vhost, value {_TAG}."]
        out.extend(vhosts)
    truncated = rows("wsgi-group-name-truncated", labelled.get("wsgi_group_name_truncated", ()),
                     "group")
    if truncated:
        out += ["", f"# mod_wsgi groups whose names the process title cut short {_TAG}."]
        out.extend(truncated)
    reaper = []
    for m in REAPER_METRICS:
        if m.name in original or "tab" in dict(m.absent):
            continue
        if m.labels:
            reaper.extend(rows(_key(m.name), labelled.get(m.name, ()), m.labels[0]))
        elif m.name in plain:
            reaper.append(f"{_key(m.name)}\t{_format(plain[m.name])}")
    if reaper:
        out += ["", f"# Reaper totals since its state file was created {_TAG}."]
        out.extend(reaper)
    restarts = []
    for s in labelled.get("restarts_total", ()):
        # The kind is part of the key: only a plain word may be (graceful, hard).
        kind = dict(s.labels).get("kind", "")
        text = _number(s.metric, s.value)
        key = s.metric.tab_key.format(kind=kind)
        if text is not None and kind.isascii() and kind.isalnum() and kind.islower() \
                and key not in seen:
            seen.add(key)
            restarts.append(f"{key}\t{text}")
    if restarts:
        out += ["", f"# Apache restarts seen between collections {_TAG}."]
        out.extend(restarts)
    # Interval figures (intervals.py): only when a previous reading allowed them.
    interval = [f"{m.tab_key}\t{_format(plain[m.name])}" for m in INTERVAL_METRICS
                if m.tab_key and not m.labels and m.name in plain]
    if interval:
        out += ["", f"# Since the previous collection: rates and request durations {_TAG}."]
        out.extend(interval)
    per_vhost = [line for m in INTERVAL_METRICS if m.tab_key and m.labels
                 for line in rows(m.tab_key, labelled.get(m.name, ()), "vhost")]
    if per_vhost:
        out += ["", f"# Request durations per virtual host: vhost, value {_TAG}."]
        out.extend(per_vhost)
    out += ["", f"# Collection health {_TAG}."]
    out.extend(f"{_key(m.name)}\t{_format(plain[m.name])}" for m in HEALTH_METRICS
               if m.name in plain)
    # Saturation (docs/insight.md): per listening socket, then the sums and
    # the reason; a socket that could not be read has no line at all.
    saturation = []
    for m in SATURATION_METRICS:
        if "tab" in dict(m.absent) or not m.tab_key:
            continue
        if m.labels:
            saturation.extend(rows(m.tab_key, labelled.get(m.name, ()), *m.labels))
        elif m.name in plain:
            saturation.append(f"{m.tab_key}\t{_text(plain[m.name])}")
    if saturation:
        out += ["", f"# Accept queue per listening address, and why the status page "
                    f"could not be read {_TAG}."]
        out.extend(saturation)
    return "\n".join(out) + "\n"
