"""The Prometheus writer's layout of a target's samples (issue 23): made from
a render's metrics, labels and target labels, it writes the next render's
values - the same bytes as the full way for whatever metrics, labels and
values come, several targets and the endpoint's own samples included, and
the full way whenever a value is not written as the layout would write it."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apache_metrics_exporter.catalogue import BY_NAME, INT64_MAX, limit
from apache_metrics_exporter.collect.snapshot import Sample
from apache_metrics_exporter.writers import prometheus
from tests.test_fuzz import NUMBERS, snapshots
from tests.test_render_memo import URL, snap

LAYOUT = settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NAMINGS = [argparse.Namespace(prometheus_naming=n) for n in ("apache_exporter", "base-units")]
PREFIX = ""


def full(snaps, naming, own=()) -> str:
    """The output without any layout (made anew and forgotten)."""
    prometheus._LAYOUTS.clear()
    try:
        return prometheus.render(snaps, naming, own)
    finally:
        prometheus._LAYOUTS.clear()


def laid_out(first, second, naming, own=()) -> str:
    """``second`` rendered after ``first`` (whose layouts it may use)."""
    prometheus._LAYOUTS.clear()
    prometheus.render(first, naming, own)
    return prometheus.render(second, naming, own)


def with_values(snapshot, values):
    return snapshot._replace(
        samples=[Sample(s.metric, v, s.labels) for s, v in zip(snapshot.samples, values)])


def histogram(values=(3, 5, 0.25, 5)):
    """A request-duration histogram's samples (bucket bounds, a bad one too)."""
    bucket, total, count = (BY_NAME[f"{PREFIX}request_duration_{x}"]
                            for x in ("bucket", "sum", "count"))
    return [Sample(bucket, values[0], (("le", "0.1"),)),
            Sample(bucket, values[1], (("le", "+Inf"),)),
            Sample(bucket, 1, (("le", "x"),)),
            Sample(total, values[2]), Sample(count, values[3])]


@LAYOUT
@given(st.data())
def test_the_next_renders_values_are_written_as_the_full_way_writes_them(data):
    naming = data.draw(st.sampled_from(NAMINGS))
    firsts = data.draw(st.lists(snapshots(), min_size=1, max_size=3))
    if data.draw(st.booleans()):
        firsts[0] = firsts[0]._replace(samples=list(firsts[0].samples) + histogram())
    if len(firsts) > 1 and data.draw(st.booleans()):  # two targets at one address
        firsts[1] = firsts[1]._replace(url=firsts[0].url)
    thens = []
    for s in firsts:
        values = [data.draw(st.one_of(st.just(x.value), NUMBERS, st.text(max_size=5)))
                  for x in s.samples]
        thens.append(with_values(s, values))
    own = data.draw(st.sampled_from([(), firsts[0].samples[:3], thens[-1].samples[-3:]]))
    for first, second in ((firsts, thens), (thens, firsts), (firsts, firsts),
                          (firsts, thens[::-1]), (firsts[:1], thens[:1])):
        assert laid_out(first, second, naming, own) == full(second, naming, own)
        # the layouts kept, used again
        assert prometheus.render(second, naming, own) == full(second, naming, own)


def live_like():
    """A small server's usual samples: ints, floats, scaled, labels, text, a histogram."""
    return [Sample(BY_NAME["busy_workers"], 1), Sample(BY_NAME["load1"], 0.25),
            Sample(BY_NAME["scoreboard_slots"], 20), Sample(BY_NAME["utilisation"], 0.05),
            Sample(BY_NAME["memory_count"], 2, (("group", "native"),)),
            Sample(BY_NAME["status_reason"], "ok"), Sample(BY_NAME["up"], 1),
            *histogram()]


def test_a_small_servers_render_takes_the_layout():
    samples = live_like()
    prometheus._LAYOUTS.clear()
    prometheus.render([snap(samples)])
    layout = prometheus._LAYOUTS[(URL, False, False)]
    again = [Sample(s.metric, s.value + 1 if type(s.value) is int else s.value, s.labels)
             for s in samples]
    families: dict = {}
    assert prometheus._laid_out(layout, snap(again), families, set()) is True
    assert "".join("\n".join(v) + "\n" for v in families.values()) \
        == full([snap(again)], None)
    assert "apache_workers{state=\"busy\"} 2\n" in full([snap(again)], None)


