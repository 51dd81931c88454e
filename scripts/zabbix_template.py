"""Write contrib/zabbix/apache-metrics-exporter-template.yaml (a Zabbix 6.0 export).

The template reads apache-manager's metrics file through the UserParameters of
contrib/zabbix/apache-metrics-exporter.conf: ``apache.metric[KEY]`` for a
``KEY<TAB>VALUE`` line, ``apache.labelled[KEY,LABEL]`` for a
``KEY<TAB>LABEL<TAB>VALUE`` line, ``apache.member[KEY,BALANCER,MEMBER]`` for a
balancer member's line, ``apache.memory[GROUP,STAT]`` for the memory lines,
and low-level discovery of the worker groups, virtual hosts, balancer members
and the keys only some set-ups have (event MPM, mod_ssl's session cache, the
InfluxDB push spool). Beside them, like Zabbix's own "Apache by Zabbix agent",
agent built-ins: the status page itself (for the version), the HTTP port's
availability and response time, and the Apache processes.

Names, units and help come from the catalogue, so the template cannot drift
from what the file holds: tests/test_zabbix_template.py checks the committed
file against this script, that every key the tab writer can write has an item
or prototype, and runs every key through a real zabbix_agentd;
tests/test_zabbix_server.py imports it into a real Zabbix 6.0 server. Run
after changing the catalogue:

    .venv/bin/python scripts/zabbix_template.py
"""

from __future__ import annotations

import hashlib
import os
import sys
import uuid
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from apache_metrics_exporter.catalogue import (  # noqa: E402
    ALL_METRICS,
    BY_NAME,
    CLIENT_METRICS,
    INTERVAL_METRICS,
    MEMORY_STATS,
    PROXY_METRICS,
    SCOREBOARD_STATES,
    SERVER_METRICS,
    VHOST_METRICS,
    Metric,
)
from apache_metrics_exporter.reaper.state import KINDS, REASONS  # noqa: E402
from apache_metrics_exporter.restarts import KINDS as RESTART_KINDS  # noqa: E402

OUTPUT = os.path.join(ROOT, "contrib", "zabbix", "apache-metrics-exporter-template.yaml")
TEMPLATE = "Apache by apache-metrics-exporter"
T = TEMPLATE
GROUP = "Templates/Applications"
DATA_FILE_MACRO = "{$APACHE.METRICS.FILE}"
STATUS_URL = ('"{$APACHE.STATUS.SCHEME}://{$APACHE.STATUS.HOST}:{$APACHE.STATUS.PORT}/'
              '{$APACHE.STATUS.PATH}"')
PAGE_KEY = f"web.page.get[{STATUS_URL}]"
PING_KEY = 'net.tcp.service[http,"{$APACHE.STATUS.HOST}","{$APACHE.STATUS.PORT}"]'
PERF_KEY = 'net.tcp.service.perf[http,"{$APACHE.STATUS.HOST}","{$APACHE.STATUS.PORT}"]'
PROC = '"{$APACHE.PROCESS_NAME}",,,"{$APACHE.PROCESS.CMDLINE}"'
PROC_NUM_KEY = f"proc.num[{PROC}]"
# How often: the metrics file is rewritten every minute by cron.
DELAY = "1m"

# apache-manager's keys first (its file's order), the tab file's internal section.
ORIGINAL_SERVER = [m.name for m in sorted((m for m in SERVER_METRICS if m.tab_key),
                                           key=lambda m: m.tab_key or "")]
ORIGINAL_INTERNAL = ["foreign_worker_count", "native_worker_count", "status_response",
                     "workers_hanging", "workers_killed_active", "workers_killed_idle"]
# Keys only some set-ups write, each set behind a discovery rule that finds
# them in the file (Zabbix's own template does so for the event MPM): no item
# is "not supported" forever on a host that cannot have it.
OPTIONAL: List[Tuple[str, str, str, List[str]]] = [
    ("event", "Apache event MPM", "processes",
     ["processes", "stopping_processes", "conns_total", "conns_async_writing",
      "conns_async_keep_alive", "conns_async_closing", "event_processes_not_accepting"]),
    ("wait-io", "Apache event MPM 2.4.63+", "conns-async-wait-io", ["conns_async_wait_io"]),
    ("tls", "Apache mod_ssl session cache", "tls-cache-usage-percent",
     [m.name for m in SERVER_METRICS if m.name.startswith("tls_cache_")]),
    ("push", "InfluxDB push spool", "push-spooled-points",
     [m.name for m in ALL_METRICS if m.name.startswith("push_")]),
    # From the second collection on (docs/insight.md): rates and durations
    # since the previous one; left out after a restart.
    ("interval", "Apache since the previous collection", "interval-seconds",
     [m.name for m in INTERVAL_METRICS if not m.labels and "tab" not in dict(m.absent)]),
    # From the worker table (ExtendedStatus On); the client figures only
    # where it has a Client column.
    ("clients", "Apache slow clients", "reading-workers",
     [m.name for m in CLIENT_METRICS if not m.labels and "tab" not in dict(m.absent)]),
]
OPTIONAL_NAMES = {n for _k, _t, _key, names in OPTIONAL for n in names}
# The --listen endpoint's own figures: never in a metrics file.
ENDPOINT_ONLY = {m.name for m in ALL_METRICS
                 if "the --listen endpoint's own" in dict(m.absent).values()}
# Label names of per-listening-address figures (the accept queue, when the
# catalogue has them): discovered with apache.labels.discovery[KEY].
LISTEN_LABELS = ("listen", "address")

UNITS = {"bytes": "B", "bytes/second": "Bps", "kilobytes": "KB", "seconds": "s",
         "milliseconds": "ms", "requests/second": "rps", "percent": "%"}
