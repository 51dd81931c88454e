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
