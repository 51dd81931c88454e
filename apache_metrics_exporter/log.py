"""One line per message on stderr: ``PROG: LEVEL: message``.

A few lines instead of the logging module, whose import costs more than the
rest of a one-shot collection's own code (Telegraf runs it every interval).
"""

from __future__ import annotations

import sys
import time

from apache_metrics_exporter.scrub import scrub

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Dict, Optional, Pattern

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
# Shown at the default level like a warning, but not one: what a long-running
# mode says once when it starts (where --listen listens); -q hides it.
NOTICE = 35
ONCE_LIMIT = 4096  # distinct messages Logger.once() remembers
_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", NOTICE: "notice",
          ERROR: "error", CRITICAL: "critical"}
# Telegraf's execd (and exec with log_stderr) logs a stderr line at the level
# its prefix names; unprefixed lines are logged as errors.
_TELEGRAF = {DEBUG: "D!", INFO: "I!", WARNING: "W!", NOTICE: "I!", ERROR: "E!",
             CRITICAL: "E!"}
LOG_FORMATS = ("plain", "telegraf", "logfmt", "json")
# apache_exporter's --log.level values (promslog / go-kit: "warn").
LOG_LEVELS = ("debug", "info", "warn", "error")
_BY_NAME = {"debug": DEBUG, "info": INFO, "warn": WARNING, "error": ERROR}
_GO_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warn", NOTICE: "info", ERROR: "error",
             CRITICAL: "error"}

# Control characters (C0, DEL, C1) and Unicode line breaks, shown escaped: a
# message carries text from peers (reason phrases, headers, page content), and
# none of it may move the cursor, recolour a terminal or start a second line.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}
_ESCAPES.update({0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r", 0x2028: "\\u2028",
                 0x2029: "\\u2029"})


def printable(text: str) -> str:
    """``text`` with every control character and line break escaped (one line)."""
    return text.translate(_ESCAPES)


class Logger:
    """The program's logger: a name, a threshold, %-style arguments."""

    def __init__(self) -> None:
        self.prog = "apache-metrics-exporter"
        self.level = WARNING
        self.style = "plain"
        self.front_end = ""  # a front end's name, kept whoever calls setup()
        self.options: Dict[str, str] = {}
        self._options_re: Optional[Pattern[str]] = None
        self._warned: set = set()
        self._once: set = set()

    def once(self, level: int, message: str) -> bool:
        """``message`` said at ``level`` the first time only, in this process
        (loops and --listen repeat their batches; a condition that lasts is
        said when it starts). Whether it was said now. Bounded: past
        ONCE_LIMIT distinct messages (a --listen probing ever new targets)
        the oldest are forgotten, so one may be said again."""
        if message in self._once:
            return False
        if len(self._once) >= ONCE_LIMIT:
            self._once.clear()
        self._once.add(message)
        self.log(level, "%s", message)
        return True

    def said(self, message: str) -> bool:
        """Whether once() has said ``message`` (and still remembers it)."""
        return message in self._once

    def forget(self) -> None:
        """Forget what once() said (tests, and a front end's next command)."""
        self._once.clear()

    def speak_as(self, prog: str, options: Dict[str, str]) -> None:
        """Say every later message as ``prog``, with each option name in
        ``options`` (``--output``) replaced by its value (``-f``): a front end
        (apache-manager) runs the other commands in-process, and its user
        typed neither their names nor their options."""
        import re

        self.front_end = prog  # "": back to each command's own name
        self._warned = set()
        self.prog = prog or self.prog
        self.options = dict(options)
        names = sorted(self.options, key=len, reverse=True)
        alternatives = "|".join(re.escape(n) for n in names)
        self._options_re = (re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")
                            if names else None)

    def setup(self, verbose: int, quiet: int, prog: str, style: str = "plain",
              level: Optional[str] = None) -> None:
        """-v lowers the threshold by one level, -q raises it (-qq: silent),
        from ``level`` (--log.level) when given, else from warnings."""
        self.prog = self.front_end or prog
        base = _BY_NAME.get(level or "", WARNING)
        self.level = max(DEBUG, min(base + 10 * (quiet - verbose), CRITICAL + 10))
        self.style = style

    def log(self, level: int, message: str, *args: object) -> None:
        if level < self.level:
            return
        self._write(level, message, args)

    def action(self, level: int, message: str, *args: object) -> None:
        """A line saying what was done to a process (the reaper's kills, and a
        dry run's would-kills): written at ``level``'s name whatever the
        threshold - --log-level and -q never hide a signal that was sent, nor
        what a dry run says it would send (its only result)."""
        self._write(level, message, args)

    def _write(self, level: int, message: str, args: tuple) -> None:
        # Every line may carry a peer's echo of a credential: scrubbed here too.
        text = printable(scrub(message % args if args else message))
        if self._options_re is not None:
            text = self._options_re.sub(lambda m: self.options[m.group(0)], text)
        if level == WARNING and self.front_end:
            # A front end runs (and first checks) several commands, each of
            # which reads the same config: each warning once.
            if text in self._warned:
                return
            self._warned.add(text)
        if self.style == "telegraf":
            line = f"{_TELEGRAF.get(level, 'I!')} [{self.prog}] {text}\n"
        elif self.style in ("logfmt", "json"):
            line = _structured(self.style, level, text)
        else:
            line = f"{self.prog}: {_NAMES.get(level, 'info')}: {text}\n"
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass  # stderr closed (None) or gone: nothing sensible left to tell

    def debug(self, message: str, *args: object) -> None:
        self.log(DEBUG, message, *args)

    def info(self, message: str, *args: object) -> None:
        self.log(INFO, message, *args)

    def warning(self, message: str, *args: object) -> None:
        self.log(WARNING, message, *args)

    def notice(self, message: str, *args: object) -> None:
        self.log(NOTICE, message, *args)

    def error(self, message: str, *args: object) -> None:
        self.log(ERROR, message, *args)


def _structured(style: str, level: int, text: str) -> str:
    """One line as apache_exporter 0.12 (go-kit) writes it: ``ts=... level=info
    msg="..."`` (logfmt), or the same keys as a JSON object (json)."""
    now = time.time()
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    name = _GO_NAMES.get(level, "info")
    if style == "json":
        import json

        return json.dumps({"level": name, "msg": text, "ts": ts}) + "\n"
    if not text or any(c in text for c in ' ="\\'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"ts={ts} level={name} msg={text}\n"


log = Logger()
