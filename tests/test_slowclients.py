"""Slow clients and clients holding workers (issue 20 item 4, docs/insight.md):
workers reading a request and the oldest one's age, distinct clients among
busy workers and the top client's share, per-client counts with
--client-limit; on captured pages, synthesized tables and a real slowloris
client against a private Apache."""

from __future__ import annotations

import argparse
import http.client
import threading
import time

import pytest

from apache_metrics_exporter.catalogue import CLIENT_METRICS
from apache_metrics_exporter.collect.http import Fetcher, Target
from apache_metrics_exporter.collect.processes import EMPTY_SCAN
from apache_metrics_exporter.collect.snapshot import Options, build, collect
from apache_metrics_exporter.collect.status import parse_auto, parse_html
from apache_metrics_exporter.watch import screen_lines
from apache_metrics_exporter.writers import collectd, influx, prometheus, tab, text
from tests.conftest import data, parse_tab, run_exporter
from tests.harness.slowloris import Slowloris
from tests.validators import check_influx, check_prometheus, check_putval, check_tab

URL = "http://127.0.0.1/server-status"
NAMES = {m.name for m in CLIENT_METRICS}
COUNTS = ("reading_workers", "reading_oldest_seconds", "busy_clients", "top_client_share")


def figures(snap) -> dict:
    """{metric: value} of the unlabelled slow-client samples, and
    {client: busy workers} under "per_client"."""
    out: dict = {}
    for s in snap.samples:
        if s.metric.name == "client_busy_workers":
            out.setdefault("per_client", {})[dict(s.labels)["client"]] = s.value
        elif s.metric.name in NAMES:
            out[s.metric.name] = s.value
    return out


def captured(mpm: str, limit: int = 0, url: str = URL):
    auto = parse_auto(data(f"2.4.71-{mpm}-slowloris.auto.txt").decode("latin-1"))
    html = parse_html(data(f"2.4.71-{mpm}-slowloris.html"))
    return build(url, 0.0, auto, html.workers, html.event_processes, EMPTY_SCAN,
                 Options(client_limit=limit))


def collectd_settings():
    return argparse.Namespace(hostname="h", instance=None, interval=None)


def every_format(snap) -> dict:
    return {"tab": tab.render([snap]), "influx": influx.render([snap]),
            "collectd": collectd.render([snap], collectd_settings()),
            "prometheus": prometheus.render([snap]), "text": text.render([snap])}


# --- captured pages: a real slowloris client (tests/data/README.md) ---------

@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_captured_slowloris_page(mpm):
    # 4 connections of 127.0.0.3 reading (R), one ordinary request of
    # 127.0.0.2; the collector's own requests (127.0.0.1) are not clients.
    got = figures(captured(mpm, limit=1))
    assert got == {"reading_workers": 4, "reading_oldest_seconds": 2, "busy_clients": 2,
                   "top_client_share": 0.8,
                   "per_client": {"127.0.0.3": 4, "other": 1}}


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_no_address_is_written_by_default(mpm):
    snap = captured(mpm)
    assert "per_client" not in figures(snap)
    for fmt, out in every_format(snap).items():
        assert "127.0.0.3" not in out and "127.0.0.2" not in out, fmt
    # With --client-limit the addresses are there, in every machine format.
    for fmt, out in every_format(captured(mpm, limit=2)).items():
        if fmt != "text":
            assert "127.0.0.3" in out and "127.0.0.2" in out, fmt


