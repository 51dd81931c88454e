"""Every metric this tool reports, defined once: name, kind, unit, value type, help.

Writers map these canonical names to their ecosystem's names (the tab file's
apache-manager keys, Telegraf's field names, collectd's types) and never make up
metrics of their own. The parser fills server metrics by ``auto_key`` (the key on
mod_status's ``?auto`` page); the collector fills the rest.
"""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Dict, Tuple

GAUGE = "gauge"
COUNTER = "counter"


class Metric(namedtuple(
        "Metric",
        "name kind unit type help auto_key tab_key tab_scale labels influx collectd "
        "collectd_scale",
        defaults=(None, None, 1, (), None, None, 1))):
    """One metric: what it is and how each writer names it."""

    # name: str  # canonical snake_case name
    # kind: str  # GAUGE or COUNTER
    # unit: str  # "requests", "bytes", "seconds", "ratio", ...
    # type: type  # int, float or str: fixed once, writers keep it
    # help: str
    # auto_key: Optional[str] = None  # key on the ?auto page, if read from there
    # tab_key: Optional[str] = None  # key in apache-manager's original sections
    # tab_scale: int = 1  # factor the original applied (kB -> bytes)
    # labels: Tuple[str, ...] = ()  # label names a sample carries
    # Influx line protocol: "measurement.field" ({label} placeholders allowed).
    # Measurement "apache" is Telegraf's inputs.apache: every field a float.
    # influx: Optional[str] = None
    # collectd: "type-instance" from the stock types.db ({label} placeholders
    # allowed), or "type:N" for data source N of a multi-value type (load).
    # collectd: Optional[str] = None
    # collectd_scale: float = 1  # e.g. kB -> bytes, seconds -> ms, ratio -> %
    __slots__ = ()


def _m(*args, **kw) -> Metric:
    """A metric; one read from ?auto defaults to Telegraf's field name and type."""
    auto_key = kw.get("auto_key")
    if auto_key and "influx" not in kw and not kw.get("labels"):
        kw["influx"] = "apache." + auto_key.replace(" ", "")
    return Metric(*args, **kw)