@pytest.mark.parametrize("index, value", [
    (0, INT64_MAX + 1), (0, 2.5), (0, True), (0, "3"), (1, float("nan")), (1, float("inf")),
    (1, 10 ** 400), (2, limit(BY_NAME["scoreboard_slots"]) + 1), (6, None), (7, 2 ** 64),
    (10, float("-inf")),
])
def test_a_value_the_layout_does_not_write_takes_the_full_way(index, value):
    samples = live_like()
    changed = list(samples)
    changed[index] = samples[index]._replace(value=value)
    for naming in NAMINGS:
        prometheus._LAYOUTS.clear()
        prometheus.render([snap(samples)], naming)
        layout = prometheus._LAYOUTS[(URL, naming.prometheus_naming == "base-units", False)]
        families: dict = {}
        seen: set = set()
        assert prometheus._laid_out(layout, snap(changed), families, seen) is False
        assert not families and not seen  # nothing written when it gives up
        assert prometheus.render([snap(changed)], naming) == full([snap(changed)], naming)
        assert prometheus.render([snap(samples)], naming) == full([snap(samples)], naming)


def test_a_later_sample_of_the_same_series_is_written_when_the_first_is_left_out():
    """The layout writes a series' first sample; when that one's value is not
    written, the full way writes the next sample of the series."""
    busy = BY_NAME["busy_workers"]
    samples = [Sample(busy, 1), Sample(busy, 2), Sample(BY_NAME["up"], 1)]
    prometheus._LAYOUTS.clear()
    assert 'apache_workers{state="busy"} 1\n' in prometheus.render([snap(samples)])
    samples[0] = Sample(busy, float("nan"))
    out = prometheus.render([snap(samples)])
    assert 'apache_workers{state="busy"} 2\n' in out and out == full([snap(samples)], None)


def test_other_targets_and_own_samples_keep_the_first_sample_wins_rule():
    samples = live_like()
    own = [Sample(BY_NAME["up"], 0), Sample(BY_NAME["busy_workers"], 7)]
    two = [snap(samples), snap(samples, url="http://127.0.0.1:8080/other")]
    prometheus._LAYOUTS.clear()
    for _ in range(2):  # made, then used
        assert prometheus.render(two, None, own) == full(two, None, own)
        assert prometheus.render(two[:1], None, own) == full(two[:1], None, own)
        assert prometheus.render(two[::-1], None, own) == full(two[::-1], None, own)
    out = prometheus.render(two[:1], None, own)
    assert "apache_up 1\n" in out and "apache_up 0" not in out
    assert 'apache_workers{state="busy"} 1\n' in out


def test_other_metrics_or_labels_make_another_layout():
    samples = live_like()
    prometheus._LAYOUTS.clear()
    prometheus.render([snap(samples)])
    relabelled = list(samples)
    relabelled[4] = Sample(BY_NAME["memory_count"], 2, (("group", "example"),))
    layout = prometheus._LAYOUTS[(URL, False, False)]
    assert prometheus._laid_out(layout, snap(relabelled), {}, set()) is None
    assert 'group="example"' in prometheus.render([snap(relabelled)])
    assert prometheus.render([snap(relabelled)]) == full([snap(relabelled)], None)
    shorter = samples[:-1]
    prometheus.render([snap(samples)])
    layout = prometheus._LAYOUTS[(URL, False, False)]
    assert prometheus._laid_out(layout, snap(shorter), {}, set()) is None
    assert prometheus.render([snap(shorter)]) == full([snap(shorter)], None)
    assert prometheus.render([snap([])]) == full([snap([])], None) == ""


def test_labels_that_are_no_text_make_no_layout():
    memory = BY_NAME["memory_count"]
    for labels in ((("group", 1),), (("group", True),)):
        prometheus._LAYOUTS.clear()
        samples = [Sample(memory, 2, labels)]
        out = prometheus.render([snap(samples)])
        assert not prometheus._LAYOUTS and out == full([snap(samples)], None)


def test_the_layouts_stay_bounded():
    prometheus._LAYOUTS.clear()
    for i in range(prometheus._LAYOUT_MAX + 10):
        prometheus.render([snap([Sample(BY_NAME["up"], 1)], url=f"http://h{i}.example/s")])
        assert len(prometheus._LAYOUTS) <= prometheus._LAYOUT_MAX
    prometheus._LAYOUTS.clear()
