"""Interval figures: rates and request durations between two collections
(intervals.py, compared at restarts.track's one place)."""

from __future__ import annotations

import json

import pytest

from apache_metrics_exporter import intervals, restarts
from apache_metrics_exporter.collect.clients import own_requests
from apache_metrics_exporter.collect.processes import EMPTY_SCAN
from apache_metrics_exporter.collect.snapshot import build
from apache_metrics_exporter.collect.status import parse_auto, parse_html
from apache_metrics_exporter.writers import collectd, influx, prometheus, tab, text
from tests import validators

URL = "http://127.0.0.1:8080/server-status"
T0 = 1_700_000_000.0

HEAD = ("<html><head><title>Apache Status</title></head><body><h1>Apache Server Status</h1>"
        "<table border=\"0\"><tr><th>Srv</th><th>PID</th><th>Acc</th><th>M</th><th>CPU\n"
        "</th><th>SS</th><th>Req</th><th>Dur</th><th>Conn</th><th>Child</th><th>Slot</th>"
        "<th>Client</th><th>Protocol</th><th>VHost</th><th>Request</th></tr>\n")


def page(rows, dur=True):
    """A worker table: rows of (srv, pid, count, mode, req, dur, vhost, request)."""
    head = HEAD if dur else HEAD.replace("<th>Dur</th>", "")
    out = [head]
    for srv, pid, count, mode, req, total, vhost, request in rows:
        cells = [f"<b>{srv}-0</b>", str(pid), f"0/{count}/{count}", mode, "0.01", "1",
                 str(req)] + ([str(total)] if dur else []) + [
                 "0.0", "0.00", "0.00", "127.0.0.1", "http/1.1", vhost, request]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>\n")
    out.append("</table></body></html>")
    return "".join(out).encode()


def auto(accesses, kbytes=100, duration=0, uptime=1000, config=1, mpm="event"):
    return parse_auto(
        f"127.0.0.1\nServerVersion: Apache/2.4.71 (Debian)\nServerMPM: {mpm}\n"
        f"ParentServerConfigGeneration: {config}\nParentServerMPMGeneration: 0\n"
        f"ServerUptimeSeconds: {uptime}\nTotal Accesses: {accesses}\n"
        f"Total kBytes: {kbytes}\nTotal Duration: {duration}\nUptime: {uptime}\n"
        "BusyWorkers: 1\nIdleWorkers: 4\nScoreboard: _W___\n")


def snap(at, accesses, rows, kbytes=100, duration=0, uptime=None, dur=True, config=1,
         mpm="event"):
    uptime = int(1000 + at - T0) if uptime is None else uptime
    return build(URL, at, auto(accesses, kbytes, duration, uptime, config, mpm),
                 parse_html(page(rows, dur)).workers, None, EMPTY_SCAN)


def values(s, name, **labels):
    return s.value(name, **labels)


def test_first_collection_has_no_interval_figures_then_rates_follow():
    memory = restarts.Memory()
    first = snap(T0, 100, [(0, 11, 5, "_", 10, 50, "a", "GET /x HTTP/1.1")], duration=500)
    restarts.track([first], None, memory=memory)
    assert not [s for s in first.samples if s.metric.name.startswith(("interval_",
                                                                       "request_duration"))]
    second = snap(T0 + 10, 150, [(0, 11, 6, "_", 30, 80, "a", "GET /x HTTP/1.1")],
                  kbytes=120, duration=1500)
    restarts.track([second], None, memory=memory)
    assert values(second, "interval_seconds") == 10
    assert values(second, "interval_requests_per_second") == 5.0
    assert values(second, "interval_bytes_per_second") == 20 * 1024 / 10
    assert values(second, "interval_request_duration_seconds") == 1000 / 50 / 1000


