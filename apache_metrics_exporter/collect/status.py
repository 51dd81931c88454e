"""Parsers for mod_status pages: the ``?auto`` text page and the HTML tables.

Works on every format from Apache 2.2 to 2.4.6x: bare lines, keys with spaces,
values with colons, ``%``/``K`` suffixes, floats without a leading zero, the
duplicate Busy/Idle lines of 2.4.35-2.4.57 (event MPM), and tables found by
their headings, never by position.

Every page is hostile until parsed: both parsers are total (each value is a
number in its metric's range or "not measured", nothing else raises but
FetchError for a page that is not a status page) and linear in time for any
input (searches that only move forward; no regular expression that can
backtrack over what a peer sent). A value left out because it is not a
plain ASCII number or is out of range gets one line in the page's warnings.
"""

from __future__ import annotations

import math
import re
from _collections_abc import Sequence as _Sequence  # collections.abc's, loaded by re: 0 ms
from itertools import compress
from operator import not_

from apache_metrics_exporter.catalogue import (
    BY_AUTO_KEY,
    BY_NAME,
    INFO_KEYS,
    INT64_MAX,
    PROXY_BY_FIELD,
    SCOREBOARD_STATES,
    fits,
)
from apache_metrics_exporter.errors import FetchError
from apache_metrics_exporter.records import NamedTuple
from apache_metrics_exporter.units import visible

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

    from apache_metrics_exporter.catalogue import Metric

# Indexes are bounded so that int() stays cheap and sorting cannot fail.
_PROXY_KEY = re.compile(r"ProxyBalancer\[(\d{1,9})\](?:Worker\[(\d{1,9})\])?(\w+)$", re.ASCII)
IDLE_MODES = frozenset("_I.")  # apache-manager's definition of an idle worker
MAX_WARNINGS = 10  # per page; the rest are counted in one more line
PID_MAX = 1 << 22  # Linux's PID_MAX_LIMIT: a larger "PID" is not a process
_FLOAT_CHARS = frozenset("0123456789+-.eE")
NOT_A_NUMBER = "is not a plain number"
OUT_OF_RANGE = "is out of the range the outputs can carry"
NOT_STATUS_PAGE = "not_status_page"  # the FetchError reason of a page that is not mod_status's


class AutoPage(NamedTuple):
    """What the ``?auto`` page says, already typed by the catalogue."""

    values: Dict[str, float]  # canonical metric name -> value
    info: Dict[str, str]  # text fields (ServerVersion, ...)
    scoreboard: str
    proxy: List[Tuple[Metric, Dict[str, str], float, str]]  # ..., the ?auto key
    extended: bool  # ExtendedStatus was on
    telegraf_extra: Dict[str, float] = {}  # Telegraf's fields for balancer members
    warnings: Sequence[str] = ()  # values left out, one line each
    left_out: FrozenSet[str] = frozenset()  # metrics on the page but left out


def _number(text: str, kind: type) -> Tuple[Optional[float], Optional[str]]:
    """``.0119726``, ``0.e+79``, ``42%``, ``123K`` as (number, None); (None,
    why) when it is not a plain ASCII number (``\u00b213``, ``nan``, ``1_0``)
    or not finite; (None, None) when empty."""
    text = text.strip().rstrip("%Kk").strip()
    if not text:
        return None, None
    if not text.isascii():
        return None, NOT_A_NUMBER
    if text.isdigit():
        if len(text.lstrip("0")) > 20:  # > int64 whatever the metric; int() stays cheap
            return None, OUT_OF_RANGE
        number = int(text)
        return (number if kind is int else float(number)), None
    if not _FLOAT_CHARS.issuperset(text):  # refuses "nan", "inf", "1_000", " 1 2"
        return None, NOT_A_NUMBER
    try:
        value = float(text)
    except ValueError:
        return None, NOT_A_NUMBER
    if not math.isfinite(value):
        return None, OUT_OF_RANGE
    return (int(value) if kind is int else value), None


MAX_EXTRA = 100  # fields passed through for keys the catalogue does not know
_EXTRA_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,99}", re.ASCII)  # how Apache names keys


def _telegraf_float(text: str) -> Optional[float]:
    """The value as Telegraf's ParseFloat takes it (no unit suffix), if finite."""
    return _float_or_none(text.strip())