def test_every_format_carries_the_figures():
    snap = captured("event", limit=1)
    out = every_format(snap)
    values = check_tab(out["tab"])
    assert out["tab"].index("# Slow clients") > out["tab"].index("# Collection health")
    assert {k: values[k] for k in ("reading-workers", "reading-oldest-seconds",
                                   "busy-clients", "top-client-share",
                                   "client-busy-workers\t127.0.0.3",
                                   "client-busy-workers\tother")} == {
        "reading-workers": "4", "reading-oldest-seconds": "2", "busy-clients": "2",
        "top-client-share": "0.8", "client-busy-workers\t127.0.0.3": "4",
        "client-busy-workers\tother": "1"}
    points = {(m, tuple(sorted(t.items()))): f for m, t, f, _ in check_influx(out["influx"])}
    base = (("port", "80"), ("server", "127.0.0.1"))
    assert points[("apache_clients", base)] == {
        "reading_workers": 4, "reading_oldest_seconds": 2, "busy_clients": 2,
        "top_client_share": 0.8}
    assert points[("apache_client", tuple(sorted(base + (("client", "127.0.0.3"),))))] == {
        "busy_workers": 4}
    putval = {ident.split("/", 2)[2]: v[-1] for ident, v in check_putval(out["collectd"]).items()}
    assert {k: float(putval[k]) for k in (
        "count-reading_workers", "duration-reading_oldest", "count-busy_clients",
        "percent-top_client_share", "count-client_busy_127.0.0.3",
        "count-client_busy_other")} == {
        "count-reading_workers": 4, "duration-reading_oldest": 2, "count-busy_clients": 2,
        "percent-top_client_share": 80, "count-client_busy_127.0.0.3": 4,
        "count-client_busy_other": 1}
    series = check_prometheus(out["prometheus"])
    assert series[("apache_reading_workers", ())] == 4
    assert series[("apache_reading_oldest_seconds", ())] == 2
    assert series[("apache_busy_clients", ())] == 2
    assert series[("apache_top_client_share_ratio", ())] == 0.8
    assert series[("apache_client_busy_workers", (("client", "127.0.0.3"),))] == 4
    assert series[("apache_client_busy_workers", (("client", "other"),))] == 1
    assert "slow clients: 4 reading (oldest 2s); 2 clients hold the busy workers, " \
           "top 80%" in out["text"]
    assert "busy workers per client: 127.0.0.3 4, other 1" in out["text"]


def test_watch_shows_the_slow_clients():
    lines = screen_lines(captured("prefork", limit=1), "memory", 300)
    assert any(ln.startswith("slow clients: 4 reading (oldest 2s)") for ln in lines), lines
    assert "busy workers per client: 127.0.0.3 4, other 1" in lines


def test_the_collectors_own_request_is_not_a_client():
    # The captured ext-on page: the collector's GET /server-status and one
    # request sleeping, both from 127.0.0.1.
    auto = parse_auto(data("2.4.71-prefork-ext-on.auto.txt").decode("latin-1"))
    workers = parse_html(data("2.4.71-prefork-ext-on.html")).workers

    def per_client(url):
        snap = build(url, 0.0, auto, workers, None, EMPTY_SCAN, Options(client_limit=5))
        return figures(snap)["per_client"]

    assert per_client(URL) == {"127.0.0.1": 1}
    assert per_client("http://127.0.0.1:8080/server-status") == {"127.0.0.1": 1}
    # Another page's request is a client like any other.
    assert per_client("http://127.0.0.1/other-status") == {"127.0.0.1": 2}


# --- synthesized tables ------------------------------------------------------

def page(rows, client_column: bool = True) -> bytes:
    """The captured prefork page with its worker rows replaced by (mode, ss,
    client, request); without the Client column if asked."""
    html = data("2.4.71-prefork-ext-on.html").decode("latin-1").replace(
        "Server uptime:  1 second", "Server uptime:  1 hour")  # else an SS > 1 is impossible
    head = html[:html.index("<tr><td><b>0-0")]
    if not client_column:
        head = head.replace("<th>Client</th>", "")
    body = "".join(
        f"<tr><td><b>{n}-0</b></td><td>{1000 + n}</td><td>0/1/1</td><td><b>{mode}</b>\n"
        f"</td><td>0.01</td><td>{ss}</td><td>0</td><td>1</td><td>0.0</td><td>0.00</td>"
        f"<td>0.00\n</td>" + (f"<td>{client}</td>" if client_column else "")
        + f"<td>http/1.1</td><td nowrap>www.example.org:80</td><td nowrap>{request}</td>"
        "</tr>\n" for n, (mode, ss, client, request) in enumerate(rows))
    return (head + body + "</table>\n</body></html>\n").encode("latin-1")


