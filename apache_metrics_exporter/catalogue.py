"""Every metric this tool reports, defined once: name, kind, unit, value type, help.

Writers map these canonical names to their ecosystem's names (the tab file's
apache-manager keys, Telegraf's field names, collectd's types) and never make up
metrics of their own. The parser fills server metrics by ``auto_key`` (the key on
mod_status's ``?auto`` page); the collector fills the rest.
"""

from __future__ import annotations

from operator import itemgetter
from operator import le as _le

from apache_metrics_exporter.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, Iterable, Optional, Tuple

GAUGE = "gauge"
COUNTER = "counter"


class Metric(NamedTuple):
    """One metric: what it is and how each writer names it."""

    name: str  # canonical snake_case name
    kind: str  # GAUGE or COUNTER
    unit: str  # "requests", "bytes", "seconds", "ratio", ...
    type: type  # int, float or str: fixed once, writers keep it
    help: str
    auto_key: Optional[str] = None  # key on the ?auto page, if read from there
    tab_key: Optional[str] = None  # key in apache-manager's original sections
    tab_scale: int = 1  # factor the original applied (kB -> bytes)
    labels: Tuple[str, ...] = ()  # label names a sample carries
    # Influx line protocol: "measurement.field" ({label} placeholders allowed).
    # Measurement "apache" is Telegraf's inputs.apache: every field a float.
    influx: Optional[str] = None
    # collectd: "type-instance" from the stock types.db ({label} placeholders
    # allowed), or "type:N" for data source N of a multi-value type (load).
    collectd: Optional[str] = None
    collectd_scale: float = 1  # e.g. kB -> bytes, seconds -> ms, ratio -> %
    # Prometheus: 'family{label="constant",...}' (the family's kind, unit and
    # help: FAMILIES, else this metric's); the sample's own labels are added.
    prom: Optional[str] = None
    prom_scale: float = 1  # e.g. seconds -> ms for apache_exporter's names
    absent: Tuple[Tuple[str, str], ...] = ()  # (format, why it is not there)


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
       collectd="gauge-config_generation",
       prom='apache_generation{type="config"}'),
    _m("parent_server_mpm_generation", GAUGE, "generation", int,
       "MPM generation of the parent.", auto_key="ParentServerMPMGeneration",
       collectd="gauge-mpm_generation",
       prom='apache_generation{type="mpm"}'),
    _m("server_uptime_seconds", GAUGE, "seconds", int,
       "Seconds since the server (re)started.", auto_key="ServerUptimeSeconds",
       absent=(("prometheus", "the same as Uptime: apache_uptime_seconds_total"),
               ("collectd", "the same as Uptime: uptime"))),
    _m("load1", GAUGE, "load", float, "System load average over 1 minute.", auto_key="Load1",
       collectd="load:0",
       prom='apache_load{interval="1min"}'),
    _m("load5", GAUGE, "load", float, "System load average over 5 minutes.", auto_key="Load5",
       collectd="load:1",
       prom='apache_load{interval="5min"}'),
    _m("load15", GAUGE, "load", float, "System load average over 15 minutes.", auto_key="Load15",
       collectd="load:2",
       prom='apache_load{interval="15min"}'),
    _m("total_accesses", COUNTER, "requests", int,
       "Requests served since the last restart (ExtendedStatus).",
       auto_key="Total Accesses", tab_key="total-accesses",
       collectd="apache_requests",
       prom='apache_accesses_total'),
    _m("total_kbytes", COUNTER, "kilobytes", int,
       "Kilobytes sent since the last restart (ExtendedStatus).",
       auto_key="Total kBytes", tab_key="total-traffic", tab_scale=1024,
       collectd="apache_bytes", collectd_scale=1024,
       prom='apache_sent_kilobytes_total'),
    _m("total_duration_ms", COUNTER, "milliseconds", int,
       "Milliseconds spent serving requests since the last restart (2.4.35+).",
       auto_key="Total Duration",
       collectd="total_time_in_ms-requests",
       prom='apache_duration_ms_total'),
    _m("cpu_user_seconds", COUNTER, "seconds", float, "User CPU time of the server.",
       auto_key="CPUUser",
       collectd="total_time_in_ms-cpu_user", collectd_scale=1000,
       absent=(("prometheus", "apache_exporter's user CPU time adds the children's: "
                              "cpu_total_user_seconds"),)),
    _m("cpu_system_seconds", COUNTER, "seconds", float, "System CPU time of the server.",
       auto_key="CPUSystem",
       collectd="total_time_in_ms-cpu_system", collectd_scale=1000,
       absent=(("prometheus", "apache_exporter's system CPU time adds the children's: "
                              "cpu_total_system_seconds"),)),
    _m("cpu_children_user_seconds", COUNTER, "seconds", float,
       "User CPU time of terminated children.", auto_key="CPUChildrenUser",
       collectd="total_time_in_ms-cpu_children_user", collectd_scale=1000,
       prom='apache_cpu_children_seconds_total{type="user"}'),
    _m("cpu_children_system_seconds", COUNTER, "seconds", float,
       "System CPU time of terminated children.", auto_key="CPUChildrenSystem",
       collectd="total_time_in_ms-cpu_children_system",
       collectd_scale=1000,
       prom='apache_cpu_children_seconds_total{type="system"}'),
    _m("cpu_load", GAUGE, "percent", float,
       "CPU use in percent, averaged since the last restart.",
       auto_key="CPULoad", tab_key="cpu-load",
       collectd="gauge-cpu_load",
       prom='apache_cpuload'),
    _m("uptime", GAUGE, "seconds", int, "Seconds since the last restart.",
       auto_key="Uptime", tab_key="uptime",
       collectd="uptime",
       prom='apache_uptime_seconds_total'),
    _m("requests_per_second", GAUGE, "requests/second", float,
       "Requests per second, averaged since the last restart.",
       auto_key="ReqPerSec", tab_key="requests-per-second",
       collectd="gauge-requests_per_second",
       prom='apache_requests_per_second'),
    _m("bytes_per_second", GAUGE, "bytes/second", float,
       "Bytes per second, averaged since the last restart.",
       auto_key="BytesPerSec", tab_key="bytes-per-second",
       collectd="gauge-bytes_per_second",
       prom='apache_bytes_per_second'),
    _m("bytes_per_request", GAUGE, "bytes", float,
       "Bytes per request, averaged since the last restart.",
       auto_key="BytesPerReq", tab_key="bytes-per-request",
       collectd="bytes-per_request",
       prom='apache_bytes_per_request'),
    _m("duration_per_request_ms", GAUGE, "milliseconds", float,
       "Milliseconds per request, averaged since the last restart (2.4.35+).",
       auto_key="DurationPerReq",
       collectd="response_time-average", collectd_scale=0.001,
       prom='apache_duration_per_request_seconds', prom_scale=0.001),
    _m("busy_workers", GAUGE, "workers", int, "Workers serving a request.",
       auto_key="BusyWorkers", tab_key="busy-workers",
       collectd="apache_connections",
       prom='apache_workers{state="busy"}'),
    _m("graceful_workers", GAUGE, "workers", int,
       "Workers finishing gracefully (2.4.58+).", auto_key="GracefulWorkers",
       collectd="threads-graceful",
       prom='apache_graceful_workers'),
    _m("idle_workers", GAUGE, "workers", int, "Idle workers.",
       auto_key="IdleWorkers", tab_key="idle-workers",
       collectd="apache_idle_workers",
       prom='apache_workers{state="idle"}'),
    _m("processes", GAUGE, "processes", int, "Child processes (event MPM).",
       auto_key="Processes",
       collectd="count-processes",
       prom='apache_processes{state="all"}'),
    _m("stopping_processes", GAUGE, "processes", int,
       "Child processes that are stopping (event MPM).", auto_key="Stopping",
       collectd="count-stopping_processes",
       prom='apache_processes{state="stopping"}'),
    _m("conns_total", GAUGE, "connections", int, "Open connections (event MPM).",
       auto_key="ConnsTotal",
       collectd="current_connections-total",
       prom='apache_connections{state="total"}'),
    _m("conns_async_wait_io", GAUGE, "connections", int,
       "Async connections waiting for I/O (event MPM, 2.4.63+).", auto_key="ConnsAsyncWaitIO",
       collectd="current_connections-async_wait_io",
       prom='apache_connections_async_wait_io'),
    _m("conns_async_writing", GAUGE, "connections", int,
       "Async connections writing (event MPM).", auto_key="ConnsAsyncWriting",
       collectd="current_connections-async_writing",
       prom='apache_connections{state="writing"}'),
    _m("conns_async_keep_alive", GAUGE, "connections", int,
       "Async connections in keep-alive (event MPM).", auto_key="ConnsAsyncKeepAlive",
       collectd="current_connections-async_keepalive",
       prom='apache_connections{state="keepalive"}'),
    _m("conns_async_closing", GAUGE, "connections", int,
       "Async connections closing (event MPM).", auto_key="ConnsAsyncClosing",
       collectd="current_connections-async_closing",
       prom='apache_connections{state="closing"}'),
    # mod_ssl session cache (TLSSessionCacheStatus block).
    _m("tls_cache_shared_memory_bytes", GAUGE, "bytes", int,
       "Shared memory of the TLS session cache.", auto_key="CacheSharedMemory",
       collectd="bytes-tls_cache_shared_memory",
       prom='apache_tls_cache_shared_memory_bytes'),
    _m("tls_cache_current_entries", GAUGE, "entries", int,
       "Entries in the TLS session cache.", auto_key="CacheCurrentEntries",
       collectd="count-tls_cache_entries",
       prom='apache_tls_cache_entries'),
    _m("tls_cache_subcaches", GAUGE, "subcaches", int,
       "Subcaches of the TLS session cache.", auto_key="CacheSubcaches",
       collectd="count-tls_cache_subcaches",
       prom='apache_tls_cache_subcaches'),
    _m("tls_cache_indexes_per_subcache", GAUGE, "indexes", int,
       "Indexes per subcache of the TLS session cache.", auto_key="CacheIndexesPerSubcaches",
       collectd="count-tls_cache_indexes_per_subcache",
       prom='apache_tls_cache_indexes_per_subcache'),
    _m("tls_cache_time_left_oldest_avg_seconds", GAUGE, "seconds", int,
       "Average time left of the oldest TLS sessions.", auto_key="CacheTimeLeftOldestAvg",
       collectd="duration-tls_cache_oldest_avg",
       prom='apache_tls_cache_oldest_time_left_seconds{stat="avg"}'),
    _m("tls_cache_time_left_oldest_min_seconds", GAUGE, "seconds", int,
       "Minimum time left of the oldest TLS sessions.", auto_key="CacheTimeLeftOldestMin",
       collectd="duration-tls_cache_oldest_min",
       prom='apache_tls_cache_oldest_time_left_seconds{stat="min"}'),
    _m("tls_cache_time_left_oldest_max_seconds", GAUGE, "seconds", int,
       "Maximum time left of the oldest TLS sessions.", auto_key="CacheTimeLeftOldestMax",
       collectd="duration-tls_cache_oldest_max",
       prom='apache_tls_cache_oldest_time_left_seconds{stat="max"}'),
    _m("tls_cache_index_usage_percent", GAUGE, "percent", int,
       "Index usage of the TLS session cache.", auto_key="CacheIndexUsage",
       collectd="percent-tls_cache_index_usage",
       influx="apache_tls_cache.index_usage_percent",
       prom='apache_tls_cache_index_usage_ratio', prom_scale=0.01),
    _m("tls_cache_usage_percent", GAUGE, "percent", int,
       "Usage of the TLS session cache.", auto_key="CacheUsage",
       collectd="percent-tls_cache_usage",
       influx="apache_tls_cache.usage_percent",
       prom='apache_tls_cache_usage_ratio', prom_scale=0.01),
    _m("tls_cache_store_count", COUNTER, "operations", int, "TLS session cache stores.",
       auto_key="CacheStoreCount",
       collectd="derive-tls_cache_store",
       prom='apache_tls_cache_operations_total{op="store"}'),
    _m("tls_cache_replace_count", COUNTER, "operations", int, "TLS session cache replaces.",
       auto_key="CacheReplaceCount",
       collectd="derive-tls_cache_replace",
       prom='apache_tls_cache_operations_total{op="replace"}'),
    _m("tls_cache_expire_count", COUNTER, "operations", int, "TLS session cache expiries.",
       auto_key="CacheExpireCount",
       collectd="derive-tls_cache_expire",
       prom='apache_tls_cache_operations_total{op="expire"}'),
    _m("tls_cache_discard_count", COUNTER, "operations", int, "TLS session cache discards.",
       auto_key="CacheDiscardCount",
       collectd="derive-tls_cache_discard",
       prom='apache_tls_cache_operations_total{op="discard"}'),
    _m("tls_cache_retrieve_hit_count", COUNTER, "operations", int,
       "TLS session cache retrieve hits.", auto_key="CacheRetrieveHitCount",
       collectd="derive-tls_cache_retrieve_hit",
       prom='apache_tls_cache_operations_total{op="retrieve_hit"}'),
    _m("tls_cache_retrieve_miss_count", COUNTER, "operations", int,
       "TLS session cache retrieve misses.", auto_key="CacheRetrieveMissCount",
       collectd="derive-tls_cache_retrieve_miss",
       prom='apache_tls_cache_operations_total{op="retrieve_miss"}'),
    _m("tls_cache_remove_hit_count", COUNTER, "operations", int,
       "TLS session cache remove hits.", auto_key="CacheRemoveHitCount",
       collectd="derive-tls_cache_remove_hit",
       prom='apache_tls_cache_operations_total{op="remove_hit"}'),
    _m("tls_cache_remove_miss_count", COUNTER, "operations", int,
       "TLS session cache remove misses.", auto_key="CacheRemoveMissCount",
       collectd="derive-tls_cache_remove_miss",
       prom='apache_tls_cache_operations_total{op="remove_miss"}'),
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
       influx="apache_proxy.elected", collectd="derive-proxy_{balancer}_{worker}_elected",
       prom='apache_proxy_balancer_accesses_total'),
    _m("proxy_worker_busy", GAUGE, "requests", int,
       "Requests a balancer member is serving.", auto_key="Busy", labels=("balancer", "worker"),
       influx="apache_proxy.busy", collectd="count-proxy_{balancer}_{worker}_busy",
       prom='apache_proxy_balancer_busy'),
    _m("proxy_worker_sent_kbytes", COUNTER, "kilobytes", int,
       "Kilobytes sent to a balancer member.", auto_key="Sent", labels=("balancer", "worker"),
       influx="apache_proxy.sent_kbytes",
       collectd="total_bytes-proxy_{balancer}_{worker}_sent", collectd_scale=1024,
       prom='apache_proxy_balancer_request_kbytes_total'),
    _m("proxy_worker_received_kbytes", COUNTER, "kilobytes", int,
       "Kilobytes received from a balancer member.", auto_key="Rcvd",
       labels=("balancer", "worker"),
       influx="apache_proxy.received_kbytes",
       collectd="total_bytes-proxy_{balancer}_{worker}_received", collectd_scale=1024,
       prom='apache_proxy_balancer_response_kbytes_total'),
)

