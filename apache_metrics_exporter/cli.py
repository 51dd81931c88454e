"""The ``apache-metrics-exporter`` command.

Exit status: 0 when the output was written (also when Apache is down: that is
data), 1 when the output could not be written, 2 for usage or configuration
errors (found before anything is fetched).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from contextlib import contextmanager
from types import ModuleType

from apache_metrics_exporter.errors import OutputError, UsageError
from apache_metrics_exporter.log import INFO, WARNING, log

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Iterator, List, Optional, Sequence, Tuple

    import configargparse

    from apache_metrics_exporter.http import Fetcher, Target
    from apache_metrics_exporter.reaper import Thresholds
    from apache_metrics_exporter.snapshot import Options, Snapshot

PROG = "apache-metrics-exporter"
EXIT_OK, EXIT_OUTPUT, EXIT_USAGE = 0, 1, 2

EPILOG = """\
exit status: 0 output written (also when Apache is down: status-response 1 / up 0),
             1 output could not be written, 2 bad options or configuration.
environment: every option can be set as APACHE_METRICS_<OPTION>, e.g.
             APACHE_METRICS_URL=http://127.0.0.1/server-status.
"""


def setup_logging(verbose: int, quiet: int, prog: str = PROG, style: str = "plain") -> None:
    """One line per message on stderr, prefixed with the program name."""
    log.setup(verbose, quiet, prog, style)


def build_parser() -> configargparse.ArgParser:
    """The collector's parser: shared options plus output options."""
    from apache_metrics_exporter.config import (
        REAPER_ONLY,
        _positive_seconds,
        _size,
        _timespan,
        add_foreign,
        base_parser,
    )
    from apache_metrics_exporter.paths import SPOOL_DIR
    from apache_metrics_exporter.restarts import DEFAULT_PATH as RESTARTS_STATE
    from apache_metrics_exporter.writers import DESCRIPTIONS, REGISTRY

    p = base_parser(PROG, "Read Apache httpd's mod_status pages and processes and write "
                    "the metrics for monitoring (apache-manager's metrics file, ...).",
                    EPILOG)
    c = p.add_argument_group("collection")
    c.add_argument("-T", "--hanging-threshold", "--hanging-worker-threshold",
                   dest="hanging_threshold", type=_timespan, default=300.0,
                   metavar="TIMESPAN",
                   help="an active worker whose request started this long ago counts "
                        "as hanging (e.g. 90s, 5m); default 5m")
    c.add_argument("--no-processes", action="store_true",
                   help="skip the process scan (no memory figures)")
    c.add_argument("--collector-state", default=RESTARTS_STATE, metavar="PATH",
                   help="the collector's own state file, where restarts are counted "
                        "between runs (left out when it cannot be written); '' for none")
    c.add_argument("--vhost-limit", type=int, default=20, metavar="N",
                   help="report busy workers, requests in flight and the longest request "
                        "for the N virtual hosts with most busy workers, the rest summed "
                        "as vhost 'other'; 0 turns per-vhost figures off")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=sorted(REGISTRY), default=None,
                   help="; ".join(f"{k}: {v}" for k, v in sorted(DESCRIPTIONS.items()))
                   + ". Default: text when stdout is a terminal, else tab")
    o.add_argument("-z", "--zabbix-discovery", action="store_true",
                   help="apache-manager's spelling of --format zabbix-discovery")
    o.add_argument("--prometheus-naming", choices=("apache_exporter", "base-units"),
                   default="apache_exporter",
                   help="apache_exporter: its names, dashboards keep working; base-units: "
                        "bytes and seconds where it used kilobytes and ms (promtool lint)")
    o.add_argument("-w", "--watch", nargs="?", const=2.0, type=_positive_seconds,
                   metavar="SECONDS",
                   help="a live top-like view in the terminal, redrawn every SECONDS "
                        "(default 2); s: sort by memory/request time, q: quit")
    o.add_argument("-f", "--output", "--data-file", dest="output", default="-",
                   metavar="PATH",
                   help="where to write; '-' is stdout. Files are replaced atomically")
    o.add_argument("--hostname", metavar="NAME",
                   help="collectd host name (default: COLLECTD_HOSTNAME, else this "
                        "machine's name)")
    o.add_argument("--instance", action="append", metavar="NAME",
                   help="collectd plugin instance, once per --url in the same order "
                        "(default: HOST_PORT of the URL)")
    i = p.add_argument_group("push to InfluxDB (--format influxdb)")
    i.add_argument("--influxdb-url", metavar="URL",
                   help="InfluxDB (2.x, 1.8+) or another /api/v2/write server, "
                        "e.g. http://127.0.0.1:8086")
    i.add_argument("--influxdb-org", metavar="ORG", help="organisation (InfluxDB 1.8: -)")
    i.add_argument("--influxdb-bucket", metavar="BUCKET",
                   help="bucket (InfluxDB 1.8: DATABASE/RETENTION)")
    i.add_argument("--influxdb-token-file", metavar="PATH",
                   help="file whose first line is the API token (also: influxdb-token in "
                        "the config file, or APACHE_METRICS_INFLUXDB_TOKEN)")
    i.add_argument("--influxdb-token", metavar="TOKEN",
                   help="the token itself (visible in ps: prefer the file or environment)")
    i.add_argument("--influxdb-username", metavar="NAME",
                   help="InfluxDB 1.8 user: the token becomes USER:PASSWORD, org '-'")
    i.add_argument("--influxdb-password-file", metavar="PATH",
                   help="file with the 1.8 user's password (also: influxdb-password in the "
                        "config file, or APACHE_METRICS_INFLUXDB_PASSWORD)")
    i.add_argument("--influxdb-password", help=argparse.SUPPRESS)
    i.add_argument("--influxdb-auth-basic", action="store_true",
                   help="send USER:PASSWORD as HTTP basic auth (1.8 behind a proxy, "
                        "VictoriaMetrics -httpAuth.*)")
    i.add_argument("--influxdb-ca-file", metavar="PATH", help="CA bundle for an https URL")
    i.add_argument("--influxdb-insecure", action="store_true",
                   help="do not verify InfluxDB's TLS certificate")
    i.add_argument("--influxdb-timeout", type=_positive_seconds, default=10.0,
                   metavar="TIMESPAN", help="give up on a write after this long")
    i.add_argument("--spool-dir", default=SPOOL_DIR, metavar="PATH",
                   help="where batches wait while InfluxDB cannot take them")
    i.add_argument("--spool-max-bytes", type=_size, default=64 * 1024 * 1024,
                   metavar="SIZE", help="past this the oldest spooled data is dropped "
                                        "(and counted)")
    r = p.add_argument_group("long-running modes (default: collect once and exit)")
    r.add_argument("--interval", type=_positive_seconds, metavar="TIMESPAN",
                   help="collect and write a batch every TIMESPAN until stopped "
                        "(default under collectd's Exec plugin: COLLECTD_INTERVAL)")
    r.add_argument("--execd", action="store_true",
                   help="Telegraf inputs.execd (signal = \"STDIN\"): one batch per line "
                        "read from stdin; exit 0 at end of input")
    e = p.add_argument_group("Prometheus scrape endpoint (apache_exporter's flag names "
                             "are accepted too)")
    e.add_argument("--listen", "--telemetry.address", dest="listen", metavar="ADDR:PORT",
                   help="answer Prometheus scrapes over HTTP instead of writing output: "
                        "GET /metrics collects every --url at scrape time. ADDR defaults "
                        "to 127.0.0.1 (give 0.0.0.0 or [::] for every interface), PORT to "
                        "9117")
    e.add_argument("--telemetry.endpoint", dest="telemetry_endpoint", default="/metrics",
                   metavar="PATH", help="the path of the metrics page")
    e.add_argument("--probe-allow", action="append", metavar="PATTERN",
                   help="GET /probe?target=URL collects URL if it is a configured --url or "
                        "matches one of these shell patterns (e.g. "
                        "'http://127.0.0.1:*/server-status'); anything else is refused "
                        "with 403. Repeatable")
    e.add_argument("--listen-user", metavar="NAME",
                   help="require HTTP basic auth from scrapers with this user")
    e.add_argument("--listen-password-file", metavar="PATH",
                   help="file whose first line is --listen-user's password (also: "
                        "listen-password in the config file, or "
                        "APACHE_METRICS_LISTEN_PASSWORD)")
    e.add_argument("--listen-password", help=argparse.SUPPRESS)
    e.add_argument("--listen-cert-file", metavar="PATH",
                   help="serve HTTPS with this certificate (PEM, may include the key)")
    e.add_argument("--listen-key-file", metavar="PATH", help="key of --listen-cert-file")
    add_foreign(p, REAPER_ONLY)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one collection; return the exit status."""
    setup_logging(0, 0)
    try:
        from apache_metrics_exporter import config
        from apache_metrics_exporter.output import check_output_path
        from apache_metrics_exporter.writers import load

        parser = build_parser()
        args = config.parse(parser, argv)
        setup_logging(args.verbose, args.quiet, PROG, args.log_format)
        resolve_format(args)
        targets = config.targets(args)
        exe_names = config.exe_names(args)
        writer = load(args.format)
        if len(targets) > 1 and not writer.MULTI_TARGET:
            raise UsageError(f"--format {args.format} holds one Apache only, but "
                             f"{len(targets)} URLs were given; use --format influx or "
                             "collectd, or one run per URL")
        if hasattr(writer, "check"):
            writer.check(args, [t.url for t in targets])
        check_output_path(args.output)
        if args.vhost_limit < 0:
            raise UsageError("--vhost-limit must be 0 (off) or more")
        if args.execd and args.interval:
            raise UsageError("--execd and --interval exclude each other: Telegraf's "
                             "execd paces the batches itself")
        if args.watch:
            if args.execd or args.interval or args.output != "-":
                raise UsageError("--watch shows a live view: it takes none of --execd, "
                                 "--interval, --output")
            if len(targets) != 1:
                raise UsageError("--watch shows one Apache: give one --url")
            if not (sys.stdout.isatty() and sys.stdin.isatty()):
                raise UsageError("--watch needs a terminal")
        if args.listen:
            check_endpoint_options(args, argv)
        if args.interval is None and not args.execd and not args.listen:
            args.interval = collectd_interval()
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    if args.listen:
        return run_endpoint(args, targets, exe_names, writer)
    if args.watch:
        from apache_metrics_exporter import watch
        from apache_metrics_exporter.http import Fetcher

        fetcher = Fetcher(targets[0])
        try:
            return watch.run(fetcher, _options(args, exe_names), args.watch,
                             args.hanging_threshold)
        finally:
            fetcher.close()
    if args.execd or args.interval:
        return run_loop(args, targets, exe_names, writer)
    return run_once(args, targets, exe_names, writer)


def check_endpoint_options(args: argparse.Namespace, argv: Optional[Sequence[str]]) -> None:
    """--listen answers scrapes: it writes no output and runs no other loop."""
    if args.format != "prometheus":
        raise UsageError(f"--listen answers in the Prometheus format; drop --format "
                         f"{args.format}")
    for given, name in ((args.output != "-", "--output"), (args.interval, "--interval"),
                        (args.execd, "--execd"), (args.watch, "--watch")):
        if given:
            raise UsageError(f"--listen answers scrapes; it takes no {name}")


def run_endpoint(args: argparse.Namespace, targets: List[Target],
                 exe_names: Tuple[str, ...], writer: ModuleType) -> int:
    """--listen: serve scrapes until SIGTERM/SIGINT."""
    from apache_metrics_exporter.endpoint import make_server, serve

    try:
        server = make_server(args, targets, _options(args, exe_names), writer)
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    return serve(server)


def resolve_format(args: argparse.Namespace) -> None:
    """--zabbix-discovery, and the default: text on a terminal, else tab (the
    metrics file apache-manager users' scripts and cron jobs expect)."""
    if args.zabbix_discovery:
        if args.format not in (None, "zabbix-discovery"):
            raise UsageError(f"--zabbix-discovery and --format {args.format} exclude each "
                             "other")
        args.format = "zabbix-discovery"
    if args.format is None and args.listen:
        args.format = "prometheus"
    if args.format is None:
        args.format = "text" if args.output == "-" and sys.stdout.isatty() else "tab"


def console_main() -> None:
    """The console script: ``main()``, then a fast exit.

    Tearing the interpreter down (freeing every module) takes about 15 ms - a
    sixth of a one-shot run, paid at every Telegraf interval. Everything this
    program writes is closed (files) or flushed below (stdout/stderr), and it
    registers no exit handlers, so it leaves with os._exit once flushed.
    """
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and status == EXIT_OK:
                status = EXIT_OUTPUT
    os._exit(status)


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


def report(snap: Snapshot) -> None:
    """The snapshot's problems on stderr: why the page could not be read, as one
    line, then warnings, once each. While the page is down the warnings (about
    configuration, not about the outage) wait for -v, so the outage stands alone."""
    if snap.error:
        log.error("%s", snap.error)
    for warning in snap.warnings:
        if warning not in _said:
            if snap.up:
                _said.add(warning)
            log.log(WARNING if snap.up else INFO, "%s", warning)


def _options(args: argparse.Namespace, exe_names: Tuple[str, ...]) -> Options:
    from apache_metrics_exporter.snapshot import Options

    return Options(hanging_threshold=args.hanging_threshold, exe_names=exe_names,
                   pid_file=args.pid_file, memory=args.memory,
                   scan_processes=not args.no_processes, vhost_limit=args.vhost_limit)


def track_restarts(args: argparse.Namespace, snapshots: List[Snapshot]) -> None:
    """Restart counts from the collector's state file (restarts.py)."""
    if args.collector_state:
        from apache_metrics_exporter.restarts import DEFAULT_PATH, track

        track(snapshots, args.collector_state, args.collector_state != DEFAULT_PATH)


def batch(args: argparse.Namespace, fetchers: List[Fetcher], options: Options,
          writer: ModuleType, sink: Optional[object] = None,
          stopper: Optional[Stopper] = None) -> None:
    """Collect every target once and write one batch (raises OutputError).

    Targets are collected concurrently, each fetch (both pages) bounded by
    one --timeout. With a stopper, a stop signal cuts the collection short
    (_Stop); the writing of a collected batch is always finished.
    """
    from apache_metrics_exporter.output import write_atomic
    from apache_metrics_exporter.snapshot import collect_all, state_samples

    extra = state_samples(args.spool_dir, args.spool_max_bytes, args.state_file)
    if stopper is None:
        snapshots = collect_all(fetchers, options)
    else:
        snapshots = stopper.blocking(collect_all, fetchers, options)
    track_restarts(args, snapshots)
    for snap in snapshots:
        snap.samples.extend(extra)
        report(snap)
    text = writer.render(snapshots, args)
    if sink is not None:
        sink.send(text, snapshots)
    else:
        write_atomic(args.output, text)


@contextmanager
def _connections(args: argparse.Namespace, targets: List[Target],
                 writer: ModuleType) -> Iterator[tuple]:
    """A fetcher per target and the writer's sink (if it has one), closed at
    the end whatever happens; a loop keeps them across batches."""
    from apache_metrics_exporter.http import Fetcher

    fetchers = [Fetcher(t) for t in targets]
    sink = writer.sink(args) if hasattr(writer, "sink") else None
    try:
        yield fetchers, sink
    finally:
        for f in fetchers:
            f.close()
        if sink is not None:
            sink.close()


def run_once(args: argparse.Namespace, targets: List[Target],
             exe_names: Tuple[str, ...], writer: ModuleType) -> int:
    """One batch, then exit."""
    with _connections(args, targets, writer) as (fetchers, sink):
        try:
            batch(args, fetchers, _options(args, exe_names), writer, sink)
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
             exe_names: Tuple[str, ...], writer: ModuleType) -> int:
    """--interval and --execd: a batch per tick or per stdin line, until stopped.

    The HTTP connections are kept between batches; an Apache that goes away
    yields up=0 batches and the loop goes on; stdout is flushed after each
    batch. A failing stdout (the agent went away) ends the loop with status 1;
    a failing output file is reported and tried again next time.
    """
    stopper = Stopper()
    options = _options(args, exe_names)
    next_tick = time.monotonic()
    with _connections(args, targets, writer) as (fetchers, sink):
        try:
            while not stopper.stopping:
                if args.execd and not stopper.blocking(sys.stdin.readline):
                    return EXIT_OK  # Telegraf closed stdin: it is stopping us
                try:
                    batch(args, fetchers, options, writer, sink, stopper)
                except OutputError as exc:
                    log.error("%s", exc)
                    if args.output == "-" and sink is None:
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


