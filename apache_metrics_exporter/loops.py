"""One batch, and the loops that repeat it: --interval, --execd, --listen.

A batch collects every target (concurrently, each under its --timeout),
adds what others keep between runs (the reaper's counters, the push spool's
health, the restart counts) and writes once: to --output, or to the
writer's sink (the InfluxDB push). Loops keep one connection per target
between batches, flush after each, and end within a second of SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager

from apache_metrics_exporter.errors import EXIT_OK, EXIT_OUTPUT, EXIT_USAGE, OutputError, UsageError
from apache_metrics_exporter.log import INFO, WARNING, log
from apache_metrics_exporter.streams import StdoutClosed
from apache_metrics_exporter.writers import FORMAT, Settings

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Iterator, List, Optional, Tuple

    from apache_metrics_exporter.collect.http import Fetcher, Target
    from apache_metrics_exporter.collect.snapshot import Options, Snapshot
    from apache_metrics_exporter.restarts import Memory
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
    return value if value > 0 else None


_said: set = set()  # warnings already given (long-running modes repeat none)


def report(snap: Snapshot, shown: bool = False) -> None:
    """The snapshot's problems on stderr: why the page could not be read, as one
    line, then warnings, once each. While the page is down the warnings (about
    configuration, not about the outage) wait for -v, so the outage stands alone.
    ``shown``: the output itself shows them on the terminal stderr goes to
    (the text summary), so they are not said twice."""
    if shown:
        return
    if snap.error:
        log.error("%s", snap.error)
    for warning in snap.warnings:
        if warning not in _said:
            if snap.up:
                _said.add(warning)
            log.log(WARNING if snap.up else INFO, "%s", warning)


def options_from(args: argparse.Namespace, exe_names: Tuple[str, ...]) -> Options:
    from apache_metrics_exporter.collect.snapshot import Options

    return Options(hanging_threshold=args.hanging_threshold, exe_names=exe_names,
                   pid_file=args.pid_file, memory=args.memory,
                   scan_processes=not args.no_processes, vhost_limit=args.vhost_limit,
                   wsgi_group_names=args.wsgi_group_names,
                   client_limit=args.client_limit)


def track_restarts(args: argparse.Namespace, snapshots: List[Snapshot],
                   memory: Optional[Memory] = None) -> None:
    """Restart counts from the collector's state file and the interval figures
    (restarts.py): compared with the loop's ``memory`` when it has a newer
    reading than the file, or when there is no file."""
    if args.collector_state or memory is not None:
        from apache_metrics_exporter.restarts import DEFAULT_PATH, track

        track(snapshots, args.collector_state, args.collector_state != DEFAULT_PATH,
              memory, args.vhost_limit)


def batch(args: argparse.Namespace, fetchers: List[Fetcher], options: Options,
          writer: Writer, sink: Optional[Any] = None,
          stopper: Optional[Stopper] = None, memory: Optional[Memory] = None) -> None:
    """Collect every target once and write one batch (raises OutputError).

    Targets are collected concurrently, each fetch (both pages) bounded by
    one --timeout. With a stopper, a stop signal cuts the collection short
    (_Stop); the writing of a collected batch is always finished.
    """
    from apache_metrics_exporter.collect.snapshot import collect_all
    from apache_metrics_exporter.health import state_samples
    from apache_metrics_exporter.output import write_atomic

    extra = state_samples(args.spool_dir, args.spool_max_bytes, args.state_file)
    if stopper is None:
        snapshots = collect_all(fetchers, options)
    else:
        snapshots = stopper.blocking(collect_all, fetchers, options)
    track_restarts(args, snapshots, memory)
    tells = getattr(writer, "tells_problems", None)  # the text summary's
    shown = bool(tells and tells(Settings.of(args)))
    for snap in snapshots:
        snap.samples.extend(extra)
        report(snap, shown)
    text = writer.render(snapshots, Settings.of(args))
    if sink is not None:
        sink.send(text, snapshots)
    else:
        write_atomic(args.output, text)


@contextmanager
def _connections(args: argparse.Namespace, targets: List[Target],
                 writer: Writer) -> Iterator[tuple]:
    """A fetcher per target and the writer's sink (if it has one), closed at
    the end whatever happens; a loop keeps them across batches."""
    from apache_metrics_exporter.collect.http import Fetcher

    fetchers = [Fetcher(t) for t in targets]
    sink = writer.sink(Settings.of(args)) if FORMAT[args.format].sinks else None
    try:
        yield fetchers, sink
    finally:
        for f in fetchers:
            f.close()
        if sink is not None:
            sink.close()


def run_once(args: argparse.Namespace, targets: List[Target],
             exe_names: Tuple[str, ...], writer: Writer) -> int:
    """One batch, then exit."""
    with _connections(args, targets, writer) as (fetchers, sink):
        try:
            batch(args, fetchers, options_from(args, exe_names), writer, sink)
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


def run_loop(args: argparse.Namespace, targets: List[Target],
             exe_names: Tuple[str, ...], writer: Writer) -> int:
    """--interval and --execd: a batch per tick or per stdin line, until stopped.

    The HTTP connections are kept between batches; an Apache that goes away
    yields up=0 batches and the loop goes on; stdout is flushed after each
    batch. A failing stdout (the agent went away, or it was closed at start
    and --output names it) ends the loop with status 1; a failing output file
    is reported and tried again next time.
    """
    from apache_metrics_exporter.restarts import Memory

    stopper = Stopper()
    options = options_from(args, exe_names)
    memory = Memory()  # the previous reading of each target, between batches
    next_tick = time.monotonic()
    with _connections(args, targets, writer) as (fetchers, sink):
        try:
            while not stopper.stopping:
                if args.execd and not stopper.blocking(sys.stdin.readline):
                    return EXIT_OK  # Telegraf closed stdin: it is stopping us
                try:
                    batch(args, fetchers, options, writer, sink, stopper, memory)
                except OutputError as exc:
                    log.error("%s", exc)
                    if args.output == "-" and sink is None or isinstance(exc, StdoutClosed):
                        return EXIT_OUTPUT
                if args.interval:
                    next_tick += args.interval
                    now = time.monotonic()
                    if next_tick < now:  # a slow batch: skip the ticks it overran
                        next_tick = now + args.interval - (now - next_tick) % args.interval
                    stopper.blocking(time.sleep, next_tick - now)
        except _Stop:
            pass
    return EXIT_OK


def run_endpoint(args: argparse.Namespace, targets: List[Target],
                 exe_names: Tuple[str, ...]) -> int:
    """--listen: serve scrapes until SIGTERM/SIGINT."""
    from apache_metrics_exporter.endpoint import make_server, serve

    try:
        server = make_server(args, targets, options_from(args, exe_names))
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    return serve(server)