def test_a_hard_restart_leaves_the_interval_figures_out():
    memory = restarts.Memory()
    restarts.track([snap(T0, 100000, [])], None, memory=memory)
    after = snap(T0 + 60, 10, [], uptime=5)  # counters started again from 0
    restarts.track([after], None, memory=memory)
    assert values(after, "interval_requests_per_second") is None
    assert values(after, "interval_seconds") is None
    later = snap(T0 + 70, 30, [], uptime=15)
    restarts.track([later], None, memory=memory)
    assert values(later, "interval_requests_per_second") == 2.0


def test_a_counter_that_goes_down_gives_no_rate():
    memory = restarts.Memory()
    restarts.track([snap(T0, 100, [], kbytes=500)], None, memory=memory)
    odd = snap(T0 + 10, 90, [], kbytes=400)  # not seen as a restart (same start time)
    restarts.track([odd], None, memory=memory)
    assert values(odd, "interval_requests_per_second") is None
    assert values(odd, "interval_bytes_per_second") is None


def test_an_older_reading_than_the_remembered_one_gets_nothing():
    memory = restarts.Memory()
    restarts.track([snap(T0, 100, [])], None, memory=memory)
    restarts.track([snap(T0 + 20, 300, [])], None, memory=memory)
    late = snap(T0 + 10, 200, [])  # a concurrent scrape that finished last
    restarts.track([late], None, memory=memory)
    assert values(late, "interval_requests_per_second") is None
    newest = snap(T0 + 30, 400, [])
    restarts.track([newest], None, memory=memory)
    assert values(newest, "interval_seconds") == 10  # from T0 + 20, the newest


ROW = (0, 11, 5, "_", 10, 50, "a", "GET /x HTTP/1.1")


@pytest.mark.parametrize("mpm, factor", [("prefork", 0.5), ("worker", 0.5), ("WinNT", 0.5),
                                         ("event", 1.0), ("", 1.0), ("someday", 1.0)])
def test_the_mpm_gives_the_dur_factor_until_a_slot_measures_it(mpm, factor):
    # Every slot served two requests: none tells the factor (dur_scale needs
    # one request alone), so the synchronous MPMs' double count (http_request.c
    # stops the clock twice) comes from ServerMPM; unknown MPMs are taken as 1.
    memory = restarts.Memory()
    first = [(0, 11, 5, "_", 10, 50, "a", "GET /x HTTP/1.1"),
             (1, 12, 5, "_", 10, 50, "a", "GET /x HTTP/1.1")]
    later = [(0, 11, 7, "_", 100, 50 + 400, "a", "GET /x HTTP/1.1"),
             (1, 12, 7, "_", 100, 50 + 400, "a", "GET /x HTTP/1.1")]
    restarts.track([snap(T0, 100, first, duration=1000, mpm=mpm)], None, memory=memory)
    second = snap(T0 + 10, 104, later, duration=1000 + 1600, mpm=mpm)
    restarts.track([second], None, memory=memory)
    assert values(second, "request_duration_sampled") == 4
    # Dur delta 400 per slot: the last request's Req 100 and the other at
    # (400 * factor - 100).
    assert values(second, "request_duration_max_seconds") == \
        pytest.approx(max(0.1, (400 * factor - 100) / 1000))
    assert values(second, "request_duration_sum") == pytest.approx(2 * 400 * factor / 1000)
    assert values(second, "interval_request_duration_seconds") == \
        pytest.approx(1600 / 4 / 1000 * factor)


def test_what_the_slots_measure_wins_over_the_mpm():
    # A prefork Apache that counts Dur once (a fixed release): a lone request
    # shows Dur delta = Req, so the factor is measured as 1, not assumed 0.5.
    memory = restarts.Memory()
    rows = [(0, 11, 5, "_", 10, 50, "a", "GET /x HTTP/1.1")]
    restarts.track([snap(T0, 100, rows, duration=1000, mpm="prefork")], None, memory=memory)
    one = snap(T0 + 10, 101, [(0, 11, 6, "_", 300, 350, "a", "GET /x HTTP/1.1")],
               duration=1300, mpm="prefork")
    restarts.track([one], None, memory=memory)
    assert values(one, "request_duration_max_seconds") == 0.3
    assert values(one, "interval_request_duration_seconds") == pytest.approx(0.3)


