"""Options shared by the commands: command line, config file, environment.

Precedence: command line, then environment (``APACHE_METRICS_<OPTION>``), then
config files (``/etc/apache-metrics-exporter.conf``,
``~/.config/apache-metrics-exporter.conf``, ``--config PATH``), then defaults.
Everything is validated here, before anything is fetched; a problem is a
UsageError naming the option.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import configargparse

from apache_metrics_exporter import __version__
from apache_metrics_exporter.collect.http import Target, check_url, parse_header, redact, status_url
from apache_metrics_exporter.collect.processes import DEFAULT_EXE_NAMES, MEMORY_KINDS
from apache_metrics_exporter.errors import PROG, REAPER_PROG, UsageError
from apache_metrics_exporter.log import LOG_FORMATS, LOG_LEVELS, log
from apache_metrics_exporter.paths import REAPER_STATE as STATE_PATH
from apache_metrics_exporter.units import (
    MIN_INTERVAL,
    parse_memory_threshold,
    parse_size,
    parse_timespan,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

CONFIG_FILES = ["/etc/apache-metrics-exporter.conf", "~/.config/apache-metrics-exporter.conf"]
ENV_PREFIX = "APACHE_METRICS_"
PASSWORD_ENV = ENV_PREFIX + "PASSWORD"


def _timespan(text: str) -> float:
    try:
        value = parse_timespan(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _positive_seconds(text: str) -> float:
    value = _timespan(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def _pace(text: str) -> float:
    """A loop's pace (--interval, --watch): at least MIN_INTERVAL."""
    value = _positive_seconds(text)
    if value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(f"at least {MIN_INTERVAL:g} s (a shorter pace is a "
                                         f"busy loop), got {text!r}")
    return value


def _size(text: str, parse: Callable[[str], int] = parse_size) -> int:
    try:
        value = parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 bytes, got {text!r}")
    return value


_WIDTH: List[int] = []  # the terminal's columns, found once (see _Formatter)


def _terminal_width() -> int:
    """What shutil.get_terminal_size() would say, without importing shutil
    (with bz2 and lzma behind it): argparse makes a formatter for every
    option it adds, and a one-shot run never prints its help."""
    if not _WIDTH:
        try:
            columns = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                columns = 0
        _WIDTH.append(columns or 80)
    return _WIDTH[0]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows a default only where there is a meaningful one."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _terminal_width() - 2 if width is None else width)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" not in text and default not in (None, False, [], 0)
                and action.option_strings and default is not argparse.SUPPRESS
                and "default" not in text):
            text += " (default: %(default)s)"
        return text


class _ConfigFileSyntax(configargparse.DefaultConfigFileParser):
    """configargparse's own config file format; its help names configargparse's
    documentation, not the goo.gl link (goo.gl links are dead) of its default
    text."""

    def get_syntax_description(self) -> str:
        return ("Config file syntax: 'key = value' lines, 'flag = true', 'key = [a, b]' "
                "for an option given more than once, '#' comments (configargparse's "
                "format: https://github.com/bw2/ConfigArgParse#config-file-syntax).")