# Figures made from several ?auto lines, where a peer reports them so
# (apache_exporter's CPU time and version).
DERIVED_METRICS: Tuple[Metric, ...] = (
    _m("cpu_total_user_seconds", COUNTER, "seconds", float,
       "User CPU time of the server and its terminated children (CPUUser + "
       "CPUChildrenUser).", prom='apache_cpu_time_ms_total{type="user"}', prom_scale=1000,
       absent=(("influx", "Telegraf's fields are the page's own keys"),
               ("collectd", "the two parts are there"), ("tab", "the two parts are there"))),
    _m("cpu_total_system_seconds", COUNTER, "seconds", float,
       "System CPU time of the server and its terminated children (CPUSystem + "
       "CPUChildrenSystem).", prom='apache_cpu_time_ms_total{type="system"}',
       prom_scale=1000,
       absent=(("influx", "Telegraf's fields are the page's own keys"),
               ("collectd", "the two parts are there"), ("tab", "the two parts are there"))),
    _m("proxy_worker_status", GAUGE, "info", int,
       "Always 1; the status label is the balancer member's Status text.",
       labels=("balancer", "worker", "status"), prom="apache_proxy_balancer_status",
       absent=(("influx", "text; not a Telegraf field"), ("collectd", "text"),
               ("tab", "text"))),
    _m("info", GAUGE, "info", int,
       "Always 1; labels version (ServerVersion) and mpm (ServerMPM), UNKNOWN if absent.",
       labels=("version", "mpm"), prom="apache_info",
       absent=(("influx", "text; not a Telegraf field"), ("collectd", "text"),
               ("tab", "text"))),
    _m("version", GAUGE, "version", float,
       "The Apache version as a number, major.minor(2 digits)patch(3 digits): "
       "2.4.71 is 2.04071 (apache_exporter's convention).", prom="apache_version",
       absent=(("influx", "not a Telegraf field"), ("collectd", "not a measurement"),
               ("tab", "not a measurement"))),
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
       influx="apache.scboard_{state}", collectd="apache_scoreboard-{state}",
       prom='apache_scoreboard'),
    _m("scoreboard_slots", GAUGE, "slots", int,
       "Scoreboard slots in all (about MaxRequestWorkers).",
       influx="apache_workers.scoreboard_slots", collectd="count-scoreboard_slots",
       prom='apache_scoreboard_slots'),
    _m("utilisation", GAUGE, "ratio", float,
       "Busy workers divided by scoreboard slots (0..1).",
       influx="apache_workers.utilisation", collectd="percent-utilisation",
       collectd_scale=100,
       prom='apache_utilisation_ratio'),
)

