"""Parsers for mod_status pages: the ``?auto`` text page and the HTML tables.

Works on every format from Apache 2.2 to 2.4.6x: bare lines, keys with spaces,
values with colons, ``%``/``K`` suffixes, floats without a leading zero, the
duplicate Busy/Idle lines of 2.4.35-2.4.57 (event MPM), and tables found by
their headings, never by position.
"""

from __future__ import annotations

import math
import re
from collections import namedtuple

from apache_metrics_exporter.catalogue import (
    BY_AUTO_KEY,
    BY_NAME,
    INFO_KEYS,
    PROXY_BY_FIELD,
    SCOREBOARD_STATES,
)
from apache_metrics_exporter.errors import FetchError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

_PROXY_KEY = re.compile(r"ProxyBalancer\[(\d+)\](?:Worker\[(\d+)\])?(\w+)$")
IDLE_MODES = frozenset("_I.")  # apache-manager's definition of an idle worker


class AutoPage(namedtuple(
        "AutoPage",
        "values info scoreboard proxy extended telegraf_proxy",
        defaults=({},))):
    """What the ``?auto`` page says, already typed by the catalogue."""

    # values: Dict[str, float]  # canonical metric name -> value
    # info: Dict[str, str]  # text fields (ServerVersion, ...)
    # scoreboard: str
    # proxy: List[Tuple[Metric, Dict[str, str], int, str]]  # ..., the ?auto key
    # extended: bool  # ExtendedStatus was on
    # telegraf_proxy: Dict[str, float] = {}  # Telegraf's fields for balancer members
    __slots__ = ()


def _number(text: str, kind: type):
    """Parse ``.0119726``, ``0.e+79``, ``42%``, ``123K``; None for text or NaN/Inf."""
    text = text.strip().rstrip("%Kk").strip()
    if not text:
        return None
    if kind is int and text.isdigit():
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return int(value) if kind is int else value


def parse_auto(text: str, source: str = "the status page") -> AutoPage:
    """Parse the machine-readable page; raise FetchError if it is not one."""
    values: Dict[str, float] = {}
    info: Dict[str, str] = {}
    scoreboard: Optional[str] = None
    balancers: Dict[str, str] = {}
    members: Dict[Tuple[str, str], Dict[str, str]] = {}
    for n, raw in enumerate(text.splitlines()):
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
                number = _number(value, metric.type)
                if number is not None:
                    values[metric.name] = number
        elif key == "Scoreboard":
            scoreboard = value
        elif key in INFO_KEYS:
            info[key] = value
        elif key.startswith("ProxyBalancer["):
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
                             "(truncated answer, or a proxy cut it short)")
        raise FetchError(f"{source} is not an Apache mod_status page "
                         "(no 'Scoreboard:' line); check --url")
    proxy = []
    telegraf_proxy: Dict[str, float] = {}
    for (b, w), fields in sorted(members.items(), key=lambda i: (int(i[0][0]), int(i[0][1]))):
        labels = {"balancer": balancers.get(b, b), "worker": fields.get("Name", w)}
        if "Status" in fields:  # apache_exporter's status series: always 1
            proxy.append((BY_NAME["proxy_worker_status"],
                          dict(labels, status=fields["Status"].strip()), 1,
                          f"ProxyBalancer[{b}]Worker[{w}]Status"))
        for field, metric in PROXY_BY_FIELD.items():
            if field in fields:
                number = _number(fields[field], int)
                if number is not None:
                    raw = f"ProxyBalancer[{b}]Worker[{w}]{field}"
                    proxy.append((metric, labels, number, raw))
                    if fields[field].strip().isdigit():
                        # Telegraf parses these two as floats under the raw key.
                        telegraf_proxy[raw] = float(number)
    extended = "total_accesses" in values
    return AutoPage(values, info, scoreboard, proxy, extended, telegraf_proxy)


def count_scoreboard(scoreboard: str) -> Dict[str, int]:
    """Slots per state name (all 11 states, zero included)."""
    return {name: scoreboard.count(char) for char, name in SCOREBOARD_STATES}


