"""``apache-metrics-exporter --check``: the set-up walked through, one line per check.

Each line is ``OK``, ``WARN`` or ``FAIL``, a topic and what was found, with the
fix where there is one; the exit status is 1 when a check FAILs, else 0.
Everything is asked of the code a collection uses - the target and URL
discovery (config.py, collect/discovery.py), the fetcher (collect/http.py),
the parsers (collect/status.py), the process proof (collect/processes.py),
the trust rules for files (paths.py, trust.py) - so the check says what a
collection would meet, not what a second implementation thinks.

Beyond a collection it looks at:

- the configuration the proven Apache runs (processes.running_config with
  discovery's reader, bounded): the ``<Location>`` serving the page, its
  ``Require`` lines, ``ExtendedStatus``, ``CustomLog`` and ``SetEnvIf``,
  and each ``WSGIDaemonProcess``'s ``display-name``;
- the status page's exposure: each non-loopback address of this host that
  the proven Apache listens on (a wildcard listener: every address of the
  host's interfaces) is asked for the page, without credentials, with a
  short deadline, at most MAX_PROBES of them;
- the access log: one request with a unique marker in its query, then the
  new part of each access log file named by the configuration is searched
  for it (bounded reads).
"""

from __future__ import annotations

import os
import re
import sys

from apache_metrics_exporter.collect.discovery import ApacheConfig
from apache_metrics_exporter.collect.http import (
    USER_AGENT,
    Fetcher,
    Target,
    host_port,
)
from apache_metrics_exporter.errors import FetchError, OutputError, UsageError
from apache_metrics_exporter.records import NamedTuple
from apache_metrics_exporter.scrub import scrub
from apache_metrics_exporter.units import hostport, visible

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    import argparse
    from typing import Any, BinaryIO, Dict, List, Optional, Sequence, TextIO, Tuple

    from apache_metrics_exporter.collect.processes import Parent
    from apache_metrics_exporter.collect.status import AutoPage

OK, WARN, FAIL = "OK", "WARN", "FAIL"
MAX_PROBES = 16  # non-loopback (address, port) pairs asked for the page
PROBE_TIMEOUT = 3.0  # seconds per probe at most (less if --timeout is shorter)
LOG_TAIL = 256 * 1024  # bytes of an access log read after the marker request
LOG_WAIT = 1.0  # seconds to wait for a log line a closed connection leaves behind
MAX_SCAN = 200  # files of a consumer's configuration directory looked into
# Where the consumers' configuration lives; a module setting so tests can
# point it at a temporary directory.
ETC = "/etc"
PID_FILES = ("/run/apache2/apache2.pid", "/run/httpd/httpd.pid", "/var/run/httpd/httpd.pid")
SECRET_KEYS = ("password", "influxdb-token", "influxdb-password", "listen-password")


class Report:
    """The lines printed so far; each is written at once (a slow check shows
    where it is)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.counts = {OK: 0, WARN: 0, FAIL: 0}

    def add(self, level: str, topic: str, text: str) -> None:
        # Lines quote peers (a redirect's Location, a page's title, an error):
        # one that echoes the Authorization header must not print it.
        self.counts[level] += 1
        self.write(f"{level:<4} {topic}: {visible(scrub(text))}\n")

    def write(self, text: str) -> None:
        """One line, flushed; a failing stdout (/dev/full, a reader gone) is
        an output error (exit 1, one line), not a traceback."""
        try:
            self.out.write(text)
            self.out.flush()
        except OSError as exc:
            if self.out is not sys.stdout:
                raise OutputError(f"cannot write the report: {exc.strerror}") from None
            from apache_metrics_exporter.streams import stdout_failed

            raise stdout_failed(exc) from None

    @property
    def failed(self) -> bool:
        return self.counts[FAIL] > 0


# --- entry -----------------------------------------------------------------------------

def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Walk the set-up; 0 when nothing FAILed, 1 otherwise. UsageError for
    options that make no sense with --check (exit 2, as for any run)."""
    from apache_metrics_exporter import config

    for given, name in ((args.watch, "--watch"),
                        (args.interval, "--interval"), (args.execd, "--execd"),
                        (args.zabbix_discovery, "--zabbix-discovery")):
        if given:
            raise UsageError(f"--check diagnoses the set-up once; it takes no {name}")
    exe_names = config.exe_names(args)
    report = Report(out or sys.stdout)
    source = "given by --url"
    if not args.url:
        from apache_metrics_exporter.collect.discovery import PORTS_CONFIGS, discover_urls

        try:
            args.url = discover_urls(args.ports_config)
        except UsageError as exc:
            report.add(FAIL, "URL", f"{exc}")
            check_files(report, args)
            check_push(report, args)
            check_consumer(report, args)
            return _summary(report)
        where = args.ports_config or next((p for p in PORTS_CONFIGS if os.path.exists(p)),
                                          "Apache's configuration")
        source = f"found in the Listen directives of {where}"
    targets = config.targets(args)  # usage errors: exit 2, as for a collection
    for target in targets:
        check_target(report, args, target, exe_names, source)
    check_endpoint(report, args, targets, exe_names)
    check_files(report, args)
    check_push(report, args)
    check_consumer(report, args)
    return _summary(report)


def _summary(report: Report) -> int:
    c = report.counts
    report.write(f"{c[OK]} OK, {c[WARN]} WARN, {c[FAIL]} FAIL\n")
    return 1 if report.failed else 0


# --- fetching, as a collection does it --------------------------------------------------

class _Fetcher(Fetcher):
    """The collector's fetcher, telling each answer's status and Location
    (Fetcher.status/location): the fetch turns them into a message, the
    check wants the fix."""

    def fetch(self, url: str) -> Tuple[Optional[bytes], Optional[str], int, str]:
        """(body, error, HTTP status or 0, Location) of one request."""
        try:
            body: Optional[bytes] = self.get(url)
            error = None
        except FetchError as exc:
            body, error = None, str(exc)
        return body, error, self.status, self.location


class Page(NamedTuple):
    """What asking for the status page gave."""

    auto: Optional[AutoPage]
    body: Optional[bytes]  # the ?auto answer when it was a 200
    error: Optional[str]
    status: int
    location: str


def fetch_auto(fetcher: _Fetcher) -> Page:
    from apache_metrics_exporter.collect.status import parse_auto

    url = fetcher.target.auto_url
    body, error, status, location = fetcher.fetch(url)
    auto = None
    if body is not None:
        try:
            auto = parse_auto(body.decode("latin-1"), source=url)
        except FetchError as exc:
            error = str(exc)
    return Page(auto, body, error, status, location)


# --- one target ---------------------------------------------------------------------------

def check_target(report: Report, args: argparse.Namespace, target: Target,
                 exe_names: Sequence[str], source: str) -> None:
    from apache_metrics_exporter.collect.processes import parent_of_url

    fetcher = _Fetcher(target)
    try:
        report.add(OK, "URL", f"{target.url} ({source}); the exporter asks for "
                   "?auto itself and reads the HTML page beside it, so the URL works "
                   "with or without ?auto")
        page = fetch_auto(fetcher)
        html_body, html_error, html_status, _ = fetcher.fetch(target.url)
        workers = None
        if html_body is not None:
            from apache_metrics_exporter.collect.status import parse_html

            try:
                workers = parse_html(html_body, source=target.url).workers
            except FetchError as exc:
                html_error, html_body = str(exc), None
        parent = parent_of_url(fetcher.host, fetcher.port, exe_names, args.pid_file,
                               [w.pid for w in workers or () if w.pid],
                               fetcher.peer if page.auto is not None else None)
        conf = apache_config(parent.pid)
        path = _path(target.url)
        report_status(report, args, fetcher, page, conf, path, parent.other)
        if page.auto is not None:
            report_pages(report, page.auto, html_body, html_error, html_status, workers,
                         target.url, conf)
        report_parent(report, parent, exe_names)
        report_user(report, parent.pid)
        report_access(report, conf, path)
        report_wsgi(report, conf)
        report_exposure(report, target, fetcher, parent.pid, conf, path)
        report_access_log(report, fetcher, conf, path, page.auto is not None)
    finally:
        fetcher.close()


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path or "/"