MACROS = [
    ("{$APACHE.MEMORY.MAX}", "536870912",
     "Bytes of memory (RSS) the largest process of a worker group may use before the "
     "trigger fires; per group with context: {$APACHE.MEMORY.MAX:\"example\"}."),
    ("{$APACHE.HANGING.MAX}", "0",
     "Hanging workers (active longer than apache-manager's --hanging-worker-threshold) "
     "tolerated."),
    ("{$APACHE.KILLS.MAX}", "0", "Workers the reaper's last run may kill without a problem."),
    (DATA_FILE_MACRO, "/tmp/apache-manager.txt",
     "The metrics file the cron job writes (apache-manager -c, or apache-metrics-exporter "
     "--output); the UserParameters read the same path."),
    ("{$APACHE.METRICS.MAXAGE}", "5m", "The metrics file is stale when older than this."),
    ("{$APACHE.STATUS.SCHEME}", "http", "The status page's scheme (http or https), for the "
     "version item (agent key web.page.get)."),
    ("{$APACHE.STATUS.HOST}", "127.0.0.1", "The status page's host, for the version, "
     "service ping and response time items."),
    ("{$APACHE.STATUS.PORT}", "80", "The status page's port."),
    ("{$APACHE.STATUS.PATH}", "server-status?auto", "The status page's path (?auto page)."),
    ("{$APACHE.STATUS.NODATA}", "30m", "A problem when no status page was read for this "
     "long (at least 30s: nodata's minimum)."),
    ("{$APACHE.RESPONSE_TIME.MAX.WARN}", "10", "Seconds the HTTP port may take to answer, "
     "at least, for {$APACHE.RESPONSE_TIME.PERIOD}."),
    ("{$APACHE.RESPONSE_TIME.PERIOD}", "5m", "How long the response time must stay high."),
    ("{$APACHE.UPTIME.MIN}", "10m", "Apache 'has been restarted' while its uptime is below "
     "this."),
    ("{$APACHE.WORKERS.UTIL.MAX}", "90", "Percent of the scoreboard's slots busy (busy "
     "workers / slots) that means saturation."),
    ("{$APACHE.WORKERS.UTIL.PERIOD}", "5m", "How long utilisation must stay above "
     "{$APACHE.WORKERS.UTIL.MAX}."),
    # The insight figures (docs/insight.md): accept queue, the reason for a
    # failed read, sampled latency, slow clients.
    ("{$APACHE.ACCEPT_QUEUE.MAX}", "0", "Connections waiting in the accept queues of Apache's "
     "listening sockets tolerated at every check for {$APACHE.ACCEPT_QUEUE.PERIOD} (above "
     "it, every worker was busy each time)."),
    ("{$APACHE.ACCEPT_QUEUE.PERIOD}", "5m", "How long the accept queue must stay above "
     "{$APACHE.ACCEPT_QUEUE.MAX}."),
    ("{$APACHE.ACCEPT_QUEUE.FULL}", "80", "Percent of the backlog limit at which the accept "
     "queue counts as full (at 100 the kernel drops new connections)."),
    ("{$APACHE.ACCEPT_QUEUE.FULL.PERIOD}", "1m", "How long the accept queue must stay at "
     "{$APACHE.ACCEPT_QUEUE.FULL}% of its limit."),
    ("{$APACHE.STATUS.REASON.OVERLOAD}", "^saturated$", "A regular expression on status-reason: "
     "the reasons for a failed read that mean overload (add |timeout for a remote Apache, "
     "whose accept queue cannot be read)."),
    ("{$APACHE.LATENCY.P99.MAX}", "2", "Seconds the 99th percentile of the sampled request "
     "durations may reach."),
    ("{$APACHE.LATENCY.PERIOD}", "15m", "How long the p99 must stay above "
     "{$APACHE.LATENCY.P99.MAX}."),
    ("{$APACHE.SLOW_CLIENTS.MIN}", "5", "Workers reading a request (state R) that mean slow "
     "clients, when the oldest reads for more than {$APACHE.SLOW_CLIENTS.AGE}s."),
    ("{$APACHE.SLOW_CLIENTS.AGE}", "20", "Seconds the oldest worker reading a request may "
     "have been at it."),
    ("{$APACHE.SLOW_CLIENTS.PERIOD}", "5m", "How long the slow-client condition must hold."),
    ("{$APACHE.TOP_CLIENT.SHARE.MAX}", "0.5", "Share (0..1) of the busy workers one client "
     "address may hold (behind a reverse proxy it holds all: raise to 1)."),
    ("{$APACHE.TOP_CLIENT.BUSY.MIN}", "10", "Busy workers below which the top client's share "
     "is not a problem."),
    ("{$APACHE.TOP_CLIENT.PERIOD}", "10m", "How long the top-client condition must hold."),
    ("{$APACHE.PROCESS_NAME}", "apache2", "The Apache processes' name (Debian: apache2; "
     "Red Hat: httpd)."),
    ("{$APACHE.PROCESS.CMDLINE}", "", "A regular expression the processes' command line "
     "must match (empty: any), to tell several Apaches of one host apart."),
]
PRIORITIES = ("INFO", "WARNING", "AVERAGE", "HIGH", "DISASTER")


def uid(*parts: str) -> str:
    """A stable UUIDv4-shaped identifier (Zabbix requires v4) derived from a name."""
    digest = hashlib.sha256("/".join((TEMPLATE,) + parts).encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4).hex


# apache-manager's keys that are the tab file's form of a catalogue metric.
LEGACY = {"status_response": "up", "workers_killed_active": "reaper_last_run_kills",
          "workers_killed_idle": "reaper_last_run_kills"}
LEGACY_HELP = {
    "status_response": "0 when the status page was read, 1 when not (apache-manager's "
                       "convention, like an exit status).",
    "workers_killed_active": "Active workers and mod_wsgi daemons killed by the reaper's "
                             "last run (apache-manager's definition).",
    "workers_killed_idle": "Idle workers killed by the reaper's last run.",
}


def tab_key(name: str) -> str:
    """The metrics file's key of a catalogue metric (or apache-manager's own key)."""
    if name not in BY_NAME:  # status_response: the tab file's form of "up"
        return name.replace("_", "-")
    return BY_NAME[name].tab_key or name.replace("_", "-")


def _value_type(metric: Metric) -> str:
    if metric.type is str:
        return "TEXT"
    if metric.type is float:
        return "FLOAT"
    return "UNSIGNED"


def _units(metric: Metric) -> str:
    if metric.name in ("uptime", "server_uptime_seconds"):
        return "uptime"
    if metric.tab_scale == 1024:
        return "B"  # apache-manager wrote kB x 1024
    if metric.name.endswith("timestamp_seconds"):
        return "unixtime"
    return UNITS.get(metric.unit, "")