# Server figures from the ?auto page. Order is the page's order (2.4.x).
SERVER_METRICS: Tuple[Metric, ...] = (
    _m("parent_server_config_generation", GAUGE, "generation", int,
       "Configuration generation of the parent (grows on every graceful restart).",
       auto_key="ParentServerConfigGeneration",
       collectd="gauge-config_generation"),
    _m("parent_server_mpm_generation", GAUGE, "generation", int,
       "MPM generation of the parent.", auto_key="ParentServerMPMGeneration",
       collectd="gauge-mpm_generation"),
    _m("server_uptime_seconds", GAUGE, "seconds", int,
       "Seconds since the server (re)started.", auto_key="ServerUptimeSeconds"),
    _m("load1", GAUGE, "load", float, "System load average over 1 minute.", auto_key="Load1",
       collectd="load:0"),
    _m("load5", GAUGE, "load", float, "System load average over 5 minutes.", auto_key="Load5",
       collectd="load:1"),
    _m("load15", GAUGE, "load", float, "System load average over 15 minutes.", auto_key="Load15",
       collectd="load:2"),
    _m("total_accesses", COUNTER, "requests", int,
       "Requests served since the last restart (ExtendedStatus).",
       auto_key="Total Accesses", tab_key="total-accesses",
       collectd="apache_requests"),
    _m("total_kbytes", COUNTER, "kilobytes", int,
       "Kilobytes sent since the last restart (ExtendedStatus).",
       auto_key="Total kBytes", tab_key="total-traffic", tab_scale=1024,
       collectd="apache_bytes", collectd_scale=1024),
    _m("total_duration_ms", COUNTER, "milliseconds", int,
       "Milliseconds spent serving requests since the last restart (2.4.35+).",
       auto_key="Total Duration",
       collectd="total_time_in_ms-requests"),
    _m("cpu_user_seconds", COUNTER, "seconds", float, "User CPU time of the server.",
       auto_key="CPUUser",
       collectd="total_time_in_ms-cpu_user", collectd_scale=1000),
    _m("cpu_system_seconds", COUNTER, "seconds", float, "System CPU time of the server.",
       auto_key="CPUSystem",
       collectd="total_time_in_ms-cpu_system", collectd_scale=1000),
    _m("cpu_children_user_seconds", COUNTER, "seconds", float,
       "User CPU time of terminated children.", auto_key="CPUChildrenUser",
       collectd="total_time_in_ms-cpu_children_user", collectd_scale=1000),
    _m("cpu_children_system_seconds", COUNTER, "seconds", float,
       "System CPU time of terminated children.", auto_key="CPUChildrenSystem",
       collectd="total_time_in_ms-cpu_children_system",
       collectd_scale=1000),
    _m("cpu_load", GAUGE, "percent", float,
       "CPU use in percent, averaged since the last restart.",
       auto_key="CPULoad", tab_key="cpu-load",
       collectd="gauge-cpu_load"),
    _m("uptime", GAUGE, "seconds", int, "Seconds since the last restart.",
       auto_key="Uptime", tab_key="uptime",
       collectd="uptime"),
    _m("requests_per_second", GAUGE, "requests/second", float,
       "Requests per second, averaged since the last restart.",
       auto_key="ReqPerSec", tab_key="requests-per-second",
       collectd="gauge-requests_per_second"),
    _m("bytes_per_second", GAUGE, "bytes/second", float,
       "Bytes per second, averaged since the last restart.",
       auto_key="BytesPerSec", tab_key="bytes-per-second",
       collectd="gauge-bytes_per_second"),
    _m("bytes_per_request", GAUGE, "bytes", float,
       "Bytes per request, averaged since the last restart.",
       auto_key="BytesPerReq", tab_key="bytes-per-request",
       collectd="bytes-per_request"),
    _m("duration_per_request_ms", GAUGE, "milliseconds", float,
       "Milliseconds per request, averaged since the last restart (2.4.35+).",
       auto_key="DurationPerReq",
       collectd="response_time-average", collectd_scale=0.001),
    _m("busy_workers", GAUGE, "workers", int, "Workers serving a request.",
       auto_key="BusyWorkers", tab_key="busy-workers",
       collectd="apache_connections"),
    _m("graceful_workers", GAUGE, "workers", int,
       "Workers finishing gracefully (2.4.58+).", auto_key="GracefulWorkers",
       collectd="threads-graceful"),
    _m("idle_workers", GAUGE, "workers", int, "Idle workers.",
       auto_key="IdleWorkers", tab_key="idle-workers",
       collectd="apache_idle_workers"),
    _m("processes", GAUGE, "processes", int, "Child processes (event MPM).",
       auto_key="Processes",
       collectd="count-processes"),
    _m("stopping_processes", GAUGE, "processes", int,
       "Child processes that are stopping (event MPM).", auto_key="Stopping",
       collectd="count-stopping_processes"),
    _m("conns_total", GAUGE, "connections", int, "Open connections (event MPM).",
       auto_key="ConnsTotal",
       collectd="current_connections-total"),
    _m("conns_async_wait_io", GAUGE, "connections", int,
       "Async connections waiting for I/O (event MPM, 2.4.63+).", auto_key="ConnsAsyncWaitIO",
       collectd="current_connections-async_wait_io"),
    _m("conns_async_writing", GAUGE, "connections", int,
       "Async connections writing (event MPM).", auto_key="ConnsAsyncWriting",
       collectd="current_connections-async_writing"),
    _m("conns_async_keep_alive", GAUGE, "connections", int,
       "Async connections in keep-alive (event MPM).", auto_key="ConnsAsyncKeepAlive",
       collectd="current_connections-async_keepalive"),
    _m("conns_async_closing", GAUGE, "connections", int,
       "Async connections closing (event MPM).", auto_key="ConnsAsyncClosing",
       collectd="current_connections-async_closing"),
    # mod_ssl session cache (TLSSessionCacheStatus block).
    _m("tls_cache_shared_memory_bytes", GAUGE, "bytes", int,
       "Shared memory of the TLS session cache.", auto_key="CacheSharedMemory",
       collectd="bytes-tls_cache_shared_memory"),
    _m("tls_cache_current_entries", GAUGE, "entries", int,
       "Entries in the TLS session cache.", auto_key="CacheCurrentEntries",
       collectd="count-tls_cache_entries"),
    _m("tls_cache_subcaches", GAUGE, "subcaches", int,
       "Subcaches of the TLS session cache.", auto_key="CacheSubcaches",
       collectd="count-tls_cache_subcaches"),
    _m("tls_cache_indexes_per_subcache", GAUGE, "indexes", int,
       "Indexes per subcache of the TLS session cache.", auto_key="CacheIndexesPerSubcaches",
       collectd="count-tls_cache_indexes_per_subcache"),
    _m("tls_cache_time_left_oldest_avg_seconds", GAUGE, "seconds", int,
       "Average time left of the oldest TLS sessions.", auto_key="CacheTimeLeftOldestAvg",
       collectd="duration-tls_cache_oldest_avg"),
    _m("tls_cache_time_left_oldest_min_seconds", GAUGE, "seconds", int,
       "Minimum time left of the oldest TLS sessions.", auto_key="CacheTimeLeftOldestMin",
       collectd="duration-tls_cache_oldest_min"),
    _m("tls_cache_time_left_oldest_max_seconds", GAUGE, "seconds", int,
       "Maximum time left of the oldest TLS sessions.", auto_key="CacheTimeLeftOldestMax",
       collectd="duration-tls_cache_oldest_max"),
    _m("tls_cache_index_usage_percent", GAUGE, "percent", int,
       "Index usage of the TLS session cache.", auto_key="CacheIndexUsage",
       collectd="percent-tls_cache_index_usage",
       influx="apache_tls_cache.index_usage_percent"),
    _m("tls_cache_usage_percent", GAUGE, "percent", int,
       "Usage of the TLS session cache.", auto_key="CacheUsage",
       collectd="percent-tls_cache_usage",
       influx="apache_tls_cache.usage_percent"),
    _m("tls_cache_store_count", COUNTER, "operations", int, "TLS session cache stores.",
       auto_key="CacheStoreCount",
       collectd="derive-tls_cache_store"),
    _m("tls_cache_replace_count", COUNTER, "operations", int, "TLS session cache replaces.",
       auto_key="CacheReplaceCount",
       collectd="derive-tls_cache_replace"),
    _m("tls_cache_expire_count", COUNTER, "operations", int, "TLS session cache expiries.",
       auto_key="CacheExpireCount",
       collectd="derive-tls_cache_expire"),
    _m("tls_cache_discard_count", COUNTER, "operations", int, "TLS session cache discards.",
       auto_key="CacheDiscardCount",
       collectd="derive-tls_cache_discard"),
    _m("tls_cache_retrieve_hit_count", COUNTER, "operations", int,
       "TLS session cache retrieve hits.", auto_key="CacheRetrieveHitCount",
       collectd="derive-tls_cache_retrieve_hit"),
    _m("tls_cache_retrieve_miss_count", COUNTER, "operations", int,
       "TLS session cache retrieve misses.", auto_key="CacheRetrieveMissCount",
       collectd="derive-tls_cache_retrieve_miss"),
    _m("tls_cache_remove_hit_count", COUNTER, "operations", int,
       "TLS session cache remove hits.", auto_key="CacheRemoveHitCount",
       collectd="derive-tls_cache_remove_hit"),
    _m("tls_cache_remove_miss_count", COUNTER, "operations", int,
       "TLS session cache remove misses.", auto_key="CacheRemoveMissCount",
       collectd="derive-tls_cache_remove_miss"),
)

