"""The influx writer's layout of a target's samples (issue 23): made from a
cycle's metrics and labels, it writes the next cycle's values - the same
bytes as the full way for whatever metrics, labels and values come, and the
full way whenever a value is not written as the layout would write it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apache_metrics_exporter.catalogue import BY_NAME, INT64_MAX, limit
from apache_metrics_exporter.collect.snapshot import Sample
from apache_metrics_exporter.collect.status import AutoPage
from apache_metrics_exporter.writers import influx
from tests.test_fuzz import NUMBERS, snapshots
from tests.test_render_memo import URL, snap

LAYOUT = settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def full(snaps) -> str:
    """The output without any layout (made anew and forgotten)."""
    influx._LAYOUTS.clear()
    try:
        return influx.render(snaps)
    finally:
        influx._LAYOUTS.clear()


def laid_out(first, second) -> str:
    """``second`` rendered after ``first`` (whose layout it may use)."""
    influx._LAYOUTS.clear()
    influx.render(first)
    return influx.render(second)


def with_values(snapshot, values, extra=None):
    samples = [Sample(s.metric, v, s.labels) for s, v in zip(snapshot.samples, values)]
    auto = snapshot.auto
    if auto is not None and extra is not None:
        auto = auto._replace(telegraf_extra=extra)
    return snapshot._replace(samples=samples, auto=auto)


@LAYOUT
@given(st.data())
def test_the_next_cycles_values_are_written_as_the_full_way_writes_them(data):
    snapshot = data.draw(snapshots())
    values = [data.draw(st.one_of(st.just(s.value), NUMBERS, st.text(max_size=5)))
              for s in snapshot.samples]
    extra = data.draw(st.one_of(st.none(), st.dictionaries(
        st.sampled_from(["ProxyBalancer[0]Worker[0]Elected", "BusyWorkers", "a b"]), NUMBERS,
        max_size=2)))
    after = with_values(snapshot, values, extra)
    for first, second in ((snapshot, after), (after, snapshot), (snapshot, snapshot)):
        assert laid_out([first], [second]) == full([second])
        assert influx.render([second]) == full([second])  # the layout kept, used again


def live_like():
    """A small server's usual samples: fields of all three kinds, labels."""
    return [Sample(BY_NAME["busy_workers"], 1), Sample(BY_NAME["load1"], 0.25),
            Sample(BY_NAME["scoreboard_slots"], 20), Sample(BY_NAME["utilisation"], 0.05),
            Sample(BY_NAME["memory_count"], 2, (("group", "native"),)),
            Sample(BY_NAME["status_reason"], "ok"), Sample(BY_NAME["up"], 1)]


def test_a_small_servers_cycle_takes_the_layout():
    samples = live_like()
    influx._LAYOUTS.clear()
    influx.render([snap(samples)])
    assert URL in influx._LAYOUTS
    again = [Sample(s.metric, s.value + 1 if type(s.value) is int else s.value, s.labels)
             for s in samples]
    layout = influx._LAYOUTS[URL]
    got = influx._laid_out(layout, snap(again))
    assert got is not None and got is not influx._FULL
    assert "\n".join(got) + "\n" == full([snap(again)])


@pytest.mark.parametrize("index, value", [
    (0, INT64_MAX + 1),  # out of range (BusyWorkers: a float field, an int metric's range)
    (0, float("nan")), (1, float("inf")), (1, True), (1, "3"), (2, 7.5), (2, False),
    (2, limit(BY_NAME["scoreboard_slots"]) + 1), (5, 3), (6, None),
])
def test_a_value_the_layout_does_not_write_takes_the_full_way(index, value):
    samples = live_like()
    changed = list(samples)
    changed[index] = samples[index]._replace(value=value)
    influx._LAYOUTS.clear()
    influx.render([snap(samples)])
    assert influx._laid_out(influx._LAYOUTS[URL], snap(changed)) is influx._FULL
    assert influx.render([snap(changed)]) == full([snap(changed)])
    assert influx.render([snap(samples)]) == full([snap(samples)])


def test_a_later_sample_of_the_same_field_is_written_when_the_first_is_left_out():
    """The layout writes a field's first sample; when that one's value does
    not fit, the full way writes the next sample of the field."""
    busy = BY_NAME["busy_workers"]
    samples = [Sample(busy, 1), Sample(busy, 2), Sample(BY_NAME["up"], 1)]
    influx._LAYOUTS.clear()
    assert "BusyWorkers=1.0 " in influx.render([snap(samples)])
    samples[0] = Sample(busy, float("nan"))
    out = influx.render([snap(samples)])
    assert "BusyWorkers=2.0 " in out and out == full([snap(samples)])


def test_other_metrics_or_labels_make_another_layout():
    samples = live_like()
    influx._LAYOUTS.clear()
    influx.render([snap(samples)])
    relabelled = list(samples)
    relabelled[4] = Sample(BY_NAME["memory_count"], 2, (("group", "example"),))
    assert influx._laid_out(influx._LAYOUTS[URL], snap(relabelled)) is None
    assert "group=example" in influx.render([snap(relabelled)])
    assert influx.render([snap(relabelled)]) == full([snap(relabelled)])
    shorter = samples[:-1]
    influx.render([snap(samples)])
    assert influx._laid_out(influx._LAYOUTS[URL], snap(shorter)) is None
    assert influx.render([snap(shorter)]) == full([snap(shorter)])
    assert influx.render([snap([])]) == full([snap([])]) == ""


def test_telegraf_extra_fields_follow_the_layouts_fields():
    samples = live_like()
    auto = AutoPage(values={}, info={}, scoreboard="", proxy=[], extended=True,
                    telegraf_extra={"ProxyBalancer[0]Worker[0]Elected": 3,
                                    "BusyWorkers": 9, "a b": float("nan")},
                    left_out=frozenset())
    with_extra = snap(samples)._replace(auto=auto)
    influx._LAYOUTS.clear()
    influx.render([snap(samples)])
    out = influx.render([with_extra])
    assert out == full([with_extra])
    assert ",ProxyBalancer[0]Worker[0]Elected=3.0 " in out and "BusyWorkers=9" not in out
    # no Telegraf point in the layout: the full way makes it
    only_up = [Sample(BY_NAME["up"], 1)]
    influx.render([snap(only_up)])
    lone = snap(only_up)._replace(auto=auto)
    assert influx.render([lone]) == full([lone])
    assert lone.samples and "apache,port=8080" in influx.render([lone])


def test_the_layouts_stay_bounded():
    influx._LAYOUTS.clear()
    for i in range(influx._LAYOUT_MAX + 10):
        influx.render([snap([Sample(BY_NAME["up"], 1)], url=f"http://h{i}.example/s")])
        assert len(influx._LAYOUTS) <= influx._LAYOUT_MAX
    influx._LAYOUTS.clear()