def durations(before_rows, after_rows, dur=True):
    """The observations between two pages, as (ms, weight, vhost)."""
    old = intervals.slots(parse_html(page(before_rows, dur)).workers)
    obs, own, _scale = intervals.observe(old, parse_html(page(after_rows, dur)).workers,
                                         own_requests(URL))
    return sorted(obs), own


def test_one_request_per_slot_is_exact():
    # Dur delta (2.4.35+), or Req on a slot between requests without Dur.
    assert durations([ROW], [(0, 11, 6, "_", 120, 170, "a", "GET /x HTTP/1.1")]) == \
        ([(120.0, 1, "a")], 0)
    assert durations([ROW], [(0, 11, 6, "W", 0, 170, "a", "GET /y HTTP/1.1")]) == \
        ([(120.0, 1, "a")], 0)  # busy again: Req says 0, the Dur delta is exact
    assert durations([ROW], [(0, 11, 6, "K", 120, 0, "a", "GET /x HTTP/1.1")], dur=False) \
        == ([(120.0, 1, "a")], 0)


def test_several_requests_per_slot_last_exact_rest_at_their_mean():
    obs, _ = durations([ROW], [(0, 11, 9, "_", 200, 50 + 200 + 3 * 100, "a", "GET / H")])
    assert obs == [(100.0, 3, "a"), (200.0, 1, "a")]
    # Busy with a new request: Req is not the last one's; all four at the mean.
    obs, _ = durations([ROW], [(0, 11, 9, "W", 0, 50 + 800, "a", "GET / H")])
    assert obs == [(200.0, 4, "a")]
    # Without Dur only the last one is seen.
    obs, _ = durations([ROW], [(0, 11, 9, "_", 200, 0, "a", "GET / H")], dur=False)
    assert obs == [(200.0, 1, "a")]


def test_a_new_process_in_a_slot_or_more_threads_are_skipped():
    assert durations([ROW], [(0, 12, 9, "_", 200, 900, "a", "GET / H")]) == ([], 0)
    two = [(1, 20, 3, "_", 10, 30, "a", "GET / H"), (1, 20, 4, "_", 10, 40, "a", "GET / H")]
    three = two + [(1, 20, 1, "_", 10, 10, "a", "GET / H")]
    assert durations(two, three) == ([], 0)
    # A process slot not on the previous page had served nothing: all new.
    assert durations([ROW], [ROW, (2, 30, 2, "_", 7, 12, "b", "GET / H")]) == \
        ([(5.0, 1, "b"), (7.0, 1, "b")], 0)


def test_the_exporters_own_status_requests_are_left_out():
    obs, own = durations([ROW], [(0, 11, 7, "_", 1, 52, "a",
                                  "GET /server-status?auto HTTP/1.1")])
    assert (obs, own) == ([], 2)
    obs, own = durations([ROW], [(0, 11, 6, "_", 1, 51, "a", "GET /server-status HTTP/1.1")])
    assert (obs, own) == ([], 1)


