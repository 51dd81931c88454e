"""Output formats: one registry entry per format, one module per writer.

A writer module has ``render(snapshots, settings) -> str``, the whole output
of one batch. Its registry entry (``Format``) declares what else it offers,
so callers never probe modules: ``checks`` - a ``check(settings, urls)`` that
raises UsageError before anything is fetched; ``sinks`` - a ``sink(settings)``
whose ``send(text, snapshots)`` delivers a batch elsewhere than --output
(and ``close()``); ``multi_target`` - whether one output can hold several
targets. Writers read the options through ``Settings``, a typed subset.

Modules are imported only when their format is chosen, so a format with heavy
dependencies costs nothing to the others.

Every line a writer returns is valid for its format whatever the snapshot holds
(names and text from hostile pages and process titles, any number): text is
escaped or cut to ``MAX_TEXT`` characters, a number the format cannot carry
(catalogue.fits, then the format's own limits) is left out, and a series that
would appear twice (the same name and labels after the format's escaping) is
written once: the first sample wins, in every format. Virtual hosts are the
exception: each writer's ``vhost_name`` gives a name it cannot carry unchanged
a digest suffix, and vhosts.renamed counts a host that would still share a
series in ``other`` (said once), so no host's figures are dropped.
"""

from __future__ import annotations

import importlib

from apache_metrics_exporter.paths import SPOOL_DIR
from apache_metrics_exporter.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

    from apache_metrics_exporter.collect.snapshot import Snapshot

    class Writer(Protocol):
        """What every writer module has (optional parts: see Format)."""

        def render(self, snapshots: Sequence[Snapshot],
                   settings: Optional[Settings] = None) -> str: ...

        def check(self, settings: Settings, urls: Sequence[str]) -> None: ...

        def sink(self, settings: Settings) -> Any: ...

MAX_TEXT = 1024  # characters of one name or text value that a writer keeps


_MISSING = object()


def remembered(memo: Dict[Any, Any], key: Any, labels: Any, limit: int, most: int,
               build: Any, *args: Any) -> Any:
    """``build(*args)``, the rendered text of a labelled sample, kept in
    ``memo`` under ``key`` (the same samples come every cycle): only for
    keepable labels (at most ``limit`` characters, all text), the memo
    cleared when it holds ``most``; a key that cannot be hashed (a label
    that is no text) is built every time."""
    try:
        found = memo.get(key, _MISSING)
    except TypeError:
        return build(*args)
    if found is _MISSING:
        found = build(*args)
        if _keepable(labels, limit):
            if len(memo) >= most:
                memo.clear()
            memo[key] = found
    return found


def laid_values(layout: Any, samples: Sequence[Any]) -> Optional[tuple]:
    """The samples' values when their metrics and labels are equal to those a
    writer's per-target layout was made from (``layout.metrics``,
    ``layout.labels``), else None: a layout is never used for other samples."""
    if not samples:
        return None
    metrics, values, labels = zip(*samples)
    if metrics != layout.metrics or labels != layout.labels:
        return None
    return values


def _keepable(labels: Any, limit: int) -> bool:
    """Whether a sample's labels may key a writer's memo of rendered text:
    all text (1 and True are equal keys, but not the same label value) and
    at most ``limit`` characters of names and values in all."""
    size = 0
    for k, v in labels:
        if type(k) is not str or type(v) is not str:
            return False
        size += len(k) + len(v)
    return size <= limit


class Format(NamedTuple):
    """One output format: its writer module and what the module offers."""

    name: str  # the --format value
    module: str  # relative to this package
    help: str  # one line for --help
    multi_target: bool = True  # one output can hold several targets
    checks: bool = False  # module.check(settings, urls): usage errors before a fetch
    sinks: bool = False  # module.sink(settings): delivery elsewhere than --output


FORMATS: Tuple[Format, ...] = (
    Format("tab", "tab", "apache-manager's tab-delimited metrics file (default)",
           multi_target=False),
    Format("influx", "influx", "Influx line protocol for Telegraf inputs.exec/execd"),
    Format("collectd", "collectd", "collectd PUTVAL lines for collectd's Exec plugin",
           checks=True),
    Format("influxdb", "influxdb", "push to InfluxDB /api/v2/write, spooled while it is down",
           checks=True, sinks=True),
    Format("prometheus", "prometheus",
           "Prometheus text format for node_exporter's textfile collector"),
    Format("zabbix-discovery", "zabbix", "Zabbix low-level discovery JSON of the worker groups",
           multi_target=False),
    Format("text", "text", "a human summary (the default on a terminal)"),
)
FORMAT: Dict[str, Format] = {f.name: f for f in FORMATS}


class Settings(NamedTuple):
    """What writers read of the options: a typed subset, defaults included."""

    output: str = "-"
    hanging_threshold: float = 300.0
    prometheus_naming: str = "apache_exporter"
    hostname: Optional[str] = None
    instance: Optional[List[str]] = None
    interval: Optional[float] = None
    spool_dir: str = SPOOL_DIR
    spool_max_bytes: int = 64 * 1024 * 1024
    influxdb_url: Optional[str] = None
    influxdb_org: Optional[str] = None
    influxdb_bucket: Optional[str] = None
    influxdb_token: Optional[str] = None
    influxdb_token_file: Optional[str] = None
    influxdb_username: Optional[str] = None
    influxdb_password: Optional[str] = None
    influxdb_password_file: Optional[str] = None
    influxdb_auth_basic: bool = False
    influxdb_ca_file: Optional[str] = None
    influxdb_insecure: bool = False
    influxdb_timeout: float = 10.0

    @classmethod
    def of(cls, options: object = None) -> Settings:
        """Settings from parsed options (or any object with such attributes);
        what an object lacks keeps its default."""
        if isinstance(options, cls):
            return options
        if options is None:
            return cls()
        return cls(**{f: getattr(options, f) for f in cls._fields if hasattr(options, f)})


def load(fmt: Format) -> Writer:
    """The writer module of a format."""
    return importlib.import_module(f"{__name__}.{fmt.module}")
