"""Per virtual host figures from the worker table, with bounded cardinality."""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import pytest

from apache_metrics_exporter import vhosts as vhost_names
from apache_metrics_exporter.collect.processes import EMPTY_SCAN
from apache_metrics_exporter.collect.snapshot import Options, build
from apache_metrics_exporter.collect.status import parse_auto, parse_html
from apache_metrics_exporter.log import log
from apache_metrics_exporter.writers import collectd, influx, prometheus, tab, text
from tests.conftest import data, parse_tab, run_exporter
from tests.harness.pages import serve_pages
from tests.validators import check_influx, check_prometheus, check_putval, check_tab


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


# --- distinct virtual hosts stay distinct in every format (issue 19) ----------

LONG = "l" * 92 + ".example"  # 100 characters, before the port
# Names that sanitising, the collectd cut or the aggregate used to merge.
RED_TEAM = ("a example:80", 'a"example:80', "a_example:80", LONG + ":80", LONG + ":443",
            "other")
FILLERS = ("f1.example:80", "f2.example:80")  # fewest busy: summed as "other"
# (busy workers, requests in flight, longest request) of each red-team host,
# then of the aggregate of the fillers: every one different.
EXPECTED = {(i + 2, 1, 100 + i) for i in range(len(RED_TEAM))} | {(2, 2, 2)}
FIELDS = ("busy_workers", "requests_in_flight", "longest_request_seconds")


def red_team_rows():
    rows = []
    for i, name in enumerate(RED_TEAM):
        rows += [("W", 100 + i, name)] + [("K", 0, name)] * (i + 1)
    return rows + [("W", 1, FILLERS[0]), ("W", 2, FILLERS[1])]


def red_team_snapshot():
    return snapshot(red_team_rows(), limit=len(RED_TEAM))


def triples(per: dict) -> dict:
    """{name: {field: value}} -> {name: (busy, in flight, longest)}."""
    return {name: tuple(int(float(v[f])) for f in FIELDS) for name, v in per.items()}


def tab_vhosts(text_: str) -> dict:
    per: dict = {}
    for head, value in check_tab(text_).items():
        key, *labels = head.split("\t")
        if key.startswith("vhost-"):
            (name,) = labels
            per.setdefault(name, {})[key[6:].replace("-", "_")] = value
    return triples(per)


def influx_vhosts(text_: str) -> dict:
    per = {}
    for measurement, tags, fields, _stamp in check_influx(text_):
        if measurement == "apache_vhost":
            assert tags["vhost"] not in per
            per[tags["vhost"]] = fields
    return triples(per)


def prom_vhosts(text_: str) -> dict:
    per: dict = {}
    for (family, labels), value in check_prometheus(text_).items():
        if family.startswith("apache_vhost_"):
            (key, name), = labels
            assert key == "vhost"
            per.setdefault(name, {})[family[len("apache_vhost_"):]] = value
    return triples(per)


COLLECTD_TYPES = {"count-vhost_busy_": "busy_workers",
                  "count-vhost_in_flight_": "requests_in_flight",
                  "duration-vhost_longest_": "longest_request_seconds"}


def collectd_vhosts(idents: dict) -> dict:
    """{name: (busy, ...)} of ``{host/plugin/type-instance: [value]}``."""
    per: dict = {}
    for ident, values in idents.items():
        type_instance = ident.split("/")[2]
        for prefix, field in COLLECTD_TYPES.items():
            if type_instance.startswith(prefix):
                per.setdefault(type_instance[len(prefix):], {})[field] = values[-1]
    return triples(per)


def collectd_settings():
    return argparse.Namespace(hostname="h", instance=None, interval=None)


WRITERS = {
    "tab": lambda snap: tab_vhosts(tab.render([snap])),
    "influx": lambda snap: influx_vhosts(influx.render([snap])),
    "prometheus": lambda snap: prom_vhosts(prometheus.render([snap])),
    "collectd": lambda snap: collectd_vhosts(check_putval(
        collectd.render([snap], collectd_settings()))),
}


def test_the_red_team_names_are_distinct_series_with_every_value_in_every_format():
    snap = red_team_snapshot()
    assert len(vhosts(snap)) == len(RED_TEAM) + 1  # the six, and the aggregate
    for fmt, series in WRITERS.items():
        got = series(snap)
        assert len(got) == len(RED_TEAM) + 1, (fmt, sorted(got))
        assert set(got.values()) == EXPECTED, fmt
        assert got["other"] == (2, 2, 2), fmt  # the aggregate keeps its name