# ?auto keys that carry text, kept as snapshot info (not samples).
INFO_KEYS = (
    "ServerVersion", "ServerMPM", "Server Built", "CurrentTime", "RestartTime",
    "ServerUptime", "CacheType", "TLSSessionCacheStatus",
)

# mod_proxy_balancer members (ProxyStatus On): ProxyBalancer[i]Worker[j]<Field>.
PROXY_METRICS: Tuple[Metric, ...] = (
    _m("proxy_worker_elected", COUNTER, "requests", int,
       "Times a balancer member was chosen.", auto_key="Elected", labels=("balancer", "worker"),
       influx="apache_proxy.elected", collectd="derive-proxy_{balancer}_{worker}_elected"),
    _m("proxy_worker_busy", GAUGE, "requests", int,
       "Requests a balancer member is serving.", auto_key="Busy", labels=("balancer", "worker"),
       influx="apache_proxy.busy", collectd="count-proxy_{balancer}_{worker}_busy"),
    _m("proxy_worker_sent_kbytes", COUNTER, "kilobytes", int,
       "Kilobytes sent to a balancer member.", auto_key="Sent", labels=("balancer", "worker"),
       influx="apache_proxy.sent_kbytes",
       collectd="total_bytes-proxy_{balancer}_{worker}_sent", collectd_scale=1024),
    _m("proxy_worker_received_kbytes", COUNTER, "kilobytes", int,
       "Kilobytes received from a balancer member.", auto_key="Rcvd",
       labels=("balancer", "worker"),
       influx="apache_proxy.received_kbytes",
       collectd="total_bytes-proxy_{balancer}_{worker}_received", collectd_scale=1024),
)

