"""The fast reader's worker table as columns (issue 23): a WorkerTable behaves
as the list of rows the slow path gives, and a collection cycle reads its
columns without making a row per worker."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apache_metrics_exporter import intervals
from apache_metrics_exporter.collect import snapshot, status
from apache_metrics_exporter.collect.clients import figures
from apache_metrics_exporter.collect.processes import EMPTY_SCAN
from apache_metrics_exporter.collect.snapshot import Options, build
from apache_metrics_exporter.collect.status import WorkerTable, parse_auto, parse_html
from tests.conftest import data

PAGES = ["2.4.71-event-ext-on.html", "2.4.71-prefork-ext-on.html",
         "2.4.71-event-slowloris.html", "synth-2.4.71-event-starting.html"]
HEADINGS = ("srv", "pid", "acc", "m", "ss", "client", "vhost", "request", "nope")


def _slow(raw: bytes, monkeypatch) -> list:
    """The rows of the slow (lxml, row-by-row) path."""
    with monkeypatch.context() as m:
        m.setattr(status, "_fast_tables", lambda _data: None)
        rows = parse_html(raw).workers
    assert isinstance(rows, list)
    return rows


def _key(row) -> tuple:
    return (row.pid, row.mode, row.ss, row.is_active, row.request,
            tuple(row.cell(h) for h in HEADINGS))


@pytest.mark.parametrize("name", PAGES)
def test_table_behaves_as_the_list_of_rows(name, monkeypatch):
    raw = data(name)
    table = parse_html(raw).workers
    assert isinstance(table, WorkerTable)
    rows = _slow(raw, monkeypatch)
    n = len(rows)
    assert len(table) == n and n > 2 and bool(table)
    assert [_key(r) for r in table] == [_key(r) for r in rows]
    assert _key(table[0]) == _key(rows[0]) and _key(table[-1]) == _key(rows[-1])
    assert _key(table[n - 1]) == _key(table[-1])
    for piece in (slice(1, 3), slice(None, None, -2), slice(n, None), slice(-3, -1)):
        assert [_key(r) for r in table[piece]] == [_key(r) for r in rows[piece]]
    for bad in (n, -n - 1):
        with pytest.raises(IndexError):
            table[bad]
    (first, *_rest) = table  # unpacking, as callers do
    assert _key(first) == _key(rows[0])
    assert [_key(r) for r in reversed(table)] == [_key(r) for r in reversed(rows)]
    # The key columns and text columns, as both kinds of rows give them
    assert status.key_columns(table) == status.key_columns(rows)
    assert status.columns(table, HEADINGS) == status.columns(rows, HEADINGS)
    assert status.has_column(table, "client") == status.has_column(rows, "client") is True
    assert status.has_column(table, "nope") is status.has_column(rows, "nope") is False


def test_a_rows_key_values_are_the_tables_columns():
    table = parse_html(data("2.4.71-event-ext-on.html")).workers
    assert isinstance(table, WorkerTable)
    row = table[1]
    row.ss = None  # what forget_impossible_ss does to a row
    assert table.ss[1] is None and table[1].ss is None
    row.mode = "W"
    assert table.modes[1] == "W" and table[1].is_active
    expected = sum(1 for m, age in zip(table.modes, table.ss)
                   if age is not None and m not in ("S", "."))
    assert status.forget_impossible_ss(table, -1) == expected > 0
    assert all(age is None for age in table.ss) and all(r.ss is None for r in table)
    assert status.forget_impossible_ss(table, -1) == 0


def test_forgetting_impossible_ss_counts_alike_for_table_and_rows(monkeypatch):
    raw = data("2.4.71-event-ext-on.html")
    table, rows = parse_html(raw).workers, _slow(raw, monkeypatch)
    assert isinstance(table, WorkerTable)
    for uptime in (0, 1):
        assert status.forget_impossible_ss(table, uptime) == \
            status.forget_impossible_ss(rows, uptime)
        assert table.ss == [r.ss for r in rows]


def _figures(snap) -> list:
    return [s for s in snap.samples if s.metric.name != "collection_duration_seconds"]


@pytest.mark.parametrize("name", PAGES)
def test_a_cycle_reads_columns_and_makes_one_row(name, monkeypatch):
    """Snapshot figures, slow clients and the interval figures read the
    columns: only the row of the longest request is made (its request line
    and virtual host); the figures are those the slow path's rows give."""
    raw = data(name)
    auto = parse_auto(data(name.replace(".html", ".auto.txt")).decode("latin-1"))
    options = Options(scan_processes=False, vhost_limit=3, client_limit=2)
    rows = _slow(raw, monkeypatch)
    expected = build("http://127.0.0.1/server-status", 0.0, auto, rows, None, EMPTY_SCAN,
                     options)
    table = parse_html(raw).workers
    made = []
    real = WorkerTable._make
    monkeypatch.setattr(WorkerTable, "_make", lambda self, i: made.append(i) or real(self, i))
    snap = build("http://127.0.0.1/server-status", 0.0, auto, table, None, EMPTY_SCAN,
                 options)
    before = intervals.slots(table)
    assert figures(table, snap.url) == figures(rows, snap.url)
    assert len(made) <= 1
    assert _figures(snap) == _figures(expected)
    assert before == intervals.slots(rows)
    assert intervals.observe(before, table) == intervals.observe(before, rows)
    assert len(made) <= 1