def report_status(report: Report, args: argparse.Namespace, fetcher: _Fetcher, page: Page,
                  conf: Optional[StatusConfig], path: str, other: str = "") -> None:
    """Whether the URL answers with a status page; for the usual failures the
    precise fix (apache_exporter's tracker is full of them). ``other``: the
    program that is not Apache holding the URL's port (Parent.other), if
    that is who answered: Apache's fixes would not apply then."""
    topic = "status page"
    url = fetcher.target.auto_url
    if page.auto is not None:
        info = page.auto.info
        what = ", ".join(x for x in (info.get("ServerVersion", ""),
                                     f"MPM {info['ServerMPM']}" if info.get("ServerMPM")
                                     else "") if x)
        report.add(OK, topic, f"{url} answers with mod_status's page"
                   + (f" ({what})" if what else ""))
        return
    status, where = page.status, hostport(fetcher.host, fetcher.port)
    section = conf.status_section(path) if conf is not None else None
    if other and (status in (403, 404) or (status == 200 and page.body is not None)
                  or (not status and page.error)):
        # Not Apache's answer: mod_status, <Location> and Require are not the
        # fix (a redirect's or a login's fix holds for a proxy too: below).
        found, _asked = _listen_candidate(args, fetcher.target)
        fix = (f"a Listen directive of {args.ports_config} gives {found}, which answers "
               f"with mod_status's page: give --url {found}" if found else
               "give --url the address and port of Apache's Listen directive (or, with a "
               "proxy in front, let it pass the status page through to Apache)")
        if not status:  # no HTTP: the fetch's own words, then who it was
            error = str(page.error)
            report.add(FAIL, topic, f"{error}{' ' if error.endswith('?') else '; '}the "
                       f"process listening on {where} is {other}, not Apache; {fix}")
            return
        said = f"{url} answers with a page that is not mod_status's{_title(page.body)}" \
            if status == 200 else f"{url} answers HTTP {status}"
        report.add(FAIL, topic, f"{said}, but not from Apache: the process listening on "
                   f"{where} is {other}; {fix}")
    elif status in (301, 302, 303, 307, 308):
        from urllib.parse import urljoin

        target = urljoin(url, page.location)
        plain = target.split("?", 1)[0]
        if plain.rstrip("/") == fetcher.target.url.rstrip("/") and plain.endswith("/"):
            fix = f"give --url {plain} (with the trailing slash Apache asks for)"
        elif plain.startswith("https:") and url.startswith("http:"):
            fix = (f"Apache sends http to https: give --url {plain} (and --ca-file for a "
                   "self-signed certificate)")
        else:
            fix = f"give --url {plain}"
        report.add(FAIL, topic, f"{url} answers HTTP {status} (a redirect to "
                   f"{page.location}); the exporter does not follow redirects, so that "
                   f"credentials never go elsewhere: {fix}")
    elif status == 403:
        if section is not None:
            rules = section.rules() or "no Require line"
            fix = (f"<Location {section.arg}> at {section.where} allows only: {rules}; "
                   "add 'Require local' there (or 'Require ip 127.0.0.1 ::1') and reload "
                   "Apache")
        else:
            fix = (f"allow this host in the <Location {path}> that has 'SetHandler "
                   "server-status': 'Require local', then reload Apache")
        report.add(FAIL, topic, f"{url} answers HTTP 403 Forbidden: {fix}")
    elif status == 401:
        report.add(FAIL, topic, f"{url} answers HTTP 401: it wants a login; give --user "
                   "and the password by --password-file, or allow this host without one "
                   "('Require local' in the <Location>)")
    elif status == 404:
        fix = ("load mod_status (a2enmod status) and give it a <Location> with 'SetHandler "
               "server-status'")
        served = conf.status_paths() if conf is not None else []
        here = [w for p, w in served if p == path]
        scheme, rest = fetcher.target.url.split("://", 1)
        elsewhere = f"{scheme}://{rest.split('/', 1)[0]}{served[0][0]}" if served else ""
        if conf is not None and served and \
                not conf.modules & {"status_module", "mod_status.c"}:
            fix = (f"'SetHandler server-status' at {(here or [served[0][1]])[-1]} needs "
                   "mod_status, but no LoadModule status_module is in the configuration "
                   "Apache runs: a2enmod status (or LoadModule status_module), then "
                   "restart Apache" + ("" if here else f", and give --url {elsewhere}"))
        elif here:
            # The configuration serves the page at this very path: giving
            # the same --url again cannot be the fix.
            fix = (f"the configuration has 'SetHandler server-status' for it at "
                   f"{here[-1]}, yet Apache answers 404: reload Apache if that was "
                   "added since it started, else look for what sends the request "
                   "elsewhere (RewriteRule, ProxyPass, Alias)")
        elif served:
            fix = "Apache serves it at " + ", ".join(f"{p} ({w})" for p, w in served) + \
                f": give --url {elsewhere}"
        report.add(FAIL, topic, f"{url} answers HTTP 404: no status page at {path}; {fix}")
    elif status == 200 and page.body is not None:
        report.add(FAIL, topic, _not_status(url, page.body, path, conf))
    elif page.error and "refused" in page.error and not page.status:
        report.add(FAIL, topic, f"connection to {where} refused: Apache is not running, "
                   f"or it does not listen there; {_refused_fix(args, fetcher.target)}")
    else:
        report.add(FAIL, topic, page.error or f"{url}: no answer")


def _not_status(url: str, body: bytes, path: str, conf: Optional[StatusConfig]) -> str:
    """A 200 that is not mod_status's page: an HTML page (the wrong path, or a
    CMS/proxy answering for everything) or something else."""
    head = body[:4096]
    shown = _title(body)
    fix = "point --url at the <Location> that has 'SetHandler server-status'"
    if conf is not None and conf.status_paths():
        fix += " (" + ", ".join(f"{p} at {w}" for p, w in conf.status_paths()) + ")"
    elif path in ("", "/"):
        fix += ", usually /server-status"
    if b"<" in head[:200]:
        if b"Apache Status" in head or b"Server Version" in body:
            return (f"{url} answers with mod_status's HTML page, not its ?auto text: "
                    "something between (a proxy, a rewrite) drops the query; let ?auto "
                    "through to Apache")
        return f"{url} answers with an HTML page that is not mod_status's{shown}: {fix}"
    return f"{url} answers 200, but not with mod_status's page: {fix}"


def _title(body: Optional[bytes]) -> str:
    """" (title 'TEXT')" of an HTML page's first 4 KiB, or ''."""
    title = re.search(rb"<title[^>]*>([^<]{0,200})", (body or b"")[:4096], re.I)
    return f" (title {title.group(1).decode('latin-1').strip()!r})" if title else ""


def _refused_fix(args: argparse.Namespace, target: Target) -> str:
    """What to do about a refused connection. A URL is suggested only when it
    was asked and answered with mod_status's page: one from the Listen
    directives of --ports-config when that option is given (the machine's
    own configuration is not read for a URL the operator gave)."""
    where = hostport(*host_port(target.url))
    plain = (f"check that Apache runs (systemctl status apache2) and that its "
             f"configuration has a Listen directive for {where}")
    candidate, asked = _listen_candidate(args, target)
    if candidate:
        return (f"a Listen directive of {args.ports_config} gives {candidate}, "
                f"which answers with mod_status's page: give --url {candidate}")
    if asked:
        plain += f" ({', '.join(asked)}, from {args.ports_config}, did not answer with a " \
            "status page either)"
    return plain


def _listen_candidate(args: argparse.Namespace,
                      target: Target) -> Tuple[Optional[str], List[str]]:
    """(a URL from the Listen directives of --ports-config, on another address
    than the target's, that answers with mod_status's page, or None; the URLs
    asked in vain). Nothing is asked without --ports-config."""
    if not args.ports_config:
        return None, []
    from urllib.parse import urlsplit

    from apache_metrics_exporter.collect.discovery import discover_urls

    try:
        found = discover_urls(args.ports_config)
    except UsageError:
        return None, []
    path = _path(target.url)
    asked: List[str] = []
    for listen in found:
        if host_port(listen) == host_port(target.url):
            continue  # the URL itself (discovered there, or the same address)
        base = urlsplit(listen)
        for candidate in dict.fromkeys((base._replace(path=path).geturl(), listen)):
            if _answers(target, candidate):
                return candidate, asked
            asked.append(candidate)
    return None, asked


def _answers(target: Target, url: str) -> bool:
    """Whether ``url`` answers with mod_status's ?auto page, asked with the
    target's TLS settings but none of its credentials, within PROBE_TIMEOUT."""
    fetcher = _Fetcher(Target(url=url, timeout=min(target.timeout, PROBE_TIMEOUT),
                              max_bytes=target.max_bytes, ca_file=target.ca_file,
                              insecure=target.insecure))
    try:
        return fetch_auto(fetcher).auto is not None
    finally:
        fetcher.close()


