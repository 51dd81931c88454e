"""Waiting for a condition in tests: a readiness check asked again and again,
never a fixed sleep."""

from __future__ import annotations

import time
from typing import Callable


def wait_for(what: str, check: Callable[[], object], timeout: float = 20.0,
             interval: float = 0.02) -> object:
    """``check()``'s first true value, asked every ``interval`` seconds; an
    AssertionError naming ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} ({timeout:g} s)")
        time.sleep(interval)