def _tags(component: str, **more: str) -> list:
    return [{"tag": "component", "value": component}] + [
        {"tag": k, "value": v} for k, v in more.items()]


def _label(name: str) -> str:
    return tab_key(name).replace("-", " ")


def item(metric_name: str, key: str, name: str, component: str, extra: str = "",
         delay: str = DELAY) -> dict:
    """One item on a metrics-file value."""
    m = BY_NAME[LEGACY.get(metric_name, metric_name)]
    out: dict = {"uuid": uid("item", key), "name": name, "key": key, "delay": delay,
                 "history": "7d"}
    vt = _value_type(m)
    if vt != "UNSIGNED":  # the export's default
        out["value_type"] = vt
    if vt == "TEXT":
        out["trends"] = "0"
    units = _units(m)
    if units:
        out["units"] = units
    text = LEGACY_HELP.get(metric_name, m.help)
    if m.tab_scale == 1024:
        text = text.replace("Kilobytes", "Bytes") + " (apache-manager: kB x 1024)"
    out["description"] = (text + (" " + extra if extra else "")).strip()
    out["tags"] = _tags(component)
    sometimes = ("Not written when the interval had nothing to measure (the worker table, "
                 "sampled requests, a duration counter)." if m in INTERVAL_METRICS
                 or m in CLIENT_METRICS else
                 "Not written until the reaper's first real run (a dry run moves only "
                 "would-kill)." if m.name == "reaper_last_run_timestamp_seconds" else "")
    if sometimes:
        # No line is no value this time, not "unsupported".
        out["description"] += " " + sometimes
        # (a regular expression step: Zabbix 6.0's JavaScript has no "on fail")
        out["preprocessing"] = [{
            "type": "REGEX", "parameters": ["^(.+)$", "\\1"],
            "error_handler": "DISCARD_VALUE", "error_handler_params": ""}]
    return out


def rate(master: str, key: str, name: str, description: str, component: str,
         units: str = "", multiplier: str = "") -> dict:
    """A per-second rate of a counter item: Zabbix's "change per second" of its
    values (a counter that went down, a restart, gives no value that time)."""
    out: dict = {"uuid": uid("rate", key), "name": name, "type": "DEPENDENT", "key": key,
                 "delay": "0", "history": "7d", "value_type": "FLOAT"}
    if units:
        out["units"] = units
    out["description"] = description
    steps = [{"type": "CHANGE_PER_SECOND", "parameters": [""]}]
    if multiplier:
        steps.append({"type": "MULTIPLIER", "parameters": [multiplier]})
    out["preprocessing"] = steps
    out["master_item"] = {"key": master}
    out["tags"] = _tags(component, scope="rate")
    return out


def trigger(expression: str, name: str, priority: str, description: str, recovery: str,
            scope: str, manual_close: bool = False,
            depends: Optional[List[Tuple[str, str, str]]] = None) -> dict:
    """A trigger that resolves by its own recovery expression, never by accident."""
    assert priority in PRIORITIES
    out: dict = {"uuid": uid("trigger", name), "expression": expression,
                 "recovery_mode": "RECOVERY_EXPRESSION", "recovery_expression": recovery,
                 "name": name, "priority": priority, "description": description}
    if manual_close:
        out["manual_close"] = "YES"
    if depends:
        out["dependencies"] = [{"name": n, "expression": e, "recovery_expression": r}
                               for n, e, r in depends]
    out["tags"] = [{"tag": "scope", "value": scope}]
    return out


def metric_key(name: str) -> str:
    return f"apache.metric[{tab_key(name)}]"


# Triggers that others depend on (name, expression), as Zabbix's own template.
# Zabbix finds a dependency by name, expression and recovery expression.
PROCESS_DOWN = ("Apache: process is not running", f"last(/{T}/{PROC_NUM_KEY})=0",
                f"last(/{T}/{PROC_NUM_KEY})>0")
# Those depending on the process trigger wait for two checks in a row: one
# failed check is no outage, and the process trigger (one check) is then in
# problem first when Apache stops, so the dependency keeps them quiet.
SERVICE_DOWN = ("Apache: service is down", f"max(/{T}/{PING_KEY},#2)=0",
                f"last(/{T}/{PING_KEY})=1")


