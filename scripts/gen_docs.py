"""Generate docs/metrics.md from the metric catalogue and the man pages from
the two commands' argument parsers (``make docs``). A test fails when the
committed files differ from what this writes, so they never drift.

    python scripts/gen_docs.py          # write the files
    python scripts/gen_docs.py --check  # exit 1 if a committed file is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apache_metrics_exporter import __version__  # noqa: E402
from apache_metrics_exporter.catalogue import (  # noqa: E402
    CLIENT_METRICS,
    DERIVED_METRICS,
    HEALTH_METRICS,
    INTERVAL_METRICS,
    MEMORY_METRIC,
    PROCESS_METRICS,
    PROXY_METRICS,
    REAPER_METRICS,
    SATURATION_METRICS,
    SCOREBOARD_METRICS,
    SERVER_METRICS,
    VHOST_METRICS,
    WORKER_METRICS,
    Metric,
    prom_family,
)

GROUPS = (
    ("Server figures (the `?auto` page)", SERVER_METRICS),
    ("Load balancer members (`ProxyStatus On`)", PROXY_METRICS),
    ("Figures made from several lines", DERIVED_METRICS),
    ("Scoreboard", SCOREBOARD_METRICS),
    ("Worker table (`ExtendedStatus On`)", WORKER_METRICS),
    ("Per virtual host (`--vhost-limit`)", VHOST_METRICS),
    ("Slow clients and clients holding workers (`--client-limit`)", CLIENT_METRICS),
    ("Processes, per group (`native` or a mod_wsgi group)", PROCESS_METRICS),
    ("Reaper (its state file)", REAPER_METRICS),
    ("Saturation: accept queues and the reason for up=0", SATURATION_METRICS),
    ("Since the previous collection: rates and request durations (docs/insight.md)",
     INTERVAL_METRICS),
    ("Collection health", HEALTH_METRICS),
)
STAT_OF = {v: k for k, v in MEMORY_METRIC.items()}


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _tab(m: Metric) -> str:
    reason = dict(m.absent).get("tab")
    if reason:
        return f"- ({reason})"
    if m.name in STAT_OF:
        return _code(f"memory-usage GROUP {STAT_OF[m.name]}")
    key = m.tab_key or m.name.replace("_", "-")
    if "{" in key:  # the labels are part of the key: restarts-{kind}
        return _code(key.format(**{label: label.upper() for label in m.labels}))
    return _code(" ".join([key] + [label.upper() for label in m.labels]))


def _named(m: Metric, fmt: str, value: str) -> str:
    return _code(value) if value else f"- ({dict(m.absent).get(fmt, 'not written')})"


def _prom(m: Metric) -> str:
    if m.prom is None:
        return _named(m, "prometheus", "")
    fam = prom_family(m)
    labels = ",".join(m.labels)
    spec = m.prom if not labels else (
        m.prom[:-1] + "," + labels + "}" if m.prom.endswith("}") else f"{m.prom}{{{labels}}}")
    text = f"{_code(spec)} {fam.kind}"
    if fam.base:
        text += f"; base-units: {_code(fam.base[0])}"
    return text


def metrics_md() -> str:
    """docs/metrics.md: every metric, its kind and unit, and its name per format."""
    out = [
        "# Metrics",
        "",
        "Generated from `apache_metrics_exporter/catalogue.py` by `make docs`; do not "
        "edit by hand (a test compares it with the catalogue).",
        "",
        "Each metric is defined once; every output format takes its name from the "
        "catalogue entry, or the entry says why the format has none. Labels are "
        "in CAPITALS in the tab column and in braces in the others. Influx names are "
        "`measurement.field`; the `apache` measurement is Telegraf's `inputs.apache` "
        "(float fields, tags `server` and `port`). collectd names are "
        "`TYPE-TYPE_INSTANCE` under plugin `apache`.",
        "",
    ]
    for title, metrics in GROUPS:
        out += [f"## {title}", "",
                "| metric | kind, unit | meaning | tab file | Influx | collectd | Prometheus |",
                "|---|---|---|---|---|---|---|"]
        for m in metrics:
            cells = [_code(m.name), f"{m.kind}, {m.unit}", m.help.replace("|", "\\|"),
                     _tab(m), _named(m, "influx", m.influx or ""),
                     _named(m, "collectd", m.collectd or ""), _prom(m)]
            out.append("| " + " | ".join(c.replace("\n", " ") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in text.splitlines())


SUMMARY = {
    "apache-metrics-exporter": "Apache httpd mod_status and process metrics for monitoring",
    "apache-worker-reaper": "kill Apache workers over memory or request-time thresholds",
    "apache-manager": "the apache-manager 2.2 compatible front end of apache-metrics-exporter",
}
# Where a reader of the man page finds the docs/ pages: the .deb installs them
# (packaging/debian/rules), pip and pipx do not.
DOCS_WHERE = ("/usr/share/doc/apache-metrics-exporter/docs/ with the Debian package, "
              "else the project's source")


def _epilog_sections(epilog: str) -> list:
    """[(man section title, text)] of a --help epilog: its "exit status:" and
    "environment:" paragraphs get their own sections, the rest goes to NOTES."""
    titles = {"exit status": "EXIT STATUS", "environment": "ENVIRONMENT"}
    blocks: list = []
    for line in epilog.splitlines():
        label, sep, rest = line.partition(":")
        if sep and not line.startswith(" ") and label in titles:
            blocks.append([titles[label], [rest.strip()]])
        elif line.startswith(" ") and blocks and blocks[-1][0] != "NOTES":
            blocks[-1][1].append(line.strip())
        elif line.strip():
            if not blocks or blocks[-1][0] != "NOTES":
                blocks.append(["NOTES", []])
            blocks[-1][1].append(line)
    order = ["EXIT STATUS", "ENVIRONMENT", "NOTES"]
    return [(title, "\n".join(text)) for title, text in
            sorted(blocks, key=lambda b: order.index(b[0]))]


def man_page(parser: argparse.ArgumentParser, name: str, section: str = "1") -> str:
    """A man page from an argument parser: every option with its help text."""
    out = [f'.TH {name.upper()} {section} "" "{name} {__version__}" "User Commands"',
           ".SH NAME", f"{_roff(name)} \\- {_roff(SUMMARY[name])}",
           ".SH SYNOPSIS", f".B {_roff(name)}", "[\\fIOPTIONS\\fR]",
           ".SH DESCRIPTION", _roff(parser.description or "")]
    formatter = parser._get_formatter()
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.option_strings and a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = group.title or "options"
        out.append(f".SH {_roff(title.upper())}")
        for action in actions:
            flags = ", ".join(f"\\fB{_roff(o)}\\fR" for o in action.option_strings)
            if action.nargs != 0:
                if action.metavar:
                    shown = action.metavar
                elif action.choices:
                    shown = "{" + ",".join(map(str, action.choices)) + "}"
                else:
                    shown = action.dest.upper()
                if action.nargs == "?":
                    shown = f"[{shown}]"
                flags += f" \\fI{_roff(shown)}\\fR"
            # The --help text, defaults and environment variable included.
            out += [".TP", flags, _roff(formatter._expand_help(action))]
    sections = _epilog_sections(parser.epilog or "")
    for title, text in sections:
        if title != "NOTES":
            out += [f".SH {title}", ".nf", _roff(text), ".fi"]
    from apache_metrics_exporter.paths import REAPER_STATE as STATE_PATH
    from apache_metrics_exporter.paths import SPOOL_DIR
    from apache_metrics_exporter.restarts import DEFAULT_PATH as COLLECTOR_STATE

    out += [".SH FILES", ".TP", "/etc/apache-metrics-exporter.conf, "
            "~/.config/apache-metrics-exporter.conf",
            "the settings (key = value, keys are option names)",
            ".TP", _roff(STATE_PATH),
            "the reaper's counters and last runs (--state-file), which the collector reports"]
    if any("--collector-state" in a.option_strings and a.help != argparse.SUPPRESS
           for a in parser._actions):
        # (the reaper uses neither: its page lists only the files it reads)
        out += [".TP", _roff(COLLECTOR_STATE),
                "the collector's previous reading, for restart counts and interval figures "
                "(--collector-state)",
                ".TP", _roff(SPOOL_DIR + "/"),
                "InfluxDB push batches waiting for the server (--spool-dir)"]
    for title, text in sections:
        if title == "NOTES":  # prose: filled to the reader's width
            out += [f".SH {title}", _roff(text)]
    out += [".SH SEE ALSO",
            ", ".join(f"{n}(1)" for n in SUMMARY if n != name)
            + "; docs/metrics.md for every metric and its name in each format: "
            + DOCS_WHERE + "."]
    return "\n".join(out) + "\n"


def manager_man_page() -> str:
    """apache-manager(1): its --help text as it is (a getopt command line has
    no parser to walk), so the page never says other than the command."""
    from apache_metrics_exporter.manager import HELP

    name = "apache-manager"
    body = HELP.split("\n", 1)[1].strip("\n")  # the "Usage:" line is the synopsis
    return "\n".join([
        f'.TH {name.upper()} 1 "" "{name} {__version__}" "User Commands"',
        ".SH NAME", f"{_roff(name)} \\- {_roff(SUMMARY[name])}",
        ".SH SYNOPSIS", f".B {_roff(name)}", "[\\fIOPTIONS\\fR]",
        # The --help text as it is, at the left margin: indented like the
        # rest of a man page, its 79-column lines would not fit 80 columns.
        ".SH DESCRIPTION", ".nf", ".in 0", _roff(body), ".in", ".fi",
        ".SH FILES", "/etc/apache-manager.ini, ~/.apache-manager.ini, "
        "~/.config/apache-manager.ini, apache-manager.d/*.ini beside them; "
        "/etc/apache-metrics-exporter.conf for the other settings",
        ".SH SEE ALSO",
        ", ".join(f"{n}(1)" for n in SUMMARY if n != name)
        + "; docs/migration.md for every old line and its new one: " + DOCS_WHERE + ".",
    ]) + "\n"


def outputs() -> dict:
    """{path: content} of every generated file."""
    from apache_metrics_exporter.config import build_parser, build_reaper_parser

    return {
        ROOT / "docs" / "metrics.md": metrics_md(),
        ROOT / "docs" / "man" / "apache-metrics-exporter.1":
            man_page(build_parser(), "apache-metrics-exporter"),
        ROOT / "docs" / "man" / "apache-worker-reaper.1":
            man_page(build_reaper_parser(), "apache-worker-reaper"),
        ROOT / "docs" / "man" / "apache-manager.1": manager_man_page(),
    }


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in outputs().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale (run make docs): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
