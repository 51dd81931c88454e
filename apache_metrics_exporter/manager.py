"""The ``apache-manager`` command: apache-manager 2.2's command line and INI files.

A front end, not a second implementation: it reads the original's options and
``[apache-manager]`` INI files, then runs this package's collector
(``cli.main``) and reaper (``cli.reaper_main``) with the same meaning, in the
original's order: kill, watch, discovery, then the metrics file. What the
original did badly stays fixed, because the work is done by the new commands:
verified kills (SIGTERM, then SIGKILL after --grace; SIGKILL at once for a
worker or event MPM child, which ignores SIGTERM), counters in the reaper's state file, the
metrics file written atomically (also when Apache is down, with
``status-response 1``), errors as one line on stderr.

Exit status: 0 everything asked for was done (Apache being down is data, as
``status-response 1``), 1 a file could not be written (metrics file or the
reaper's state file), 2 bad options, INI files or configuration (found before
anything is fetched or killed).
"""

from __future__ import annotations

import os
import re
import sys

from apache_metrics_exporter.errors import UsageError
from apache_metrics_exporter.log import log

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Callable, Dict, List, Optional, Sequence, Tuple

PROG = "apache-manager"
DATA_FILE = "/tmp/apache-manager.txt"
INI_SECTION = "apache-manager"
# Tests (and unusual set-ups) name the INI files here instead of the search
# below: a list separated by ':'; empty means none at all.
INI_ENV = "APACHE_MANAGER_INI"
WATCH_INTERVAL = "1"  # the original redrew its view every second
from apache_metrics_exporter.errors import EXIT_OK, EXIT_OUTPUT, EXIT_USAGE  # noqa: E402

# The original's getopt specification, unchanged (getopt also accepts unique
# prefixes of long options, as the original did), plus our extensions.
SHORT_OPTIONS = "ckwa:i:t:T:f:znvqh"
LONG_OPTIONS = [
    "collect-metrics", "kill-workers", "watch", "max-memory-active=", "max-memory-idle=",
    "max-ss=", "max-time=", "hanging-worker-threshold=", "data-file=", "zabbix-discovery",
    "dry-run", "simulate", "verbose", "quiet", "help",
    # extensions
    "url=", "ports-config=", "state-file=", "version",
]

HELP = f"""\
Usage: apache-manager [OPTIONS]

The apache-manager compatible front end of apache-metrics-exporter: the
command line, INI files and metrics file of apache-manager 2.2, carried out by
the new commands apache-metrics-exporter (collector: tab, influx, collectd,
prometheus, ... formats) and apache-worker-reaper (kills workers over
thresholds, safely, with counters in a state file). See their --help, and
docs/migration.md for what changed and why.

With no action a human-readable summary of the server metrics and the memory
use of the workers is printed.

Actions (they combine; they run in this order: -k, -w, -z, -c):

  -c, --collect-metrics      write the metrics file (see --data-file)
  -k, --kill-workers         kill workers over --max-memory-active,
                             --max-memory-idle, --max-time (prefork children
                             and mod_wsgi daemons: SIGTERM, then SIGKILL after
                             a grace period; worker and event MPM children:
                             SIGKILL at once, as they ignore SIGTERM; see
                             --dry-run)
  -w, --watch                a top-like view, redrawn every second until q
                             or Ctrl-C
  -z, --zabbix-discovery     print Zabbix low-level discovery JSON of the
                             worker groups ({{#NAME}}: native, each WSGI group)

Options:

  -a, --max-memory-active=SIZE
                             kill active workers (and mod_wsgi daemons) using
                             more memory than SIZE: 50K, 42M, 2G (binary units)
  -i, --max-memory-idle=SIZE kill idle workers using more memory than SIZE
  -t, --max-ss, --max-time=TIMESPAN
                             kill workers whose current request started more
                             than TIMESPAN ago: 2s, 3m, 5h, 2d
  -T, --hanging-worker-threshold=TIMESPAN
                             when an active worker counts as hanging in the
                             metrics (default 5 minutes)
  -f, --data-file=PATH       the metrics file (default {DATA_FILE};
                             '-' is standard output)
  -n, --dry-run, --simulate  kill nothing; log what would be killed (with -c
                             the metrics file is then not written, as before,
                             unless it is '-')
  -v, --verbose              say more on stderr (repeatable)
  -q, --quiet                say less on stderr (repeatable)
  -h, --help                 show this message and exit

Extensions (not in apache-manager 2.2):

  --url=URL                  the status page (default: found from Apache's
                             configuration, read as Apache reads it - its
                             includes and <IfModule> sections followed; of
                             its Listen addresses one where something
                             listens, plain http first)
  --ports-config=PATH        where that search starts (default
                             /etc/apache2/ports.conf, else
                             /etc/httpd/conf/httpd.conf)
  --state-file=PATH          the reaper's counters (default
                             /var/lib/apache-metrics-exporter/reaper-state.json)
  --version                  show the version and exit

Thresholds can also be set in the [apache-manager] section of
/etc/apache-manager.ini, ~/.apache-manager.ini, ~/.config/apache-manager.ini
and *.ini files in apache-manager.d/ beside them (keys max-memory-active,
max-memory-idle, worker-timeout, hanging-worker-threshold); later files win,
the command line wins over all. Each must be a regular file of this user's
or root's that nobody else can write (nor its directory): anything else
stops the run (exit 2). {INI_ENV}=FILE[:FILE...] reads those files
instead. Other settings (HTTP auth, TLS, timeouts, --grace, --max-kills) come
from apache-metrics-exporter's own config file and APACHE_METRICS_* variables.

Exit status: 0 done (also when Apache is down: status-response 1 is written),
1 a file could not be written, 2 bad options or configuration.
"""