def report_pages(report: Report, auto: AutoPage, html_body: Optional[bytes],
                 html_error: Optional[str], html_status: int, workers: Optional[Sequence[Any]],
                 url: str, conf: Optional[StatusConfig]) -> None:
    """The HTML page, ExtendedStatus and the worker table."""
    if html_body is not None:
        report.add(OK, "HTML page", f"{url} answers with mod_status's HTML page")
    else:
        # Without ExtendedStatus a collection does not ask for it.
        level = FAIL if auto.extended else WARN
        report.add(level, "HTML page", f"{html_error or url + ': no answer'}; a collection "
                   "reads it for the worker table" + (", so it reports Apache down"
                                                      if auto.extended else ""))
    if auto.extended:
        report.add(OK, "ExtendedStatus", "On: totals (accesses, traffic, CPU), rates and "
                   "the worker table are reported")
    else:
        where = ""
        if conf is not None and conf.extended_off:
            where = f" (ExtendedStatus Off at {conf.extended_off})"
        report.add(WARN, "ExtendedStatus", "Off: only the scoreboard and busy/idle workers "
                   "are reported; lost are Total Accesses/kBytes/Duration, CPU, request "
                   "and traffic rates, the worker table (hanging workers, longest request, "
                   "per-vhost figures) and the reaper's --max-time; fix: 'ExtendedStatus "
                   f"On' in Apache's global configuration{where}, then reload Apache")
        return
    if workers is not None:
        report.add(OK, "worker table", f"{len(workers)} slots listed (Apache leaves out "
                   "the slots that never served a request): hanging "
                   "workers, the longest request and per-vhost figures are reported")
    elif html_body is not None:
        report.add(WARN, "worker table", f"{url} has no worker table (ExtendedStatus On "
                   "but no table: a page rewritten on the way?); hanging workers and "
                   "worker counts are not reported")


def report_parent(report: Report, parent: Parent, exe_names: Sequence[str]) -> None:
    """Which Apache is proven, or why not and what to give."""
    topic = "Apache process"
    if parent.pid is not None:
        from apache_metrics_exporter.collect import procfs

        try:
            exe = " ".join(procfs.cmdline(parent.pid)[:1])
        except (procfs.NoProcess, procfs.Denied):
            exe = ""
        report.add(OK, topic, f"PID {parent.pid}{f' ({exe})' if exe else ''}, proven: "
                   f"{parent.reason}")
        return
    fix = ""
    if "--pid-file" not in parent.reason:
        found = next((p for p in PID_FILES if os.path.isfile(p)), None)
        if os.geteuid() != 0:
            fix = "; run as root" + (f", or give --pid-file {found}" if found else "")
        elif found and "loopback" in parent.reason:
            fix = f"; give --pid-file {found} if it is this host's Apache"
    report.add(WARN, topic, f"not proven, so no process figures (memory, mod_wsgi "
               f"groups) and no reaper: {parent.reason}{fix}")


def report_user(report: Report, parent_pid: Optional[int]) -> None:
    """What this user may see, and what the reaper needs."""
    from apache_metrics_exporter.collect import procfs

    uid = os.geteuid()
    if uid == 0:
        report.add(OK, "this user", "root: every process, PSS/USS memory (--memory), and "
                   "the reaper can act")
        return
    hidden = _hidepid()
    if hidden:
        report.add(WARN, "this user", f"/proc is mounted with {hidden}: other users' "
                   "processes are hidden, so Apache cannot be proven; run as root")
    elif parent_pid is None:
        report.add(WARN, "this user", f"uid {uid} may not read other users' open files "
                   "and memory maps (/proc/PID/fd, smaps_rollup): Apache is proven only "
                   "with --pid-file, and --memory pss/uss fall back to RSS; run as root")
    children = []
    if parent_pid is not None:
        try:
            children = procfs.children(parent_pid)
        except (procfs.NoProcess, procfs.Denied):
            children = []
    owners = set()
    for pid in children[:50]:
        try:
            owners.add(os.stat(f"{procfs.PROC}/{pid}").st_uid)
        except OSError:
            continue
    if children:
        try:
            procfs.pss_uss(children[0])
            report.add(OK, "this user", f"uid {uid} may read the workers' PSS/USS "
                       "(--memory pss/uss)")
        except procfs.Denied:
            report.add(WARN, "this user", f"uid {uid} may not read Apache's workers' "
                       "smaps_rollup: --memory pss/uss fall back to RSS; run as root or as "
                       "Apache's user for them")
        except procfs.NoProcess:
            pass
    if owners and owners <= {uid}:
        report.add(OK, "reaper", f"Apache's workers run as this user (uid {uid}): the "
                   "reaper may signal them")
    else:
        who = ", ".join(_user(u) for u in sorted(owners)) if owners else "another user"
        report.add(WARN, "reaper", f"apache-worker-reaper must run as root: Apache's "
                   f"workers run as {who}, and this user (uid {uid}) may not signal them "
                   "(contrib/systemd/apache-worker-reaper.service runs it as root)")


def _hidepid() -> str:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read(1 << 20)
    except OSError:
        return ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/proc" and " - proc " in line:
            for option in line.split(" - proc ", 1)[1].split()[-1].split(","):
                if option.startswith("hidepid=") and option not in ("hidepid=0",
                                                                    "hidepid=off"):
                    return option
    return ""