class _Warnings(list):
    """A page's warnings: one line per value left out, at most MAX_WARNINGS
    lines and then one that counts the rest."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = visible(source)
        self.more = 0

    def add(self, text: str) -> None:
        if len(self) < MAX_WARNINGS:
            self.append(f"{self.source}: {text}")
        else:
            self.more += 1

    def value(self, key: str, why: str) -> None:
        self.add(f"{key} {why}; left out")

    def done(self) -> Tuple[str, ...]:
        if self.more:
            self.append(f"{self.source}: {self.more} more values left out or "
                        "duplicates ignored")
        return tuple(self)


# ?auto lines that gave a catalogue value in range, by their text: about two
# thirds of a page (versions, generations, worker counts, zeros) come back
# unchanged every cycle and are read once. A line means the same on any page,
# wherever it stands (a known key is never the bare first line), so the
# memo is shared; bounded in entries and line length.
_CLEAN_LINES: Dict[str, Tuple[str, Any]] = {}
_CLEAN_MAX = 512
_CLEAN_LINE = 120


def parse_auto(text: str, source: str = "the status page") -> AutoPage:
    """Parse the machine-readable page; raise FetchError if it is not one."""
    values: Dict[str, float] = {}
    info: Dict[str, str] = {}
    scoreboard: Optional[str] = None
    balancers: Dict[str, str] = {}
    members: Dict[Tuple[str, str], Dict[str, str]] = {}
    warnings = _Warnings(source)
    left_out = set()
    telegraf_extra: Dict[str, float] = {}
    clean = _CLEAN_LINES
    for n, raw in enumerate(text.splitlines()):
        known = clean.get(raw)
        if known is not None:  # a line read before: a catalogue value, in range
            name, number = known
            if name not in values:
                values[name] = number
                left_out.discard(name)
            continue
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            if n == 0:
                info["ServerName"] = line  # bare first line, 2.4.13+
            elif line == "TLSSessionCacheStatus":
                info[line] = "yes"
            continue
        key, value = key.strip(), value.strip()
        metric = BY_AUTO_KEY.get(key)
        if metric is not None:
            # 2.4.35-2.4.57 (event) repeat BusyWorkers/IdleWorkers with counts
            # from the process table; the first pair is the scoreboard's, which
            # is what 2.4.58+ prints alone, so the first one wins.
            if metric.name not in values:
                number, why = _number(value, metric.type)
                if number is not None and not fits(metric, number):
                    number, why = None, OUT_OF_RANGE
                if number is not None:
                    values[metric.name] = number
                    left_out.discard(metric.name)
                    if len(raw) <= _CLEAN_LINE:
                        if len(clean) >= _CLEAN_MAX:
                            clean.clear()
                        clean[raw] = (metric.name, number)
                elif why:
                    warnings.value(f"'{key}'", why)
                    left_out.add(metric.name)
        elif key == "Scoreboard":
            scoreboard = value
        elif key in INFO_KEYS:
            info[key] = value
        elif not key.startswith("ProxyBalancer["):
            # A key this version does not know: Telegraf passes every numeric
            # one through as a float field (spaces taken out of the name), so
            # a newer Apache's figure appears without a code change.
            name = key.replace(" ", "")
            number = _telegraf_float(value)
            if (number is not None and len(telegraf_extra) < MAX_EXTRA
                    and _EXTRA_KEY.fullmatch(name)):
                telegraf_extra.setdefault(name, number)
        else:
            m = _PROXY_KEY.match(key)
            if m:
                b, w, field = m.groups()
                if w is None:
                    if field == "Name":
                        balancers[b] = value
                else:
                    members.setdefault((b, w), {})[field] = value
    if scoreboard is None:
        if values:
            raise FetchError(f"{source} is incomplete: it has no Scoreboard line "
                             "(truncated answer, or a proxy cut it short)",
                             reason="bad_response")
        raise FetchError(f"{source} is not an Apache mod_status page "
                         "(no 'Scoreboard:' line); check --url", reason=NOT_STATUS_PAGE)
    proxy: List[Tuple[Metric, Dict[str, str], float, str]] = []
    seen = set()
    for (b, w), fields in sorted(members.items(), key=lambda i: (int(i[0][0]), int(i[0][1]))):
        labels = {"balancer": balancers.get(b, b), "worker": fields.get("Name", w)}
        # Two members of one balancer with the same name would be one series
        # twice: the first one is reported, as everywhere else.
        twice = (labels["balancer"], labels["worker"]) in seen
        seen.add((labels["balancer"], labels["worker"]))
        if twice:
            warnings.add(f"balancer member {visible(labels['worker'][:100])!r} of "
                         f"{visible(labels['balancer'][:100])!r} is listed twice; "
                         "only the first is reported")
        elif "Status" in fields:  # apache_exporter's status series: always 1
            proxy.append((BY_NAME["proxy_worker_status"],
                          dict(labels, status=fields["Status"].strip()), 1,
                          f"ProxyBalancer[{b}]Worker[{w}]Status"))
        for field, metric in PROXY_BY_FIELD.items():
            if field in fields:
                raw = f"ProxyBalancer[{b}]Worker[{w}]{field}"
                number, why = _number(fields[field], int)
                if number is not None and not fits(metric, number):
                    number, why = None, OUT_OF_RANGE
                if number is None:
                    if why:
                        warnings.value(raw, why)
                    continue
                if not twice:
                    proxy.append((metric, labels, number, raw))
                if fields[field].strip().isdigit():
                    # Telegraf parses these two as floats under the raw key.
                    telegraf_extra[raw] = float(number)
    extended = "total_accesses" in values
    return AutoPage(values, info, scoreboard, proxy, extended, telegraf_extra,
                    warnings.done(), frozenset(left_out))


def count_scoreboard(scoreboard: str) -> Dict[str, int]:
    """Slots per state name (all 11 states, zero included)."""
    return {name: scoreboard.count(char) for char, name in SCOREBOARD_STATES}


# ---------------------------------------------------------------------------
# HTML page


class WorkerRow:
    """One row of the worker table (one process on prefork, one thread otherwise).

    Only PID, mode and SS are read up front (every row needs them); the other
    cells are turned into text when asked for, which keeps a 4096-row table
    cheap. A row of the fast reader is made only when a WorkerTable is
    indexed or iterated: its table (``_cells``) and its place in it
    (``_raw``); its PID, mode and SS are the table's columns (setting one
    sets the column), and a column is turned into text for every row on the
    first such question. A row keeps its table alive: drop snapshots after
    use.
    """

    __slots__ = ("pid", "mode", "ss", "_cells", "_cols", "_text", "_raw")
    _cells: Any  # a fast-reader row: its WorkerTable
    _raw: Any  # a fast-reader row: its index in the table

    def __init__(self, cells: Sequence[Any], cols: Dict[str, int],
                 text: Callable[[Any], str]) -> None:
        self._cells = cells
        self._cols = cols
        self._text = text
        pid = _int_or_none(self.cell("pid"))
        self.pid = pid if pid is not None and 0 < pid < PID_MAX else None
        self.mode = self.cell("m")
        self.ss = _int_or_none(self.cell("ss"))

    def cell(self, heading: str) -> str:
        """The stripped text under a (normalised) heading, '' if the column is absent."""
        i = self._cols.get(heading)
        return "" if i is None else self._text(self._cells[i]).strip()

    def plain(self, heading: str) -> str:
        """cell(), faster for a cell of plain ASCII text (the numbers the
        interval figures read from every row); anything else goes to cell()."""
        i = self._cols.get(heading)
        if i is None:
            return ""
        raw = self._cells[i]
        if type(raw) is bytes:
            text = raw[raw.rfind(b">") + 1:].strip()
            if not text and raw.endswith(b"</b>"):  # Srv: <td><b>0-0</b>
                text = raw[raw.rfind(b"<b>") + 3:-4].strip()
            if text and text.isascii() and b"&" not in text and b"<" not in text:
                return text.decode("ascii")
        return self.cell(heading)

    def has(self, heading: str) -> bool:
        """Whether the table has this (normalised) column at all."""
        return heading in self._cols

    @property
    def srv(self) -> str:
        return self.cell("srv")

    @property
    def cpu(self) -> Optional[float]:
        return _float_or_none(self.cell("cpu"))

    @property
    def req(self) -> Optional[int]:
        return _int_or_none(self.cell("req"))

    @property
    def dur(self) -> Optional[int]:
        return _int_or_none(self.cell("dur"))

    @property
    def client(self) -> str:
        return self.cell("client")

    @property
    def protocol(self) -> str:
        return self.cell("protocol")

    @property
    def vhost(self) -> str:
        return self.cell("vhost")

    @property
    def request(self) -> str:
        """The request line; '' where mod_status shows ``NULL``."""
        value = self.cell("request")
        return "" if value == "NULL" else value

    @property
    def is_active(self) -> bool:
        """Serving a request (apache-manager: not ``_``, ``I`` or ``.``)."""
        return self.mode not in IDLE_MODES

    def __repr__(self) -> str:
        return (f"WorkerRow(pid={self.pid}, mode={self.mode!r}, ss={self.ss}, "
                f"request={self.request!r})")


class EventProcess(NamedTuple):
    """One row of the event MPM's per-process table."""

    slot: int
    pid: Optional[int]
    stopping: str
    accepting: Optional[bool]
    cells: Dict[str, str]


