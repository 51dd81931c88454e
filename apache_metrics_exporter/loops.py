"""One batch, and the loops that repeat it: --interval, --execd.

A batch collects every target (concurrently, each under its --timeout),
adds what others keep between runs (the reaper's counters, the push spool's
health, the restart counts) and writes once: to --output, or to the
writer's sink (the InfluxDB push). Loops keep one connection per target
and one Cycle (cycle.py: the state kept between cycles) across batches,
flush after each, and end within a second of SIGTERM/SIGINT. The --listen
endpoint (endpoint.py) runs the same Cycle per scrape.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

from apache_metrics_exporter.cycle import Cycle, report
from apache_metrics_exporter.errors import EXIT_OK, EXIT_OUTPUT, OutputError, UsageError
from apache_metrics_exporter.log import log
from apache_metrics_exporter.streams import StdoutClosed
from apache_metrics_exporter.units import MAX_TIMESPAN, MIN_INTERVAL
from apache_metrics_exporter.writers import FORMAT

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Iterator, List, Optional

    from apache_metrics_exporter.collect.http import Fetcher, Target
    from apache_metrics_exporter.runconfig import RunConfig
    from apache_metrics_exporter.writers import Writer


def collectd_interval() -> Optional[float]:
    """COLLECTD_INTERVAL, set by collectd's Exec plugin: run as a loop there."""
    text = os.environ.get("COLLECTD_INTERVAL", "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"COLLECTD_INTERVAL={text!r} is not a number of seconds") from None
    if value <= 0:
        return None
    if not MIN_INTERVAL <= value <= MAX_TIMESPAN:  # NaN too; inf cannot be slept
        raise UsageError(f"COLLECTD_INTERVAL={text!r}: the pace must be at least "
                         f"{MIN_INTERVAL:g} s (a shorter one is a busy loop) and at most "
                         "100 years")
    return value


def batch(cycle: Cycle, fetchers: List[Fetcher], writer: Writer, sink: Optional[Any] = None,
          stopper: Optional[Stopper] = None) -> None:
    """Collect every target once and write one batch (raises OutputError).

    Targets are collected concurrently, each fetch (both pages) bounded by
    one --timeout. With a stopper, a stop signal cuts the collection short
    (_Stop); the writing of a collected batch is always finished.
    """
    from apache_metrics_exporter.output import write_atomic

    settings = cycle.config.settings
    snapshots = cycle.collect(fetchers, blocking=None if stopper is None else stopper.blocking)
    tells = getattr(writer, "tells_problems", None)  # the text summary's
    shown = bool(tells and tells(settings))
    for snap in snapshots:
        report(snap, shown)
    text = writer.render(snapshots, settings)
    if sink is not None:
        sink.send(text, snapshots)
    else:
        write_atomic(cycle.config.output, text)


@contextmanager
def _connections(config: RunConfig, targets: List[Target],
                 writer: Writer) -> Iterator[tuple]:
    """A fetcher per target and the writer's sink (if it has one), closed at
    the end whatever happens; a loop keeps them across batches."""
    from apache_metrics_exporter.collect.http import Fetcher

    fetchers = [Fetcher(t) for t in targets]
    sink = writer.sink(config.settings) if FORMAT[config.format].sinks else None
    try:
        yield fetchers, sink
    finally:
        for f in fetchers:
            f.close()
        if sink is not None:
            sink.close()


def run_once(config: RunConfig, targets: List[Target], writer: Writer) -> int:
    """One batch, then exit."""
    with _connections(config, targets, writer) as (fetchers, sink):
        try:
            batch(Cycle(config, keep=False), fetchers, writer, sink)
        except OutputError as exc:
            log.error("%s", exc)
            return EXIT_OUTPUT
    return EXIT_OK


class _Stop(BaseException):
    """Raised by the signal handler to leave a blocking wait or a fetch. Not an
    Exception, so that no ``except Exception`` on the way turns it into a
    failed fetch."""


class Stopper:
    """SIGTERM/SIGINT end a loop cleanly: a batch being written is finished,
    a wait (sleep, stdin) or a collection (however slowly the peer answers) is
    left at once."""

    def __init__(self) -> None:
        self.stopping = False
        self._blocking = False
        import signal  # the loops only: a one-shot run installs no handler

        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.stopping = True
        if self._blocking:
            raise _Stop()

    def blocking(self, fn, *args):  # noqa: ANN001,ANN201 - any blocking call
        """Run a blocking call that a stop signal may cut short."""
        self._blocking = True
        try:
            if self.stopping:
                raise _Stop()
            return fn(*args)
        finally:
            self._blocking = False


def run_loop(config: RunConfig, targets: List[Target], writer: Writer) -> int:
    """--interval and --execd: a batch per tick or per stdin line, until stopped.

    The HTTP connections are kept between batches; an Apache that goes away
    yields up=0 batches and the loop goes on; stdout is flushed after each
    batch. A failing stdout (the agent went away, or it was closed at start
    and --output names it) ends the loop with status 1; a failing output file
    is reported and tried again next time.
    """
    stopper = Stopper()
    cycle = Cycle(config)  # kept between batches
    next_tick = time.monotonic()
    with _connections(config, targets, writer) as (fetchers, sink):
        try:
            while not stopper.stopping:
                if config.execd and not stopper.blocking(sys.stdin.readline):
                    return EXIT_OK  # Telegraf closed stdin: it is stopping us
                try:
                    batch(cycle, fetchers, writer, sink, stopper)
                except OutputError as exc:
                    log.error("%s", exc)
                    if config.output == "-" and sink is None or isinstance(exc, StdoutClosed):
                        return EXIT_OUTPUT
                if config.interval:
                    next_tick += config.interval
                    now = time.monotonic()
                    if next_tick < now:  # a slow batch: skip the ticks it overran
                        next_tick = now + config.interval - (now - next_tick) % config.interval
                    stopper.blocking(time.sleep, next_tick - now)
        except _Stop:
            pass
    return EXIT_OK
