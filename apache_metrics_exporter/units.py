"""Human-friendly sizes and timespans, as the original apache-manager accepted them."""

from __future__ import annotations

import math
import re

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import List

_TIMESPAN_UNITS = {
    "ms": 0.001, "msec": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "": 1.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}
_SIZE_UNITS = {
    "": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
    "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3,
    "t": 1024 ** 4, "tb": 1024 ** 4, "tib": 1024 ** 4,
}
# ASCII digits only: '\u0663' (Arabic-Indic three) is a digit to \\d and to float().
_NUMBER_UNIT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", re.ASCII)
MAX_NUMBER_TEXT = 40  # longer numbers in an option are a mistake, not a size


FLOAT_MAX = 1.7976931348623157e308


def parse_timespan(text: str) -> float:
    """Seconds in ``90s``, ``5m``, ``1h30m``, ``2 hours`` or a bare number of seconds."""
    text = str(text).strip()
    pos, total, matched = 0, 0.0, False
    while pos < len(text):
        m = _NUMBER_UNIT.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"not a timespan: {text!r} (examples: 30s, 5m, 1h)")
        unit = m.group(2).lower()
        if unit not in _TIMESPAN_UNITS:
            raise ValueError(f"unknown time unit {m.group(2)!r} in {text!r} "
                             "(use ms, s, m, h, d or w)")
        total += float(m.group(1)) * _TIMESPAN_UNITS[unit]
        pos, matched = m.end(), True
    if not matched:
        raise ValueError("empty timespan (examples: 30s, 5m, 1h)")
    if not math.isfinite(total) or len(text) > 4 * MAX_NUMBER_TEXT:
        raise ValueError(f"timespan too long: {text[:MAX_NUMBER_TEXT]!r}...")
    return total


def parse_size(text: str) -> int:
    """Bytes in ``50M``, ``2G``, ``512K`` (binary units, as apache-manager used them)."""
    m = _NUMBER_UNIT.fullmatch(str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 512K, 50M, 2G; binary units)")
    size = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if len(m.group(1)) > MAX_NUMBER_TEXT or not size < 2 ** 63:
        raise ValueError(f"not a size: {str(text)[:MAX_NUMBER_TEXT]!r}... is too large")
    return int(size)


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
