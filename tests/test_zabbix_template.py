"""The Zabbix 6.0 template in contrib/zabbix/, its UserParameters run by a real agent.

The agent is Debian's zabbix-agent (6.0 on Debian 12): ``zabbix_agentd -c CONF
-t KEY`` evaluates one key and exits, so no agent daemon is ever started. The
configuration is the shipped UserParameters file with its paths pointed at a
metrics file the front end has just written from a live private Apache.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml

from apache_metrics_exporter.catalogue import ALL_METRICS, SCOREBOARD_STATES
from apache_metrics_exporter.collect.processes import ProcessScan
from apache_metrics_exporter.collect.snapshot import Sample, Snapshot
from apache_metrics_exporter.reaper.state import KINDS, REASONS
from apache_metrics_exporter.restarts import KINDS as RESTART_KINDS
from apache_metrics_exporter.writers import tab
from tests.conftest import exporter_env
from tests.test_manager import manager_env, run_manager

ROOT = Path(__file__).resolve().parent.parent
ZABBIX = ROOT / "contrib" / "zabbix"
TEMPLATE_FILE = ZABBIX / "apache-metrics-exporter-template.yaml"
USERPARAMS = ZABBIX / "apache-metrics-exporter.conf"
AGENTD = shutil.which("zabbix_agentd") or "/usr/sbin/zabbix_agentd"
UUID4 = re.compile(r"^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$")
BUILTIN_KEYS = ("vfs.file.time", "web.page.get", "net.tcp.service", "net.tcp.service.perf",
                "proc.num", "proc.mem", "proc.cpu.util")
TEMPLATE_NAME = "Apache by apache-metrics-exporter"
ITEM_REF = re.compile(r"/" + re.escape(TEMPLATE_NAME) + r"/([\w.]+(?:\[[^\]]*\])?)")


def generator():
    spec = importlib.util.spec_from_file_location("zabbix_template",
                                                  ROOT / "scripts" / "zabbix_template.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load() -> dict:
    return yaml.safe_load(TEMPLATE_FILE.read_text())


def template() -> dict:
    (t,) = load()["zabbix_export"]["templates"]
    return t


def items() -> List[dict]:
    return template()["items"]


def rules() -> Dict[str, dict]:
    return {r["key"]: r for r in template()["discovery_rules"]}


def prototypes(rule: str = "") -> List[dict]:
    """Item prototypes of one discovery rule (by key), or of all."""
    return [p for key, r in rules().items() if rule in ("", key)
            for p in r["item_prototypes"]]


def all_triggers() -> List[dict]:
    out = list(load()["zabbix_export"].get("triggers", []))
    for it in items():
        out += it.get("triggers", [])
    for p in prototypes():
        out += p.get("trigger_prototypes", [])
    for r in rules().values():  # those on several item prototypes
        out += r.get("trigger_prototypes", [])
    return out


def macros() -> Dict[str, str]:
    return {m["macro"]: m["value"] for m in template()["macros"]}


def userparameter_keys() -> List[str]:
    return [ln.split("=", 1)[1].split(",", 1)[0].split("[", 1)[0]
            for ln in USERPARAMS.read_text().splitlines() if ln.startswith("UserParameter=")]


def test_template_is_the_generators_output():
    # Regenerate with: .venv/bin/python scripts/zabbix_template.py
    assert load() == generator().build()


def polled(entries: List[dict]) -> List[dict]:
    """Items the agent is asked for (not the dependent ones computed from them)."""
    return [e for e in entries if e.get("type", "ZABBIX_PASSIVE") != "DEPENDENT"]


def test_template_is_a_well_formed_zabbix_6_0_export():
    export = load()["zabbix_export"]
    assert export["version"] == "6.0"
    t = template()
    uuids = [t["uuid"], *(g["uuid"] for g in export["groups"])]
    for it in items() + prototypes():
        uuids.append(it["uuid"])
        assert it.get("value_type", "UNSIGNED") in ("UNSIGNED", "FLOAT", "TEXT", "CHAR")
        assert it["delay"]  # explicit: the server test shortens them
    uuids += [tr["uuid"] for tr in all_triggers()]
    uuids += [r["uuid"] for r in t["discovery_rules"]] + [v["uuid"] for v in t["valuemaps"]]
    assert len(uuids) == len(set(uuids))
    assert all(UUID4.match(u) for u in uuids)  # Zabbix refuses other than UUIDv4
    keys = {it["key"] for it in items()} | {p["key"] for p in prototypes()}
    assert len(keys) == len(items()) + len(prototypes())
    defined = set(macros())
    names = {tr["name"] for tr in all_triggers()}
    for tr in all_triggers():
        assert tr["priority"] in ("INFO", "WARNING", "AVERAGE", "HIGH", "DISASTER")
        # Every trigger recovers by a condition of its own, on the same items.
        assert tr["recovery_mode"] == "RECOVERY_EXPRESSION", tr["name"]
        used = ITEM_REF.findall(tr["expression"])
        assert used and set(used) <= keys, tr["expression"]
        assert set(ITEM_REF.findall(tr["recovery_expression"])) <= set(used), tr["name"]
        assert tr["recovery_expression"] != tr["expression"]
        for macro in re.findall(r"\{\$[A-Z0-9_.]+", tr["expression"] + tr["name"]
                                + tr["recovery_expression"] + tr["description"]):
            assert macro + "}" in defined, macro
        for dep in tr.get("dependencies", []):
            assert dep["name"] in names
    for it in items() + prototypes():
        for macro in re.findall(r"\{\$[A-Z0-9_.]+\}", it["key"]):
            assert macro in defined
        if it.get("type") == "DEPENDENT":
            assert it["master_item"]["key"] in keys
    # Every key is a shipped UserParameter or an agent built-in.
    known = set(userparameter_keys()) | set(BUILTIN_KEYS)
    for key in {it["key"] for it in polled(items() + prototypes())} | set(rules()):
        assert key.split("[", 1)[0] in known, key


def trigger_named(start: str) -> dict:
    (tr,) = [tr for tr in all_triggers() if tr["name"].startswith(start)]
    return tr


def test_template_has_what_the_issue_asks_for():
    keys = {it["key"] for it in items()}
    for original in ("busy-workers", "bytes-per-request", "bytes-per-second", "cpu-load",
                     "idle-workers", "requests-per-second", "total-accesses", "total-traffic",
                     "uptime", "foreign-worker-count", "native-worker-count",
                     "status-response", "workers-hanging", "workers-killed-active",
                     "workers-killed-idle"):
        assert f"apache.metric[{original}]" in keys
    assert {p["key"] for p in prototypes("apache.discovery")} == {
        f"apache.memory[{{#NAME}},{s}]" for s in ("count", "min", "max", "average", "median")
    } | {"apache.labelled[wsgi-group-name-truncated,{#NAME}]"}
    assert {p["key"] for p in prototypes("apache.vhost.discovery")} == {
        f"apache.labelled[{k},{{#VHOST}}]" for k in (
            "vhost-busy-workers", "vhost-requests-in-flight", "vhost-longest-request-seconds",
            # from the second collection on (docs/insight.md)
            "vhost-request-duration-p50", "vhost-request-duration-p90",
            "vhost-request-duration-p99", "vhost-request-duration-max",
            "vhost-request-duration-sampled")}
    members = {p["key"] for p in prototypes("apache.balancer.discovery")}
    assert 'apache.member[proxy-worker-busy,"{#BALANCER}","{#MEMBER}"]' in members
    event = {p["key"] for p in prototypes("apache.singleton.discovery[processes]")}
    for key in ("processes", "stopping-processes", "conns-total",
                "event-processes-not-accepting"):
        assert f"apache.metric[{key}{{#SINGLETON}}]" in event
    tls = {p["key"] for p in prototypes("apache.singleton.discovery[tls-cache-usage-percent]")}
    assert "apache.metric[tls-cache-retrieve-hit-count{#SINGLETON}]" in tls
    # Rates by "change per second" beside the since-start figures.
    by_key = {it["key"]: it for it in items() + prototypes()}
    for rate_key, master in (("apache.requests.rate", "apache.metric[total-accesses]"),
                             ("apache.bytes.rate", "apache.metric[total-traffic]")):
        assert by_key[rate_key]["master_item"]["key"] == master
        assert by_key[rate_key]["preprocessing"][0]["type"] == "CHANGE_PER_SECOND"
    assert by_key["apache.version"]["master_item"]["key"].startswith("web.page.get[")
    # The triggers users rely on, and those no other template has.
    for start, severity, needle in (
            ("Apache: the status page cannot be read", "WARNING",
             "apache.metric[status-response],#2)<>0"),
            ("Apache: no status page read", "AVERAGE", "nodata("),
            ("Apache: has been restarted", "INFO", "apache.metric[uptime])<{$APACHE.UPTIME.MIN}"),
            ("Apache: version has changed", "INFO", "apache.version,#2)"),
            ("Apache: response time is too high", "WARNING", "net.tcp.service.perf["),
            ("Apache: service is down", "AVERAGE", "net.tcp.service["),
            ("Apache: process is not running", "HIGH", "proc.num["),
            ("Apache: workers saturated", "AVERAGE", "apache.metric[utilisation]"),
            ("Apache: event MPM processes not accepting", "WARNING",
             "event-processes-not-accepting"),
            ("Apache: {ITEM.LASTVALUE1} hanging workers", "WARNING",
             "apache.metric[workers-hanging]"),
            ("Apache {#NAME} workers: a process uses more", "WARNING",
             "{$APACHE.MEMORY.MAX:\"{#NAME}\"}"),
            ("Apache: the reaper killed", "INFO", "workers-killed-active"),
            ("Apache: the metrics file is stale", "WARNING", "fuzzytime("),
            # issue 20's insight figures (docs/insight.md)
            ("Apache: connections wait for a worker", "WARNING",
             "apache.metric[accept-queue-length-all],{$APACHE.ACCEPT_QUEUE.PERIOD})>"),
            ("Apache: accept queue full", "HIGH",
             "apache.metric[accept-queue-limit-all])*{$APACHE.ACCEPT_QUEUE.FULL}/100"),
            ("Apache: overloaded, the status page was not read", "HIGH",
             'apache.metric[status-reason],#2,"regexp","{$APACHE.STATUS.REASON.OVERLOAD}")=2'),
            ("Apache: slow requests", "WARNING",
             "apache.metric[request-duration-p99{#SINGLETON}],{$APACHE.LATENCY.PERIOD})>"),
            ("Apache: {ITEM.LASTVALUE1} workers held by slow clients", "WARNING",
             "apache.metric[reading-oldest-seconds{#SINGLETON}],{$APACHE.SLOW_CLIENTS.PERIOD})>"),
            ("Apache: one client holds most busy workers", "WARNING",
             "apache.metric[top-client-share{#SINGLETON}],{$APACHE.TOP_CLIENT.PERIOD})>")):
        tr = trigger_named(start)
        assert tr["priority"] == severity, start
        assert needle in tr["expression"], start
    assert {"{$APACHE.MEMORY.MAX}", "{$APACHE.HANGING.MAX}", "{$APACHE.KILLS.MAX}"} <= set(
        macros())
    # The overload reasons: a regular expression matching "saturated" only, by default.
    assert re.fullmatch(macros()["{$APACHE.STATUS.REASON.OVERLOAD}"], "saturated")
    assert not re.search(macros()["{$APACHE.STATUS.REASON.OVERLOAD}"], "timeout")


def covered(text: str) -> List[str]:
    """The lines of a metrics file no item or item prototype of the template reads."""
    keys = {it["key"] for it in items()}
    protos = {p["key"] for p in prototypes()}
    missing = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split("\t")
        if len(f) == 2:
            ok = (f"apache.metric[{f[0]}]" in keys
                  or f"apache.metric[{f[0]}{{#SINGLETON}}]" in protos)
        elif f[0] == "memory-usage":
            ok = f"apache.memory[{{#NAME}},{f[2]}]" in protos
        elif len(f) == 3:
            pattern = re.compile(r"apache\.labelled\[" + re.escape(f[0]) + r',"?\{#\w+\}"?\]$')
            ok = (f"apache.labelled[{f[0]},{f[1]}]" in keys
                  or any(pattern.match(p) for p in protos))
        else:
            ok = f'apache.member[{f[0]},"{{#BALANCER}}","{{#MEMBER}}"]' in protos
        if not ok:
            missing.append(line)
    return missing


def every_sample() -> List[Sample]:
    """A sample of every catalogue metric, each label value the file can name."""
    values = {"state": [s for _c, s in SCOREBOARD_STATES], "reason": list(REASONS),
              "group": ["native", "example"], "vhost": ["www.example.org:80"],
              "balancer": ["balancer://app"], "worker": ["http://127.0.0.1:8080"]}
    out = []
    for m in ALL_METRICS:
        value = "GET / HTTP/1.1" if m.type is str else m.type(1)
        combos: List[Tuple] = [()]
        for label in m.labels:
            if label == "kind":
                choices = list(RESTART_KINDS if m.name == "restarts_total" else KINDS)
            else:
                choices = values.get(label, ["127.0.0.1:80"])
            combos = [c + ((label, v),) for c in combos for v in choices]
        out.extend(Sample(m, value, c) for c in combos)
    return out


def test_every_key_the_tab_writer_can_write_has_an_item():
    # A snapshot with every metric of the catalogue, through the tab writer:
    # whatever line it writes, the template reads (a new catalogue entry
    # without an item fails here until scripts/zabbix_template.py covers it).
    snap = Snapshot(url="http://127.0.0.1/server-status", timestamp=1.7e9, up=True,
                    error=None, warnings=[], auto=None, workers=None, event_processes=None,
                    processes=ProcessScan(1, 1.0, [], set(), "rss"), samples=every_sample())
    text = tab.render([snap])
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) > 100  # the snapshot really has everything
    for key in ("proxy-worker-busy", "vhost-busy-workers", "memory-usage", "scoreboard",
                "tls-cache-usage-percent", "conns-total", "push-spooled-points"):
        assert any(ln.startswith(key + "\t") for ln in lines), key
    # The --listen endpoint's own figures (scrapes, its process): in a tab
    # file only when a test builds one with every metric, as here.
    endpoint_only = {m.name.replace("_", "-") for m in ALL_METRICS
                     if "the --listen endpoint's own" in dict(m.absent).values()}
    assert {"scrape-failures-total", "exporter-cpu-seconds"} <= endpoint_only
    assert covered(text) == [ln for ln in lines if ln.split("\t")[0] in endpoint_only]
    assert covered("no-such-key\t1\n") == ["no-such-key\t1"]  # the check can fail


# ---------------------------------------------------------------------------
# Against a live metrics file


@pytest.fixture
def live_file(prefork, tmp_path) -> Path:
    """A metrics file just written by apache-manager -c, after a reaper run
    (so the reaper's sections are there, as on a host that runs -k: a real
    one, as a dry run leaves the last run's figures alone, with a threshold no
    worker reaches, so nothing is signalled) and an earlier collection with
    traffic since (so the interval sections are there, as on a host whose cron
    runs it every minute)."""
    out, state = tmp_path / "apache-manager.txt", tmp_path / "state.json"
    env = manager_env(APACHE_METRICS_COLLECTOR_STATE=str(tmp_path / "collector.json"))
    common = ("--url", prefork.status_url, "--state-file", str(state))
    proc = run_manager("-k", "-a", "1G", *common, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run_manager("-c", "-f", str(out), *common, env=env)
    assert proc.returncode == 0, proc.stderr
    for _ in range(3):
        prefork.get("/index.html")
    proc = run_manager("-c", "-f", str(out), *common, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "interval-seconds\t" in out.read_text(), out.read_text()
    return out


def _file_keys(text: str) -> Tuple[set, set, set]:
    plain, labelled, memory = set(), set(), set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        f = line.split("\t")
        if f[0] == "memory-usage":
            memory.add((f[1], f[2]))
        elif len(f) == 2:
            plain.add(f[0])
        elif len(f) == 3:
            labelled.add((f[0], f[1]))
    return plain, labelled, memory


@pytest.mark.integration
def test_template_covers_every_key_of_the_metrics_file(live_file):
    text = live_file.read_text()
    assert covered(text) == []
    plain, labelled, _memory = _file_keys(text)
    # ... and every item reads a key the file has (none would be unsupported).
    for it in items():
        m = re.match(r"apache\.metric\[(.+)\]$", it["key"])
        if m:
            assert m.group(1) in plain, it["key"]
        m = re.match(r"apache\.labelled\[(.+),(.+)\]$", it["key"])
        if m:
            assert (m.group(1), m.group(2)) in labelled, it["key"]


def agent_conf(tmp_path: Path, data_file: Path, status_url: str) -> Path:
    """The shipped UserParameters, pointed at this test's file, exporter and Apache."""
    exporter = tmp_path / "apache-metrics-exporter"
    exporter.write_text(f"#!/bin/sh\nexec {sys.executable} -m apache_metrics_exporter \"$@\"\n")
    exporter.chmod(0o755)
    params = (USERPARAMS.read_text()
              .replace("/tmp/apache-manager.txt", str(data_file))
              .replace("/usr/local/bin/apache-metrics-exporter", str(exporter))
              .replace("http://127.0.0.1/server-status", status_url))
    conf = tmp_path / "zabbix_agentd.conf"
    conf.write_text(f"LogType=console\nPidFile={tmp_path}/zabbix_agentd.pid\nTimeout=30\n"
                    + params)
    return conf