# Figures from the HTML worker table and the event MPM's process table.
WORKER_METRICS: Tuple[Metric, ...] = (
    _m("workers_hanging", GAUGE, "workers", int,
       "Active workers whose request started at least --hanging-threshold ago.",
       tab_key="workers-hanging",
       influx="apache_workers.hanging", collectd="count-workers_hanging",
       prom='apache_hanging_workers'),
    _m("native_worker_count", GAUGE, "workers", int,
       "Rows of the worker table that are not open slots (apache-manager's definition).",
       tab_key="native-worker-count",
       influx="apache_workers.native_worker_count",
       collectd="count-native_workers",
       prom='apache_native_workers'),
    _m("foreign_worker_count", GAUGE, "processes", int,
       "Children of the Apache parent whose PID is not in the worker table "
       "(mod_wsgi daemons and other helpers).", tab_key="foreign-worker-count",
       influx="apache_workers.foreign_worker_count",
       collectd="count-foreign_workers",
       prom='apache_foreign_processes'),
    _m("active_requests", GAUGE, "requests", int,
       "Worker table rows serving a request right now.",
       influx="apache_workers.active_requests", collectd="count-active_requests",
       prom='apache_active_requests'),
    _m("longest_request_seconds", GAUGE, "seconds", int,
       "Seconds since the oldest request still being served began.",
       influx="apache_workers.longest_request_seconds",
       collectd="duration-longest_request",
       prom='apache_longest_request_seconds'),
    _m("longest_request", GAUGE, "text", str,
       "Request line of the oldest request being served ('' when none).",
       influx="apache_workers.longest_request",
       absent=(("prometheus", "text"), ("collectd", "text"))),
    _m("longest_request_vhost", GAUGE, "text", str,
       "Virtual host of the oldest request being served ('' when none).",
       influx="apache_workers.longest_request_vhost",
       absent=(("prometheus", "text"), ("collectd", "text"))),
    _m("event_processes_not_accepting", GAUGE, "processes", int,
       "Event MPM processes that accept no new connections (full).",
       influx="apache_workers.event_processes_not_accepting",
       collectd="count-processes_not_accepting",
       prom='apache_processes_not_accepting'),
)

