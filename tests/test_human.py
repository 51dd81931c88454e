"""Human outputs (summary, --watch), Zabbix discovery and the Prometheus textfile."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import pytest

from apache_metrics_exporter.writers import prometheus, text
from tests.conftest import SESSION_ENV, exporter_env, parse_tab, run_exporter
from tests.harness.apache import WSGI_GROUP, WSGI_LONG_GROUP
from tests.test_tab import example_snapshot

ROOT = Path(__file__).resolve().parent.parent
# A 17-character process title leaves "(wsgi:" + 11 characters of this name;
# the configuration names only one group that starts so: the whole name.
LONG = WSGI_LONG_GROUP


# --- unit ---------------------------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_summary_groups_aligned_and_clipped(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setattr(sys, "stdout", _Terminal())
    out = text.render([example_snapshot()])
    lines = out.splitlines()
    assert all(len(line) <= 60 for line in lines)
    table = [ln for ln in lines if ln.startswith(("group", "native", "wsgi:"))]
    assert [ln.split()[0] for ln in table] == ["group", "native", "wsgi:example", "wsgi:zeta"]
    starts = {ln.index("MiB") for ln in table[1:] if "MiB" in ln}
    assert len(starts) == 1  # the memory columns line up
    assert "slowest requests being served:" in out


def test_summary_rounds_its_figures_and_the_machine_formats_do_not():
    # Apache gives 0.0384615 requests/s and 0.102564 % CPU: a person reads
    # three significant digits; the tab file keeps what Apache said.
    snap = example_snapshot()
    line = next(ln for ln in text.summary(snap) if ln.startswith("requests:"))
    assert line == ("requests: 3 since restart, 0.0385/s on average; sent 6.0 KiB; "
                    "CPU load 0.103%")
    from apache_metrics_exporter.writers import tab

    table = tab.render([snap])
    assert "requests-per-second\t0.0384615\n" in table and "cpu-load\t0.102564\n" in table
    # Since the previous collection: a sub-second interval and sub-millisecond
    # requests are not "0 ms over 0 s".
    figures = {"interval_requests_per_second": 13.1234, "interval_bytes_per_second": 46797,
               "interval_request_duration_seconds": 0.000434783, "interval_seconds": 0.7612}
    assert text.interval_line(figures.get) == \
        "now: 13.1 requests/s, 45.7 KiB/s, mean 0.435 ms over 0.761 s"


def test_summary_not_cut_when_piped_or_written_to_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "60")
    full = text.summary(example_snapshot())
    assert max(len(line) for line in full) > 60
    # Piped (pytest captures stdout): nothing is cut.
    assert text.render([example_snapshot()]).splitlines() == [ln.rstrip() for ln in full]
    # On a terminal but with --output FILE: nothing is cut either.
    monkeypatch.setattr(sys, "stdout", _Terminal())

    class Settings:
        output = str(tmp_path / "summary.txt")
        hanging_threshold = 300
    assert text.render([example_snapshot()], Settings()).splitlines() == [
        ln.rstrip() for ln in full]


def test_piped_text_keeps_long_lines_whole(tmp_path):
    # The bug: piped --format text was cut at 100 columns, mid-word.
    url = "http://127.0.0.1:9/" + "long-path-" * 15 + "server-status"
    proc = run_exporter("--url", url, "--format", "text", "--no-processes",
                        "--state-file", str(tmp_path / "state"),
                        env=exporter_env(COLUMNS="100"))
    assert proc.returncode == 0, proc.stderr
    head = proc.stdout.splitlines()[0]
    assert len(head) > 150 and head.endswith(" - " + url), head


def test_prometheus_exposition_format():
    out = prometheus.render([example_snapshot()])
    families = {}
    current = None
    for line in out.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            assert current not in families, "a family appears twice"
            families[current] = {"samples": []}
        elif line.startswith("# TYPE "):
            assert line.split()[2] == current
            families[current]["type"] = line.split()[3]
        else:
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            assert name == current  # samples follow their HELP/TYPE, grouped
            assert len(line.rsplit(" ", 1)) == 2  # no timestamp
            families[current]["samples"].append(line)
    assert families["apache_workers"]["samples"] == [
        'apache_workers{state="busy"} 1', 'apache_workers{state="idle"} 74']
    assert 'apache_scoreboard{state="idle"} 76' in families["apache_scoreboard"]["samples"]
    assert families["apache_accesses_total"]["type"] == "counter"
    assert families["apache_cpuload"]["type"] == "gauge"
    assert families["apache_sent_kilobytes_total"]["samples"] == ["apache_sent_kilobytes_total 6"]
    assert 'apache_group_processes{group="example"} 2' in \
        families["apache_group_processes"]["samples"]


def test_prometheus_label_escaping():
    from apache_metrics_exporter.collect.processes import ProcessScan, ProcInfo
    from apache_metrics_exporter.collect.snapshot import build

    scan = ProcessScan(1, 1.0, [ProcInfo(2, 1.0, 'we"ird\\na\nme', 1, "")], set(), "rss")
    out = prometheus.render([build("http://x/s", 0, None, None, None, scan)])
    assert 'apache_group_processes{group="we\\"ird\\\\na\\nme"} 1' in out


# --- live Apache ---------------------------------------------------------------------

def make_cpu_used(server, timeout: float = 30) -> None:
    """Burn CPU in the server's workers until its ?auto page has a CPULoad line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.get("/embedded?burn=0.05")
        if b"\nCPULoad: " in server.get("/server-status?auto"):
            return
    raise AssertionError("Apache shows no CPULoad after using CPU for 30 s")


