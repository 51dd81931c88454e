"""The typed run configuration the modules below the entry points take.

The entry points (cli.py for the exporter, and for the reaper) parse and
validate the options (config.py), then build one ``RunConfig`` (or
``ReaperConfig``) once; below them nothing reads argparse's Namespace, so
every setting a module uses is named and typed here, and none can be
changed behind the run's back.

Records, not dataclasses: immutable and typed alike, but importing
``dataclasses`` costs some 7 ms of a one-shot run (records.py says why that
matters).
"""

from __future__ import annotations

from apache_metrics_exporter.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Optional, Tuple

    from apache_metrics_exporter.collect.snapshot import Options
    from apache_metrics_exporter.writers import Settings


class RunConfig(NamedTuple):
    """What one run of apache-metrics-exporter does, below cli.main."""

    format: str  # the --format value, resolved (writers.FORMAT)
    output: str  # --output ("-": stdout)
    options: Options  # what shapes a snapshot (collect/snapshot.py)
    settings: Settings  # what the writers read
    execd: bool = False
    interval: Optional[float] = None  # --interval, or collectd's COLLECTD_INTERVAL
    # Files kept between runs: the reaper's, the push spool, the collector's own.
    state_file: Optional[str] = None
    spool_dir: Optional[str] = None
    spool_max_bytes: int = 0
    collector_state: Optional[str] = None
    # --listen: the endpoint (endpoint.py)
    listen: Tuple[str, ...] = ()
    systemd_socket: bool = False
    telemetry_endpoint: Optional[str] = None
    web_config_file: Optional[str] = None
    probe_allow: Tuple[str, ...] = ()
    listen_user: Optional[str] = None
    listen_password: Optional[str] = None  # a secret: never logged
    listen_password_file: Optional[str] = None
    listen_cert_file: Optional[str] = None
    listen_key_file: Optional[str] = None
    listen_request_deadline: Optional[float] = None
    listen_idle_deadline: Optional[float] = None

    def __repr__(self) -> str:  # the password stays out of any debug line
        return f"RunConfig(format={self.format!r}, output={self.output!r}, ...)"


def run_config(args: Any, exe_names: Tuple[str, ...]) -> RunConfig:
    """The run configuration from parsed and validated options (built once,
    by the entry point)."""
    from apache_metrics_exporter.collect.snapshot import Options
    from apache_metrics_exporter.writers import Settings

    def get(name: str, default: Any = None) -> Any:
        return getattr(args, name, default)

    listen = get("listen") or ()
    return RunConfig(
        format=args.format, output=args.output,
        options=Options(hanging_threshold=args.hanging_threshold, exe_names=exe_names,
                        pid_file=args.pid_file, memory=args.memory,
                        scan_processes=not args.no_processes, vhost_limit=args.vhost_limit,
                        wsgi_group_names=args.wsgi_group_names,
                        client_limit=args.client_limit),
        settings=Settings.of(args), execd=bool(get("execd")), interval=get("interval"),
        state_file=get("state_file"), spool_dir=get("spool_dir"),
        spool_max_bytes=get("spool_max_bytes", 0) or 0,
        collector_state=get("collector_state"),
        listen=(listen,) if isinstance(listen, str) else tuple(listen),
        systemd_socket=bool(get("systemd_socket")),
        telemetry_endpoint=get("telemetry_endpoint"), web_config_file=get("web_config_file"),
        probe_allow=tuple(get("probe_allow") or ()), listen_user=get("listen_user"),
        listen_password=get("listen_password"),
        listen_password_file=get("listen_password_file"),
        listen_cert_file=get("listen_cert_file"), listen_key_file=get("listen_key_file"),
        listen_request_deadline=get("listen_request_deadline"),
        listen_idle_deadline=get("listen_idle_deadline"))


class ReaperConfig(NamedTuple):
    """What one run of apache-worker-reaper does, below cli.reaper_main
    (the thresholds are reaper.policy.Thresholds)."""

    exe_names: Tuple[str, ...]
    state_file: str
    lock_timeout: float
    pid_file: Optional[str] = None
    memory: str = "rss"
    wsgi_group_names: str = "config"
    dry_run: bool = False
    max_kills: int = 1
    grace: float = 0.0


def reaper_config(args: Any, exe_names: Tuple[str, ...]) -> ReaperConfig:
    """The reaper's run configuration from parsed and validated options."""
    return ReaperConfig(exe_names=exe_names, state_file=args.state_file,
                        lock_timeout=args.lock_timeout, pid_file=args.pid_file,
                        memory=args.memory, wsgi_group_names=args.wsgi_group_names,
                        dry_run=bool(args.dry_run), max_kills=args.max_kills,
                        grace=args.grace)
