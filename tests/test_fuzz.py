"""Hostile input from end to end: mutated status pages through collect(), generated
snapshots through every writer, every output line checked by a strict validator
(tests/validators.py), and parse time that stays linear in the page's size.

Fast by default (a few seconds); ``make fuzz`` sets FUZZ_EXAMPLES=20000 for
people hardening the parser. The ``integration`` tests at the end send
generated snapshots to a real InfluxDB 1.6 and to ``promtool check metrics``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import time
from typing import Callable, List

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from apache_metrics_exporter.catalogue import ALL_METRICS, BY_NAME, INT64_MAX, fits
from apache_metrics_exporter.collect.http import Target
from apache_metrics_exporter.collect.processes import ProcessScan, ProcInfo
from apache_metrics_exporter.collect.snapshot import Options, Sample, Snapshot, build, collect
from apache_metrics_exporter.collect.status import AutoPage, WorkerRow, parse_auto, parse_html
from apache_metrics_exporter.writers import collectd, influx, prometheus, tab, text, zabbix
from tests import validators
from tests.conftest import DATA, data, parse_tab
from tests.test_tab import example_snapshot

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WIDTH = 100
URL = "http://127.0.0.1:8080/server-status"


def render_all(snaps: List[Snapshot]) -> dict:
    """Every format's output for these snapshots, each checked by its validator."""
    out = {}
    out["influx"] = influx.render(snaps)
    # Two targets on one host and port are one series, as with Telegraf's
    # inputs.apache: a point of each at one time is valid (the later merges).
    validators.check_influx(out["influx"], unique=len(snaps) == 1)
    for snap in snaps:
        validators.check_influx(influx.render([snap]))
    cd = argparse.Namespace(hostname="web1", instance=[f"t{i}" for i in range(len(snaps))],
                            interval=10.0)
    out["collectd"] = collectd.render(snaps, cd)
    validators.check_putval(out["collectd"])
    for naming in ("apache_exporter", "base-units"):
        out[f"prometheus-{naming}"] = prometheus.render(
            snaps, argparse.Namespace(prometheus_naming=naming))
        validators.check_prometheus(out[f"prometheus-{naming}"])
    out["text"] = text.render(snaps, argparse.Namespace(hanging_threshold=300))
    validators.check_text(out["text"], WIDTH)
    for snap in snaps:
        out.setdefault("tab", []).append(tab.render([snap]))
        validators.check_tab(out["tab"][-1])
        validators.check_zabbix(zabbix.render([snap]))
    return out


@pytest.fixture(autouse=True)
def _terminal(monkeypatch):
    # As if the summary went to a WIDTH-column terminal: the one case where it
    # clips lines (piped or written to a file, it keeps them whole).
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    monkeypatch.setattr(text, "clip_width", lambda settings=None: WIDTH)
    monkeypatch.delenv("COLLECTD_HOSTNAME", raising=False)
    monkeypatch.delenv("COLLECTD_INTERVAL", raising=False)


# --- generated snapshots: arbitrary names and values through every writer ------

# Every code point, lone surrogates included: a process title's undecodable
# bytes arrive as surrogates (procfs decodes with surrogateescape).
ANY_CHAR = st.characters(exclude_categories=())
NASTY_NAMES = ["native", "example", "", " ", "a b", "x\tbusy-workers\t999\nx", "\x1b[2J\r",
               "\\", "a\\", ",=", 'q"uote', "time", "\udc80", "\u2028", "\x85", "\x00",
               "é" * 40, "{state}", "-", "_", "%s", "a" * 2000]
NAMES = st.one_of(st.sampled_from(NASTY_NAMES), st.text(ANY_CHAR, max_size=40))
NUMBERS = st.one_of(
    st.integers(min_value=-2 ** 70, max_value=2 ** 70), st.floats(), st.booleans(),
    st.sampled_from([0, 1, -1, INT64_MAX, INT64_MAX + 1, -INT64_MAX - 1, 2 ** 64, 10 ** 400,
                     INT64_MAX // 1024, INT64_MAX // 1024 + 1, 1e306, 1e308, 5e-324,
                     float("nan"), float("inf"), -float("inf"), 0.1 + 0.2]))