def plain_items() -> List[dict]:
    """Items of every unlabelled key the file always has (and apache-manager's)."""
    items = []
    seen = set()
    for name in ORIGINAL_SERVER + ORIGINAL_INTERNAL:
        key = metric_key(name)
        seen.add(name)
        it = item(name, key, f"Apache: {_label(name)}", "apache-manager")
        if name == "status_response":
            it["valuemap"] = {"name": "apache-manager status-response"}
            it["triggers"] = [
                trigger(f"min(/{T}/{key},#2)<>0", "Apache: the status page cannot be read",
                        "WARNING",
                        "The last two collections could not read mod_status (Apache down, "
                        "refusing, too slow, or the page forbidden); the reason is the "
                        "collector's line on stderr (the cron job's mail or log).",
                        f"last(/{T}/{key})=0", "availability",
                        depends=[SERVICE_DOWN, PROCESS_DOWN]),
                trigger(f"min(/{T}/{key},{{$APACHE.STATUS.NODATA}})>0 or "
                        f"nodata(/{T}/{key},{{$APACHE.STATUS.NODATA}})=1",
                        "Apache: no status page read for {$APACHE.STATUS.NODATA}", "AVERAGE",
                        "Every collection for {$APACHE.STATUS.NODATA} failed to read the "
                        "status page, or no value came at all (agent or file gone).",
                        f"last(/{T}/{key})=0", "availability",
                        depends=[SERVICE_DOWN, PROCESS_DOWN]),
            ]
        elif name == "workers_hanging":
            it["triggers"] = [trigger(
                f"last(/{T}/{key})>{{$APACHE.HANGING.MAX}}",
                "Apache: {ITEM.LASTVALUE1} hanging workers", "WARNING",
                "Requests running longer than the hanging-worker threshold (apache-manager "
                "-T, --hanging-threshold, default 5 minutes): a stuck backend or client; "
                "apache-worker-reaper --timeout kills them.",
                f"last(/{T}/{key})<={{$APACHE.HANGING.MAX}}", "performance")]
        elif name == "uptime":
            it["triggers"] = [trigger(
                f"last(/{T}/{key})<{{$APACHE.UPTIME.MIN}}",
                "Apache: has been restarted (uptime < {$APACHE.UPTIME.MIN})", "INFO",
                "Apache's uptime is below {$APACHE.UPTIME.MIN}: it was (re)started, "
                "gracefully or not (the restarts-* items say which).",
                f"last(/{T}/{key})>={{$APACHE.UPTIME.MIN}}", "notice", manual_close=True)]
        items.append(it)
    rest = [m for m in ALL_METRICS
            if not m.labels and m.name not in seen and m.name not in OPTIONAL_NAMES
            and m.name not in ENDPOINT_ONLY and "tab" not in dict(m.absent)]
    for m in rest:
        component = ("reaper" if m.name.startswith("reaper") else
                     "health" if m.name in ("up", "collection_duration_seconds") else "apache")
        it = item(m.name, metric_key(m.name), f"Apache: {_label(m.name)}", component)
        if m.name == "utilisation":
            it["name"] = "Apache: worker utilisation"
            it["units"] = "%"
            it["description"] = ("Busy workers / scoreboard slots, in percent (the file's "
                                 "ratio x 100).")
            it["preprocessing"] = [{"type": "MULTIPLIER", "parameters": ["100"]}]
            key = it["key"]
            it["triggers"] = [trigger(
                f"min(/{T}/{key},{{$APACHE.WORKERS.UTIL.PERIOD}})>={{$APACHE.WORKERS.UTIL.MAX}}",
                "Apache: workers saturated (over {$APACHE.WORKERS.UTIL.MAX}% busy for "
                "{$APACHE.WORKERS.UTIL.PERIOD})", "AVERAGE",
                "Nearly every scoreboard slot (MaxRequestWorkers) has been busy for "
                "{$APACHE.WORKERS.UTIL.PERIOD}: new connections wait in the accept queue "
                "or are refused. Raise MaxRequestWorkers, or find what holds the workers "
                "(longest request, hanging workers, per-vhost busy workers).",
                f"max(/{T}/{key},{{$APACHE.WORKERS.UTIL.PERIOD}})<{{$APACHE.WORKERS.UTIL.MAX}}",
                "capacity")]
        elif m.name == "accept_queue_length_all":
            key = it["key"]
            it["triggers"] = [trigger(
                f"min(/{T}/{key},{{$APACHE.ACCEPT_QUEUE.PERIOD}})>{{$APACHE.ACCEPT_QUEUE.MAX}}",
                "Apache: connections wait for a worker (accept queue over "
                "{$APACHE.ACCEPT_QUEUE.MAX} for {$APACHE.ACCEPT_QUEUE.PERIOD})", "WARNING",
                "Every check for {$APACHE.ACCEPT_QUEUE.PERIOD} found connections in the accept "
                "queue of Apache's listening sockets: they completed the TCP handshake but no "
                "worker took them, so every worker was busy each time; clients see slow "
                "answers. Look at the busy workers and the longest requests before raising "
                "MaxRequestWorkers (docs/insight.md). Local Apache only.",
                f"max(/{T}/{key},{{$APACHE.ACCEPT_QUEUE.PERIOD}})<={{$APACHE.ACCEPT_QUEUE.MAX}}",
                "capacity")]
        elif m.name == "status_reason":
            key = it["key"]
            it["triggers"] = [trigger(
                f'count(/{T}/{key},#2,"regexp","{{$APACHE.STATUS.REASON.OVERLOAD}}")=2',
                "Apache: overloaded, the status page was not read ({ITEM.LASTVALUE1})", "HIGH",
                "The last two collections could not read the status page for a reason that "
                "{$APACHE.STATUS.REASON.OVERLOAD} calls overload: saturated = the request timed "
                "out while connections waited in the accept queue, so Apache is up but every "
                "worker is busy, not crashed. Find what holds the workers (slow back ends, "
                "long requests, slow clients) before raising MaxRequestWorkers.",
                f'count(/{T}/{key},#1,"regexp","{{$APACHE.STATUS.REASON.OVERLOAD}}")=0',
                "capacity")]
        elif m.name == "collection_duration_seconds":
            it["description"] += (" The status page's response time as the collector saw it "
                                  "(with the process scan).")
        items.append(it)
    return items


def labelled_items() -> List[dict]:
    items = []
    for _char, state in SCOREBOARD_STATES:
        items.append(item("scoreboard", f"apache.labelled[scoreboard,{state}]",
                          f"Apache: scoreboard slots {state.replace('_', ' ')}", "apache"))
    for kind in KINDS:
        items.append(item("reaper_kills_total", f"apache.labelled[reaper-kills-total,{kind}]",
                          f"Apache reaper: kills of {kind.replace('_', ' ')} processes",
                          "reaper"))
    for reason in REASONS:
        items.append(item("reaper_kills_by_reason_total",
                          f"apache.labelled[reaper-kills-by-reason-total,{reason}]",
                          f"Apache reaper: kills for {reason}", "reaper"))
    for kind in RESTART_KINDS:
        key = (BY_NAME["restarts_total"].tab_key or "").format(kind=kind)
        items.append(item("restarts_total", f"apache.metric[{key}]",
                          f"Apache: {kind} restarts seen", "apache"))
    return items


