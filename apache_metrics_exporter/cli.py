"""The two entry points: ``apache-metrics-exporter`` and ``apache-worker-reaper``.

They parse and validate the options (every usage error is found before
anything is fetched, exit 2) and hand over: to one batch, a loop, the
--listen endpoint or the --watch view (loops.py, endpoint.py, watch.py), or
to one reaper run (reaper/run.py).

Exit status: 0 when the output was written (also when Apache is down: that is
data), 1 when the output could not be written (stdout closed too), 2 for usage
or configuration errors (--execd with stdin closed too). A closed standard
stream never causes a traceback (streams.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from apache_metrics_exporter.errors import (
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_USAGE,
    PROG,
    REAPER_PROG,
    OutputError,
    UsageError,
)
from apache_metrics_exporter.log import log
from apache_metrics_exporter.streams import (
    guard,
    isatty,
    require_stdout,
    stdin_closed,
    stdout_attempted,
    stdout_error,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Callable, Optional, Sequence


def setup_logging(verbose: int, quiet: int, prog: str = PROG, style: str = "plain",
                  level: Optional[str] = None) -> None:
    """One line per message on stderr, prefixed with the program name."""
    log.setup(verbose, quiet, prog, style, level)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one collection; return the exit status."""
    setup_logging(0, 0)
    try:
        from apache_metrics_exporter import config, loops
        from apache_metrics_exporter.output import check_output_path
        from apache_metrics_exporter.writers import FORMAT, Settings, load

        args = config.parse(config.build_parser(), argv)
        started()
        setup_logging(args.verbose, args.quiet, PROG, args.log_format, args.log_level)
        if args.check:
            from apache_metrics_exporter import check

            return check.run(args)
        resolve_format(args)
        targets = config.targets(args)
        exe_names = config.exe_names(args)
        fmt = FORMAT[args.format]
        writer = load(fmt)
        if len(targets) > 1 and not fmt.multi_target:
            raise UsageError(f"--format {args.format} holds one Apache only, but "
                             f"{len(targets)} URLs were given; use --format influx or "
                             "collectd, or one run per URL")
        check_distinct_files(args)
        if fmt.checks:
            writer.check(Settings.of(args), [t.url for t in targets])
        check_output_path(args.output)
        if args.vhost_limit < 0:
            raise UsageError("--vhost-limit must be 0 (off) or more")
        if args.client_limit < 0:
            raise UsageError("--client-limit must be 0 (off, the default) or more")
        if args.execd and args.interval:
            raise UsageError("--execd and --interval exclude each other: Telegraf's "
                             "execd paces the batches itself")
        if args.execd and stdin_closed():
            raise UsageError("--execd collects once per line read from stdin, but stdin "
                             "is closed; run it from Telegraf's inputs.execd with "
                             "signal = \"STDIN\", or use --interval")
        if args.watch:
            if args.execd or args.interval or args.output != "-":
                raise UsageError("--watch shows a live view: it takes none of --execd, "
                                 "--interval, --output")
            if len(targets) != 1:
                raise UsageError("--watch shows one Apache: give one --url")
            if not (isatty(sys.stdout) and isatty(sys.stdin)):
                raise UsageError("--watch needs a terminal")
        if args.listen:
            check_endpoint_options(args)
        if args.interval is None and not args.execd and not args.listen:
            args.interval = loops.collectd_interval()
        if args.output == "-" and not fmt.sinks and not args.listen:
            require_stdout()  # closed: status 1 before anything is fetched
        from apache_metrics_exporter.runconfig import run_config

        run = run_config(args, exe_names)  # below here: no argparse Namespace
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except OutputError as exc:
        log.error("%s", exc)
        return EXIT_OUTPUT
    if run.listen:
        from apache_metrics_exporter.endpoint import run_endpoint

        return run_endpoint(run, targets)
    if args.watch:
        from apache_metrics_exporter import watch
        from apache_metrics_exporter.collect.http import Fetcher

        fetcher = Fetcher(targets[0])
        try:
            return watch.run(fetcher, run.options, args.watch, args.hanging_threshold)
        finally:
            fetcher.close()
    if run.execd or run.interval:
        return loops.run_loop(run, targets, writer)
    return loops.run_once(run, targets, writer)