@st.composite
def samples(draw, pool: List[str]) -> List[Sample]:
    out = []
    for metric in draw(st.lists(st.sampled_from(ALL_METRICS), max_size=40)):
        if metric.type is str:
            value = draw(st.text(ANY_CHAR, max_size=300))
        else:
            value = draw(NUMBERS)
        labels = tuple(sorted((label, draw(st.sampled_from(pool))) for label in metric.labels))
        out.append(Sample(metric, value, labels))
    return out


def worker_row(pid: str, mode: str, ss: str, vhost: str, request: str) -> WorkerRow:
    cols = {"pid": 0, "m": 1, "ss": 2, "vhost": 3, "request": 4}
    return WorkerRow([pid, mode, ss, vhost, request], cols, lambda cell: cell)


@st.composite
def snapshots(draw) -> Snapshot:
    pool = draw(st.lists(NAMES, min_size=1, max_size=4))  # few names: duplicates happen
    up = draw(st.booleans())
    base = example_snapshot(up) if draw(st.booleans()) else None
    listed = draw(samples(pool))
    if base is not None:
        listed = list(base.samples) + listed
    auto = None
    if up:
        auto = AutoPage(
            values={}, info={"ServerVersion": draw(st.text(ANY_CHAR, max_size=60)),
                             "ServerMPM": draw(NAMES)},
            scoreboard="", proxy=[], extended=True,
            telegraf_extra={f"ProxyBalancer[0]Worker[{i}]Elected": draw(NUMBERS)
                            for i in range(draw(st.integers(0, 2)))},
            left_out=frozenset(draw(st.lists(st.sampled_from(
                [m.name for m in ALL_METRICS if m.auto_key]), max_size=3))))
    children = [ProcInfo(100 + i, 1.0, draw(st.sampled_from(pool)),
                         draw(st.integers(0, 2 ** 48)), draw(NAMES))
                for i in range(draw(st.integers(0, 4)))]
    processes = ProcessScan(draw(st.sampled_from([None, 1])), 1.0, children,
                            set(draw(st.lists(st.sampled_from(pool), max_size=2))), "rss")
    workers = None
    if draw(st.booleans()):
        workers = [worker_row(str(c.pid), draw(st.sampled_from("W_RK.")),
                              draw(st.sampled_from(["0", "5", "-1", "9" * 30, "x"])),
                              draw(NAMES), draw(st.text(ANY_CHAR, max_size=80)))
                   for c in children]
    return Snapshot(
        url=draw(st.sampled_from([URL, "http://[::1]/server-status",
                                  "https://h.example:8443/status?x=1"])),
        timestamp=draw(st.one_of(st.floats(0, 4e9), st.sampled_from([float("nan"), 1e30]))),
        up=up, error=None if up else draw(st.text(ANY_CHAR, max_size=100)),
        warnings=draw(st.lists(st.text(ANY_CHAR, max_size=100), max_size=2)),
        auto=auto, workers=workers, event_processes=None, processes=processes,
        samples=listed)


@FUZZ
@given(st.lists(snapshots(), min_size=1, max_size=3))
def test_every_line_of_every_format_is_valid_for_generated_snapshots(snaps):
    render_all(snaps)


# --- mutated captured pages through collect() ------------------------------------

class PageFetcher:
    """collect()'s fetcher, serving given bytes: the ?auto page and the HTML page."""

    def __init__(self, auto: bytes, html: bytes, url: str = URL) -> None:
        self.target = Target(url=url)
        self.port = 8080
        self.pages = {self.target.auto_url: auto, url: html}

    def get(self, url: str) -> bytes:
        return self.pages[url]

    def is_local(self) -> bool:
        return False

    def close(self) -> None:
        pass


