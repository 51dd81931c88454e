"""The Zabbix template in a real Zabbix server (6.0 on Debian 12, 7.0 on 13), end to end.

A private PostgreSQL, zabbix_server, the PHP frontend's API (php -S) and a
zabbix_agentd, all on 127.0.0.1 in temporary directories (tests/harness/zabbix.py);
a private Apache and the exporter rewriting the metrics file every 2 s. The
template is imported through the API (configuration.import) with its intervals
shortened, a host gets it, and the test waits - every wait bounded - for:
values of every item, the discovered worker-group and virtual-host items, and
the triggers firing and recovering as the Apache is stopped and started, its
status page forbidden, and thresholds crossed.

Select it alone with ``pytest -m zabbix``; it prints how long it took.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, TypeVar

import pytest

from tests.conftest import exporter_env
from tests.harness.apache import ApacheServer
from tests.harness.zabbix import PACKAGES, ApiError, ZabbixStack, missing
from tests.test_manager import run_manager
from tests.test_zabbix_template import TEMPLATE_FILE, USERPARAMS

pytestmark = [pytest.mark.integration, pytest.mark.zabbix]
ROOT = Path(__file__).resolve().parent.parent
HOST = "apache-test"
X = TypeVar("X")


def sometimes_without_value() -> List[str]:
    """Keys (as in the template, macros unexpanded) of items whose empty value
    is discarded: written only when there was something to measure."""
    import yaml

    template = yaml.safe_load(TEMPLATE_FILE.read_text())["zabbix_export"]["templates"][0]
    found = []
    for it in template.get("items", []) + [
            p for rule in template.get("discovery_rules", [])
            for p in rule.get("item_prototypes", [])]:
        if any(step.get("error_handler") == "DISCARD_VALUE"
               for step in it.get("preprocessing", [])):
            found.append(it["key"])
    assert found  # the interval figures
    return found


def wait_for(what: str, check: Callable[[], Optional[X]], timeout: float,
             poke: Optional[Callable[[], None]] = None, every: float = 2.0) -> X:
    """check() until it returns something true, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    last_poke = 0.0
    result = None
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if poke is not None and time.monotonic() - last_poke > 10:
            poke()
            last_poke = time.monotonic()
        time.sleep(every)
    raise AssertionError(f"after {timeout:.0f}s still waiting for {what}: {result!r}")


@pytest.fixture(scope="module")
def stack() -> Iterator[ZabbixStack]:
    gone = missing()
    if gone and "root" not in " ".join(gone):
        # make deps installs them; try once (missing ones only, nothing enabled).
        subprocess.run(["sh", str(ROOT / "scripts" / "install-deps.sh"), *PACKAGES],
                       capture_output=True, timeout=900)
        gone = missing()
    if gone:
        pytest.skip("a real Zabbix server needs the Debian packages " + " ".join(PACKAGES)
                    + f" (make deps); missing: {', '.join(gone)}")
    with ZabbixStack() as zabbix:
        yield zabbix


def shortened(text: str) -> str:
    """The template with the server's intervals shortened (test time, not behaviour)."""
    text = re.sub(r"^(\s+delay: )'?1m'?$", r"\g<1>2s", text, flags=re.M)
    text = re.sub(r"^(\s+delay: )'?(5m|10m|1h)'?$", r"\g<1>5s", text, flags=re.M)
    return text


class Exporter:
    """The cron job's stand-in: the exporter rewriting the metrics file every 2 s."""

    def __init__(self, tmp: Path, output: Path) -> None:
        self.tmp = tmp
        self.output = output
        self.proc: Optional[subprocess.Popen] = None

    def start(self, url: str) -> None:
        self.stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apache_metrics_exporter", "--url", url, "--format", "tab",
             "--output", str(self.output), "--interval", "2s",
             "--state-file", str(self.tmp / "reaper.json"),
             "--collector-state", str(self.tmp / "collector.json")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=exporter_env())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