@pytest.mark.integration
def test_zabbix_discovery_lists_every_wsgi_group(prefork):
    proc = run_exporter("--url", prefork.status_url, "--zabbix-discovery")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data == {"data": [{"{#NAME}": "native"}, {"{#NAME}": WSGI_GROUP},
                             {"{#NAME}": LONG}]}
    same = run_exporter("--url", prefork.status_url, "--format", "zabbix-discovery")
    assert json.loads(same.stdout) == data
    clash = run_exporter("--url", prefork.status_url, "-z", "--format", "tab")
    assert clash.returncode == 2 and "exclude each other" in clash.stderr


@pytest.mark.integration
def test_zabbix_user_parameters_read_the_tab_file(prefork, tmp_path):
    metrics = tmp_path / "apache-manager.txt"
    assert run_exporter("--url", prefork.status_url, "-f", str(metrics)).returncode == 0
    conf = (ROOT / "contrib" / "zabbix" / "apache-metrics-exporter.conf").read_text()
    params = dict(re.findall(r"^UserParameter=([^,]+),(.*)$", conf, re.M))
    values = parse_tab(metrics.read_text())

    def agent(key: str, *args: str) -> str:
        # What zabbix_agentd does: $1.. become the item's parameters, $$ is $.
        command = params[key].replace(str(metrics.name), "")  # path below
        command = re.sub(r"\$(\$|\d)", lambda m: "$" if m.group(1) == "$"
                         else args[int(m.group(1)) - 1], params[key])
        command = command.replace("/tmp/apache-manager.txt", shlex.quote(str(metrics)))
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                              check=True).stdout.strip()

    assert agent("apache.metric[*]", "status-response") == "0"
    assert agent("apache.metric[*]", "busy-workers") == values["busy-workers"]
    assert agent("apache.memory[*]", "native", "max") == values["memory-usage native max"]
    assert agent("apache.memory[*]", WSGI_GROUP, "count") == "2"


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian prometheus) missing")
def test_prometheus_textfile_passes_promtool(event, tmp_path):
    # A fresh Apache that has used no CPU yet prints no CPULoad line (so no
    # apache_cpuload): make it work first instead of hoping it did.
    make_cpu_used(event)
    out = tmp_path / "apache.prom"
    proc = run_exporter("--url", event.status_url, "--format", "prometheus",
                        "--prometheus-naming", "base-units", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["apache.prom"]
    check = subprocess.run(["promtool", "check", "metrics"], input=out.read_text(),
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    body = out.read_text()
    for name in ("apache_up 1", "apache_accesses_total ", "apache_sent_bytes_total ",
                 'apache_workers{state="busy"} ', 'apache_scoreboard{state="open_slot"} ',
                 'apache_connections{state="total"} ', "apache_cpuload ",
                 'apache_group_processes{group="example"} 2'):
        assert name in body, name
    # Default naming: apache_exporter's own names; promtool's only complaints are
    # the three it makes about apache_exporter itself.
    default = run_exporter("--url", event.status_url, "--format", "prometheus").stdout
    assert "apache_sent_kilobytes_total " in default and "apache_duration_ms_total " in default
    check = subprocess.run(["promtool", "check", "metrics"], input=default,
                           capture_output=True, text=True)
    problems = sorted((check.stdout + check.stderr).strip().splitlines())
    assert problems == [
        "apache_cpu_time_ms_total metric names should not contain abbreviated units",
        "apache_duration_ms_total metric names should not contain abbreviated units",
        'apache_sent_kilobytes_total use base unit "bytes" instead of "kilobytes"']


@pytest.mark.integration
def test_text_summary_on_live_apache_and_tab_when_piped(prefork):
    def slow():
        try:
            prefork.get("/embedded?sleep=3&summary=1")
        except (urllib.error.URLError, OSError):
            pass
    thread = threading.Thread(target=slow)
    thread.start()
    try:
        time.sleep(1.2)
        proc = run_exporter("--url", prefork.status_url, "--format", "text")
        assert proc.returncode == 0
        out = proc.stdout
        for group in ("native", f"wsgi:{WSGI_GROUP}", f"wsgi:{LONG}"):
            assert re.search(rf"^{re.escape(group)}\s+\d", out, re.M), group
        assert "slowest requests being served:" in out
        slowest = out.split("slowest requests being served:")[1].splitlines()
        assert slowest[1].split()[0] == "seconds"
        assert "GET /embedded?sleep=3&summary=1 HTTP/1.1" in slowest[2]
        assert int(slowest[2].split()[0]) >= 1
        piped = run_exporter("--url", prefork.status_url)  # stdout is a pipe here
        assert piped.stdout.startswith("# Global Apache server metrics.\n")
    finally:
        thread.join()


# --- in a real terminal (tmux) ---------------------------------------------------------

class Tmux:
    """A tmux server of its own (own socket), one window running bash."""

    def __init__(self, width: int, height: int, tmp: Path) -> None:
        self.sock = str(tmp / "tmux.sock")
        self.run("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height),
                 f"env -i PATH={os.environ['PATH']} HOME={tmp} TERM=xterm-256color "
                 + "".join(f"{k}={v} " for k, v in SESSION_ENV.items()) +
                 "PS1='PROMPT$ ' bash --norc --noprofile")

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True,
                              text=True, check=True).stdout

    def type(self, keys: str, enter: bool = True) -> None:
        self.run("send-keys", "-t", "t", "-l", keys)
        if enter:
            self.run("send-keys", "-t", "t", "Enter")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def wait_for(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if needle in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} never shown:\n{self.screen()}")

    def wait_for_count(self, needle: str, count: int, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if shown.count(needle) >= count:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not shown {count} times:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True)


@pytest.fixture
def tmux(tmp_path):
    if not shutil.which("tmux"):
        pytest.skip("tmux missing")
    sessions = []

    def make(width, height):
        sessions.append(Tmux(width, height, tmp_path))
        return sessions[-1]
    yield make
    for s in sessions:
        s.close()


def command(url: str, *extra: str) -> str:
    return " ".join(shlex.quote(a) for a in (sys.executable, "-m", "apache_metrics_exporter",
                                             "--url", url, *extra))


@pytest.mark.integration
@pytest.mark.parametrize("size,leave", [((80, 24), "q"), ((200, 50), "C-c")])
def test_watch_in_a_real_terminal(prefork, tmux, size, leave):
    width, height = size
    term = tmux(width, height)
    term.wait_for("PROMPT$")
    term.type(command(prefork.status_url, "--watch", "1"))
    shown = term.wait_for("sorted by memory")
    lines = shown.splitlines()
    assert lines[0].startswith("Apache/2.4")
    assert len(lines) <= height and all(len(line) <= width for line in lines)
    header = next(ln for ln in lines if ln.lstrip().startswith("PID"))
    assert header.split() == ["PID", "GROUP", "RSS", "BUSY", "SECS", "REQUEST"]
    groups = {ln.split()[1] for ln in lines[lines.index(header) + 1:] if ln.strip()}
    assert {"native", WSGI_GROUP, LONG} <= groups
    term.type("s", enter=False)
    term.wait_for("sorted by request time")
    if leave == "C-c":
        term.run("send-keys", "-t", "t", "C-c")
    else:
        term.type(leave, enter=False)
    shown = term.wait_for_count("PROMPT$", 2)  # the shell's prompt after the command
    assert "Traceback" not in shown and "KeyboardInterrupt" not in shown
    # The terminal is back in its normal (cooked, echoing) mode.
    term.type("stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon\\|-\\?echo'; echo STTY\"\"-END")
    restored = term.wait_for("\nSTTY-END")
    assert re.search(r"^icanon$", restored, re.M) and re.search(r"^echo$", restored, re.M)


@pytest.mark.integration
def test_watch_survives_apache_going_away(tmux, own_apache):
    term = tmux(100, 30)
    term.wait_for("PROMPT$")
    term.type(command(own_apache.status_url, "--watch", "0.5"))
    term.wait_for("sorted by memory")
    own_apache.restart_stopped()
    term.wait_for("DOWN at")
    # While Apache stops, a fetch may time out or be cut before the port
    # closes; once it is gone the screen must say the connection is refused.
    shown = term.wait_for("refused")
    assert "DOWN at" in shown
    term.type("q", enter=False)
    term.wait_for("PROMPT$")


@pytest.mark.integration
def test_text_is_the_default_on_a_terminal(prefork, tmux):
    term = tmux(120, 40)
    term.wait_for("PROMPT$")
    term.type(command(prefork.status_url) + ' 2>/dev/null; echo DO""NE')
    shown = term.wait_for("\nDONE")
    assert "slowest requests being served" in shown or "no request being served" in shown
    assert "# Global Apache server metrics." not in shown


def test_watch_needs_a_terminal():
    proc = run_exporter("--url", "http://127.0.0.1:9/server-status", "--watch", "1")
    assert proc.returncode == 2 and "--watch needs a terminal" in proc.stderr


def test_watch_excludes_loops():
    proc = subprocess.run([sys.executable, "-m", "apache_metrics_exporter", "--url",
                           "http://127.0.0.1:9/s", "--watch", "--execd"],
                          capture_output=True, text=True, env=exporter_env())
    assert proc.returncode == 2 and "--watch" in proc.stderr




# --- the demo (make demo) ---------------------------------------------------------------

def _demo_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_banner_bold_only_on_a_terminal(monkeypatch, capsys):
    demo = _demo_module()
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    demo.banner("piped")
    assert capsys.readouterr().out == "\n==> piped\n"
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    demo.banner("shown")
    assert terminal.getvalue() == "\n\033[1m==> shown\033[0m\n"


@pytest.mark.integration
@pytest.mark.skipif(not os.path.exists("/usr/bin/victoria-metrics"),
                    reason="victoria-metrics not installed")
def test_demo_redirected_has_no_escape_sequences(tmp_path):
    out = tmp_path / "demo.txt"
    with open(out, "w") as fh:
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], stdout=fh,
                              stderr=subprocess.PIPE, text=True, timeout=300,
                              env=exporter_env(TERM="xterm-256color"))
    text_out = out.read_text()
    assert proc.returncode == 0, proc.stderr + text_out[-2000:]
    assert "\033" not in text_out
    assert "==> tab format" in text_out and "# Global Apache server metrics." in text_out
    assert text_out.count("[exit status 0]") >= 8