def test_a_clients_request_on_the_slot_of_our_own_is_not_taken_for_ours():
    """Measured on a real event Apache (2.4.71): the exporter's HTML read is
    served by whichever thread is idle, often one that has just served a
    client; its row then shows our request line (in W) over the client's
    completed request. Our own reads cannot have taken longer than the two
    collections did (``own_ms``): a slot whose requests took longer served
    a client too, and that client's request is sampled."""
    html, auto = own_requests(URL)
    # Busy with our HTML read; since the last page it completed one 300 ms
    # request of a client (event: our ?auto went to another thread).
    after = [(0, 11, 6, "W", 0, 50 + 300, "a", html)]
    old = intervals.slots(parse_html(page([ROW])).workers)
    assert intervals.observe(old, parse_html(page(after)).workers, own_requests(URL),
                             own_ms=20.0)[:2] == ([(300.0, 1, "a")], 0)
    # Prefork, a new connection: our ?auto (1 ms) then our HTML read on a
    # process that had served a client's 300 ms request: one is ours.
    after = [(0, 11, 7, "W", 0, 50 + 301, "a", html)]
    assert intervals.observe(old, parse_html(page(after)).workers, own_requests(URL),
                             own_ms=20.0)[:2] == ([(301.0, 1, "a")], 1)
    # Between requests, our ?auto last (Req 1 ms exact), a client's before it.
    after = [(0, 11, 7, "_", 1, 50 + 301, "a", auto)]
    assert intervals.observe(old, parse_html(page(after)).workers, own_requests(URL),
                             own_ms=20.0)[:2] == ([(300.0, 1, "a")], 1)
    # Within what our reads can have taken: ours, as before.
    for after in ([(0, 11, 6, "W", 0, 52, "a", html)], [(0, 11, 7, "W", 0, 53, "a", html)],
                  [(0, 11, 7, "_", 1, 53, "a", auto)]):
        obs, ours, _scale = intervals.observe(old, parse_html(page(after)).workers,
                                              own_requests(URL), own_ms=20.0)
        assert (obs, ours) == ([], after[0][2] - ROW[2])
    # Our last read alone on its slot is ours whatever the slot says it took.
    after = [(0, 11, 6, "_", 1, 50 + 300, "a", auto)]
    assert intervals.observe(old, parse_html(page(after)).workers, own_requests(URL),
                             own_ms=20.0)[:2] == ([], 1)


def test_our_read_whose_line_the_event_mpm_blanked_is_still_ours():
    """Measured on a real event Apache (2.4.71): a thread that served our
    HTML read and then closed a client's connection (lingering close) shows
    no request line and no host, and our read was sampled as a request of
    0 ms - in 6 of 30 intervals. At least two of our reads finish in every
    interval: when fewer show our line, quick blank slots make up the rest."""
    html, auto = own_requests(URL)
    rows = [ROW, (1, 12, 5, "_", 10, 50, "a", "GET /x HTTP/1.1"),
            (2, 13, 5, "_", 10, 50, "a", "GET /x HTTP/1.1")]
    old = intervals.slots(parse_html(page(rows)).workers)

    def seen(after, own_ms=20.0):
        obs, ours, _scale = intervals.observe(old, parse_html(page(after)).workers,
                                              own_requests(URL), own_ms=own_ms)
        return sorted(obs), ours

    ours = (0, 11, 6, "_", 0, 50, "a", auto)
    client = (1, 12, 6, "_", 300, 350, "a", "GET /x HTTP/1.1")
    # Our HTML read's slot, blanked: ours, as the ?auto read's is.
    assert seen([ours, client, (2, 13, 6, "_", 0, 50, "", "")]) == ([(300.0, 1, "a")], 2)
    # Both blanked: both ours.
    assert seen([(0, 11, 6, "_", 0, 50, "", ""), client, (2, 13, 6, "_", 1, 51, "", "")]) \
        == ([(300.0, 1, "a")], 2)
    # Never more than two, the quickest: a client's quick request stays a request.
    assert seen([(0, 11, 6, "_", 1, 51, "", ""), (1, 12, 6, "_", 3, 53, "", ""),
                 (2, 13, 6, "_", 0, 50, "", "")]) == ([(3.0, 1, "")], 2)
    # Our HTML read, then a client's 60 ms request on the same thread (its
    # Req): the first of the two is ours.
    assert seen([ours, client, (2, 13, 7, "_", 60, 50 + 63, "", "")]) == \
        ([(60.0, 1, ""), (300.0, 1, "a")], 2)
    # Two of ours by their lines: a blank slot is a client's.
    assert seen([ours, (1, 12, 6, "W", 0, 50, "a", html), (2, 13, 6, "_", 0, 50, "", "")]) \
        == ([(0.0, 1, "")], 2)
    # A blank slot that took longer than our reads can: a client's.
    assert seen([ours, client, (2, 13, 6, "_", 300, 350, "", "")]) == \
        ([(300.0, 1, ""), (300.0, 1, "a")], 1)
    # Without the bound (an older reading), as before: the line decides.
    assert seen([ours, client, (2, 13, 6, "_", 0, 50, "", "")], own_ms=None) == \
        ([(0.0, 1, ""), (300.0, 1, "a")], 1)


