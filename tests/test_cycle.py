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
