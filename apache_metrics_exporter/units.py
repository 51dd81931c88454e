"""Human-friendly sizes and timespans, as the original apache-manager accepted them."""

from __future__ import annotations

import math
import re

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import List, Optional

# apache-manager read both with humanfriendly: every unit its parse_timespan
# knows (a "year" is its 52 weeks), plus "hr"; sizes in binary multiples, as
# its command line asked (parse_size(..., binary=True)).
_TIMESPAN_UNITS = {
    "ns": 1e-9, "nanosecond": 1e-9, "nanoseconds": 1e-9,
    "us": 1e-6, "microsecond": 1e-6, "microseconds": 1e-6,
    "ms": 0.001, "msec": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "": 1.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
    "y": 31449600.0, "year": 31449600.0, "years": 31449600.0,
}
YEAR = 31449600.0
MAX_TIMESPAN = 100 * YEAR  # longer is a typo (and past what a reaper can mean)
# The shortest pace of a loop (--interval, --watch, COLLECTD_INTERVAL): a
# shorter one collects as fast as the CPU goes - a busy loop that floods
# stderr while Apache is down and hammers its status page while it is up.
MIN_INTERVAL = 0.1
_SIZE_UNITS = {"": 1, "b": 1, "byte": 1}
for _power, (_letter, _decimal, _binary) in enumerate((
        ("k", "kilo", "kibi"), ("m", "mega", "mebi"), ("g", "giga", "gibi"),
        ("t", "tera", "tebi"), ("p", "peta", "pebi"), ("e", "exa", "exbi"),
        ("z", "zetta", "zebi"), ("y", "yotta", "yobi")), start=1):
    for _name in (_letter, _letter + "b", _letter + "ib", _decimal + "byte", _binary + "byte"):
        _SIZE_UNITS[_name] = 1024 ** _power
# ASCII digits only: '\u0663' (Arabic-Indic three) is a digit to \\d and to float().
_NUMBER_UNIT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", re.ASCII)
MAX_NUMBER_TEXT = 40  # longer numbers in an option are a mistake, not a size


FLOAT_MAX = 1.7976931348623157e308


def _cut(text: str) -> str:
    """``text`` quoted for a message, at most MAX_NUMBER_TEXT characters of it."""
    text = str(text).strip()
    return repr(text) if len(text) <= MAX_NUMBER_TEXT else f"{text[:MAX_NUMBER_TEXT]!r}..."


def parse_timespan(text: str) -> float:
    """Seconds in ``90s``, ``5m``, ``1h30m``, ``2 hours``, ``1ns``, ``1y`` or a
    bare number of seconds; at most ``MAX_TIMESPAN`` (100 years)."""
    text = str(text).strip()
    pos, total, matched = 0, 0.0, False
    if len(text) > 4 * MAX_NUMBER_TEXT:
        raise ValueError(f"not a timespan: {_cut(text)} (too long to be one)")
    while pos < len(text):
        m = _NUMBER_UNIT.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"not a timespan: {_cut(text)} (examples: 30s, 5m, 1h)")
        unit = m.group(2).lower()
        if unit not in _TIMESPAN_UNITS:
            raise ValueError(f"unknown time unit {_cut(m.group(2))} in {_cut(text)} "
                             "(use ns, us, ms, s, m, h, d, w or y)")
        total += float(m.group(1)) * _TIMESPAN_UNITS[unit]
        pos, matched = m.end(), True
    if not matched:
        raise ValueError("empty timespan (examples: 30s, 5m, 1h)")
    if not total <= MAX_TIMESPAN:  # also inf and NaN
        raise ValueError(f"timespan too long: {_cut(text)} (at most 100 years)")
    return total


def parse_size(text: str) -> int:
    """Bytes in ``50M``, ``2G``, ``512K``, ``16 MiB``, ``2 gigabytes`` (binary
    units, as apache-manager used them; plurals too); below 8 EiB (int64)."""
    m = _NUMBER_UNIT.fullmatch(str(text))
    unit = m.group(2).lower() if m else ""
    if unit.endswith("s") and unit[:-1] in _SIZE_UNITS and len(unit) > 2:
        unit = unit[:-1]  # "bytes", "gigabytes"
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(f"not a size: {_cut(text)} (examples: 512K, 50M, 2G; binary "
                         "units)")
    size = float(m.group(1)) * _SIZE_UNITS[unit]
    # Compared as a float: 2 ** 63 - 1 would round up to 2 ** 63.
    if len(m.group(1)) > MAX_NUMBER_TEXT or not size < 2 ** 63:
        raise ValueError(f"size too large: {_cut(text)} (less than 8 EiB)")
    return int(size)


SMALLEST_BARE_THRESHOLD = 1024 * 1024  # bytes


def parse_memory_threshold(text: str) -> int:
    """A reaper memory limit (parse_size). A number without a unit is bytes,
    as in apache-manager; below 1 MiB that is a forgotten unit, not a limit -
    every Apache worker uses more, so every worker would be killed: refused,
    with the unit to add. A unit given (``512K``) is taken as written."""
    value = parse_size(text)
    m = _NUMBER_UNIT.fullmatch(str(text))
    if m and not m.group(2) and 0 < value < SMALLEST_BARE_THRESHOLD:
        number = m.group(1)
        raise ValueError(f"{_cut(text)} without a unit is {value} bytes, less than any "
                         f"Apache worker uses: every worker would be over it; give a "
                         f"unit ({number}M, {number}G; or {number}B if bytes are meant)")
    return value


def format_bytes(n: float) -> str:
    """``512.0 MiB``-style rendering for log lines and the summary."""
    if not isinstance(n, (int, float)) or not -FLOAT_MAX <= n <= FLOAT_MAX:
        return "?"  # NaN, inf or not a number: nothing sensible to round
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024.0
        if abs(n) < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def format_figure(x: float, digits: int = 3, max_decimals: int = 4) -> str:
    """A measured figure for people (the summary, --watch): ``digits``
    significant digits, never more than ``max_decimals`` after the point
    (below that it reads 0), never an exponent, whole numbers kept whole
    (1234, not 1.23e+03). Machine formats keep full precision."""
    if not isinstance(x, (int, float)) or not -FLOAT_MAX <= x <= FLOAT_MAX:
        return "?"
    if x == 0:
        return "0"
    if abs(x) >= 1e15:  # not a measurement; shown, not spelled out
        return f"{x:.{digits}g}"
    decimals = min(max(digits - 1 - math.floor(math.log10(abs(x))), 0), max_decimals)
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_duration(seconds: float) -> str:
    """``45s``, ``5m 3s``, ``2h 10m``, ``3d 4h`` - two units at most."""
    if not isinstance(seconds, (int, float)) or not -FLOAT_MAX <= seconds <= FLOAT_MAX:
        return "?"
    seconds = int(seconds)
    parts: List[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """Text safe for a terminal, a log line or one field of a line-based format:
    every character Python does not call printable (controls such as ESC, CR,
    LF and tab, lone surrogates from undecodable bytes, line and paragraph
    separators, other invisible characters) becomes a ``\\xHH``-style escape;
    printable text, spaces included, is unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def hostport(host: str, port: Optional[int] = None) -> str:
    """HOST or HOST:PORT as a URL writes it: an IPv6 address in brackets
    ("::1:9" would read as one address)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"