def builtin_items() -> List[dict]:
    """Agent built-ins, as in Zabbix's own "Apache by Zabbix agent"."""
    fresh = trigger(
        f"fuzzytime(/{T}/vfs.file.time[{DATA_FILE_MACRO},modify],{{$APACHE.METRICS.MAXAGE}})=0",
        "Apache: the metrics file is stale", "WARNING",
        "The metrics file has not been rewritten for {$APACHE.METRICS.MAXAGE}: the cron "
        "job (apache-manager -c) stopped or fails; every other item shows old values.",
        f"fuzzytime(/{T}/vfs.file.time[{DATA_FILE_MACRO},modify],{{$APACHE.METRICS.MAXAGE}})=1",
        "availability")
    return [
        {"uuid": uid("item", "vfs.file.time"), "name": "Apache: metrics file modified",
         "key": f"vfs.file.time[{DATA_FILE_MACRO},modify]", "delay": DELAY, "history": "7d",
         "units": "unixtime",
         "description": "When the cron job last wrote the metrics file (a built-in agent key).",
         "tags": _tags("health"), "triggers": [fresh]},
        {"uuid": uid("item", "web.page.get"), "name": "Apache: get status page",
         "key": PAGE_KEY, "delay": "5m", "history": "0", "trends": "0", "value_type": "TEXT",
         "description": "The ?auto status page read by the agent itself (agent key "
                        "web.page.get), for the Apache version: the metrics file has no "
                        "text of the page. Not kept (history 0).",
         "tags": _tags("raw")},
        {"uuid": uid("item", "apache.version"), "name": "Apache: version", "type": "DEPENDENT",
         "key": "apache.version", "delay": "0", "history": "7d", "trends": "0",
         "value_type": "CHAR",
         "description": "ServerVersion of the status page (Apache/2.4.62 (Debian)); stored "
                        "when it changes, and once a day.",
         "preprocessing": [
             {"type": "REGEX", "parameters": ["ServerVersion: ([^\\r\\n]+)", "\\1"]},
             {"type": "DISCARD_UNCHANGED_HEARTBEAT", "parameters": ["1d"]}],
         "master_item": {"key": PAGE_KEY},
         "tags": _tags("application"),
         "triggers": [trigger(
             f"last(/{T}/apache.version,#1)<>last(/{T}/apache.version,#2) and "
             f"length(last(/{T}/apache.version))>0",
             "Apache: version has changed (now {ITEM.VALUE})", "INFO",
             "The running Apache reports another version: an upgrade took effect.",
             f"last(/{T}/apache.version,#1)=last(/{T}/apache.version,#2)", "notice",
             manual_close=True)]},
        {"uuid": uid("item", "ping"), "name": "Apache: service ping", "key": PING_KEY,
         "delay": DELAY, "history": "7d",
         "description": "1 when the status page's port answers HTTP (agent key "
                        "net.tcp.service), else 0.",
         "valuemap": {"name": "Service state"},
         "preprocessing": [{"type": "DISCARD_UNCHANGED_HEARTBEAT", "parameters": ["10m"]}],
         "tags": _tags("health"),
         "triggers": [trigger(SERVICE_DOWN[1], SERVICE_DOWN[0], "AVERAGE",
                              "The status page's port does not answer HTTP.",
                              SERVICE_DOWN[2], "availability",
                              depends=[PROCESS_DOWN])]},
        {"uuid": uid("item", "perf"), "name": "Apache: service response time", "key": PERF_KEY,
         "delay": DELAY, "history": "7d", "value_type": "FLOAT", "units": "s",
         "description": "Seconds the status page's port takes to answer an HTTP request "
                        "(agent key net.tcp.service.perf; 0 when it does not answer).",
         "tags": _tags("health"),
         "triggers": [trigger(
             f"min(/{T}/{PERF_KEY},{{$APACHE.RESPONSE_TIME.PERIOD}})>"
             "{$APACHE.RESPONSE_TIME.MAX.WARN}",
             "Apache: response time is too high (over {$APACHE.RESPONSE_TIME.MAX.WARN}s for "
             "{$APACHE.RESPONSE_TIME.PERIOD})", "WARNING",
             "Apache has answered slowly for {$APACHE.RESPONSE_TIME.PERIOD}: saturated "
             "workers, a full accept queue, or an overloaded host.",
             f"max(/{T}/{PERF_KEY},{{$APACHE.RESPONSE_TIME.PERIOD}})<="
             "{$APACHE.RESPONSE_TIME.MAX.WARN}", "performance",
             depends=[SERVICE_DOWN, PROCESS_DOWN])]},
        {"uuid": uid("item", "proc.num"), "name": "Apache: number of processes running",
         "key": PROC_NUM_KEY, "delay": DELAY, "history": "7d",
         "description": "Processes named {$APACHE.PROCESS_NAME} (command line matching "
                        "{$APACHE.PROCESS.CMDLINE}) (agent key proc.num).",
         "tags": _tags("system"),
         "triggers": [trigger(PROCESS_DOWN[1], PROCESS_DOWN[0], "HIGH",
                              "No {$APACHE.PROCESS_NAME} process runs.",
                              PROCESS_DOWN[2], "availability")]},
        {"uuid": uid("item", "proc.mem.rss"), "name": "Apache: memory usage (rss)",
         "key": f"proc.mem[{PROC},rss]", "delay": DELAY, "history": "7d", "units": "B",
         "description": "Resident memory of all the processes, summed (agent key proc.mem); "
                        "per worker group: the discovered memory items.",
         "tags": _tags("system")},
        {"uuid": uid("item", "proc.mem.vsize"), "name": "Apache: memory usage (vsize)",
         "key": f"proc.mem[{PROC},vsize]", "delay": DELAY, "history": "7d", "units": "B",
         "description": "Virtual memory of all the processes, summed (agent key proc.mem).",
         "tags": _tags("system")},
        {"uuid": uid("item", "proc.cpu.util"), "name": "Apache: CPU utilization",
         "key": f"proc.cpu.util[{PROC}]", "delay": DELAY, "history": "7d",
         "value_type": "FLOAT", "units": "%",
         "description": "CPU use of all the processes, in percent of one CPU (agent key "
                        "proc.cpu.util).",
         "tags": _tags("system")},
    ]


