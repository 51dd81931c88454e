"""The monotonic reference (clocks.py) under hostile conditions: what it
reads when the boot id or CLOCK_BOOTTIME is missing or wrong."""

from __future__ import annotations

import os
import time

import pytest

from apache_metrics_exporter import clocks

BOOT = "0f6b5a2c-3e1d-4c8b-9a7f-2d4e6b8c0a1e"


@pytest.fixture
def boot_file(tmp_path, monkeypatch):
    """clocks reads its boot id from a file of the test's (read afresh)."""
    path = tmp_path / "boot_id"
    monkeypatch.setattr(clocks, "BOOT_ID", str(path))
    monkeypatch.setattr(clocks, "_boot_id_read", False)
    monkeypatch.setattr(clocks, "_boot_id", None)
    return path


def test_the_real_reference_is_there_on_linux():
    assert clocks.valid_boot_id(clocks.boot_id())
    mark = clocks.mark()
    assert mark is not None and mark["id"] == clocks.boot_id()
    assert 0 <= mark["time"] <= clocks.boottime()


def test_a_boot_id_as_the_kernel_writes_it(boot_file):
    boot_file.write_text(BOOT + "\n")
    assert clocks.boot_id() == BOOT


@pytest.mark.parametrize("content", [
    b"", b"\n", b"-----\n", b"not a boot id\n", b"\xff\xfe\x00garbage", BOOT.upper().encode(),
    (BOOT * 1000).encode(), b"0f6b5a2c 3e1d\n", b"0f6b5a2c\x1b[2J\n"])
def test_a_corrupt_boot_id_file_means_no_reference(boot_file, content):
    boot_file.write_bytes(content)
    assert clocks.boot_id() is None and clocks.mark() is None


def test_a_missing_or_fifo_boot_id_file_means_no_reference(boot_file):
    assert clocks.boot_id() is None
    os.mkfifo(boot_file)
    clocks._boot_id_read = False
    started = time.monotonic()
    assert clocks.boot_id() is None  # no writer: nothing, at once
    assert time.monotonic() - started < 1


def test_no_clock_boottime_means_no_reference(monkeypatch):
    monkeypatch.delattr(time, "CLOCK_BOOTTIME")
    assert clocks.boottime() is None and clocks.mark() is None


def test_a_kernel_refusing_clock_boottime_means_no_reference(monkeypatch):
    def refuse(clock):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(time, "clock_gettime", refuse)
    assert clocks.boottime() is None and clocks.mark() is None


@pytest.mark.parametrize("boot", [
    None, "nonsense", {}, {"id": BOOT}, {"id": BOOT, "time": -5.0},
    {"id": BOOT, "time": float("nan")}, {"id": BOOT, "time": "1060"},
    {"id": "x" * 100, "time": 1060.0}, {"id": BOOT.upper(), "time": 1060.0}])
def test_readings_with_an_unusable_reference_are_timed_by_the_wall_clock(boot):
    before = {"time": 100.0, "boot": {"id": BOOT, "time": 1000.0}}
    now = {"time": 3760.0, "boot": boot}
    assert not clocks.same_boot(before, now)
    assert clocks.elapsed(before, now) == 3660.0


def test_elapsed_and_the_future_within_one_boot():
    before = {"time": 100.0, "boot": {"id": BOOT, "time": 1000.0}}
    now = {"time": 100.0 - 3600, "boot": {"id": BOOT, "time": 1060.0}}
    assert clocks.elapsed(before, now) == 60.0 and clocks.elapsed(now, before) == -60.0
    assert not clocks.from_the_future(before, now, 60.0)  # wall says an hour ahead
    ahead = {"time": 100.0, "boot": {"id": BOOT, "time": 1e18}}  # impossible in this boot
    assert clocks.from_the_future(ahead, now, 60.0)