class Traffic:
    """Quick requests to the private Apache, a few a second, until stopped."""

    def __init__(self, apache: ApacheServer) -> None:
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(apache,), daemon=True)
        self.thread.start()

    def _run(self, apache: ApacheServer) -> None:
        while not self.stopped.wait(0.2):
            try:
                apache.get("/embedded", timeout=5)
            except OSError:
                pass  # Apache busy or stopping: the next one

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def test_template_in_a_real_zabbix_server(stack: ZabbixStack, capsys) -> None:
    started = time.monotonic()
    phases: Dict[str, float] = dict(stack.timings)
    # The agent runs as user zabbix: a directory it can read (pytest's is 0700),
    # and a file readable by all (the exporter keeps an existing file's mode).
    tmp_path = Path(tempfile.mkdtemp(prefix="ame-zabbix-data-"))
    tmp_path.chmod(0o755)
    data_file = tmp_path / "apache-manager.txt"
    data_file.touch(mode=0o644)
    apache = ApacheServer("prefork").start()
    exporter = Exporter(tmp_path, data_file)
    agent = None
    try:
        # The reaper's sections, as on a host that runs apache-manager -k.
        proc = run_manager("-k", "-n", "-a", "1G", "--url", apache.status_url,
                           "--state-file", str(tmp_path / "reaper.json"))
        assert proc.returncode == 0, proc.stderr
        exporter.start(apache.status_url)
        wait_for("the metrics file", lambda: data_file.exists()
                 and "status-response\t0" in data_file.read_text(), 30, every=0.2)

        t0 = time.monotonic()
        # The 6.0 template imports into 7.0 (Debian 13) as well; since 6.2 the
        # import rule for its group is called template_groups.
        api = tuple(int(x) for x in stack.api("apiinfo.version").split(".")[:2])
        groups = "template_groups" if api >= (6, 2) else "groups"
        stack.api("configuration.import", {
            "format": "yaml", "source": shortened(TEMPLATE_FILE.read_text()),
            "rules": {section: {"createMissing": True, "updateExisting": True}
                      for section in (groups, "templates", "items", "discoveryRules",
                                      "triggers", "valueMaps")}})
        (template,) = stack.api("template.get", {
            "filter": {"host": "Apache by apache-metrics-exporter"}, "output": ["templateid"]})
        agent = stack.agent(HOST, USERPARAMS.read_text().replace("/tmp/apache-manager.txt",
                                                                 str(data_file)))
        (group,) = stack.api("hostgroup.get", {"filter": {"name": "Linux servers"},
                                               "output": ["groupid"]})
        macros = {"{$APACHE.METRICS.FILE}": str(data_file),
                  "{$APACHE.STATUS.PORT}": str(apache.port),
                  "{$APACHE.PROCESS.CMDLINE}": re.escape(str(apache.root)),
                  "{$APACHE.UPTIME.MIN}": "25s", "{$APACHE.STATUS.NODATA}": "30s",
                  "{$APACHE.WORKERS.UTIL.PERIOD}": "6s", "{$APACHE.RESPONSE_TIME.PERIOD}": "6s",
                  # The insight triggers' periods (docs/insight.md), and a forbidden
                  # status page (http_error) counted as overload, so that the
                  # overload trigger can be seen firing without saturating Apache.
                  "{$APACHE.ACCEPT_QUEUE.PERIOD}": "6s", "{$APACHE.ACCEPT_QUEUE.FULL.PERIOD}": "6s",
                  "{$APACHE.LATENCY.PERIOD}": "6s", "{$APACHE.SLOW_CLIENTS.PERIOD}": "6s",
                  "{$APACHE.TOP_CLIENT.PERIOD}": "6s",
                  "{$APACHE.STATUS.REASON.OVERLOAD}": "^(saturated|http_error)$"}
        hostid = stack.api("host.create", {
            "host": HOST, "groups": [{"groupid": group["groupid"]}],
            "interfaces": [{"type": 1, "main": 1, "useip": 1, "ip": "127.0.0.1", "dns": "",
                            "port": str(agent.port)}],
            "templates": [{"templateid": template["templateid"]}],
            "macros": [{"macro": k, "value": v} for k, v in macros.items()]})["hostids"][0]
        stack.reload_config()
        phases["import and host"] = time.monotonic() - t0

        def host_items() -> List[dict]:
            return stack.api("item.get", {"hostids": hostid, "output": [
                "itemid", "key_", "type", "lastclock", "state", "error", "flags"]})

        def poke() -> None:
            stack.reload_config()
            stack.check_now([i["itemid"] for i in host_items() if i["type"] != "18"])

        # Discovery creates the worker groups' and the virtual host's items.
        t0 = time.monotonic()
        groups = {ln.split("\t")[1] for ln in data_file.read_text().splitlines()
                  if ln.startswith("memory-usage\t")}
        assert "native" in groups and len(groups) >= 2  # and the mod_wsgi groups
        expected = {f"apache.memory[{g},max]" for g in groups} | {
            f"apache.labelled[vhost-busy-workers,127.0.0.1:{apache.port}]"}
        wait_for("the discovered items", lambda: expected - {
            i["key_"] for i in host_items()} == set() or None, 120, poke)
        phases["discovery"] = time.monotonic() - t0

        # Values for every item (the master web.page.get keeps no history: its
        # dependent apache.version has the value).
        t0 = time.monotonic()

        # Items that keep no value when the interval had nothing to measure
        # (no sampled request: the file has no line) may still have none ...
        optional_value = re.compile("|".join(
            re.escape(k).replace(r"\{\#VHOST\}", ".*").replace(r"\{\#SINGLETON\}", "")
            for k in sometimes_without_value()))
        # ... except the per-vhost durations, which requests give lines: with
        # none they would depend on the agent's own HTTP checks landing in the
        # worker table, and one that went "unsupported" would have nothing to
        # recover with for the rest of the test (the flake this prevents).
        by_traffic = re.compile(r"apache\.labelled\[vhost-request-duration-[a-z0-9-]+,.+\]")
        lacking: List[str] = []

        def all_have_values() -> bool:
            lacking[:] = [f"{i['key_']} {i['error']}".strip() for i in host_items()
                          if not i["key_"].startswith("web.page.get[")
                          and (i["state"] != "0" or (
                              i["lastclock"] == "0"
                              and (by_traffic.fullmatch(i["key_"])
                                   or not optional_value.fullmatch(i["key_"]))))]
            return not lacking

        traffic = Traffic(apache)
        try:
            wait_for("values for every item", all_have_values, 180, poke)
        except AssertionError:
            raise AssertionError(f"items without a value after 180 s: {lacking}") from None
        finally:
            traffic.stop()
        items = host_items()
        assert len(items) > 90  # the template's and the discovered ones
        assert any(i["key_"] == "apache.version" for i in items)
        phases["values for every item"] = time.monotonic() - t0

        def problems() -> Dict[str, str]:
            return {t["description"]: t["priority"] for t in stack.api("trigger.get", {
                "hostids": hostid, "output": ["description", "priority", "value"],
                "filter": {"value": 1}, "expandDescription": True})}

        def named(name: str, start: str) -> bool:
            # A start of the name, or a part after the expanded {ITEM.LASTVALUE1}.
            return name.startswith(start) or (start.startswith(" ") and start in name)

        def firing(*starts: str) -> Callable[[], Optional[Dict[str, str]]]:
            def check() -> Optional[Dict[str, str]]:
                now = problems()
                hit = all(any(named(n, s) for n in now) for s in starts)
                return now if hit else None
            return check

        def quiet(*starts: str) -> Callable[[], bool]:
            return lambda: not any(named(n, s) for n in problems() for s in starts)

        # Nothing fires on a healthy Apache (the fresh one's restart notice ends
        # once it is up {$APACHE.UPTIME.MIN}).
        t0 = time.monotonic()
        wait_for("no problem on a healthy Apache", lambda: problems() == {} or None, 120)
        phases["healthy"] = time.monotonic() - t0

        # Apache stopped: the process trigger fires; the service and status page
        # triggers depend on it and stay quiet (one problem, not four).
        t0 = time.monotonic()
        apache.restart_stopped()
        now = wait_for("'process is not running'", firing("Apache: process is not running"),
                       90)
        assert now["Apache: process is not running"] == "4"  # HIGH
        assert not any(n.startswith(("Apache: service is down",
                                     "Apache: the status page cannot be read"))
                       for n in problems())
        # ... and started again: it recovers, and "has been restarted" fires, then ends.
        apache.start_again()
        wait_for("recovery and 'has been restarted'",
                 lambda: (firing("Apache: has been restarted")()
                          and quiet("Apache: process is not running")()), 90)
        wait_for("'has been restarted' to end", quiet("Apache: has been restarted"), 90)
        phases["stop and start"] = time.monotonic() - t0

        # The status page forbidden (Apache up): 'cannot be read' at once, 'no
        # status page read for 30s' after that; both recover when it is read again.
        t0 = time.monotonic()
        exporter.start(apache.base_url + "/denied-status")
        wait_for("'status page cannot be read'",
                 firing("Apache: the status page cannot be read"), 60)
        # status-reason is http_error: overload by the host's macro (a regexp
        # in count(), and the reason in the name).
        now = wait_for("'overloaded, the status page was not read'",
                       firing("Apache: overloaded, the status page was not read (http_error)"),
                       60)
        assert now["Apache: overloaded, the status page was not read (http_error)"] == "4"
        wait_for("'no status page read for 30s'",
                 firing("Apache: no status page read for 30s"), 90)
        exporter.start(apache.status_url)
        wait_for("the status page triggers to recover",
                 quiet("Apache: the status page cannot be read", "Apache: no status page read",
                       "Apache: overloaded"), 60)
        phases["status page forbidden"] = time.monotonic() - t0

        # Saturation, hanging workers and response time: thresholds crossed
        # (host macros), then restored.
        t0 = time.monotonic()
        crossed = {"{$APACHE.WORKERS.UTIL.MAX}": "0", "{$APACHE.HANGING.MAX}": "-1",
                   "{$APACHE.RESPONSE_TIME.MAX.WARN}": "-1",
                   # the insight triggers: accept queue, p99, slow and top clients
                   "{$APACHE.ACCEPT_QUEUE.MAX}": "-1", "{$APACHE.ACCEPT_QUEUE.FULL}": "0",
                   "{$APACHE.LATENCY.P99.MAX}": "-1", "{$APACHE.SLOW_CLIENTS.MIN}": "0",
                   "{$APACHE.SLOW_CLIENTS.AGE}": "-1", "{$APACHE.TOP_CLIENT.SHARE.MAX}": "-1",
                   "{$APACHE.TOP_CLIENT.BUSY.MIN}": "0"}
        # Requests whose durations the worker table shows (the p99 is written
        # only for an interval that sampled some).
        traffic = Traffic(apache)
        try:
            ids = stack.api("usermacro.create", [{"hostid": hostid, "macro": k, "value": v}
                                                 for k, v in crossed.items()])["hostmacroids"]
            stack.reload_config()
            starts = ("Apache: workers saturated", "Apache: 0 hanging workers",
                      "Apache: response time is too high",
                      "Apache: connections wait for a worker", "Apache: accept queue full",
                      "Apache: slow requests", " workers held by slow clients",
                      "Apache: one client holds most busy workers")
            wait_for("saturation, hanging, response time and insight triggers",
                     firing(*starts), 90)
            stack.api("usermacro.delete", ids)
            stack.reload_config()
            wait_for("them to recover", quiet(*starts), 90)
        finally:
            traffic.stop()
        phases["thresholds"] = time.monotonic() - t0
        assert problems() == {}
    except (AssertionError, ApiError):
        sys.stderr.write(ZabbixStack._tail(stack.server_log))
        raise
    finally:
        exporter.stop()
        if agent is not None:
            agent.stop()
        apache.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)
        took = time.monotonic() - started
        with capsys.disabled():
            print(f"\nZabbix server test: {took + sum(stack.timings.values()):.0f}s ("
                  + ", ".join(f"{k} {v:.0f}s" for k, v in phases.items()) + ")")