class HtmlPage(NamedTuple):
    """The tables of the HTML page; ``workers`` is None without ExtendedStatus
    (a WorkerTable from the fast reader, else a list of rows)."""

    workers: Optional[Sequence[WorkerRow]]
    event_processes: Optional[List[EventProcess]]
    warnings: Sequence[str] = ()  # values left out, one line each
    uptime: Optional[int] = None  # "Server uptime:" of the page itself, seconds


def _int_or_none(text: Optional[str]) -> Optional[int]:
    """An int64 written in ASCII digits (``-`` allowed), else None."""
    if text and text.isdigit() and text.isascii() and len(text) < 19:
        return int(text)  # the usual case, first
    if not text or not text.isascii():
        return None
    digits = text[1:] if text[0] == "-" else text
    if not digits.isdigit() or len(digits) > 19:  # (int() refuses 4300+ digits)
        return None
    value = int(text)
    return value if -INT64_MAX <= value <= INT64_MAX else None


def _out_of_range(text: str, limit: int = INT64_MAX) -> bool:
    """ASCII digits of a number beyond the limit (_int_or_none's None for its size)."""
    digits = text[1:] if text[:1] == "-" else text
    if not text.isascii() or not digits.isdigit():
        return False
    value = _int_or_none(text)
    return value is None or abs(value) >= limit


def _float_or_none(text: Optional[str]) -> Optional[float]:
    """A finite number in ASCII (``0.01``, ``-1``), else None."""
    if not text or not text.isascii() or not _FLOAT_CHARS.issuperset(text):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def _norm(text: str) -> str:
    return _NOT_ALNUM.sub(" ", text.lower()).strip()


class _Table:
    """A table as both HTML readers deliver it: per row, the heading cells as
    (text, colspan) and the raw data cells; ``text`` turns a raw cell into text.

    The byte-search reader splits a table into rows only when asked (most
    tables are looked at for their first row only), and may bring the worker
    rows already read (``workers``)."""

    __slots__ = ("_rows", "_data", "_start", "_end", "_names", "text", "workers")

    def __init__(self, rows: Optional[List[Tuple[List[Tuple[str, int]], List[Any]]]],
                 text: Callable[[Any], str], data: bytes = b"", start: int = 0,
                 end: int = 0, names: Optional[List[str]] = None,
                 workers: Optional[_FastRows] = None) -> None:
        self._rows = rows
        self._data, self._start, self._end = data, start, end  # the table's bytes
        self._names = names
        self.text = text
        self.workers = workers

    @property
    def rows(self) -> List[Tuple[List[Tuple[str, int]], List[Any]]]:
        if self._rows is None:
            self._rows = _segment_rows(self._data[self._start:self._end])
        return self._rows

    def names(self) -> Optional[List[str]]:
        """The normalised headings of the first row; None when there is no row."""
        if self._names is None:
            if self._rows is None:
                self._names = _first_names(self._data, self._start, self._end)
            elif self._rows:
                self._names = [_norm(text) for text, _span in self._rows[0][0]]
        return self._names


# The fast reader: Apache writes its status tables with a fixed, simple markup
# (lower-case tags, every </td> and </tr> present), which plain byte searches
# split faster than any parser can build a tree. Every search moves forward
# (str.find/split, or a pattern that cannot backtrack), so a page of any shape
# is read in time linear in its size.
_TH = re.compile(rb"<th\b([^>]*)>(.*?)</th\s*>", re.S)  # only where it cannot backtrack
_TH_END = re.compile(rb"\s*>")  # what may follow "</th"
_COLSPAN = re.compile(rb"colspan\s*=\s*[\"']?(\d+)", re.I)  # each try stops at a non-space
_LONG_CHARREF = re.compile(r"&#[0-9]{12,};?")  # html.unescape's int() refuses 4300+ digits
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _span(digits: Any) -> int:
    """A colspan from the digits that start its value, as browsers read it
    (none: 1; at most 1000)."""
    if isinstance(digits, bytes):
        digits = digits.decode("latin-1")
    end = 0
    while end < len(digits) and end < 40 and "0" <= digits[end] <= "9":
        end += 1
    if not end:
        return 1
    number = digits[:end].lstrip("0")
    return min(int(number[:5] or "0"), 1000) if end < 40 else 1000


def _strip_tags(raw: bytes) -> bytes:
    """Markup dropped: from each ``<`` to the next ``>`` (a ``<`` with no ``>``
    after it stays, as text). One split, so linear for any input."""
    parts = raw.split(b">")
    out = []
    for part in parts[:-1]:
        i = part.find(b"<")
        out.append(part + b">" if i < 0 else part[:i])
    out.append(parts[-1])
    return b"".join(out)


def _raw_text(raw: bytes) -> str:
    """Text of raw cell content: tags dropped, entities decoded (ISO-8859-1, as
    mod_status declares its pages)."""
    if b"<" in raw:
        raw = _strip_tags(raw)
    text = raw.decode("latin-1")
    if "&nbsp;" in text:
        # The entity of the event MPM's process table (its Sum row), decoded
        # as html.unescape does: importing html for it cost 1.5 ms of a
        # one-shot run.
        text = text.replace("&nbsp;", "\xa0")
    if "&" in text:
        if text.count("&") == text.count("&amp;"):
            # Only "&amp;" (a query string's "&" in the Request column, on
            # every such row): what html.unescape makes of it, without its
            # regex substitution per cell.
            return text.replace("&amp;", "&")
        import html  # only for the rare cell with another entity

        if "&#" in text:
            text = _LONG_CHARREF.sub("\ufffd", text)
        text = html.unescape(text)
    return text


def _raw_cell(piece: bytes) -> str:
    """Text of one ``...<td attrs>content`` piece (the row split at ``</td>``)."""
    start = piece.rfind(b"<td")
    raw = piece[piece.find(b">", start) + 1:]
    if b"<" in raw or b"&" in raw:
        return _raw_text(raw)
    return raw.decode("latin-1")  # plain text, most cells