def _user(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


# --- Apache's configuration ---------------------------------------------------------------

class Section:
    """A ``<Location>``/``<LocationMatch>`` and what it says about the status page."""

    def __init__(self, kind: str, arg: str, where: str, vhost: str) -> None:
        self.kind, self.arg, self.where, self.vhost = kind, arg, where, vhost
        self.handler = ""
        # (container id or None, words after Require/Allow, where)
        self.access: List[Tuple[Optional[str], List[str], str]] = []
        self.setenv: List[str] = []

    def matches(self, path: str) -> bool:
        arg = self.arg
        if self.kind == "locationmatch" or arg.startswith("~"):
            pattern = arg[1:].strip().strip("\"'") if arg.startswith("~") else arg
            try:
                return re.search(pattern, path) is not None
            except re.error:
                return False
        if any(c in arg for c in "*?["):
            import fnmatch

            return fnmatch.fnmatchcase(path, arg) or fnmatch.fnmatchcase(path, arg + "*")
        return path.startswith(arg)  # Apache compares the prefix, /server-statusx too

    def rules(self) -> str:
        return "; ".join(" ".join(words) for _c, words, _w in self.access)

    def verdict(self) -> Tuple[str, str]:
        """(class, the lines that decide it): who may read the page by these
        lines: open, wide, unknown, login, local, denied; '' when none."""
        groups: Dict[Optional[str], List[Tuple[str, str]]] = {}
        for container, words, where in self.access:
            groups.setdefault(container, []).append((_classify(words), f"{' '.join(words)} "
                                                    f"at {where}"))
        out: List[Tuple[str, str]] = []
        for container, found in groups.items():
            found = [f for f in found if f[0] != "neutral"]
            if not found:
                continue
            if container is not None and container.startswith("requireall"):
                out.append(min(found, key=lambda f: RANK[f[0]]))
            else:
                out.extend(found)
        if not out:
            return "", ""
        best = max(out, key=lambda f: RANK[f[0]])
        return best


RANK = {"denied": 0, "local": 1, "login": 2, "unknown": 3, "wide": 4, "open": 5}
_LOGIN = ("valid-user", "user", "group", "ldap-user", "ldap-group", "ldap-attribute",
          "ldap-dn", "ldap-filter", "file-owner", "file-group", "dbd-group", "dbm-group")


def _loopback(word: str) -> bool:
    import ipaddress

    w = word.lower().strip("[]")
    if w in ("localhost", "ip6-localhost"):
        return True
    if re.fullmatch(r"127(\.\d{1,3}){0,3}\.?", w):
        return True  # Apache's partial addresses: 127, 127.0.0
    try:
        net = ipaddress.ip_network(w, strict=False)
    except ValueError:
        return False
    if isinstance(net, ipaddress.IPv4Network):
        return net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
    return net == ipaddress.IPv6Network("::1/128")


def _classify(words: List[str]) -> str:
    """Who one Require (or 2.2 Allow/Deny) line lets in."""
    w = [x.lower() for x in words]
    if w[:1] == ["require"]:
        w = w[1:]
    if not w:
        return "unknown"
    if w[0] in ("allow", "deny"):  # Allow from ..., Deny from ...
        hosts = w[2:] if len(w) > 1 and w[1] == "from" else w[1:]
        if w[0] == "deny":
            return "denied" if "all" in hosts else "neutral"
        if "all" in hosts:
            return "open"
        return "local" if hosts and all(_loopback(h) for h in hosts) else "wide"
    if w[0] == "not":
        return "neutral"
    if w[0] == "all":
        return "open" if w[1:2] == ["granted"] else "denied"
    if w[0] == "local":
        return "local"
    if w[0] in ("ip", "host", "forward-dns"):
        return "local" if w[1:] and all(_loopback(h) for h in w[1:]) else "wide"
    if w[0] in _LOGIN:
        return "login"
    return "unknown"


class LogLine(NamedTuple):
    """A CustomLog (or TransferLog) directive."""

    target: str  # a path as written, "|program", or "syslog:..."
    format: str
    condition: str  # "env=!dontlog", "expr=...", ""
    where: str
    vhost: str


class StatusConfig(ApacheConfig):
    """Apache's configuration, as discovery reads it, with what --check needs:
    the <Location> sections, ExtendedStatus, CustomLog, SetEnvIf."""

    def __init__(self, server_root: str, environ: Optional[Dict[str, str]] = None) -> None:
        super().__init__(server_root)
        # Apache's ${VAR} is also the environment (Debian's envvars: APACHE_LOG_DIR).
        self.defines.update(environ or {})
        self.locations: List[Section] = []
        self._by_place: Dict[Tuple[str, int], Section] = {}
        self.extended_off = ""
        self.logs: List[LogLine] = []
        self.setenvifs: List[Tuple[str, List[str], str]] = []  # (directive, args, where)
        self.buffered = False
        # WSGIDaemonProcess: (group, its display-name or None, where)
        self.wsgi_daemons: List[Tuple[str, Optional[str], str]] = []

    def _section(self) -> Tuple[Optional[Section], Optional[str], str]:
        """(the innermost Location, the innermost Require container in it, vhost)."""
        location, container, vhost = None, None, ""
        for kind, arg, path, line in self.sections:
            if kind in ("location", "locationmatch"):
                key = (path, line)
                location = self._by_place.get(key)
                if location is None:
                    location = Section(kind, arg, f"{path}:{line}", vhost)
                    self._by_place[key] = location
                    self.locations.append(location)
                container = None
            elif kind in ("requireall", "requireany", "requirenone") and location:
                container = f"{kind}@{path}:{line}"
            elif kind == "virtualhost":
                vhost = arg
        return location, container, vhost

    def directive(self, name: str, args: List[Optional[str]]) -> None:
        where = f"{self.position[0]}:{self.position[1]}"
        words = [a if a is not None else "${?}" for a in args]
        if name in ("sethandler", "require", "allow", "deny", "setenv"):
            location, container, _vhost = self._section()
            if location is None:
                return
            if name == "sethandler" and words:
                location.handler = words[0].lower()
            elif name == "setenv" and words:
                location.setenv.append(words[0])
            elif name in ("allow", "deny"):
                location.access.append((container, [name.capitalize(), *words], where))
            elif name == "require" and container and container.startswith("requirenone"):
                location.access.append((container, ["Require", "not", *words], where))
            elif name == "require":
                location.access.append((container, ["Require", *words], where))
        elif name == "extendedstatus" and words:
            self.extended_off = where if words[0].lower() == "off" else ""
        elif name in ("customlog", "transferlog") and words:
            vhost = next((a for k, a, _p, _l in self.sections if k == "virtualhost"), "")
            fmt = words[1] if name == "customlog" and len(words) > 1 else ""
            cond = words[2] if len(words) > 2 else ""
            self.logs.append(LogLine(words[0], fmt, cond, where, vhost))
        elif name in ("setenvif", "setenvifnocase") and len(words) >= 3:
            self.setenvifs.append((name, words, where))
        elif name == "bufferedlogs" and words:
            self.buffered = words[0].lower() == "on"
        elif name == "wsgidaemonprocess" and words:
            display = None
            for option in words[1:]:
                key, sep, value = option.partition("=")
                if sep and key.lower() == "display-name":
                    display = value
            self.wsgi_daemons.append((words[0], display, where))

    # -- questions ---------------------------------------------------------------------
    def status_section(self, path: str) -> Optional[Section]:
        """The <Location> whose access rules apply to ``path`` (the last
        matching one with rules: Apache's default AuthMerging Off), preferring
        the one that serves the status page."""
        matching = [s for s in self.locations if s.matches(path)]
        with_rules = [s for s in matching if s.access]
        if with_rules:
            return with_rules[-1]
        handlers = [s for s in matching if s.handler == "server-status"]
        return handlers[-1] if handlers else None

    def status_paths(self) -> List[Tuple[str, str]]:
        """(path, where) of every plain <Location> with SetHandler server-status."""
        return [(s.arg, s.where) for s in self.locations
                if s.handler == "server-status" and s.kind == "location"
                and not s.arg.startswith("~")]

    def path_of(self, target: str) -> str:
        return target if target.startswith("/") else os.path.join(self.server_root, target)


def apache_config(parent_pid: Optional[int]) -> Optional[StatusConfig]:
    """The configuration the proven parent runs; None without one (nothing
    else is known to be the configuration of the Apache that answers)."""
    if parent_pid is None:
        return None
    from apache_metrics_exporter.collect.processes import running_config

    environ = _environ(parent_pid)
    conf = running_config(parent_pid, lambda root: StatusConfig(root, environ))
    if conf is None or not conf.files:
        return None
    return conf


def _environ(pid: int) -> Dict[str, str]:
    """The APACHE_* variables of the parent's environment (Debian's envvars
    set APACHE_LOG_DIR there); empty when it cannot be read."""
    from apache_metrics_exporter.collect import procfs

    try:
        with open(f"{procfs.PROC}/{pid}/environ", "rb") as fh:
            data = fh.read(1 << 16)
    except OSError:
        return {}
    out = {}
    for item in data.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep and key.startswith("APACHE_"):
            out[key] = value
    return out


def report_access(report: Report, conf: Optional[StatusConfig], path: str) -> None:
    """Whether the configuration's access rules let more than this host read
    the page."""
    topic = "access rules"
    if conf is None:
        report.add(WARN, topic, "Apache's configuration is not known (the Apache that "
                   "answers is not proven), so its Require lines are not checked")
        return
    section = conf.status_section(path)
    if section is None:
        report.add(WARN, topic, f"no <Location> for {path} with 'SetHandler server-status' "
                   f"in {conf.files[0]} and its includes")
        return
    kind, why = section.verdict()
    place = f"<Location {section.arg}> at {section.where}"
    if not kind:
        report.add(WARN, topic, f"{place} has no Require line: the <Directory> rules of "
                   "the DocumentRoot decide (often 'Require all granted'); add 'Require "
                   "local' to it")
    elif kind == "open":
        report.add(WARN, topic, f"{place} lets every host read the page ({why}): client "
                   "addresses, URLs and virtual hosts of every request in progress; "
                   "'Require local' there")
    elif kind == "wide":
        report.add(WARN, topic, f"{place} lets more than this host read the page ({why}); "
                   "fine for your monitoring hosts, else 'Require local'")
    elif kind == "unknown":
        report.add(WARN, topic, f"{place}: who may read the page depends on {why}; "
                   "'Require local' makes it certain")
    elif kind == "denied":
        report.add(WARN, topic, f"{place} refuses everyone ({why}); 'Require local' "
                   "lets the exporter in")
    else:
        report.add(OK, topic, f"{place} allows this host only"
                   f"{' or a login' if kind == 'login' else ''} ({why})")


def report_wsgi(report: Report, conf: Optional[StatusConfig]) -> None:
    """Whether each WSGIDaemonProcess names its processes ``(wsgi:GROUP)``
    (``display-name=%{GROUP}``), the one title its daemons are told apart by;
    without it they count as native workers. Nothing without daemon groups."""
    if conf is None or not conf.wsgi_daemons:
        return
    topic = "mod_wsgi"
    plain = 0
    for group, display, where in conf.wsgi_daemons:
        if display is not None and (display == "%{GROUP}" or display.startswith("(wsgi:")):
            plain += 1
            continue
        has = (f"display-name={display} (its processes are titled {display!r})"
               if display is not None else "no display-name")
        report.add(WARN, topic, f"WSGIDaemonProcess {group} at {where} has {has}: its "
                   "processes cannot be told from native workers, so they are counted "
                   "as native workers, its group has no memory figures of its own and "
                   "the reaper's --max-memory-wsgi never applies to it; add "
                   "display-name=%{GROUP} to that line and reload Apache")
    if plain == len(conf.wsgi_daemons):
        report.add(OK, topic, f"{plain} WSGIDaemonProcess group"
                   f"{'s' if plain > 1 else ''}, each with display-name=%{{GROUP}}: "
                   "reported per group, and --max-memory-wsgi applies")


# --- exposure -------------------------------------------------------------------------------

def _host_addresses() -> List[str]:
    """This host's (this network namespace's) non-loopback addresses, IPv6
    link-local ones left out (they need a zone)."""
    import ipaddress
    import socket

    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            text = a.address.split("%", 1)[0]
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if ip.is_loopback or (ip.version == 6 and ip.is_link_local):
                continue
            if text not in out:
                out.append(text)
    return out


def listen_points(parent_pid: Optional[int], port: int) -> List[Tuple[str, int]]:
    """(address, port) of the non-loopback places where the proven Apache (or,
    unproven, anything on the URL's port) accepts connections; a wildcard
    listener stands for every address of this host."""
    import ipaddress
    import socket

    from apache_metrics_exporter.collect import procfs

    listeners = procfs.tcp_listeners() or []
    inodes: Optional[set] = None
    if parent_pid is not None:
        try:
            inodes = set()
            for pid in [parent_pid, *procfs.children(parent_pid)]:
                try:
                    inodes |= procfs.socket_inodes(pid)
                except procfs.NoProcess:
                    continue
        except procfs.Denied:
            inodes = None
    chosen = [(raw, p) for raw, p, inode in listeners
              if (inode in inodes if inodes is not None else p == port)]
    host: Optional[List[str]] = None
    out: List[Tuple[str, int]] = []
    for raw, p in sorted(set(chosen), key=lambda x: (x[1], x[0])):
        if not raw.strip(b"\0"):
            if host is None:
                host = _host_addresses()
            v6 = len(raw) == 16
            out.extend((a, p) for a in host if v6 or ":" not in a)
            continue
        text = socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)
        ip = ipaddress.ip_address(text)
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None:
            ip, text = mapped, str(mapped)
        if not ip.is_loopback and not (ip.version == 6 and ip.is_link_local):
            out.append((text, p))
    seen: List[Tuple[str, int]] = []
    for point in out:
        if point not in seen:
            seen.append(point)
    return seen


