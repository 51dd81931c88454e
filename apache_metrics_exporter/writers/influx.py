"""Influx line protocol, for Telegraf's exec/execd inputs and InfluxDB's /write.

Measurement ``apache`` carries exactly what Telegraf's ``inputs.apache`` writes:
tags ``port`` and ``server``, one float field per numeric ``?auto`` value named
after its key without spaces, and ``scboard_<state>``. Everything Telegraf lacks
goes into the catalogue's further measurements (``apache_workers``,
``apache_memory``, ``apache_proxy``, ``apache_tls_cache``,
``apache_exporter``) with the catalogue's integer/float/string types.

One timestamp per snapshot, in nanoseconds (line protocol's default precision).

Valid by construction: integers within int64, floats finite, names without
control characters (each becomes an escaped space) or lone surrogates
(U+FFFD) and at most MAX_TEXT characters, so that a series key stays far
below InfluxDB's 64 KiB; a field that appears twice in one point keeps its
first value.

Virtual hosts (tag ``vhost``, ``vhost_name``): escaping commas, equals signs
and spaces is lossless, so a name is written as it is unless it holds what
the escaping changes (a control character, a backslash); such a name gets a
``_`` + 8 hex digit suffix (vhosts.py), so distinct hosts stay distinct.
"""

from __future__ import annotations

import math
from operator import add, is_, le

from apache_metrics_exporter.catalogue import INT64_MAX, Metric, fits, limit
from apache_metrics_exporter.vhosts import suffixed, written
from apache_metrics_exporter.writers import MAX_TEXT, laid_values, remembered

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, List, Optional, Sequence, Tuple

    from apache_metrics_exporter.collect.snapshot import Snapshot
    from apache_metrics_exporter.writers import Settings

TELEGRAF_MEASUREMENT = "apache"

_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "/"})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\\": "/"})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_STAMP_LIMIT = INT64_MAX / 1e9  # seconds: a later timestamp does not fit in int64 ns