def _headings(body: bytes) -> List[Tuple[str, int]]:
    r"""(text, colspan) of each ``<th attrs>text</th>`` of a row, in order.

    What the pattern ``<th\b([^>]*)>(.*?)</th\s*>`` finds, but by forward
    searches: that pattern takes quadratic time on unclosed ``<th>`` (each
    one scans to the end of the page), these stop at the first one that
    cannot close.
    """
    last, last_open = body.rfind(b"</th"), body.rfind(b"<th")
    if last_open < 0:
        return []
    if 0 <= body.find(b">", last_open) < last and _TH_END.match(body, last + 4):
        # Every <th ...> ends before a complete </th>: each try of the pattern
        # succeeds at the nearest one and consumes what it scanned, so the
        # pattern stays linear (Apache's pages; a little faster than below).
        return [(_raw_text(text), _span(m.group(1)) if (m := _COLSPAN.search(attrs)) else 1)
                for attrs, text in _TH.findall(body)]
    out: List[Tuple[str, int]] = []
    pos = 0
    size = len(body)
    while True:
        start = body.find(b"<th", pos)
        if start < 0:
            return out
        attrs_at = start + 3
        if attrs_at < size and body[attrs_at] in _WORD:  # <thead>, <th2>: not a heading
            pos = attrs_at
            continue
        close = body.find(b">", attrs_at)
        if close < 0:
            return out  # no later <th can be complete either
        search = close + 1
        while True:
            end = body.find(b"</th", search)
            if end < 0:
                return out
            rest = _TH_END.match(body, end + 4)
            if rest:
                break
            search = end + 4
        m = _COLSPAN.search(body, attrs_at, close)
        out.append((_raw_text(body[close + 1:end]), _span(m.group(1)) if m else 1))
        pos = rest.end()


def _fast_tables(data: bytes) -> Optional[List[_Table]]:
    """Tables read by byte searches, or None when a table we read is not in
    Apache's well-formed markup (end tags left out, upper-case tags, ...)."""
    tables: List[_Table] = []
    pos = 0
    unread = [0]  # (from, to) pairs of the parts not proven free of "<T"
    last = data.rfind(b"</table>") + 8  # no row can be found past it
    while True:
        start = data.find(b"<table", pos)
        if start < 0:
            break
        table, end, names = _worker_table(data, start, last)
        if table is not None:
            unread.append(table.workers.at)  # type: ignore[union-attr]
            unread.append(end)
        else:
            end = data.find(b"</table>", start)
            if end < 0:
                return None
            table = _fast_table(data, start, end, names)
            if table is None:
                return None
        pos = end + 8
        if table is not _SKIPPED:
            tables.append(table)
    # Upper-case tags anywhere: not Apache's markup. The rows read by
    # _fast_rows hold no "<T" (every "<" there starts a tag they expect).
    unread.append(len(data))
    for i in range(0, len(unread), 2):
        if data.find(b"<T", unread[i], unread[i + 1]) >= 0 and (
                data.find(b"<TABLE", unread[i], unread[i + 1]) >= 0
                or data.find(b"<Table", unread[i], unread[i + 1]) >= 0):
            return None
    return tables


_SKIPPED = _Table([], _raw_cell)  # a table left out (see _fast_table)


def _worker_table(data: bytes, start: int, last: int
                  ) -> Tuple[Optional[_Table], int, Optional[List[str]]]:
    """The table from ``<table`` at start if it is a worker table whose rows
    _fast_rows reads, and where it ends (its ``</table>``); else (None, -1)
    and, when they are what _first_names would find, the names of its first
    row's headings."""
    head_end = data.find(b"</tr>", start, last)
    if head_end < 0 or data.find(b"</table>", start, head_end) >= 0:
        return None, -1, None  # (that </tr> is not in this table)
    at = data.find(b"<tr", start, head_end)
    if at < 0:
        return None, -1, None
    names, layout = _opening(data, start, at, head_end)
    if layout is None:
        return None, -1, names
    workers = _fast_rows(data, head_end + 5, last, layout)
    if workers is None:
        return None, -1, names
    end = workers.end
    return _Table(None, _raw_cell, data, start, end, names, workers), end, names


_OPENINGS: Dict[bytes, Tuple[List[str], Optional[_Layout]]] = {}


def _opening(data: bytes, start: int, at: int, head_end: int
             ) -> Tuple[List[str], Optional[_Layout]]:
    """The names of the headings of a table's first row (from its ``<tr`` at
    ``at`` to its ``</tr>`` at head_end), and the _Layout of its rows when
    they name a worker table and the table is balanced up to there: the
    rows _fast_rows reads hold as many <tr as </tr>, <td as </td> and no
    <th or </th>, so the table is then as balanced as its first row (see
    _fast_table). Kept for the next page: a server begins its tables with
    the same bytes every time."""
    key = data[start:head_end]
    known = _OPENINGS.get(key)
    if known is None:
        names = _header(data[at:head_end])[1]
        layout = None
        if "pid" in names and "m" in names and "ss" in names \
                and _balanced(data[start:head_end + 5]):
            layout = _Layout(names)
        known = names, layout
        if len(key) <= 4096:
            if len(_OPENINGS) >= _CACHED:
                _OPENINGS.clear()
            _OPENINGS[key] = known
    return known


def _fast_table(data: bytes, start: int, end: int,
                names: Optional[List[str]] = None) -> Optional[_Table]:
    """The table from ``<table`` at start to ``</table>`` at end: None when
    the page must go to lxml, _SKIPPED for a table left out; ``names``, if
    known, those of its first row."""
    segment = data[start:end]
    if not _balanced(segment):
        # Apache's own balancer tables leave out </tr>: harmless unless
        # this may be a table we read (a PID column, or headings that
        # cannot even be read this way).
        if segment.count(b"<th") != segment.count(b"</th>") \
                or "pid" in {_norm(text) for text, _span in _headings(segment)}:
            return None
        return _SKIPPED
    return _Table(None, _raw_cell, segment, 0, end - start, names)


def _balanced(segment: bytes) -> bool:
    return segment.count(b"<tr") == segment.count(b"</tr>") \
        and segment.count(b"<td") == segment.count(b"</td>") \
        and segment.count(b"<th") == segment.count(b"</th>")


def _segment_rows(segment: bytes) -> List[Tuple[List[Tuple[str, int]], List[Any]]]:
    """Per row of a table: its headings and its raw cells (``...<td>text``)."""
    rows = []
    for chunk in segment.split(b"</tr>")[:-1]:
        at = chunk.find(b"<tr")
        if at < 0:
            continue
        body = chunk[at:]
        heads = _header(body)[0] if b"<th" in body else []
        rows.append((heads, body.split(b"</td>")[:-1]))
    return rows


def _first_names(data: bytes, pos: int, stop: int) -> Optional[List[str]]:
    """The normalised headings of the first row of _segment_rows(data[pos:stop]),
    without splitting the rest; None when there is no row."""
    while True:
        end = data.find(b"</tr>", pos, stop)
        if end < 0:
            return None
        at = data.find(b"<tr", pos, end)
        if at >= 0:
            return _header(data[at:end])[1]
        pos = end + 5


_HEADERS: Dict[bytes, Tuple[List[Tuple[str, int]], List[str]]] = {}