# Per virtual host, from the worker table (--vhost-limit hosts, the rest summed
# as vhost "other").
VHOST_METRICS: Tuple[Metric, ...] = (
    _m("vhost_busy_workers", GAUGE, "workers", int,
       "Workers busy for a virtual host (worker table rows not idle or open).",
       labels=("vhost",), influx="apache_vhost.busy_workers",
       collectd="count-vhost_busy_{vhost}", prom="apache_vhost_busy_workers"),
    _m("vhost_requests_in_flight", GAUGE, "requests", int,
       "Requests of a virtual host being answered right now (rows in state W).",
       labels=("vhost",), influx="apache_vhost.requests_in_flight",
       collectd="count-vhost_in_flight_{vhost}", prom="apache_vhost_requests_in_flight"),
    _m("vhost_longest_request_seconds", GAUGE, "seconds", int,
       "Seconds since the oldest request of a virtual host still being answered began.",
       labels=("vhost",), influx="apache_vhost.longest_request_seconds",
       collectd="duration-vhost_longest_{vhost}",
       prom="apache_vhost_longest_request_seconds"),
)

# Slow clients and clients holding workers (docs/insight.md), from the worker
# table: rows reading a request (R) and the client address of every busy row.
# The collector's own request for the page is not counted. Addresses are
# labels only with --client-limit N (cardinality, privacy): the N clients
# holding most busy workers, the rest summed as client "other".
CLIENT_METRICS: Tuple[Metric, ...] = (
    _m("reading_workers", GAUGE, "workers", int,
       "Worker table rows reading a request (state R): a client that sends its "
       "request slowly (slowloris) holds one of these.",
       influx="apache_clients.reading_workers", collectd="count-reading_workers",
       prom="apache_reading_workers"),
    _m("reading_oldest_seconds", GAUGE, "seconds", int,
       "SS of the oldest worker reading a request (state R); 0 when none reads. An "
       "upper bound: Apache counts it from the slot's last request or idle start, "
       "which can be before the connection came.",
       influx="apache_clients.reading_oldest_seconds", collectd="duration-reading_oldest",
       prom="apache_reading_oldest_seconds"),
    _m("busy_clients", GAUGE, "clients", int,
       "Distinct client addresses among busy workers (worker table rows not idle or "
       "open and with an address; the collector's own request left out).",
       influx="apache_clients.busy_clients", collectd="count-busy_clients",
       prom="apache_busy_clients"),
    _m("top_client_share", GAUGE, "ratio", float,
       "Share of the busy workers held by client addresses that the top address "
       "holds (0..1; 0 when no client holds a worker).",
       influx="apache_clients.top_client_share", collectd="percent-top_client_share",
       collectd_scale=100, prom="apache_top_client_share_ratio"),
    _m("client_busy_workers", GAUGE, "workers", int,
       "Busy workers held by a client address (--client-limit N: the N clients with "
       "most, the rest summed as client 'other').", labels=("client",),
       influx="apache_client.busy_workers", collectd="count-client_busy_{client}",
       prom="apache_client_busy_workers"),
)

# Processes seen by the process scan, per group ("native" or a mod_wsgi group).
PROCESS_METRICS: Tuple[Metric, ...] = (
    _m("memory_count", GAUGE, "processes", int, "Processes in the group.",
       labels=("group",),
       influx="apache_memory.count", collectd="count-processes_{group}",
       prom='apache_group_processes'),
    _m("memory_min_bytes", GAUGE, "bytes", int, "Smallest memory use in the group.",
       labels=("group",),
       influx="apache_memory.min_bytes", collectd="memory-{group}_min",
       prom='apache_group_memory_min_bytes'),
    _m("memory_max_bytes", GAUGE, "bytes", int, "Largest memory use in the group.",
       labels=("group",),
       influx="apache_memory.max_bytes", collectd="memory-{group}_max",
       prom='apache_group_memory_max_bytes'),
    _m("memory_average_bytes", GAUGE, "bytes", float, "Mean memory use in the group.",
       labels=("group",),
       influx="apache_memory.average_bytes", collectd="memory-{group}_average",
       prom='apache_group_memory_average_bytes'),
    _m("memory_median_bytes", GAUGE, "bytes", float,
       "Median memory use in the group (even count: mean of the two middle values).",
       labels=("group",),
       influx="apache_memory.median_bytes", collectd="memory-{group}_median",
       prom='apache_group_memory_median_bytes'),
    _m("wsgi_group_name_truncated", GAUGE, "boolean", int,
       "1 when a mod_wsgi group's name was cut by the process title.", labels=("group",),
       influx="apache_memory.name_truncated",
       collectd="gauge-wsgi_name_truncated_{group}",
       prom='apache_wsgi_group_name_truncated'),
)

# The reaper (apache-worker-reaper), from its state file: the last run's
# kills by kind (the tab file derives apache-manager's workers-killed-active,
# mod_wsgi daemons included as the original counted them, and
# workers-killed-idle from them) and totals since the state file was created.
REAPER_METRICS: Tuple[Metric, ...] = (
    _m("reaper_last_run_kills", GAUGE, "processes", int,
       "Processes killed by the reaper's last run, by kind (native_active, native_idle, "
       "wsgi); 0 when no reaper ever ran.", labels=("kind",),
       influx="apache_reaper.last_run_kills_{kind}",
       collectd="gauge-reaper_last_run_kills_{kind}", prom="apache_reaper_last_run_kills",
       absent=(("tab", "written as apache-manager's workers-killed-active (native_active + "
                       "wsgi) and workers-killed-idle (native_idle)"),)),
    _m("reaper_kills_total", COUNTER, "processes", int,
       "Processes killed, by kind (native_active, native_idle, wsgi).", labels=("kind",),
       influx="apache_reaper.kills_{kind}", collectd="derive-reaper_kills_{kind}",
       prom='apache_reaper_kills_total'),
    _m("reaper_kills_by_reason_total", COUNTER, "processes", int,
       "Processes killed, by reason (memory, timeout).", labels=("reason",),
       influx="apache_reaper.kills_{reason}", collectd="derive-reaper_kills_{reason}",
       prom='apache_reaper_kills_by_reason_total'),
    _m("reaper_sigkill_escalations_total", COUNTER, "processes", int,
       "Killed processes that needed SIGKILL after the grace period.",
       influx="apache_reaper.sigkill_escalations", collectd="derive-reaper_sigkill_escalations",
       prom='apache_reaper_sigkill_escalations_total'),
    _m("reaper_skipped_for_safety_total", COUNTER, "processes", int,
       "Selected processes not signalled because re-verification failed (or they exited).",
       influx="apache_reaper.skipped_for_safety", collectd="derive-reaper_skipped_for_safety",
       prom='apache_reaper_skipped_for_safety_total'),
    _m("reaper_would_kill_total", COUNTER, "processes", int,
       "Processes a dry run would have killed.",
       influx="apache_reaper.would_kill", collectd="derive-reaper_would_kill",
       prom='apache_reaper_would_kill_total'),
    _m("reaper_state_resets_total", COUNTER, "resets", int,
       "Times a corrupt state file was set aside and the totals restarted.",
       influx="apache_reaper.state_resets", collectd="derive-reaper_state_resets",
       prom='apache_reaper_state_resets_total'),
    _m("reaper_circuit_breaker_trips_total", COUNTER, "runs", int,
       "Runs where more processes were over a threshold than --max-kills allowed.",
       influx="apache_reaper.circuit_breaker_trips",
       collectd="derive-reaper_circuit_breaker_trips",
       prom='apache_reaper_circuit_breaker_trips_total'),
    _m("reaper_unproven_runs_total", COUNTER, "runs", int,
       "Reaper runs that signalled nothing because the Apache serving --url could not "
       "be proven (nothing listening, not Apache, no right to see the listener).",
       influx="apache_reaper.unproven_runs", collectd="derive-reaper_unproven_runs",
       prom="apache_reaper_unproven_runs_total"),
    _m("reaper_runs_total", COUNTER, "runs", int,
       "Reaper runs that could act (dry runs change no counter but would-kill).",
       influx="apache_reaper.runs", collectd="derive-reaper_runs",
       prom='apache_reaper_runs_total'),
    _m("reaper_last_run_timestamp_seconds", GAUGE, "seconds", int,
       "When the reaper last ran (epoch).",
       influx="apache_reaper.last_run", collectd="gauge-reaper_last_run",
       prom='apache_reaper_last_run_timestamp_seconds'),
)

