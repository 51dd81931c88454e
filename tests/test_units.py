import pytest

from apache_metrics_exporter.units import (
    format_bytes,
    format_figure,
    parse_memory_threshold,
    parse_size,
    parse_timespan,
)


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


@pytest.mark.parametrize("text, size", [("1048576", 1048576), ("2G", 2 * 1024 ** 3),
                                        ("1K", 1024), ("512B", 512), ("10 bytes", 10)])
def test_memory_thresholds_with_a_unit_or_of_a_worker_size_are_taken(text, size):
    assert parse_memory_threshold(text) == size


@pytest.mark.parametrize("text", ["10", "1048575", " 100 ", "1.5"])
def test_a_bare_memory_threshold_below_1_mib_is_a_forgotten_unit(text):
    # Every Apache worker uses more than 1 MiB: "--max-memory-idle 10" would
    # select every idle worker. The message says which unit to add.
    with pytest.raises(ValueError, match=r"without a unit is \d+ bytes.*give a unit \("):
        parse_memory_threshold(text)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(512 * 2**20) == "512.0 MiB"
    assert format_bytes(3 * 2**30) == "3.0 GiB"


@pytest.mark.parametrize("text,seconds", [
    # Every unit of humanfriendly.parse_timespan, which apache-manager used.
    ("1ns", 1e-9), ("1us", 1e-6), ("3 nanoseconds", 3e-9), ("2 microseconds", 2e-6),
    ("1 millisecond", 0.001), ("1 sec", 1), ("2 secs", 2), ("1 min", 60), ("2 mins", 120),
    ("1 hour", 3600), ("1 day", 86400), ("1 week", 604800),
    ("1y", 31449600), ("1 year", 31449600), ("2 years", 62899200),  # its 52-week year
    ("100y", 3144960000),
])
def test_timespans_of_the_original(text, seconds):
    assert parse_timespan(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,size", [
    ("1P", 2**50), ("1 PiB", 2**50), ("1 petabyte", 2**50), ("2 exbibytes", 2**61),
    ("7.5E", int(7.5 * 2**60)), ("10 bytes", 10), ("1 byte", 1), ("3 kibibytes", 3072),
    ("2 gigabytes", 2 * 2**30), ("1 megabyte", 2**20), ("5 KBs", 5 * 1024),
])
def test_sizes_of_the_original(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["8E", "1Z", "1 yottabyte", "9" * 400, "99999999999999999999"])
def test_sizes_have_a_clear_bound(text):
    with pytest.raises(ValueError, match=r"size too large: .* \(less than 8 EiB\)$"):
        parse_size(text)


@pytest.mark.parametrize("text", ["101y", "1" * 100, "99999999999999999999 weeks"])
def test_timespans_have_a_clear_bound(text):
    with pytest.raises(ValueError, match=r"timespan too long: .*\(at most 100 years\)$"):
        parse_timespan(text)


@pytest.mark.parametrize("text", ["5 monkeys", "1 bs", "2 gigs", "1e9", "1ms2"])
def test_words_that_are_no_unit_are_refused(text):
    # humanfriendly took any word starting with k/m/g/... as that prefix
    # ("5 monkeys" = 5 MiB): a typo that silently meant something else.
    with pytest.raises(ValueError):
        parse_size(text)


def test_messages_quote_at_most_forty_characters():
    for parse in (parse_size, parse_timespan):
        with pytest.raises(ValueError) as info:
            parse("9" * 400 + "x")
        assert len(str(info.value)) < 120 and "..." in str(info.value)


@pytest.mark.parametrize("value, shown", [
    (0.0689655, "0.069"), (0.0746988, "0.0747"), (12.345, "12.3"), (0.904, "0.904"),
    (1234.4, "1234"), (999.6, "1000"), (100.0, "100"), (5, "5"), (0, "0"),
    (0.00001, "0"), (-0.00001, "0"), (-2.5678, "-2.57"), (float("nan"), "?"),
    (float("inf"), "?"), (2e20, "2e+20")])
def test_format_figure_rounds_to_significant_digits_without_exponents(value, shown):
    assert format_figure(value) == shown