def synthesized(rows, limit: int = 0, client_column: bool = True):
    auto = parse_auto(data("2.4.71-prefork-ext-on.auto.txt").decode("latin-1"))
    html = parse_html(page(rows, client_column))
    assert html.workers is not None and len(html.workers) == len(rows)
    return build(URL, 0.0, auto, html.workers, None, EMPTY_SCAN, Options(client_limit=limit))


OWN = ("W", 0, "127.0.0.1", "GET /server-status HTTP/1.1")


def test_idle_server_reads_zero_not_one_client_holding_everything():
    got = figures(synthesized([OWN, ("_", 40, "10.0.0.9", "GET / HTTP/1.1"),
                               (".", 0, "", "")], limit=3))
    assert got == {"reading_workers": 0, "reading_oldest_seconds": 0, "busy_clients": 0,
                   "top_client_share": 0.0}


def test_reading_rows_counted_and_the_oldest_measured():
    got = figures(synthesized([OWN, ("R", 7, "10.0.0.1", ""), ("R", 30, "10.0.0.1", ""),
                               ("W", 99, "10.0.0.2", "GET /a HTTP/1.1"),
                               ("K", 5, "10.0.0.3", "GET /b HTTP/1.1"),
                               ("_", 500, "10.0.0.1", "")]))
    # The oldest R, not the oldest request (99 s, W); idle rows are nobody's.
    assert got == {"reading_workers": 2, "reading_oldest_seconds": 30, "busy_clients": 3,
                   "top_client_share": 0.5}


def test_reading_rows_without_a_possible_ss_leave_the_age_out():
    # SS longer than the uptime (1 hour) is not measured (status.py's rule).
    got = figures(synthesized([OWN, ("R", 999999, "10.0.0.1", "")]))
    assert got["reading_workers"] == 1 and "reading_oldest_seconds" not in got
    got = figures(synthesized([OWN, ("R", 999999, "10.0.0.1", ""), ("R", 4, "10.0.0.1", "")]))
    assert got["reading_oldest_seconds"] == 4


def test_no_worker_table_no_figures_never_zero():
    auto = parse_auto(data("2.4.71-prefork-ext-off.auto.txt").decode("latin-1"))
    html = parse_html(data("2.4.71-prefork-ext-off.html"))
    assert html.workers is None
    snap = build(URL, 0.0, auto, html.workers, None, EMPTY_SCAN, Options(client_limit=5))
    assert figures(snap) == {}
    out = every_format(snap)
    assert "# Slow clients" not in out["tab"]
    assert "apache_clients" not in out["influx"] and "reading" not in out["prometheus"]
    assert "slow clients" not in out["text"]
    down = build(URL, 0.0, None, None, None, EMPTY_SCAN, Options(client_limit=5))
    assert figures(down) == {}


def test_a_table_without_client_column_has_no_client_figures():
    got = figures(synthesized([OWN, ("R", 7, "", "")], limit=3, client_column=False))
    assert got == {"reading_workers": 1, "reading_oldest_seconds": 7}


def test_client_limit_bounds_cardinality_and_the_rest_is_other():
    rows = [OWN] + [("W", 1, f"10.0.0.{n}", "GET / HTTP/1.1") for n in range(1, 31)]
    rows += [("R", 3, "10.0.0.7", "")] * 4 + [("S", 0, "", "")]  # a starting slot: nobody's
    got = figures(synthesized(rows, limit=3))
    assert got["per_client"]["10.0.0.7"] == 5 and len(got["per_client"]) == 4
    assert sum(got["per_client"].values()) == 34  # every held worker, none twice
    assert got["busy_clients"] == 30 and got["top_client_share"] == round(5 / 34, 6)