def probe(target: Target, address: str, port: int, path: str) -> str:
    """What an anonymous client gets at ``address``:``port``: 'answers', 'HTTP
    403', ..., or 'no answer'. No credentials are sent; TLS is not verified
    (the question is whether the page is there, not whose certificate)."""
    url_port = host_port(target.url)[1]
    scheme = target.url.split(":", 1)[0] if port == url_port else (
        "https" if port == 443 else "http")
    host = hostport(address)
    query = target.url.split("?", 1)[1] if "?" in target.url else ""
    url = f"{scheme}://{host}:{port}{path}" + (f"?{query}" if query else "")
    headers = tuple(h for h in target.headers if h[0].lower() == "host")
    fetcher = _Fetcher(Target(url=url, timeout=min(target.timeout, PROBE_TIMEOUT),
                              max_bytes=target.max_bytes, headers=headers,
                              insecure=scheme == "https"))
    try:
        page = fetch_auto(fetcher)
    finally:
        fetcher.close()
    if page.auto is not None:
        return "answers"
    if page.status:
        return f"HTTP {page.status}"
    return "no answer"


def report_exposure(report: Report, target: Target, fetcher: _Fetcher,
                    parent_pid: Optional[int], conf: Optional[StatusConfig],
                    path: str) -> None:
    """Whether the page answers on this host's non-loopback addresses, and
    what the configuration makes of that."""
    topic = "exposure"
    points = listen_points(parent_pid, fetcher.port)
    if not points:
        if parent_pid is None:
            report.add(OK, topic, f"nothing listens on port {fetcher.port} of this host's "
                       "other addresses (Apache is not proven, so its other ports were not "
                       "looked at)")
        else:
            report.add(OK, topic, "Apache listens on loopback addresses only: other hosts "
                       "cannot reach the status page")
        return
    skipped = len(points) - MAX_PROBES
    results = [(a, p, probe(target, a, p, path)) for a, p in points[:MAX_PROBES]]
    open_at = [hostport(a, p) for a, p, r in results if r == "answers"]
    more = f" ({skipped} more addresses not asked)" if skipped > 0 else ""
    if not open_at:
        shown = ", ".join(f"{hostport(a, p)} {r}" for a, p, r in results[:6])
        report.add(OK, topic, f"the status page does not answer on this host's other "
                   f"addresses ({shown}){more}")
        return
    where = ", ".join(open_at[:6]) + (" ..." if len(open_at) > 6 else "")
    section = conf.status_section(path) if conf is not None else None
    kind, why = section.verdict() if section is not None else ("", "")
    place = f"<Location {section.arg}> at {section.where}" if section else ""
    if kind == "open":
        report.add(FAIL, topic, f"the status page answers on {where}, and {place} lets "
                   f"every host read it ({why}): anyone who reaches these addresses sees "
                   "client addresses and URLs; put 'Require local' there, or Listen on "
                   f"loopback only{more}")
    elif kind in ("local", "login"):
        report.add(OK, topic, f"the status page answers on {where} to this host itself; "
                   f"{place} refuses other hosts ({why}){more}")
    elif kind == "wide":
        report.add(WARN, topic, f"the status page answers on {where}, and {place} lets "
                   f"other hosts read it ({why}); fine for your monitoring hosts, else "
                   f"'Require local'{more}")
    else:
        report.add(WARN, topic, f"the status page answers on {where}; other hosts may "
                   "read it too unless a firewall stops them"
                   + (f" ({place}: {why or 'no Require line'})" if place else "")
                   + f"; 'Require local' in its <Location> makes sure{more}")


# --- the access log --------------------------------------------------------------------------

def _env_set(conf: StatusConfig, path: str, peer: str) -> Dict[str, Tuple[bool, str]]:
    """The variables SetEnvIf (and SetEnv in a matching <Location>) set for
    the exporter's request: name -> (set, where)."""
    request = {"request_uri": path, "user-agent": USER_AGENT, "remote_addr": peer,
               "request_method": "GET", "request_protocol": "HTTP/1.1"}
    out: Dict[str, Tuple[bool, str]] = {}
    for directive, words, where in conf.setenvifs:
        value = request.get(words[0].lower())
        if value is None:
            continue
        flags = re.I if directive == "setenvifnocase" else 0
        try:
            if re.search(words[1], value, flags) is None:
                continue
        except re.error:
            continue
        for var in words[2:]:
            name = var.partition("=")[0]
            if name.startswith("!"):
                out[name[1:]] = (False, where)
            else:
                out[name] = (True, where)
    for section in conf.locations:
        if section.matches(path):
            for name in section.setenv:
                out[name] = (True, section.where)
    return out


def report_access_log(report: Report, fetcher: _Fetcher, conf: Optional[StatusConfig],
                      path: str, answering: bool) -> None:
    """Whether collections leave lines in Apache's access logs, with the lines
    that keep them out."""
    topic = "access log"
    if conf is None:
        report.add(WARN, topic, "Apache's configuration is not known, so its CustomLog "
                   "lines are not checked")
        return
    if not conf.logs:
        report.add(OK, topic, "Apache's configuration has no CustomLog: collections "
                   "leave no access log lines")
        return
    env = _env_set(conf, path, fetcher.peer or "127.0.0.1")
    logged: List[LogLine] = []
    for log in conf.logs:
        cond = log.condition
        if cond.startswith("env=!"):
            if not env.get(cond[5:], (False, ""))[0]:
                logged.append(log)
        elif cond.startswith("env="):
            if env.get(cond[4:], (False, ""))[0]:
                logged.append(log)
        elif not cond.startswith("expr="):
            logged.append(log)
    seen = _marked(fetcher, conf, [log for log in conf.logs if not log.target.startswith(
        ("|", "syslog:"))]) if answering else {}
    found = [log for log in conf.logs if seen.get(log.target) is True]
    absent = [log for log in conf.logs if seen.get(log.target) is False]
    logged = [log for log in logged if log not in absent] + [
        log for log in found if log not in logged]
    if not answering and conf.status_paths():
        # --url is wrong (the status page check says so): the advice is for
        # the path the configuration serves mod_status at, not that one.
        path = conf.status_paths()[0][0]
    fix = (f"SetEnvIf Request_URI \"^{re.escape(path)}\" dontlog (mod_setenvif) and "
           "'env=!dontlog' at the end of ")
    if logged:
        names = ", ".join(f"{conf.path_of(log.target)} (CustomLog at {log.where})"
                          for log in logged[:4])
        proof = "this check's request was found there" if found else \
            "by the configuration"
        lines = "; ".join(f"CustomLog {log.target} {log.format or '...'} env=!dontlog"
                          for log in logged[:2])
        report.add(WARN, topic, f"every collection adds lines to {names} ({proof}): log "
                   "rotation can push real requests out; keep them out with: "
                   f"{fix}each line: {lines}")
        return
    checked = " (checked: this check's request is not there)" if absent else ""
    keep = "; ".join(sorted({f"{log.condition} at {log.where}" for log in conf.logs
                             if log.condition}))
    report.add(OK, topic, f"collections are kept out of the access log ({keep}){checked}")


