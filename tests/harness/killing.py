"""Ending the processes a test started itself, whatever state they are in."""

from __future__ import annotations

import os
import signal
from typing import Iterable


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL each of these PIDs (the test's own processes) that still runs."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