class _Parser(configargparse.ArgParser):
    """Reports a bad option as one line (a UsageError), not a usage block, and
    never with the value of an option it does not know: a mistyped key may
    well be ``pasword``."""

    def error(self, message: str):  # noqa: ANN201 - argparse's signature
        raise UsageError(f"{self._named_by_source(_without_values(message))} (see --help)")

    def _named_by_source(self, message: str) -> str:
        """argparse names the option (``argument --timeout: ...``) even when the
        value came from a config file or the environment, where the user wrote
        a key or a variable: name what they wrote, and where."""
        import re

        match = re.match(r"argument (\S+): ", message)
        key = re.match(r"config key '([^']*)': ", message)
        if key:  # ours (_without_values): a config key, file unknown
            found = self._config_key(lambda name, _action: name == key.group(1))
            return (f"config file {found[0]}, key {found[1]}: {message[key.end():]}"
                    if found else message)
        if not match:
            return message
        action = next((a for a in self._actions if a.option_strings
                       and "/".join(a.option_strings) == match.group(1)), None)
        if action is None:
            return message
        rest = message[match.end():]
        sources = self.get_source_to_settings_dict()
        typed = sources.get("command_line", {}).get("", (None, []))[1]
        for arg in typed or ():
            for flag in action.option_strings:
                if arg == flag or arg.startswith(flag + "=") or (
                        len(flag) == 2 and arg.startswith(flag)):
                    return message  # the user typed the option: argparse's words fit
        for var, (act, _value) in sources.get("environment_variables", {}).items():
            if act is action:
                return f"environment variable {var}: {rest}"
        found = self._config_key(lambda _name, act: act is action)
        return f"config file {found[0]}, key {found[1]}: {rest}" if found else message

    def _config_key(self, wanted: Callable[[str, Any], bool]) -> Optional[Tuple[str, str]]:
        """(path, key) of the first config file setting ``wanted`` accepts."""
        for source, settings in self.get_source_to_settings_dict().items():
            kind, _, path = source.partition("|")
            if kind == "config_file":
                for name, (action, _value) in settings.items():
                    if wanted(name, action):
                        return path, name
        return None

    def _find_end_of_this_parsers_args(self, args):  # noqa: ANN001,ANN201
        """configargparse's, remembered per command line: from 1.10 it asks
        this once per option while parsing (about 80 times), each answer a walk
        over every option - 4 ms of a 60 ms one-shot run. The answer depends
        only on the arguments and the options, both fixed during a parse."""
        key = (tuple(args), len(self._actions))
        ends = self.__dict__.setdefault("_ends_of_args", {})
        if key not in ends:
            ends[key] = super()._find_end_of_this_parsers_args(args)
        return ends[key]

    def _print_message(self, message, file=None):  # noqa: ANN001,ANN202
        """argparse's (--help, --version), with a failing stdout (/dev/full,
        a reader gone) an output error: Python 3.11 lets the OSError through,
        and it read as an unreadable config file (exit 2)."""
        try:
            super()._print_message(message, file)
        except OSError as exc:
            if file not in (None, sys.stdout):
                raise
            from apache_metrics_exporter.streams import stdout_failed

            raise stdout_failed(exc) from None

    def _get_values(self, action, arg_strings):  # noqa: ANN001,ANN201
        """argparse's, but a '--' that is an option's own value (``--timeout=--``,
        ``-T--``) is that value: Python 3.11's argparse drops it and sets the
        option to [] past its type and choices (a --grace of [] reached the
        reaper). Newer Pythons keep it, as here."""
        if action.option_strings and arg_strings == ["--"] and action.nargs in (None, "?"):
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)

    def parse_args(self, args=None, namespace=None, **kwargs):  # noqa: ANN001,ANN201
        """configargparse's parse_args, with unknown options named without values."""
        namespace, unknown = self.parse_known_args(args, namespace, **kwargs)
        if unknown:
            raise UsageError(f"{self._unknown(unknown)} (values are not shown; see --help)")
        return namespace

    def _unknown(self, unknown: List[str]) -> str:
        """What was not understood, with the config file it came from; no values."""
        in_files: Dict[str, Tuple[str, str]] = {}
        for source, settings in self.get_source_to_settings_dict().items():
            kind, _, path = source.partition("|")
            if kind == "config_file":
                for key, (action, _value) in settings.items():
                    if action is None:
                        in_files.setdefault(f"--{key}", (key, path))
        parts, strays, seen = [], 0, set()
        option_before = False  # "--formt x": x is the unknown option's value
        for arg in unknown:
            name = arg.partition("=")[0]
            after_option, option_before = option_before, \
                name.startswith("-") and len(name) > 1 and "=" not in arg
            if after_option and not arg.startswith("-"):
                continue
            if name in seen:
                continue
            seen.add(name)
            if name in in_files:
                key, path = in_files[name]
                near = self._nearest(name)
                parts.append(f"unknown key '{key}' in config file {path}"
                             + (f" (did you mean '{near[2:]}'?)" if near else ""))
            elif name.startswith("-") and len(name) > 1:
                near = self._nearest(name)
                parts.append(f"unrecognized option {name}"
                             + (f" (did you mean {near}?)" if near else ""))
            else:
                strays += 1
        if strays:
            parts.append(f"{strays} unexpected argument{'s' if strays > 1 else ''}")
        return "; ".join(parts)


    def _nearest(self, name: str) -> str:
        """The long option of this command closest to a misspelled ``name``
        ('' if none is close): a misspelled key is otherwise just "unknown"."""
        import difflib

        if not name.startswith("--"):
            return ""
        known = [o for o in self._option_string_actions if o.startswith("--")]
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        return near[0] if near else ""


def _first_line_number() -> int:
    """The number configargparse gives a file's first line in its messages:
    0 up to 1.7, 1 from 1.10. Asked of the parser itself, not of its version."""
    import io

    import configargparse

    try:
        configargparse.DefaultConfigFileParser().parse(io.StringIO("=\n"))
    except configargparse.ConfigFileParserException as exc:
        number = str(exc)[len("Unexpected line "):].partition(" ")[0]
        if number.isdigit():
            return int(number)
    return 0