# --- the rough edges a newcomer hit (issue 21) ---------------------------------------

def _page_snapshot(mpm: str, extra_pids=()):
    """A snapshot of the captured 2.4.71 pages of one MPM (4 x 5 threads on
    worker/event: tests/data/README.md), its children the table's PIDs."""
    from types import SimpleNamespace

    from apache_metrics_exporter.collect.status import parse_auto, parse_html

    data = ROOT / "tests" / "data"
    auto = parse_auto((data / f"2.4.71-{mpm}-ext-on.auto.txt").read_text())
    html = parse_html((data / f"2.4.71-{mpm}-ext-on.html").read_bytes())
    pids = sorted({r.pid for r in html.workers if r.pid}) + list(extra_pids)
    children = [SimpleNamespace(pid=p, group="native", memory=1 << 20) for p in pids]
    children.append(SimpleNamespace(pid=4242, group=WSGI_GROUP, memory=1 << 20))
    return SimpleNamespace(auto=auto, workers=html.workers,
                           event_processes=html.event_processes,
                           processes=SimpleNamespace(children=children))


@pytest.mark.parametrize("mpm, threads", [("prefork", 1), ("worker", 5), ("event", 5)])
def test_watch_busy_is_out_of_the_process_threads(mpm, threads):
    # The worker table lists only slots that have served a request: on the
    # captured event page PID 5510 has 4 rows of its 5 threads, and a child
    # that served nothing has none. The denominator is ThreadsPerChild.
    snap = _page_snapshot(mpm)
    rows = {r[0]: r for r in text.process_rows(snap)}
    native = [r for r in rows.values() if r[1] == "native"]
    assert native and all(r[4] == threads for r in native)
    assert rows[4242][4] is None  # a mod_wsgi daemon has no worker threads