def parse_size(text: str) -> int:
    """Bytes, as apache-manager read sizes (humanfriendly, binary multiples): a
    bare number is bytes; ``50K``, ``42M``, ``2G``, ``42 MB``, ``16 MiB``,
    ``2 gigabytes``, ``1.5G``; below 8 EiB. A bare number below 1 MiB (a
    forgotten unit: every worker is over it) is refused."""
    from apache_metrics_exporter.units import parse_memory_threshold

    return parse_memory_threshold(text)


def parse_timespan(text: str) -> float:
    """Seconds, as apache-manager read timespans (humanfriendly: ``1ns``,
    ``1us``, ``500ms``, ``2s``, ``3m``, ``5h``, ``2d``, ``1w``, ``1y``,
    ``5 minutes``, a bare number of seconds); this package's combinations like
    ``1h30m`` are accepted too. At most 100 years; 0 is "off"."""
    from apache_metrics_exporter.units import parse_timespan as parse

    seconds = parse(text)
    if 0 < seconds < 1e-9:
        raise ValueError(f"timespan too short: {str(text).strip()[:40]!r} (at least 1ns; "
                         "0 is off)")
    return seconds


def _seconds(value: float) -> str:
    """A timespan for the new commands' options: plain decimal seconds (their
    parser reads no exponent, and repr(1e-09) has one)."""
    return f"{value:.9f}".rstrip("0").rstrip(".")


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def ini_files() -> List[str]:
    """The INI files apache-manager read, in its order (later ones win):
    /etc, then ~ (dot-files), then $XDG_CONFIG_HOME or ~/.config; in each
    the main file, then NAME.d/*.ini in natural order."""
    if INI_ENV in os.environ:
        return [p for p in os.environ[INI_ENV].split(os.pathsep) if p]
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    found = []
    for directory, prefix in (("/etc", ""), (home, "."), (xdg, "")):
        main = os.path.join(directory, f"{prefix}{INI_SECTION}.ini")
        if os.path.exists(main):
            found.append(main)
        modular = os.path.join(directory, f"{prefix}{INI_SECTION}.d")
        if os.path.isdir(modular):
            try:
                names = os.listdir(modular)
            except OSError:
                names = []
            found.extend(os.path.join(modular, n)
                         for n in sorted(names, key=_natural) if n.endswith(".ini"))
    return found


def read_ini(paths: Sequence[str]) -> Dict[str, Tuple[str, str]]:
    """The ``[apache-manager]`` options of the given files: key -> (value, file).

    Each file must be trusted (``trust.py``, as the exporter's config file): it
    sets whom root's reaper kills. An untrusted, oversized or malformed file
    is a UsageError (exit 2) rather than skipped, so a threshold the admin set
    is never silently dropped; a file that cannot be read at all is skipped
    with a warning, as apache-manager did. Unknown keys get a warning naming
    the nearest known key: a misspelled threshold is otherwise not applied.
    """
    import configparser

    from apache_metrics_exporter.trust import read_trusted

    options: Dict[str, Tuple[str, str]] = {}
    for path in paths:
        try:
            data = read_trusted(path, "INI file")
        except OSError as exc:
            log.warning("cannot read INI file %s: %s; its settings are not used", path,
                        exc.strerror or exc)
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read_string(data.decode("utf-8", "replace"), source=path)
        except configparser.Error as exc:
            raise UsageError(_ini_error(path, exc)) from None
        if parser.has_section(INI_SECTION):
            for key, value in parser.items(INI_SECTION):
                if key not in _INI_KEYS:
                    _unknown_key(path, key)
                    continue
                options[key] = (value.strip(), path)
    return options


