"""Output formats. Each writer module turns snapshots into text and exposes:

- ``render(snapshots, settings) -> str``: the whole output of one batch;
- ``MULTI_TARGET``: whether one output can hold several targets;
- ``DESCRIPTION``: one line for --help;
- optionally ``check(settings, urls)``: raise UsageError before any fetch;
- optionally ``sink(settings)``: an object whose ``send(text, snapshots)``
  delivers a batch elsewhere than --output (and ``close()``).

Modules are imported only when their format is chosen, so a format with heavy
dependencies costs nothing to the others.

Every line a writer returns is valid for its format whatever the snapshot holds
(names and text from hostile pages and process titles, any number): text is
escaped or cut to ``MAX_TEXT`` characters, a number the format cannot carry
(catalogue.fits, then the format's own limits) is left out, and a series that
would appear twice (the same name and labels after the format's escaping) is
written once: the first sample wins, in every format.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Dict

MAX_TEXT = 1024  # characters of one name or text value that a writer keeps

# format name -> module (relative to this package)
REGISTRY: Dict[str, str] = {
    "tab": "tab",
    "influx": "influx",
    "collectd": "collectd",
    "influxdb": "influxdb",
    "prometheus": "prometheus",
    "zabbix-discovery": "zabbix",
    "text": "text",
}

DESCRIPTIONS: Dict[str, str] = {
    "tab": "apache-manager's tab-delimited metrics file (default)",
    "influx": "Influx line protocol for Telegraf inputs.exec/execd",
    "collectd": "collectd PUTVAL lines for collectd's Exec plugin",
    "influxdb": "push to InfluxDB /api/v2/write, spooled while it is down",
    "prometheus": "Prometheus text format for node_exporter's textfile collector",
    "zabbix-discovery": "Zabbix low-level discovery JSON of the worker groups",
    "text": "a human summary (the default on a terminal)",
}


def load(name: str) -> ModuleType:
    """The writer module for a format name."""
    return importlib.import_module(f"{__name__}.{REGISTRY[name]}")