def test_watch_busy_on_a_debian_sized_worker_scoreboard():
    # ThreadsPerChild 25, ThreadLimit 64, ServerLimit 16: two live children
    # of 25 threads in runs of 64 slots; only the 25 are the child's.
    from types import SimpleNamespace

    board = ("W" + "_" * 24 + "." * 39) * 2 + "." * 64 * 14
    snap = SimpleNamespace(
        auto=SimpleNamespace(info={"ServerMPM": "worker"}, scoreboard=board),
        workers=[], event_processes=None,
        processes=SimpleNamespace(children=[SimpleNamespace(pid=p, group="native", memory=1)
                                            for p in (11, 12)]))
    assert text.threads_per_process(snap) == {11: 25, 12: 25}
    # A third child the scoreboard does not show: no guess.
    snap.processes.children.append(SimpleNamespace(pid=13, group="native", memory=1))
    assert text.threads_per_process(snap) == {}


def test_a_cut_line_is_marked(monkeypatch):
    assert text.clip("abcdef", 6) == "abcdef"
    assert text.clip("abcdef", 4) == "abc…"
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setattr(sys, "stdout", _Terminal())
    full = [ln.rstrip() for ln in text.summary(example_snapshot())]
    shown = text.render([example_snapshot()]).splitlines()
    assert all(len(line) <= 60 for line in shown)
    for whole, line in zip(full, shown):
        assert line == whole if len(whole) <= 60 else line.endswith("…")