def _ini_error(path: str, exc: Exception) -> str:
    """configparser's multi-line messages as one line naming the file and line
    (never the line itself)."""
    import configparser

    where = f"INI file {path}, line {getattr(exc, 'lineno', '?')}"
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return (f"{where}: a setting before any section header; put the settings under "
                f"an [{INI_SECTION}] line")
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"{where}: [{exc.section}] {exc.option} is set twice; keep one"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"{where}: section [{exc.section}] appears twice; merge them"
    if isinstance(exc, configparser.ParsingError) and exc.errors:
        lines = [str(n) for n, _ in exc.errors[:5]]
        return (f"INI file {path}, line {', '.join(lines)}: expected 'key = value', a "
                "[section] line or a comment")
    return f"INI file {path}: not a valid INI file: {' '.join(str(exc).split())}"


def _unknown_key(path: str, key: str) -> None:
    import difflib

    near = difflib.get_close_matches(key, list(_INI_KEYS), n=1, cutoff=0.6)
    hint = (f"did you mean {near[0]}?" if near
            else "the settings are " + ", ".join(_INI_KEYS))
    log.warning("INI file %s: [%s] %s is not an apache-manager setting, ignored (%s)",
                path, INI_SECTION, key, hint)


class Settings:
    """apache-manager's options after the command line and the INI files."""

    def __init__(self) -> None:
        self.actions: List[str] = []
        self.max_memory_active = 0
        self.max_memory_idle = 0
        self.max_time = 0.0
        self.hanging_threshold: Optional[float] = None
        self.data_file = DATA_FILE
        self.dry_run = False
        self.verbose = 0
        self.quiet = 0
        self.url: Optional[str] = None
        self.ports_config: Optional[str] = None
        self.state_file: Optional[str] = None
        self.help = False
        self.version = False
        self.typed: Dict[str, str] = {}  # attribute or action -> the option as typed

    def option_names(self) -> Dict[str, str]:
        """The new commands' option names -> the apache-manager option the user
        typed for the same setting (else its long name): the collector and
        the reaper speak of ``--output`` where the user gave ``-f``."""
        typed = self.typed
        active = typed.get("max_memory_active", "--max-memory-active")
        return {
            "--output": typed.get("data_file", "--data-file"),
            "--watch": typed.get("watch", "--watch"),
            "--zabbix-discovery": typed.get("discovery", "--zabbix-discovery"),
            "--max-memory-active": active,
            "--max-memory-wsgi": active,  # the original held daemons to -a
            "--max-memory-idle": typed.get("max_memory_idle", "--max-memory-idle"),
            "--max-time": typed.get("max_time", "--max-time"),
            "--hanging-threshold": typed.get("hanging_threshold",
                                             "--hanging-worker-threshold"),
            "--dry-run": typed.get("dry_run", "--dry-run"),
        }


# option -> (attribute, parser, what the value should look like)
_VALUE_OPTIONS: Dict[str, Tuple[str, Callable, str]] = {
    "-a": ("max_memory_active", parse_size, "a size"),
    "--max-memory-active": ("max_memory_active", parse_size, "a size"),
    "-i": ("max_memory_idle", parse_size, "a size"),
    "--max-memory-idle": ("max_memory_idle", parse_size, "a size"),
    "-t": ("max_time", parse_timespan, "a timespan"),
    "--max-ss": ("max_time", parse_timespan, "a timespan"),
    "--max-time": ("max_time", parse_timespan, "a timespan"),
    "-T": ("hanging_threshold", parse_timespan, "a timespan"),
    "--hanging-worker-threshold": ("hanging_threshold", parse_timespan, "a timespan"),
}
_INI_KEYS: Dict[str, Tuple[str, Callable]] = {
    "max-memory-active": ("max_memory_active", parse_size),
    "max-memory-idle": ("max_memory_idle", parse_size),
    "worker-timeout": ("max_time", parse_timespan),
    "hanging-worker-threshold": ("hanging_threshold", parse_timespan),
}
_ACTIONS = {"-c": "collect", "--collect-metrics": "collect", "-k": "kill",
            "--kill-workers": "kill", "-w": "watch", "--watch": "watch",
            "-z": "discovery", "--zabbix-discovery": "discovery"}


