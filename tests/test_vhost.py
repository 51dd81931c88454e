"""Per virtual host figures from the worker table, with bounded cardinality."""

from __future__ import annotations

import threading

import pytest

from apache_metrics_exporter.collect.processes import EMPTY_SCAN
from apache_metrics_exporter.collect.snapshot import Options, build
from apache_metrics_exporter.collect.status import parse_auto, parse_html
from apache_metrics_exporter.writers import influx, prometheus, tab
from tests.conftest import data, parse_tab, run_exporter


def page(rows) -> bytes:
    """A real captured page whose worker rows are replaced by (mode, ss, vhost)."""
    html = data("2.4.71-prefork-ext-on.html").decode("latin-1").replace(
        "Server uptime:  1 second", "Server uptime:  1 hour")  # else an SS > 1 is impossible
    head = html[:html.index("<tr><td><b>0-0")]
    body = "".join(
        f"<tr><td><b>{n}-0</b></td><td>{1000 + n}</td><td>0/1/1</td><td><b>{mode}</b>\n"
        f"</td><td>0.01</td><td>{ss}</td><td>0</td><td>1</td><td>0.0</td><td>0.00</td>"
        f"<td>0.00\n</td><td>127.0.0.1</td><td>http/1.1</td><td nowrap>{vhost}</td>"
        "<td nowrap>GET / HTTP/1.1</td></tr>\n" for n, (mode, ss, vhost) in enumerate(rows))
    return (head + body + "</table>\n</body></html>\n").encode("latin-1")


def snapshot(rows, limit=20):
    auto = parse_auto(data("2.4.71-prefork-ext-on.auto.txt").decode("latin-1"))
    workers = parse_html(page(rows)).workers
    return build("http://127.0.0.1/server-status", 0.0, auto, workers, None, EMPTY_SCAN,
                 Options(vhost_limit=limit))


def vhosts(snap) -> dict:
    out = {}
    for s in snap.samples:
        if s.metric.name.startswith("vhost_"):
            out.setdefault(dict(s.labels)["vhost"], {})[s.metric.name[6:]] = s.value
    return out


def test_busy_in_flight_and_longest_per_vhost():
    snap = snapshot([("W", 30, "a.example:80"), ("W", 5, "a.example:80"),
                     ("K", 0, "a.example:80"), ("W", 7, "b.example:443"),
                     ("_", 99, "c.example:80"), (".", 0, "")])
    assert vhosts(snap) == {
        "a.example:80": {"busy_workers": 3, "requests_in_flight": 2,
                         "longest_request_seconds": 30},
        "b.example:443": {"busy_workers": 1, "requests_in_flight": 1,
                          "longest_request_seconds": 7},
    }  # an idle row's vhost is its last request's: not counted


def test_cardinality_is_bounded_and_the_rest_summed():
    rows = [("W", n, f"v{n:02d}.example") for n in range(30)]
    rows += [("W", 1, "v00.example")] * 3  # v00 has the most busy workers
    got = vhosts(snapshot(rows, limit=5))
    assert len(got) == 6 and "v00.example" in got
    assert got["other"] == {"busy_workers": 25, "requests_in_flight": 25,
                            "longest_request_seconds": 29}
    assert sum(v["busy_workers"] for v in got.values()) == 33


def test_limit_zero_turns_it_off():
    assert vhosts(snapshot([("W", 3, "a")], limit=0)) == {}


def test_hostile_vhost_names_stay_in_their_label():
    evil = 'x"\\}\tbusy-workers 999\nup 1 ' + "z" * 500
    snap = snapshot([("W", 3, evil)])
    (name,) = vhosts(snap)
    assert len(name) <= 200
    text = prometheus.render([snap])
    assert all(line.count(" ") >= 1 for line in text.splitlines())
    assert not [line for line in text.splitlines() if line.startswith(("up ", "busy"))]
    assert "apache_vhost_busy_workers{vhost=" in text
    values = parse_tab(tab.render([snap]))
    assert "busy-workers" in values and values["busy-workers"] != "999"
    assert "\n" not in "".join(influx.lines(snap))


@pytest.mark.integration
def test_live_request_shows_under_its_vhost(prefork):
    thread = threading.Thread(target=lambda: prefork.get("/embedded?sleep=3", timeout=30),
                              daemon=True)
    thread.start()
    try:
        for _ in range(100):
            proc = run_exporter("--url", prefork.status_url, "--format", "prometheus")
            lines = [x for x in proc.stdout.splitlines()
                     if x.startswith("apache_vhost_longest_request_seconds{") and
                     not x.endswith(" 0")]
            if lines:
                break
        assert lines, proc.stdout
        assert "apache_vhost_busy_workers{vhost=" in proc.stdout
    finally:
        thread.join(30)
