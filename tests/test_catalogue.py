"""The catalogue is the single source: every writer's names, kinds and units."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apache_metrics_exporter.catalogue import (
    ALL_METRICS,
    BY_NAME,
    FAMILIES,
    FAMILY,
    all_fit,
    fits,
    prom_family,
)
from apache_metrics_exporter.collect.processes import EMPTY_SCAN
from apache_metrics_exporter.collect.snapshot import Sample, build, version_number
from apache_metrics_exporter.collect.status import parse_auto, parse_html
from apache_metrics_exporter.writers import prometheus
from tests.conftest import data

FORMATS = (("prometheus", "prom"), ("influx", "influx"), ("collectd", "collectd"))


@pytest.mark.parametrize("fmt,attr", FORMATS)
def test_every_metric_has_a_name_in_each_format_or_says_why_not(fmt, attr):
    for m in ALL_METRICS:
        named = getattr(m, attr) is not None
        reason = dict(m.absent).get(fmt)
        assert named != bool(reason), (m.name, fmt, "needs a name or a reason, not both")


# Unit words a Prometheus name's suffix stands for, and the words a HELP line
# must then not claim instead.
SUFFIX_UNITS = {"bytes": "bytes", "kilobytes": "kilobytes", "ms": "milliseconds",
                "seconds": "seconds", "ratio": "ratio"}


def families_emitted(naming: str):
    """(name, kind, unit, help) of every family the writer can emit."""
    out = {}
    for m in ALL_METRICS:
        if m.prom is None:
            continue
        fam = prom_family(m)
        name, unit = fam.name, fam.unit
        if naming == "base-units" and fam.base:
            name, unit, _ = fam.base
        out[name] = (fam.kind, unit, prometheus.help_text(fam.help, unit))
    return out


@pytest.mark.parametrize("naming", ["apache_exporter", "base-units"])
def test_help_unit_agrees_with_the_name_suffix(naming):
    for name, (kind, unit, help_line) in families_emitted(naming).items():
        stem = name[:-len("_total")] if name.endswith("_total") else name
        suffix = stem.rsplit("_", 1)[-1]
        assert help_line.endswith(f"Unit: {unit}."), name
        if suffix in SUFFIX_UNITS:
            assert unit == SUFFIX_UNITS[suffix], (name, unit)
        others = set(SUFFIX_UNITS.values()) - set(re.findall(r"[a-z]+", unit))
        prose = re.sub(r"--[a-z-]+", "", help_line.lower())  # option names aside
        words = set(re.findall(r"[a-z]+", prose))
        assert not (words & others), (name, help_line)
        # A counter is named _total, a gauge is not (apache_exporter's names
        # included: its TYPEs are the catalogue's kinds).
        assert (kind == "counter") == name.endswith("_total"), (name, kind)


def test_families_shared_by_several_metrics_are_declared():
    users = {}
    for m in ALL_METRICS:
        if m.prom is not None:
            users.setdefault(m.prom.partition("{")[0], []).append(m)
    for name, metrics in users.items():
        if len(metrics) > 1 or any(m.prom_scale != 1 for m in metrics):
            assert name in FAMILY, name
    # A histogram family is used through its _bucket, _sum and _count series.
    used = {prom_family(m).name for m in ALL_METRICS if m.prom is not None}
    assert {f.name for f in FAMILIES} <= set(users) | used
    for f in FAMILIES:
        if f.kind == "histogram":
            assert {f"{f.name}_{s}" for s in ("bucket", "sum", "count")} <= set(users), f.name


def test_type_and_help_lines_come_from_the_catalogue():
    auto = parse_auto(data("2.4.71-event-tls-proxy.auto.txt").decode("latin-1"))
    html = parse_html(data("2.4.71-event-tls-proxy.html"))
    snap = build("http://127.0.0.1/server-status", 0.0, auto, html.workers,
                 html.event_processes, EMPTY_SCAN)
    text = prometheus.render([snap])
    assert "# TYPE apache_uptime_seconds_total counter" in text
    assert "# TYPE apache_cpuload gauge" in text
    assert "# HELP apache_sent_kilobytes_total Data sent since the last restart " \
           "(ExtendedStatus). Unit: kilobytes." in text
    base = prometheus.render([snap], type("S", (), {"prometheus_naming": "base-units"}))
    assert "# HELP apache_sent_bytes_total Data sent since the last restart " \
           "(ExtendedStatus). Unit: bytes." in base
    assert "apache_sent_kilobytes_total" not in base


def test_apache_exporter_conventions_on_a_captured_page():
    auto = parse_auto(data("2.4.71-event-tls-proxy.auto.txt").decode("latin-1"))
    snap = build("http://127.0.0.1/server-status", 0.0, auto, None, None, EMPTY_SCAN)
    lines = dict(line.rsplit(" ", 1) for line in prometheus.render([snap]).splitlines()
                 if not line.startswith("#"))
    v = auto.values
    assert float(lines['apache_cpu_time_ms_total{type="user"}']) == pytest.approx(
        1000 * (v["cpu_user_seconds"] + v["cpu_children_user_seconds"]))
    assert 'apache_cpu_time_ms_total{type="children_user"}' not in lines
    assert lines["apache_version"] == "2.04071"
    (info,) = [k for k in lines if k.startswith("apache_info{")]
    assert info.startswith('apache_info{mpm="event",version="Apache/2.4.71 (Debian)')
    assert not [k for k in lines if k.startswith("apache_workers{") and "graceful" in k]
    assert [k for k in lines if k.startswith("apache_proxy_balancer_status{")]


def test_version_as_a_number():
    assert version_number("Apache/2.4.71 (Debian) OpenSSL/3") == 2.04071
    assert version_number("Apache/2.2.34 (Unix)") == 2.02034
    for text in ("Apache", "UNKNOWN", "Apache/2.4", "Apache/2.4.x", "Apache/2.400.1",
                 "Apache/².4.1", "/2.4.1"):
        assert version_number(text) is None, text


def test_info_without_server_version_says_unknown():
    auto = parse_auto(data("handmade-2.2-prefork.auto.txt").decode("latin-1"))
    snap = build("http://127.0.0.1/server-status", 0.0, auto, None, None, EMPTY_SCAN)
    info = [s for s in snap.samples if s.metric is BY_NAME["info"]]
    assert info == [Sample(BY_NAME["info"], 1, (("mpm", "UNKNOWN"), ("version", "UNKNOWN")))]


class _Text(str):
    """A str subclass: all_fit must ask fits() of it, not take a shortcut."""


class _Number(int):
    """An int subclass (as bool is)."""


VALUES = st.one_of(
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3), st.booleans(), st.none(),
    st.builds(_Text, st.text(max_size=3)),
    st.builds(_Number, st.integers(min_value=-(2 ** 66), max_value=2 ** 66)),
    st.just(b"1"), st.just([1]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ALL_METRICS), VALUES), max_size=6))
def test_all_fit_answers_as_fits_does_sample_by_sample(pairs):
    """all_fit is the snapshot's one range check, in one loop: the same answer
    as asking fits() of every sample, for every kind of value (the range
    limits computed on first use or already known)."""
    samples = [Sample(metric, value) for metric, value in pairs]
    assert all_fit(samples) == all(fits(s.metric, s.value) for s in samples)
    assert all_fit(samples) == all(fits(s.metric, s.value) for s in samples)  # limits known


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(ALL_METRICS), max_size=8), st.data())
def test_all_fit_answers_as_fits_for_other_values_of_the_same_metrics(metrics, data):
    """The metrics' layout (made by the first call) checks the next values
    of the same metrics: the same answer as fits() for whatever they are."""
    for _ in range(3):
        samples = [Sample(metric, data.draw(VALUES)) for metric in metrics]
        assert all_fit(samples) == all(fits(s.metric, s.value) for s in samples)
        assert all_fit(iter(samples)) == all(fits(s.metric, s.value) for s in samples)


def test_all_fit_refuses_the_one_value_out_of_range():
    counter, text = BY_NAME["total_accesses"], BY_NAME["longest_request"]
    assert fits(counter, -(2 ** 63 - 1)) and fits(counter, 2 ** 63 - 1)  # both ends
    assert all_fit([Sample(counter, 2 ** 63 - 1), Sample(text, "GET /")])
    assert all_fit([Sample(counter, -(2 ** 63 - 1))])
    assert not all_fit([Sample(counter, -(2 ** 63))])
    assert not all_fit([Sample(text, "GET /"), Sample(counter, 2 ** 63)])
    assert not all_fit([Sample(counter, 1), Sample(text, 3)])
    assert not all_fit([Sample(BY_NAME["utilisation"], float("nan"))])