# Saturation, from the kernel rather than the page (docs/insight.md): the
# accept queues of the proven Apache's listening sockets, read in the same
# sock_diag query that proves which Apache serves the URL, so they are still
# there when the status page cannot be fetched; and why it could not be.
# Left out (never 0) when the sockets cannot be read: a remote URL, an
# Apache not proven to own the socket, --no-processes.
SATURATION_METRICS: Tuple[Metric, ...] = (
    _m("accept_queue_length", GAUGE, "connections", int,
       "Connections waiting in the accept queue of a listening socket of the proven "
       "Apache (handshake done, not yet accepted by a worker), by listen address "
       "(ADDRESS:PORT), at collection time (the kernel's sock_diag; a local Apache "
       "only).", labels=("listen",), tab_key="accept-queue-length",
       influx="apache_accept_queue.length", collectd="queue_length-accept_{listen}",
       prom="apache_accept_queue_length"),
    _m("accept_queue_limit", GAUGE, "connections", int,
       "Backlog limit of that accept queue, by listen address: min(ListenBacklog, "
       "net.core.somaxconn) as the kernel applies it; once the queue is past it, new "
       "connections are dropped (left out where only /proc/net/tcp can be read).",
       labels=("listen",), tab_key="accept-queue-limit",
       influx="apache_accept_queue.limit", collectd="queue_length-accept_limit_{listen}",
       prom="apache_accept_queue_limit"),
    _m("accept_queue_length_all", GAUGE, "connections", int,
       "Connections waiting in the accept queues of all the listening sockets of the "
       "proven Apache that the URL can reach (the sum of accept_queue_length).",
       tab_key="accept-queue-length-all",
       influx="apache_accept_queue.length_all", collectd="queue_length-accept_all",
       prom="apache_accept_queue_length_all"),
    _m("accept_queue_limit_all", GAUGE, "connections", int,
       "Sum of the backlog limits of those accept queues (the sum of accept_queue_limit; "
       "left out when one of them is unknown).",
       tab_key="accept-queue-limit-all",
       influx="apache_accept_queue.limit_all", collectd="queue_length-accept_limit_all",
       prom="apache_accept_queue_limit_all"),
    _m("up_reason", GAUGE, "boolean", int,
       "A state set: 1 for the reason the status page could not be read (ok when it "
       "was), 0 for every other reason (see status_reason for the words).",
       labels=("reason",), collectd="gauge-up_reason_{reason}", prom="apache_up_reason",
       absent=(("influx", "the word itself: status_reason"),
               ("tab", "the word itself: status_reason"))),
    _m("status_reason", GAUGE, "text", str,
       "Why the status page could not be read, one word: ok (it was read), refused, "
       "saturated (timed out while connections waited in the accept queue: no worker "
       "took them), timeout (timed out otherwise), http_error, not_status_page, tls, "
       "resolve, unreachable, bad_response (cut short, too large, not HTTP), error.",
       tab_key="status-reason", influx="apache_status.reason",
       absent=(("prometheus", "a state set: up_reason"),
               ("collectd", "text; a state set: up_reason"))),
)



# ---------------------------------------------------------------------------
# Interval figures (issue 20: rates and request durations). Derived from this
# collection and the previous reading of the same target (restarts.py keeps
# it, intervals.py computes them); left out on the first collection, after a
# hard restart and when no previous reading can be used, never written as 0.
HISTOGRAM = "histogram"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURATION_STATS = ("p50", "p90", "p99", "max")
_NO_HIST = (("tab", "Prometheus' cumulative histogram; p50/p90/p99/max and the sampled "
                    "count are written instead"),
            ("influx", "Prometheus' cumulative histogram; p50/p90/p99/max and the sampled "
                       "count are written instead"),
            ("collectd", "Prometheus' cumulative histogram; p50/p90/p99/max and the sampled "
                         "count are written instead"))
_NO_STAT = (("prometheus", "histogram_quantile() over apache_request_duration_seconds_bucket "
                           "gives any quantile"),)


def _duration_metrics(prefix: str, labels: Tuple[str, ...], influx: str, collectd: str,
                      prom: str, who: str) -> Tuple[Metric, ...]:
    """The request-duration figures of the server (prefix "") or of each vhost."""
    tag = "_{vhost}" if labels else ""
    out = [
        _m(f"{prefix}request_duration_bucket", COUNTER, "requests", int,
           f"Requests of {who} sampled from the worker table, by duration bucket "
           "(cumulative since the exporter's previous reading began).", labels=labels + ("le",),
           prom=f"{prom}_bucket", absent=_NO_HIST),
        _m(f"{prefix}request_duration_sum", COUNTER, "seconds", float,
           f"Total duration of the sampled requests of {who}.", labels=labels,
           prom=f"{prom}_sum", absent=_NO_HIST),
        _m(f"{prefix}request_duration_count", COUNTER, "requests", int,
           f"Sampled requests of {who}.", labels=labels,
           prom=f"{prom}_count", absent=_NO_HIST),
    ]
    for stat in DURATION_STATS:
        what = "Longest" if stat == "max" else f"{stat[1:]}th percentile of the"
        out.append(_m(
            f"{prefix}request_duration_{stat}_seconds", GAUGE, "seconds", float,
            f"{what} request duration{'' if stat == 'max' else 's'} of {who} sampled from "
            "the worker table in the interval since the previous collection.",
            labels=labels, tab_key=f"{prefix.replace('_', '-')}request-duration-{stat}",
            influx=f"{influx}.request_duration_{stat}_seconds",
            collectd=f"response_time-{collectd}{stat}{tag}", absent=_NO_STAT))
    out.append(_m(
        f"{prefix}request_duration_sampled", GAUGE, "requests", int,
        f"Requests of {who} in the interval whose duration the worker table showed.",
        labels=labels, tab_key=f"{prefix.replace('_', '-')}request-duration-sampled",
        influx=f"{influx}.request_duration_sampled",
        collectd=f"count-{collectd}sampled{tag}",
        prom=f"apache_{prefix}request_duration_sampled_requests"))
    return tuple(out)