# ---------------------------------------------------------------------------
# HTML page


class WorkerRow:
    """One row of the worker table (one process on prefork, one thread otherwise).

    Only PID, mode and SS are read up front (every row needs them); the other
    cells are turned into text when asked for, which keeps a 4096-row table
    cheap. A row keeps its raw cells (and the page they point into) alive:
    drop snapshots after use.
    """

    __slots__ = ("pid", "mode", "ss", "_cells", "_cols", "_text")

    def __init__(self, cells: Sequence[Any], cols: Dict[str, int],
                 text: Callable[[Any], str]) -> None:
        self._cells = cells
        self._cols = cols
        self._text = text
        self.pid = _int_or_none(self.cell("pid"))
        self.mode = self.cell("m")
        self.ss = _int_or_none(self.cell("ss"))

    def cell(self, heading: str) -> str:
        """The stripped text under a (normalised) heading, '' if the column is absent."""
        i = self._cols.get(heading)
        return "" if i is None else self._text(self._cells[i]).strip()

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


class EventProcess(namedtuple("EventProcess", ['slot', 'pid', 'stopping', 'accepting', 'cells'])):
    """One row of the event MPM's per-process table."""

    # slot: int
    # pid: Optional[int]
    # stopping: str
    # accepting: Optional[bool]
    # cells: Dict[str, str]
    __slots__ = ()


class HtmlPage(namedtuple("HtmlPage", ['workers', 'event_processes'])):
    """The tables of the HTML page; ``workers`` is None without ExtendedStatus."""

    # workers: Optional[List[WorkerRow]]
    # event_processes: Optional[List[EventProcess]]
    __slots__ = ()


