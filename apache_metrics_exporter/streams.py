"""Closed standard streams: an ordinary condition, not a crash.

Cron jobs and agents start commands with stdin, stdout or stderr closed
(``>&-``). Python then has ``sys.stdout`` (etc.) set to None, and - worse -
the next file the program opens gets the lowest free descriptor: the output
file could become fd 1 or 2, and a later write meant for stdout or stderr
would land in it. ``guard()``, called first by every console script, opens
/dev/null onto each closed descriptor (so no file can take its number) and
remembers which were closed:

- stdout closed: writing the requested output there is an output error
  (exit 1), never a silent write to /dev/null (``require_stdout``, and the
  stand-in ``sys.stdout`` notes any write for ``finish``);
- stderr closed: log lines are dropped silently;
- stdin closed: ``--execd``, the one mode that reads it, says so (exit 2).
"""

from __future__ import annotations

import io
import os
import sys

from apache_metrics_exporter.errors import OutputError


class StdoutClosed(OutputError):
    """Output asked of a stdout closed at start: final, a loop ends on it."""


closed: set = set()  # the standard descriptors (0, 1, 2) found closed at start


class _ClosedStdout(io.TextIOWrapper):
    """``sys.stdout`` when fd 1 was closed: writes go to /dev/null, and the
    attempt is noted, so that the run ends with the output error it is."""

    attempted = False

    def write(self, text: str) -> int:
        if text:
            _ClosedStdout.attempted = True
        return len(text)


def guard() -> None:
    """Open /dev/null onto every closed fd 0-2, note which were closed, and
    give the interpreter working ``sys.stdin/stdout/stderr`` for them."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            try:
                null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd
            except OSError:
                continue  # no /dev/null (a bare chroot): the streams stay None
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    try:
        if 0 in closed:
            sys.stdin = open(0, encoding="utf-8", closefd=False)  # at EOF at once
        if 1 in closed:
            sys.stdout = _ClosedStdout(open(1, "wb", closefd=False), encoding="utf-8")
        if 2 in closed:
            sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace",
                              closefd=False)
    except OSError:
        pass  # left None: every user of the streams copes with that too


def stdout_closed() -> bool:
    """Was stdout closed when the program started (or is it missing now)?"""
    return 1 in closed or sys.stdout is None


def stdout_error() -> str:
    """The one line for output asked of a closed stdout."""
    return ("cannot write to standard output: it was closed when the command started "
            "(>&-); redirect it to a file instead")


def require_stdout() -> None:
    """Raise OutputError when the output would go to a closed stdout."""
    if stdout_closed():
        raise StdoutClosed(stdout_error())


def stdout_failed(exc: OSError) -> OutputError:
    """The output error for a write to stdout that failed (/dev/full, a
    reader gone: EPIPE). Stdout is pointed at /dev/null first, so that the
    interpreter's final flush of what is left in the buffer cannot fail
    again on the way out."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (AttributeError, OSError, ValueError):
        pass
    return OutputError(f"cannot write to standard output: {exc.strerror}")


def stdout_attempted() -> bool:
    """Did anything try to print to the stand-in of a closed stdout (--help)?"""
    return _ClosedStdout.attempted


def stdin_closed() -> bool:
    """Was stdin closed when the program started (or is it missing now)?"""
    return 0 in closed or sys.stdin is None


def isatty(stream: object) -> bool:
    """``stream.isatty()``, False for a missing or closed stream."""
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