def test_names_alike_after_escaping_are_distinct_series_in_every_format():
    # A tab is a space in line protocol and \\x09 in the tab file and in
    # Prometheus; a backslash is / in line protocol: each pair used to meet.
    names = ("a b:80", "a\tb:80", "a\\x09b:80", "a/b:80", "a\\b:80", "a\x01b:80",
             "a\\x01b:80")
    snap = snapshot([("W", 10 + i, name) for i, name in enumerate(names)])
    for fmt, series in WRITERS.items():
        got = series(snap)
        assert sorted(v[2] for v in got.values()) == list(range(10, 10 + len(names))), fmt


def test_names_a_format_carries_unchanged_stay_as_they_were():
    snap = red_team_snapshot()
    for fmt in ("tab", "influx", "prometheus"):
        got = WRITERS[fmt](snap)
        assert got["a example:80"] == (2, 1, 100), fmt
        assert got["a_example:80"] == (4, 1, 102), fmt
        assert got[LONG + ":443"] == (6, 1, 104), fmt
    assert WRITERS["influx"](snap)['a"example:80'] == (3, 1, 101)
    assert WRITERS["prometheus"](snap)['a"example:80'] == (3, 1, 101)
    assert WRITERS["collectd"](snap)["a_example_80"] == (4, 1, 102)
    plain = snapshot([("W", 3, "www.example.org:443")])
    for fmt, series in WRITERS.items():
        name = "www.example.org_443" if fmt == "collectd" else "www.example.org:443"
        assert series(plain) == {name: (1, 1, 3)}, fmt


def test_suffixes_are_short_stable_digests_of_the_name():
    # Stable across runs and versions: dashboards and Zabbix items key on them.
    assert collectd.vhost_name("a example:80") == "a_example_80_6b22e097"
    assert collectd.vhost_name('a"example:80') == "a_example_80_158ffa98"
    assert tab.vhost_name('a"example:80') == "a_example:80_158ffa98"
    assert influx.vhost_name("a\\b:80") == "a/b:80_" + vhost_names.digest("a\\b:80")
    assert prometheus.vhost_name("a\x01b:80") == "a\\x01b:80_" + vhost_names.digest("a\x01b:80")
    for name in (LONG + ":80", LONG + ":443"):
        mapped = collectd.vhost_name(name)
        assert len("vhost_in_flight_" + mapped) <= collectd.MAX_PART
        assert mapped.endswith("_" + vhost_names.digest(name))


def test_a_host_named_other_is_not_the_aggregate():
    snap = snapshot([("W", 9, "other")] * 2 + [("W", 1, "a:80"), ("W", 1, "b:80")], limit=1)
    mine = "other_" + vhost_names.digest("other")
    assert vhosts(snap) == {
        mine: {"busy_workers": 2, "requests_in_flight": 2, "longest_request_seconds": 9},
        "other": {"busy_workers": 2, "requests_in_flight": 2, "longest_request_seconds": 1}}
    # Likewise "-", the label of rows that name no host.
    snap = snapshot([("W", 4, "-"), ("W", 5, "")])
    assert set(vhosts(snap)) == {"-", "-_" + vhost_names.digest("-")}


def test_long_names_stay_apart_in_the_snapshot():
    a, b = "x" * 250 + "a", "x" * 250 + "b"
    labels = set(vhosts(snapshot([("W", 1, a), ("W", 2, b)])))
    assert len(labels) == 2 and all(len(n) <= vhost_names.MAX_NAME for n in labels)


def test_names_that_still_meet_are_counted_in_other_and_said_once(monkeypatch, capsys):
    # A digest collision, made certain: "a example:80" and 'a"example:80' both
    # become a_example_80_00000000 in collectd, and so do the two long names.
    monkeypatch.setattr(vhost_names, "digest", lambda name: "00000000")
    monkeypatch.setattr(log, "_once", set())
    snap = red_team_snapshot()
    capsys.readouterr()
    got = WRITERS["collectd"](snap)
    err = capsys.readouterr().err
    assert len(got) == len(RED_TEAM) + 1 - 2
    assert err.count("warning:") == 2 and "counted in vhost 'other'" in err, err
    # Nothing dropped: every busy worker and request counted, the oldest kept.
    assert sum(v[0] for v in got.values()) == sum(v[0] for v in EXPECTED)
    assert sum(v[1] for v in got.values()) == sum(v[1] for v in EXPECTED)
    assert got["other"] == (2 + 3 + 5, 2 + 1 + 1, 103)  # 'a"example:80' and LONG:80
    WRITERS["collectd"](snap)
    assert capsys.readouterr().err == ""  # said once