def on_terminal(argv, env, columns: int = 80, user=None, timeout: float = 60) -> str:
    """What ``argv`` shows on a terminal (a pty that is stdin, stdout and
    stderr), CRLF as LF; as ``user`` (a pwd entry) when given."""
    import pty

    master, slave = pty.openpty()
    env = dict(env, COLUMNS=str(columns), LINES="40")

    def drop() -> None:
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            preexec_fn=drop if user is not None else None, cwd="/")
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        proc.wait(timeout=timeout)
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def test_apache_down_is_said_once_on_a_terminal(tmp_path):
    from tests.harness.apache import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/server-status"
    argv = [sys.executable, "-m", "apache_metrics_exporter", "--url", url,
            "--state-file", str(tmp_path / "none.json")]
    shown = on_terminal(argv, exporter_env(), columns=100)
    assert shown.count(f"connection to 127.0.0.1:{port} refused") == 1, shown
    down = next(ln for ln in shown.splitlines() if ln.startswith("DOWN"))
    assert len(down) == 100 and down.endswith("…")  # 116 characters whole
    assert "error:" not in shown
    # stderr elsewhere (a log, a pipe): it keeps its line.
    proc = run_exporter("--format", "text", "--url", url)
    assert proc.stderr.count("refused: is Apache running") == 1


@pytest.mark.integration
def test_an_unprivileged_user_is_warned_once(prefork, tmp_path):
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    nobody = pwd.getpwnam("nobody")
    argv = [sys.executable, "-m", "apache_metrics_exporter.manager", "--url",
            prefork.status_url, "--state-file", "/nonexistent/reaper-state.json"]
    env = exporter_env(APACHE_MANAGER_INI="", APACHE_METRICS_COLLECTOR_STATE="")
    shown = on_terminal(argv, env, columns=400, user=nobody)
    assert shown.count("cannot see which process listens") == 1, shown
    assert "warning:" not in shown


def test_interval_line_leaves_out_quantiles_that_were_not_measured():
    # Found by the fuzz suite on Debian 13: p50 without p90/p99/max raised TypeError.
    from apache_metrics_exporter.writers.text import interval_line
    figures = {"interval_requests_per_second": 2.0, "request_duration_p50_seconds": 0.012}
    line = interval_line(figures.get)
    assert line.startswith("now: 2 requests/s; p50 12 ms") and "p90" not in line
    figures.update(request_duration_p90_seconds=0.5, request_duration_p99_seconds=12.0,
                   request_duration_max_seconds=20.0)
    assert "; p50 12 ms p90 500 ms p99 12.0 s max 20.0 s" in interval_line(figures.get)