INTERVAL_METRICS: Tuple[Metric, ...] = (
    _m("interval_seconds", GAUGE, "seconds", float,
       "Length of the interval since the previous collection the interval figures cover.",
       tab_key="interval-seconds", influx="apache_interval.interval_seconds",
       collectd="duration-interval", prom="apache_interval_seconds"),
    _m("interval_requests_per_second", GAUGE, "requests/second", float,
       "Requests per second in the interval since the previous collection "
       "(Total Accesses delta; ExtendedStatus).",
       tab_key="interval-requests-per-second", influx="apache_interval.requests_per_second",
       collectd="requests-interval", prom="apache_interval_requests_per_second"),
    _m("interval_bytes_per_second", GAUGE, "bytes/second", float,
       "Bytes sent per second in the interval since the previous collection "
       "(Total kBytes delta, so 1 kB resolution; ExtendedStatus).",
       tab_key="interval-bytes-per-second", influx="apache_interval.bytes_per_second",
       collectd="gauge-interval_bytes_per_second", prom="apache_interval_bytes_per_second"),
    _m("interval_request_duration_seconds", GAUGE, "seconds", float,
       "Mean request duration in the interval since the previous collection "
       "(Total Duration delta / Total Accesses delta; 2.4.35+).",
       tab_key="interval-request-duration", influx="apache_interval.request_duration_seconds",
       collectd="response_time-interval_mean",
       prom="apache_interval_request_duration_seconds"),
    _m("request_duration_sampled_ratio", GAUGE, "ratio", float,
       "Share of the interval's requests (Total Accesses delta, the exporter's own "
       "status requests aside) whose duration the worker table showed.",
       tab_key="request-duration-sampled-ratio",
       influx="apache_interval.request_duration_sampled_ratio",
       collectd="percent-request_duration_sampled", collectd_scale=100,
       prom="apache_request_duration_sampled_ratio"),
) + _duration_metrics("", (), "apache_interval", "request_duration_",
                      "apache_request_duration_seconds",
                      "the server") \
  + _duration_metrics("vhost_", ("vhost",), "apache_vhost_interval", "vhost_",
                      "apache_vhost_request_duration_seconds", "a virtual host")


# The collection itself.
HEALTH_METRICS: Tuple[Metric, ...] = (
    _m("up", GAUGE, "boolean", int, "1 when the status page was read, else 0.",
       influx="apache_exporter.up", collectd="gauge-up",
       prom='apache_up'),
    _m("push_last_success_timestamp_seconds", GAUGE, "seconds", int,
       "When the last write to InfluxDB (--format influxdb) succeeded (epoch).",
       influx="apache_exporter.push_last_success", collectd="gauge-push_last_success",
       prom='apache_push_last_success_timestamp_seconds'),
    _m("push_spooled_points", GAUGE, "points", int,
       "Points waiting in the spool for the next successful write.",
       influx="apache_exporter.push_spooled_points", collectd="count-push_spooled_points",
       prom='apache_push_spooled_points'),
    _m("push_dropped_points_total", COUNTER, "points", int,
       "Points dropped because the spool (or its quarantine) outgrew --spool-max-bytes.",
       influx="apache_exporter.push_dropped_points", collectd="derive-push_dropped_points",
       prom='apache_push_dropped_points_total'),
    _m("push_quarantined_batches_total", COUNTER, "batches", int,
       "Batches set aside in the spool's quarantine: rejected by the server (HTTP "
       "400/413/422), or failing while later batches were written.",
       influx="apache_exporter.push_quarantined_batches",
       collectd="derive-push_quarantined_batches",
       prom='apache_push_quarantined_batches_total'),
    _m("push_corrupt_files_total", COUNTER, "files", int,
       "Spool files that could not be read (batches, state.json), moved aside as "
       "NAME.corrupt-TIMESTAMP.",
       influx="apache_exporter.push_corrupt_files", collectd="derive-push_corrupt_files",
       prom='apache_push_corrupt_files_total'),
    _m("push_quarantine_batches", GAUGE, "batches", int,
       "Batches now in the spool's quarantine/ (rejected by the server, or failing while "
       "later batches were written); never retried.",
       influx="apache_exporter.push_quarantine_batches",
       collectd="count-push_quarantine_batches",
       prom='apache_push_quarantine_batches'),
    _m("push_quarantine_bytes", GAUGE, "bytes", int,
       "Size of the batches now in the spool's quarantine/ (bounded by --spool-max-bytes).",
       influx="apache_exporter.push_quarantine_bytes", collectd="bytes-push_quarantine",
       prom='apache_push_quarantine_bytes'),
    _m("restarts_total", COUNTER, "restarts", int,
       "Apache restarts seen between collections, by kind: graceful (the configuration "
       "or MPM generation went up) or hard (another parent process, or a later start "
       "time: collection time - uptime). Kept in the collector's state file "
       "(--collector-state).",
       labels=("kind",), tab_key="restarts-{kind}",
       influx="apache_exporter.restarts_{kind}", collectd="derive-restarts_{kind}",
       prom="apache_restarts_total"),
    _m("collection_duration_seconds", GAUGE, "seconds", float,
       "Wall time of this collection.",
       influx="apache_exporter.collection_duration_seconds",
       collectd="duration-collection",
       prom='apache_collection_duration_seconds'),
    # The --listen endpoint's own health (Prometheus only: it is the endpoint).
    _m("scrape_failures_total", COUNTER, "scrapes", int,
       "Targets that could not be read, summed over every scrape since the endpoint "
       "started (apache_exporter's name).",
       absent=(("influx", "the --listen endpoint's own"),
               ("collectd", "the --listen endpoint's own")),
       prom='apache_exporter_scrape_failures_total'),
    _m("scrape_duration_seconds", GAUGE, "seconds", float,
       "Wall time of this scrape, all targets.",
       absent=(("influx", "the --listen endpoint's own"),
               ("collectd", "the --listen endpoint's own")),
       prom='apache_exporter_scrape_duration_seconds'),
) + (
    # The --listen endpoint's own process, as every Go exporter reports its own
    # (client_golang's process collector: same names, same sources in /proc).
    # Not in a one-shot file: that process is gone when the file is read, and
    # node_exporter's textfile collector would clash with node_exporter's own.
    _m("exporter_cpu_seconds", COUNTER, "seconds", float,
       "User and system CPU time of the --listen endpoint's process.",
       absent=(("influx", "the --listen endpoint's own"),
               ("collectd", "the --listen endpoint's own")),
       prom="process_cpu_seconds_total"),
    _m("exporter_resident_memory_bytes", GAUGE, "bytes", int,
       "Resident memory of the --listen endpoint's process.",
       absent=(("influx", "the --listen endpoint's own"),
               ("collectd", "the --listen endpoint's own")),
       prom="process_resident_memory_bytes"),
    _m("exporter_virtual_memory_bytes", GAUGE, "bytes", int,
       "Virtual memory of the --listen endpoint's process.",
       absent=(("influx", "the --listen endpoint's own"),
               ("collectd", "the --listen endpoint's own")),
       prom="process_virtual_memory_bytes"),
    _m("exporter_virtual_memory_max_bytes", GAUGE, "bytes", float,
       "Limit of the --listen endpoint's virtual memory (RLIMIT_AS; 2^64-1 when unlimited, "
       "as client_golang reports it).",
       absent=(("influx", "the --listen endpoint's own"),
               ("collectd", "the --listen endpoint's own")),
       prom="process_virtual_memory_max_bytes"),
    _m("exporter_open_fds", GAUGE, "descriptors", int,
       "Open file descriptors of the --listen endpoint's process.",
       absent=(("influx", "the --listen endpoint's own"),
               ("collectd", "the --listen endpoint's own")),
       prom="process_open_fds"),
    _m("exporter_max_fds", GAUGE, "descriptors", int,
       "Limit of open file descriptors of the --listen endpoint's process (RLIMIT_NOFILE, "
       "soft).",
       absent=(("influx", "the --listen endpoint's own"),
               ("collectd", "the --listen endpoint's own")),
       prom="process_max_fds"),
    _m("exporter_start_time_seconds", GAUGE, "seconds", float,
       "Start time of the --listen endpoint's process since the Unix epoch.",
       absent=(("influx", "the --listen endpoint's own"),
               ("collectd", "the --listen endpoint's own")),
       prom="process_start_time_seconds"),
    _m("build_info", GAUGE, "info", int,
       "Always 1; labels version (this program's) and pythonversion (the interpreter's), "
       "as apache_exporter_build_info says its own.",
       labels=("version", "pythonversion"),
       absent=(("influx", "the --listen endpoint's own"),
               ("collectd", "the --listen endpoint's own")),
       prom="apache_metrics_exporter_build_info"),
)

