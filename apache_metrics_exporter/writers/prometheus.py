"""Prometheus text format for node_exporter's textfile collector (and --listen).

Write it with ``--output DIR/apache.prom``: the file is replaced atomically
through a temporary name that does not end in ``.prom``, so the collector never
reads half of it. No timestamps (the collector stamps the scrape). Names, TYPE
and HELP come from the catalogue (each metric's ``prom`` family and FAMILIES):
apache_exporter's names where it has the same figure, ``apache_*`` with base
units for the rest; ``--prometheus-naming base-units`` renames the families
whose apache_exporter names break Prometheus' base-unit rule.

Request durations (intervals.py) are histograms: ``_bucket`` (with ``le``),
``_sum`` and ``_count`` under one ``# TYPE ... histogram``, counting since the
exporter's previous reading of the target began (a counter reset for rate()
when there was none).

Valid by construction: values are integers within int64 or the shortest
repr() of a finite float (``1e+20``, never a 309-digit number), label values
are printable (a newline as ``\\n``, other control characters as ``\\xHH``
escapes), valid UTF-8 and at most MAX_TEXT characters, and each series
(family and labels) appears once: the first sample wins, which also settles
two balancer members or two targets that would share a name.

Virtual hosts (label ``vhost``, ``vhost_name``): label values carry any
UTF-8, so a name is written as it is unless it holds a character the escaping
shows as ``\\xHH`` (a control character other than newline, an undecodable
byte); such a name gets a ``_`` + 8 hex digit suffix (vhosts.py), so distinct
hosts stay distinct.
"""

from __future__ import annotations

import math
from math import isfinite
from operator import is_, le

from apache_metrics_exporter.catalogue import (
    HISTOGRAM,
    INT64_MAX,
    PROMETHEUS_SCOREBOARD,
    fits,
    limit,
    prom_family,
)
from apache_metrics_exporter.units import visible
from apache_metrics_exporter.vhosts import suffixed, written
from apache_metrics_exporter.writers import (
    MAX_TEXT,
    Settings,
    _keepable,
    laid_values,
    remembered,
)
from apache_metrics_exporter.writers.influx import target_tags

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Dict, List, Optional, Sequence, Set, Tuple

    from apache_metrics_exporter.catalogue import Metric
    from apache_metrics_exporter.collect.snapshot import Sample, Snapshot


_INT64_END = 2 ** 63  # _value: a whole float below it in magnitude is written as an int
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})


def _split(spec: str) -> Tuple[str, List[Tuple[str, str]]]:
    """``name{a="x",b="y"}`` -> (name, [(a, x), (b, y)])."""
    name, _, rest = spec.partition("{")
    labels = []
    for part in filter(None, rest.rstrip("}").split(",")):
        key, _, value = part.partition("=")
        labels.append((key, value.strip('"')))
    return name, labels


def _label_value(value: object) -> str:
    # A newline as the format's own \n; other control characters, line
    # separators and lone surrogates (not UTF-8) as \xHH escapes, like every
    # other text the exporter writes (units.visible).
    text = str(value)[:MAX_TEXT]
    if not text.isprintable():
        text = "\n".join(visible(part) for part in text.split("\n"))
    return text.translate(_ESCAPES)


def vhost_name(name: str) -> str:
    """A virtual host's label value before escaping: the name itself when
    _label_value keeps all of it, else its visible form with a digest suffix."""
    if len(name) <= MAX_TEXT and name.replace("\n", " ").isprintable():
        return name
    return suffixed(visible(name), name, MAX_TEXT)


