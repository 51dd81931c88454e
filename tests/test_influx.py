"""Influx line protocol: Telegraf-compatible names and types, checked by a real InfluxDB."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apache_metrics_exporter.catalogue import ALL_METRICS, BY_NAME
from apache_metrics_exporter.collect.processes import EMPTY_SCAN, ProcessScan, ProcInfo
from apache_metrics_exporter.collect.snapshot import Sample, build
from apache_metrics_exporter.collect.status import parse_auto, parse_html
from apache_metrics_exporter.writers import influx
from tests.conftest import data, run_exporter
from tests.test_tab import example_snapshot

DATA = Path(__file__).parent / "data"

INFLUX_TYPES = {int: "integer", float: "float", str: "string"}


def _split(text: str, sep: str):
    """Split at separators that are neither escaped nor inside a string value."""
    parts, cur, quoted, i = [], "", False, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur += text[i:i + 2]
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == sep and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    return parts + [cur]


def parse_line(line: str):
    """measurement+tags, fields (as text), timestamp of one line."""
    head, fields, stamp = _split(line, " ")
    return head, dict(f.split("=", 1) for f in _split(fields, ",")), stamp


def test_telegraf_measurement_names_tags_and_float_types():
    out = influx.render([example_snapshot()])
    lines = out.splitlines()
    head, fields, stamp = parse_line(lines[0])
    assert head == "apache,port=80,server=x"
    assert fields["BusyWorkers"] == "1.0" and fields["IdleWorkers"] == "74.0"
    assert fields["TotalAccesses"] == "3.0" and fields["TotalkBytes"] == "6.0"
    assert fields["CPULoad"] == "0.102564" and fields["ReqPerSec"] == "0.0384615"
    assert fields["scboard_waiting"] == "76.0" and fields["scboard_sending"] == "1.0"
    assert {f"scboard_{s}" for s in ("waiting", "starting", "reading", "sending", "keepalive",
            "dnslookup", "closing", "logging", "finishing", "idle_cleanup", "open")} <= set(fields)
    assert all(not v.endswith("i") and not v.startswith('"') for v in fields.values())
    assert len({parse_line(x)[2] for x in lines}) == 1  # one timestamp per snapshot
    assert stamp == "0"
    assert lines[-1].startswith("apache_exporter,port=80,server=x up=1i,")


def test_own_measurements_use_catalogue_types():
    lines = influx.render([example_snapshot()]).splitlines()
    by_head = {parse_line(x)[0]: parse_line(x)[1] for x in lines}
    mem = by_head["apache_memory,group=zeta,port=80,server=x"]
    assert mem == {"count": "1i", "min_bytes": "372736i", "max_bytes": "372736i",
                   "average_bytes": "372736.0", "median_bytes": "372736.0"}
    workers = by_head["apache_workers,port=80,server=x"]
    assert workers["hanging"] == "0i" and workers["native_worker_count"] == "5i"
    assert workers["utilisation"] == repr(round(1 / 77, 6))
    assert workers["longest_request"] == '"GET / HTTP/1.1"'


def test_down_snapshot_has_health_and_memory_only():
    lines = influx.render([example_snapshot(up=False)]).splitlines()
    heads = [parse_line(x)[0].split(",")[0] for x in lines]
    assert "apache" not in heads and "apache_workers" not in heads
    assert heads[-1] == "apache_exporter" and "up=0i" in lines[-1]
    assert "apache_memory" in heads


def test_every_influx_metric_has_a_fixed_type():
    for m in ALL_METRICS:
        if m.influx and not m.influx.startswith("apache."):
            assert m.type in INFLUX_TYPES, m.name


@pytest.mark.parametrize("raw,escaped", [
    ("a b", r"a\ b"), ("a,b", r"a\,b"), ("a=b", r"a\=b"), ("a\\b", "a/b"),
    ("a\nb", r"a\ b"), ("ü", "ü"), ("a\x1b[2Jb", r"a\ [2Jb"), ("a\x00\x85\u2028b", r"a\ \ \ b"),
    ("\udc80", "\ufffd"), ("a" * 5000, "a" * 1024),
])
def test_key_escaping(raw, escaped):
    assert influx.escape_key(raw) == escaped


def test_string_escaping_and_no_nan():
    assert influx.format_value('say "hi" \\o/', str) == r'"say \"hi\" \\o/"'
    assert influx.format_value("a\r\nb\x1b\udc80", str) == '"a  b \ufffd"'
    with pytest.raises(ValueError):
        influx.format_value(float("nan"), float)


@pytest.mark.parametrize("value,kind", [
    (2 ** 63, int), (-2 ** 63 - 1, int), (10 ** 400, float), (float("inf"), float),
])
def test_numbers_line_protocol_cannot_carry_are_refused(value, kind):
    with pytest.raises((ValueError, OverflowError)):
        influx.format_value(value, kind)
    assert influx.format_value(2 ** 63 - 1, int) == "9223372036854775807i"


def test_a_field_twice_in_one_point_keeps_the_first_value():
    snap = example_snapshot()
    snap.samples.append(Sample(BY_NAME["busy_workers"], 99))
    head, fields, _ = parse_line(influx.render([snap]).splitlines()[0])
    assert fields["BusyWorkers"] == "1.0"


@pytest.mark.parametrize("url,server,port", [
    ("http://[::1]:8080/s", "::1", "8080"), ("https://h.example/s", "h.example", "443"),
    ("http://LocalHost/server-status?auto", "LocalHost", "80"),
    ("http://[::1]/server-status", "[::1]", "80"), ("http://127.0.0.1:81/x", "127.0.0.1", "81"),
    ("http://h.example:/x", "h.example", ""),
])
def test_tags_as_telegraf_derives_them(url, server, port):
    # Telegraf: net.SplitHostPort(url.Host); on error the host as written and
    # the scheme's port. Its source, read for this: plugins/inputs/apache.
    assert influx.target_tags(url) == {"server": server, "port": port}


def telegraf_fields(page: str) -> set:
    """The fields Telegraf's inputs.apache makes of a ?auto page, as its README
    and source describe them (Telegraf itself cannot be installed here): every
    'Key: value' line whose value parses as a float, the key without spaces;
    the Scoreboard as the 11 scboard_* fields."""
    out = set()
    for line in page.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key == "Scoreboard":
            out |= {f"scboard_{s}" for s in ("waiting", "starting", "reading", "sending",
                                               "keepalive", "dnslookup", "closing",
                                               "logging", "finishing", "idle_cleanup", "open")}
            continue
        try:
            float(value.strip())
        except ValueError:
            continue
        out.add(key.replace(" ", ""))
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.auto.txt")))
def test_telegraf_field_set_on_every_captured_page(name):
    text = (DATA / name).read_text(encoding="latin-1")
    snap = build("http://127.0.0.1/server-status", 0.0, parse_auto(text), None, None,
                 EMPTY_SCAN)
    head, fields, _ = parse_line(influx.render([snap]).splitlines()[0])
    assert head.startswith("apache,")
    assert set(fields) == telegraf_fields(text), name


def test_unknown_numeric_keys_pass_through_as_telegraf_does():
    text = (DATA / "2.4.71-event-ext-on.auto.txt").read_text(encoding="latin-1")
    text += "Future Figure: 42\nFuture Text: some words\nFuture Pct: 12%\n"
    snap = build("http://127.0.0.1/server-status", 0.0, parse_auto(text), None, None,
                 EMPTY_SCAN)
    lines = influx.render([snap]).splitlines()
    _, fields, _ = parse_line(lines[0])
    assert fields["FutureFigure"] == "42.0"
    assert "FutureText" not in fields and "FuturePct" not in fields
    assert not [x for x in lines[1:] if "FutureFigure" in x]  # the apache measurement only
    from apache_metrics_exporter.writers import prometheus, tab

    assert "Future" not in tab.render([snap]) + prometheus.render([snap])


def test_a_hostile_page_cannot_flood_the_measurement_with_fields():
    text = (DATA / "2.4.71-event-ext-on.auto.txt").read_text(encoding="latin-1")
    text += "".join(f"K{i}: {i}\n" for i in range(5000))
    snap = build("http://127.0.0.1/server-status", 0.0, parse_auto(text), None, None,
                 EMPTY_SCAN)
    _, fields, _ = parse_line(influx.render([snap]).splitlines()[0])
    assert len([f for f in fields if f.startswith("K")]) == 100


# --- real InfluxDB ---------------------------------------------------------

@pytest.mark.integration
def test_every_line_accepted_and_types_match_catalogue(apache, influxdb, influx_db):
    first = run_exporter("--url", apache.status_url, "--format", "influx")
    assert first.returncode == 0, first.stderr
    assert influxdb.write(influx_db, first.stdout.encode()) == (204, "")
    second = run_exporter("--url", apache.status_url, "--format", "influx")
    assert influxdb.write(influx_db, second.stdout.encode()) == (204, "")  # no type conflict
    types = influxdb.field_types(influx_db)
    assert set(types["apache"].values()) == {"float"}
    for field in ("BusyWorkers", "IdleWorkers", "TotalAccesses", "TotalkBytes",
                  "scboard_open", "scboard_waiting"):
        assert field in types["apache"]
    expected = {}  # measurement -> [(field pattern, type)]; {label} parts match any name
    for m in ALL_METRICS:
        if m.influx and not m.influx.startswith("apache."):
            measurement, field = m.influx.split(".", 1)
            pattern = re.sub(r"\\{\w+\\}", r"\\w+", re.escape(field))
            expected.setdefault(measurement, []).append((pattern, INFLUX_TYPES[m.type]))
    for measurement, fields in types.items():
        if measurement == "apache":
            continue
        for field, kind in fields.items():
            (want,) = {t for pat, t in expected[measurement] if re.fullmatch(pat, field)}
            assert want == kind, (measurement, field)
    assert "apache_memory" in types and "apache_exporter" in types
    rows = influxdb.query('SELECT "group", "count" FROM apache_memory', influx_db)
    groups = {v[1] for v in rows["results"][0]["series"][0]["values"]}
    assert {"native", "example", "reporting-backend"} <= groups


@pytest.mark.integration
def test_real_tls_proxy_page_lines_accepted(influxdb, influx_db):
    auto = parse_auto(data("2.4.71-event-tls-proxy.auto.txt").decode())
    html = parse_html(data("2.4.71-event-tls-proxy.html"))
    snap = build("http://127.0.0.1:8080/server-status", 1.7e9, auto, html.workers,
                 html.event_processes, ProcessScan(None, None, [], set(), "rss"))
    body = influx.render([snap]).encode()
    assert influxdb.write(influx_db, body) == (204, "")
    types = influxdb.field_types(influx_db)
    assert types["apache"]["ProxyBalancer[0]Worker[0]Elected"] == "float"
    assert types["apache_proxy"]["elected"] == "integer"
    assert types["apache_tls_cache"]["usage_percent"] == "integer"


_stamps = itertools.count(1_000_000_000)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=1, max_size=40)


@pytest.mark.integration
@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(group=_text, request_line=st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=80))
def test_escaping_round_trips_through_real_influxdb(influxdb, group, request_line):
    db = "props"
    influxdb.query(f'CREATE DATABASE "{db}"')
    stamp = next(_stamps)
    scan = ProcessScan(1, 1.0, [ProcInfo(2, 1.0, group, 4096, "(wsgi:x)")], set(), "rss")
    snap = build("http://127.0.0.1:81/server-status", stamp / 1e9, None, None, None, scan)
    snap.samples.append(Sample(BY_NAME["longest_request"], request_line))
    body = influx.render([snap]).encode()
    status, error = influxdb.write(db, body)
    assert status == 204, (error, body)
    rows = influxdb.query(f'SELECT "group", "count" FROM apache_memory WHERE time = {stamp}', db)
    stored = {v[1] for s in rows["results"][0].get("series", []) for v in s["values"]}
    assert plain(group).replace("\\", "/") in stored
    rows = influxdb.query(f'SELECT longest_request FROM apache_workers WHERE time = {stamp}', db)
    (value,) = [v[1] for s in rows["results"][0]["series"] for v in s["values"]]
    assert value == plain(request_line)


def plain(text: str) -> str:
    """What the writer promises to store: control characters and line
    separators as spaces (documented in influx._plain)."""
    return "".join(" " if ord(c) < 32 or 0x7f <= ord(c) <= 0x9f or c in "\u2028\u2029" else c
                   for c in text)


def test_an_empty_tag_value_joins_the_point_without_it():
    # Found by the fuzz (test_fuzz's every-format test): accept_queue_length
    # with listen='' and accept_queue_length_all made two lines of the same
    # series and time - _prefix leaves an empty tag out - which InfluxDB
    # takes as one point overwritten. An empty value is no tag: one line.
    from apache_metrics_exporter.collect.snapshot import Snapshot
    from tests import validators

    snap = Snapshot(url="http://127.0.0.1:8080/server-status", timestamp=0.0, up=False,
                    error="", warnings=[], auto=None, workers=None, event_processes=None,
                    processes=EMPTY_SCAN, samples=[
                        Sample(BY_NAME["accept_queue_length"], 0, (("listen", ""),)),
                        Sample(BY_NAME["accept_queue_length_all"], 3, ())])
    for _ in range(2):  # the full way, then the target's layout
        out = influx.render([snap])
        validators.check_influx(out)
        assert out == "apache_accept_queue,port=8080,server=127.0.0.1 length=0i," \
                      "length_all=3i 0\n"
    snap.samples[0] = Sample(BY_NAME["accept_queue_length"], 1, (("listen", "127.0.0.1:80"),))
    lines = influx.render([snap]).splitlines()
    assert lines == ["apache_accept_queue,port=8080,server=127.0.0.1 length_all=3i 0",
                     "apache_accept_queue,listen=127.0.0.1:80,port=8080,server=127.0.0.1 "
                     "length=1i 0"]