# Scoreboard characters: state name (Telegraf scboard_<name>, collectd instance).
SCOREBOARD_STATES: Tuple[Tuple[str, str], ...] = (
    ("_", "waiting"), ("S", "starting"), ("R", "reading"), ("W", "sending"),
    ("K", "keepalive"), ("D", "dnslookup"), ("C", "closing"), ("L", "logging"),
    ("G", "finishing"), ("I", "idle_cleanup"), (".", "open"),
)

SCOREBOARD_METRICS: Tuple[Metric, ...] = (
    _m("scoreboard", GAUGE, "slots", int,
       "Scoreboard slots in each state.", labels=("state",),
       influx="apache.scboard_{state}", collectd="apache_scoreboard-{state}"),
    _m("scoreboard_slots", GAUGE, "slots", int,
       "Scoreboard slots in all (about MaxRequestWorkers).",
       influx="apache_workers.scoreboard_slots", collectd="count-scoreboard_slots"),
    _m("utilisation", GAUGE, "ratio", float,
       "Busy workers divided by scoreboard slots (0..1).",
       influx="apache_workers.utilisation", collectd="percent-utilisation",
       collectd_scale=100),
)

# Figures from the HTML worker table and the event MPM's process table.
WORKER_METRICS: Tuple[Metric, ...] = (
    _m("workers_hanging", GAUGE, "workers", int,
       "Active workers whose request started at least --hanging-threshold ago.",
       tab_key="workers-hanging",
       influx="apache_workers.hanging", collectd="count-workers_hanging"),
    _m("native_worker_count", GAUGE, "workers", int,
       "Rows of the worker table that are not open slots (apache-manager's definition).",
       tab_key="native-worker-count",
       influx="apache_workers.native_worker_count",
       collectd="count-native_workers"),
    _m("foreign_worker_count", GAUGE, "processes", int,
       "Children of the Apache parent whose PID is not in the worker table "
       "(mod_wsgi daemons and other helpers).", tab_key="foreign-worker-count",
       influx="apache_workers.foreign_worker_count",
       collectd="count-foreign_workers"),
    _m("active_requests", GAUGE, "requests", int,
       "Worker table rows serving a request right now.",
       influx="apache_workers.active_requests", collectd="count-active_requests"),
    _m("longest_request_seconds", GAUGE, "seconds", int,
       "Seconds since the oldest request still being served began.",
       influx="apache_workers.longest_request_seconds",
       collectd="duration-longest_request"),
    _m("longest_request", GAUGE, "text", str,
       "Request line of the oldest request being served ('' when none).",
       influx="apache_workers.longest_request"),
    _m("longest_request_vhost", GAUGE, "text", str,
       "Virtual host of the oldest request being served ('' when none).",
       influx="apache_workers.longest_request_vhost"),
    _m("event_processes_not_accepting", GAUGE, "processes", int,
       "Event MPM processes that accept no new connections (full).",
       influx="apache_workers.event_processes_not_accepting",
       collectd="count-processes_not_accepting"),
)