def rate_items() -> List[dict]:
    """Per-second rates beside the since-start counters and averages."""
    out = [
        rate(metric_key("total_accesses"), "apache.requests.rate",
             "Apache: requests per second", "Requests per second over the last interval "
             "(change of total-accesses); requests-per-second is the average since start.",
             "apache", units="rps"),
        rate(metric_key("total_kbytes"), "apache.bytes.rate", "Apache: bytes per second",
             "Bytes sent per second over the last interval (change of total-traffic); "
             "bytes-per-second is the average since start.", "apache", units="Bps"),
        rate(metric_key("total_duration_ms"), "apache.duration.rate",
             "Apache: request time per second",
             "Seconds spent serving requests per second over the last interval (change of "
             "total-duration-ms / 1000): the average number of requests in progress.",
             "apache", multiplier="0.001"),
    ]
    for part in ("user", "system", "children_user", "children_system"):
        out.append(rate(metric_key(f"cpu_{part}_seconds"), f"apache.cpu.rate[{part}]",
                        f"Apache: CPU {part.replace('_', ' ')} utilization",
                        f"{part.replace('_', ' ').capitalize()} CPU time per second over the "
                        "last interval, in percent of one CPU (cpu-load is the average "
                        "since start).", "apache", units="%", multiplier="100"))
    return out


def _proto(it: dict, rule: str) -> dict:
    it = dict(it)
    it["uuid"] = uid("prototype", rule, it["key"])
    if "triggers" in it:
        it["trigger_prototypes"] = [dict(t, uuid=uid("trigger-prototype", t["name"]))
                                    for t in it.pop("triggers")]
    return it


def _insight_triggers(name: str, key: str) -> Tuple[List[dict], List[dict]]:
    """Triggers on the interval and client figures (docs/insight.md), which
    exist only behind their discovery: those on the item alone (nested in it)
    and those on several items (the discovery rule's own, as Zabbix exports
    them)."""
    singleton = "{#SINGLETON}"

    def other(metric: str) -> str:
        return f"/{T}/apache.metric[{tab_key(metric)}{singleton}]"

    if name == "request_duration_p99_seconds":
        return [trigger(
            f"min(/{T}/{key},{{$APACHE.LATENCY.PERIOD}})>{{$APACHE.LATENCY.P99.MAX}}",
            "Apache: slow requests (p99 over {$APACHE.LATENCY.P99.MAX}s for "
            "{$APACHE.LATENCY.PERIOD})", "WARNING",
            "The 99th percentile of the request durations sampled from the worker table "
            "has stayed above {$APACHE.LATENCY.P99.MAX}s for {$APACHE.LATENCY.PERIOD}. At "
            "high traffic the sample pulls percentiles towards each worker's mean, and an "
            "interval's p99 is close to its largest duration (docs/insight.md has the "
            "measured bias). The per-vhost p99 items say which site.",
            f"max(/{T}/{key},{{$APACHE.LATENCY.PERIOD}})<={{$APACHE.LATENCY.P99.MAX}}",
            "performance")], []
    if name == "reading_workers":
        oldest = other("reading_oldest_seconds")
        return [], [trigger(
            f"min(/{T}/{key},{{$APACHE.SLOW_CLIENTS.PERIOD}})>={{$APACHE.SLOW_CLIENTS.MIN}} and "
            f"min({oldest},{{$APACHE.SLOW_CLIENTS.PERIOD}})>{{$APACHE.SLOW_CLIENTS.AGE}}",
            "Apache: {ITEM.LASTVALUE1} workers held by slow clients (reading a request for "
            "{$APACHE.SLOW_CLIENTS.PERIOD})", "WARNING",
            "For {$APACHE.SLOW_CLIENTS.PERIOD} at least {$APACHE.SLOW_CLIENTS.MIN} workers "
            "have been reading a request (state R), the oldest for more than "
            "{$APACHE.SLOW_CLIENTS.AGE}s: clients that send their request slowly (slowloris) "
            "hold workers real requests need. Look at the R rows of /server-status (or run "
            "the exporter with --client-limit 5); bound the time a request may take to "
            "arrive with mod_reqtimeout.",
            f"max(/{T}/{key},{{$APACHE.SLOW_CLIENTS.PERIOD}})<{{$APACHE.SLOW_CLIENTS.MIN}} or "
            f"max({oldest},{{$APACHE.SLOW_CLIENTS.PERIOD}})<={{$APACHE.SLOW_CLIENTS.AGE}}",
            "performance")]
    if name == "top_client_share":
        busy = f"/{T}/{metric_key('busy_workers')}"
        return [], [trigger(
            f"min(/{T}/{key},{{$APACHE.TOP_CLIENT.PERIOD}})>{{$APACHE.TOP_CLIENT.SHARE.MAX}} and "
            f"min({busy},{{$APACHE.TOP_CLIENT.PERIOD}})>={{$APACHE.TOP_CLIENT.BUSY.MIN}}",
            "Apache: one client holds most busy workers (over {$APACHE.TOP_CLIENT.SHARE.MAX} "
            "for {$APACHE.TOP_CLIENT.PERIOD})", "WARNING",
            "For {$APACHE.TOP_CLIENT.PERIOD} a single client address has held more than "
            "{$APACHE.TOP_CLIENT.SHARE.MAX} of the busy workers, with at least "
            "{$APACHE.TOP_CLIENT.BUSY.MIN} busy: a flood or a misbehaving crawler - or a "
            "reverse proxy in front of Apache, where every connection comes from the proxy "
            "(set {$APACHE.TOP_CLIENT.SHARE.MAX} to 1 there). Find the address in "
            "/server-status or with the exporter's --client-limit.",
            f"max(/{T}/{key},{{$APACHE.TOP_CLIENT.PERIOD}})<={{$APACHE.TOP_CLIENT.SHARE.MAX}} or "
            f"max({busy},{{$APACHE.TOP_CLIENT.PERIOD}})<{{$APACHE.TOP_CLIENT.BUSY.MIN}}",
            "performance")]
    return [], []


