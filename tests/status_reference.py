"""The worker-table parser as it was before issue 23 (byte searches per row),
kept as the reference the fast parser is checked against
(tests/test_status_html.py: identical results on every captured page and on
mutated ones). Not used by the package. What issue 23 did not change (numbers,
headings, cell text, the uptime line, warnings) is imported from the package
rather than copied: the comparison is of the table and row reading itself.
"""

from __future__ import annotations

import re

from apache_metrics_exporter.collect.status import (
    EventProcess,
    _bare_tag,
    _cell_text,
    _float_or_none,
    _headings,
    _int_or_none,
    _out_of_range,
    _raw_text,
    _span,
    _Warnings,
    html_uptime,
)
from apache_metrics_exporter.errors import FetchError
from apache_metrics_exporter.records import NamedTuple
from apache_metrics_exporter.units import visible

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

IDLE_MODES = frozenset("_I.")
PID_MAX = 1 << 22
NOT_STATUS_PAGE = "not_status_page"


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
        pid = _int_or_none(self.cell("pid"))
        self.pid = pid if pid is not None and 0 < pid < PID_MAX else None
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


class HtmlPage(NamedTuple):
    """The tables of the HTML page; ``workers`` is None without ExtendedStatus."""

    workers: Optional[List[WorkerRow]]
    event_processes: Optional[List[EventProcess]]
    warnings: Sequence[str] = ()  # values left out, one line each
    uptime: Optional[int] = None  # "Server uptime:" of the page itself, seconds


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


class _Table(NamedTuple):
    """A table as both HTML readers deliver it: per row, the heading cells as
    (text, colspan) and the raw data cells; ``text`` turns a raw cell into text."""

    rows: List[Tuple[List[Tuple[str, int]], List[Any]]]
    text: Callable[[Any], str]


# The fast reader: Apache writes its status tables with a fixed, simple markup
# (lower-case tags, every </td> and </tr> present), which plain byte searches
# split faster than any parser can build a tree. Every search moves forward
# (str.find/split, or a pattern that cannot backtrack), so a page of any shape
# is read in time linear in its size.


def _raw_cell(piece: bytes) -> str:
    """Text of one ``...<td attrs>content`` piece (the row split at ``</td>``)."""
    start = piece.rfind(b"<td")
    return _raw_text(piece[piece.find(b">", start) + 1:])


def _fast_tables(data: bytes) -> Optional[List[_Table]]:
    """Tables read by byte searches, or None when a table we read is not in
    Apache's well-formed markup (end tags left out, upper-case tags, ...)."""
    if b"<TABLE" in data or b"<Table" in data:
        return None
    tables: List[_Table] = []
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
            if segment.count(b"<th") != segment.count(b"</th>") \
                    or "pid" in {_norm(text) for text, _span in _headings(segment)}:
                return None
            continue
        rows = []
        for chunk in segment.split(b"</tr>")[:-1]:
            at = chunk.find(b"<tr")
            if at < 0:
                continue
            body = chunk[at:]
            heads = _headings(body) if b"<th" in body else []
            rows.append((heads, body.split(b"</td>")[:-1]))
        tables.append(_Table(rows, _raw_cell))


# A start or end tag with attributes: the name, then a run without "<" or ">"
# (linear: the name can only give back characters the next part refuses).
_ANY_TAG = re.compile(rb"<(/?)([A-Za-z][A-Za-z0-9]*)([^<>A-Za-z0-9][^<>]*)>?")


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
        raise FetchError(f"{source} is not an Apache mod_status page; check --url",
                         reason=NOT_STATUS_PAGE)
    warnings = _Warnings(source)
    bad = sum(1 for w in workers or () if w.ss is None and _out_of_range(w.cell("ss"))
              or w.pid is None and _out_of_range(w.cell("pid"), PID_MAX))
    if bad:
        warnings.add(f"{bad} rows of the worker table have a PID or SS out of range; "
                     "those values are left out")
    uptime = html_uptime(data)
    if workers and uptime is not None:
        impossible = forget_impossible_ss(workers, uptime)
        if impossible:
            warnings.add(f"{impossible} rows of the worker table have an SS longer than "
                         f"the server's uptime ({uptime} s); those values are left out")
    return HtmlPage(workers, event, warnings.done(), uptime)


def forget_impossible_ss(workers: Sequence[WorkerRow], uptime: float) -> int:
    """Make "not measured" every SS longer than the server's uptime: no
    request can be older than the server. A slot that is starting (``S``) in
    Apache's first second has never been used, and its SS counts from 1970;
    that is expected and not counted. Returns how many other rows had one."""
    odd = 0
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


def _event_rows(table: _Table) -> List[EventProcess]:
    # Two heading rows: rowspan=2 cells first, then groups split by colspan.
    top = table.rows[0][0]
    sub = [_norm(text) for text, _span in table.rows[1][0]] if len(table.rows) > 1 else []
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
    out = []
    for _heads, raw in table.rows[2:]:
        cells = [table.text(c).strip() for c in raw]
        if not cells or not cells[0].isascii() or not cells[0].isdigit() \
                or len(cells[0]) > 9:
            continue  # the "Sum" row
        named = dict(zip(names, cells))
        accepting = named.get("connections accepting")
        pid = _int_or_none(named.get("pid"))
        out.append(EventProcess(
            slot=int(cells[0]), pid=pid if pid is not None and 0 < pid < PID_MAX else None,
            stopping=named.get("stopping", ""),
            accepting=None if accepting is None else accepting == "yes",
            cells=named,
        ))
    return out
