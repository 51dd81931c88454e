"""Influx line protocol, for Telegraf's exec/execd inputs and InfluxDB's /write.

Measurement ``apache`` carries exactly what Telegraf's ``inputs.apache`` writes:
tags ``port`` and ``server``, one float field per numeric ``?auto`` value named
after its key without spaces, and ``scboard_<state>``. Everything Telegraf lacks
goes into the catalogue's further measurements (``apache_workers``,
``apache_memory``, ``apache_proxy``, ``apache_tls_cache``,
``apache_exporter``) with the catalogue's integer/float/string types.

One timestamp per snapshot, in nanoseconds (line protocol's default precision).
"""

from __future__ import annotations

import math

from apache_metrics_exporter.catalogue import Metric
from apache_metrics_exporter.http import host_port

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, List, Sequence, Tuple

MULTI_TARGET = True
DESCRIPTION = "Influx line protocol (Telegraf inputs.exec/execd, InfluxDB /write)"
TELEGRAF_MEASUREMENT = "apache"

_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "/",
                              "\n": r"\ ", "\r": r"\ ", "\t": r"\ "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\\": "/",
                                      "\n": r"\ ", "\r": r"\ ", "\t": r"\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": " ", "\r": " "})


def escape_key(text: str) -> str:
    """Tag keys, tag values and field keys.

    Commas, equals signs and spaces are escaped; newlines become spaces.
    Backslashes become ``/``: InfluxDB 1.x keeps them literally and cannot
    store one before a separator or at the end, 2.x unescapes them, so no
    spelling means the same everywhere.
    """
    return text.translate(_KEY_ESCAPES)


def escape_measurement(text: str) -> str:
    return text.translate(_MEASUREMENT_ESCAPES)


def format_value(value: Any, kind: type) -> str:
    """A field value of the catalogue's type: ``12i``, ``0.5``, ``"text"``."""
    if kind is str:
        return '"' + str(value).translate(_STRING_ESCAPES) + '"'
    if kind is int:
        return f"{int(value)}i"
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("NaN/Inf cannot be written in line protocol")
    return repr(number)


def target_tags(url: str) -> Dict[str, str]:
    """Telegraf's tags for a URL: ``server`` (host) and ``port``."""
    host, port = host_port(url)
    return {"server": host, "port": str(port)}


def _tag_string(tags: Dict[str, str]) -> str:
    return "".join(f",{escape_key(k)}={escape_key(v)}"
                   for k, v in sorted(tags.items()) if v != "")


def lines(snapshot: Any) -> List[str]:
    """The line protocol lines of one snapshot."""
    base = target_tags(snapshot.url)
    # (measurement, extra tags) -> {field: rendered value}, in first-seen order
    points: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], Dict[str, str]] = {}

    def put(measurement: str, extra: Tuple[Tuple[str, str], ...], field: str, text: str) -> None:
        points.setdefault((measurement, extra), {})[field] = text

    for sample in snapshot.samples:
        metric: Metric = sample.metric
        if not metric.influx:
            continue
        labels = dict(sample.labels)
        template_measurement, _, template_field = metric.influx.partition(".")
        field = template_field.format(**labels)
        used = {n for n in labels if "{" + n + "}" in metric.influx}
        extra = tuple(sorted((k, v) for k, v in labels.items() if k not in used))
        kind = float if template_measurement == TELEGRAF_MEASUREMENT else metric.type
        put(template_measurement, extra, field, format_value(sample.value, kind))
    if snapshot.auto is not None:
        for key, value in snapshot.auto.telegraf_proxy.items():
            put(TELEGRAF_MEASUREMENT, (), key, format_value(value, float))
    stamp = str(int(round(snapshot.timestamp * 1e9)))
    out = []
    # Telegraf's measurement first, the exporter's own health last.
    order = sorted(points, key=lambda k: (k[0] != TELEGRAF_MEASUREMENT,
                                          k[0] == "apache_exporter", k[0], k[1]))
    for measurement, extra in order:
        fields = points[(measurement, extra)]
        tags = dict(base)
        tags.update(extra)
        field_text = ",".join(f"{escape_key(k)}={v}" for k, v in fields.items())
        out.append(f"{escape_measurement(measurement)}{_tag_string(tags)} {field_text} {stamp}")
    return out


def render(snapshots: Sequence, settings: Any = None) -> str:
    """All targets' lines, one batch."""
    return "".join(line + "\n" for snap in snapshots for line in lines(snap))