# Processes seen by the process scan, per group ("native" or a mod_wsgi group).
PROCESS_METRICS: Tuple[Metric, ...] = (
    _m("memory_count", GAUGE, "processes", int, "Processes in the group.",
       labels=("group",),
       influx="apache_memory.count", collectd="count-processes_{group}"),
    _m("memory_min_bytes", GAUGE, "bytes", int, "Smallest memory use in the group.",
       labels=("group",),
       influx="apache_memory.min_bytes", collectd="memory-{group}_min"),
    _m("memory_max_bytes", GAUGE, "bytes", int, "Largest memory use in the group.",
       labels=("group",),
       influx="apache_memory.max_bytes", collectd="memory-{group}_max"),
    _m("memory_average_bytes", GAUGE, "bytes", float, "Mean memory use in the group.",
       labels=("group",),
       influx="apache_memory.average_bytes", collectd="memory-{group}_average"),
    _m("memory_median_bytes", GAUGE, "bytes", float,
       "Median memory use in the group (even count: mean of the two middle values).",
       labels=("group",),
       influx="apache_memory.median_bytes", collectd="memory-{group}_median"),
    _m("wsgi_group_name_truncated", GAUGE, "boolean", int,
       "1 when a mod_wsgi group's name was cut by the process title.", labels=("group",),
       influx="apache_memory.name_truncated",
       collectd="gauge-wsgi_name_truncated_{group}"),
)

# The reaper (apache-worker-reaper), from its state file: the original's two
# keys (the last run's kills; active includes mod_wsgi daemons, as the
# original counted them) and totals since the state file was created.
REAPER_METRICS: Tuple[Metric, ...] = (
    _m("workers_killed_active", GAUGE, "processes", int,
       "Active workers and mod_wsgi daemons killed by the reaper's last run.",
       tab_key="workers-killed-active"),
    _m("workers_killed_idle", GAUGE, "processes", int,
       "Idle workers killed by the reaper's last run.", tab_key="workers-killed-idle"),
    _m("reaper_kills_total", COUNTER, "processes", int,
       "Processes killed, by kind (native_active, native_idle, wsgi).", labels=("kind",),
       influx="apache_reaper.kills_{kind}", collectd="derive-reaper_kills_{kind}"),
    _m("reaper_kills_by_reason_total", COUNTER, "processes", int,
       "Processes killed, by reason (memory, timeout).", labels=("reason",),
       influx="apache_reaper.kills_{reason}", collectd="derive-reaper_kills_{reason}"),
    _m("reaper_sigkill_escalations_total", COUNTER, "processes", int,
       "Killed processes that needed SIGKILL after the grace period.",
       influx="apache_reaper.sigkill_escalations", collectd="derive-reaper_sigkill_escalations"),
    _m("reaper_skipped_for_safety_total", COUNTER, "processes", int,
       "Selected processes not signalled because re-verification failed (or they exited).",
       influx="apache_reaper.skipped_for_safety", collectd="derive-reaper_skipped_for_safety"),
    _m("reaper_would_kill_total", COUNTER, "processes", int,
       "Processes a dry run would have killed.",
       influx="apache_reaper.would_kill", collectd="derive-reaper_would_kill"),
    _m("reaper_state_resets_total", COUNTER, "resets", int,
       "Times a corrupt state file was set aside and the totals restarted.",
       influx="apache_reaper.state_resets", collectd="derive-reaper_state_resets"),
    _m("reaper_circuit_breaker_trips_total", COUNTER, "runs", int,
       "Runs where more processes were over a threshold than --max-kills allowed.",
       influx="apache_reaper.circuit_breaker_trips",
       collectd="derive-reaper_circuit_breaker_trips"),
    _m("reaper_runs_total", COUNTER, "runs", int, "Reaper runs (dry runs included).",
       influx="apache_reaper.runs", collectd="derive-reaper_runs"),
    _m("reaper_last_run_timestamp_seconds", GAUGE, "seconds", int,
       "When the reaper last ran (epoch).",
       influx="apache_reaper.last_run", collectd="gauge-reaper_last_run"),
)