def agent_test(conf: Path, key: str) -> Tuple[str, str]:
    """``zabbix_agentd -t KEY``: (type letter, value)."""
    proc = subprocess.run([AGENTD, "-c", str(conf), "-t", key], capture_output=True,
                          text=True, timeout=60, env=exporter_env())
    assert proc.returncode == 0, proc.stderr
    m = re.match(r"^(\S+)\s+\[(\w)\|(.*)\]\s*$", proc.stdout.strip(), re.S)
    assert m and m.group(1) == key, proc.stdout
    assert "ZBX_NOTSUPPORTED" not in m.group(3), proc.stdout
    return m.group(2), m.group(3)


def expand(key: str, values: Dict[str, str]) -> str:
    for macro, value in values.items():
        key = key.replace(macro, value)
    return key


def check_value(value_type: str, value: str, key: str) -> None:
    if value_type == "UNSIGNED":
        assert re.fullmatch(r"\d+", value), f"{key}: {value!r} is not an unsigned integer"
    elif value_type == "FLOAT":
        assert math.isfinite(float(value)), f"{key}: {value!r}"
    else:
        assert "\n" not in value and len(value) < 65536, key


def discovered(conf: Path, rule: str) -> List[Dict[str, str]]:
    """What a discovery rule finds, through the agent."""
    _kind, text = agent_test(conf, rule)
    found = json.loads(text)
    return found["data"] if isinstance(found, dict) else found


