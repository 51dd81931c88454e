"""collectd ``PUTVAL`` lines for the Exec plugin.

``PUTVAL "HOST/apache-INSTANCE/TYPE-TYPEINSTANCE" [interval=N] TIME:VALUE``
with the types of collectd's own apache plugin (``apache_requests``,
``apache_bytes``, ``apache_connections``, ``apache_idle_workers``,
``apache_scoreboard-<state>``) and, for everything else, types of the stock
``types.db`` only, as the catalogue names them. DERIVE values are written as
integers (collectd reads them with base 0: a leading zero would mean octal).

Valid by construction: identifier parts hold only ``[A-Za-z0-9_.-]``, DERIVE
values are int64, GAUGE values finite, no line reaches collectd's line limit,
and an identifier (or one data source of it) that two samples would share
keeps the first sample's value.

Virtual hosts (``vhost_name``): ``HOST:PORT`` and ``HOST`` made of
``[A-Za-z0-9_.-]`` are written as ``HOST_PORT`` / ``HOST``, as before; any
other name, or one longer than VHOST_ROOM, is sanitised, cut and given a
``_`` + 8 hex digit suffix (vhosts.py), so distinct hosts stay distinct.
"""

from __future__ import annotations

import math
import os
import re
import socket

from apache_metrics_exporter.catalogue import (
    COLLECTD_DERIVE_TYPES,
    INT64_MAX,
    VHOST_METRICS,
    fits,
)
from apache_metrics_exporter.collect.http import host_port
from apache_metrics_exporter.errors import UsageError
from apache_metrics_exporter.vhosts import suffixed, written
from apache_metrics_exporter.writers import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, List, Optional, Sequence, Tuple

    from apache_metrics_exporter.collect.snapshot import Snapshot

PLUGIN = "apache"
MAX_PART = 63  # collectd allows 127 bytes per part; stay well inside
MAX_LINE = 1024  # collectd stops reading a program after a 1200-byte line

# Data source types of the stock types.db entries the catalogue uses.
DERIVE_TYPES = COLLECTD_DERIVE_TYPES
MULTI_VALUE = {"load": 3}  # types with several data sources

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_PLAIN_VHOST = re.compile(r"[A-Za-z0-9_.-]+(?::[0-9]+)?")
# The characters a vhost name may take in every vhost type instance
# (count-vhost_in_flight_NAME is the longest prefix): 47.
VHOST_ROOM = MAX_PART - max(len(str(m.collectd).split("-", 1)[1].split("{")[0])
                            for m in VHOST_METRICS)


def sanitize(text: str) -> str:
    """An identifier part: letters, digits, ``_ . -``; others become ``_``."""
    return _UNSAFE.sub("_", str(text)[:16 * MAX_PART]).strip("_")[:MAX_PART] or "unknown"


def vhost_name(name: str) -> str:
    """A virtual host as its type instances name it: ``www.example.org:443`` ->
    ``www.example.org_443`` as ever; a name that sanitising or the cut would
    change otherwise gets a digest suffix (``a_example_80_1b2c3d4e`` for
    ``a example:80``), so it cannot become another host's."""
    plain = name.replace(":", "_")
    if (len(plain) <= VHOST_ROOM and _PLAIN_VHOST.fullmatch(name)
            and sanitize(name) == plain):
        return plain
    return suffixed(sanitize(name), name, VHOST_ROOM)


def default_instance(url: str) -> str:
    """``HOST_PORT`` of a status URL: ``127.0.0.1_8080``, ``ipv6__1_8080`` for [::1]."""
    host, port = host_port(url)
    if ":" in host:
        host = "ipv6_" + host
    return sanitize(f"{host}_{port}")


def hostname(settings: Settings) -> str:
    """COLLECTD_HOSTNAME (set by the Exec plugin), else --hostname, else ours."""
    return (os.environ.get("COLLECTD_HOSTNAME") or settings.hostname
            or socket.gethostname())


def interval(settings: Settings) -> Optional[float]:
    """The interval to declare: COLLECTD_INTERVAL, else --interval, else none."""
    env = os.environ.get("COLLECTD_INTERVAL")
    value = settings.interval
    if env:
        try:
            value = float(env)
        except ValueError:
            pass
    # "interval=nan" or "interval=inf" would make collectd refuse every line.
    return value if isinstance(value, (int, float)) and 0 < value < 1e9 else None


def instances(settings: Settings, urls: Sequence[str]) -> List[str]:
    """One plugin instance per target: --instance (repeated per URL) or derived."""
    given = list(settings.instance or [])
    if not given:
        names = [default_instance(u) for u in urls]
    elif len(given) == len(urls):
        # "" is collectd's <Instance ""> (its v4-compatible layout): no plugin
        # instance at all, HOST/apache/TYPE.
        names = [sanitize(n) if n.strip() else "" for n in given]
    else:
        raise UsageError(f"--instance was given {len(given)} times for {len(urls)} "
                         "--url; give one per URL, in the same order, or none")
    if len(set(names)) != len(names):
        raise UsageError("two targets would share the collectd plugin instance "
                         f"{sorted(n for n in names if names.count(n) > 1)[0]!r}; "
                         "give --instance once per --url")
    return names


def _number(value: float, derive: bool) -> Optional[str]:
    """The value as collectd reads it; None if it cannot (NaN, Inf, a DERIVE
    outside int64)."""
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    if derive:
        whole = int(value)  # no leading zeros, truncated like collectd would
        return str(whole) if -INT64_MAX <= whole <= INT64_MAX else None
    if number.is_integer() and abs(number) < 2 ** 63:
        return str(int(number))
    return f"{number:.10g}"  # 0.0025454500000000003 (from ms * 0.001) -> 0.00254545


def lines(snapshot: Any, host: str, instance: str, every: Optional[float]) -> List[str]:
    """The PUTVAL lines of one snapshot."""
    values: Dict[Tuple[str, str], List[Optional[str]]] = {}
    for sample in written(snapshot.samples, vhost_name, "collectd"):
        metric = sample.metric
        if not metric.collectd or metric.type is str or not fits(metric, sample.value):
            continue
        labels = {k: sanitize(v) for k, v in sample.labels}
        try:
            spec, _, position = metric.collectd.format(**labels).partition(":")
        except (KeyError, IndexError):
            continue  # a sample without the labels its name needs
        type_name, _, type_instance = spec.partition("-")
        # Cut here, so that two instances alike in their first MAX_PART
        # characters are one identifier, and the first sample wins.
        type_instance = type_instance[:MAX_PART]
        derive = type_name in DERIVE_TYPES
        text = _number(sample.value * metric.collectd_scale, derive)
        slot = values.setdefault((type_name, type_instance),
                                 [None] * MULTI_VALUE.get(type_name, 1))
        index = int(position or 0)
        if slot[index] is None:
            slot[index] = text
    head = f"{sanitize(host)}/{PLUGIN}" + (f"-{sanitize(instance)}" if instance else "")
    option = f" interval={every:.3f}" if every and 0 < every < 1e9 else ""
    when = snapshot.timestamp
    stamp = f"{when:.3f}" if 0 <= when < 1e11 else "N"  # N: collectd's "now"
    out = []
    for (type_name, type_instance), slot in values.items():
        if None in slot:
            continue  # a multi-value type with a missing part (load without Load5)
        ident = f"{head}/{type_name}" + (f"-{type_instance}" if type_instance else "")
        line = f'PUTVAL "{ident}"{option} {stamp}:{":".join(x or "" for x in slot)}'
        if len(line) < MAX_LINE:
            out.append(line)
    return out


def check(settings: Settings, urls: Sequence[str]) -> None:
    """Usage errors of this format, raised before anything is fetched."""
    instances(Settings.of(settings), urls)


def render(snapshots: Sequence[Snapshot], settings: Optional[Settings] = None) -> str:
    """All targets' PUTVAL lines, one batch."""
    settings = Settings.of(settings)
    host = hostname(settings)
    every = interval(settings)
    names = instances(settings, [s.url for s in snapshots])
    return "".join(line + "\n" for snap, name in zip(snapshots, names)
                   for line in lines(snap, host, name, every))