AUTO_PAGES = sorted(p.name for p in DATA.glob("*.auto.txt"))
HTML_PAGES = sorted(p.name for p in DATA.glob("*.html"))
# Byte strings that broke (or could break) a parser or a writer, spliced in at
# random places: non-ASCII digits, huge and non-finite numbers, odd markup.
TOKENS = [b"\xb2", b"9" * 400, b"1e308", b"1e306", b"18446744073709551616", b"nan", b"inf",
          b"-", b"%", b"K", b"_", b" ", b"\t", b"\n", b"\r", b"\x00", b"\x1b[2J", b"\xff",
          b"\xd9\xa3", b"<TABLE>", b'colspan="x"', b'colspan="99999999999"', b"<th>",
          b"</th>", b"<td>", b"</td>", b"<tr>", b"</tr>", b"</table>", b"<table>", b"<",
          b">", b"&#" + b"9" * 30 + b";", b"&#x110000;", b"&amp;", b"<b>", b"Scoreboard: ",
          b"BusyWorkers: ", b"Total kBytes: ", b"\nProxyBalancer[0]Worker[0]Name: dup\n",
          b"ProxyBalancer[" + b"1" * 5000 + b"]Name: x\n", b"<th " + b"a=1 " * 50 + b">"]


@st.composite
def mutated(draw, page: bytes) -> bytes:
    """A page with a few byte-level changes: replace, insert, delete, repeat."""
    out = bytearray(page)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(out)))
        op = draw(st.sampled_from(["byte", "token", "token", "delete", "repeat"]))
        if op == "byte" and at < len(out):
            out[at] = draw(st.integers(0, 255))
        elif op == "token":
            out[at:at] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del out[at:at + draw(st.integers(1, 64))]
        elif op == "repeat":
            piece = bytes(out[at:at + draw(st.integers(1, 200))])
            out[at:at] = piece * draw(st.integers(1, 50))
    return bytes(out)


def check_snapshot(snap: Snapshot) -> None:
    """What collect() promises for any page: samples the writers can carry, and
    problems told in printable single lines."""
    for sample in snap.samples:
        assert fits(sample.metric, sample.value), sample
    for line in [snap.error or "", *snap.warnings]:
        assert line.isprintable(), line
    assert snap.up == (snap.auto is not None)


@FUZZ
@given(st.data())
def test_mutated_real_pages_never_escape_collect_and_every_output_is_valid(data_):
    auto_name = data_.draw(st.sampled_from(AUTO_PAGES))
    html_name = auto_name.replace(".auto.txt", ".html")
    auto_page = data(auto_name)
    html_page = data(html_name) if (DATA / html_name).exists() \
        else data(data_.draw(st.sampled_from(HTML_PAGES)))
    which = data_.draw(st.sampled_from(["auto", "html", "both"]))
    if which in ("auto", "both"):
        auto_page = data_.draw(mutated(auto_page))
    if which in ("html", "both"):
        html_page = data_.draw(mutated(html_page))
    snap = collect(PageFetcher(auto_page, html_page), Options(scan_processes=False))
    check_snapshot(snap)
    render_all([snap])


@pytest.mark.parametrize("name", HTML_PAGES)
def test_every_captured_page_renders_valid_lines(name):
    auto_name = name.replace(".html", ".auto.txt")
    snap = collect(PageFetcher(data(auto_name), data(name)), Options(scan_processes=False))
    assert snap.up and not snap.error
    assert not [w for w in snap.warnings if "left out" in w]  # real pages lose nothing
    check_snapshot(snap)
    render_all([snap])


# --- parse time stays linear ---------------------------------------------------------

HEAD = b"<html><body><h1>Apache Server Status for x</h1>"
ROWHEAD = b"<tr><th>Srv</th><th>PID</th><th>M</th><th>SS</th><th>Request</th></tr>"


