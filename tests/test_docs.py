"""Generated documentation matches its sources (make docs)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_metric_reference_and_man_pages_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_metric_is_in_the_reference():
    from apache_metrics_exporter.catalogue import ALL_METRICS

    text = (ROOT / "docs" / "metrics.md").read_text()
    for m in ALL_METRICS:
        assert f"| `{m.name}` |" in text, m.name