# ---------------------------------------------------------------------------
# apache-worker-reaper

REAPER_PROG = "apache-worker-reaper"
REAPER_EPILOG = """\
exit status: 0 the run completed (killed, would-kill in a dry run, or nothing to do),
             1 the state file could not be locked or written, 2 bad options.
Every action is one line on stderr (syslog-friendly); a summary line ends each run.
"""


def _wsgi_threshold(text: str) -> tuple:
    from apache_metrics_exporter.config import _size

    group, sep, size = text.rpartition("=")
    if sep and not group:
        raise argparse.ArgumentTypeError(f"expected SIZE or GROUP=SIZE, got {text!r}")
    return (group or None, _size(size))


def build_reaper_parser() -> configargparse.ArgParser:
    """The reaper's parser: shared options plus thresholds and safety options."""
    from apache_metrics_exporter.config import (
        COLLECTOR_ONLY,
        _positive_seconds,
        _size,
        _timespan,
        add_foreign,
        base_parser,
    )

    p = base_parser(REAPER_PROG, "Kill Apache workers and mod_wsgi daemon processes that "
                    "use too much memory or hang on a request - safely, with counters in "
                    "a state file that apache-metrics-exporter reports.", REAPER_EPILOG)
    t = p.add_argument_group("thresholds (at least one; 0 or absent = off)")
    t.add_argument("-a", "--max-memory-active", type=_size, default=0, metavar="SIZE",
                   help="memory limit for native workers serving a request (50M, 2G)")
    t.add_argument("-i", "--max-memory-idle", type=_size, default=0, metavar="SIZE",
                   help="memory limit for idle native workers")
    t.add_argument("-t", "--max-time", "--worker-timeout", dest="max_time", type=_timespan,
                   default=0, metavar="TIMESPAN",
                   help="kill a worker whose current request began longer ago (30s, 5m)")
    t.add_argument("--max-memory-wsgi", type=_wsgi_threshold, action="append", default=[],
                   metavar="[GROUP=]SIZE",
                   help="memory limit for mod_wsgi daemon processes, for all groups or "
                        "one group (repeatable: --max-memory-wsgi 1G --max-memory-wsgi "
                        "reports=2G)")
    s = p.add_argument_group("safety")
    s.add_argument("-n", "--dry-run", action="store_true",
                   help="signal nothing; log and count what would be killed")
    s.add_argument("--grace", type=_positive_seconds, default=10.0, metavar="TIMESPAN",
                   help="SIGTERM first; SIGKILL only what is still alive after this long")
    s.add_argument("--max-kills", type=int, default=5, metavar="N",
                   help="circuit breaker: never kill more than N processes in one run")
    s.add_argument("--lock-timeout", type=_positive_seconds, default=60.0, metavar="TIMESPAN",
                   help="how long to wait for another reaper's run to finish")
    add_foreign(p, COLLECTOR_ONLY)
    return p