def best_time(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _html(page: bytes) -> Callable[[], object]:
    def parse() -> object:
        try:
            return parse_html(page)
        except Exception as exc:  # noqa: BLE001 - only FetchError may escape
            assert type(exc).__name__ == "FetchError", exc
            return None
    return parse


# Page shapes that took quadratic time in a reader (n: repetitions of the unit).
SHAPES = {
    "unclosed <th>": lambda n: HEAD + b"<table><tr>" + b"<th>" * n + b"</table>",
    "closes before opens": lambda n: HEAD + b"<table><tr>" + b"</th>" * n + b"<th>" * n
    + b"</tr></table>",
    "<th without >": lambda n: HEAD + b"<table><tr>" + b"<th " * n + b"</table>",
    "<th without > then one </th>": lambda n: HEAD + b"<table><tr>" + b"<th " * n
    + b"</th></tr></table>",
    "<th> then </th without >": lambda n: HEAD + b"<table><tr><th>" + b"</th " * n
    + b"</th></tr></table>",
    "upper-case unclosed <TH>": lambda n: HEAD + b"<TABLE><TR>" + b"<TH>" * n + b"</TABLE>",
    "attributes of one tag": lambda n: HEAD + b"<TABLE><tr><th " + b"".join(
        b"a%d=1 " % i for i in range(n)) + b">PID</th></TABLE>",
    "cell of <": lambda n: HEAD + b"<table>" + ROWHEAD + b"<tr><td>0-0</td><td>1</td><td>W"
    b"</td><td>1</td><td>" + b"<" * (4 * n) + b"</td></tr></table>",
    "long character reference": lambda n: HEAD + b"<table>" + ROWHEAD + b"<tr><td>0</td>"
    b"<td>1</td><td>W</td><td>1</td><td>&#" + b"1" * (4 * n) + b";</td></tr></table>",
    "colspans": lambda n: HEAD + b"<TABLE><tr><th>Slot</th><th>PID</th><th>Stopping</th>"
    + b'<th colspan="2">x</th>' * n + b"</tr><tr>" + b"<th>y</th>" * (2 * n) + b"</TABLE>",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_html_parse_time_is_linear(shape):
    small, large = SHAPES[shape](2500), SHAPES[shape](20000)
    t_small, t_large = best_time(_html(small)), best_time(_html(large))
    # Linear: 8x the input, about 8x the time (quadratic would be 64x). The
    # slack absorbs a busy machine; the old readers took seconds here.
    assert t_large < 24 * t_small + 0.25, (shape, t_small, t_large)


def test_twenty_thousand_unclosed_th_parse_well_under_a_second():
    page = HEAD + b"<table><tr>" + b"<th>" * 20000 + b"</table>"  # took 6 s
    assert best_time(_html(page), runs=1) < 1.0
    upper = HEAD + b"<TABLE><tr>" + b"<th>" * 20000 + b"</TABLE>"
    assert best_time(_html(upper), runs=1) < 1.0


@pytest.mark.parametrize("line", [
    b"Total Accesses: " + b"9" * 100000,
    b"ProxyBalancer[" + b"1" * 100000 + b"]Worker[0]Elected: 1",
    b"ProxyBalancer[0]Worker[0]" + b"w" * 100000 + b"!: 1",
    b"CPULoad: " + b"1" * 50000 + b"." + b"1" * 50000 + b"x",
])
def test_auto_parse_time_is_linear(line):
    def page(n: int) -> str:
        return ((line + b"\n") * n + b"Scoreboard: _\n").decode("latin-1")
    t_small = best_time(lambda: parse_auto(page(2)))
    t_large = best_time(lambda: parse_auto(page(16)))
    assert t_large < 24 * t_small + 0.25, (t_small, t_large)


# --- the crashes and invalid lines of issue 11, one by one -------------------------

AUTO = data("2.4.71-event-ext-on.auto.txt").decode("latin-1")


def auto_with(key: str, value: str) -> AutoPage:
    lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line
             for line in AUTO.splitlines()]
    return parse_auto("\n".join(lines) + "\n", source=URL + "?auto")


def snap_of(page: AutoPage, scan: ProcessScan = None) -> Snapshot:
    return build(URL, 1.7e9, page, None, None,
                 scan or ProcessScan(None, None, [], set(), "rss"))


@pytest.mark.parametrize("key,value,metric", [
    ("Total Accesses", "\u00b213", "total_accesses"),  # '²'.isdigit(), int() refuses it
    ("Total Accesses", "\u066313", "total_accesses"),  # Arabic-Indic 3: int() takes it
    ("BusyWorkers", "9" * 400, "busy_workers"),
    ("CPUUser", "1e306", "cpu_user_seconds"),  # fine as a float, not as DERIVE ms
    ("Total kBytes", "1e308", "total_kbytes"),  # inf once made bytes
    ("Total kBytes", str(INT64_MAX // 1024 + 1), "total_kbytes"),  # bytes beyond int64
    ("Total Accesses", str(2 ** 64), "total_accesses"),
    ("Total Accesses", str(INT64_MAX + 1), "total_accesses"),
    ("ReqPerSec", "1_000", "requests_per_second"),
])
def test_a_value_the_outputs_cannot_carry_is_left_out_with_one_warning(key, value, metric):
    page = auto_with(key, value)
    assert metric not in page.values
    assert metric in page.left_out
    (warning,) = [w for w in page.warnings if f"'{key}'" in w]
    assert warning.startswith(URL) and "left out" in warning
    snap = snap_of(page)
    assert snap.value(metric) is None
    assert snap.warnings.count(warning) == 1
    out = render_all([snap])
    assert key.replace(" ", "") + "=" not in out["influx"]
    tab_key = BY_NAME[metric].tab_key
    if tab_key:  # on the page but unreadable: left out, not apache-manager's 0
        assert tab_key not in parse_tab(out["tab"][0])


def test_the_largest_counter_that_fits_is_kept_and_written_everywhere():
    snap = snap_of(auto_with("Total Accesses", str(INT64_MAX)))
    assert snap.value("total_accesses") == INT64_MAX
    out = render_all([snap])
    assert parse_tab(out["tab"][0])["total-accesses"] == str(INT64_MAX)
    assert validators.check_putval(out["collectd"])["web1/apache-t0/apache_requests"] \
        == [str(INT64_MAX)]
    assert f"apache_accesses_total {INT64_MAX}" in out["prometheus-apache_exporter"]


def test_kilobytes_are_kept_up_to_what_bytes_can_carry():
    snap = snap_of(auto_with("Total kBytes", str(INT64_MAX // 1024)))
    out = render_all([snap])
    assert parse_tab(out["tab"][0])["total-traffic"] == str(INT64_MAX // 1024 * 1024)


def test_upper_case_table_with_colspan_x_and_huge_colspans():
    page = (HEAD + b'<TABLE><TR><TH>Slot<TH>PID<TH>Stopping<TH colspan="x">Connections'
            b'<TH colspan="99999999999999">Threads<TR><TH>total<TH>accepting<TH>busy'
            b"<TR><TD>0<TD>42<TD>no<TD>1<TD>yes<TD>3</TABLE>")
    events = parse_html(page).event_processes
    assert [(p.slot, p.pid) for p in events] == [(0, 42)]
    for digits in ("\u00b2", "\u0663", "9" * 5000):
        odd = page.replace(b"<TD>0<TD>42", f"<TD>{digits}<TD>42".encode())
        assert parse_html(odd).event_processes == []


def test_worker_table_numbers_are_ascii_and_in_range():
    # (an entity can bring any digit; the page's bytes are ISO-8859-1: 0xB2 is '²')
    rows = [(b"&#1635;", b"1"), (b"4" * 30, b"1"), (b"43", b"9" * 30), (b"44", b"\xb2"),
            (b"0", b"1"), (b"4194304", b"1"), (b"45", b"7")]
    body = b"".join(b"<tr><td>%s</td><td>W</td><td>%s</td></tr>" % row for row in rows)
    page = parse_html(HEAD + b"<table><tr><th>PID</th><th>M</th><th>SS</th></tr>" + body
                      + b"</table>", source=URL)
    assert [(w.pid, w.ss) for w in page.workers] == [
        (None, 1), (None, 1), (43, None), (44, None), (None, 1), (None, 1), (45, 7)]
    (warning,) = page.warnings
    assert "3 rows" in warning and warning.startswith(URL)


def test_a_character_reference_of_5000_digits():
    page = (HEAD + b"<table><tr><th>PID</th><th>M</th><th>SS</th><th>Request</th></tr>"
            b"<tr><td>1</td><td>W</td><td>1</td><td>GET /&#" + b"9" * 5000
            + b";&#65;&amp;</td></tr></table>")
    assert parse_html(page).workers[0].request == "GET /\ufffdA&"


def test_a_tab_and_newline_in_a_wsgi_title_cannot_forge_a_tab_file_line():
    hostile = "x\nbusy-workers\t999\n"
    scan = ProcessScan(1, 1.0, [ProcInfo(5, 1.0, hostile, 4096, f"(wsgi:{hostile}")],
                       {hostile}, "rss")
    snap = snap_of(auto_with("BusyWorkers", "3"), scan)
    out = render_all([snap])["tab"][0]
    values = parse_tab(out)
    assert values["busy-workers"] == "3"
    assert "busy-workers 999" not in values
    assert values["memory-usage x\\x0abusy-workers\\x09999\\x0a count"] == "1"
    assert "wsgi-group-name-truncated x\\x0abusy-workers\\x09999\\x0a" in values


def test_duplicate_balancer_member_names_are_one_series_the_first():
    page = parse_auto("ProxyBalancer[0]Name: balancer://app\n"
                      "ProxyBalancer[0]Worker[0]Name: http://a\n"
                      "ProxyBalancer[0]Worker[0]Elected: 5\n"
                      "ProxyBalancer[0]Worker[1]Name: http://a\n"
                      "ProxyBalancer[0]Worker[1]Elected: 7\n"
                      "Scoreboard: _\n", source=URL)
    assert [(m.name, v) for m, _l, v, _k in page.proxy] == [("proxy_worker_elected", 5)]
    assert any("listed twice" in w for w in page.warnings)
    prom = render_all([snap_of(page)])["prometheus-apache_exporter"]
    family = BY_NAME["proxy_worker_elected"].prom
    assert prom.count(family + "{") == 1
    assert 'worker="http://a"} 5' in prom


def test_writers_drop_what_their_format_cannot_carry_even_past_build():
    # Samples appended after build() (the state file's counters) get no range
    # check there: the writers still write only valid lines.
    snap = snap_of(auto_with("BusyWorkers", "3"))
    for value in (2 ** 63, 10 ** 400, float("nan"), float("inf"), 1e308):
        snap.samples.append(Sample(BY_NAME["reaper_runs_total"], value))
        snap.samples.append(Sample(BY_NAME["reaper_kills_total"], value, (("kind", "wsgi"),)))
    out = render_all([snap])
    assert "apache_reaper" not in out["influx"]
    assert "reaper" not in out["prometheus-apache_exporter"]
    assert "reaper_runs" not in out["collectd"]


def test_two_targets_with_one_host_and_port_are_one_series_each():
    a = snap_of(auto_with("BusyWorkers", "3"))
    b = snap_of(auto_with("BusyWorkers", "4"))._replace(url=URL + "2")
    prom = render_all([a, b])["prometheus-apache_exporter"]
    busy = [line for line in prom.splitlines() if line.startswith('apache_workers{state="busy"')]
    assert busy == ['apache_workers{state="busy",server="127.0.0.1",port="8080"} 3']


def test_control_characters_never_reach_the_terminal():
    snap = snap_of(parse_auto("BusyWorkers: 1\nServerVersion: Apache\x1b]0;pwned\x07\r\n"
                              "ServerMPM: ev\x1b[2Jent\nScoreboard: W\n", source=URL))
    snap.warnings.append("note with \x1b[31mcolour\rand return")
    out = text.render([snap], argparse.Namespace(hanging_threshold=300))
    validators.check_text(out, WIDTH)
    assert "\\x1b]0;pwned\\x07" in out and "ev\\x1b[2Jent" in out
    assert "\\x1b[31mcolour\\x0dand return" in out


@example(value=float("nan"))
@given(value=NUMBERS)
@settings(max_examples=max(20, EXAMPLES // 4), deadline=None)
def test_a_value_that_does_not_fit_is_written_nowhere(value):
    for metric in ALL_METRICS:
        if metric.type is str:
            continue
        snap = snap_of(parse_auto("Scoreboard: _\n"))
        snap.samples[:] = [Sample(metric, value, tuple((n, "x") for n in metric.labels))]
        lines = influx.render([snap])
        validators.check_influx(lines)
        putval = collectd.render([snap], argparse.Namespace(hostname="h", instance=None,
                                                            interval=None))
        validators.check_putval(putval)
        prom = prometheus.render([snap])
        validators.check_prometheus(prom)
        if not fits(metric, value):
            assert lines == putval == prom == "", metric.name
        elif metric.influx:
            assert lines, metric.name


def test_units_parse_sizes_and_timespans_totally():
    from apache_metrics_exporter.units import (
        format_bytes,
        format_duration,
        parse_size,
        parse_timespan,
    )

    for bad in ("9" * 400, "\u0663", "1e400", "9" * 400 + "M"):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(ValueError):
        parse_timespan("9" * 400 + "s")
    assert format_bytes(float("inf")) == "?" and format_bytes(10 ** 400) == "?"
    assert format_duration(float("nan")) == "?" and format_duration(1e300) != ""
    assert not math.isnan(parse_timespan("1.5m"))


# --- real consumers ----------------------------------------------------------------

INTEGRATION = settings(max_examples=min(EXAMPLES, 60), deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture,
                                              HealthCheck.too_slow,
                                              HealthCheck.data_too_large])


@pytest.mark.integration
@INTEGRATION
@given(snaps=st.lists(snapshots(), min_size=1, max_size=2))
def test_real_influxdb_accepts_every_generated_batch(influxdb, snaps):
    influxdb.query('CREATE DATABASE "fuzz"')
    # One field type per measurement and field across the database: the
    # catalogue fixes it, and apache.* is always float (Telegraf's types).
    body = influx.render(snaps).encode("utf-8")
    if body:
        status, error = influxdb.write("fuzz", body)
        assert status == 204, (error, body[:2000])


PROMTOOL_LINT = (
    "metric names should not contain abbreviated units",
    'use base unit "bytes" instead of "kilobytes"',
    "counter metrics should have \"_total\" suffix",
    "non-histogram and non-summary metrics should not have \"_sum\" suffix",
    "non-histogram and non-summary metrics should not have \"_count\" suffix",
)


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian prometheus) missing")
@INTEGRATION
@given(snaps=st.lists(snapshots(), min_size=1, max_size=2))
def test_promtool_parses_every_generated_exposition(snaps):
    for naming in ("apache_exporter", "base-units"):
        body = prometheus.render(snaps, argparse.Namespace(prometheus_naming=naming))
        check = subprocess.run(["promtool", "check", "metrics"], input=body.encode("utf-8"),
                               capture_output=True, timeout=60)
        report = (check.stdout + check.stderr).decode("utf-8", "replace")
        problems = [line for line in report.splitlines()
                    if line and not any(lint in line for lint in PROMTOOL_LINT)]
        assert not problems, (problems, body[:2000])