def _marked(fetcher: _Fetcher, conf: StatusConfig, logs: List[LogLine]) -> Dict[str, bool]:
    """One request with a unique marker, then whether each readable log file
    (a regular file) got a line with it: target -> found."""
    import secrets
    import time

    files: Dict[str, Tuple[str, int]] = {}
    for log in logs:
        real = conf.path_of(log.target)
        try:
            st = os.stat(real)
        except OSError:
            continue
        import stat as stat_

        if stat_.S_ISREG(st.st_mode) and os.access(real, os.R_OK):
            files[log.target] = (real, st.st_size)
    if not files:
        return {}
    marker = "ame-check=" + secrets.token_hex(8)
    url = fetcher.target.auto_url + "&" + marker
    fetcher.fetch(url)
    # On a kept-alive connection Apache logs a request before it reads the
    # next: a second answer means the first one's line is written.
    kept = fetcher._conn is not None
    if kept:
        fetcher.fetch(fetcher.target.auto_url)
    deadline = time.monotonic() + (0.2 if kept else LOG_WAIT)
    if conf.buffered:
        deadline = time.monotonic()
    out: Dict[str, bool] = {}
    while True:
        for target, (real, size) in files.items():
            if out.get(target):
                continue
            try:
                with _open_regular(real) as fh:
                    fh.seek(size)
                    out[target] = marker.encode() in fh.read(LOG_TAIL)
            except OSError:
                continue
        if all(out.get(t) for t in files) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if conf.buffered:  # BufferedLogs On: a line may come much later
        return {t: True for t, v in out.items() if v}
    return out


def _open_regular(path: str, follow: bool = True) -> BinaryIO:
    """``path`` opened for reading if it is a regular file when opened (OSError
    otherwise): a file checked a moment before may since have been swapped
    for a FIFO, whose open would block for ever, or a device."""
    import stat as stat_

    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        if not stat_.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# --- files -------------------------------------------------------------------------------------

def check_files(report: Report, args: argparse.Namespace) -> None:
    """Config files (trust.py's rule), secret files, state and spool (paths.py's rule)."""
    check_config_files(report, args)
    check_secret_files(report, args)
    from apache_metrics_exporter.cli import check_distinct_files

    try:
        check_distinct_files(args)  # (the run refuses what this FAILs)
    except UsageError as exc:
        report.add(FAIL, "state files", str(exc))
    from apache_metrics_exporter.paths import REAPER_STATE
    from apache_metrics_exporter.restarts import DEFAULT_PATH

    # Only the default state files' directory is made on first use (a
    # mistyped path creates nothing); the spool makes its whole path.
    if args.collector_state:
        _state_path(report, args.collector_state, "collector state", writer=True,
                    makes_dir=args.collector_state == DEFAULT_PATH)
    _state_path(report, args.state_file, "reaper state", writer=os.geteuid() == 0,
                makes_dir=args.state_file == REAPER_STATE)
    if args.format == "influxdb":
        _state_path(report, args.spool_dir, "spool directory", writer=True, directory=True)
    if args.output != "-":
        from apache_metrics_exporter.output import check_output_path

        try:
            check_output_path(args.output)
            report.add(OK, "output", f"{args.output}: its directory exists")
        except UsageError as exc:
            report.add(FAIL, "output", str(exc))


def check_config_files(report: Report, args: argparse.Namespace) -> None:
    from apache_metrics_exporter.config import CONFIG_FILES
    from apache_metrics_exporter.trust import locate, read_trusted

    given = [args.config_file] if getattr(args, "config_file", None) else []
    read = 0
    for path in given + [os.path.expanduser(p) for p in CONFIG_FILES]:
        try:
            real, st = locate(path, "config file")
            data = read_trusted(path, "config file")
        except FileNotFoundError:
            continue
        except UsageError as exc:
            report.add(FAIL, "config file", str(exc))
            continue
        except OSError as exc:
            report.add(WARN, "config file", f"{path}: {exc.strerror or exc}")
            continue
        read += 1
        mode = st.st_mode & 0o777
        keys = {line.partition("=")[0].strip().lower() for line in
                data.decode("utf-8", "replace").splitlines() if "=" in line}
        secrets = sorted(k for k in keys if k in SECRET_KEYS)
        if secrets and mode & 0o044:
            report.add(WARN, "config file", f"{path} holds {', '.join(secrets)} and is "
                       f"readable by others (mode {mode:04o}); run: chmod 600 {real}")
        else:
            report.add(OK, "config file", f"{path}: owner {_user(st.st_uid)}, mode "
                       f"{mode:04o}, trusted")
    if not read:
        report.add(OK, "config file", "none (options from the command line and "
                   "APACHE_METRICS_* variables)")


def check_secret_files(report: Report, args: argparse.Namespace) -> None:
    """The secret files the run would read, read the way it reads them
    (config.read_secret): FAIL where the run would stop (exit 2), WARN where
    other users may read one (or others write it). The token and the
    password of the push only with --format influxdb (and the password only
    with --influxdb-username), as writers/influxdb.py reads them."""
    from apache_metrics_exporter.config import read_secret

    files = []
    if args.password_file:  # unreadable, config.targets() stopped the check already
        files.append(("--password-file", args.password_file))
    if args.format == "influxdb":
        if args.influxdb_token_file:
            files.append(("--influxdb-token-file", args.influxdb_token_file))
        if args.influxdb_username and args.influxdb_password_file:
            files.append(("--influxdb-password-file", args.influxdb_password_file))
    for option, path in files:
        topic = "secret file"
        try:
            read_secret(path, option)
            st = os.lstat(path)
        except UsageError as exc:
            report.add(FAIL, topic, f"{exc}: the run stops there (exit 2); put the secret "
                       "on its first line, in a regular file the exporter's user can read "
                       "(e.g. chgrp telegraf; chmod 0640), and run --check as that user")
            continue
        except OSError as exc:
            report.add(FAIL, topic, f"{option} {path}: {exc.strerror or exc}")
            continue
        mode = st.st_mode & 0o777
        text = f"{option} {path}: owner {_user(st.st_uid)}, mode {mode:04o}"
        if mode & 0o004:
            report.add(WARN, topic, f"{text}: every user of this host can read it; run: "
                       f"chmod o-r {path}")
        elif mode & 0o022:
            report.add(WARN, topic, f"{text}: others can replace the secret in it; run: "
                       f"chmod go-w {path}")
        else:
            report.add(OK, topic, f"{text}, readable by this user")


def _state_path(report: Report, path: str, what: str, writer: bool,
                directory: bool = False, makes_dir: bool = True) -> None:
    """A state file or spool directory: trusted (paths.check) and, for the
    program that writes it, writable. ``makes_dir``: the program creates a
    missing directory for it (else a missing one is a WARN: the run fails)."""
    from apache_metrics_exporter import paths

    try:
        exists = paths.check(path, what, directory)
        real = paths.resolve(path, what)
    except OutputError as exc:
        report.add(FAIL, what, str(exc))
        return
    if exists:
        st = os.lstat(real)
        text = f"{path}: owner {_user(st.st_uid)}, mode {st.st_mode & 0o777:04o}, trusted"
        if writer and not os.access(real, os.W_OK):
            report.add(WARN, what, f"{text}, but this user cannot write it; run as its "
                       "owner or root")
        else:
            report.add(OK, what, text)
        return
    parent = os.path.dirname(real)
    if not makes_dir and not os.path.isdir(parent):
        report.add(WARN, what, f"{path} cannot be created: its directory {parent} does not "
                   "exist, and only the default path's directory is made on first use; "
                   f"create it (mkdir -p {parent}) or correct the path")
        return
    while parent != "/" and not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    if writer and not os.access(parent, os.W_OK | os.X_OK):
        import pwd

        try:
            owner = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            owner = str(os.geteuid())
        made = real if directory else os.path.dirname(real)
        if os.path.isdir(made) or not _only_root_makes(parent):
            # Never advise handing an existing directory - /var/lib - to a
            # user, nor one another user could make first: install -d on a
            # symlink to a directory chowns the link's target.
            fix = ("give a path in a directory this user can write (the file is replaced "
                   "whole, which needs the directory), or run as root")
        else:
            import shlex

            fix = (f"as root: install -d -o {shlex.quote(owner)} {shlex.quote(made)}; "
                   "or run as root")
        report.add(WARN, what, f"{path} does not exist and this user ({_user(os.geteuid())}) "
                   f"cannot create it in {parent}; {fix}")
    else:
        report.add(OK, what, f"{path} does not exist yet; it is created on first use")