def _header(body: bytes) -> Tuple[List[Tuple[str, int]], List[str]]:
    """The headings of one row and their normalised names, kept for the next
    page: a server writes the same header rows every time."""
    known = _HEADERS.get(body)
    if known is None:
        heads = _headings(body) if b"<th" in body else []
        known = heads, [_norm(text) for text, _span in heads]
        if len(body) <= 4096:
            if len(_HEADERS) >= _CACHED:
                _HEADERS.clear()
            _HEADERS[body] = known
    return known


class _FastRows(NamedTuple):
    """Worker rows read by _fast_rows, with what parse_html checks on them."""

    rows: WorkerTable
    clean: bool  # no PID or SS left out for being out of range
    max_ss: int  # the largest SS (0 if none)
    at: int  # where the rows begin
    end: int  # where they end: the table's </table>


# A worker row in Apache's own markup, as one pattern: "<tr>", the cells
# "<td attrs>content</td>" (content without "<" but for the <b> around the
# server number and the mode) and any text up to the next row. Every part
# stops at the first "<" it does not expect, so a try never passes the next
# "<" out of place: the scan is linear, and what it accepts has no other tag.
# (Possessive: what follows each run starts with "<", so giving back can
# never help; not keeping the places to give back to is a third faster.)
_PLAIN = rb"[^<]*+"
_BOLD = rb"<b>[^<]*+</b>"  # the server number, always bold
_MODE = rb"(?:<b>[^<]*+</b>|)[^<]*+"  # bold when the worker is busy
_ANY = rb"(?:<b>[^<]*+</b>)?[^<]*+"
_PATTERNS: Dict[Tuple[Any, ...], Any] = {}
_CACHED = 64  # header rows, row patterns and layouts kept between pages


def _row_pattern(tags: Tuple[bytes, ...], kinds: Tuple[bytes, ...],
                 wanted: Tuple[int, ...], between: bytes) -> Any:
    """The pattern of a row whose cells open with ``tags`` (a literal, or a
    pattern of any <td ...>) and hold ``kinds`` of content, capturing the
    contents of the ``wanted`` cells (in column order); ``between`` is what
    may come between cells."""
    key = (tags, kinds, wanted, between)
    pattern = _PATTERNS.get(key)
    if pattern is None:
        cells = []
        for i, (tag, kind) in enumerate(zip(tags, kinds)):
            cells.append(tag + (b"(%s)" % kind if i in wanted else kind) + b"</td>")
        # ... or, at the first "<" that begins no row, everything from there
        # on: the </table> that ends the rows (the last group) or anything
        # else. Every "<" up to there is a match, so the rows are back to
        # back, and what follows them is one last match, however long.
        pattern = re.compile(b"<tr>" + between.join(cells)
                             + b"</tr>[^<]*+|(</table>(?s:.*+))|<(?s:.*+)")
        if len(_PATTERNS) >= _CACHED:
            _PATTERNS.clear()
        _PATTERNS[key] = pattern
    return pattern


class _Layout:
    """What the fast reader needs for a worker table of given headings: the
    columns, the row class, the pattern of its rows learnt from a page and
    what that pattern proves of each column (``plain``, see _Cells)."""

    __slots__ = ("cols", "width", "wanted", "pid", "mode", "ss", "row", "pattern",
                 "plain", "_learnt")

    def __init__(self, names: List[str]) -> None:
        cols = self.cols = {h: i for i, h in enumerate(names)}  # (the last of twins)
        self.width = len(names)  # cells per row, twins counted
        wanted = self.wanted = tuple(sorted({cols["pid"], cols["m"], cols["ss"]}))
        # where each one is among the columns _rows_found returns
        self.pid, self.mode, self.ss = (wanted.index(cols[h]) for h in ("pid", "m", "ss"))
        # Rows of one table share their columns and cell reader: as class
        # attributes they cost nothing per row. A row is its table's cells
        # (``_cells``, a _Cells) and its place among them (``_raw``).
        self.row = type("WorkerRow", (WorkerRow,), {
            "__slots__": (), "_cols": cols, "cell": _table_cell, "plain": _table_cell,
            **_ROW_KEYS})
        self.pattern: Any = None
        self.plain: Optional[Tuple[Optional[bytes], ...]] = None
        self._learnt: Optional[Tuple[Optional[bytes], ...]] = None

    def learn(self, data: bytes, first: int, last: int) -> Any:
        """The pattern of rows shaped like the first one from ``first`` (the
        tag opening each cell, a bold server number), if it is Apache's."""
        stop = data.find(b"</tr>", first, last)
        if stop < 0 or not data.startswith(b"<tr>", first):
            return None
        pieces = data[first + 4:stop].split(b"</td>")
        if len(pieces) != self.width + 1 or pieces[-1]:
            return None
        tags, kinds = [], []
        for i, piece in enumerate(pieces[:-1]):
            close = piece.find(b">")
            if not piece.startswith(b"<td") or close < 0 or b"<" in piece[1:close]:
                return None  # text between cells (Apache 2.2): the loose pattern
            tags.append(piece[:close + 1])
            content = piece[close + 1:]
            kinds.append(_MODE if i == self.cols["m"] else
                         _BOLD if content.startswith(b"<b>") and content.endswith(b"</b>")
                         else _PLAIN)
        # What each cell of a row this pattern finds is: its tag and plain
        # text, or (b"") bold text; None: read cell by cell.
        self._learnt = tuple(tag if kind is _PLAIN and i else b"" if kind is _BOLD else None
                             for i, (tag, kind) in enumerate(zip(tags, kinds)))
        return _row_pattern(tuple(map(re.escape, tags)), tuple(kinds), self.wanted, b"")


_SEP = b"\x00"  # between the cells of a column joined (never in a table read so)