def singleton_rules() -> List[dict]:
    rules = []
    for short, title, probe, names in OPTIONAL:
        rule_key = f"apache.singleton.discovery[{probe}]"
        protos = []
        rule_triggers: List[dict] = []
        for name in names:
            key = f"apache.metric[{tab_key(name)}{{#SINGLETON}}]"
            it = item(name, key, f"Apache: {_label(name)}", short)
            if name == "event_processes_not_accepting":
                it["triggers"] = [trigger(
                    f"min(/{T}/{key},{{$APACHE.WORKERS.UTIL.PERIOD}})>0",
                    "Apache: event MPM processes not accepting connections for "
                    "{$APACHE.WORKERS.UTIL.PERIOD}", "WARNING",
                    "Some event MPM child processes have had every thread busy (or "
                    "too many connections) for {$APACHE.WORKERS.UTIL.PERIOD}: connections "
                    "go to the others or wait in the accept queue.",
                    f"max(/{T}/{key},{{$APACHE.WORKERS.UTIL.PERIOD}})=0", "capacity")]
            alone, several = _insight_triggers(name, key)
            if alone:
                it["triggers"] = alone
            rule_triggers += [dict(t, uuid=uid("trigger-prototype", t["name"])) for t in several]
            protos.append(_proto(it, rule_key))
            m = BY_NAME[name]
            if m.kind == "counter" and name.startswith("tls_cache_"):
                protos.append(_proto(rate(
                    key, f"apache.tls.rate[{tab_key(name)}{{#SINGLETON}}]",
                    f"Apache: {_label(name)} per second",
                    f"{m.help.rstrip('.')} per second over the last interval.", short,
                    units="ops"), rule_key))
        rules.append({
            "uuid": uid("discovery", rule_key), "name": f"{title} discovery",
            "key": rule_key, "delay": "1h", "lifetime": "7d",
            "description": f"Finds {probe} in the "
                           "metrics file: its items exist only where the set-up writes them "
                           "({#SINGLETON} is empty, as in Zabbix's own event MPM discovery).",
            "item_prototypes": protos})
        if rule_triggers:
            rules[-1]["trigger_prototypes"] = rule_triggers
    return rules


def group_rule() -> dict:
    rule_key = "apache.discovery"
    prototypes = []
    for stat in MEMORY_STATS:
        key = f"apache.memory[{{#NAME}},{stat}]"
        p: dict = {"uuid": uid("prototype", stat),
                   "name": f"Apache {{#NAME}} workers: memory {stat}", "key": key,
                   "delay": DELAY, "history": "7d"}
        if stat in ("average", "median"):
            p["value_type"] = "FLOAT"
        if stat != "count":
            p["units"] = "B"
        p["description"] = ("Processes in the group." if stat == "count" else
                            f"The {stat} memory use (RSS) of the group's processes.")
        p["tags"] = [{"tag": "component", "value": "memory"},
                     {"tag": "group", "value": "{#NAME}"}]
        if stat == "max":
            p["trigger_prototypes"] = [{
                "uuid": uid("trigger-prototype", "memory"),
                "expression": f"last(/{T}/{key})>{{$APACHE.MEMORY.MAX:\"{{#NAME}}\"}}",
                "recovery_mode": "RECOVERY_EXPRESSION",
                "recovery_expression": f"last(/{T}/{key})<={{$APACHE.MEMORY.MAX:\"{{#NAME}}\"}}",
                "name": "Apache {#NAME} workers: a process uses more than "
                        "{$APACHE.MEMORY.MAX:\"{#NAME}\"} bytes",
                "priority": "WARNING",
                "description": "apache-manager -k -a/-i (apache-worker-reaper) kills such "
                               "processes when its thresholds say so.",
                "tags": [{"tag": "scope", "value": "capacity"}]}]
        prototypes.append(p)
    truncated = item("wsgi_group_name_truncated",
                     "apache.labelled[wsgi-group-name-truncated,{#NAME}]",
                     "Apache {#NAME} workers: name cut by the process title", "memory",
                     extra="The file has the line only for such groups: none is 0.")
    truncated["uuid"] = uid("prototype", "truncated")
    truncated["preprocessing"] = [{"type": "JAVASCRIPT",
                                   "parameters": ["return value === '' ? 0 : value;"]}]
    truncated["tags"].append({"tag": "group", "value": "{#NAME}"})
    prototypes.append(truncated)
    return {
        "uuid": uid("discovery", rule_key), "name": "Apache worker groups",
        "key": rule_key, "delay": "1h", "lifetime": "7d",
        "description": "native (Apache's own workers) and each mod_wsgi daemon group "
                       "(apache-manager -z).",
        "item_prototypes": prototypes,
    }


def vhost_rule() -> dict:
    prototypes = []
    for m in VHOST_METRICS + tuple(m for m in INTERVAL_METRICS if m.labels == ("vhost",)
                                   and "tab" not in dict(m.absent)):
        key = f"apache.labelled[{tab_key(m.name)},{{#VHOST}}]"
        p = item(m.name, key, f"Apache vhost {{#VHOST}}: "
                 f"{tab_key(m.name)[len('vhost-'):].replace('-', ' ')}", "vhost")
        p["uuid"] = uid("prototype", key)
        p["tags"].append({"tag": "vhost", "value": "{#VHOST}"})
        prototypes.append(p)
    return {
        "uuid": uid("discovery", "apache.vhost.discovery"), "name": "Apache virtual hosts",
        "key": "apache.vhost.discovery", "delay": "10m", "lifetime": "1d",
        "description": "The virtual hosts of the metrics file's per-vhost lines (the busiest "
                       "--vhost-limit ones, the rest as 'other').",
        "item_prototypes": prototypes,
    }


def balancer_rule() -> dict:
    rule_key = "apache.balancer.discovery"
    prototypes = []
    for m in PROXY_METRICS:
        if "tab" in dict(m.absent):
            continue
        key = f'apache.member[{tab_key(m.name)},"{{#BALANCER}}","{{#MEMBER}}"]'
        short = tab_key(m.name)[len("proxy-worker-"):].replace("-", " ")
        p = item(m.name, key, f"Apache balancer {{#BALANCER}} member {{#MEMBER}}: {short}",
                 "balancer")
        p["uuid"] = uid("prototype", key)
        p["tags"] += [{"tag": "balancer", "value": "{#BALANCER}"},
                      {"tag": "member", "value": "{#MEMBER}"}]
        prototypes.append(p)
        if m.kind == "counter":
            kb = m.unit == "kilobytes"
            r = rate(key, f'apache.member.rate[{tab_key(m.name)},"{{#BALANCER}}","{{#MEMBER}}"]',
                     f"Apache balancer {{#BALANCER}} member {{#MEMBER}}: {short} per second",
                     f"{m.help.rstrip('.').replace('Kilobytes', 'Bytes')} per second over "
                     "the last interval.", "balancer", units="Bps" if kb else "rps",
                     multiplier="1024" if kb else "")
            r["uuid"] = uid("prototype", r["key"])
            prototypes.append(r)
    return {
        "uuid": uid("discovery", rule_key), "name": "Apache balancer members",
        "key": rule_key, "delay": "1h", "lifetime": "7d",
        "description": "mod_proxy_balancer members of the metrics file (ProxyStatus On): "
                       "{#BALANCER} and {#MEMBER}. Names with a character the agent refuses "
                       "in UserParameter arguments are left out.",
        "item_prototypes": prototypes,
    }


