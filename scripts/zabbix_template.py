"""Write contrib/zabbix/apache-metrics-exporter-template.yaml (a Zabbix 6.0 export).

The template reads apache-manager's metrics file through the UserParameters of
contrib/zabbix/apache-metrics-exporter.conf: ``apache.metric[KEY]`` for a
``KEY<TAB>VALUE`` line, ``apache.labelled[KEY,LABEL]`` for a
``KEY<TAB>LABEL<TAB>VALUE`` line, ``apache.memory[GROUP,STAT]`` for the memory
lines, ``apache.discovery`` for the worker groups, ``apache.vhost.discovery``
for the virtual hosts of the per-vhost lines. Names, units and help come
from the catalogue, so the template cannot drift from what the file holds
(tests/test_manager.py checks the committed file against this script and runs
every key through a real zabbix_agentd). Run after changing the catalogue:

    .venv/bin/python scripts/zabbix_template.py
"""

from __future__ import annotations

import hashlib
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from apache_metrics_exporter.catalogue import (  # noqa: E402
    BY_NAME,
    MEMORY_STATS,
    REAPER_METRICS,
    SCOREBOARD_STATES,
    SERVER_METRICS,
    VHOST_METRICS,
)
from apache_metrics_exporter.reaper.state import KINDS, REASONS  # noqa: E402
from apache_metrics_exporter.restarts import KINDS as RESTART_KINDS  # noqa: E402

OUTPUT = os.path.join(ROOT, "contrib", "zabbix", "apache-metrics-exporter-template.yaml")
TEMPLATE = "Apache by apache-metrics-exporter"
GROUP = "Templates/Applications"
DATA_FILE_MACRO = "{$APACHE.METRICS.FILE}"

# apache-manager's own keys first (its file's order), then the keys every
# Apache 2.4 gives this tool's new sections. Keys only some set-ups have (event
# MPM connections, the TLS session cache, balancer members, the InfluxDB push)
# are left to users who have them: apache.metric[KEY] reads any of them.
ORIGINAL_SERVER = [m.name for m in sorted((m for m in SERVER_METRICS if m.tab_key),
                                           key=lambda m: m.tab_key)]
ORIGINAL_INTERNAL = ["foreign_worker_count", "native_worker_count", "status_response",
                     "workers_hanging", "workers_killed_active", "workers_killed_idle"]
DETAILS = ["active_requests", "cpu_children_system_seconds", "cpu_children_user_seconds",
           "cpu_system_seconds", "cpu_user_seconds", "duration_per_request_ms",
           "graceful_workers", "load1", "load15", "load5", "longest_request",
           "longest_request_seconds", "longest_request_vhost",
           "parent_server_config_generation", "parent_server_mpm_generation",
           "scoreboard_slots", "server_uptime_seconds", "total_duration_ms", "utilisation"]
# The reaper's totals the tab file writes one per line (from the catalogue).
REAPER = [m.name for m in REAPER_METRICS if not m.labels and not m.tab_key]
HEALTH = ["up", "collection_duration_seconds"]

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
]
PRIORITIES = ("INFO", "WARNING", "AVERAGE", "HIGH")


def uid(*parts: str) -> str:
    """A stable UUIDv4-shaped identifier (Zabbix requires v4) derived from a name."""
    digest = hashlib.sha256("/".join((TEMPLATE,) + parts).encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4).hex


# apache-manager's keys that are the tab file's form of a catalogue metric.
LEGACY = {"status_response": "up", "workers_killed_active": "reaper_last_run_kills",
          "workers_killed_idle": "reaper_last_run_kills"}
LEGACY_HELP = {
    "workers_killed_active": "Active workers and mod_wsgi daemons killed by the reaper's "
                             "last run (apache-manager's definition).",
    "workers_killed_idle": "Idle workers killed by the reaper's last run.",
}


def _tab(name: str) -> str:
    if name not in BY_NAME:  # status_response: the tab file's form of "up"
        return name.replace("_", "-")
    return BY_NAME[name].tab_key or name.replace("_", "-")