def _without_values(message: str) -> str:
    """configargparse's messages about config file content, without the content:
    the line or value it quotes may be a password."""
    if message.startswith("Unable to open config file: ") and ". Error: " in message:
        # our own message from _open_config, wrapped by configargparse
        return message.partition(". Error: ")[2]
    if message.startswith("Unexpected line "):
        # "Unexpected line N in PATH: LINE", N counting from 0 or 1 by version
        number, _, path = message[len("Unexpected line "):].partition(":")[0].partition(" in ")
        if number.isdigit():
            line = int(number) + 1 - _first_line_number()
            return (f"config file {path}, line {line}: expected 'key = value' "
                    "(the line is not shown)")
        return "a config file has a line that is not 'key = value' (the line is not shown)"
    if message.startswith("Unexpected value for "):
        # "Unexpected value for KEY: 'VALUE'. Expecting 'true', ..."
        key = message[len("Unexpected value for "):].partition(":")[0]
        return (f"config key {key!r}: expected true, false, yes, no, on, off, 1 or 0 (the "
                "value is not shown)")
    if " can't be set to a list " in message:
        key = message.partition(" can't be set to a list ")[0]
        return f"config key {key!r} takes one value, not a list (the value is not shown)"
    return message


def base_parser(prog: str, description: str, epilog: str = "",
                level_help: str = "default: warn",
                quiet_help: str = "errors only (twice: nothing)") -> configargparse.ArgParser:
    """A parser with the options every command shares (target, processes, logging);
    ``level_help`` ends --log-level's help and ``quiet_help`` -q's: what the
    command shows by default and with -q."""
    p = _Parser(
        prog=prog, description=description, epilog=epilog,
        default_config_files=CONFIG_FILES, auto_env_var_prefix=ENV_PREFIX,
        config_file_parser_class=_ConfigFileSyntax,
        formatter_class=_Formatter, allow_abbrev=False,
        args_for_setting_config_path=["-c", "--config"], config_file_open_func=_open_config,
        config_arg_help_message="config file (key = value lines, keys are option names "
                                "without '--')",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="say more on stderr (twice for debug)")
    p.add_argument("-q", "--quiet", action="count", default=0,
                   help=f"say less on stderr: {quiet_help}")
    p.add_argument("--log-format", "--log.format", dest="log_format", choices=LOG_FORMATS,
                   default="plain",
                   help="stderr lines: plain 'PROG: LEVEL: message'; telegraf 'E! [PROG] "
                        "message' so Telegraf logs each at its level; logfmt or json as "
                        "apache_exporter writes them ('ts=... level=info msg=...')")
    p.add_argument("--log-level", "--log.level", dest="log_level", choices=LOG_LEVELS,
                   metavar="LEVEL",
                   help="least severe messages shown: debug, info, warn or error "
                        f"(apache_exporter's flag; -v and -q move from there; {level_help})")
    t = p.add_argument_group("target (where the status page is)")
    t.add_argument("--url", "--scrape_uri", dest="url", action="append", metavar="URL",
                   help="mod_status page, e.g. http://127.0.0.1/server-status (or its ?auto "
                        "form: both pages are derived from it; USER:PASSWORD@ in it is used "
                        "for basic auth); repeat for several Apache instances; default: "
                        "from the Listen directives of --ports-config")
    t.add_argument("--ports-config", metavar="PATH",
                   help="Apache config with Listen directives, used when no --url is given "
                        "(default: /etc/apache2/ports.conf, else /etc/httpd/conf/httpd.conf)")
    t.add_argument("--timeout", type=_positive_seconds, default=5.0, metavar="TIMESPAN",
                   help="deadline for the whole fetch of one target, both pages (e.g. 5, "
                        "2.5s)")
    t.add_argument("--max-response-size", type=_size, default=16 * 1024 * 1024, metavar="SIZE",
                   help="refuse answers larger than this (e.g. 16M)")
    t.add_argument("--user", metavar="NAME", help="HTTP basic auth user")
    t.add_argument("--password-file", metavar="PATH",
                   help="file whose first line is the HTTP password (also: 'password' in "
                        f"the config file, or {PASSWORD_ENV}; never on the command line)")
    t.add_argument("--password", help=argparse.SUPPRESS)
    t.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                   help="extra request header, e.g. 'Host: www.example.org'; repeatable")
    t.add_argument("--host_override", "--host-override", dest="host_override",
                   metavar="HOST", help="send this Host header (apache_exporter's flag)")
    t.add_argument("--ca-file", metavar="PATH", help="CA bundle to verify https status pages")
    t.add_argument("--client-cert", metavar="PATH", help="TLS client certificate (PEM)")
    t.add_argument("--client-key", metavar="PATH",
                   help="key of --client-cert, if not in the same file")
    t.add_argument("--insecure", action="store_true",
                   help="do not verify the server's TLS certificate")
    t.add_argument("--no-insecure", dest="insecure", action="store_false",
                   help=argparse.SUPPRESS)  # kingpin's negation of a boolean flag
    t.add_argument("--custom_headers", "--custom-headers", dest="custom_headers",
                   action="append", default=[], metavar="NAME=VALUE",
                   help="extra request header, apache_exporter's form of --header; "
                        "repeatable")
    g = p.add_argument_group("processes")
    g.add_argument("--pid-file", metavar="PATH",
                   help="Apache's PID file: trusted where the owner of the URL's "
                        "listening socket cannot be seen (an unprivileged run) or the URL "
                        "is not on loopback; refused where it contradicts that owner "
                        "(default: the Apache holding the listening socket, proven)")
    g.add_argument("--wsgi-group-names", choices=("config", "title"), default="config",
                   help="a mod_wsgi group name the process title cut short: config - the "
                        "one WSGIDaemonProcess of Apache's configuration it can be; title - "
                        "as the title shows it (apache-manager's behaviour)")
    g.add_argument("--apache-exe", default=",".join(DEFAULT_EXE_NAMES), metavar="NAMES",
                   help="comma-separated process names of Apache")
    g.add_argument("--state-file", default=STATE_PATH, metavar="PATH",
                   help="the reaper's counters (written by apache-worker-reaper, "
                        "reported by apache-metrics-exporter)")
    g.add_argument("--memory", choices=MEMORY_KINDS, default="rss",
                   help="memory figure per process: rss, or pss/uss (fairer for forked "
                        "workers; need root or Apache's user, else RSS is used)")
    return p


