"""Strict validators for every output format, used by the property and fuzz tests.

Each ``check_*`` function raises AssertionError naming the first line that is
not valid for its format (and the reason); it returns what it parsed so tests
can look further. They are stricter than the consumers where that is cheap:
what passes here is accepted by InfluxDB/Telegraf, collectd, promtool and
node_exporter, and by a shell or Zabbix reading the tab file.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Dict, List, Tuple

from apache_metrics_exporter.catalogue import ALL_METRICS
from apache_metrics_exporter.writers import collectd as collectd_writer

INT64 = 2 ** 63
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _fail(line: str, why: str) -> None:
    raise AssertionError(f"{why}: {line[:300]!r}")


def _lines(text: str) -> List[str]:
    """The lines of an output: one newline at the end of each, nothing else
    that any reader (Python's splitlines, awk, a terminal) takes as a break."""
    if not text:
        return []
    assert text.endswith("\n"), f"no final newline: {text[-100:]!r}"
    lines = text[:-1].split("\n")
    assert lines == text.splitlines(), "a character other than \\n breaks a line"
    for line in lines:
        if "\r" in line:
            _fail(line, "carriage return")
    return lines


# --- Influx line protocol ---------------------------------------------------

_INT_FIELD = re.compile(r"-?(0|[1-9][0-9]*)i")
_FLOAT_FIELD = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _influx_name(text: str, line: str, specials: str) -> str:
    """An escaped measurement/key/tag value: non-empty, every special
    character escaped, a backslash only as an escape, no control character."""
    if not text:
        _fail(line, "empty name")
    if _CONTROL.search(text):
        _fail(line, "control character or surrogate in a name")
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in specials:
                _fail(line, "backslash that escapes nothing")
            out.append(text[i + 1])
            i += 2
            continue
        if c in specials:
            _fail(line, f"unescaped {c!r}")
        out.append(c)
        i += 1
    return "".join(out)


def _split_unescaped(text: str, sep: str) -> List[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _influx_fields(text: str, line: str) -> Dict[str, object]:
    """field=value pairs; string values may hold any escaped character."""
    fields: Dict[str, object] = {}
    i = 0
    while True:
        eq = i
        while eq < len(text) and text[eq] != "=":
            eq += 2 if text[eq] == "\\" else 1
        if eq >= len(text):
            _fail(line, "field without '='")
        key = _influx_name(text[i:eq], line, ",= ")
        if key == "time":
            _fail(line, "field named time")
        if key in fields:
            _fail(line, f"field {key!r} twice")
        j = eq + 1
        if j < len(text) and text[j] == '"':
            k, value = j + 1, []
            while True:
                if k >= len(text):
                    _fail(line, "unterminated string")
                c = text[k]
                if c == "\\":
                    if k + 1 >= len(text) or text[k + 1] not in '"\\':
                        _fail(line, "bad escape in a string")
                    value.append(text[k + 1])
                    k += 2
                    continue
                if c == '"':
                    break
                if _CONTROL.match(c):
                    _fail(line, "control character or surrogate in a string")
                value.append(c)
                k += 1
            fields[key] = "".join(value)
            end = k + 1
        else:
            end = text.find(",", j)
            end = len(text) if end < 0 else end
            raw = text[j:end]
            if _INT_FIELD.fullmatch(raw):
                number = int(raw[:-1])
                if not -INT64 <= number < INT64:
                    _fail(line, "integer outside int64")
                fields[key] = number
            elif _FLOAT_FIELD.fullmatch(raw):
                number = float(raw)
                if not math.isfinite(number):
                    _fail(line, "float not finite")
                fields[key] = number
            else:
                _fail(line, f"field value {raw[:40]!r} is no number or string")
        if end == len(text):
            return fields
        if text[end] != ",":
            _fail(line, "garbage after a field value")
        i = end + 1


def check_influx(text: str, unique: bool = True
                 ) -> List[Tuple[str, Dict[str, str], Dict[str, object], str]]:
    """Every line: measurement[,tag=value...] field=value[,...] [timestamp];
    ``unique``: no series twice at one time (one snapshot's lines)."""
    out = []
    points = set()
    for line in _lines(text):
        if not line or line.startswith("#"):
            _fail(line, "empty or comment line")
        # The head ends at the first unescaped space.
        i = 0
        while i < len(line) and line[i] != " ":
            i += 2 if line[i] == "\\" else 1
        head, rest = line[:i], line[i + 1:]
        if len(head.encode("utf-8", "strict")) >= 65535:
            _fail(line, "series key longer than InfluxDB's 64 KiB")
        parts = _split_unescaped(head, ",")
        measurement = _influx_name(parts[0], line, ", ")
        tags: Dict[str, str] = {}
        for part in parts[1:]:
            kv = _split_unescaped(part, "=")
            if len(kv) != 2:
                _fail(line, "tag without exactly one '='")
            key = _influx_name(kv[0], line, ",= ")
            if key in tags or key == "time":
                _fail(line, f"tag {key!r} twice or named time")
            tags[key] = _influx_name(kv[1], line, ",= ")
        # Fields end at the last space outside a string: parse them, then the rest.
        stamp = ""
        fields_text = rest
        m = re.search(r" (-?[0-9]+)$", rest)
        if m:
            try:
                fields = _influx_fields(rest[:m.start()], line)
                stamp = m.group(1)
            except AssertionError:
                fields = _influx_fields(fields_text, line)
        else:
            fields = _influx_fields(fields_text, line)
        if stamp and not -INT64 <= int(stamp) < INT64:
            _fail(line, "timestamp outside int64")
        point = (head, stamp)
        if unique and point in points:
            _fail(line, "the same series and time twice")
        points.add(point)
        line.encode("utf-8")  # lone surrogates would raise here
        out.append((measurement, tags, fields, stamp))
    return out


# --- collectd PUTVAL ----------------------------------------------------------

_PART = r"[A-Za-z0-9_.-]+"
_PUTVAL = re.compile(
    rf'PUTVAL "(?P<host>{_PART})/(?P<plugin>{_PART})/(?P<type>{_PART})"'
    r"(?: interval=(?P<interval>[0-9]+\.[0-9]{3}))? (?P<time>N|[0-9]+\.[0-9]{3})"
    r"(?P<values>(?::[^: ]+)+)")
_GAUGE = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|U")
_DERIVE = re.compile(r"-?(0|[1-9][0-9]*)")
TYPES_DB = Path("/usr/share/collectd/types.db")


def _types_db() -> Dict[str, int]:
    """type name -> number of data sources, from the stock types.db if present."""
    if not TYPES_DB.exists():
        return {}
    out = {}
    for line in TYPES_DB.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sources = line.split(None, 1)
            out[name] = len(sources.split(","))
    return out


_TYPES = _types_db()


def check_putval(text: str) -> Dict[str, List[str]]:
    """Every line: PUTVAL "host/plugin-instance/type-instance" [interval=N] time:value..."""
    out: Dict[str, List[str]] = {}
    for line in _lines(text):
        if len(line) >= collectd_writer.MAX_LINE:
            _fail(line, "longer than collectd's line limit")
        m = _PUTVAL.fullmatch(line)
        if not m:
            _fail(line, "not a PUTVAL line")
        for part in ("host", "plugin", "type"):
            if len(m.group(part)) > 127:
                _fail(line, f"{part} part over 127 bytes")
        plugin = m.group("plugin").partition("-")[0]
        type_name = m.group("type").partition("-")[0]
        if plugin != collectd_writer.PLUGIN:
            _fail(line, "plugin is not apache")
        values = m.group("values")[1:].split(":")
        if _TYPES:
            if type_name not in _TYPES:
                _fail(line, f"type {type_name!r} not in types.db")
            if len(values) != _TYPES[type_name]:
                _fail(line, "wrong number of values for its type")
        for value in values:
            if type_name in collectd_writer.DERIVE_TYPES:
                if not _DERIVE.fullmatch(value) or not -INT64 <= int(value) < INT64:
                    _fail(line, f"DERIVE value {value[:40]!r} is not an int64")
            elif not _GAUGE.fullmatch(value) or not math.isfinite(float(value)):
                _fail(line, f"GAUGE value {value[:40]!r} is not a finite number")
        ident = f"{m.group('host')}/{m.group('plugin')}/{m.group('type')}"
        if ident in out:
            _fail(line, "identifier twice")
        out[ident] = values
    return out


# --- the tab file -------------------------------------------------------------

_TAB_KEY = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
# Text values: the catalogue's str metrics.
TAB_TEXT_KEYS = {m.tab_key or m.name.replace("_", "-") for m in ALL_METRICS if m.type is str}
# Fields per line: key, one per label of the metric (memory-usage: group and
# stat), value.
_TAB_FIELDS = {m.name.replace("_", "-"): 2 + len(m.labels) for m in ALL_METRICS if m.labels}
_TAB_FIELDS["memory-usage"] = 4
_TAB_FIELDS.update({m.tab_key: 2 + len(m.labels) for m in ALL_METRICS
                    if m.labels and m.tab_key and "{" not in m.tab_key})
_TAB_NUMBER = re.compile(r"-?[0-9]+|-?[0-9]+\.[0-9]+(e[+-][0-9]+)?|-?[0-9]+e[+-][0-9]+")


def check_tab(text: str) -> Dict[str, str]:
    """Lines are empty, ``# comment``, or KEY[<TAB>LABEL...]<TAB>VALUE with the
    field count of their key, printable fields and numbers Zabbix can read."""
    out: Dict[str, str] = {}
    for line in _lines(text):
        if not line:
            continue
        if line.startswith("#"):
            if not line.startswith("# ") or not line.isprintable():
                _fail(line, "comment with a control character")
            continue
        fields = line.split("\t")
        key = fields[0]
        if not _TAB_KEY.fullmatch(key):
            _fail(line, "key is not lower-case words joined by '-'")
        if len(fields) != _TAB_FIELDS.get(key, 2):
            _fail(line, f"{len(fields)} fields for key {key}")
        for field in fields[1:]:
            if not field.isprintable():
                _fail(line, "control character in a field")
        value = fields[-1]
        if key in TAB_TEXT_KEYS:
            pass
        elif not _TAB_NUMBER.fullmatch(value):
            _fail(line, f"value {value[:40]!r} is not a number")
        elif "." in value or "e" in value:
            if not math.isfinite(float(value)):
                _fail(line, "float not finite")
        elif not -INT64 <= int(value) < INT64:
            _fail(line, "integer outside int64")
        head = "\t".join(fields[:-1])
        if head in out:
            _fail(line, "key and labels twice")
        out[head] = value
    return out


# --- Prometheus text format ---------------------------------------------------

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PROM_VALUE = re.compile(r"-?[0-9]+|-?[0-9]+\.[0-9]+(e[+-][0-9]+)?|-?[0-9]+e[+-][0-9]+")


def _prom_labels(text: str, line: str) -> Tuple[Tuple[str, str], ...]:
    labels, i = [], 0
    while i < len(text):
        eq = text.find("=", i)
        if eq < 0 or not _LABEL_NAME.fullmatch(text[i:eq]):
            _fail(line, "bad label name")
        name = text[i:eq]
        if eq + 1 >= len(text) or text[eq + 1] != '"':
            _fail(line, "label value not quoted")
        k, value = eq + 2, []
        while True:
            if k >= len(text):
                _fail(line, "unterminated label value")
            c = text[k]
            if c == "\\":
                nxt = text[k + 1:k + 2]
                if nxt not in ("\\", '"', "n"):
                    _fail(line, "bad escape in a label value")
                value.append("\n" if nxt == "n" else nxt)
                k += 2
                continue
            if c == '"':
                break
            if c == "\n" or "\ud800" <= c <= "\udfff":
                _fail(line, "raw newline or invalid UTF-8 in a label value")
            value.append(c)
            k += 1
        labels.append((name, "".join(value)))
        i = k + 1
        if i < len(text):
            if text[i] != ",":
                _fail(line, "labels not separated by ','")
            i += 1
    names = [n for n, _ in labels]
    if len(set(names)) != len(names):
        _fail(line, "label name twice")
    return tuple(sorted(labels))


def check_prometheus(text: str) -> Dict[Tuple[str, tuple], float]:
    """HELP and TYPE once per family before its samples, families contiguous,
    each series once, finite values in a form Go's ParseFloat reads."""
    series: Dict[Tuple[str, tuple], float] = {}
    helped, typed, done = set(), {}, set()
    current = None
    for line in _lines(text):
        if line.startswith("# HELP "):
            name = line[7:].partition(" ")[0]
            if name in helped or name in done:
                _fail(line, "second HELP")
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if kind not in ("counter", "gauge", "histogram") or name in typed:
                _fail(line, "bad or second TYPE")
            if kind == "histogram" and name.endswith(("_total", "_bucket", "_sum", "_count")):
                _fail(line, "a histogram's name has a suffix of its own")
            if name.endswith("_total") != (kind == "counter") and kind != "histogram":
                _fail(line, "TYPE does not match the name")
            typed[name] = kind
            continue
        if line.startswith("#") or not line:
            _fail(line, "stray comment or empty line")
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            close = line.rfind("} ")
            if close < brace:
                _fail(line, "unclosed labels")
            labels = _prom_labels(line[brace + 1:close], line)
            value = line[close + 2:]
        else:
            name, _, value = line.partition(" ")
            labels = ()
        if not _METRIC_NAME.fullmatch(name):
            _fail(line, "bad metric name")
        family = name
        stem, _, suffix = name.rpartition("_")
        if typed.get(stem) == "histogram" and suffix in ("bucket", "sum", "count"):
            family = stem  # a histogram's series
            if (suffix == "bucket") != any(k == "le" for k, _ in labels):
                _fail(line, "le on a histogram's buckets only")
        if family not in typed or family not in helped or typed[family] == "histogram" \
                and family == name:
            _fail(line, "sample before its HELP and TYPE")
        if current != family:
            if family in done:
                _fail(line, "family not contiguous")
            if current is not None:
                done.add(current)
            current = family
        if not _PROM_VALUE.fullmatch(value) or not math.isfinite(float(value)):
            _fail(line, f"value {value[:40]!r} is not a finite number")
        if "." not in value and "e" not in value and not -INT64 <= int(value) < INT64:
            _fail(line, "integer outside int64")
        if (name, labels) in series:
            _fail(line, "series twice")
        line.encode("utf-8")
        series[(name, labels)] = float(value)
    return series


# --- the human summary and the Zabbix discovery ---------------------------------

def check_text(text: str, width: int) -> List[str]:
    """No control character reaches the terminal; no line wider than it."""
    lines = _lines(text)
    for line in lines:
        if not line.isprintable():
            _fail(line, "control or invisible character on the terminal")
        if len(line) > width:
            _fail(line, "wider than the terminal")
    return lines


def check_zabbix(text: str) -> dict:
    """One line of ASCII JSON in the low-level discovery shape."""
    (line,) = _lines(text)
    assert line.isascii(), line[:200]
    doc = json.loads(line)
    assert all(set(item) == {"{#NAME}"} for item in doc["data"])
    return doc