def check_distinct_files(args: argparse.Namespace) -> None:
    """Each file a run keeps or writes is its own: one named for two roles
    (--collector-state the reaper's --state-file, a slip in a shared config
    file) would have each owner set the other's content aside as corrupt at
    every run - counts lost, and a new NAME.corrupt-EPOCH file each time."""
    from apache_metrics_exporter.paths import same_file

    files = [("--output", args.output if args.output != "-" else ""),
             ("--collector-state", args.collector_state or ""),
             ("--state-file", args.state_file or "")]
    if args.format == "influxdb" and args.spool_dir:
        files.append(("--spool-dir", os.path.join(args.spool_dir, "state.json")))
    for i, (option, path) in enumerate(files):
        for other, there in files[i + 1:]:
            if path and there and same_file(path, there):
                named = f"{other} {args.spool_dir}'s state.json" \
                    if other == "--spool-dir" else f"{other} {there}"
                raise UsageError(f"{option} {path} and {named} are the same file: each "
                                 "would set the other's content aside as corrupt at every "
                                 f"run; give {option} a file of its own")


def check_endpoint_options(args: argparse.Namespace) -> None:
    """--listen answers scrapes: it writes no output and runs no other loop."""
    if args.format != "prometheus":
        raise UsageError(f"--listen answers in the Prometheus format; drop --format "
                         f"{args.format}")
    for given, name in ((args.output != "-", "--output"), (args.interval, "--interval"),
                        (args.execd, "--execd"), (args.watch, "--watch")):
        if given:
            raise UsageError(f"--listen answers scrapes; it takes no {name}")


def resolve_format(args: argparse.Namespace) -> None:
    """--zabbix-discovery, and the default: text on a terminal, else tab (the
    metrics file apache-manager users' scripts and cron jobs expect).
    --web.systemd-socket is the endpoint on systemd's sockets (no --listen)."""
    if getattr(args, "systemd_socket", False) and not args.listen:
        args.listen = ["systemd socket"]
    if args.zabbix_discovery:
        if args.format not in (None, "zabbix-discovery"):
            raise UsageError(f"--zabbix-discovery and --format {args.format} exclude each "
                             "other")
        args.format = "zabbix-discovery"
    if args.format is None and args.listen:
        args.format = "prometheus"
    if args.format is None:
        args.format = "text" if args.output == "-" and isatty(sys.stdout) else "tab"


def started() -> None:
    """Start-up is over (the options are parsed): if an entry point held the
    garbage collector off (entry.py), what exists now is frozen, never
    walked again, and collection resumes for the rest of the run."""
    import gc

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def console_main() -> None:
    """The console script: ``main()``, then a fast exit (``console``)."""
    console(main)


def console(run: Callable[[], int]) -> None:
    """What every console script does around its ``run()``: closed standard
    streams put on /dev/null first (streams.py), Ctrl-C as one line, then the
    flush and a fast exit.

    Tearing the interpreter down (freeing every module) takes about 15 ms - a
    sixth of a one-shot run, paid at every Telegraf interval. Everything this
    program writes is closed (files) or flushed below (stdout/stderr), and it
    registers no exit handlers, so it leaves with os._exit once flushed.
    """
    guard()
    finish(interruptible(run))


def interruptible(run: Callable[[], int]) -> int:
    """``run()``, with Ctrl-C (SIGINT) ending it with one line and status 130,
    as a shell reports it, never a traceback; argparse's exits (--help, its
    usage errors) become a status, so that ``finish`` still runs."""
    try:
        return run()
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)


def finish(status: int) -> None:
    """Flush stdout and stderr and leave at once with ``status``. A failing
    stdout, or one that was closed when something was printed to it (--help
    under ``>&-``), turns success into status 1, said in one line."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            if stream is sys.stdout and status == EXIT_OK:
                status = EXIT_OUTPUT
    if stdout_attempted() and status == EXIT_OK:
        log.error("%s", stdout_error())
        status = EXIT_OUTPUT
    os._exit(status)


def reaper_main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the reaper once; return the exit status."""
    setup_logging(1, 0, REAPER_PROG)  # actions are logged at info level
    try:
        from apache_metrics_exporter import config
        from apache_metrics_exporter.reaper.policy import Thresholds

        args = config.parse(config.build_reaper_parser(), argv)
        started()
        setup_logging(args.verbose + (0 if args.log_level else 1), args.quiet, REAPER_PROG,
                      args.log_format, args.log_level)
        targets = config.targets(args)
        if len(targets) != 1:
            raise UsageError("the reaper acts on one Apache: give one --url")
        from apache_metrics_exporter.collect.http import Fetcher

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
    except OutputError as exc:  # --help or --version to a failing stdout
        log.error("%s", exc)
        return EXIT_OUTPUT
    try:
        from apache_metrics_exporter.reaper.run import run_reaper
        from apache_metrics_exporter.runconfig import reaper_config

        return run_reaper(reaper_config(args, exe_names), targets[0], thresholds)
    except OutputError as exc:
        log.error("%s", exc)
        return EXIT_OUTPUT


def reaper_console() -> None:
    """The reaper's console script: ``reaper_main()`` (``console``)."""
    console(reaper_main)