def test_the_bound_on_our_own_reads_is_what_the_two_collections_took():
    """derive gives observe the two readings' collection durations (s) as
    the bound (ms); without both it keeps the request-line rule alone."""
    html, _auto = own_requests(URL)
    memory = restarts.Memory()
    for at, accesses, rows in ((T0, 100, [ROW]),
                               (T0 + 10, 102, [(0, 11, 6, "W", 0, 50 + 300, "a", html)])):
        last = build(URL, at, auto(accesses, mpm="event", uptime=int(1000 + at - T0)),
                     parse_html(page(rows)).workers, None, EMPTY_SCAN, duration=0.005)
        restarts.track([last], None, memory=memory)
    assert values(last, "request_duration_sampled") == 1
    assert values(last, "request_duration_max_seconds") == 0.3
    before = {"figures": {"accesses": 100}, "slots": intervals.slots(
        parse_html(page([ROW])).workers), "time": T0}
    now = {"figures": {"accesses": 102}, "time": T0 + 10}
    rows = parse_html(page([(0, 11, 6, "W", 0, 50 + 300, "a", html)])).workers
    got = intervals.derive(before, now, rows, own_requests(URL), 0, "event")
    assert [s.value for s in got if s.metric.name == "request_duration_sampled"] == [0]
    before["duration"], now["duration"] = 0.004, 0.005
    got = intervals.derive(before, now, rows, own_requests(URL), 0, "event")
    assert [s.value for s in got if s.metric.name == "request_duration_sampled"] == [1]


@pytest.mark.parametrize("line", [
    "GET /server-status?refresh=5 HTTP/1.1",  # someone's browser
    "GET /server-status?ame=0a1b2c3d4e5f6071 HTTP/1.1",  # a reaper's read (its nonce)
    "HEAD /server-status HTTP/1.1", "GET /server-status HTTP/1.0"])
def test_other_reads_of_the_status_page_are_requests_like_any_other(line):
    """Only the collector's own request lines are its own, not every request
    for the same path (which the path-only match took out of the figures)."""
    obs, own = durations([ROW], [(0, 11, 6, "_", 3, 53, "a", line)])
    assert (obs, own) == ([(3.0, 1, "a")], 0)


def test_quantiles_are_nearest_rank_over_weights():
    values_ = [(10.0, 50), (100.0, 30), (500.0, 15), (2000.0, 5)]
    assert intervals.quantile(values_, 0.5) == 10.0
    assert intervals.quantile(values_, 0.51) == 100.0
    assert intervals.quantile(values_, 0.9) == 500.0
    assert intervals.quantile(values_, 0.99) == 2000.0


def pair(vhost_limit=20):
    memory = restarts.Memory()
    rows0 = [(i, 100 + i, 5, "_", 10, 50, f"v{i % 3}", "GET /x H") for i in range(6)]
    rows1 = [(i, 100 + i, 6, "_", 10 * (i + 1), 50 + 10 * (i + 1), f"v{i % 3}", "GET /x H")
             for i in range(6)]
    first = snap(T0, 100, rows0, duration=300)
    second = snap(T0 + 10, 106, rows1, duration=300 + 210)
    restarts.track([first], None, memory=memory, vhost_limit=vhost_limit)
    restarts.track([second], None, memory=memory, vhost_limit=vhost_limit)
    return second


def test_histogram_percentiles_and_share():
    s = pair()
    assert values(s, "request_duration_sampled") == 6
    assert values(s, "request_duration_sampled_ratio") == 1.0
    assert values(s, "request_duration_p50_seconds") == 0.03
    assert values(s, "request_duration_max_seconds") == 0.06
    assert values(s, "request_duration_count") == 6
    assert values(s, "request_duration_sum") == pytest.approx(0.21)
    assert values(s, "request_duration_bucket", le="0.01") == 1
    assert values(s, "request_duration_bucket", le="0.05") == 5
    assert values(s, "request_duration_bucket", le="+Inf") == 6
    assert values(s, "vhost_request_duration_max_seconds", vhost="v0") == 0.04
    assert values(s, "vhost_request_duration_sampled", vhost="v2") == 2


