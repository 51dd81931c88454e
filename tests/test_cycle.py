"""The state a run keeps between its cycles (cycle.py), and its one home.

The loops (loops.py) and the --listen endpoint (endpoint.py) both run a
cycle.Cycle and neither imports the other (issue 23 item 5).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "apache_metrics_exporter"


def imported(module: str) -> set:
    """Every package module ``module`` imports, at the top or inside a function."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_loops_and_endpoint_do_not_import_each_other():
    assert "apache_metrics_exporter.endpoint" not in imported("loops")
    assert "apache_metrics_exporter.loops" not in imported("endpoint")
    for name in ("loops", "endpoint"):
        assert "apache_metrics_exporter.cycle" in imported(name)


def test_cycle_imports_neither_loops_nor_endpoint():
    assert not {"apache_metrics_exporter.loops", "apache_metrics_exporter.endpoint"} \
        & imported("cycle")


def test_below_the_entry_points_no_module_takes_argparse_namespace():
    for name in ("loops", "cycle", "endpoint", "reaper/run", "health", "restarts", "output"):
        source = (PACKAGE / f"{name}.py").read_text()
        assert "argparse" not in imported(name), name
        assert "Namespace" not in source, name


def test_run_config_is_built_once_from_the_options_and_cannot_change(monkeypatch):
    from apache_metrics_exporter import config
    from apache_metrics_exporter.runconfig import run_config

    monkeypatch.setenv("APACHE_METRICS_LISTEN_PASSWORD", "s3cret")
    args = config.parse(config.build_parser(), [
        "--url", "http://127.0.0.1:8080/server-status", "--format", "prometheus",
        "--listen", "127.0.0.1:9117", "--probe-allow", "http://127.0.0.1:*/server-status",
        "--vhost-limit", "3", "--no-processes", "--interval", "5"])
    run = run_config(args, ("httpd",))
    assert run.format == "prometheus" and run.interval == 5.0 and not run.execd
    assert run.listen == ("127.0.0.1:9117",)
    assert run.probe_allow == ("http://127.0.0.1:*/server-status",)
    assert run.options.vhost_limit == 3 and run.options.exe_names == ("httpd",)
    assert run.options.scan_processes is False
    assert run.settings.interval == 5.0
    assert run.listen_password == "s3cret" and "s3cret" not in repr(run)
    try:
        run.interval = 1  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("a RunConfig can be changed")


# --- reuse between cycles (issue 23 item 1) ------------------------------------------------
#
# A Cycle keeps the tree proof while the URL's listening sockets and the proven
# parent (PID, start time) are unchanged; these run the in-process loop (one
# Cycle, a kept connection, as --execd does) against a real Apache and count
# the proofs made and kept (Reuse.proved / Reuse.reused), never times.

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, HTTPServer  # noqa: E402

import psutil  # noqa: E402
import pytest  # noqa: E402

from tests.harness.apache import ApacheServer  # noqa: E402
from tests.harness.waiting import wait_for  # noqa: E402


def _loop(url: str):
    """A Cycle as a long-running run keeps it, and its kept connection."""
    from apache_metrics_exporter import config
    from apache_metrics_exporter.collect.http import Fetcher
    from apache_metrics_exporter.cycle import Cycle
    from apache_metrics_exporter.runconfig import run_config

    args = config.parse(config.build_parser(), ["--url", url, "--format", "influx",
                                                "--timeout", "3"])
    run = run_config(args, config.exe_names(args))
    return Cycle(run), [Fetcher(t) for t in config.targets(args)]


def _children(apache: ApacheServer) -> set:
    return {p.pid for p in apache.children()}


@pytest.fixture
def small_apache():
    """A private prefork Apache with a fixed number of children, which the
    test restarts (no mod_wsgi: its daemons would only slow the restarts)."""
    server = ApacheServer("prefork", wsgi=False, workers=2).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.integration
def test_an_unchanged_server_is_proven_once(small_apache):
    cycle, fetchers = _loop(small_apache.status_url)
    try:
        for _ in range(5):
            snap, = cycle.collect(fetchers)
            assert snap.up and snap.processes.parent_pid == small_apache.proc.pid
            assert {c.pid for c in snap.processes.children} == _children(small_apache)
        assert (cycle.reuse.proved, cycle.reuse.reused) == (1, 4)
    finally:
        fetchers[0].close()