def parse_args(argv: Sequence[str]) -> Settings:
    """The command line and the INI files (the command line wins)."""
    import getopt

    try:
        pairs, rest = getopt.getopt(list(argv), SHORT_OPTIONS, LONG_OPTIONS)
    except getopt.GetoptError as exc:
        raise UsageError(f"{exc} (see --help)") from None
    if rest:
        raise UsageError(f"apache-manager takes no positional arguments, got {rest[0]!r} "
                         "(see --help)")
    s = Settings()
    given = set()
    for option, value in pairs:
        if option in _ACTIONS:
            s.typed[_ACTIONS[option]] = option
            if _ACTIONS[option] not in s.actions:
                s.actions.append(_ACTIONS[option])
        elif option in _VALUE_OPTIONS:
            attr, parse, what = _VALUE_OPTIONS[option]
            try:
                setattr(s, attr, parse(value))
            except ValueError as exc:
                raise UsageError(f"{option} expects {what}: {exc}") from None
            given.add(attr)
            s.typed[attr] = option
        elif option in ("-f", "--data-file"):
            s.data_file = value
            s.typed["data_file"] = option
        elif option in ("-n", "--dry-run", "--simulate"):
            s.dry_run = True
            s.typed["dry_run"] = option
        elif option in ("-v", "--verbose"):
            s.verbose += 1
        elif option in ("-q", "--quiet"):
            s.quiet += 1
        elif option in ("-h", "--help"):
            s.help = True
        elif option == "--version":
            s.version = True
        elif option == "--url":
            s.url = value
        elif option == "--ports-config":
            s.ports_config = value
        elif option == "--state-file":
            s.state_file = value
    if s.help or s.version:
        return s
    # The INI files' warnings follow -v/-q (main sets the same level again);
    # "-z" alone prints errors only: a Zabbix agent takes stderr into the JSON.
    errors_only = s.actions == ["discovery"]
    log.setup(s.verbose + (not errors_only), s.quiet + errors_only, PROG)
    for key, (value, path) in read_ini(ini_files()).items():
        attr, parse = _INI_KEYS[key]
        if attr in given or not value:  # the command line wins; empty = unset
            continue
        try:
            setattr(s, attr, parse(value))
        except ValueError as exc:
            raise UsageError(f"INI file {path}: [{INI_SECTION}] {key}: {exc}") from None
    return s


def _common(s: Settings) -> List[str]:
    out = []
    if s.url:
        out += ["--url", s.url]
    if s.ports_config:
        out += ["--ports-config", s.ports_config]
    if s.state_file:
        out += ["--state-file", s.state_file]
    return out + ["-v"] * s.verbose + ["-q"] * s.quiet


def _hanging(s: Settings) -> List[str]:
    return [] if s.hanging_threshold is None else ["-T", _seconds(s.hanging_threshold)]


def plan(s: Settings) -> List[Tuple[str, List[str]]]:
    """The runs of the new commands, in the original's order: (command, argv).
    Group names are the original's too: as the process title shows them."""
    common = _common(s) + ["--wsgi-group-names", "title"]
    steps: List[Tuple[str, List[str]]] = []
    if "kill" in s.actions:
        argv = list(common)
        if s.max_memory_active:
            # The original held mod_wsgi daemons to the active limit too.
            # In bytes with their unit: the user's own unit was checked here.
            argv += ["--max-memory-active", f"{s.max_memory_active}B",
                     "--max-memory-wsgi", f"{s.max_memory_active}B"]
        if s.max_memory_idle:
            argv += ["--max-memory-idle", f"{s.max_memory_idle}B"]
        if s.max_time:
            argv += ["--max-time", _seconds(s.max_time)]
        if s.dry_run:
            argv.append("--dry-run")
        steps.append(("reaper", argv))
    if "watch" in s.actions:
        steps.append(("collector", common + _hanging(s) + ["--watch", WATCH_INTERVAL,
                                                           "--output", "-"]))
    if "discovery" in s.actions:
        # Zabbix agents take stderr into the value: warnings would spoil the
        # JSON of an existing "apache-manager -z" UserParameter. Errors only.
        steps.append(("collector", common + ["-q", "--format", "zabbix-discovery",
                                             "--output", "-"]))
    if "collect" in s.actions:
        if s.dry_run and s.data_file != "-":
            log.info("dry run: %s is not written (as apache-manager did)", s.data_file)
        else:
            steps.append(("collector", common + _hanging(s) + ["--format", "tab",
                                                               "--output", s.data_file]))
    if not s.actions:
        if s.data_file == "-":
            log.info("no action given and --data-file is '-': nothing to do "
                     "(as apache-manager did); add -c to write the metrics")
        else:
            steps.append(("collector", common + _hanging(s) + ["--format", "text",
                                                               "--output", "-"]))
    return steps


