"""The writers remember how a labelled sample is written (issue 23): the
same text as working it out anew, whatever labels come, and bounded."""

from __future__ import annotations

import argparse

import pytest

from apache_metrics_exporter.catalogue import BY_NAME
from apache_metrics_exporter.collect.processes import EMPTY_SCAN
from apache_metrics_exporter.collect.snapshot import Sample, Snapshot
from apache_metrics_exporter.writers import influx, prometheus

URL = "http://127.0.0.1:8080/server-status"
NAMINGS = [argparse.Namespace(prometheus_naming=n) for n in ("apache_exporter", "base-units")]


def snap(samples, url: str = URL) -> Snapshot:
    return Snapshot(url=url, timestamp=1.7e9, up=True, error=None, warnings=[], auto=None,
                    workers=None, event_processes=None, processes=EMPTY_SCAN,
                    samples=list(samples))


def forget() -> None:
    influx._LABELLED.clear()
    influx._PREFIXES.clear()
    prometheus._NAMES.clear()


def rendered(snaps) -> list:
    return [influx.render(snaps)] + [prometheus.render(snaps, n) for n in NAMINGS]


def fresh(snaps) -> list:
    forget()
    return rendered(snaps)


def test_remembered_text_is_what_working_it_out_gives():
    vhost, group = BY_NAME["vhost_busy_workers"], BY_NAME["memory_average_bytes"]
    for label in ["a.example", "b.example", 'q"uote,x=y z', "new\nline", "\x1b[31m", "é"]:
        samples = [Sample(vhost, 3, (("vhost", label),)), Sample(group, 2.5, (("group", label),)),
                   Sample(BY_NAME["scoreboard"], 4, (("state", "waiting"),))]
        for snaps in ([snap(samples)], [snap(samples), snap(samples, "http://[::1]/s")]):
            expected = fresh(snaps)
            assert rendered(snaps) == expected  # from the memo
            assert rendered(snaps) == expected
    assert influx._LABELLED and influx._PREFIXES and prometheus._NAMES


@pytest.mark.parametrize("values", [(1, True, "1", 1.0), ("True", True), (0, False, 0.0)])
def test_label_values_that_compare_equal_are_not_confused(values):
    """1 == True == 1.0 as keys, but str() of each is another label value
    (Prometheus writes any label value as text; influx takes text only)."""
    group = BY_NAME["memory_count"]

    def prom(value: object) -> list:
        return [prometheus.render([snap([Sample(group, 2, (("group", value),))])], n)
                for n in NAMINGS]

    forget()
    outputs = [prom(v) for v in values]  # one after another: from the memo if kept
    for v, got in zip(values, outputs):
        forget()
        assert got == prom(v), v


def test_the_memos_stay_bounded_and_keep_no_long_text():
    vhost = BY_NAME["vhost_busy_workers"]
    for i in range(0, 3 * influx._MEMO_MAX, 500):
        rendered([snap([Sample(vhost, 1, (("vhost", f"h{j}.example"),))
                        for j in range(i, i + 500)])])
        assert len(influx._LABELLED) <= influx._MEMO_MAX
        assert len(prometheus._NAMES) <= prometheus._NAMES_MAX
    forget()
    long = "x" * 2000
    got = rendered([snap([Sample(vhost, 1, (("vhost", long),))], url=f"http://{long}/s")])
    assert not influx._LABELLED and not influx._PREFIXES and not prometheus._NAMES
    assert got == fresh([snap([Sample(vhost, 1, (("vhost", long),))], url=f"http://{long}/s")])
