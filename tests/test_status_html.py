"""The HTML tables, found by their headings, on captured and hand-made pages."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apache_metrics_exporter.collect import status
from apache_metrics_exporter.collect.status import parse_html
from apache_metrics_exporter.errors import FetchError
from tests import status_reference
from tests.conftest import DATA, data, parse_tab, prom_series
from tests.test_fuzz import FUZZ, mutated


def _pids_in(html: bytes):
    return {int(p) for p in re.findall(rb"<tr><td><b>\d+-\d+</b></td><td>(\d+)</td>", html)}


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_worker_table_of_each_mpm(mpm):
    raw = data(f"2.4.71-{mpm}-ext-on.html")
    page = parse_html(raw)
    rows = page.workers
    assert rows, "worker table not found"
    assert len(rows) == raw.count(b"<tr><td><b>")
    assert {r.pid for r in rows} == _pids_in(raw)
    # The slow request (sleep=2) was 1 s old, in state W, when the page was taken.
    slow = [r for r in rows if "sleep=2" in r.request]
    assert len(slow) == 1 and slow[0].mode == "W" and slow[0].is_active
    assert slow[0].ss >= 1
    assert slow[0].protocol == "http/1.1"
    assert slow[0].vhost.startswith("127.0.0.1:")
    assert all(r.mode in "_SRWKDCLGI." and len(r.mode) == 1 for r in rows)
    if mpm == "prefork":
        assert len({r.pid for r in rows}) == len(rows)  # one row per process
    else:
        assert len({r.pid for r in rows}) < len(rows)   # one row per thread
    assert (page.event_processes is not None) == (mpm == "event")


def test_event_process_table():
    page = parse_html(data("2.4.71-event-ext-on.html"))
    procs = page.event_processes
    assert procs and all(p.pid for p in procs)
    assert [p.slot for p in procs] == sorted(p.slot for p in procs)
    assert all(p.accepting is True for p in procs)
    assert all(p.stopping == "no" for p in procs)
    cells = procs[0].cells
    assert {"threads busy", "threads idle", "threads graceful", "async wait io",
            "async keep alive", "connections total"} <= set(cells)
    worker_pids = {r.pid for r in page.workers}
    assert worker_pids <= {p.pid for p in procs}


def test_extended_status_off_has_no_worker_table():
    page = parse_html(data("2.4.71-prefork-ext-off.html"))
    assert page.workers is None
    event = parse_html(data("2.4.71-event-ext-off.html"))
    assert event.workers is None and event.event_processes


def test_apache_2_2_table_without_protocol_and_dur():
    rows = parse_html(data("handmade-2.2-prefork.html")).workers
    assert [r.pid for r in rows] == [4101, 4102, 4103, None]
    assert [r.mode for r in rows] == ["_", "W", "W", "."]
    assert rows[2].ss == 412
    assert rows[2].request == "GET /report?year=2009&all=1 HTTP/1.1"  # entity decoded
    assert rows[2].vhost == "www.example.org"
    assert rows[2].client == "10.1.2.3"
    assert rows[2].cpu == pytest.approx(0.10)
    assert rows[2].srv == "2-0"
    assert rows[2].protocol == "" and rows[2].dur is None
    assert rows[3].request == ""  # NULL
    assert not rows[0].is_active and rows[1].is_active and not rows[3].is_active


def test_columns_found_by_heading_not_position():
    html = (b"<html><body><h1>Apache Server Status for x</h1><table>"
            b"<tr><th>Request</th><th>M</th><th>SS</th><th>PID</th></tr>"
            b"<tr><td>GET / HTTP/1.1</td><td><b>W</b></td><td>7</td><td>42</td></tr>"
            b"</table></body></html>")
    (row,) = parse_html(html).workers
    assert (row.pid, row.mode, row.ss, row.request) == (42, "W", 7, "GET / HTTP/1.1")


def test_foreign_html_is_refused():
    with pytest.raises(FetchError, match="not an Apache mod_status page"):
        parse_html(b"<html><body><h1>It works!</h1></body></html>", source="u")


def test_generated_large_table_keeps_every_row():
    raw = data("2.4.71-worker-ext-on.html")
    head, _, rest = raw.partition(b"<tr><td><b>")
    row, _, tail = rest.partition(b"</tr>")
    page = head + (b"<tr><td><b>" + row + b"</tr>\n") * 4096 + tail
    # the first row replaced by 4096 copies, the other rows kept
    assert len(parse_html(page).workers) == 4096 + raw.count(b"<tr><td><b>") - 1


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=len(data("2.4.71-event-ext-on.html"))))
def test_truncated_html_never_crashes(cut):
    raw = data("2.4.71-event-ext-on.html")[:cut]
    try:
        page = parse_html(raw)
    except FetchError:
        return
    for row in page.workers or ():
        assert row.pid is None or row.pid > 0


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_ever_raise_fetch_error(blob):
    try:
        parse_html(blob)
    except FetchError:
        pass


ALL_PAGES = sorted(p.name for p in DATA.glob("*.html"))


def _rows_as_text(page):
    headings = ("srv", "pid", "acc", "m", "cpu", "ss", "req", "dur", "conn", "child", "slot",
                "client", "protocol", "vhost", "request")
    return [tuple(r.cell(h) for h in headings) for r in page.workers or ()]


@pytest.mark.parametrize("name", ALL_PAGES)
def test_fast_reader_and_lxml_agree_on_every_page(name, monkeypatch):
    raw = data(name)
    fast = parse_html(raw)
    assert status._fast_tables(raw) is not None  # Apache's markup takes the fast path
    monkeypatch.setattr(status, "_fast_tables", lambda _data: None)
    slow = parse_html(raw)
    assert _rows_as_text(fast) == _rows_as_text(slow)
    assert fast.event_processes == slow.event_processes


def test_markup_without_end_tags_goes_to_lxml():
    # HTML lets </td> and </tr> be left out; a proxy rewriting the page might.
    html = (b"<html><body><h1>Apache Server Status for x</h1><table>"
            b"<tr><th>Srv<th>PID<th>M<th>SS<th>Request"
            b"<tr><td>0-0<td>41<td><b>W</b><td>7<td>GET /a HTTP/1.1"
            b"<tr><td>1-0<td>42<td>_<td>3<td>GET /b?x=1&amp;y=2 HTTP/1.1"
            b"</table></body></html>")
    assert status._fast_tables(html) is None
    rows = parse_html(html).workers
    assert [(r.pid, r.mode, r.ss, r.request) for r in rows] == [
        (41, "W", 7, "GET /a HTTP/1.1"), (42, "_", 3, "GET /b?x=1&y=2 HTTP/1.1")]


# The linear-time readers find what the old (quadratic) patterns found.
_PIECES = [b"<th>", b"</th>", b"<th colspan=2>", b'<th colspan="x">', b"</th >", b"<th",
           b">", b"<", b"x", b" ", b"\n", b"<thead>", b"</th", b"<b>", b"</b>", b"&amp;",
           b"<TH>"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30))
def test_heading_search_finds_what_the_old_pattern_found(parts):
    body = b"".join(parts)
    old = re.compile(rb"<th\b([^>]*)>(.*?)</th\s*>", re.S)
    colspan = re.compile(rb"colspan\s*=\s*[\"']?(\d+)", re.I)
    expected = [(status._raw_text(text), status._span(m.group(1)) if (m := colspan.search(attrs))
                 else 1) for attrs, text in old.findall(body)]
    assert status._headings(body) == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"<", b">", b"x", b"<b>", b"</b>", b"<<", b">>"]), max_size=30))
def test_tag_stripping_drops_what_the_old_pattern_dropped(parts):
    raw = b"".join(parts)
    assert status._strip_tags(raw) == re.sub(rb"<[^>]*>", b"", raw)


@pytest.mark.parametrize("value,span", [
    ("2", 2), ("02", 2), ("x", 1), ("", 1), ("3x", 3), (" 3", 1), ("0", 0),
    ("99999999999999", 1000), ("1" * 5000, 1000), ("\u0663", 1),
])
def test_colspan_values(value, span):
    assert status._span(value) == span
    assert status._span(value.encode("utf-8")) == span


# --- SS that cannot be true: slots starting in Apache's first second -----------

STARTING = "synth-2.4.71-event-starting"  # 5 slots "S" with SS = seconds since 1970
EPOCH_SS = 1795949074


@pytest.mark.parametrize("text,seconds", [
    ("  1 second", 1), ("  2 seconds", 2), ("  ", 0),
    (" 3 days 1 hour 2 minutes 1 second", 3 * 86400 + 3600 + 120 + 1),
    (" 1 day 5 seconds", 86405), ("  12 minutes", 720),
    (" soon", None), (" 1 fortnight", None), (" 1", None), (" -1 second", None),
    (" \u0661 second", None), (" 99999999999 seconds", None),
])
def test_uptime_of_the_html_page(text, seconds):
    page = f"<dl><dt>Server uptime:{text}</dt></dl>".encode()
    assert status.html_uptime(page) == seconds
    assert status.html_uptime(b"<dl><dt>Server load: 0.1</dt></dl>") is None


def test_starting_slots_with_an_epoch_ss_are_not_measured():
    raw = data(f"{STARTING}.html")
    assert raw.count(str(EPOCH_SS).encode()) == 5  # the page really carries them
    page = parse_html(raw, source="u")
    assert page.uptime == 1
    starting = [r for r in page.workers if r.mode == "S"]
    assert len(starting) == 5 and all(r.ss is None for r in starting)
    assert all(r.ss is not None and r.ss <= 1 for r in page.workers if r.mode != "S")
    assert page.warnings == ()  # starting slots are expected, not a fault of the page


def test_an_impossible_ss_in_another_state_is_left_out_with_a_warning():
    raw = data(f"{STARTING}.html").replace(b"<td>S\n</td>", b"<td><b>W</b>\n</td>", 1)
    page = parse_html(raw, source="u")
    assert sum(1 for r in page.workers if r.ss is None) == 5
    assert page.warnings == ("u: 1 rows of the worker table have an SS longer than the "
                             "server's uptime (1 s); those values are left out",)


def test_starting_slots_reach_no_output_as_a_request_age():
    from apache_metrics_exporter.collect.http import Target
    from apache_metrics_exporter.collect.snapshot import Options, collect
    from apache_metrics_exporter.writers import influx, prometheus, tab

    class Pages:  # the Fetcher's interface, serving the captured pages
        target = Target("http://127.0.0.1:8080/server-status")
        host, port, peer = "127.0.0.1", 8080, "127.0.0.1"

        def __init__(self, html: bytes) -> None:
            self.html = html

        def get(self, url: str) -> bytes:
            return data(f"{STARTING}.auto.txt") if url.endswith("auto") else self.html

    for html in (data(f"{STARTING}.html"),
                 # a page without its uptime line: ?auto's uptime is used instead
                 data(f"{STARTING}.html").replace(b"Server uptime:", b"Server up:")):
        snap = collect(Pages(html), Options(scan_processes=False))
        assert snap.up and snap.value("workers_hanging") == 0
        assert snap.value("longest_request_seconds") == 1
        assert snap.value("longest_request") == "GET /embedded?sleep=2 HTTP/1.1"
        values = parse_tab(tab.render([snap]))
        assert values["workers-hanging"] == "0" and values["longest-request-seconds"] == "1"
        lines = influx.render([snap]).splitlines()
        (workers,) = [ln for ln in lines if ln.startswith("apache_workers,")]
        assert "hanging=0i" in workers and "longest_request_seconds=1i" in workers
        series = prom_series(prometheus.render([snap]))
        assert series["apache_hanging_workers"] == 0
        assert series["apache_longest_request_seconds"] == 1
        for text in (tab.render([snap]), "\n".join(lines), prometheus.render([snap])):
            assert str(EPOCH_SS) not in text
            assert str(EPOCH_SS - 1) not in text  # nor the same a second later


# --- the fast reader against the reference (the parser before issue 23) -------

HEADINGS = ("srv", "pid", "acc", "m", "cpu", "ss", "req", "dur", "conn", "child", "slot",
            "client", "protocol", "vhost", "request", "nope")


def _everything(parse, raw: bytes):
    """All that parse_html gives for a page, comparable across the two parsers."""
    try:
        page = parse(raw, source="u")
    except FetchError as exc:
        return "FetchError", str(exc), exc.reason
    rows = None if page.workers is None else [
        (r.pid, r.mode, r.ss, r.srv, r.cpu, r.req, r.dur, r.client, r.protocol, r.vhost,
         r.request, r.is_active, [r.cell(h) for h in HEADINGS]) for r in page.workers]
    return rows, page.event_processes, page.warnings, page.uptime


def _rows(n: int, name: str = "2.4.71-event-ext-on.html") -> bytes:
    """A captured page with its worker rows repeated, varied, to ``n`` rows."""
    raw = data(name)
    head, _, rest = raw.partition(b"<tr><td><b>")
    body, _, tail = rest.partition(b"</table>")
    rows = [b"<tr><td><b>" + r for r in body.split(b"<tr><td><b>")]
    out = [rows[i % len(rows)].replace(b"<td>_\n", b"<td><b>W</b>\n" if i % 3 else b"<td>_\n", 1)
           for i in range(n)]
    return head + b"".join(out) + b"</table>" + tail


BIG = [_rows(200), _rows(50, "2.4.71-prefork-ext-on.html"), _rows(40, "handmade-2.2-prefork.html")]


@pytest.mark.parametrize("raw", [data(name) for name in ALL_PAGES] + BIG,
                         ids=ALL_PAGES + ["event-200", "prefork-50", "2.2-40"])
def test_same_results_as_the_reference_parser_on_every_page(raw):
    assert _everything(parse_html, raw) == _everything(status_reference.parse_html, raw)


@pytest.mark.parametrize("raw", [data(name) for name in ALL_PAGES] + BIG,
                         ids=ALL_PAGES + ["event-200", "prefork-50", "2.2-40"])
def test_apache_worker_tables_take_the_fast_path(raw):
    tables = status._fast_tables(raw)
    assert tables is not None
    workers = [t for t in tables if t.names() and {"pid", "m", "ss"} <= set(t.names())]
    assert len(workers) == (b"<th>PID</th><th>Acc</th><th>M</th>" in raw)
    assert all(t.workers is not None and t.workers.rows for t in workers)


@FUZZ
@given(st.data())
def test_same_results_as_the_reference_parser_on_mutated_pages(data_):
    raw = data_.draw(st.sampled_from([data(name) for name in ALL_PAGES] + BIG))
    raw = data_.draw(mutated(raw))
    assert _everything(parse_html, raw) == _everything(status_reference.parse_html, raw)


@FUZZ
@given(st.lists(st.sampled_from([
    b"<tr>", b"</tr>", b"<td>", b"<td nowrap>", b"</td>", b"<b>", b"</b>", b"<th>", b"</th>",
    b"x", b"1", b"-", b"W", b"\n", b"&amp;", b"</table>", b"<", b">", b"<TABLE>"]), max_size=60))
def test_same_results_as_the_reference_parser_on_odd_rows(parts):
    # rows made of the worker table's own pieces, in any order
    raw = (b"<html><body><h1>Apache Server Status for x</h1><table><tr><th>Srv</th>"
           b"<th>PID</th><th>M</th><th>SS</th></tr>\n<tr><td><b>0-0</b></td><td>7</td>"
           b"<td><b>W</b>\n</td><td>3</td></tr>\n" + b"".join(parts) + b"</table></body></html>")
    assert _everything(parse_html, raw) == _everything(status_reference.parse_html, raw)


@pytest.mark.parametrize("extra_cell", [False, True])
def test_twin_headings_count_as_cells(extra_cell):
    # Two columns with one heading: a row needs a cell for each (the last one wins).
    raw = data("2.4.71-prefork-ext-on.html").replace(b"<th>Conn</th>", b"<th>Conn</th>" * 2, 1)
    if extra_cell:
        raw = raw.replace(b"</td><td>127.0.0.1</td>", b"</td><td>9</td><td>127.0.0.1</td>")
    page = parse_html(raw)
    assert len(page.workers) == (raw.count(b"<tr><td><b>") if extra_cell else 0)
    assert _everything(parse_html, raw) == _everything(status_reference.parse_html, raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["&nbsp;", "&nbsp", "&amp;", "&amp;nbsp;", "&", "nbsp;", ";",
                                 "&lt;", "&bogus;", "a", " ", "\xa0"]), max_size=8))
def test_the_nbsp_shortcut_decodes_as_html_unescape(pieces):
    # _raw_text decodes &nbsp; itself (so that a one-shot run need not import
    # html's entity table for the event MPM's process table); every text must
    # still come out as html.unescape makes it.
    import html

    text = "".join(pieces)
    assert status._raw_text(text.encode("latin-1")) == html.unescape(text)