def _value(number: float) -> Optional[str]:
    """``42``, ``0.5``, ``1e+20``; None for what the text format cannot carry."""
    if isinstance(number, int) and -INT64_MAX <= number <= INT64_MAX:
        return str(int(number))  # (int(): True is an int, but "True" is no value)
    try:
        value = float(number)
    except (OverflowError, TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    if value.is_integer() and abs(value) < 2 ** 63:
        return str(int(value))
    return repr(value)


def _bound(text: str) -> bool:
    """A histogram bucket's ``le``: a finite number or ``+Inf``."""
    if text == "+Inf":
        return True
    if not text or not set(text) <= set("0123456789.eE+-"):
        return False  # (float() would take "1_0" and " 1", Go's ParseFloat not)
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def help_text(help: str, unit: str) -> str:  # noqa: A002 - the HELP line's word
    """HELP: the description, then the unit of the name actually emitted."""
    return f"{help.rstrip('.')}. Unit: {unit}."


class _Series:
    """What a metric's lines take from the catalogue alone, worked out once per
    metric and naming: the family written, the escaped constant labels, the
    scale, the TYPE/HELP head (a scrape renders the same metrics every time),
    and what catalogue.fits checks of a plain number (its range)."""

    __slots__ = ("metric", "skip", "family", "labels", "scale", "head", "kind", "help",
                 "histogram", "scoreboard", "limit", "plain", "lead", "heading")

    def __init__(self, metric: Metric, base_units: bool) -> None:
        self.metric = metric
        self.skip = metric.prom is None  # not in this format
        family, labels = _split(metric.prom or "")
        fam = prom_family(metric)
        scale, unit = metric.prom_scale, fam.unit
        if base_units and fam.base:
            family, unit, factor = fam.base
            scale *= factor
        self.family = family
        self.labels = [f'{k}="{_label_value(v)}"' for k, v in labels]
        self.scale = scale
        self.histogram = fam.kind == HISTOGRAM
        # A histogram's _bucket, _sum and _count lines go under its one TYPE.
        self.head = fam.name if self.histogram else family
        self.kind = fam.kind
        self.help = help_text(fam.help, unit).translate(_HELP_ESCAPES)
        self.scoreboard = metric.name == "scoreboard"
        self.limit = limit(metric)
        # The series of a sample without labels: alone, and before a target's labels.
        self.plain = f"{family}{{{','.join(self.labels)}}}" if self.labels else family
        self.lead = f"{family}{{{''.join(x + ',' for x in self.labels)}"
        self.heading = f"# HELP {self.head} {self.help}\n# TYPE {self.head} {self.kind}"


# By naming (base units or not), then metric name; a metric not the one
# cached under its name (a test's own) replaces it, so this holds at most
# one entry per name and naming.
_SERIES: Dict[bool, Dict[str, _Series]] = {False: {}, True: {}}


def _series(metric: Metric, base_units: bool) -> _Series:
    kept = _SERIES[base_units]
    got = kept.get(metric.name)
    if got is not None and (got.metric is metric or got.metric == metric):
        return got
    how = kept[metric.name] = _Series(metric, base_units)
    return how


# The series text ('family{labels}') of a metric's labelled sample, by its
# _Series, labels and target labels: the same samples come every scrape, and
# escaping their labels again each time was a third of a render. None: no
# series (a histogram bucket whose bound is no number). Bounded: cleared when
# full, and only short labels are kept.
_NAMES: Dict[tuple, Optional[str]] = {}
_NAMES_MAX = 4096
_NAMES_TEXT = 512  # characters of label names and values, at most, of one kept entry


def _labelled(how: _Series, labels: Tuple[Tuple[str, str], ...],
              target: Tuple[str, ...]) -> Optional[str]:
    """The series text of a sample with labels (None: not written)."""
    if how.histogram and not all(_bound(v) for k, v in labels if k == "le"):
        return None  # a bucket bound must be a number (+Inf included)
    board = how.scoreboard
    parts = how.labels + [
        f'{k}="{_label_value(PROMETHEUS_SCOREBOARD.get(v, v) if board else v)}"'
        for k, v in labels]
    if target:
        parts += target
    return f"{how.family}{{{','.join(parts)}}}"


def _series_text(how: _Series, labels: Tuple[Tuple[str, str], ...], target: Tuple[str, ...],
                 tail: str, names: Dict[tuple, Optional[str]]) -> Optional[str]:
    """A sample's series (family and labels) as written, through the names
    memo; None where its labels fill no series (the sample is left out)."""
    if labels:
        key = (how, labels, target)
        try:
            return names[key]
        except (KeyError, TypeError):  # not kept yet, or labels that are no text
            return remembered(names, key, labels, _NAMES_TEXT, _NAMES_MAX,
                              _labelled, how, labels, target)
    return how.lead + tail if target else how.plain


def _number(value: object, how: _Series) -> Optional[str]:
    """A sample's value as render() writes it, None where render() leaves
    the sample out (out of the metric's range, or no number to write)."""
    vtype = type(value)
    if vtype is int or vtype is float:
        most = how.limit
        if not -most <= value <= most:  # type: ignore[operator]
            return None
    elif not fits(how.metric, value):
        return None
    return _value(value * how.scale)  # type: ignore[operator]


def render(snapshots: Sequence[Snapshot], settings: Optional[Settings] = None,
           extra: Sequence[Sample] = ()) -> str:
    """One text-format exposition for every target; ``extra`` samples belong to
    no target (the --listen endpoint's own health)."""
    base_units = Settings.of(settings).prometheus_naming == "base-units"
    many = len(snapshots) > 1
    families: Dict[str, List[str]] = {}
    seen: Set[str] = set()
    for snapshot in snapshots:
        key = (snapshot.url, base_units, many)
        layout = _LAYOUTS.get(key)
        got = _laid_out(layout, snapshot, families, seen) if layout is not None else None
        if got:
            continue
        samples = snapshot.samples
        chosen = written(samples, vhost_name, "prometheus")
        # One file, several Apaches: Telegraf's server/port tags tell them apart.
        target = tuple(f'{k}="{_label_value(v)}"'
                       for k, v in sorted(target_tags(snapshot.url).items(), reverse=True)
                       ) if many else ()
        if got is None and samples and len(chosen) == len(samples) \
                and all(map(is_, chosen, samples)):
            # (no name changed: written() handed back the very samples)
            made = _Layout.of(chosen, target, base_units)
            if made is not None:
                if len(_LAYOUTS) >= _LAYOUT_MAX:
                    _LAYOUTS.clear()
                _LAYOUTS[key] = made
        _full(chosen, target, base_units, families, seen)
    _full(extra, (), base_units, families, seen)
    return "".join(["\n".join(lines) + "\n" for lines in families.values()])


def _full(samples: Sequence[Sample], target: Tuple[str, ...], base_units: bool,
          families: Dict[str, List[str]], seen: Set[str]) -> None:
    """One target's samples (or the endpoint's own), the full way, into
    ``families`` (by TYPE name, its lines) past the series ``seen``."""
    names, kept = _NAMES, _SERIES[base_units]
    tail = ",".join(target) + "}"
    for sample in samples:
        metric = sample.metric
        how = kept.get(metric.name)
        if how is None or how.metric is not metric:
            how = _series(metric, base_units)
        if how.skip:
            continue
        value = sample.value
        vtype = type(value)
        if vtype is int or vtype is float:
            most = how.limit
            if not -most <= value <= most:  # catalogue.fits, for a plain number
                continue
        elif not fits(metric, value):
            continue
        series = _series_text(how, sample.labels, target, tail, names)
        if series is None:
            continue
        scaled = value * how.scale
        stype = type(scaled)
        # _value, without the call for a plain int or float
        if stype is int and -INT64_MAX <= scaled <= INT64_MAX:
            number: Optional[str] = str(scaled)
        elif stype is float and isfinite(scaled):
            number = str(int(scaled)) if scaled.is_integer() and abs(scaled) < _INT64_END \
                else repr(scaled)
        else:
            number = _value(scaled)
        if number is None or series in seen:
            continue
        seen.add(series)
        head = how.head
        lines = families.get(head)
        if lines is None:
            lines = families[head] = [how.heading]
        lines.append(f"{series} {number}")


# What render() decided for a target's samples from their metrics, labels and
# target labels alone, by target URL, naming and whether the render has
# several targets: a small server's snapshot has the same metrics with the
# same labels in the same order every cycle, and only the values change. A
# layout holds each series' text and TYPE name, from the first sample of each
# series only: it is used only for samples whose every metric and labels are
# equal to the ones it was made from, and only while every one of those first
# samples' values is written (in range, a number the format carries) - else
# a later sample of a series could be the one written, and the target takes
# the full way. Which families and series other targets (and the endpoint's
# own samples) already wrote is still checked per render, as the full way
# does. Bounded: cleared when full.
_LAYOUTS: Dict[Tuple[str, bool, bool], _Layout] = {}
_LAYOUT_MAX = 1024
_INTS = frozenset((int,))


class _Layout:
    """The samples' metrics and labels; the first sample of each series -
    those with an int value and a scale of int 1 when the layout was made
    (indexes, range limits within int64), then the rest (index, _Series) -;
    the series texts with a space, in the order of the samples, and the
    order of their values in the columns; the TYPE names and HELP/TYPE
    heads in first-written order with their series' positions."""

    __slots__ = ("metrics", "labels", "ints", "ints_low", "ints_high", "others", "order",
                 "series", "heads", "headings", "groups")

    @classmethod
    def of(cls, samples: Sequence[Sample], target: Tuple[str, ...],
           base_units: bool) -> Optional[_Layout]:
        """None where a label is no short text (the names memo's rule)."""
        if not all(_keepable(s.labels, _NAMES_TEXT) for s in samples):
            return None
        return cls(samples, target, base_units)

    def __init__(self, samples: Sequence[Sample], target: Tuple[str, ...],
                 base_units: bool) -> None:
        tail = ",".join(target) + "}"
        entries = []  # (index, series, _Series, int column)
        firsts: Set[str] = set()
        for index, sample in enumerate(samples):
            how = _series(sample.metric, base_units)
            if how.skip:
                continue
            series = _series_text(how, sample.labels, target, tail, _NAMES)
            if series is None:
                continue
            if series in firsts:
                continue  # never written while the first sample of its series is
            firsts.add(series)
            plain = type(sample.value) is int and type(how.scale) is int and how.scale == 1
            entries.append((index, series, how, plain))
        ints = [e for e in entries if e[3]]
        others = [e for e in entries if not e[3]]
        place = {id(e): n for n, e in enumerate(ints + others)}
        self.metrics = tuple(s.metric for s in samples)
        self.labels = tuple(s.labels for s in samples)
        self.ints = [e[0] for e in ints]
        self.ints_low = [-min(e[2].limit, INT64_MAX) for e in ints]
        self.ints_high = [min(e[2].limit, INT64_MAX) for e in ints]
        self.others = [(e[0], e[2]) for e in others]
        self.order = [place[id(e)] for e in entries]
        self.series = [e[1] for e in entries]
        groups: Dict[str, Tuple[str, List[int]]] = {}
        for n, e in enumerate(entries):
            groups.setdefault(e[2].head, (e[2].heading, []))[1].append(n)
        self.groups = [(head, heading, positions)
                       for head, (heading, positions) in groups.items()]
        self.heads = [e[2].head for e in entries]
        self.headings = [e[2].heading for e in entries]


def _laid_out(layout: _Layout, snapshot: Snapshot, families: Dict[str, List[str]],
              seen: Set[str]) -> Optional[bool]:
    """render() of one target by the layout of its samples, into ``families``
    past ``seen``: True when done; None where the layout is not theirs,
    False where a value takes the full way (nothing written then)."""
    values = laid_values(layout, snapshot.samples)
    if values is None:
        return None
    ints = list(map(values.__getitem__, layout.ints))
    if not (set(map(type, ints)) <= _INTS and all(map(le, layout.ints_low, ints))
            and all(map(le, ints, layout.ints_high))):
        return False
    texts = list(map(str, ints))
    for index, how in layout.others:
        number = _number(values[index], how)
        if number is None:
            return False
        texts.append(number)
    pieces = list(map(" ".join, zip(layout.series, map(texts.__getitem__, layout.order))))
    if not seen:  # the first target: every series and family is new
        seen.update(layout.series)
        for head, heading, positions in layout.groups:
            families[head] = [heading, *map(pieces.__getitem__, positions)]
        return True
    for series, head, heading, piece in zip(layout.series, layout.heads, layout.headings,
                                            pieces):
        if series in seen:
            continue
        seen.add(series)
        lines = families.get(head)
        if lines is None:
            lines = families[head] = [heading]
        lines.append(piece)
    return True