class _Cells:
    """The raw cells of a worker table's rows (``...<td attrs>content`` pieces,
    row after row, ``width`` per row: the rows' bytes split at "</td>" when
    first asked for), a column turned into text for every row at once: the
    collector reads the same few columns of every row (and the interval
    figures four of them), the rest are never read."""

    __slots__ = ("_data", "_end", "_flat", "width", "count", "tags", "_columns")

    def __init__(self, data: bytes, end: int, width: int, count: int,
                 tags: Optional[Tuple[Optional[bytes], ...]] = None) -> None:
        self._data, self._end = data, end  # the rows: data[:end]
        self._flat: Optional[List[bytes]] = None
        self.width, self.count = width, count
        self.tags = tags  # per column, what the row pattern proved (_Layout.learn)
        self._columns: Dict[int, List[str]] = {}

    def _pieces(self) -> List[bytes]:
        """Every cell's raw piece, row after row (split when first asked for)."""
        flat = self._flat
        if flat is None:
            region = self._data[:self._end]
            flat = self._flat = region.split(b"</td>")
            if _SEP in region:
                self.tags = None
            self._data = b""
        return flat

    def text(self, i: int, row: int) -> str:
        """The stripped text of column ``i`` of one row: from the column if it
        has been read, else from that cell alone (a cycle asks for the
        Request of a few rows: the longest request, its own requests; the
        whole column of a big table costs 70 µs per 1,000 rows)."""
        texts = self._columns.get(i)
        if texts is not None:
            return texts[row]
        return _CELLS[self._pieces()[row * self.width + i]]

    def column(self, i: int) -> List[str]:
        """The stripped text of column ``i`` of every row (as _raw_cell reads it)."""
        texts = self._columns.get(i)
        if texts is not None:
            return texts
        flat = self._pieces()
        pieces = flat[i:self.count * self.width:self.width]
        tag = self.tags[i] if self.tags else None
        if tag is None:
            texts = list(map(_CELLS.__getitem__, pieces))
        else:
            # Each piece is the tag and text without "<" (b"": text in the
            # one "<b>...</b>" that ends the piece): one decode and one split
            # for the whole column; a cell with an entity on its own.
            joined = _SEP.join(pieces)
            if tag:
                whole = joined.decode("latin-1")
                if b"&" in joined and b"&" not in tag \
                        and whole.count("&") == whole.count("&amp;"):
                    # Every "&" of the column begins "&amp;" (a query string's
                    # "&" in the Request column): decoded at once (no "&amp;"
                    # can reach into the separators, which hold "\x00").
                    whole = whole.replace("&amp;", "&")
                    joined = b""  # (nothing left to decode below)
                texts = whole.split("\x00" + tag.decode("latin-1"))
                texts[0] = texts[0][len(tag):]
            else:
                texts = joined[:-4].decode("latin-1").replace("</b>\x00", "<b>") \
                    .split("<b>")[1::2]
            texts = list(map(str.strip, texts))
            if b"&" in joined:
                # A text whose every "&" begins "&amp;" is decoded as it is
                # (stripping first changes nothing: "&" is no space); any
                # other entity is read from its piece.
                texts = [text if "&" not in text else text.replace("&amp;", "&")
                         if text.count("&") == text.count("&amp;") else _raw_cell(piece).strip()
                         for piece, text in zip(pieces, texts)]
        self._columns[i] = texts
        return texts


def _table_cell(row: WorkerRow, heading: str) -> str:
    """WorkerRow.cell of a fast-reader row: its cell of the table's column."""
    i = row._cols.get(heading)
    return "" if i is None else row._cells.cells.column(i)[row._raw]


class WorkerTable(_Sequence):
    """The worker rows of the fast reader, kept as columns: PIDs, modes and
    SS converted (``pids``, ``modes``, ``ss``), the other columns turned into
    text for every row when first asked for (``column``). A cycle reads
    columns; a WorkerRow is made only when the table is indexed or iterated
    (the reaper, the text writer), so a 4,096-row table costs no 4,096
    objects. Behaves as a read-only list of rows: len, index, slice, iterate.
    Setting a row's PID, mode or SS sets the column (forget_impossible_ss)."""

    __slots__ = ("pids", "modes", "ss", "cells", "_row", "_cols")

    def __init__(self, pids: List[Optional[int]], modes: List[str],
                 ss: List[Optional[int]], cells: _Cells, layout: _Layout) -> None:
        self.pids, self.modes, self.ss = pids, modes, ss
        self.cells = cells
        self._row = layout.row
        self._cols = layout.cols

    def __len__(self) -> int:
        return len(self.pids)

    def _make(self, i: int) -> WorkerRow:
        row: WorkerRow = object.__new__(self._row)
        row._cells = self
        row._raw = i
        return row

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return list(map(self._make, range(len(self.pids))[i]))
        return self._make(range(len(self.pids))[i])  # (IndexError, negative indexes)

    def __iter__(self) -> Any:
        return map(self._make, range(len(self.pids)))

    def has(self, heading: str) -> bool:
        """Whether the table has this (normalised) column at all."""
        return heading in self._cols

    def column(self, heading: str) -> List[str]:
        """The stripped text under a heading for every row ('' if absent)."""
        i = self._cols.get(heading)
        return [""] * len(self.pids) if i is None else self.cells.column(i)

    def cell(self, heading: str, row: int) -> str:
        """The stripped text under a heading in one row ('' if absent), without
        reading the whole column (_Cells.text). ``row``: 0 to len - 1."""
        if not 0 <= row < len(self.pids):
            raise IndexError(f"row {row} of a table of {len(self.pids)}")
        i = self._cols.get(heading)
        return "" if i is None else self.cells.text(i, row)

    def __repr__(self) -> str:
        return f"<WorkerTable of {len(self.pids)} rows>"


def _key_column(name: str) -> Any:
    """A fast-reader row's PID, mode or SS: its place in its table's column
    ``name`` (set: the column's value changes)."""

    def get(row: Any) -> Any:
        return getattr(row._cells, name)[row._raw]

    def put(row: Any, value: Any) -> None:
        getattr(row._cells, name)[row._raw] = value

    return property(get, put)


_ROW_KEYS = {"pid": _key_column("pids"), "mode": _key_column("modes"),
             "ss": _key_column("ss")}


def columns(workers: Sequence[WorkerRow], headings: Sequence[str]) -> List[List[str]]:
    """The text of these columns for every row, in row order: read in bulk
    when ``workers`` is a WorkerTable, else row by row ('' where a column is
    absent)."""
    if isinstance(workers, WorkerTable):
        return [workers.column(h) for h in headings]
    return [[row.cell(h) for row in workers] for h in headings]


def rows_in(modes: Sequence[str], mode: str) -> List[int]:
    """Indexes of the rows in this mode, in order (a column's worth of work
    in C: a big table's rows are never looped over in Python)."""
    return list(compress(range(len(modes)), map(mode.__eq__, modes)))


def busy_rows(modes: Sequence[str]) -> List[int]:
    """Indexes of the busy rows (apache-manager's: mode not in IDLE_MODES), in order."""
    return list(compress(range(len(modes)), map(not_, map(IDLE_MODES.__contains__, modes))))


def cell(workers: Sequence[WorkerRow], heading: str, row: int) -> str:
    """The text of one row's cell ('' where the column is absent): of that
    cell alone when ``workers`` is a WorkerTable. ``row``: 0 to len - 1."""
    if isinstance(workers, WorkerTable):
        return workers.cell(heading, row)
    return workers[row].cell(heading)