def test_ties_open_slots_and_impossible_ss_alike(monkeypatch):
    """The same figures from both kinds of rows where the order matters: two
    busy rows share the longest SS (the first one's request is reported), an
    open slot (".") has an SS older than the server (not counted as odd)."""
    raw = data("2.4.71-prefork-slowloris.html")
    auto = parse_auto(data("2.4.71-prefork-slowloris.auto.txt").decode("latin-1"))
    table, rows = parse_html(raw).workers, _slow(raw, monkeypatch)
    assert isinstance(table, WorkerTable)
    named = [i for i, r in enumerate(rows) if r.request]
    one = named[0]
    two = next(i for i in named if rows[i].request != rows[one].request)
    dot = next(i for i in range(len(rows)) if i not in (one, two))
    for workers in (table, rows):
        workers[one].mode = workers[two].mode = "W"
        workers[one].ss = workers[two].ss = 5000
        workers[dot].mode, workers[dot].ss = ".", 10 ** 9
    assert table.modes.count(".") == 1 and table.ss.count(5000) == 2
    options = Options(scan_processes=False, vhost_limit=2, client_limit=2)
    snaps = [build("http://127.0.0.1/server-status", 0.0, auto, w, None, EMPTY_SCAN, options)
             for w in (table, rows)]
    assert _figures(snaps[0]) == _figures(snaps[1])
    assert snaps[0].value("longest_request_seconds") == 5000
    assert snaps[0].value("native_worker_count") == len(rows) - 1  # not the open slot
    assert snaps[0].value("active_requests") == sum(1 for r in rows if r.is_active)
    assert snaps[0].value("longest_request") == rows[min(one, two)].request
    assert status.forget_impossible_ss(table, 10 ** 6) == 0  # the open slot only
    assert status.forget_impossible_ss(rows, 10 ** 6) == 0
    assert table.ss == [r.ss for r in rows] and table.ss.count(None) >= 1


@pytest.mark.parametrize("request_text", [
    b"GET /embedded?sleep=2&amp;n=7&amp;x= HTTP/1.1",  # only &amp; (the fast way)
    b"GET /a?b=1&amp;amp;c HTTP/1.1",                   # &amp;amp; is "&amp;" once decoded
    b"GET /a?b=1&amp;c=&lt;&#38;&ampd HTTP/1.1",       # other entities: html.unescape
    b" &amp; ",                                          # stripped after decoding
])
def test_entities_in_a_column_read_as_the_row_by_row_reader_reads_them(request_text,
                                                                      monkeypatch):
    """The Request column of a query string with "&" is "&amp;" on every such
    row; the bulk column read decodes it as html.unescape does, cell by cell
    (also on its own, for one row's cell)."""
    raw = data("2.4.71-event-ext-on.html").replace(b"GET /embedded?sleep=2 HTTP/1.1",
                                                   request_text)
    table = parse_html(raw).workers
    assert isinstance(table, WorkerTable)
    rows = _slow(raw, monkeypatch)
    expected = [r.cell("request") for r in rows]
    assert any("&" in text for text in expected)
    assert status.columns(table, ("request",))[0] == expected
    fresh = parse_html(raw).workers
    assert [fresh[i].cell("request") for i in range(len(rows))] == expected


# -- the bulk column reading against a row-by-row reading --------------------

class _Row:
    """A worker row of the slow path's shape, from chosen values."""

    def __init__(self, pid, mode, ss, vhost, request, client) -> None:
        self.pid, self.mode, self.ss = pid, mode, ss
        self._cells = {"vhost": vhost, "request": request, "client": client}

    def cell(self, heading: str) -> str:
        return self._cells.get(heading, "")

    def has(self, heading: str) -> bool:
        return heading in self._cells

    @property
    def request(self) -> str:
        value = self.cell("request")
        return "" if value == "NULL" else value

    @property
    def vhost(self) -> str:
        return self.cell("vhost")


URL = "http://127.0.0.1:8080/server-status"
OWN = ["GET /server-status?auto HTTP/1.1", "GET /server-status HTTP/1.1"]


def _by_row_workers(workers, options):
    """What the worker figures were, read row by row."""
    active = [w for w in workers if w.mode not in status.IDLE_MODES]
    hanging, oldest, longest = 0, None, None
    for w in active:
        if w.ss is not None:
            hanging += w.ss >= options.hanging_threshold
            if longest is None or w.ss > longest:
                oldest, longest = w, w.ss
    per = {}
    for w in active:
        stats = per.setdefault(w.vhost, [0, 0, 0])
        stats[0] += 1
        if w.mode == "W":
            stats[1] += 1
            stats[2] = max(stats[2], w.ss or 0)
    return (hanging, len(active), longest if oldest else 0,
            oldest.request if oldest else "", oldest.vhost if oldest else "", per)