@pytest.mark.integration
@pytest.mark.skipif(not Path(AGENTD).exists(),
                    reason="zabbix-agent not installed (Debian package zabbix-agent)")
def test_every_template_key_through_a_real_zabbix_agent(live_file, prefork, tmp_path):
    version = subprocess.run([AGENTD, "-V"], capture_output=True, text=True).stdout
    # Debian 12's agent is 6.0, Debian 13's 7.0: the template's keys work on both.
    assert re.search(r"\(Zabbix\) [67]\.", version), version
    conf = agent_conf(tmp_path, live_file, prefork.status_url)
    values = dict(macros())
    values.update({"{$APACHE.METRICS.FILE}": str(live_file),
                   "{$APACHE.STATUS.PORT}": str(prefork.port),
                   "{$APACHE.PROCESS.CMDLINE}": str(prefork.root)})
    checked = 0
    for it in polled(items()):
        if it["key"].startswith("proc.cpu.util["):
            continue  # needs the running agent's collector: tests/test_zabbix_server.py
        key = expand(it["key"], values)
        _kind, value = agent_test(conf, key)
        if it["key"].startswith("web.page.get["):
            assert "ServerVersion: Apache/2.4" in value
        elif it.get("preprocessing") and value == "":
            pass  # no line this time: the item's first step discards it
        else:
            check_value(it.get("value_type", "UNSIGNED"), value, key)
        checked += 1
    assert checked == len(polled(items())) - 1
    groups = [d["{#NAME}"] for d in discovered(conf, "apache.discovery")]
    assert groups[0] == "native" and len(groups) >= 2
    vhosts = [d["{#VHOST}"] for d in discovered(conf, "apache.vhost.discovery")]
    assert f"127.0.0.1:{prefork.port}" in vhosts
    for rule in rules():
        found = discovered(conf, expand(rule, values))
        if rule == "apache.singleton.discovery[processes]":
            assert found == []  # prefork: no event MPM figures, no items for them
        for macro_values in found:
            for p in polled(prototypes(rule)):
                key = expand(p["key"], dict(values, **macro_values))
                _kind, value = agent_test(conf, key)
                if p.get("preprocessing") and value == "":
                    continue  # wsgi-group-name-truncated: no line is 0 (JavaScript step)
                check_value(p.get("value_type", "UNSIGNED"), value, key)
                checked += 1
    assert checked > len(polled(items())) + 10
    # A key the file does not have gives nothing (Zabbix: not supported).
    assert agent_test(conf, "apache.metric[no-such-key]")[1] == ""
    # status-response really is 0 here, and the trigger's macro defaults are numbers.
    assert agent_test(conf, "apache.metric[status-response]")[1] == "0"
    assert int(values["{$APACHE.MEMORY.MAX}"]) > 0