ALL_METRICS: Tuple[Metric, ...] = (
    SERVER_METRICS + PROXY_METRICS + DERIVED_METRICS + SCOREBOARD_METRICS + WORKER_METRICS
    + VHOST_METRICS + CLIENT_METRICS + PROCESS_METRICS + REAPER_METRICS + SATURATION_METRICS
    + INTERVAL_METRICS
    + HEALTH_METRICS
)

BY_NAME: Dict[str, Metric] = {m.name: m for m in ALL_METRICS}
BY_AUTO_KEY: Dict[str, Metric] = {m.auto_key: m for m in SERVER_METRICS if m.auto_key}
PROXY_BY_FIELD: Dict[str, Metric] = {m.auto_key: m for m in PROXY_METRICS if m.auto_key}
STATE_BY_CHAR: Dict[str, str] = dict(SCOREBOARD_STATES)

MEMORY_STATS = ("count", "min", "max", "average", "median")
# status_reason's words (up_reason's states), "ok" first: collect.snapshot.fetch_reason.
REASONS = ("ok", "refused", "saturated", "timeout", "http_error", "not_status_page", "tls",
           "resolve", "unreachable", "bad_response", "error")
MEMORY_METRIC = {
    "count": "memory_count", "min": "memory_min_bytes", "max": "memory_max_bytes",
    "average": "memory_average_bytes", "median": "memory_median_bytes",
}
NATIVE_GROUP = "native"

# apache_exporter's scoreboard state names.
PROMETHEUS_SCOREBOARD = {
    "waiting": "idle", "starting": "startup", "reading": "read", "sending": "reply",
    "keepalive": "keepalive", "dnslookup": "dns", "closing": "closing", "logging": "logging",
    "finishing": "graceful_stop", "idle_cleanup": "idle_cleanup", "open": "open_slot",
}


class Family(NamedTuple):
    """A Prometheus family several metrics share, or whose unit differs from
    its metric's: kind (TYPE), unit of the emitted name, help (HELP)."""

    name: str
    kind: str  # GAUGE or COUNTER: the TYPE line
    unit: str  # the unit of the name as emitted
    help: str  # without the unit (the writer adds it)
    base: Optional[Tuple[str, str, float]] = None  # --prometheus-naming
    #   base-units: (name, unit, scale) where apache_exporter's name breaks
    #   Prometheus' base-unit rule


FAMILIES: Tuple[Family, ...] = (
    # apache_exporter's families (names, kinds and units are its own).
    Family("apache_sent_kilobytes_total", COUNTER, "kilobytes",
           "Data sent since the last restart (ExtendedStatus).",
           ("apache_sent_bytes_total", "bytes", 1024)),
    Family("apache_duration_ms_total", COUNTER, "milliseconds",
           "Time spent serving requests since the last restart (2.4.35+).",
           ("apache_duration_seconds_total", "seconds", 0.001)),
    Family("apache_cpu_time_ms_total", COUNTER, "milliseconds",
           "CPU time of the server, its terminated children included, by type "
           "(user, system).", ("apache_cpu_time_seconds_total", "seconds", 0.001)),
    Family("apache_uptime_seconds_total", COUNTER, "seconds",
           "Time since the last restart (a counter, as apache_exporter declares it: "
           "it only grows, and starts again at a restart)."),
    Family("apache_workers", GAUGE, "workers", "Workers by state (busy, idle)."),
    Family("apache_processes", GAUGE, "processes",
           "Child processes (event MPM): all, stopping."),
    Family("apache_connections", GAUGE, "connections",
           "Connections (event MPM) by state: total, writing, keepalive, closing."),
    Family("apache_load", GAUGE, "load", "System load average as Apache reports it."),
    Family("apache_generation", GAUGE, "generation",
           "Configuration and MPM generation of the parent (type config, mpm)."),
    Family("apache_scoreboard", GAUGE, "slots", "Scoreboard slots by state."),
    Family("apache_info", GAUGE, "info",
           "Always 1; the labels say the ServerVersion and ServerMPM (UNKNOWN if absent)."),
    Family("apache_proxy_balancer_request_kbytes_total", COUNTER, "kilobytes",
           "Data sent to a balancer member.",
           ("apache_proxy_balancer_request_bytes_total", "bytes", 1024)),
    Family("apache_proxy_balancer_response_kbytes_total", COUNTER, "kilobytes",
           "Data received from a balancer member.",
           ("apache_proxy_balancer_response_bytes_total", "bytes", 1024)),
    # Our own families of several metrics, or a unit unlike their metric's.
    Family("apache_cpu_children_seconds_total", COUNTER, "seconds",
           "CPU time of terminated children, by type (user, system); apache_exporter "
           "adds it into apache_cpu_time_ms_total."),
    Family("apache_duration_per_request_seconds", GAUGE, "seconds",
           "Time per request, averaged since the last restart (2.4.35+)."),
    Family("apache_tls_cache_oldest_time_left_seconds", GAUGE, "seconds",
           "Time left of the oldest TLS session cache entries, by stat (avg, min, max)."),
    Family("apache_tls_cache_operations_total", COUNTER, "operations",
           "TLS session cache operations, by op."),
    Family("apache_tls_cache_index_usage_ratio", GAUGE, "ratio",
           "Index usage of the TLS session cache (0..1)."),
    Family("apache_tls_cache_usage_ratio", GAUGE, "ratio",
           "Usage of the TLS session cache (0..1)."),
    # Request durations from the worker table (intervals.py): histograms.
    Family("apache_request_duration_seconds", HISTOGRAM, "seconds",
           "Durations of requests sampled from the worker table's per-slot Acc/Req/Dur "
           "deltas between collections (see docs/insight.md)."),
    Family("apache_vhost_request_duration_seconds", HISTOGRAM, "seconds",
           "Durations of requests sampled from the worker table, per virtual host "
           "(--vhost-limit hosts, the rest as vhost other)."),
)
FAMILY: Dict[str, Family] = {f.name: f for f in FAMILIES}
HISTOGRAM_SUFFIXES = ("bucket", "sum", "count")