def _only_root_makes(directory: str) -> bool:
    """Whether nobody but root can make or swap an entry of ``directory``
    (real, existing): it is root's and not writable by group or others, and
    every directory above is root's and not so writable, or sticky."""
    import stat

    nearest = True
    while True:
        try:
            st = os.lstat(directory)
        except OSError:
            return False
        open_to_others = st.st_mode & 0o022 and (nearest or not st.st_mode & stat.S_ISVTX)
        if st.st_uid != 0 or open_to_others:
            return False
        if directory == "/":
            return True
        directory, nearest = os.path.dirname(directory), False


# --- the --listen endpoint ----------------------------------------------------------------------

def check_endpoint(report: Report, args: argparse.Namespace, targets: List[Any],
                   exe_names: Tuple[str, ...]) -> None:
    """With --listen (or APACHE_METRICS_LISTEN, as the endpoint's unit sets
    it), the endpoint made as the run makes it - its addresses bound, the
    web configuration, TLS files and basic auth read - then closed at once,
    never served. A port that is taken is named with its holder: the old
    apache_exporter still running is the usual one when switching."""
    if not args.listen and not args.systemd_socket:
        return
    from apache_metrics_exporter import endpoint
    from apache_metrics_exporter.runconfig import run_config

    topic = "endpoint"
    if args.systemd_socket:
        report.add(OK, topic, "sockets are passed by systemd (--web-systemd-socket): "
                   "nothing to bind here; the web configuration is checked with the run")
        return
    try:
        listeners = endpoint.make_server(run_config(args, exe_names), targets)
    except UsageError as exc:
        report.add(*listen_failure(str(exc), exe_names))
        return
    try:
        for server in listeners.servers:
            host, port = server.server_address[:2]
            tls = server.socket.__class__.__name__ == "SSLSocket"
            handler = server.RequestHandlerClass
            auth = getattr(handler, "auth", None) is not None or bool(
                getattr(getattr(handler, "web", None), "users", None))
            report.add(OK, topic, f"would listen on {'https' if tls else 'http'}://"
                       f"{hostport(str(host), port)}{getattr(handler, 'metrics_path', '')}"
                       f" ({'TLS' if tls else 'no TLS'}, "
                       f"{'basic auth' if auth else 'no basic auth'})")
    finally:
        for server in listeners.servers:
            server.server_close()


def listen_failure(message: str, exe_names: Sequence[str] = (),
                   run: bool = False) -> Tuple[str, str, str]:
    """(level, topic, text) for an endpoint the run could not make: its own
    message, with the holder of a port that is taken and what to do; ``run``:
    for the run's own error line (endpoint.run_endpoint), not --check's."""
    found = re.search(r"cannot listen on (.+):(\d+): Address already in use", message)
    if found is None:
        return FAIL, "endpoint", message
    holder = _port_holder(int(found.group(2)))
    if holder is None:
        return FAIL, "endpoint", (f"{message}: another process listens there; stop it, or "
                                  "choose another --listen")
    name, pid = holder
    if "apache-metrics-exporter" in name or name == "apache-metrics-":
        return WARN, "endpoint", (f"{message}: apache-metrics-exporter (PID {pid}) listens "
                                  "there already - the running service, most likely " + (
                                      "(systemctl status apache-metrics-exporter-endpoint); "
                                      "stop it first, or choose another --listen" if run else
                                      "(a second copy could not start); its set-up was not "
                                      "checked further"))
    if name in exe_names:
        return FAIL, "endpoint", (f"{message}: Apache ({name}, PID {pid}) listens there; "
                                  "choose another --listen (apache_exporter's port is 9117)")
    fix = ("stop it (systemctl stop prometheus-apache-exporter; systemctl disable it), or "
           "choose another --listen" if "apache" in name and "exporter" in name
           else "stop it, or choose another --listen")
    return FAIL, "endpoint", f"{message}: {name!r} (PID {pid}) listens there; {fix}"


def _port_holder(port: int) -> Optional[Tuple[str, int]]:
    """(name, PID) of a process holding a listening socket on ``port``, None
    when none can be seen (another user's, or no right to look)."""
    from apache_metrics_exporter.collect import procfs
    from apache_metrics_exporter.collect.host import Host

    inodes = {inode for _address, inode, _queue, _limit in Host((port,)).listeners(port)}
    if not inodes:
        return None
    for pid in procfs.pids():
        try:
            if procfs.socket_inodes(pid) & inodes:
                # The program's file name (its command name is cut at 15
                # characters: "prometheus-apac"), and a script's after its
                # interpreter.
                argv = [os.path.basename(a) for a in procfs.cmdline(pid)[:3]]
                name = next((a for a in argv if "exporter" in a), None) \
                    or (argv[0] if argv else procfs.stat(pid).name)
                return name, pid
        except (procfs.NoProcess, procfs.Denied):
            continue
    return None


# --- the push target ---------------------------------------------------------------------------

def check_push(report: Report, args: argparse.Namespace) -> None:
    """With --format influxdb, the server the run pushes to, asked through
    the push's own client and settings (writers/influxdb.push_settings,
    push/client.InfluxPush: the same URL, TLS settings, timeout, token, org
    and bucket): /ping for reachability and version, then a write with no
    line, which needs no more than the write permission and stores nothing.
    What each server answers to it:

    - InfluxDB 2.x checks the token (401), the org and the bucket (404), the
      token's write permission on the bucket (403), and only then the body:
      400 "writing requires points" means all of them passed;
    - InfluxDB 1.8+ (/api/v2/write mapped onto /write): the credentials
      (401), the database (404), the user's write permission (403), the
      retention policy (500 "retention policy not found"), then 204;
    - InfluxDB 1.7 and older have no /api/v2/write: 404 "page not found";
    - VictoriaMetrics and other servers without buckets: 204 (401 with
      -httpAuth.* and wrong credentials).
    """
    if args.format != "influxdb":
        return
    from apache_metrics_exporter.push.client import InfluxPush, PushFailed
    from apache_metrics_exporter.push.spool import Spool
    from apache_metrics_exporter.writers import Settings
    from apache_metrics_exporter.writers.influxdb import push_settings

    topic = "InfluxDB"
    if not (args.influxdb_url or args.influxdb_org or args.influxdb_bucket):
        report.add(WARN, topic, "nothing to contact: no --influxdb-url, --influxdb-org nor "
                   "--influxdb-bucket given; a run with --format influxdb stops (exit 2) "
                   "until they are")
        return
    try:
        settings = push_settings(Settings.of(args))
    except UsageError as exc:
        if "--influxdb-token-file" in str(exc) or "--influxdb-password-file" in str(exc):
            # a secret file: its own FAIL line (check_secret_files) says so already
            report.add(WARN, topic, f"not contacted: the run cannot read its secret ({exc})")
        else:
            report.add(FAIL, topic, f"{exc}: the run stops there (exit 2)")
        return
    push = InfluxPush(settings, Spool(args.spool_dir, args.spool_max_bytes))
    try:
        try:
            version, build = push.ping()
        except PushFailed as exc:
            if not exc.status:
                report.add(FAIL, topic, _unreachable(args, settings.url, exc))
                return
            if exc.status == 400 and "https server" in exc.detail.lower():
                report.add(FAIL, topic, f"{settings.url} is an https server ({exc.detail}): "
                           "give --influxdb-url https://...")
                return
            version = build = ""
            report.add(WARN, topic, f"{settings.url}/ping answered HTTP {exc.status}"
                       + (f" ({exc.detail})" if exc.detail else "") + "; the write is "
                       "what matters: asked next")
        else:
            if version:
                what = f"InfluxDB {version}" + (f" ({build})" if build else "")
            elif build:  # InfluxDB Cloud gives its build, no version
                what = f"InfluxDB ({build}, no version given)"
            else:
                what = ("no version given: not InfluxDB itself (e.g. VictoriaMetrics), or "
                        "a proxy before it")
            report.add(OK, topic, f"{settings.url} answers /ping: {what}")
        try:
            push.write("")
        except PushFailed as exc:
            level, text = _write_refused(args, settings, version, exc)
            report.add(level, "InfluxDB write", text)
            return
        where = _bucket_words(settings)
        if re.match(r"v?1\.", version):
            proof = ("an empty write was answered 204: InfluxDB 1.8+ checks the "
                     "credentials, the database and the retention policy before the body")
        elif version or build:
            proof = "an empty write was answered 204"
        else:
            proof = ("an empty write was answered 204; a server without buckets "
                     "(VictoriaMetrics) takes any org, bucket and token")
        report.add(OK, "InfluxDB write", f"{_credential_words(args)} accepted, writes to "
                   f"{where} allowed ({proof}; no point written)")
    finally:
        push.close()


def _bucket_words(settings: Any) -> str:
    if settings.org == "-":
        return f"bucket {settings.bucket}"
    return f"bucket {settings.bucket} of org {settings.org}"