def test_vhost_limit_folds_the_rest_into_other():
    s = pair(vhost_limit=1)
    names = {dict(x.labels).get("vhost") for x in s.samples
             if x.metric.name == "vhost_request_duration_sampled"}
    assert names == {"v0", "other"}
    assert values(s, "vhost_request_duration_sampled", vhost="other") == 4


def test_every_format_writes_them():
    s = pair()
    prom = prometheus.render([s])
    assert "# TYPE apache_request_duration_seconds histogram" in prom
    assert 'apache_request_duration_seconds_bucket{le="+Inf"} 6' in prom
    assert "apache_interval_requests_per_second 0.6" in prom
    assert 'apache_vhost_request_duration_seconds_count{vhost="v1"} 2' in prom
    assert prom.count("# TYPE apache_request_duration_seconds ") == 1
    lines = influx.render([s])
    interval = [ln for ln in lines.splitlines() if ln.startswith("apache_interval,")]
    assert len(interval) == 1 and "request_duration_sampled=6i" in interval[0]
    assert "request_duration_p50_seconds=0.03" in interval[0]
    assert [ln for ln in lines.splitlines() if ln.startswith("apache_vhost_interval,")
            and "vhost=v0" in ln]
    validators.check_influx(lines)
    validators.check_prometheus(prom)
    putval = collectd.render([s], collectd.Settings(hostname="h"))
    assert "/response_time-request_duration_p99" in putval
    assert "/requests-interval" in putval
    assert "/response_time-vhost_p50_v0" in putval
    validators.check_putval(putval)
    metrics = tab.render([s])
    validators.check_tab(metrics)
    assert "interval-requests-per-second\t0.6\n" in metrics
    assert "request-duration-p50\t0.03\n" in metrics
    assert "vhost-request-duration-max\tv0\t0.04\n" in metrics
    summary = text.render([s])
    assert "now: 0.6 requests/s" in summary and "p50 30 ms" in summary


