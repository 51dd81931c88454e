"""Targets of a batch are collected concurrently under one deadline each."""

from __future__ import annotations

import time
from contextlib import ExitStack

from tests.conftest import data, run_exporter
from tests.harness.pages import serve_pages
from tests.harness.peers import DripPeer

AUTO = data("2.4.71-event-ext-on.auto.txt")
HTML = data("2.4.71-event-ext-on.html")


def page_server():
    """A stand-in serving captured real pages (HTML and ?auto) on loopback."""
    return serve_pages(AUTO, HTML)


def test_ten_targets_two_dripping_end_within_the_timeout():
    with ExitStack() as stack:
        good = [stack.enter_context(page_server()) for _ in range(8)]
        bad = [stack.enter_context(DripPeer(head=b"HTTP/1.1 200 OK\r\n", pause=0.2))
               for _ in range(2)]
        urls = good[:4] + [b.url for b in bad] + good[4:]
        args = [a for u in urls for a in ("--url", u)]
        t0 = time.monotonic()
        proc = run_exporter(*args, "--format", "influx", "--timeout", "2", "--no-processes")
        took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert took < 2 + 1.0, took  # about one --timeout, not two of them in a row
    ups = [line for line in proc.stdout.splitlines() if line.startswith("apache_exporter,")]
    ports = [u.split(":")[2].split("/")[0] for u in urls]
    got = {p: ("up=1i" in line) for p in ports for line in ups if f"port={p}," in line}
    assert [got[p] for p in ports] == [True] * 4 + [False] * 2 + [True] * 4
    assert proc.stderr.count("error:") == 2, proc.stderr
