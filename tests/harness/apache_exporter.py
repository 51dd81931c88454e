"""Debian's prometheus-apache-exporter, whichever release's it is.

Debian 12 ships 0.11 (``--telemetry.address``, ``--web.config``), Debian 13
ships 1.0 (``--web.listen-address``, ``--web.config.file``; the old names are
gone). The tests that start it ask its ``--help`` which names it takes; our
exporter accepts both sets, so the comparison stays the same on both.
"""

from __future__ import annotations

import functools
import subprocess
from typing import Dict


@functools.cache
def flags(binary: str) -> Dict[str, str]:
    """{"listen": ..., "web_config": ...}: the flag names ``binary`` understands."""
    proc = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    text = proc.stdout + proc.stderr
    old = "--telemetry.address" in text
    return {"listen": "--telemetry.address" if old else "--web.listen-address",
            "web_config": "--web.config" if "--web.config=" in text else "--web.config.file"}