def _first_url(ports_config: Optional[str]) -> str:
    from apache_metrics_exporter.collect.discovery import discover_urls

    return discover_urls(ports_config)[0]


def check(steps: List[Tuple[str, List[str]]]) -> List[Tuple[str, List[str]]]:
    """Validate every run before any of them starts, as the new commands see
    it (their config file and environment included): the URL found from
    Apache's Listen directives when none is configured (discover_urls); no loop
    settings; the reaper skipped when it has no threshold at all."""
    from apache_metrics_exporter import config

    url: Optional[str] = None
    out = []
    for command, argv in steps:
        parser = config.build_reaper_parser() if command == "reaper" else config.build_parser()
        args = config.parse(parser, argv)
        if command == "reaper":
            if not (args.max_memory_active or args.max_memory_idle or args.max_time
                    or args.max_memory_wsgi):
                log.warning("--kill-workers without a threshold (-a, -i, -t or the INI "
                            "file): no worker is checked")
                continue
        else:
            from apache_metrics_exporter.cli import check_distinct_files

            check_distinct_files(args)  # (its run would refuse it after the kills)
            loops = [name for name, on in (("interval", args.interval),
                                           ("execd", args.execd)) if on]
            if args.watch and "--watch" not in argv:
                loops.append("watch")
            if loops:
                raise UsageError(
                    "apache-manager collects once per run, but "
                    + ", ".join(loops) + " is set in apache-metrics-exporter's config "
                    "file or environment; keep long-running settings on the "
                    "long-running command's own command line")
        if not args.url:
            if url is None:
                url = _first_url(args.ports_config)
            argv = ["--url", url] + argv
        out.append((command, argv))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``apache-manager`` with the original's options; return the exit status."""
    log.speak_as(PROG, {})  # the collector's and the reaper's messages too
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        log.speak_as("", {})


def _main(argv: List[str]) -> int:
    from apache_metrics_exporter import __version__

    log.setup(1, 0, PROG)
    try:
        s = parse_args(argv)
        log.speak_as(PROG, s.option_names())
        if s.help or s.version:
            return _print(HELP if s.help else
                          f"{PROG} (apache-metrics-exporter) {__version__}\n")
        log.setup(1 + s.verbose, s.quiet, PROG)
        os.environ.pop("COLLECTD_INTERVAL", None)  # never a loop, whoever runs us
        steps = check(plan(s))
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    from apache_metrics_exporter import cli

    status = EXIT_OK
    for command, step_argv in steps:
        run = cli.reaper_main if command == "reaper" else cli.main
        result = run(step_argv)
        if result == EXIT_USAGE:
            return EXIT_USAGE
        status = max(status, result)
        try:
            sys.stdout.flush()
        except (AttributeError, OSError, ValueError):
            status = max(status, EXIT_OUTPUT)
    return status


def _print(text: str) -> int:
    """``text`` on stdout (--help, --version): EXIT_OK, or EXIT_OUTPUT with one
    line when stdout fails (/dev/full, a reader gone), never a traceback."""
    from apache_metrics_exporter.streams import stdout_failed

    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        log.error("%s", stdout_failed(exc))
        return EXIT_OUTPUT
    return EXIT_OK


def console_main() -> None:
    """The console script: ``main()`` as every console script runs (closed
    standard streams, Ctrl-C, flush and fast exit: ``cli.console``)."""
    from apache_metrics_exporter.cli import console

    console(main)


if __name__ == "__main__":
    console_main()