def _plain(text: str) -> str:
    """At most MAX_TEXT characters, each control character or line separator
    (newline, tab, ESC, NUL, U+2028, ...) a space, each lone surrogate (an
    undecodable byte of a process title) U+FFFD: what every line protocol
    reader takes as plain text on one line."""
    text = text[:MAX_TEXT]
    if text.isprintable():
        return text
    return "".join(" " if c < " " or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029" else
                   "\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


def escape_key(text: str) -> str:
    """Tag keys, tag values and field keys.

    Commas, equals signs and spaces are escaped; newlines and other control
    characters become (escaped) spaces. Backslashes become ``/``: InfluxDB
    1.x keeps them literally and cannot store one before a separator or at
    the end, 2.x unescapes them, so no spelling means the same everywhere.
    """
    return _plain(text).translate(_KEY_ESCAPES)


def vhost_name(name: str) -> str:
    """A virtual host's tag value before escaping: the name itself when
    escape_key keeps all of it, else a lossy form with a digest suffix."""
    if len(name) <= MAX_TEXT and "\\" not in name and _plain(name) == name:
        return name
    return suffixed(_plain(name).replace("\\", "/"), name, MAX_TEXT)


def escape_measurement(text: str) -> str:
    return _plain(text).translate(_MEASUREMENT_ESCAPES)


def format_value(value: Any, kind: type) -> str:
    """A field value of the catalogue's type: ``12i``, ``0.5``, ``"text"``.

    ValueError for a number line protocol cannot carry (NaN, Inf, an integer
    outside int64)."""
    if kind is str:
        return '"' + _plain(str(value)).translate(_STRING_ESCAPES) + '"'
    if kind is int:
        whole = int(value)
        if not -INT64_MAX <= whole <= INT64_MAX:
            raise ValueError("integers in line protocol are int64")
        return f"{whole}i"
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("NaN/Inf cannot be written in line protocol")
    return repr(number)


def _field(value: Any, kind: type) -> Optional[str]:
    try:
        return format_value(value, kind)
    except (ValueError, OverflowError, TypeError):
        return None


def target_tags(url: str) -> Dict[str, str]:
    """Telegraf's tags for a URL, derived as it does (Go's net.SplitHostPort on
    the URL's host part, as written): ``server`` keeps its case, and the
    brackets of an IPv6 address given without a port; ``port`` defaults by
    scheme."""
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    host, port = _split_host_port(netloc)
    if host is None:
        host, port = netloc, {"http": "80", "https": "443"}.get(scheme.lower(), "")
    return {"server": host, "port": port}


def _split_host_port(netloc: str) -> Tuple[Optional[str], str]:
    """(host, port) as Go's net.SplitHostPort; (None, '') where it fails."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0 or not netloc[end + 1:].startswith(":"):
            return None, ""
        return netloc[1:end], netloc[end + 2:]
    if netloc.count(":") != 1:
        return None, ""
    host, _, port = netloc.partition(":")
    return host, port


# A metric's plan, worked out once per metric (not per sample of every
# cycle), by its name: (the metric, its influx spec, measurement - None when
# line protocol does not carry it -, field template, the field key escaped
# when the template has no placeholder else None, the field type, the range
# catalogue.fits checks, the point key of an unlabelled sample). Another
# metric of the same name (a test's own) gets its own plan.
_PLANS: Dict[str, tuple] = {}
# escape_key of short names seen before (label names and values, field
# keys): they repeat every cycle. Bounded: cleared when full.
_ESCAPED: Dict[str, str] = {}
_MEMO_MAX = 4096
_MEMO_TEXT = 256


def _plan(metric: Metric) -> tuple:
    spec = metric.influx
    if not spec:
        plan: tuple = (metric, spec, None, "", None, float, -1, None)
    else:
        measurement, _, template = spec.partition(".")
        kind = float if measurement == TELEGRAF_MEASUREMENT else metric.type
        plain = escape_key(template) if "{" not in template and "}" not in template else None
        plan = (metric, spec, measurement, template, plain, kind, limit(metric),
                (measurement, ()))
    if len(_PLANS) >= _MEMO_MAX:
        _PLANS.clear()
    _PLANS[metric.name] = plan
    return plan


def _escaped(text: str) -> str:
    """escape_key, remembered for short texts."""
    got = _ESCAPED.get(text)
    if got is None:
        got = escape_key(text)
        if len(text) <= _MEMO_TEXT:
            if len(_ESCAPED) >= _MEMO_MAX:
                _ESCAPED.clear()
            _ESCAPED[text] = got
    return got


# The (point key, escaped field key) of a labelled sample, by its metric's
# influx spec and its labels (None: the labels do not fill the name): the
# same samples come every cycle. Bounded as _ESCAPED; only short text labels.
_LABELLED: Dict[tuple, Optional[Tuple[Tuple[str, Tuple[Tuple[str, str], ...]], str]]] = {}


def _labelled(spec: str, template: str, labels: Tuple[Tuple[str, str], ...]
              ) -> Optional[Tuple[Tuple[str, Tuple[Tuple[str, str], ...]], str]]:
    named = dict(labels)
    try:
        field = template.format(**named)
    except (KeyError, IndexError):
        return None  # a sample without the labels its name needs
    used = {n for n in named if "{" + n + "}" in spec}
    # An empty tag value is no tag (_prefix leaves it out): such a sample is
    # in the point without it, never a second line of the same series.
    extra = tuple(sorted((_escaped(k), _escaped(v)) for k, v in named.items()
                         if k not in used and v))
    return (spec.partition(".")[0], extra), _escaped(field)


# A line's measurement and tags, escaped, by target URL, measurement and extra
# tags: the same every cycle. Bounded as _ESCAPED.
_PREFIXES: Dict[tuple, str] = {}


def _prefix(url: str, measurement: str, extra: Tuple[Tuple[str, str], ...]) -> str:
    key = (url, measurement, extra)
    got = _PREFIXES.get(key)
    if got is None:
        tags = {escape_key(k): escape_key(v) for k, v in target_tags(url).items()}
        tags.update(extra)
        tag_text = "".join(f",{k}={v}" for k, v in sorted(tags.items()) if v)
        got = f"{escape_measurement(measurement)}{tag_text}"
        if len(url) <= _MEMO_TEXT and sum(len(k) + len(v) for k, v in extra) <= _MEMO_TEXT:
            if len(_PREFIXES) >= _MEMO_MAX:
                _PREFIXES.clear()
            _PREFIXES[key] = got
    return got


def _order(point: Tuple[str, Tuple[Tuple[str, str], ...]]) -> tuple:
    """Telegraf's measurement first, the exporter's own health last."""
    measurement = point[0]
    return (measurement != TELEGRAF_MEASUREMENT, measurement == "apache_exporter",
            measurement, point[1])


def lines(snapshot: Any) -> List[str]:
    """The line protocol lines of one snapshot."""
    layout = _LAYOUTS.get(snapshot.url)
    got = _laid_out(layout, snapshot) if layout is not None else None
    if got is not None and got is not _FULL:
        return got
    samples = snapshot.samples
    chosen = written(samples, vhost_name, "influx")
    out = _lines(snapshot, chosen)
    if got is None and samples and len(chosen) == len(samples) \
            and all(map(is_, chosen, samples)):
        # (no name changed: written() handed back the very samples)
        if len(_LAYOUTS) >= _LAYOUT_MAX:
            _LAYOUTS.clear()
        _LAYOUTS[snapshot.url] = _Layout(snapshot.url, chosen)
    return out


def _lines(snapshot: Any, samples: Sequence[Any]) -> List[str]:
    """lines(), the full way: ``samples`` are the snapshot's as written()
    hands them back."""
    # (measurement, extra tags) -> {escaped field: rendered value}, in first-seen order
    points: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], Dict[str, str]] = {}
    plans, labelled = _PLANS, _LABELLED

    for sample in samples:
        metric: Metric = sample.metric
        plan = plans.get(metric.name)
        if plan is None or plan[0] is not metric:
            plan = _plan(metric)
        _, spec, measurement, template, field, kind, most, point = plan
        if measurement is None:
            continue  # not in line protocol
        value = sample.value
        vtype = type(value)
        if vtype is int or vtype is float:
            if not -most <= value <= most:  # catalogue.fits, for a plain number
                continue
        elif not fits(metric, value):
            continue
        labels = sample.labels
        if labels or field is None:
            try:
                shaped = labelled[(spec, labels)]
            except (KeyError, TypeError):  # not kept yet, or labels that are no text
                shaped = remembered(labelled, (spec, labels), labels, _MEMO_TEXT, _MEMO_MAX,
                                    _labelled, spec, template, labels)
            if shaped is None:
                continue
            point, field = shaped
        # The value as format_value writes it: a plain float that fits() took
        # is finite, and within what float() of an int can carry; anything
        # else the long way.
        if kind is int and vtype is int and -INT64_MAX <= value <= INT64_MAX:
            text: Optional[str] = f"{value}i"
        elif kind is float and vtype is float:
            text = repr(value)
        elif kind is float and vtype is int:
            text = repr(float(value))
        else:
            text = _field(value, kind)
        if text is not None:  # the first value of a field wins
            fields = points.get(point)
            if fields is None:
                points[point] = {field: text}
            elif field not in fields:
                fields[field] = text
    if snapshot.auto is not None:
        for name, value in snapshot.auto.telegraf_extra.items():
            text = _field(value, float)
            if text is not None:
                points.setdefault((TELEGRAF_MEASUREMENT, ()), {}).setdefault(
                    _escaped(name), text)
    stamp = _stamp(snapshot.timestamp)
    url = snapshot.url
    return [f"{_prefix(url, measurement, extra)} "
            f"{','.join([f'{k}={v}' for k, v in points[(measurement, extra)].items()])}{stamp}"
            for measurement, extra in sorted(points, key=_order)]


def _stamp(when: float) -> str:
    return f" {int(round(when * 1e9))}" if 0 <= when < _STAMP_LIMIT else ""


# What lines() decided for a target's samples from their metrics and labels
# alone, by target URL: a small server's snapshot has the same metrics with
# the same labels in the same order every cycle, and only the values change.
# A layout is used only for samples whose every metric and labels are equal
# to the ones it was made from (the test the _LABELLED memo's keys pass), and
# only while every field's value is written as the full way would write it
# (see _laid_out); anything else - a value out of range or of another type, a
# field that a later sample of the same key would then give - takes the full
# way. Bounded: cleared when full.
_LAYOUTS: Dict[str, _Layout] = {}
_LAYOUT_MAX = 1024
_NUMBERS = frozenset((int, float))
_INTS = frozenset((int,))


class _Layout:
    """The samples' metrics and labels; the samples that make a field, by
    how their value is written - integer fields whose values are ints,
    float fields whose values are ints or floats (their indexes and range
    limits), the rest (index, type, metric) -; the order of the written
    values in the lines, the lines' escaped field keys with "=" in that
    order, each line's prefix and field count, the Telegraf point's line
    (-1: none) and its field keys."""

    __slots__ = ("metrics", "labels", "ints", "ints_low", "ints_high", "floats",
                 "floats_low", "floats_high", "others", "order", "keys", "heads", "at",
                 "telegraf_keys")

    def __init__(self, url: str, samples: Sequence[Any]) -> None:
        """_lines()' decisions that do not depend on the values, made the
        same way."""
        plans, labelled = _PLANS, _LABELLED
        points: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], List[tuple]] = {}
        for index, sample in enumerate(samples):
            metric = sample.metric
            plan = plans.get(metric.name)
            if plan is None or plan[0] is not metric:
                plan = _plan(metric)
            _, spec, measurement, template, field, kind, most, point = plan
            if measurement is None:
                continue
            labels = sample.labels
            if labels or field is None:
                try:
                    shaped = labelled[(spec, labels)]
                except (KeyError, TypeError):
                    shaped = remembered(labelled, (spec, labels), labels, _MEMO_TEXT,
                                        _MEMO_MAX, _labelled, spec, template, labels)
                if shaped is None:
                    continue
                point, field = shaped
            fields = points.setdefault(point, [])
            if field not in [f for f, _ in fields]:  # a later sample of a field never shows
                fields.append((field, (index, kind, most, metric)))
        lines = sorted(points, key=_order)
        written = [entry for point in lines for _, entry in points[point]]
        ints = [e for e in written if e[1] is int]
        floats = [e for e in written if e[1] is float]
        others = [e for e in written if e[1] is not int and e[1] is not float]
        place = {id(e): n for n, e in enumerate(ints + floats + others)}
        self.metrics = tuple(s.metric for s in samples)
        self.labels = tuple(s.labels for s in samples)
        self.ints = [e[0] for e in ints]
        self.ints_low, self.ints_high = [-e[2] for e in ints], [e[2] for e in ints]
        self.floats = [e[0] for e in floats]
        self.floats_low, self.floats_high = [-e[2] for e in floats], [e[2] for e in floats]
        self.others = [(e[0], e[1], e[3]) for e in others]
        self.order = [place[id(e)] for e in written]
        self.keys = [f + "=" for point in lines for f, _ in points[point]]
        self.heads = [(_prefix(url, measurement, extra), len(points[(measurement, extra)]))
                      for measurement, extra in lines]
        telegraf = (TELEGRAF_MEASUREMENT, ())
        self.at = lines.index(telegraf) if telegraf in points else -1
        self.telegraf_keys = {f for f, _ in points.get(telegraf, ())}


_FULL: List[str] = []  # _laid_out: the layout is the samples', a value is not


def _laid_out(layout: _Layout, snapshot: Any) -> Optional[List[str]]:
    """lines() by the layout of the target's samples; None where it is not
    theirs, _FULL where a value takes the full way. An int within its field's
    range is written f"{value}i" in an integer field, a float or an int within
    range repr(float(value)) in a float field - what _lines() writes for them
    -, the rest by _field() after fits(); any other value, or one out of
    range, makes the whole snapshot take the full way."""
    values = laid_values(layout, snapshot.samples)
    if values is None:
        return None
    extra = snapshot.auto.telegraf_extra if snapshot.auto is not None else None
    if extra and layout.at < 0:
        return _FULL
    pick = values.__getitem__
    ints = list(map(pick, layout.ints))
    floats = list(map(pick, layout.floats))
    if not (set(map(type, ints)) <= _INTS and set(map(type, floats)) <= _NUMBERS
            and all(map(le, layout.ints_low, ints)) and all(map(le, ints, layout.ints_high))
            and all(map(le, layout.floats_low, floats))
            and all(map(le, floats, layout.floats_high))):
        return _FULL
    texts = list(map("{}i".format, ints))
    texts += map(repr, map(float, floats))
    for index, kind, metric in layout.others:
        value = values[index]
        text = _field(value, kind) if fits(metric, value) else None
        if text is None:
            return _FULL
        texts.append(text)
    pieces = list(map(add, layout.keys, map(texts.__getitem__, layout.order)))
    stamp = _stamp(snapshot.timestamp)
    out = []
    start = 0
    for line, (prefix, count) in enumerate(layout.heads):
        end = start + count
        fields = ",".join(pieces[start:end])
        if line == layout.at and extra:
            more: Dict[str, str] = {}
            for name, value in extra.items():
                text = _field(value, float)
                if text is not None:
                    key = _escaped(name)
                    if key not in layout.telegraf_keys:
                        more.setdefault(key, text)
            if more:
                fields += "," + ",".join([f"{k}={v}" for k, v in more.items()])
        out.append(f"{prefix} {fields}{stamp}")
        start = end
    return out


def render(snapshots: Sequence[Snapshot], settings: Optional[Settings] = None) -> str:
    """All targets' lines, one batch."""
    out: List[str] = []
    for snap in snapshots:
        out += lines(snap)
    return "\n".join(out) + "\n" if out else ""