# The collection itself.
HEALTH_METRICS: Tuple[Metric, ...] = (
    _m("up", GAUGE, "boolean", int, "1 when the status page was read, else 0.",
       influx="apache_exporter.up", collectd="gauge-up"),
    _m("push_last_success_timestamp_seconds", GAUGE, "seconds", int,
       "When the last write to InfluxDB (--format influxdb) succeeded (epoch).",
       influx="apache_exporter.push_last_success", collectd="gauge-push_last_success"),
    _m("push_spooled_points", GAUGE, "points", int,
       "Points waiting in the spool for the next successful write.",
       influx="apache_exporter.push_spooled_points", collectd="count-push_spooled_points"),
    _m("push_dropped_points_total", COUNTER, "points", int,
       "Points dropped because the spool outgrew --spool-max-bytes.",
       influx="apache_exporter.push_dropped_points", collectd="derive-push_dropped_points"),
    _m("push_quarantined_batches_total", COUNTER, "batches", int,
       "Batches the server rejected (HTTP 400), set aside in the spool's quarantine.",
       influx="apache_exporter.push_quarantined_batches",
       collectd="derive-push_quarantined_batches"),
    _m("collection_duration_seconds", GAUGE, "seconds", float,
       "Wall time of this collection.",
       influx="apache_exporter.collection_duration_seconds",
       collectd="duration-collection"),
    # The --listen endpoint's own health (Prometheus only: it is the endpoint).
    _m("scrape_failures_total", COUNTER, "scrapes", int,
       "Targets that could not be read, summed over every scrape since the endpoint "
       "started (apache_exporter's name)."),
    _m("scrape_duration_seconds", GAUGE, "seconds", float,
       "Wall time of this scrape, all targets."),
)

ALL_METRICS: Tuple[Metric, ...] = (
    SERVER_METRICS + PROXY_METRICS + SCOREBOARD_METRICS + WORKER_METRICS
    + PROCESS_METRICS + REAPER_METRICS + HEALTH_METRICS
)

BY_NAME: Dict[str, Metric] = {m.name: m for m in ALL_METRICS}
BY_AUTO_KEY: Dict[str, Metric] = {m.auto_key: m for m in SERVER_METRICS}
PROXY_BY_FIELD: Dict[str, Metric] = {m.auto_key: m for m in PROXY_METRICS}
STATE_BY_CHAR: Dict[str, str] = dict(SCOREBOARD_STATES)

MEMORY_STATS = ("count", "min", "max", "average", "median")
MEMORY_METRIC = {
    "count": "memory_count", "min": "memory_min_bytes", "max": "memory_max_bytes",
    "average": "memory_average_bytes", "median": "memory_median_bytes",
}
NATIVE_GROUP = "native"