def _value_type(metric: object) -> str:
    if metric.type is str:
        return "TEXT"
    if metric.type is float:
        return "FLOAT"
    return "UNSIGNED"


def _units(metric: object) -> str:
    if metric.name in ("uptime", "server_uptime_seconds"):
        return "uptime"
    if metric.tab_scale == 1024:
        return "B"  # apache-manager wrote kB x 1024
    if metric.name == "reaper_last_run_timestamp_seconds":
        return "unixtime"
    return UNITS.get(metric.unit, "")


def _tags(component: str) -> list:
    return [{"tag": "component", "value": component}]


def item(metric_name: str, key: str, name: str, component: str, extra: str = "") -> dict:
    """One item on a metrics-file value."""
    m = BY_NAME[LEGACY.get(metric_name, metric_name)]
    out = {"uuid": uid("item", key), "name": name, "key": key}
    out["history"] = "7d"
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
    return out


def trigger(expression: str, name: str, priority: str, description: str) -> dict:
    assert priority in PRIORITIES
    return {"uuid": uid("trigger", name), "expression": expression, "name": name,
            "priority": priority, "description": description,
            "tags": [{"tag": "scope", "value": "availability" if priority == "HIGH"
                      else "performance"}]}


def build() -> dict:
    """The whole export as plain data."""
    t = TEMPLATE
    items = []
    for name in ORIGINAL_SERVER + ORIGINAL_INTERNAL:
        key = _tab(name)
        label = key.replace("-", " ")
        it = item(name, f"apache.metric[{key}]", f"Apache: {label}", "apache-manager")
        if name == "status_response":
            it["description"] = ("0 when the status page was read, 1 when not (apache-manager's "
                                 "convention, like an exit status).")
            it["valuemap"] = {"name": "apache-manager status-response"}
            it["triggers"] = [trigger(
                f"last(/{t}/apache.metric[status-response])<>0",
                "Apache: the status page cannot be read", "HIGH",
                "The last collection could not read mod_status; the reason is the "
                "collector's line on stderr (the cron job's mail or log).")]
        elif name == "workers_hanging":
            it["triggers"] = [trigger(
                f"last(/{t}/apache.metric[workers-hanging])>{{$APACHE.HANGING.MAX}}",
                "Apache: {ITEM.LASTVALUE1} hanging workers", "WARNING",
                "Requests running longer than the hanging-worker threshold (apache-manager "
                "-T, default 5 minutes).")]
        items.append(it)
    for name in DETAILS + REAPER + HEALTH:
        key = _tab(name)
        component = ("reaper" if name.startswith("reaper") else
                     "health" if name in HEALTH else "apache")
        items.append(item(name, f"apache.metric[{key}]", f"Apache: {key.replace('-', ' ')}",
                          component))
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
        key = BY_NAME["restarts_total"].tab_key.format(kind=kind)
        items.append(item("restarts_total", f"apache.metric[{key}]",
                          f"Apache: {kind} restarts seen", "apache"))
    items.append({
        "uuid": uid("item", "vfs.file.time"), "name": "Apache: metrics file modified",
        "key": f"vfs.file.time[{DATA_FILE_MACRO},modify]", "history": "7d",
        "units": "unixtime",
        "description": "When the cron job last wrote the metrics file (a built-in agent key).",
        "tags": _tags("health"),
        "triggers": [trigger(
            f"fuzzytime(/{t}/vfs.file.time[{DATA_FILE_MACRO},modify],"
            "{$APACHE.METRICS.MAXAGE})=0",
            "Apache: the metrics file is stale", "WARNING",
            "The metrics file has not been rewritten for {$APACHE.METRICS.MAXAGE}: the cron "
            "job (apache-manager -c) stopped or fails; every other item shows old values.")],
    })
    prototypes = []
    for stat in MEMORY_STATS:
        key = f"apache.memory[{{#NAME}},{stat}]"
        p = {"uuid": uid("prototype", stat), "name": f"Apache {{#NAME}} workers: memory {stat}",
             "key": key, "history": "7d"}
        if stat in ("average", "median"):
            p["value_type"] = "FLOAT"
        p["units"] = "" if stat == "count" else "B"
        if not p["units"]:
            del p["units"]
        p["description"] = ("Processes in the group." if stat == "count" else
                            f"The {stat} memory use (RSS) of the group's processes.")
        p["tags"] = [{"tag": "component", "value": "memory"},
                     {"tag": "group", "value": "{#NAME}"}]
        if stat == "max":
            p["trigger_prototypes"] = [{
                "uuid": uid("trigger-prototype", "memory"),
                "expression": f"last(/{t}/{key})>{{$APACHE.MEMORY.MAX:\"{{#NAME}}\"}}",
                "name": "Apache {#NAME} workers: a process uses more than "
                        "{$APACHE.MEMORY.MAX:\"{#NAME}\"} bytes",
                "priority": "WARNING",
                "description": "apache-manager -k -a/-i (apache-worker-reaper) kills such "
                               "processes when its thresholds say so.",
                "tags": [{"tag": "scope", "value": "capacity"}]}]
        prototypes.append(p)
    discovery = {
        "uuid": uid("discovery", "apache.discovery"), "name": "Apache worker groups",
        "key": "apache.discovery", "delay": "1h", "lifetime": "7d",
        "description": "native (Apache's own workers) and each mod_wsgi daemon group "
                       "(apache-manager -z).",
        "item_prototypes": prototypes,
    }
    vhost_prototypes = []
    for m in VHOST_METRICS:
        key = f"apache.labelled[{_tab(m.name)},{{#VHOST}}]"
        p = item(m.name, key, f"Apache vhost {{#VHOST}}: "
                 f"{_tab(m.name)[len('vhost-'):].replace('-', ' ')}", "vhost")
        p["uuid"] = uid("prototype", key)
        p["tags"].append({"tag": "vhost", "value": "{#VHOST}"})
        vhost_prototypes.append(p)
    vhosts = {
        "uuid": uid("discovery", "apache.vhost.discovery"), "name": "Apache virtual hosts",
        "key": "apache.vhost.discovery", "delay": "10m", "lifetime": "1d",
        "description": "The virtual hosts of the metrics file's per-vhost lines (the busiest "
                       "--vhost-limit ones, the rest as 'other').",
        "item_prototypes": vhost_prototypes,
    }
    kills = (f"last(/{t}/apache.metric[workers-killed-active])"
             f"+last(/{t}/apache.metric[workers-killed-idle])>{{$APACHE.KILLS.MAX}}")
    template = {
        "uuid": uid("template"), "template": t, "name": t,
        "description": "Apache httpd through apache-manager's metrics file, written by "
                       "apache-manager -c (the apache-metrics-exporter front end) or "
                       "apache-metrics-exporter --format tab. Needs the UserParameters of "
                       "contrib/zabbix/apache-metrics-exporter.conf and a cron job keeping "
                       "{$APACHE.METRICS.FILE} fresh. Generated by scripts/zabbix_template.py.",
        "groups": [{"name": GROUP}],
        "items": items,
        "discovery_rules": [discovery, vhosts],
        "tags": [{"tag": "class", "value": "software"}, {"tag": "target", "value": "apache"}],
        "macros": [{"macro": m, "value": v, "description": d} for m, v, d in MACROS],
        "valuemaps": [{"uuid": uid("valuemap", "status-response"),
                       "name": "apache-manager status-response",
                       "mappings": [{"value": "0", "newvalue": "status page read"},
                                    {"value": "1", "newvalue": "status page not read"}]}],
    }
    return {"zabbix_export": {
        "version": "6.0",
        "date": "2026-11-29T00:00:00Z",
        "groups": [{"uuid": uid("group", GROUP), "name": GROUP}],
        "templates": [template],
        "triggers": [trigger(kills, "Apache: the reaper killed {ITEM.LASTVALUE1} active and "
                             "{ITEM.LASTVALUE2} idle workers", "INFO",
                             "The last apache-manager -k (apache-worker-reaper) run killed "
                             "workers over its thresholds; frequent kills mean a leak or "
                             "thresholds too low.")],
    }}


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
