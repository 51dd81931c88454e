"""The writers' plan of each metric (issue 23): worked out once, it must
write what catalogue.fits and the format's own rules give for every sample,
whatever metric object, label or value comes - samples are appended after
build() (cycle.py adds health.state_samples; --listen its own), so the range
check stays in the writer."""

from __future__ import annotations

import pytest

from apache_metrics_exporter import vhosts
from apache_metrics_exporter.catalogue import BY_NAME, INT64_MAX, Metric, fits, limit
from apache_metrics_exporter.collect.snapshot import Sample
from apache_metrics_exporter.writers import influx, prometheus
from tests.test_render_memo import NAMINGS, snap  # the same snapshots as the memo tests


def rendered(samples) -> list:
    return [influx.render([snap(samples)])] + [prometheus.render([snap(samples)], n)
                                               for n in NAMINGS]


def test_limit_is_the_range_fits_checks():
    for metric in BY_NAME.values():
        most = limit(metric)
        for value in (0, 1, -1, 0.5, most, -most, most + 1, -most - 1, INT64_MAX,
                      INT64_MAX + 1, 1e300, 1e301, float("inf"), float("nan")):
            if isinstance(value, float) and abs(value) > 1e308 and value == value:
                continue  # (most + 1 of a float range: the same float)
            assert fits(metric, value) == (-most <= value <= most), (metric.name, value)


@pytest.mark.parametrize("name, value", [
    ("total_kbytes", INT64_MAX),  # fits no writer once scaled to bytes
    ("total_kbytes", -INT64_MAX),
    ("busy_workers", INT64_MAX + 1),
    ("busy_workers", 2 ** 70),
    ("load1", float("nan")),
    ("load1", float("inf")),
    ("load1", 1e301),
    ("load1", "3"),  # text for a number
    ("status_reason", 3),  # a number for text
    ("status_reason", 3.5),
    ("busy_workers", None),
])
def test_a_sample_out_of_range_is_left_out_by_the_writer(name, value):
    """As build() would have left it out: here it comes after build()."""
    kept = [Sample(BY_NAME["up"], 1)]
    assert not fits(BY_NAME[name], value)
    for _ in range(2):  # the plan made, then used
        assert rendered(kept + [Sample(BY_NAME[name], value)]) == rendered(kept)


@pytest.mark.parametrize("value", [True, False, 7.0, 3, -0.0, 2.5])
def test_values_of_another_type_are_written_as_before(value):
    """bool and int for a float field, a float for an integer one: the long
    way (format_value, prometheus._value), not the plan's short cut."""
    for name in ("busy_workers", "load1", "scoreboard_slots", "utilisation"):
        metric = BY_NAME[name]
        out = rendered([Sample(metric, value)])
        kind = float if metric.influx.startswith("apache.") else metric.type
        field = influx.format_value(value, kind)
        assert f"={field} " in out[0], (name, value, out[0])
        number = prometheus._value(value * metric.prom_scale)
        assert f" {number}\n" in out[1], (name, value, out[1])


def test_a_metric_of_a_catalogue_name_but_its_own_spec_gets_its_own_plan():
    """A plan is the metric's, not its name's: another Metric called
    busy_workers (a test's own) is written as it says, and the catalogue's
    after it as the catalogue says, in either order."""
    own = Metric("busy_workers", "gauge", "workers", int, "Mine.", influx="mine.busy",
                 prom='my_busy{a="b"}')
    ours = BY_NAME["busy_workers"]
    for first, second in ((ours, own), (own, ours), (ours, own)):
        for metric in (first, second):
            out = rendered([Sample(metric, 5)])
            if metric is own:
                assert out[0].startswith("mine,port=8080,server=127.0.0.1 busy=5i ")
                assert out[1].endswith('\nmy_busy{a="b"} 5\n')
            else:
                assert out[0].startswith("apache,port=8080,server=127.0.0.1 BusyWorkers=5.0 ")
                assert out[1].endswith('\napache_workers{state="busy"} 5\n')


def test_a_label_outside_the_field_name_makes_its_own_point():
    """The memo is keyed by the metric's spec and labels: the same labels
    under another metric, or another label, make the right point."""
    count, low = BY_NAME["memory_count"], BY_NAME["memory_min_bytes"]
    samples = [Sample(count, 2, (("group", "native"),)),
               Sample(low, 10, (("group", "native"),)),
               Sample(count, 3, (("group", "native"), ("shard", "b"))),
               Sample(count, 4, (("group", "wsgi a"),)),
               Sample(low, 11, (("group", "native"), ("shard", "b")))]
    for _ in range(2):
        lines = influx.render([snap(samples)]).splitlines()
        assert [line.rsplit(" ", 1)[0] for line in lines] == [
            "apache_memory,group=native,port=8080,server=127.0.0.1 count=2i,min_bytes=10i",
            "apache_memory,group=native,port=8080,server=127.0.0.1,shard=b "
            "count=3i,min_bytes=11i",
            r"apache_memory,group=wsgi\ a,port=8080,server=127.0.0.1 count=4i"]


def test_several_targets_label_a_series_without_labels_after_its_own():
    busy, total = BY_NAME["busy_workers"], BY_NAME["total_accesses"]
    snaps = [snap([Sample(busy, 1), Sample(total, 10)]),
             snap([Sample(busy, 2), Sample(total, 20)], "https://[::1]:8443/s")]
    out = prometheus.render(snaps)
    assert 'apache_workers{state="busy",server="127.0.0.1",port="8080"} 1\n' in out
    assert 'apache_workers{state="busy",server="::1",port="8443"} 2\n' in out
    assert 'apache_accesses_total{server="127.0.0.1",port="8080"} 10\n' in out
    assert 'apache_accesses_total{server="::1",port="8443"} 20\n' in out


def test_written_hands_back_the_samples_when_no_name_changes():
    samples = [Sample(BY_NAME["up"], 1),
               Sample(BY_NAME["vhost_busy_workers"], 2, (("vhost", "a.example"),)),
               Sample(BY_NAME["client_busy_workers"], 1, (("client", "192.0.2.1"),))]
    got = vhosts.written(samples, influx.vhost_name, "influx")
    assert got == samples and got is not samples


def test_written_renames_a_client_whose_vhosts_need_no_change():
    """The one-pass check looks at client labels too, not only vhosts."""
    metric = next(m for m in BY_NAME.values()
                  if m.name in vhosts._KINDS["client"][1] and "client" in m.labels)
    samples = [Sample(BY_NAME["vhost_busy_workers"], 2, (("vhost", "a.example"),)),
               Sample(metric, 1, (("client", "bad\x1bname"),))]
    got = vhosts.written(samples, influx.vhost_name, "influx")
    assert got == vhosts.renamed(vhosts.renamed(samples, influx.vhost_name, "influx"),
                                 influx.vhost_name, "influx", "client")
    assert dict(got[1].labels)["client"] != "bad\x1bname"


def test_written_raises_as_renamed_does_for_a_label_that_is_no_text():
    samples = [Sample(BY_NAME["vhost_busy_workers"], 2, (("vhost", 5),))]
    with pytest.raises(TypeError) as written:
        vhosts.written(samples, influx.vhost_name, "influx")
    with pytest.raises(TypeError) as renamed:
        vhosts.renamed(samples, influx.vhost_name, "influx")
    assert str(written.value) == str(renamed.value)
