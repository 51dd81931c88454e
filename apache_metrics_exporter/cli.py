"""The ``apache-metrics-exporter`` command.

Exit status: 0 when the output was written (also when Apache is down: that is
data), 1 when the output could not be written, 2 for usage or configuration
errors (found before anything is fetched).
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from apache_metrics_exporter.errors import ExporterError, OutputError, UsageError

if TYPE_CHECKING:
    import configargparse

    from apache_metrics_exporter.http import Target
    from apache_metrics_exporter.snapshot import Snapshot

PROG = "apache-metrics-exporter"
EXIT_OK, EXIT_OUTPUT, EXIT_USAGE = 0, 1, 2

EPILOG = """\
exit status: 0 output written (also when Apache is down: status-response 1 / up 0),
             1 output could not be written, 2 bad options or configuration.
environment: every option can be set as APACHE_METRICS_<OPTION>, e.g.
             APACHE_METRICS_URL=http://127.0.0.1/server-status.
"""

log = logging.getLogger("apache_metrics_exporter")


def setup_logging(verbose: int, quiet: int, prog: str = PROG) -> None:
    """One line per message on stderr, prefixed with the program name."""
    for number, name in ((logging.DEBUG, "debug"), (logging.INFO, "info"),
                         (logging.WARNING, "warning"), (logging.ERROR, "error")):
        logging.addLevelName(number, name)
    level = logging.WARNING + 10 * (quiet - verbose)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(max(logging.DEBUG, min(level, logging.CRITICAL + 10)))
    log.propagate = False


def build_parser() -> configargparse.ArgParser:
    """The collector's parser: shared options plus output options."""
    from apache_metrics_exporter.config import _timespan, base_parser
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
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=sorted(REGISTRY), default="tab",
                   help="; ".join(f"{k}: {v}" for k, v in sorted(DESCRIPTIONS.items())))
    o.add_argument("-f", "--output", "--data-file", dest="output", default="-",
                   metavar="PATH",
                   help="where to write; '-' is stdout. Files are replaced atomically")
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
        setup_logging(args.verbose, args.quiet)
        targets = config.targets(args)
        exe_names = config.exe_names(args)
        writer = load(args.format)
        if len(targets) > 1 and not writer.MULTI_TARGET:
            raise UsageError(f"--format {args.format} holds one Apache only, but "
                             f"{len(targets)} URLs were given")
        check_output_path(args.output)
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    return run_once(args, targets, exe_names, writer)


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
            log.log(logging.WARNING if snap.up else logging.INFO, "%s", warning)


def run_once(args: argparse.Namespace, targets: List[Target],
             exe_names: Tuple[str, ...], writer: ModuleType) -> int:
    """Collect every target once and write one batch."""
    from apache_metrics_exporter.http import Fetcher
    from apache_metrics_exporter.output import write_atomic
    from apache_metrics_exporter.snapshot import Options, collect

    options = Options(hanging_threshold=args.hanging_threshold, exe_names=exe_names,
                      pid_file=args.pid_file, memory=args.memory,
                      scan_processes=not args.no_processes)
    snapshots: List = []
    for target in targets:
        fetcher = Fetcher(target)
        try:
            snap = collect(fetcher, options)
        finally:
            fetcher.close()
        report(snap)
        snapshots.append(snap)
    try:
        write_atomic(args.output, writer.render(snapshots, args))
    except OutputError as exc:
        log.error("%s", exc)
        return EXIT_OUTPUT
    except ExporterError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    return EXIT_OK