def key_columns(workers: Sequence[WorkerRow]
                ) -> Tuple[List[Optional[int]], List[str], List[Optional[int]]]:
    """PIDs, modes and SS of every row, in row order: the table's own lists
    for a WorkerTable (read them, do not change them), else read row by row."""
    if isinstance(workers, WorkerTable):
        return workers.pids, workers.modes, workers.ss
    return [w.pid for w in workers], [w.mode for w in workers], [w.ss for w in workers]


def has_column(workers: Sequence[WorkerRow], heading: str) -> bool:
    """Whether the rows have this (normalised) column (False without rows)."""
    if isinstance(workers, WorkerTable):
        return bool(workers.pids) and workers.has(heading)
    return bool(workers) and workers[0].has(heading)


def _rows_found(data: bytes, first: int, last: int,
                layout: _Layout) -> Optional[Tuple[List[Any], bytes, int, Any]]:
    """The wanted columns of the rows from ``first``, if the first "<" that
    begins no row there begins a ``</table>``: with the pattern learnt
    before, else one learnt from this page, else the loose one (any <td ...>,
    anything bold, text between cells); the rows' bytes (from ``first``,
    with what follows them), where they end in those bytes, and what the
    pattern proved of each column (_Layout.plain, None when loose)."""
    region = data[first:last]  # (Pattern.split has no pos and endpos)
    learnt = layout.pattern
    width = layout.width
    step = 5  # per match: the three wanted groups (pid, m, ss), the rest, the text after it
    for attempt in range(3):
        if attempt == 0:
            pattern = learnt
        elif attempt == 1:
            pattern = layout.learn(data, first, last)
            if pattern is learnt:
                continue
        else:
            pattern = _row_pattern((rb"<td[^<>]*>",) * width, (_ANY,) * width,
                                   layout.wanted, _PLAIN)
        if pattern is None:
            continue
        # The region begins with "<" and a row's last part takes the text
        # up to the next one, so the matches are back to back: rows, then
        # one match of the rest from the first "<" that begins no row. When
        # that is the </table> match (its group not None), the rows fill
        # everything up to that </table>. split, not findall: a flat list,
        # no tuple per row for the garbage collector to visit.
        parts = pattern.split(region)
        rest = parts[-2]
        if rest is not None:
            stop = (len(parts) // step - 1) * step  # the rows' groups end there
            if attempt == 1:
                layout.pattern, layout.plain = pattern, layout._learnt
            return ([parts[1:stop:step], parts[2:stop:step], parts[3:stop:step]], region,
                    len(region) - len(rest), layout.plain if attempt < 2 else None)
    return None


class _Memo(dict):
    """Values of raw cells, each converted once and kept for the next pages
    (the same few modes, PIDs and counts come back every time), at most
    _MEMO_SIZE of them."""

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, raw: Any) -> Any:
        value = self.convert(raw)
        if len(raw) <= 64:
            if len(self) >= _MEMO_SIZE:
                self.clear()
            self[raw] = value
        return value


_MEMO_SIZE = 4096


def _pid_or_none(pid: Optional[int]) -> Optional[int]:
    return pid if pid is not None and 0 < pid < PID_MAX else None


def _cell_pid(raw: bytes) -> Optional[int]:
    return _pid_or_none(_int_or_none(_raw_text(raw).strip()))


def _cell_int(raw: bytes) -> Optional[int]:
    return _int_or_none(_raw_text(raw).strip())


def _cell_str(raw: bytes) -> str:
    return _raw_text(raw).strip()


_PIDS, _SS, _MODES, _CELLS = _Memo(_cell_pid), _Memo(_cell_int), _Memo(_cell_str), \
    _Memo(lambda piece: _raw_cell(piece).strip())


def _clean(column: Sequence[bytes], values: List[Any], limit: int) -> bool:
    """Whether no value of the column was left out for being out of range
    (_out_of_range against ``limit``: parse_html warns of those)."""
    if None not in values:
        return True
    missing = {raw for raw, value in zip(column, values) if value is None}
    return not any(_out_of_range(_raw_text(raw).strip(), limit) for raw in missing)


def _fast_rows(data: bytes, start: int, last: int, layout: _Layout) -> Optional[_FastRows]:
    """The worker rows from start (after the header row) to the table's end,
    if every byte there is rows in Apache's markup (else None: the rows are
    read one by one); ``last`` is where the page's last ``</table>`` ends.

    One pattern finds every row, back to back, up to the ``</table>``: then
    each row is what _segment_rows would make of it (its cells split at
    "</td>", as many as headings: see _Cells), and only the PID, mode and SS
    cells are converted, each distinct value once, into the columns of a
    WorkerTable (no row object is made here).
    """
    first = data.find(b"<", start, last)
    if first < 0:
        return None
    found = _rows_found(data, first, last, layout)
    if found is None:
        return None
    columns, region, size, plain = found
    column = columns[layout.pid]
    pids = list(map(_PIDS.__getitem__, column))
    clean = _clean(column, pids, PID_MAX)
    column = columns[layout.ss]
    ss = list(map(_SS.__getitem__, column))
    clean = clean and _clean(column, ss, INT64_MAX)
    modes = list(map(_MODES.__getitem__, columns[layout.mode]))
    cells = _Cells(region, size, layout.width, len(pids), plain)
    return _FastRows(WorkerTable(pids, modes, ss, cells, layout), clean,
                     max(filter(None, ss), default=0), start, first + size)


def _cell_text(el: Any) -> str:
    # Most cells are plain text; some wrap it in <b>. Callers strip.
    if len(el):
        return "".join(el.itertext())
    return el.text or ""


# A start or end tag with attributes: the name, then a run without "<" or ">"
# (linear: the name can only give back characters the next part refuses).
_ANY_TAG = re.compile(rb"<(/?)([A-Za-z][A-Za-z0-9]*)([^<>A-Za-z0-9][^<>]*)>?")


def _bare_tag(m: Any) -> bytes:
    attrs = m.group(3)
    if attrs and m.group(2).lower() in (b"th", b"td"):
        span = _COLSPAN.search(attrs)
        if span:
            return b'<%s%s colspan="%d">' % (m.group(1), m.group(2), _span(span.group(1)))
    return b"<%s%s>" % (m.group(1), m.group(2))


def _lxml_tables(data: bytes, source: str) -> List[_Table]:
    """Tables read by lxml's forgiving HTML parser (the fallback).

    Tags reach libxml2 without attributes (but colspan): its HTML parser
    checks each attribute against the tag's earlier ones, which takes minutes
    for a tag with 100,000 of them.
    """
    from lxml import etree  # only paid when the fast reader gives up

    data = _ANY_TAG.sub(_bare_tag, data)
    parser = etree.HTMLParser(recover=True, no_network=True, remove_comments=True)
    try:
        root = etree.fromstring(data, parser)
    except (etree.LxmlError, ValueError) as exc:
        raise FetchError(f"{source} is not readable HTML: {visible(str(exc))}",
                         reason=NOT_STATUS_PAGE) from None
    if root is None:
        raise FetchError(f"{source} is empty", reason=NOT_STATUS_PAGE)
    tables = []
    for table in root.iter("table"):
        rows = []
        for tr in table.findall("tr"):
            heads = [(_cell_text(th), _span(th.get("colspan") or "1"))
                     for th in tr.findall("th")]
            rows.append((heads, tr.findall("td")))
        tables.append(_Table(rows, _cell_text))
    return tables