def labels_rule(names: Tuple[str, ...], title: str, tag: str,
                what: str) -> Optional[dict]:
    """Figures labelled by one of ``names`` (a listening address, a client),
    once the catalogue has them: discovered with apache.labels.discovery[KEY]."""
    metrics = [m for m in ALL_METRICS if len(m.labels) == 1 and m.labels[0] in names
               and "tab" not in dict(m.absent)]
    if not metrics:
        return None
    rule_key = f"apache.labels.discovery[{tab_key(metrics[0].name)}]"
    prototypes = []
    for m in metrics:
        key = f'apache.labelled[{tab_key(m.name)},"{{#LABEL}}"]'
        p = item(m.name, key, f"Apache {{#LABEL}}: {_label(m.name)}", tag)
        p["uuid"] = uid("prototype", key)
        p["tags"].append({"tag": tag, "value": "{#LABEL}"})
        prototypes.append(p)
    return {"uuid": uid("discovery", rule_key), "name": title,
            "key": rule_key, "delay": "1h", "lifetime": "7d",
            "description": f"The {what} of the metrics file's per-{tag} lines.",
            "item_prototypes": prototypes}


def queue_full_trigger() -> dict:
    """The accept queue near its backlog limit: two items, so a template-level trigger."""
    length = f"/{T}/{metric_key('accept_queue_length_all')}"
    limit = f"/{T}/{metric_key('accept_queue_limit_all')}"
    full = "{$APACHE.ACCEPT_QUEUE.FULL}"
    period = "{$APACHE.ACCEPT_QUEUE.FULL.PERIOD}"
    return trigger(
        f"min({length},{period})>=last({limit})*{full}/100 and last({limit})>0",
        "Apache: accept queue full (at {$APACHE.ACCEPT_QUEUE.FULL}% of its limit for "
        "{$APACHE.ACCEPT_QUEUE.FULL.PERIOD})", "HIGH",
        "The accept queues of Apache's listening sockets have held at least "
        "{$APACHE.ACCEPT_QUEUE.FULL}% of their backlog limit (min(ListenBacklog, "
        "net.core.somaxconn)) for {$APACHE.ACCEPT_QUEUE.FULL.PERIOD}: at the limit the "
        "kernel drops new connections and clients retry after 1, 3, 7 seconds or give up. "
        "Every worker is busy; find what holds them.",
        f"max({length},{period})<last({limit})*{full}/100", "capacity")


def build() -> dict:
    """The whole export as plain data."""
    items = plain_items() + labelled_items() + rate_items() + builtin_items()
    rules = [group_rule(), vhost_rule(), balancer_rule()] + singleton_rules()
    for rule in (labels_rule(LISTEN_LABELS, "Apache listening addresses", "listen",
                             "listening addresses"),
                 labels_rule(("client",), "Apache clients holding workers", "client",
                             "client addresses (only with --client-limit)")):
        if rule is not None:
            rules.append(rule)
    kills = (f"last(/{T}/{metric_key('workers_killed_active')})"
             f"+last(/{T}/{metric_key('workers_killed_idle')})")
    template = {
        "uuid": uid("template"), "template": T, "name": T,
        "description": "Apache httpd through apache-manager's metrics file, written by "
                       "apache-manager -c (the apache-metrics-exporter front end) or "
                       "apache-metrics-exporter --format tab. Needs the UserParameters of "
                       "contrib/zabbix/apache-metrics-exporter.conf and a cron job keeping "
                       "{$APACHE.METRICS.FILE} fresh. Generated by scripts/zabbix_template.py.",
        "groups": [{"name": GROUP}],
        "items": items,
        "discovery_rules": rules,
        "tags": [{"tag": "class", "value": "software"}, {"tag": "target", "value": "apache"}],
        "macros": [{"macro": m, "value": v, "description": d} for m, v, d in MACROS],
        "valuemaps": [
            {"uuid": uid("valuemap", "status-response"),
             "name": "apache-manager status-response",
             "mappings": [{"value": "0", "newvalue": "status page read"},
                          {"value": "1", "newvalue": "status page not read"}]},
            {"uuid": uid("valuemap", "service-state"), "name": "Service state",
             "mappings": [{"value": "0", "newvalue": "Down"}, {"value": "1", "newvalue": "Up"}]},
        ],
    }
    return {"zabbix_export": {
        "version": "6.0",
        "date": "2026-11-29T00:00:00Z",
        "groups": [{"uuid": uid("group", GROUP), "name": GROUP}],
        "templates": [template],
        "triggers": [queue_full_trigger(), trigger(
            f"{kills}>{{$APACHE.KILLS.MAX}}",
            "Apache: the reaper killed {ITEM.LASTVALUE1} active and {ITEM.LASTVALUE2} idle "
            "workers", "INFO",
            "The last apache-manager -k (apache-worker-reaper) run killed workers over its "
            "thresholds; frequent kills mean a leak or thresholds too low.",
            f"{kills}<={{$APACHE.KILLS.MAX}}", "performance")],
    }}


def all_items(export: Dict) -> List[dict]:
    """Items and item prototypes of an export (for the tests)."""
    (t,) = export["zabbix_export"]["templates"]
    return t["items"] + [p for r in t["discovery_rules"] for p in r["item_prototypes"]]


def render() -> str:
    """The YAML text of the export."""
    import yaml

    header = ("# Zabbix 6.0 template: generated by scripts/zabbix_template.py from the "
              "catalogue; do not edit.\n")
    return header + yaml.safe_dump(build(), sort_keys=False, allow_unicode=True, width=100)


def main() -> int:
    with open(OUTPUT, "w", encoding="utf-8") as fh:
        fh.write(render())
    print(OUTPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
