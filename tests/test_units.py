import pytest

from apache_metrics_exporter.units import format_bytes, parse_size, parse_timespan


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("2 hours", 7200),
    ("300", 300), ("1.5m", 90), ("500ms", 0.5), (".5s", 0.5), ("1d", 86400),
    ("5 minutes", 300), ("2w", 1209600),
])
def test_timespans(text, seconds):
    assert parse_timespan(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5 parsecs", "-5s", "5m x", "m5"])
def test_bad_timespans_say_what_is_expected(text):
    with pytest.raises(ValueError, match="timespan|time unit"):
        parse_timespan(text)


@pytest.mark.parametrize("text,size", [
    ("50M", 50 * 2**20), ("2G", 2 * 2**30), ("512K", 512 * 1024), ("42", 42),
    ("1.5M", int(1.5 * 2**20)), ("16 MiB", 16 * 2**20), ("1kb", 1024),
])
def test_sizes_are_binary(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "5X", "-1M", "1 2M"])
def test_bad_sizes(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(512 * 2**20) == "512.0 MiB"
    assert format_bytes(3 * 2**30) == "3.0 GiB"