def reaper_main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the reaper once; return the exit status."""
    setup_logging(1, 0, REAPER_PROG)  # actions are logged at info level
    try:
        from apache_metrics_exporter import config
        from apache_metrics_exporter.reaper import Thresholds

        args = config.parse(build_reaper_parser(), argv)
        setup_logging(1 + args.verbose, args.quiet, REAPER_PROG, args.log_format)
        targets = config.targets(args)
        if len(targets) != 1:
            raise UsageError("the reaper acts on one Apache: give one --url")
        from apache_metrics_exporter.http import Fetcher

        if not Fetcher(targets[0]).is_local():
            raise UsageError(f"--url {targets[0].url}: the reaper acts only on an Apache "
                             "reached over loopback (127.0.0.1, ::1 or localhost), the one "
                             "case where its processes can be proven to be this host's")
        exe_names = config.exe_names(args)
        groups = tuple((g, size) for g, size in args.max_memory_wsgi if g)
        general = [size for g, size in args.max_memory_wsgi if not g]
        thresholds = Thresholds(args.max_memory_active, args.max_memory_idle, args.max_time,
                                general[-1] if general else 0, groups)
        if not thresholds.any():
            raise UsageError("no threshold given: use --max-memory-active, "
                             "--max-memory-idle, --max-time or --max-memory-wsgi")
        if args.max_kills < 1:
            raise UsageError("--max-kills must be at least 1 (use --dry-run to kill none)")
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    try:
        return run_reaper(args, targets[0], exe_names, thresholds)
    except OutputError as exc:
        log.error("%s", exc)
        return EXIT_OUTPUT


def run_reaper(args: argparse.Namespace, target: Target, exe_names: Tuple[str, ...],
               thresholds: Thresholds) -> int:
    """One reaper run: the page is fetched first, then everything that acts
    (scan, selection, signals, counters) happens under the state file's lock.
    No lock is held across network I/O, so a hung Apache cannot block the
    next runs."""
    from apache_metrics_exporter.errors import FetchError
    from apache_metrics_exporter.http import Fetcher
    from apache_metrics_exporter.processes import parent_of_url, scan
    from apache_metrics_exporter.reaper import execute, select, strangers
    from apache_metrics_exporter.state import StateFile
    from apache_metrics_exporter.status import parse_html

    state_file = StateFile(args.state_file)
    state_file.check()  # an untrusted state file is refused before any work
    started = time.time()
    fetcher = Fetcher(target)
    workers = None
    try:
        workers = parse_html(fetcher.get(target.url), source=target.url).workers
        if workers is None:
            log.warning("%s has no worker table (ExtendedStatus Off?): native workers "
                        "are left alone this run", target.url)
    except FetchError as exc:
        log.error("%s; native workers are left alone this run", exc)
    finally:
        fetcher.close()
    with state_file.locked(args.lock_timeout) as state:
        parent = parent_of_url(fetcher.host, fetcher.port, exe_names, args.pid_file,
                               [w.pid for w in workers or () if w.pid])
        totals = state["totals"]
        if parent.pid is None:
            log.error("cannot prove which Apache serves %s: %s; signalling nothing",
                      target.url, parent.reason)
            totals["runs"] += 1
            totals["unproven_runs"] += 1
            state["last_run"] = {
                "time": int(started), "dry_run": bool(args.dry_run), "checked": 0,
                "killed_active": 0, "killed_idle": 0, "killed_wsgi": 0, "would_kill": 0,
                "escalations": 0, "skipped": 0, "result": "skipped"}
            return EXIT_OK
        processes = scan(parent.pid, exe_names, args.memory)
        for warning in processes.warnings:
            log.warning("%s", warning)
        outside = strangers(workers, processes)
        if outside:
            log.warning("the status page names PIDs outside the Apache tree of PID %d "
                        "(%s): never signalled", parent.pid,
                        ", ".join(map(str, outside[:10])) + (" ..." if len(outside) > 10
                                                              else ""))
        parent = parent.pid
        selected = select(workers, processes, thresholds)
        result = "ok"
        if len(selected) > args.max_kills:
            result = "circuit-breaker"
            if not args.dry_run:  # a dry run changes no counter but would_kill
                totals["circuit_breaker_trips"] += 1
            log.error("circuit breaker: %d processes are over a threshold, more than "
                      "--max-kills %d; acting on the worst %d only - check the thresholds",
                      len(selected), args.max_kills, args.max_kills)
            selected = selected[:args.max_kills]
        run = {"time": int(started), "dry_run": bool(args.dry_run),
               "checked": len(processes.children), "killed_active": 0, "killed_idle": 0,
               "killed_wsgi": 0, "would_kill": 0, "escalations": 0, "skipped": 0}
        if args.dry_run:
            for c in selected:
                log.info("would kill %s", c.describe(processes.memory_kind))
            run["would_kill"] = len(selected)
            totals["would_kill"] += len(selected)
            result = "dry-run" if result == "ok" else result
        elif selected:
            outcome = execute(selected, parent, processes.parent_create_time, exe_names,
                              args.grace, processes.memory_kind)
            for c in outcome.killed:
                totals["kills"][c.kind] += 1
                totals["reasons"][c.reason] += 1
                run["killed_idle" if c.kind == "native_idle" else "killed_active"] += 1
                if c.kind == "wsgi":
                    run["killed_wsgi"] += 1
            run["escalations"] = len(outcome.escalated)
            run["skipped"] = len(outcome.skipped)
            totals["sigkill_escalations"] += len(outcome.escalated)
            totals["skipped_for_safety"] += len(outcome.skipped)
        totals["runs"] += 1
        run["result"] = result
        state["last_run"] = run
        killed = run["killed_active"] + run["killed_idle"]
        if args.dry_run:
            log.info("dry run: would kill %d of %d processes checked", run["would_kill"],
                     run["checked"])
        elif killed or run["skipped"]:
            log.info("killed %d of %d processes checked (%d active, %d idle, %d mod_wsgi); "
                     "%d needed SIGKILL; %d skipped", killed, run["checked"],
                     run["killed_active"] - run["killed_wsgi"], run["killed_idle"],
                     run["killed_wsgi"], run["escalations"], run["skipped"])
        else:
            log.info("no process over a threshold (%d checked)", run["checked"])
    return EXIT_OK