def test_the_one_shot_state_keeps_slots_bounded(tmp_path):
    path = tmp_path / "state.json"
    rows = [(i // 25, 1000 + i // 25, 100000 + i, "_", 1234, 9999999, "v", "GET / H")
            for i in range(2000)]
    restarts.track([snap(T0, 100, rows)], str(path))
    size = path.stat().st_size
    assert size < 60_000  # about 25 bytes a row
    state = json.loads(path.read_text())
    reading = state["targets"][URL]["reading"]
    assert len(reading["slots"]) == 80
    second = snap(T0 + 10, 2100, [(s, p, c + 1, m, 5, d + 5, v, q)
                                  for s, p, c, m, r, d, v, q in rows])
    restarts.track([second], str(path))
    assert values(second, "request_duration_sampled") == 2000
    assert values(second, "request_duration_p99_seconds") == 0.005


def test_slot_tables_go_first_when_the_file_would_outgrow_its_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(restarts, "MAX_BYTES", 20_000)
    path = tmp_path / "state.json"
    rows = [(i // 25, 1000 + i // 25, 100000 + i, "_", 1234, 9999999, "v", "GET / H")
            for i in range(2000)]
    restarts.track([snap(T0, 100, rows)], str(path))
    state = json.loads(path.read_text())
    assert "slots" not in state["targets"][URL]["reading"]
    assert path.stat().st_size <= 20_000


def test_a_stored_slot_table_of_the_wrong_shape_is_no_state(tmp_path):
    path = tmp_path / "state.json"
    restarts.track([snap(T0, 100, [ROW])], str(path))
    state = json.loads(path.read_text())
    state["targets"][URL]["reading"]["slots"] = {"0": [1, 2]}
    path.write_text(json.dumps(state))
    later = snap(T0 + 10, 110, [ROW])
    restarts.track([later], str(path))
    assert values(later, "interval_seconds") is None  # moved aside: starts again
    assert list(tmp_path.glob("state.json.corrupt-*"))


@pytest.mark.parametrize("index,value", [(1, -(10 ** 18)), (1, 2 ** 63), (0, -5), (3, -(10 ** 30))])
def test_a_stored_slot_table_with_numbers_no_page_gives_is_no_state(tmp_path, index, value):
    # Red-team: a slot table's ints were checked for type only; a stored
    # count of -10**18 made the next run report 10**18 sampled requests (and
    # a histogram that the run after found corrupt). A page gives counts,
    # PIDs and Req/Dur of 0..int64, -1 for an absent cell.
    path = tmp_path / "state.json"
    restarts.track([snap(T0, 100, [ROW])], str(path))
    state = json.loads(path.read_text())
    state["targets"][URL]["reading"]["slots"]["0"][index] = value
    path.write_text(json.dumps(state))
    later = snap(T0 + 10, 110, [ROW[:2] + (ROW[2] + 1,) + ROW[3:]])
    restarts.track([later], str(path))
    assert values(later, "request_duration_sampled") is None
    assert values(later, "interval_seconds") is None  # moved aside: starts again
    assert list(tmp_path.glob("state.json.corrupt-*"))


@pytest.mark.parametrize("accs, counts", [
    (["0/3/7", "2/5/9"], [7, 9]),                      # the slot's count: the third number
    (["0/7", "1/2/3/4", "0/1/6"], [None, None, 6]),    # slashes that even out over the column
    (["0/1/x", "0/1/", "0/1/" + "9" * 19, "0/1/\u0663"], [None, None, None, None]),
    ([], []),
])
def test_the_acc_column_is_read_as_cell_by_cell(accs, counts):
    """The Acc column is read at once (one join and split when every cell has
    its two slashes): the same counts as each cell read on its own."""
    assert intervals._accs(accs) == counts == [intervals._acc(a) for a in accs]


def test_slots_hold_the_third_number_of_acc():
    rows = [(0, 11, 5, "_", 120, 170, "a", "GET /x HTTP/1.1"),
            (1, 12, 8, "_", 10, 20, "a", "GET /x HTTP/1.1")]
    raw = page(rows).replace(b"<td>0/5/5</td>", b"<td>3/1/5</td>") \
        .replace(b"<td>0/8/8</td>", b"<td>1/2/8</td>")
    assert intervals.slots(parse_html(raw).workers) == {"0": [11, 5, 120, 170],
                                                        "1": [12, 8, 10, 20]}


@pytest.mark.parametrize("hostile", [9e18, 1e6, -1.0, 0.0, 0.25])
def test_a_dur_scale_from_the_state_file_is_one_apache_can_have(hostile):
    """Red team (redteam5): the Dur factor a one-shot run carries over in
    the collector state file was any finite number: 9e18 there scaled every
    duration by it - a request of 0.4 s reported as 3.6e15 s - and the
    saved histogram then broke valid_hist's bound, so the next run set the
    whole state aside as corrupt. Only 0.5 and 1.0 (what dur_scale finds)
    are taken; any other is as if none was kept."""
    rows = [(0, 11, 7, "_", 100, 50 + 400, "a", "GET /x HTTP/1.1")]  # no slot tells
    before = {"figures": {"accesses": 100, "dur_scale": hostile}, "time": T0,
              "slots": intervals.slots(parse_html(page([ROW])).workers)}
    now = {"figures": {"accesses": 102}, "time": T0 + 10}
    got = intervals.derive(before, now, parse_html(page(rows)).workers, own_requests(URL),
                           0, "event")
    assert [s.value for s in got if s.metric.name == "request_duration_sum"] == [0.4]
    assert now["figures"]["dur_scale"] == 1.0 and intervals.valid_hist(now["hist"])