def parse_html(data: bytes, source: str = "the status page") -> HtmlPage:
    """Find the worker table and the event process table by their headings.

    Apache's own markup is read by a fast byte-search reader; anything it
    does not recognise as well-formed goes to lxml's HTML parser instead,
    and both give the same rows (tests/test_status_html.py checks it).
    """
    tables = _fast_tables(data)
    if tables is None:
        tables = _lxml_tables(data, source)
    workers: Optional[Sequence[WorkerRow]] = None
    event: Optional[List[EventProcess]] = None
    fast: Optional[_FastRows] = None
    for table in tables:
        first = table.names()
        if first is None:
            continue
        if workers is None and "pid" in first and "m" in first and "ss" in first:
            fast = table.workers
            if fast is not None:
                workers = fast.rows
            else:
                workers = _worker_rows(table, first)
        elif event is None and first[:3] == ["slot", "pid", "stopping"]:
            event = _event_rows(table)
    if workers is None and event is None and b"Apache Status" not in data[:2048] \
            and b"Server Version" not in data:
        raise FetchError(f"{source} is not an Apache mod_status page; check --url",
                         reason=NOT_STATUS_PAGE)
    lines: List[str] = []
    bad = 0 if fast is not None and fast.clean else sum(
        1 for w in workers or () if w.ss is None and _out_of_range(w.cell("ss"))
        or w.pid is None and _out_of_range(w.cell("pid"), PID_MAX))
    if bad:
        lines.append(f"{bad} rows of the worker table have a PID or SS out of range; "
                     "those values are left out")
    uptime = html_uptime(data)
    if workers and uptime is not None and (fast is None or fast.max_ss > uptime):
        impossible = forget_impossible_ss(workers, uptime)
        if impossible:
            lines.append(f"{impossible} rows of the worker table have an SS longer than "
                         f"the server's uptime ({uptime} s); those values are left out")
    # (as _Warnings words them; two lines at most, so no "more" line)
    where = visible(source) if lines else ""
    return HtmlPage(workers, event,
                    tuple(f"{where}: {line}" for line in lines) if lines else (), uptime)


_UPTIME = b"Server uptime:"
_UPTIME_UNITS = {"day": 86400, "days": 86400, "hour": 3600, "hours": 3600,
                 "minute": 60, "minutes": 60, "second": 1, "seconds": 1}


def html_uptime(data: bytes) -> Optional[int]:
    """Seconds of ``Server uptime:`` on the HTML page (mod_status's show_time:
    `` 1 day 2 hours 3 minutes 4 seconds``, parts that are 0 left out, so the
    first second is an empty text), None when the line is missing or is not
    in that form. The same ``now`` as the page's SS column, so the two compare
    exactly."""
    at = data.find(_UPTIME)
    if at < 0:
        return None
    end = data.find(b"<", at, at + 200)
    if end < 0:
        return None
    try:
        words = data[at + len(_UPTIME):end].decode("ascii").split()
    except UnicodeDecodeError:
        return None
    if len(words) % 2 or len(words) > 8:
        return None
    total = 0
    for number, unit in zip(words[::2], words[1::2]):
        if not number.isdigit() or len(number) > 9 or unit not in _UPTIME_UNITS:
            return None
        total += int(number) * _UPTIME_UNITS[unit]
    return total


def forget_impossible_ss(workers: Sequence[WorkerRow], uptime: float) -> int:
    """Make "not measured" every SS longer than the server's uptime: no
    request can be older than the server. A slot that is starting (``S``) in
    Apache's first second has never been used, and its SS counts from 1970;
    that is expected and not counted. Returns how many other rows had one."""
    odd = 0
    if isinstance(workers, WorkerTable):  # the column itself: no row made
        ages, modes = workers.ss, workers.modes
        for i, age in enumerate(ages):
            if age is not None and age > uptime:
                ages[i] = None
                if modes[i] not in ("S", "."):
                    odd += 1
        return odd
    for row in workers:
        if row.ss is not None and row.ss > uptime:
            row.ss = None
            if row.mode not in ("S", "."):
                odd += 1
    return odd


def _worker_rows(table: _Table, headings: List[str]) -> List[WorkerRow]:
    cols = {h: i for i, h in enumerate(headings)}
    width = len(headings)
    text = table.text
    return [WorkerRow(cells, cols, text) for _heads, cells in table.rows[1:]
            if len(cells) == width]


_EVENT_NAMES: Dict[Tuple[Any, ...], List[str]] = {}


def _event_names(top: List[Tuple[str, int]], sub_heads: List[Tuple[str, int]]) -> List[str]:
    """The event table's column names: rowspan=2 cells first, then groups
    split by colspan (the same for every page of a server: kept)."""
    key = (tuple(top), tuple(sub_heads))
    known = _EVENT_NAMES.get(key)
    if known is not None:
        return known
    sub = [_norm(text) for text, _span in sub_heads]
    names: List[str] = []
    used = 0  # sub-headings taken so far (an index: slicing the rest each time is quadratic)
    for text, span in top:
        label = _norm(text)
        if span == 1:
            names.append(label)
        else:
            group = label.split()[0] if label else ""
            names.extend(f"{group} {s}" for s in sub[used:used + span])
            used += span
    if len(_EVENT_NAMES) >= _CACHED:
        _EVENT_NAMES.clear()
    _EVENT_NAMES[key] = names
    return names


def _event_rows(table: _Table) -> List[EventProcess]:
    rows = table.rows
    names = _event_names(rows[0][0], rows[1][0] if len(rows) > 1 else [])
    text = table.text
    cell: Callable[[Any], str] = _CELLS.__getitem__ if text is _raw_cell \
        else (lambda c: text(c).strip())
    out = []
    for _heads, raw in rows[2:]:
        if not raw:
            continue
        slot = cell(raw[0])
        if not slot.isascii() or not slot.isdigit() or len(slot) > 9:
            continue  # the "Sum" row
        named = dict(zip(names, map(cell, raw)))
        accepting = named.get("connections accepting")
        pid = _int_or_none(named.get("pid"))
        out.append(EventProcess(
            int(slot), pid if pid is not None and 0 < pid < PID_MAX else None,
            named.get("stopping", ""), None if accepting is None else accepting == "yes",
            named))
    return out