# Prometheus (node_exporter's textfile collector): metric -> (family{constant
# labels}, scale). Names are the Prometheus apache_exporter's where it has the
# same figure, so its dashboards and alerts keep working; the rest use the
# apache_ prefix and base units. A family ending in _total is a counter.
PROMETHEUS: Dict[str, Tuple[str, float]] = {
    "up": ("apache_up", 1),
    "total_accesses": ("apache_accesses_total", 1),
    "total_kbytes": ("apache_sent_kilobytes_total", 1),
    "total_duration_ms": ("apache_duration_ms_total", 1),
    "cpu_user_seconds": ('apache_cpu_time_ms_total{type="user"}', 1000),
    "cpu_system_seconds": ('apache_cpu_time_ms_total{type="system"}', 1000),
    "cpu_children_user_seconds": ('apache_cpu_time_ms_total{type="children_user"}', 1000),
    "cpu_children_system_seconds": ('apache_cpu_time_ms_total{type="children_system"}', 1000),
    "cpu_load": ("apache_cpuload", 1),
    "uptime": ("apache_uptime_seconds_total", 1),
    "busy_workers": ('apache_workers{state="busy"}', 1),
    "idle_workers": ('apache_workers{state="idle"}', 1),
    "graceful_workers": ('apache_workers{state="graceful"}', 1),
    "processes": ('apache_processes{state="all"}', 1),
    "stopping_processes": ('apache_processes{state="stopping"}', 1),
    "conns_total": ('apache_connections{state="total"}', 1),
    "conns_async_writing": ('apache_connections{state="writing"}', 1),
    "conns_async_keep_alive": ('apache_connections{state="keepalive"}', 1),
    "conns_async_closing": ('apache_connections{state="closing"}', 1),
    "conns_async_wait_io": ('apache_connections{state="waitio"}', 1),
    "load1": ('apache_load{interval="1min"}', 1),
    "load5": ('apache_load{interval="5min"}', 1),
    "load15": ('apache_load{interval="15min"}', 1),
    "parent_server_config_generation": ('apache_generation{type="config"}', 1),
    "parent_server_mpm_generation": ('apache_generation{type="mpm"}', 1),
    "scoreboard": ("apache_scoreboard", 1),
    "requests_per_second": ("apache_requests_per_second", 1),
    "bytes_per_second": ("apache_bytes_per_second", 1),
    "bytes_per_request": ("apache_bytes_per_request", 1),
    "duration_per_request_ms": ("apache_duration_per_request_seconds", 0.001),
    "tls_cache_shared_memory_bytes": ("apache_tls_cache_shared_memory_bytes", 1),
    "tls_cache_current_entries": ("apache_tls_cache_entries", 1),
    "tls_cache_subcaches": ("apache_tls_cache_subcaches", 1),
    "tls_cache_indexes_per_subcache": ("apache_tls_cache_indexes_per_subcache", 1),
    "tls_cache_time_left_oldest_avg_seconds":
        ('apache_tls_cache_oldest_time_left_seconds{stat="avg"}', 1),
    "tls_cache_time_left_oldest_min_seconds":
        ('apache_tls_cache_oldest_time_left_seconds{stat="min"}', 1),
    "tls_cache_time_left_oldest_max_seconds":
        ('apache_tls_cache_oldest_time_left_seconds{stat="max"}', 1),
    "tls_cache_index_usage_percent": ("apache_tls_cache_index_usage_ratio", 0.01),
    "tls_cache_usage_percent": ("apache_tls_cache_usage_ratio", 0.01),
    "tls_cache_store_count": ('apache_tls_cache_operations_total{op="store"}', 1),
    "tls_cache_replace_count": ('apache_tls_cache_operations_total{op="replace"}', 1),
    "tls_cache_expire_count": ('apache_tls_cache_operations_total{op="expire"}', 1),
    "tls_cache_discard_count": ('apache_tls_cache_operations_total{op="discard"}', 1),
    "tls_cache_retrieve_hit_count": ('apache_tls_cache_operations_total{op="retrieve_hit"}', 1),
    "tls_cache_retrieve_miss_count":
        ('apache_tls_cache_operations_total{op="retrieve_miss"}', 1),
    "tls_cache_remove_hit_count": ('apache_tls_cache_operations_total{op="remove_hit"}', 1),
    "tls_cache_remove_miss_count": ('apache_tls_cache_operations_total{op="remove_miss"}', 1),
    "proxy_worker_elected": ("apache_proxy_worker_elected_total", 1),
    "proxy_worker_busy": ("apache_proxy_worker_busy", 1),
    "proxy_worker_sent_kbytes": ("apache_proxy_worker_sent_bytes_total", 1024),
    "proxy_worker_received_kbytes": ("apache_proxy_worker_received_bytes_total", 1024),
    "scoreboard_slots": ("apache_scoreboard_slots", 1),
    "utilisation": ("apache_utilisation_ratio", 1),
    "workers_hanging": ("apache_hanging_workers", 1),
    "native_worker_count": ("apache_native_workers", 1),
    "foreign_worker_count": ("apache_foreign_processes", 1),
    "active_requests": ("apache_active_requests", 1),
    "longest_request_seconds": ("apache_longest_request_seconds", 1),
    "event_processes_not_accepting": ("apache_processes_not_accepting", 1),
    "memory_count": ("apache_group_processes", 1),
    "memory_min_bytes": ("apache_group_memory_min_bytes", 1),
    "memory_max_bytes": ("apache_group_memory_max_bytes", 1),
    "memory_average_bytes": ("apache_group_memory_average_bytes", 1),
    "memory_median_bytes": ("apache_group_memory_median_bytes", 1),
    "wsgi_group_name_truncated": ("apache_wsgi_group_name_truncated", 1),
    "workers_killed_active": ('apache_reaper_last_run_killed{state="active"}', 1),
    "workers_killed_idle": ('apache_reaper_last_run_killed{state="idle"}', 1),
    "reaper_kills_total": ("apache_reaper_kills_total", 1),
    "reaper_kills_by_reason_total": ("apache_reaper_kills_by_reason_total", 1),
    "reaper_sigkill_escalations_total": ("apache_reaper_sigkill_escalations_total", 1),
    "reaper_skipped_for_safety_total": ("apache_reaper_skipped_for_safety_total", 1),
    "reaper_would_kill_total": ("apache_reaper_would_kill_total", 1),
    "reaper_state_resets_total": ("apache_reaper_state_resets_total", 1),
    "reaper_circuit_breaker_trips_total": ("apache_reaper_circuit_breaker_trips_total", 1),
    "reaper_runs_total": ("apache_reaper_runs_total", 1),
    "reaper_last_run_timestamp_seconds": ("apache_reaper_last_run_timestamp_seconds", 1),
    "push_last_success_timestamp_seconds": ("apache_push_last_success_timestamp_seconds", 1),
    "push_spooled_points": ("apache_push_spooled_points", 1),
    "push_dropped_points_total": ("apache_push_dropped_points_total", 1),
    "push_quarantined_batches_total": ("apache_push_quarantined_batches_total", 1),
    "collection_duration_seconds": ("apache_collection_duration_seconds", 1),
    "scrape_failures_total": ("apache_exporter_scrape_failures_total", 1),
    "scrape_duration_seconds": ("apache_exporter_scrape_duration_seconds", 1),
}