@pytest.mark.integration
@pytest.mark.skipif(not Path(AGENTD).exists(),
                    reason="zabbix-agent not installed (Debian package zabbix-agent)")
def test_balancer_and_event_discovery_through_a_real_zabbix_agent(tmp_path):
    # An event MPM Apache with a balancer: the members and the event figures are
    # discovered and every prototype has a value.
    from tests.harness.apache import ApacheServer

    out = tmp_path / "apache-manager.txt"
    with ApacheServer("event", proxy=True, wsgi=False) as server:
        try:
            server.get("/app/")  # the balancer elects a member (whatever it answers)
        except urllib.error.HTTPError:
            pass
        proc = subprocess.run([sys.executable, "-m", "apache_metrics_exporter", "--url",
                               server.status_url, "--format", "tab", "--output", str(out)],
                              capture_output=True, text=True, env=exporter_env(), timeout=60)
        assert proc.returncode == 0, proc.stderr
    conf = agent_conf(tmp_path, out, "http://127.0.0.1/server-status")
    members = discovered(conf, "apache.balancer.discovery")
    assert {(m["{#BALANCER}"], m["{#MEMBER}"]) for m in members} >= {
        ("balancer://app", f"http://127.0.0.1:{server.port}")}
    assert discovered(conf, "apache.singleton.discovery[processes]") == [{"{#SINGLETON}": ""}]
    for rule, found in (("apache.balancer.discovery", members),
                        ("apache.singleton.discovery[processes]", [{"{#SINGLETON}": ""}])):
        for macro_values in found:
            for p in polled(prototypes(rule)):
                key = expand(p["key"], macro_values)
                check_value(p.get("value_type", "UNSIGNED"), agent_test(conf, key)[1], key)