def test_a_crafted_name_meeting_another_in_the_snapshot_is_counted_in_other(capsys):
    log.forget()
    crafted = "other_" + vhost_names.digest("other")
    snap = snapshot([("W", 7, "other")] * 2 + [("W", 3, crafted)])
    assert vhosts(snap) == {
        crafted: {"busy_workers": 2, "requests_in_flight": 2, "longest_request_seconds": 7},
        "other": {"busy_workers": 1, "requests_in_flight": 1, "longest_request_seconds": 3}}
    assert "counted in vhost 'other'" in capsys.readouterr().err


def test_the_summary_shows_each_request_under_its_own_host():
    # The summary lists requests, not series: each row with its host as the
    # page named it (escaped), so nothing can be merged or dropped.
    out = text.render([red_team_snapshot()], argparse.Namespace(output="x"))
    table = out.split("slowest requests being served:", 1)[1].splitlines()
    for name in RED_TEAM[1:]:  # the five oldest requests
        assert sum(f"  {name}  " in line for line in table) == 1, name


@pytest.mark.integration
def test_red_team_names_through_a_real_influxdb(influxdb, influx_db):
    assert influxdb.write(influx_db, influx.render([red_team_snapshot()]).encode()) \
        == (204, "")
    rows = influxdb.query(f'SELECT {", ".join(FIELDS)}, "vhost" FROM apache_vhost',
                          influx_db)["results"][0]["series"][0]
    got = {r[4]: tuple(r[1:4]) for r in rows["values"]}
    assert len(got) == len(RED_TEAM) + 1 and set(got.values()) == EXPECTED
    assert set(RED_TEAM) - {"other"} <= set(got)  # every name as the page had it


def red_team_page_server():
    """The red-team page (HTML and ?auto) served on loopback."""
    return serve_pages(data("2.4.71-prefork-ext-on.auto.txt"), page(red_team_rows()))


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="collectd's Exec needs root to switch users")
def test_red_team_names_are_distinct_value_files_in_a_real_collectd(runnable_copy):
    with red_team_page_server() as url:
        _collect_red_team_in_collectd(url, str(runnable_copy))


def _collect_red_team_in_collectd(url: str, command: str) -> None:
    from tests.harness.servers import Collectd

    daemon = Collectd().start("nobody:nogroup", [
        command, "--url", url, "--format", "collectd", "--no-processes",
        "--vhost-limit", str(len(RED_TEAM))], interval=1.0)
    try:
        deadline = time.monotonic() + 20
        files: dict = {}
        while time.monotonic() < deadline:
            files = {k: v for k, v in daemon.csv_files().items() if "vhost_" in k}
            if len(files) >= 3 * (len(RED_TEAM) + 1) and all(files.values()):
                break
            time.sleep(0.25)
        log = daemon.log()
    finally:
        daemon.stop()
    got = collectd_vhosts({f"h/{k}": [row[1]] for k, row in
                           ((k, v[-1]) for k, v in files.items() if v)})
    assert len(files) == 3 * (len(RED_TEAM) + 1), (sorted(files), log[-2000:])
    assert len(got) == len(RED_TEAM) + 1 and set(got.values()) == EXPECTED, got


@pytest.mark.integration
@pytest.mark.skipif(not os.path.exists("/usr/sbin/zabbix_agentd"),
                    reason="zabbix-agent not installed (Debian package zabbix-agent)")
def test_red_team_names_discovered_and_read_by_a_real_zabbix_agent(tmp_path):
    import subprocess

    from tests.conftest import exporter_env
    from tests.test_zabbix_template import AGENTD, agent_conf, prototypes

    def agent_test(conf, key):
        """``zabbix_agentd -t KEY``: (type letter, value); the key may hold spaces."""
        proc = subprocess.run([AGENTD, "-c", str(conf), "-t", key], capture_output=True,
                              text=True, timeout=60, env=exporter_env())
        assert proc.returncode == 0, proc.stderr
        _key, _, rest = proc.stdout.strip().partition(" ")
        assert proc.stdout.startswith(key + " ") and "ZBX_NOTSUPPORTED" not in rest, \
            proc.stdout
        kind, _, value = rest.strip()[1:-1].partition("|")
        return kind, value

    data_file = tmp_path / "apache-manager.txt"
    data_file.write_text(tab.render([red_team_snapshot()]))
    conf = agent_conf(tmp_path, data_file, "http://127.0.0.1:1/server-status")
    found = [d["{#VHOST}"] for d in json.loads(agent_test(conf, "apache.vhost.discovery")[1])]
    assert len(set(found)) == len(found) == len(RED_TEAM) + 1, found
    got = {}
    for name in found:
        per = {}
        for p in prototypes("apache.vhost.discovery"):
            key = p["key"].replace("{#VHOST}", name)
            field = key.split("[", 1)[1].split(",", 1)[0][6:].replace("-", "_")
            per[field] = agent_test(conf, key)[1]
        got[name] = per
    assert set(triples(got).values()) == EXPECTED