def _credential_words(args: argparse.Namespace) -> str:
    """Where the credentials came from (never what they are)."""
    if args.influxdb_username:
        where = (f"--influxdb-password-file {args.influxdb_password_file}"
                 if args.influxdb_password_file else
                 "influxdb-password in the config file or APACHE_METRICS_INFLUXDB_PASSWORD"
                 if args.influxdb_password else "no password")
        return f"user {args.influxdb_username} with the password of {where}"
    if args.influxdb_token_file:
        return f"the token of --influxdb-token-file {args.influxdb_token_file}"
    if args.influxdb_token:
        return ("the token (influxdb-token in the config file, "
                "APACHE_METRICS_INFLUXDB_TOKEN or --influxdb-token)")
    return "no token (none given)"


def _unreachable(args: argparse.Namespace, url: str, exc: Exception) -> str:
    """No answer from /ping: the connection's error and its fix."""
    from apache_metrics_exporter.push.client import tls_fix

    detail = getattr(exc, "detail", "") or str(exc)
    low = detail.lower()
    fix = tls_fix(detail, args.influxdb_ca_file)
    if fix is not None or "certificate" in low or "ssl" in low or "tls" in low:
        if fix is None:
            fix = ("check the TLS settings of both ends (--influxdb-ca-file, the server's "
                   "certificate and protocols)")
        return f"TLS with {url} failed: {detail}; {fix}"
    if "timed out" in low or "no complete answer" in low:
        return (f"no answer from InfluxDB at {url} within {args.influxdb_timeout:g} s "
                "(--influxdb-timeout): something there takes the connection and does not "
                "answer, or InfluxDB is overloaded; check --influxdb-url; until then every "
                "batch waits in the spool")
    if "refused" in low:
        return (f"cannot reach InfluxDB at {url}: connection refused: it is not running or "
                "does not listen there; check that it runs (systemctl status influxdb) and "
                "--influxdb-url; until then every batch waits in the spool")
    return (f"cannot reach InfluxDB at {url}: {detail}; check --influxdb-url and that "
            "InfluxDB runs; until then every batch waits in the spool")


def _write_refused(args: argparse.Namespace, settings: Any, version: str,
                   exc: Any) -> Tuple[str, str]:
    """(level, text) for the answer to the empty write (check_push says
    which answer means what)."""
    status, detail = exc.status, exc.detail
    said = f"HTTP {status}" + (f" ({detail})" if detail else "")
    where = _bucket_words(settings)
    creds = _credential_words(args)
    low = detail.lower()
    if status == 400 and "writing requires points" in low:
        return OK, (f"{creds} accepted, writes to {where} allowed (InfluxDB 2.x answered "
                    f"an empty write with {said}: token, org, bucket and write permission "
                    "passed; no point written)")
    if not status:
        return FAIL, _unreachable(args, settings.url, exc)
    if status == 401:
        fix = ("give the user's right password" if args.influxdb_username else
               "give a valid API token (influx auth list; InfluxDB 1.8: --influxdb-username "
               "and --influxdb-password-file)")
        return FAIL, f"{settings.url} refused {creds}: {said}; {fix}"
    if status == 403:
        db = settings.bucket.split("/", 1)[0]
        fix = (f"GRANT WRITE ON \"{db}\" TO \"{args.influxdb_username}\"" if
               args.influxdb_username else
               "give the token write access to the bucket (influx auth create "
               "--write-bucket BUCKET_ID)")
        return FAIL, f"{creds} is accepted but may not write to {where}: {said}; {fix}"
    if status == 404:
        if "organization" in low or "org " in low:
            return FAIL, (f"org {settings.org} not found: {said}; fix --influxdb-org "
                          "(influx org list)")
        if "database not found" in low:
            db = settings.bucket.split("/", 1)[0]
            return FAIL, (f"database {db} of --influxdb-bucket {settings.bucket} not "
                          f"found: {said}; create it (CREATE DATABASE \"{db}\") or fix "
                          "--influxdb-bucket (DATABASE/RETENTION)")
        if "bucket" in low:
            return FAIL, (f"bucket {settings.bucket} not found in org {settings.org}: "
                          f"{said}; create it (influx bucket create) or fix "
                          "--influxdb-bucket")
        old = _old_influxdb(version)
        if old:
            return FAIL, (f"InfluxDB {version} at {settings.url} has no /api/v2/write "
                          f"({said}; InfluxDB 1.8 and later have it): upgrade it, or let "
                          "Telegraf write to it (--format influx, contrib/telegraf/)")
        return FAIL, (f"{settings.url} has no /api/v2/write: {said}; --influxdb-url is "
                      "the server's base URL (http://HOST:8086), and the server must take "
                      "/api/v2/write (InfluxDB 2.x, 1.8+, VictoriaMetrics)")
    if "retention policy not found" in low:
        rp = settings.bucket.split("/", 1)[1] if "/" in settings.bucket else "(default)"
        return FAIL, (f"retention policy {rp} of --influxdb-bucket {settings.bucket} not "
                      f"found: {said}; fix --influxdb-bucket (DATABASE/RETENTION, SHOW "
                      "RETENTION POLICIES lists them)")
    return FAIL, f"an empty write to {where} at {settings.url} answered {said}"


def _old_influxdb(version: str) -> bool:
    """An InfluxDB 1.x older than 1.8 (no /api/v2/write)."""
    m = re.match(r"v?1\.(\d+)", version)
    return m is not None and int(m.group(1)) < 8


# --- the consumer -------------------------------------------------------------------------------

class Consumer(NamedTuple):
    """Where a monitoring agent reads the configuration contrib/ ships."""

    name: str
    directories: Tuple[str, ...]  # under ETC, read by the agent (first: where to copy)
    suffix: str  # the agent reads files ending so in them
    home: str  # under ETC: the agent's own directory
    contrib: str
    optional: bool = False  # the format has other users: say nothing without the agent


CONSUMERS = {
    "influx": Consumer("Telegraf", ("telegraf/telegraf.d",), ".conf", "telegraf",
                       "contrib/telegraf/apache-metrics-exporter.conf"),
    "collectd": Consumer("collectd", ("collectd/collectd.conf.d",), ".conf", "collectd",
                         "contrib/collectd/apache-metrics-exporter.conf"),
}
CONSUMERS["zabbix-discovery"] = ZABBIX = Consumer(
    "Zabbix agent", ("zabbix/zabbix_agentd.conf.d", "zabbix/zabbix_agent2.d"), ".conf",
    "zabbix", "contrib/zabbix/apache-metrics-exporter.conf")
CONSUMERS["tab"] = ZABBIX._replace(optional=True)  # also read by scripts and cron jobs


def check_consumer(report: Report, args: argparse.Namespace) -> None:
    """For --format, whether the agent's contrib file is where it is read."""
    consumer = CONSUMERS.get(args.format or "")
    if consumer is None:
        return
    topic = "consumer"
    home = os.path.join(ETC, consumer.home)
    if not os.path.isdir(home):
        if consumer.optional:
            return
        report.add(WARN, topic, f"{consumer.name} is not installed here (no {home}); "
                   f"install it, then copy {consumer.contrib} to "
                   f"{os.path.join(ETC, consumer.directories[0])}/")
        return
    read_dirs = [os.path.join(ETC, d) for d in consumer.directories]
    found = _mentions(home)
    good = [f for f in found if os.path.dirname(f) in read_dirs
            and f.endswith(consumer.suffix)]
    if good:
        report.add(OK, topic, f"{good[0]} runs apache-metrics-exporter, and "
                   f"{consumer.name} reads that directory")
        return
    if found:
        report.add(FAIL, topic, f"{found[0]} names apache-metrics-exporter, but "
                   f"{consumer.name} does not read it there: move it to "
                   f"{read_dirs[0]}/apache-metrics-exporter{consumer.suffix}")
        return
    report.add(WARN, topic, f"no {consumer.name} configuration under {home} runs "
               f"apache-metrics-exporter: copy {consumer.contrib} to {read_dirs[0]}/")


def _mentions(home: str) -> List[str]:
    """Files under ``home`` (bounded) whose text names the exporter; the
    agent's own directories first."""
    import stat as stat_

    out: List[str] = []
    seen = 0
    for top, dirs, names in os.walk(home):
        dirs.sort()
        for name in sorted(names):
            seen += 1
            if seen > MAX_SCAN:
                return out
            path = os.path.join(top, name)
            try:
                if not stat_.S_ISREG(os.lstat(path).st_mode):
                    continue
                with _open_regular(path, follow=False) as fh:
                    text = fh.read(1 << 16)
            except OSError:
                continue
            if b"apache-metrics-exporter" in text or b"apache-manager" in text:
                out.append(path)
    return out