def add_foreign(parser: configargparse.ArgParser, names: Sequence[str]) -> None:
    """Accept (and ignore) the other command's config-file keys."""
    for name in names:
        parser.add_argument(f"--{name}", dest=f"_foreign_{name.replace('-', '_')}",
                            action="append", nargs="?", help=argparse.SUPPRESS)
    parser._foreign_names = tuple(names)


def parse(parser: configargparse.ArgParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse and validate; argparse errors exit 2, ours raise UsageError."""
    argv = list(argv) if argv is not None else None
    cli = argv if argv is not None else sys.argv[1:]
    for name in getattr(parser, "_foreign_names", ()):
        if any(a == f"--{name}" or a.startswith(f"--{name}=") for a in cli):
            raise UsageError(f"--{name} is not an option of {parser.prog} (see --help)")
    for option, sep in (("--header", ":"), ("--custom_headers", "="),
                        ("--custom-headers", "=")):
        for value in _option_values(cli, option):
            if value.partition(sep)[0].strip().lower() in SECRET_HEADERS:
                raise UsageError(f"{option} {value.partition(sep)[0].strip()}{sep} ... on the "
                                 "command line is visible to every user in ps; put 'header = "
                                 "[...]' in the config file or use APACHE_METRICS_HEADER")
    for secret in ("--password", "--influxdb-password", "--listen-password"):
        if any(a == secret or a.startswith(secret + "=") for a in cli):
            key = secret[2:]
            raise UsageError(f"{secret} on the command line is visible to every user in "
                             f"ps; use {secret}-file, '{key} = ...' in the config file or "
                             f"{ENV_PREFIX}{key.upper().replace('-', '_')}")
    url_options = [o for a in parser._actions if a.dest == "url" for o in a.option_strings]
    for url in (u for o in url_options for u in _option_values(cli, o)):
        if "@" in url and status_url(url)[2] is not None:
            raise UsageError(f"--url {redact(url)!r}: a password on the command line is "
                             "visible to every user in ps; put 'url = ...' in the config "
                             f"file or {ENV_PREFIX}URL, or give --user and --password-file")
    try:
        args = parser.parse_args(argv, env_vars=_environment(parser))
    except OSError as exc:  # an unreadable config file
        raise UsageError(f"cannot read config file {exc.filename}: {exc.strerror}") from None
    _empty_paths(parser, args)
    _unknown_environment(parser, args)
    _no_nul(parser, args)
    _register_secrets(args)
    return args


def _no_nul(parser: configargparse.ArgParser, args: argparse.Namespace) -> None:
    """No value holds a NUL byte: neither a command line nor the environment
    can carry one, a config file can - and every path rule (os.lstat) raised
    ValueError on it, a traceback. The value is not shown (a secret?)."""
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and "\0" in v for v in values):
            name = next((o for o in action.option_strings if o.startswith("--")),
                        action.dest)
            raise UsageError(f"{name} holds a NUL byte (a config file's value?); "
                             "no path or value can hold one: remove it")


# PATH options whose empty value means something: --collector-state none,
# --telemetry-endpoint (a URL path) its default, as apache_exporter takes it.
EMPTY_MEANS = ("collector_state", "telemetry_endpoint")


def _empty_paths(parser: configargparse.ArgParser, args: argparse.Namespace) -> None:
    """An empty PATH is refused, named where it was given (a 'state-file ='
    line, ``APACHE_METRICS_STATE_FILE=`` in a unit file): made absolute it is
    the current directory itself, which root's reaper, run by cron from
    /root, moved aside as a corrupt state file."""
    for action in parser._actions:
        if action.metavar != "PATH" or action.dest in EMPTY_MEANS:
            continue
        value = getattr(args, action.dest, None)
        if value == "" or (isinstance(value, list) and "" in value):
            parser.error(f"argument {'/'.join(action.option_strings)}: is empty; give a "
                         "path (the empty one would be the current directory)")


def _register_secrets(args: argparse.Namespace) -> None:
    """Tell the scrubber every secret given directly (config file, environment)
    and every user name, before anything is fetched or logged; secrets read
    from files are registered by read_secret."""
    from apache_metrics_exporter import scrub

    for user in ("user", "influxdb_username", "listen_user"):
        scrub.add_user(getattr(args, user, None))
    for secret in ("password", "influxdb_password", "influxdb_token", "listen_password"):
        scrub.add_secret(getattr(args, secret, None))
    urls = [*(getattr(args, "url", None) or ()), getattr(args, "influxdb_url", None) or ""]
    for url in urls:
        if "@" in url:
            try:
                _url, name, password = status_url(url)
            except ValueError:
                continue  # refused with a message (check_url) that shows no userinfo
            scrub.add_credentials(name, password)
    for header in getattr(args, "header", None) or ():
        name, _, value = header.partition(":")
        scrub.add_header(name.strip(), value)
    for header in getattr(args, "custom_headers", None) or ():
        name, _, value = header.partition("=")
        scrub.add_header(name.strip(), value)


# apache_exporter 1.1's environment variables (kingpin Envar) and the option
# each sets; the collector's only (they name its endpoint's settings).
FOREIGN_ENV = (("SCRAPE_URI", "url"), ("METRICS_ENDPOINT", "telemetry_endpoint"),
               ("HOST_OVERRIDE", "host_override"), ("INSECURE", "insecure"))
_GO_BOOLS = {**dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), "true"),
             **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), "false")}


# Variables named after a dotted flag before it got a dashed first name
# (0.2.0 showed APACHE_METRICS_WEB.SYSTEMD_SOCKET): still read, as the
# variable of the same option, where that one is not set (env(1) and
# systemd's Environment= can set a name with a dot, a shell cannot).
OLD_ENV = {ENV_PREFIX + "WEB.SYSTEMD_SOCKET": ENV_PREFIX + "WEB_SYSTEMD_SOCKET",
           ENV_PREFIX + "NO_WEB.SYSTEMD_SOCKET": ENV_PREFIX + "NO_WEB_SYSTEMD_SOCKET"}


def _environment(parser: configargparse.ArgParser) -> Dict[str, str]:
    """The environment the parser reads: os.environ (with OLD_ENV's names
    as their new ones), plus apache_exporter's
    variables (SCRAPE_URI, ...) as the APACHE_METRICS_* variable of the same
    option where that one is not set (ours wins; the command line beats both).
    An empty one is unset, as for kingpin; INSECURE takes Go's booleans."""
    env = dict(os.environ)
    for old, new in OLD_ENV.items():
        if old in env and new not in env:
            env[new] = env[old]
    if not getattr(parser, "_foreign_env", False):
        return env
    by_dest: Dict[str, str] = {}
    for action in parser._actions:  # configargparse's name: the first long option's
        long = [o for o in action.option_strings if o.startswith("--")]
        if long:
            by_dest.setdefault(action.dest,
                               ENV_PREFIX + long[0][2:].replace("-", "_").upper())
    for name, dest in FOREIGN_ENV:
        value, ours = env.get(name, ""), by_dest.get(dest)
        if not value or ours is None or ours in env:
            continue
        if dest == "insecure":
            if value not in _GO_BOOLS:
                raise UsageError(f"environment variable {name}: expected true or false "
                                 "(also 1, 0, t, f)")
            value = _GO_BOOLS[value]
        env[ours] = value
    return env


def _option_values(cli: Sequence[str], option: str) -> List[str]:
    """The values given to ``option`` on the command line (``OPT V``, ``OPT=V``)."""
    values = []
    for i, arg in enumerate(cli):
        if arg == "--":
            break
        if arg == option and i + 1 < len(cli):
            values.append(cli[i + 1])
        elif arg.startswith(option + "="):
            values.append(arg[len(option) + 1:])
    return values


def _unknown_environment(parser: configargparse.ArgParser, args: argparse.Namespace) -> None:
    """Warn about APACHE_METRICS_* variables that set no option (a typo is
    otherwise silently ignored), by name only: the value may be a secret."""
    known = {a.env_var for a in parser._actions if getattr(a, "env_var", None)}
    known.update(old for old, new in OLD_ENV.items() if new in known)
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown and not args.quiet:
        log.setup(args.verbose, args.quiet, parser.prog, args.log_format, args.log_level)
        for name in unknown:
            log.warning("environment variable %s is not an option of %s: ignored (see "
                        "--help; values are not shown)", name, parser.prog)


SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie")


def _open_config(path: str, mode: str = "r") -> io.StringIO:
    """configargparse's only way into a config file, however the path was
    given (``-c F``, ``-cF``, ``-vcF``, ``--config=F``, the default files):
    read only when it can be trusted (``trust.py``: a regular file - a FIFO
    would block the run for ever - that only this user or root could have
    written, bounded). Config files say which Apache to watch and whom the
    reaper may signal."""
    from apache_metrics_exporter.trust import read_trusted

    if mode != "r":
        raise UsageError("config files are only read here")
    try:
        data = read_trusted(path, "config file")
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    stream = io.StringIO(data.decode("utf-8", "replace"))
    stream.name = path  # configargparse names the file in its messages
    return stream


def read_secret(path: str, option: str) -> str:
    """First line of a secret file, for --password-file and friends: a small
    regular file (a FIFO would block for ever), never through a symlink."""
    from apache_metrics_exporter.paths import Corrupt, read_bounded

    try:
        data = read_bounded(path, 64 * 1024)
    except Corrupt as exc:
        raise UsageError(f"cannot read {option} {path}: it {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {option} {path}: {exc.strerror}") from None
    secret = data.decode("utf-8", "replace").split("\n", 1)[0].rstrip("\r")
    from apache_metrics_exporter.scrub import add_secret

    add_secret(secret)  # never shown, in any form, in text from a peer
    return secret


def targets(args: argparse.Namespace) -> List[Target]:
    """Targets from the options (or the Listen directives), validated."""
    urls = args.url
    if not urls:
        from apache_metrics_exporter.collect.discovery import discover_urls

        urls = discover_urls(args.ports_config)
    from apache_metrics_exporter.collect.http import tls_file_problem

    for path, option in ((args.ca_file, "--ca-file"), (args.client_cert, "--client-cert"),
                         (args.client_key, "--client-key")):
        why = path and tls_file_problem(path, option)
        if why:  # a FIFO would block the run for ever in ssl's own open
            raise UsageError(why)
    if args.client_key and not args.client_cert:
        raise UsageError("--client-key needs --client-cert")
    password = args.password
    if args.password_file:
        password = read_secret(args.password_file, "--password-file")
    headers = tuple(parse_header(h) for h in args.header)
    for given in getattr(args, "custom_headers", None) or ():
        name, sep, value = given.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--custom_headers {name.strip()!r}...: expected NAME=VALUE, "
                             "e.g. X-Token=abc (values are not shown)")
        headers += (parse_header(f"{name}: {value}"),)
    if args.host_override:
        headers += (parse_header(f"Host: {args.host_override}"),)
    out = []
    for given in urls:
        url, user, url_password = status_url(check_url(given))
        if user is None:
            user = args.user
            if password is not None and user is None:
                raise UsageError("a password was given but no --user")
        elif args.user is not None:
            raise UsageError(f"--url {redact(given)!r} names a user and --user is given "
                             "too: use one of them")
        elif url_password is not None and password is not None:
            raise UsageError(f"--url {redact(given)!r} has a password and one is given "
                             "by --password-file, 'password' or "
                             f"{PASSWORD_ENV} too: use one of them")
        if url_password is None:
            url_password = password
        out.append(Target(url=url, timeout=args.timeout, max_bytes=args.max_response_size,
                          user=user, password=url_password, headers=headers,
                          ca_file=args.ca_file,
                          client_cert=args.client_cert, client_key=args.client_key,
                          insecure=args.insecure))
    return out