# apache_exporter's scoreboard state names.
PROMETHEUS_SCOREBOARD = {
    "waiting": "idle", "starting": "startup", "reading": "read", "sending": "reply",
    "keepalive": "keepalive", "dnslookup": "dns", "closing": "closing", "logging": "logging",
    "finishing": "graceful_stop", "idle_cleanup": "idle_cleanup", "open": "open_slot",
}

# HELP of families that several catalogue metrics share.
PROMETHEUS_HELP = {
    "apache_workers": "Apache worker threads by state (busy, idle, graceful).",
    "apache_processes": "Apache child processes (event MPM): all, stopping.",
    "apache_connections": "Apache connections (event MPM) by state.",
    "apache_load": "System load average as Apache reports it.",
    "apache_generation": "Apache configuration and MPM generation.",
    "apache_cpu_time_ms_total": "Apache CPU time in milliseconds, by type.",
    "apache_scoreboard": "Apache scoreboard slots by state.",
    "apache_tls_cache_oldest_time_left_seconds":
        "Time left of the oldest TLS session cache entries (avg, min, max).",
    "apache_tls_cache_operations_total": "TLS session cache operations, by kind.",
    "apache_reaper_last_run_killed":
        "Processes killed by the reaper's last run (active includes mod_wsgi daemons).",
}

# --prometheus-naming base-units: the three apache_exporter names that break
# Prometheus' base-unit rules, and what they become.
PROMETHEUS_BASE_UNITS = {
    "apache_sent_kilobytes_total": ("apache_sent_bytes_total", 1024),
    "apache_duration_ms_total": ("apache_duration_seconds_total", 0.001),
    "apache_cpu_time_ms_total": ("apache_cpu_time_seconds_total", 0.001),
}