def test_userparameters_file_points_at_the_default_metrics_file():
    text = USERPARAMS.read_text()
    assert text.count("/tmp/apache-manager.txt") >= 3
    assert macros()["{$APACHE.METRICS.FILE}"] == "/tmp/apache-manager.txt"
    assert "apache-manager --collect-metrics" in text


@pytest.mark.integration
def test_manager_zabbix_discovery_matches_the_userparameter(prefork, tmp_path):
    # The shipped discovery reads the groups of the metrics file: whatever
    # wrote it (apache-manager -c, with the process titles' names, or the
    # exporter, with the names resolved from Apache's configuration), the
    # groups discovered are the file's, in the JSON apache-manager -z prints.
    line = next(ln for ln in USERPARAMS.read_text().splitlines()
                if ln.startswith("UserParameter=apache.discovery,"))
    command = line.split(",", 1)[1]
    out = tmp_path / "apache-manager.txt"
    for front_end in (True, False):
        if front_end:
            assert run_manager("-c", "-f", str(out), "--url", prefork.status_url,
                               env=manager_env()).returncode == 0
            expected = run_manager("-z", "--url", prefork.status_url,
                                   env=manager_env()).stdout
        else:
            for args in (["--format", "tab", "--output", str(out)], ["--zabbix-discovery"]):
                proc = subprocess.run([sys.executable, "-m", "apache_metrics_exporter",
                                       *args, "--url", prefork.status_url],
                                      capture_output=True, text=True, env=exporter_env(),
                                      timeout=60)
                assert proc.returncode == 0, proc.stderr
            expected = proc.stdout
        got = subprocess.run(["sh", "-c", command.replace("/tmp/apache-manager.txt",
                                                          str(out))],
                             capture_output=True, text=True, timeout=30).stdout
        assert got == expected, (front_end, got, expected)