def _by_row_clients(workers):
    mine, reading, oldest, unmeasured, per = list(OWN), 0, 0, False, {}
    for w in workers:
        if w.mode in status.IDLE_MODES:
            continue
        if w.mode == "W" and w.request in mine:
            mine.remove(w.request)
            continue
        if w.mode == "R":
            reading += 1
            if w.ss is None:
                unmeasured = True
            else:
                oldest = max(oldest, w.ss)
        if w.cell("client"):
            per[w.cell("client")] = per.get(w.cell("client"), 0) + 1
    return (reading, None if unmeasured and oldest == 0 else oldest,
            per if workers else None)  # (no rows: no Client column known)


_rows = st.builds(_Row, st.sampled_from([None, 10, 11, 12]),
                  st.sampled_from(list("_WRKCLDGI.S")),
                  st.one_of(st.none(), st.integers(-3, 400)),
                  st.sampled_from(["a", "b", "", "other"] + [f"h{i}" for i in range(10)]),
                  st.sampled_from(OWN + ["NULL", "", "GET / HTTP/1.1"]),
                  st.sampled_from(["", "10.0.0.1", "10.0.0.2", "::1"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(_rows, max_size=40), st.sampled_from([0, 1, 20]),
       st.sampled_from([0.0, 5.0, 300.0]))
def test_the_bulk_figures_are_the_row_by_row_ones(workers, vhost_limit, threshold):
    """The worker, virtual host and client figures read in bulk from the
    columns are what reading the rows one by one gives: hanging and busy
    workers, the longest request (the first row with the largest SS), each
    host's busy workers, requests in flight and longest request (more hosts
    than are counted in one pass each included), the reading workers and
    the clients, the collector's own two requests left out once each."""
    options = Options(hanging_threshold=threshold, vhost_limit=vhost_limit)
    got = {s.metric.name if not s.labels else (s.metric.name, s.labels): s.value
           for s in snapshot._worker_samples(workers, EMPTY_SCAN, options)}
    hanging, busy, longest, request, vhost, per = _by_row_workers(workers, options)
    assert (got["workers_hanging"], got["active_requests"], got["longest_request_seconds"],
            got["longest_request"], got["longest_request_vhost"]) == \
        (hanging, busy, longest, request, vhost)
    active = status.busy_rows([w.mode for w in workers])
    assert snapshot.vhost_stats([workers[i].vhost for i in active],
                                [workers[i].mode for i in active],
                                [workers[i].ss for i in active]) == per
    reading, oldest, clients = _by_row_clients(workers)
    assert figures(workers, URL) == (reading, oldest, clients)


def test_the_bulk_figures_in_the_corners_a_random_table_seldom_reaches():
    """More hosts with requests in flight than are counted in one pass each;
    both of the collector's own requests on the page (each left out once:
    a third copy is a client's); reading rows whose SS are all negative."""
    hosts = [_Row(10, "W", age, f"h{i % 12}", "GET /x HTTP/1.1", "10.0.0.9")
             for i, age in enumerate([5, 70, 3, None, 9, 1, 44, 2, 8, 0, 6, 7, 90, 4, 11, 12])]
    own = [_Row(11, "W", 1, "a", OWN[0], "127.0.0.1"), _Row(11, "W", 1, "a", OWN[1], "127.0.0.1"),
           _Row(11, "W", 1, "a", OWN[1], "127.0.0.1")]
    reading = [_Row(12, "R", -3, "b", "", "10.0.0.2"), _Row(12, "R", -1, "b", "", "10.0.0.2")]
    one = [_Row(10, "W", age, "c", "GET /y HTTP/1.1", "") for age in (None, 4, 30, 2)]
    for workers in (hosts, own, reading, one, hosts + own + reading, reading + own + hosts,
                    one + own):
        active = status.busy_rows([w.mode for w in workers])
        assert snapshot.vhost_stats([workers[i].vhost for i in active],
                                    [workers[i].mode for i in active],
                                    [workers[i].ss for i in active]) == \
            _by_row_workers(workers, Options())[5]
        assert figures(workers, URL) == _by_row_clients(workers)
    assert figures(own, URL).clients == {"127.0.0.1": 1}
    assert figures(reading, URL).reading_oldest == 0


@pytest.mark.parametrize("name", PAGES)
def test_one_cell_read_alone_is_the_cell_of_its_column(name, monkeypatch):
    """status.cell reads one row's cell without the whole column (the
    longest request, the collector's own requests): the same text as the
    row-by-row reader's, before and after its column has been read, and
    rows out of the table are refused."""
    raw = data(name)
    rows = _slow(raw, monkeypatch)
    for heading in HEADINGS:
        table = parse_html(raw).workers
        alone = [status.cell(table, heading, i) for i in range(len(rows))]
        assert alone == [r.cell(heading) for r in rows] == status.columns(table, (heading,))[0]
        assert [status.cell(table, heading, i) for i in range(len(rows))] == alone
        for bad in (-1, len(rows)):
            with pytest.raises(IndexError):
                status.cell(table, heading, bad)