# Client names that sanitising, a cut or the aggregate would merge: the
# Client column shows a host name with HostnameLookups On, or what
# mod_remoteip took from a header.
HOSTILE = ("a b", "a_b", "a\tb", "a\\x09b", "other", "-", 'x"\\}\n' + "z" * 300,
           "2001:db8::1", "2001_db8__1")


def test_hostile_client_names_are_distinct_series_in_every_format():
    rows = [OWN] + [("W", 1, name, "GET / HTTP/1.1") for i, name in enumerate(HOSTILE)
                    for _ in range(i + 1)]
    snap = synthesized(rows, limit=len(HOSTILE))
    per = figures(snap)["per_client"]
    assert sorted(per.values()) == list(range(1, len(HOSTILE) + 1))
    out = every_format(snap)
    counts = {
        "tab": [int(v) for k, v in check_tab(out["tab"]).items()
                if k.startswith("client-busy-workers\t")],
        "influx": [f["busy_workers"] for m, _t, f, _s in check_influx(out["influx"])
                   if m == "apache_client"],
        "collectd": [int(float(v[-1])) for ident, v in check_putval(out["collectd"]).items()
                     if "/count-client_busy_" in ident],
        "prometheus": [int(v) for (family, _labels), v in
                       check_prometheus(out["prometheus"]).items()
                       if family == "apache_client_busy_workers"],
    }
    for fmt, values in counts.items():
        assert sorted(values) == list(range(1, len(HOSTILE) + 1)), fmt
    # A client really named "other" is not the aggregate (there is none: all
    # are named); a name a format carries unchanged stays as it was.
    labels = {dict(labels)["client"]: v for (family, labels), v in
              check_prometheus(out["prometheus"]).items()
              if family == "apache_client_busy_workers"}
    assert "other" not in labels and [v for k, v in labels.items()
                                      if k.startswith("other_")] == [5]
    assert labels["a b"] == 1 and labels["2001:db8::1"] == 8
    assert check_tab(out["tab"])["client-busy-workers\ta b"] == "1"


def test_negative_client_limit_is_a_usage_error():
    proc = run_exporter("--url", "http://127.0.0.1:9/server-status", "--client-limit", "-1")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--client-limit" in proc.stderr


# --- a real slowloris client against a private Apache -------------------------

class Ordinary(threading.Thread):
    """One ordinary slow request from another loopback address (127.0.0.2);
    ``outcome`` says how it ended."""

    def __init__(self, port: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.outcome = "running"
        self.start()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30,
                                          source_address=("127.0.0.2", 0))
        try:
            conn.request("GET", f"/embedded?sleep={self.seconds}")
            self.outcome = f"HTTP {conn.getresponse().status} at {time.monotonic():.1f}"
        except OSError as exc:
            self.outcome = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()


def wait_for(target, options, ok, timeout: float = 20.0, why=lambda: ""):
    """Collect until ``ok(figures)`` holds (the readiness check), else fail.
    A new connection each time: on the event MPM a kept-alive one stays with
    its process, whose threads the slow clients may all hold."""
    deadline = time.monotonic() + timeout
    while True:
        fetcher = Fetcher(target)
        try:
            snap = collect(fetcher, options)
        finally:
            fetcher.close()
        got = figures(snap)
        if ok(got):
            return got
        assert time.monotonic() < deadline, (got, snap.error, why(), time.monotonic(), [
            (w.mode, w.ss, w.client, w.request) for w in snap.workers or () if w.is_active])
        time.sleep(0.2)


NORMAL = {"reading_workers": 0, "reading_oldest_seconds": 0, "busy_clients": 0,
          "top_client_share": 0.0}


