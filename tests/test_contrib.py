"""The ready-made agent configs in contrib/ are valid and run the exporter right."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.conftest import exporter_env

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
EXPORTER = "/usr/local/bin/apache-metrics-exporter"


def telegraf(name: str) -> dict:
    return tomllib.loads((CONTRIB / "telegraf" / name).read_text())


def test_telegraf_exec_config():
    conf = telegraf("apache-metrics-exporter.conf")
    (plugin,) = conf["inputs"]["exec"]
    assert plugin["data_format"] == "influx"  # exec's default would be json
    (command,) = plugin["commands"]
    assert command[0] == EXPORTER and "--format" in command
    assert command[command.index("--format") + 1] == "influx"
    timeout = int(plugin["timeout"].rstrip("s"))
    assert timeout > 5  # longer than the exporter's own --timeout
    # The older string form, commented out, says the same thing.
    text = (CONTRIB / "telegraf" / "apache-metrics-exporter.conf").read_text()
    old = [ln for ln in text.splitlines() if ln.strip().startswith("# commands = [")]
    assert old and shlex.split(old[0].split('["', 1)[1].rsplit('"]', 1)[0]) == command


def test_telegraf_execd_config():
    conf = telegraf("apache-metrics-exporter-execd.conf")
    (plugin,) = conf["inputs"]["execd"]
    assert plugin["signal"] == "STDIN"
    assert plugin["data_format"] == "influx"
    assert "--execd" in plugin["command"] and plugin["command"][0] == EXPORTER


@pytest.mark.integration
def test_telegraf_exec_command_runs(prefork, influxdb, influx_db):
    (plugin,) = telegraf("apache-metrics-exporter.conf")["inputs"]["exec"]
    command = [a.replace("http://127.0.0.1/server-status", prefork.status_url)
               for a in plugin["commands"][0]]
    argv = [sys.executable, "-m", "apache_metrics_exporter", *command[1:]]
    proc = subprocess.run(argv, capture_output=True, text=True, env=exporter_env(), timeout=30)
    assert proc.returncode == 0
    assert influxdb.write(influx_db, proc.stdout.encode()) == (204, "")


@pytest.mark.skipif(not shutil.which("collectd") and not os.path.exists("/usr/sbin/collectd"),
                    reason="collectd-core not installed")
def test_collectd_config_passes_collectd_t(tmp_path):
    # collectd -t checks the syntax and loads the plugins of this snippet.
    conf = tmp_path / "collectd.conf"
    conf.write_text(f'BaseDir "{tmp_path}"\nPIDFile "{tmp_path}/pid"\n'
                    'TypesDB "/usr/share/collectd/types.db"\n'
                    + (CONTRIB / "collectd" / "apache-metrics-exporter.conf").read_text())
    proc = subprocess.run(["/usr/sbin/collectd", "-t", "-C", str(conf)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"--format" "collectd"' in conf.read_text()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path):
    # The units as shipped, with ExecStart pointing at this environment's scripts.
    bindir = os.path.dirname(sys.executable)
    for unit in (CONTRIB / "systemd").iterdir():
        text = unit.read_text().replace("/usr/local/bin/", bindir + "/")
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    assert any(u.endswith(".timer") for u in units)
    proc = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True,
                          text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                if "apache-" in ln and "Unknown" not in ln.split(":")[0]]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr
