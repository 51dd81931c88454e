"""Shared fixtures: captured pages, private Apache servers, running the command."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

from tests.harness.apache import MPMS, ApacheServer

DATA = Path(__file__).parent / "data"


def data(name: str) -> bytes:
    """A page from tests/data."""
    return (DATA / name).read_bytes()


# The files the commands keep between runs (the reaper's state, the push
# spool, the collector's restart counts) default to /var/lib: every run of
# the test session, in-process or not, gets its own under a temporary
# directory instead, so no test reads or writes the machine's.
SESSION_FILES = tempfile.mkdtemp(prefix="ame-test-files-")
os.chmod(SESSION_FILES, 0o755)
SESSION_ENV = {
    "APACHE_METRICS_STATE_FILE": os.path.join(SESSION_FILES, "reaper-state.json"),
    "APACHE_METRICS_SPOOL_DIR": os.path.join(SESSION_FILES, "spool"),
    "APACHE_METRICS_COLLECTOR_STATE": os.path.join(SESSION_FILES, "collector-state.json"),
}
for _key in [k for k in os.environ if k.startswith("APACHE_METRICS_")]:
    del os.environ[_key]  # the user's own settings never reach a test
os.environ.update(SESSION_ENV)


# The machine's own state directory: no test may create or change anything
# there (a test that forgot the session's paths would). Checked at the end.
MACHINE_STATE = "/var/lib/apache-metrics-exporter"


def _machine_state() -> Dict[str, float]:
    try:
        names = os.listdir(MACHINE_STATE)
    except FileNotFoundError:
        return {}
    out = {MACHINE_STATE: os.lstat(MACHINE_STATE).st_mtime}
    for name in names:
        try:
            out[name] = os.lstat(os.path.join(MACHINE_STATE, name)).st_mtime
        except FileNotFoundError:
            pass
    return out


_MACHINE_STATE_BEFORE = _machine_state()


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(SESSION_FILES, ignore_errors=True)
    after = _machine_state()
    if after != _MACHINE_STATE_BEFORE:
        changed = sorted(k for k in set(after) | set(_MACHINE_STATE_BEFORE)
                         if after.get(k) != _MACHINE_STATE_BEFORE.get(k))
        print(f"\nERROR: the test session changed the machine's {MACHINE_STATE}: "
              f"{', '.join(changed)} (a test ran without the session's state paths)")
        session.exitstatus = 1


def exporter_env(**extra: str) -> Dict[str, str]:
    """An environment without the user's APACHE_METRICS_* settings or config,
    with the session's own state, spool and collector state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APACHE_METRICS_")}
    env.update(SESSION_ENV)
    env.update(extra)
    return env


def run_exporter(*args: str, env: Dict[str, str] = None, timeout: float = 60,
                 stdin: str = None) -> subprocess.CompletedProcess:
    """Run the installed command as a user would (``python -m``, same interpreter)."""
    return subprocess.run(
        [sys.executable, "-m", "apache_metrics_exporter", *args],
        capture_output=True, text=True, timeout=timeout,
        env=env if env is not None else exporter_env(), input=stdin,
    )


def parse_tab(text: str) -> Dict[str, str]:
    """Tab file lines as {'key': value} and {'memory-usage group stat': value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        out[" ".join(parts[:-1])] = parts[-1]
    return out


def prom_series(text: str) -> Dict[str, float]:
    """``{'name{labels}': value}`` of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def live_children(pid: int) -> Dict[int, float]:
    """{pid: create_time} of a process's live children (an exited child its
    parent has not reaped yet is a zombie: not counted)."""
    import psutil

    out = {}
    for p in psutil.Process(pid).children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = p.create_time()
        except psutil.NoSuchProcess:
            pass
    return out


def sections(text: str) -> List[str]:
    """The comment lines that open each section, in order."""
    return [line for line in text.splitlines() if line.startswith("# ")]


# Private Apache servers: one per MPM for the whole session, started on first
# use and always stopped at the end (also when a test fails).
_servers: Dict[str, ApacheServer] = {}


@pytest.fixture(scope="session")
def apache_pool() -> Iterator[Dict[str, ApacheServer]]:
    yield _servers
    for server in _servers.values():
        server.stop()
    _servers.clear()


def _server(pool: Dict[str, ApacheServer], mpm: str) -> ApacheServer:
    if mpm not in pool:
        pool[mpm] = ApacheServer(mpm).start()
    return pool[mpm]