@pytest.mark.integration
@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_slowloris_signals_rise_and_return_to_normal(mpm, request):
    apache = request.getfixturevalue(mpm)
    target = Target(apache.status_url, timeout=10)
    options = Options(scan_processes=False, client_limit=2)
    before = wait_for(target, options, lambda got: got == NORMAL)
    assert "per_client" not in before
    ordinary = Ordinary(apache.port, 10)
    attack = Slowloris(apache.port, connections=4, threads=2, every=1.0, limit=30,
                       source="127.0.0.3")
    with attack:
        got = wait_for(target, options, lambda got: got.get("reading_workers") == 4
                       and got.get("per_client") == {"127.0.0.3": 4, "127.0.0.2": 1},
                       why=lambda: ordinary.outcome)
        assert got["busy_clients"] == 2 and got["top_client_share"] == 0.8
        first = got["reading_oldest_seconds"]
        # The oldest reader ages while the client keeps sending header lines.
        later = wait_for(target, options,
                         lambda got: got.get("reading_oldest_seconds", 0) >= first + 2)
        assert later["reading_workers"] == 4 and attack.sent >= 4
        # The option through the command line: the tab file's section.
        proc = run_exporter("--url", apache.status_url, "--format", "tab", "--no-processes",
                            "--client-limit", "1")
        values = parse_tab(proc.stdout)
        assert values["reading-workers"] == "4", proc.stdout
        assert values["client-busy-workers 127.0.0.3"] == "4", proc.stdout
    assert not attack.errors
    ordinary.join(30)
    wait_for(target, options, lambda got: {k: got.get(k) for k in COUNTS} == NORMAL,
             timeout=15)


def _figures_row_by_row(rows, url):
    """clients.figures written as one plain loop over the rows: the reference
    that its reading of the table's columns must equal."""
    from apache_metrics_exporter.collect.clients import own_requests
    from apache_metrics_exporter.collect.http import REQUEST_FIELD

    mine = own_requests(url)
    reading, oldest, unmeasured, per = 0, 0, False, {}
    for row in rows:
        if row.mode in ("_", "I", "."):
            continue
        if row.mode == "W" and mine and row.request[:REQUEST_FIELD] in mine:
            mine.remove(row.request[:REQUEST_FIELD])
            continue
        if row.mode == "R":
            reading += 1
            if row.ss is None:
                unmeasured = True
            elif oldest is not None and row.ss > oldest:
                oldest = row.ss
        if row.client:
            per[row.client] = per.get(row.client, 0) + 1
    return reading, None if unmeasured and oldest == 0 else oldest, per


@pytest.mark.parametrize("seed", range(40))
def test_column_counts_equal_the_row_by_row_count(seed):
    """Busy clients, reading rows and the collector's own rows, counted from
    the table's columns (and from a list of rows), are what one loop over the
    rows counts, on random tables: own requests repeated, in other states,
    NULL, long lines, unmeasurable SS, empty addresses."""
    import random

    from apache_metrics_exporter.collect.clients import figures as column_figures

    rnd = random.Random(seed)
    url = rnd.choice([URL, "http://127.0.0.1/server-status?auto",
                      "http://127.0.0.1/" + "x" * 70])
    own = [f"GET {u.split('127.0.0.1', 1)[1]} HTTP/1.1"[:63]
           for u in (url, url.split("?")[0] + "?auto")]
    requests = own + ["NULL", "GET / HTTP/1.1", "GET /" + "y" * 80 + " HTTP/1.1", ""]
    rows = [(rnd.choice("WWWRR_K.IC"), rnd.choice([0, 3, 40, 999999, "?"]),
             rnd.choice(["10.0.0.1", "10.0.0.2", "127.0.0.1", ""]), rnd.choice(requests))
            for _ in range(rnd.randint(1, 60))]
    table = parse_html(page(rows)).workers
    expected = _figures_row_by_row(list(table), url)
    for workers in (table, list(table)):
        got = column_figures(workers, url)
        assert (got.reading, got.reading_oldest, got.clients) == expected