def exe_names(args: argparse.Namespace) -> tuple:
    """Apache's process names from --apache-exe."""
    names = tuple(n.strip() for n in args.apache_exe.split(",") if n.strip())
    if not names:
        raise UsageError("--apache-exe: give at least one process name, e.g. apache2,httpd")
    return names


# ---------------------------------------------------------------------------
# The two commands' parsers. Each command accepts the other's options in
# config files and the environment (a shared config file) and ignores them;
# which those are is derived from the other's declarations, never listed by
# hand.

EPILOG = """\
exit status: 0 output written (also when Apache is down: status-response 1 / up 0),
             1 output could not be written (--format influxdb: also credentials
             or data refused; --check: a check FAILed),
             2 bad options or configuration.
environment: every option can be set as APACHE_METRICS_<OPTION>, e.g.
             APACHE_METRICS_URL=http://127.0.0.1/server-status.
"""
REAPER_EPILOG = """\
exit status: 0 the run completed (killed, would-kill in a dry run, or nothing to do),
             1 the state file could not be locked or written, 2 bad options.
Every action is one line on stderr (syslog-friendly); a summary line ends each run.
"""




class _Recorder:
    """Stands in for a parser to learn the long option names a declaration
    function adds, without building a parser."""

    def __init__(self) -> None:
        self.names: List[str] = []

    def add_argument_group(self, *args: Any, **kwargs: Any) -> _Recorder:
        return self

    def add_argument(self, *flags: str, **kwargs: Any) -> None:
        self.names.extend(f[2:] for f in flags if f.startswith("--"))