@pytest.mark.integration
def test_a_graceful_restart_shows_its_new_children_in_the_next_cycle(small_apache):
    cycle, fetchers = _loop(small_apache.status_url)
    try:
        snap, = cycle.collect(fetchers)
        old = {c.pid for c in snap.processes.children}
        assert old and old == _children(small_apache)
        os.kill(small_apache.proc.pid, signal.SIGUSR1)  # graceful: same parent, same sockets
        wait_for("the new generation", lambda: _children(small_apache)
              and not _children(small_apache) & old and small_apache._wait_ready(5))
        now = _children(small_apache)
        snap, = cycle.collect(fetchers)
        seen = {c.pid for c in snap.processes.children}
        assert snap.processes.parent_pid == small_apache.proc.pid
        assert seen and not seen & old and seen <= now | _children(small_apache)
        # The sockets and the parent carried on: the proof stands.
        assert (cycle.reuse.proved, cycle.reuse.reused) == (1, 1)
    finally:
        fetchers[0].close()


@pytest.mark.integration
def test_a_full_restart_is_proven_again_in_the_next_cycle(small_apache):
    cycle, fetchers = _loop(small_apache.status_url)
    try:
        snap, = cycle.collect(fetchers)
        old_parent = snap.processes.parent_pid
        old = {c.pid for c in snap.processes.children}
        small_apache.restart_stopped()
        small_apache.start_again()
        snap, = cycle.collect(fetchers)
        assert snap.processes.parent_pid == small_apache.proc.pid != old_parent
        seen = {c.pid for c in snap.processes.children}
        assert seen and not seen & old
        assert (cycle.reuse.proved, cycle.reuse.reused) == (2, 0)
        snap, = cycle.collect(fetchers)  # and the new proof is kept in turn
        assert snap.processes.parent_pid == small_apache.proc.pid
        assert (cycle.reuse.proved, cycle.reuse.reused) == (2, 1)
    finally:
        fetchers[0].close()


class _Other(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_error(404)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.integration
def test_another_server_on_the_port_is_noticed_while_apache_still_runs(small_apache):
    """Apache moves to another port (graceful: the same parent, alive, with
    the same start time) and another server takes the old one: the sockets
    differ, so the old proof must not stand for the new server's."""
    cycle, fetchers = _loop(small_apache.status_url)
    other = None
    try:
        snap, = cycle.collect(fetchers)
        assert snap.processes.parent_pid == small_apache.proc.pid
        old_port = small_apache.port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            new_port = probe.getsockname()[1]
        conf = small_apache.root / "httpd.conf"
        conf.write_text(conf.read_text().replace(f"Listen 127.0.0.1:{old_port}\n",
                                                 f"Listen 127.0.0.1:{new_port}\n"))
        os.kill(small_apache.proc.pid, signal.SIGUSR1)

        def moved() -> bool:
            try:
                socket.create_connection(("127.0.0.1", old_port), 0.5).close()
                return False
            except OSError:
                return True
        wait_for("Apache leaving its port", moved)
        HTTPServer.allow_reuse_address = True
        other = HTTPServer(("127.0.0.1", old_port), _Other)
        threading.Thread(target=other.serve_forever, daemon=True).start()
        assert psutil.pid_exists(small_apache.proc.pid)  # the old proof's parent lives on
        snap, = cycle.collect(fetchers)
        assert snap.processes.parent_pid is None and snap.processes.children == []
        assert any("not apache2" in w for w in snap.warnings), snap.warnings
        assert cycle.reuse.reused == 0
    finally:
        fetchers[0].close()
        if other is not None:
            other.shutdown()
            other.server_close()


def test_a_kept_proof_needs_the_same_sockets_and_the_same_parent(monkeypatch):
    """Reuse.kept: a parent whose PID now names a process started at another
    time (a PID used again), or another set of sockets, is no proof."""
    from apache_metrics_exporter.collect import procfs
    from apache_metrics_exporter.collect.processes import Reuse

    started = {"ticks": 100}
    monkeypatch.setattr(procfs, "stat", lambda pid: procfs.Stat(
        pid, "apache2", "S", 1, started["ticks"]))
    monkeypatch.setattr(procfs, "children", lambda pid: [])
    monkeypatch.setattr(procfs, "socket_inodes", lambda pid: {11, 12, 13})
    reuse = Reuse()
    key = (("127.0.0.1",), 8080)
    reuse.keep(key, {11, 12}, 500)
    assert reuse.kept(key, {11, 12}, ("apache2",)) == 500
    assert reuse.kept(key, {11}, ("apache2",)) is None
    assert reuse.kept(key, {11, 12, 13}, ("apache2",)) is None
    assert reuse.kept(key, {11, 12}, ("httpd",)) is None
    started["ticks"] = 101
    assert reuse.kept(key, {11, 12}, ("apache2",)) is None
    assert (reuse.proved, reuse.reused) == (1, 1)