def _int_or_none(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _float_or_none(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


class _Table(namedtuple("_Table", ['rows', 'text'])):
    """A table as both HTML readers deliver it: per row, the heading cells as
    (text, colspan) and the raw data cells; ``text`` turns a raw cell into text."""

    # rows: List[Tuple[List[Tuple[str, int]], List[Any]]]
    # text: Callable[[Any], str]
    __slots__ = ()


# The fast reader: Apache writes its status tables with a fixed, simple markup
# (lower-case tags, every </td> and </tr> present), which plain byte searches
# split faster than any parser can build a tree.
_TH = re.compile(rb"<th\b([^>]*)>(.*?)</th\s*>", re.S)
_TAG = re.compile(rb"<[^>]*>")
_COLSPAN = re.compile(rb"colspan\s*=\s*[\"']?(\d+)", re.I)


def _raw_text(raw: bytes) -> str:
    """Text of raw cell content: tags dropped, entities decoded (ISO-8859-1, as
    mod_status declares its pages)."""
    if b"<" in raw:
        raw = _TAG.sub(b"", raw)
    text = raw.decode("latin-1")
    if "&" in text:
        import html  # only for the rare cell with an entity

        text = html.unescape(text)
    return text


def _raw_cell(piece: bytes) -> str:
    """Text of one ``...<td attrs>content`` piece (the row split at ``</td>``)."""
    start = piece.rfind(b"<td")
    return _raw_text(piece[piece.find(b">", start) + 1:])


def _fast_tables(data: bytes) -> Optional[List[_Table]]:
    """Tables read by byte searches, or None when a table we read is not in
    Apache's well-formed markup (end tags left out, upper-case tags, ...)."""
    if b"<TABLE" in data or b"<Table" in data:
        return None
    tables = []
    pos = 0
    while True:
        start = data.find(b"<table", pos)
        if start < 0:
            return tables
        end = data.find(b"</table>", start)
        if end < 0:
            return None
        segment = data[start:end]
        pos = end + 8
        if segment.count(b"<tr") != segment.count(b"</tr>") \
                or segment.count(b"<td") != segment.count(b"</td>") \
                or segment.count(b"<th") != segment.count(b"</th>"):
            # Apache's own balancer tables leave out </tr>: harmless unless
            # this may be a table we read (a PID column, or headings that
            # cannot even be read this way).
            heads = {_norm(_raw_text(body)) for _attrs, body in _TH.findall(segment)}
            if "pid" in heads or segment.count(b"<th") != segment.count(b"</th>"):
                return None
            continue
        rows = []
        for chunk in segment.split(b"</tr>")[:-1]:
            at = chunk.find(b"<tr")
            if at < 0:
                continue
            body = chunk[at:]
            heads = []
            if b"<th" in body:
                heads = [(_raw_text(text), int(m.group(1)) if (m := _COLSPAN.search(attrs))
                          else 1) for attrs, text in _TH.findall(body)]
            rows.append((heads, body.split(b"</td>")[:-1]))
        tables.append(_Table(rows, _raw_cell))


def _cell_text(el: Any) -> str:
    # Most cells are plain text; some wrap it in <b>. Callers strip.
    if len(el):
        return "".join(el.itertext())
    return el.text or ""


def _lxml_tables(data: bytes, source: str) -> List[_Table]:
    """Tables read by lxml's forgiving HTML parser (the fallback)."""
    from lxml import etree  # only paid when the fast reader gives up

    parser = etree.HTMLParser(recover=True, no_network=True, remove_comments=True)
    try:
        root = etree.fromstring(data, parser)
    except (etree.LxmlError, ValueError) as exc:
        raise FetchError(f"{source} is not readable HTML: {exc}") from None
    if root is None:
        raise FetchError(f"{source} is empty")
    tables = []
    for table in root.iter("table"):
        rows = []
        for tr in table.findall("tr"):
            heads = [(_cell_text(th), int(th.get("colspan", "1") or 1))
                     for th in tr.findall("th")]
            rows.append((heads, tr.findall("td")))
        tables.append(_Table(rows, _cell_text))
    return tables


def parse_html(data: bytes, source: str = "the status page") -> HtmlPage:
    """Find the worker table and the event process table by their headings.

    Apache's own markup is read by a fast regular-expression reader; anything
    it does not recognise as well-formed goes to lxml's HTML parser instead,
    and both give the same rows (tests/test_status_html.py checks it).
    """
    tables = _fast_tables(data)
    if tables is None:
        tables = _lxml_tables(data, source)
    workers: Optional[List[WorkerRow]] = None
    event: Optional[List[EventProcess]] = None
    for table in tables:
        if not table.rows:
            continue
        first = [_norm(text) for text, _span in table.rows[0][0]]
        if workers is None and "pid" in first and "m" in first and "ss" in first:
            workers = _worker_rows(table, first)
        elif event is None and first[:3] == ["slot", "pid", "stopping"]:
            event = _event_rows(table)
    if workers is None and event is None and b"Apache Status" not in data[:2048] \
            and b"Server Version" not in data:
        raise FetchError(f"{source} is not an Apache mod_status page; check --url")
    return HtmlPage(workers, event)


def _worker_rows(table: _Table, headings: List[str]) -> List[WorkerRow]:
    cols = {h: i for i, h in enumerate(headings)}
    width = len(headings)
    text = table.text
    return [WorkerRow(cells, cols, text) for _heads, cells in table.rows[1:]
            if len(cells) == width]


def _event_rows(table: _Table) -> List[EventProcess]:
    # Two heading rows: rowspan=2 cells first, then groups split by colspan.
    top = table.rows[0][0]
    sub = [_norm(text) for text, _span in table.rows[1][0]] if len(table.rows) > 1 else []
    names: List[str] = []
    for text, span in top:
        label = _norm(text)
        if span == 1:
            names.append(label)
        else:
            group = label.split()[0] if label else ""
            names.extend(f"{group} {s}" for s in sub[:span])
            sub = sub[span:]
    out = []
    for _heads, raw in table.rows[2:]:
        cells = [table.text(c).strip() for c in raw]
        if not cells or not cells[0].isdigit():
            continue  # the "Sum" row
        named = dict(zip(names, cells))
        accepting = named.get("connections accepting")
        out.append(EventProcess(
            slot=int(cells[0]), pid=_int_or_none(named.get("pid")),
            stopping=named.get("stopping", ""),
            accepting=None if accepting is None else accepting == "yes",
            cells=named,
        ))
    return out