@pytest.fixture(params=MPMS)
def apache(request, apache_pool) -> ApacheServer:
    """A running private Apache for each MPM (shared by the session)."""
    return _server(apache_pool, request.param)


@pytest.fixture
def prefork(apache_pool) -> ApacheServer:
    return _server(apache_pool, "prefork")


@pytest.fixture
def event(apache_pool) -> ApacheServer:
    return _server(apache_pool, "event")


@pytest.fixture
def own_apache() -> Iterator[ApacheServer]:
    """A private Apache this test may stop and start (prefork)."""
    server = ApacheServer("prefork").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def influxdb():
    """A real InfluxDB 1.6 on loopback for the session (its /write validates)."""
    from tests.harness.servers import InfluxDB

    server = InfluxDB().start()
    try:
        yield server
    finally:
        server.stop()


_db_counter = [0]


@pytest.fixture
def influx_db(influxdb):
    """A fresh database name on the session's InfluxDB."""
    _db_counter[0] += 1
    name = f"t{_db_counter[0]}"
    influxdb.query(f'CREATE DATABASE "{name}"')
    return name


@pytest.fixture
def victoria():
    """A real VictoriaMetrics (/api/v2/write) on loopback for one test."""
    from tests.harness.servers import VictoriaMetrics

    server = VictoriaMetrics().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def runnable_copy():
    """The package where an unprivileged user can run it: collectd refuses to
    exec as root, and the checkout may sit in a directory only root can read.
    Debian's python3 with python3-psutil/-lxml/-configargparse runs it."""
    tmp = Path(tempfile.mkdtemp(prefix="ame-exec-"))
    os.chmod(tmp, 0o755)
    src = Path(__file__).resolve().parent.parent / "apache_metrics_exporter"
    shutil.copytree(src, tmp / "apache_metrics_exporter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in tmp.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    wrapper = tmp / "apache-metrics-exporter"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={tmp} exec /usr/bin/python3 -m "
                       "apache_metrics_exporter \"$@\"\n")
    reaper = tmp / "apache-worker-reaper"
    reaper.write_text(f"#!/bin/sh\nPYTHONPATH={tmp} exec /usr/bin/python3 -c "
                      "'import sys; from apache_metrics_exporter.cli import reaper_main; "
                      "sys.exit(reaper_main())' \"$@\"\n")
    for script in (wrapper, reaper):
        script.chmod(0o755)
    yield wrapper
    shutil.rmtree(tmp, ignore_errors=True)


# No test sends anything beyond loopback, name lookups included: for the whole
# session, looking up a name that is neither numeric nor a loopback name
# (localhost) fails the test that did it. Tests about names stub
# socket.getaddrinfo (monkeypatch); such a stub may still pass numeric hosts on.
_LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")
_RESOLVERS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex")
_lookups: List[str] = []


class NameLookupInTest(BaseException):
    """Not an Exception: no ``except OSError`` on the way may swallow it."""


def _needs_no_query(host: object, flags: int) -> bool:
    """Is looking ``host`` up answered without DNS (numeric or loopback name)?"""
    if host is None or flags & socket.AI_NUMERICHOST:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    name = str(host).strip("[]").split("%")[0].rstrip(".").lower()
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, name)
            return True
        except OSError:
            pass
    return name in _LOOPBACK_NAMES or name.endswith(".localhost")


def _guarded(name: str, real: Callable) -> Callable:
    def lookup(host, *args, **kwargs):
        flags = kwargs.get("flags", args[4] if name == "getaddrinfo" and len(args) > 4 else 0)
        if not _needs_no_query(host, flags):
            _lookups.append(f"socket.{name}({host!r})")
            raise NameLookupInTest(f"socket.{name}({host!r}) in a test: no DNS query may "
                                   "leave this machine; stub socket.getaddrinfo")
        return real(host, *args, **kwargs)
    return lookup


@pytest.fixture(scope="session", autouse=True)
def no_name_lookups() -> Iterator[None]:
    """The session's resolver functions, refusing names that need DNS."""
    real = {name: getattr(socket, name) for name in _RESOLVERS}
    for name, function in real.items():
        setattr(socket, name, _guarded(name, function))
    yield
    for name, function in real.items():
        setattr(socket, name, function)


@pytest.fixture(autouse=True)
def no_name_lookup_in_this_test(no_name_lookups) -> Iterator[None]:
    """Fails the test that tried a lookup, also from a thread or where the
    code under test caught the exception."""
    del _lookups[:]
    yield
    if _lookups:
        pytest.fail("name lookup in a test (stub socket.getaddrinfo): " + ", ".join(_lookups))