def prom_family(metric: Metric) -> Family:
    """The Prometheus family of a metric: declared in FAMILIES, else made from
    the metric itself (its kind, unit and help)."""
    name = (metric.prom or "").partition("{")[0]
    family = FAMILY.get(name)
    if family is None:  # a histogram's _bucket, _sum and _count share its family
        stem, _, suffix = name.rpartition("_")
        family = FAMILY.get(stem) if suffix in HISTOGRAM_SUFFIXES else None
    return family or Family(name, metric.kind, metric.unit, metric.help)


# ---------------------------------------------------------------------------
# What every output can carry. A value outside its metric's range is left out
# (with one warning) rather than written as a number some consumer refuses or
# silently wraps: line protocol integers and collectd DERIVE/COUNTER values are
# int64, Prometheus and the tab file must stay parseable, and writers multiply
# some values (kB -> bytes, s -> ms) before writing them.

INT64_MAX = 2 ** 63 - 1
FLOAT_LIMIT = 1e300  # finite with room for any writer's scale factor
# collectd data source types of the stock types.db entries the catalogue uses
# that are DERIVE (integers) rather than GAUGE.
COLLECTD_DERIVE_TYPES = frozenset({"apache_requests", "apache_bytes", "derive", "total_bytes",
                                   "total_time_in_ms", "total_requests"})
_LIMITS: Dict[str, float] = {}


def _limit(metric: Metric) -> float:
    """The largest magnitude of this metric's values that every writer can carry."""
    scales = [1.0, abs(metric.tab_scale), abs(metric.collectd_scale)]
    if metric.prom is not None:
        scales.append(abs(metric.prom_scale))
        base = prom_family(metric).base  # --prometheus-naming base-units
        if base:
            scales.append(abs(metric.prom_scale * base[2]))
    scale = max(scales)
    if metric.type is int:
        return INT64_MAX // int(-(-scale // 1))  # integers everywhere: int64
    limit = FLOAT_LIMIT / scale
    collectd_type = (metric.collectd or "").partition(":")[0].partition("-")[0]
    if collectd_type in COLLECTD_DERIVE_TYPES:  # a float written as a DERIVE integer
        limit = min(limit, INT64_MAX // int(-(-max(1.0, abs(metric.collectd_scale)) // 1)))
    return limit


def limit(metric: Metric) -> float:
    """The largest magnitude of a number that fits() takes for this metric
    (the same one, kept by name); -1 for a text metric, whose numbers never
    fit. For a value whose type is exactly int or float, fits() is
    ``-limit <= value <= limit``: a writer that keeps the limit in its plan
    of the metric checks that alone."""
    if metric.type is str:
        return -1
    got = _LIMITS.get(metric.name)
    if got is None:
        got = _LIMITS[metric.name] = _limit(metric)
    return got


def fits(metric: Metric, value: object) -> bool:
    """Whether every writer can carry this value of this metric (text: a str;
    numbers: finite and within the metric's range after any writer's scaling)."""
    if metric.type is str:
        return isinstance(value, str)
    if not isinstance(value, (int, float)):
        return False
    most = limit(metric)
    # int/float comparisons are exact in Python: no overflow, NaN compares False.
    return -most <= value <= most


def all_fit(samples: Iterable[Any]) -> bool:
    """Whether fits() holds for every (metric, value, ...) sample: the same
    answer, without a Python loop per sample for the plain str, int and float
    values a snapshot is made of (a small server's 90 samples: about 180,000
    instructions as a loop). The metrics' types and limits are laid out once
    per sequence of metrics (_FIT_LAYOUTS): a text metric's value must be a
    str, a number's an int or a float within the limit, checked a column at
    a time; anything else - a value out of range, of another type, a str
    subclass - is answered by the loop (_each_fits)."""
    samples = samples if type(samples) is list else list(samples)
    metrics = tuple(map(_FIRST, samples))
    layout = _FIT_LAYOUTS.get(len(metrics))
    if layout is None or layout[0] != metrics:
        if len(_FIT_LAYOUTS) >= 64:
            _FIT_LAYOUTS.clear()
        texts = [i for i, m in enumerate(metrics) if m.type is str]
        numbers = [i for i, m in enumerate(metrics) if m.type is not str]
        highs = [limit(metrics[i]) for i in numbers]
        layout = _FIT_LAYOUTS[len(metrics)] = (metrics, texts, numbers, [-h for h in highs],
                                               highs)
    _, texts, numbers, lows, highs = layout
    values = tuple(map(_SECOND, samples))
    pick = values.__getitem__
    found = list(map(pick, numbers))
    if set(map(type, map(pick, texts))) <= _STR and set(map(type, found)) <= _NUMBERS \
            and all(map(_le, lows, found)) and all(map(_le, found, highs)):
        return True
    return _each_fits(samples)


_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_STR, _NUMBERS = frozenset((str,)), frozenset((int, float))
# (metrics, indexes of the text ones, of the others, their -limits, limits),
# by the number of samples; bounded.
_FIT_LAYOUTS: Dict[int, tuple] = {}


def _each_fits(samples: Iterable[Any]) -> bool:
    """all_fit, sample by sample."""
    limits = _LIMITS
    for sample in samples:
        metric, value = sample[0], sample[1]
        kind, vtype = metric.type, type(value)
        if vtype is str:
            if kind is str:
                continue
            return False
        if kind is not str and (vtype is int or vtype is float):
            limit = limits.get(metric.name)
            if limit is not None:
                if -limit <= value <= limit:
                    continue
                return False
        if not fits(metric, value):
            return False
    return True