def own_options(declare: Callable[[Any], None]) -> Tuple[str, ...]:
    """The long option names (without --) that ``declare`` adds."""
    recorder = _Recorder()
    declare(recorder)
    return tuple(recorder.names)


def build_parser() -> configargparse.ArgParser:
    """The collector's parser: shared options, its own, and the reaper's as
    ignored config-file keys."""
    p = base_parser(PROG, "Read Apache httpd's mod_status pages and processes and write "
                    "the metrics for monitoring (apache-manager's metrics file, ...).",
                    EPILOG)
    _collector_options(p)
    add_foreign(p, own_options(_reaper_options))
    p._foreign_env = True
    return p


def _collector_options(p: Any) -> None:
    """The collector's own options (``p``: a parser, or a _Recorder)."""
    from apache_metrics_exporter.paths import SPOOL_DIR
    from apache_metrics_exporter.restarts import DEFAULT_PATH as RESTARTS_STATE
    from apache_metrics_exporter.writers import FORMATS


    c = p.add_argument_group("collection")
    c.add_argument("-T", "--hanging-threshold", "--hanging-worker-threshold",
                   dest="hanging_threshold", type=_timespan, default=300.0,
                   metavar="TIMESPAN",
                   help="an active worker whose request started this long ago counts "
                        "as hanging (e.g. 90s, 5m); default 5m")
    c.add_argument("--check", action="store_true",
                   help="check the set-up instead of collecting (with --format influxdb "
                        "the push target too: reachable, token and bucket, nothing "
                        "written; with --listen the endpoint: bound, web config, TLS, "
                        "then closed): one OK/WARN/FAIL line per check with the fix; "
                        "exit status 1 when a check FAILs")
    c.add_argument("--no-processes", action="store_true",
                   help="skip the process scan (no memory figures)")
    c.add_argument("--collector-state", default=RESTARTS_STATE, metavar="PATH",
                   help="the collector's own state file, where restarts are counted "
                        "between runs (left out when it cannot be read or written); '' for none")
    c.add_argument("--vhost-limit", type=int, default=20, metavar="N",
                   help="report busy workers, requests in flight and the longest request "
                        "for the N virtual hosts with most busy workers, the rest summed "
                        "as vhost 'other' (a real host of that name is shown as "
                        "'other_HASH'); 0 turns per-vhost figures off")
    c.add_argument("--client-limit", type=int, default=0, metavar="N",
                   help="report busy workers per client address for the N addresses "
                        "holding most (the rest summed as client 'other'); default 0: "
                        "no address is written, only counts (cardinality, privacy)")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=sorted(f.name for f in FORMATS), default=None,
                   help="; ".join(f"{f.name}: {f.help}" for f in sorted(FORMATS))
                   + ". Default: text when stdout is a terminal, else tab")
    o.add_argument("-z", "--zabbix-discovery", action="store_true",
                   help="apache-manager's spelling of --format zabbix-discovery")
    o.add_argument("--prometheus-naming", choices=("apache_exporter", "base-units"),
                   default="apache_exporter",
                   help="apache_exporter: its names, dashboards keep working; base-units: "
                        "bytes and seconds where it used kilobytes and ms (promtool lint)")
    o.add_argument("-w", "--watch", nargs="?", const=2.0, type=_pace,
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
    r.add_argument("--interval", type=_pace, metavar="TIMESPAN",
                   help="collect and write a batch every TIMESPAN until stopped "
                        "(default under collectd's Exec plugin: COLLECTD_INTERVAL)")
    r.add_argument("--execd", action="store_true",
                   help="Telegraf inputs.execd (signal = \"STDIN\"): one batch per line "
                        "read from stdin; exit 0 at end of input")
    e = p.add_argument_group("Prometheus scrape endpoint (apache_exporter's flag names "
                             "are accepted too)")
    e.add_argument("--listen", "--telemetry.address", "--web.listen-address", dest="listen",
                   action="append", metavar="ADDR:PORT",
                   help="answer Prometheus scrapes over HTTP instead of writing output: "
                        "GET /metrics collects every --url at scrape time. ADDR defaults "
                        "to 127.0.0.1 (give 0.0.0.0 or [::] for every interface), PORT to "
                        "9117. Repeatable: one endpoint on several addresses")
    # The dashed name first: configargparse names the environment variable
    # after it, and a shell cannot export APACHE_METRICS_WEB.SYSTEMD_SOCKET.
    e.add_argument("--web-systemd-socket", "--web.systemd-socket", dest="systemd_socket",
                   action="store_true",
                   help="answer on the sockets systemd passes (socket activation: "
                        "LISTEN_FDS) instead of --listen addresses")
    e.add_argument("--no-web-systemd-socket", "--no-web.systemd-socket", dest="systemd_socket",
                   action="store_false", help=argparse.SUPPRESS)
    e.add_argument("--telemetry-endpoint", "--telemetry.endpoint", "--web.telemetry-path",
                   dest="telemetry_endpoint",
                   default="/metrics", metavar="PATH", help="the path of the metrics page")
    e.add_argument("--web-config-file", "--web.config.file", "--web.config",
                   dest="web_config_file",
                   metavar="PATH",
                   help="exporter-toolkit's web configuration (YAML): TLS "
                        "(tls_server_config), bcrypt basic auth (basic_auth_users), response "
                        "headers and a rate limit for the endpoint, as apache_exporter reads "
                        "it (see docs/prometheus.md)")
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
    # Hidden, for the tests: how long a client may take to send its request
    # (TLS handshake and head), default endpoint.REQUEST_DEADLINE.
    e.add_argument("--listen-request-deadline", type=_positive_seconds, help=argparse.SUPPRESS)
    e.add_argument("--listen-idle-deadline", type=_positive_seconds, help=argparse.SUPPRESS)


def _memory_threshold(text: str) -> int:
    """A reaper memory limit: a size, a bare number below 1 MiB refused."""
    return _size(text, parse_memory_threshold)


def _wsgi_threshold(text: str) -> tuple:
    group, sep, size = text.rpartition("=")
    if sep and not group:
        raise argparse.ArgumentTypeError(f"expected SIZE or GROUP=SIZE, got {text!r}")
    return (group or None, _memory_threshold(size))


def build_reaper_parser() -> configargparse.ArgParser:
    """The reaper's parser: shared options, thresholds and safety options, and
    the collector's as ignored config-file keys."""
    p = base_parser(REAPER_PROG, "Kill Apache workers and mod_wsgi daemon processes that "
                    "use too much memory or hang on a request - safely, with counters in "
                    "a state file that apache-metrics-exporter reports.", REAPER_EPILOG,
                    level_help="default: info; a kill, a SIGKILL after --grace and a "
                               "dry run's would-kill are shown at any level and with -q",
                    quiet_help="warnings and errors (twice: errors only); never hides a "
                               "kill")
    _reaper_options(p)
    add_foreign(p, own_options(_collector_options))
    return p


def _reaper_options(p: Any) -> None:
    """The reaper's own options (``p``: a parser, or a _Recorder)."""
    t = p.add_argument_group("thresholds (at least one; 0 or absent = off)")
    t.add_argument("-a", "--max-memory-active", type=_memory_threshold, default=0,
                   metavar="SIZE",
                   help="memory limit for native workers serving a request (50M, 2G)")
    t.add_argument("-i", "--max-memory-idle", type=_memory_threshold, default=0,
                   metavar="SIZE",
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
                   help="SIGTERM first; SIGKILL only what is still alive after this long "
                        "(prefork children and mod_wsgi daemons; a worker or event MPM "
                        "child ignores SIGTERM and gets SIGKILL at once)")
    s.add_argument("--max-kills", type=int, default=5, metavar="N",
                   help="circuit breaker: never kill more than N processes in one run")
    s.add_argument("--lock-timeout", type=_positive_seconds, default=60.0, metavar="TIMESPAN",
                   help="how long to wait for another reaper's run to finish")
