"""The tab writer: byte-compatible with apache-manager for the original keys."""

from apache_metrics_exporter.collect.processes import ProcessScan, ProcInfo
from apache_metrics_exporter.collect.snapshot import Options, build
from apache_metrics_exporter.collect.status import parse_auto, parse_html
from apache_metrics_exporter.health import reaper_samples
from apache_metrics_exporter.writers import tab
from tests.conftest import data, parse_tab, sections

# The ?auto page behind the example in reference/apache-manager.md.
AUTO = """127.0.0.1
Total Accesses: 3
Total kBytes: 6
CPULoad: .102564
Uptime: 78
ReqPerSec: .0384615
BytesPerSec: 78.7692
BytesPerReq: 2048
BusyWorkers: 1
IdleWorkers: 74
Scoreboard: W____________________________________________________________________________
"""

ROW = ("<tr><td><b>{i}-0</b></td><td>{pid}</td><td>0/1/1</td><td>{m}\n</td><td>0.01</td>"
       "<td>{ss}</td><td>0</td><td>0</td><td>0.0</td><td>0.00</td><td>0.00\n</td>"
       "<td>127.0.0.1</td><td>http/1.1</td><td nowrap>localhost:80</td>"
       "<td nowrap>GET / HTTP/1.1</td></tr>\n")


def html(rows):
    body = "".join(ROW.format(i=i, pid=pid, m=m, ss=ss) for i, (pid, m, ss) in enumerate(rows))
    return ("<html><body><h1>Apache Server Status for x</h1><table border=\"0\"><tr><th>Srv</th>"
            "<th>PID</th><th>Acc</th><th>M</th><th>CPU\n</th><th>SS</th><th>Req</th><th>Dur</th>"
            "<th>Conn</th><th>Child</th><th>Slot</th><th>Client</th><th>Protocol</th>"
            "<th>VHost</th><th>Request</th></tr>\n" + body + "</table></body></html>").encode()


def example_snapshot(up=True):
    rows = [(101, "W", 0), (102, "_", 3), (103, "_", 9), (101, "_", 1), (102, "_", 2)]
    procs = [ProcInfo(101, 1.0, "native", 12050432, "/usr/sbin/apache2"),
             ProcInfo(102, 1.0, "native", 12677120, "/usr/sbin/apache2"),
             ProcInfo(103, 1.0, "native", 12632064, "/usr/sbin/apache2"),
             ProcInfo(201, 1.0, "example", 356352, "(wsgi:example)"),
             ProcInfo(202, 1.0, "example", 372736, "(wsgi:example)"),
             ProcInfo(203, 1.0, "zeta", 372736, "(wsgi:zeta)")]
    scan = ProcessScan(100, 1.0, procs, set(), "rss")
    if not up:
        snap = build("http://x/server-status", 0.0, None, None, None, scan,
                     error="connection refused")
    else:
        page = parse_html(html(rows))
        snap = build("http://x/server-status", 0.0, parse_auto(AUTO), page.workers, None,
                     scan, Options(hanging_threshold=300))
    snap.samples.extend(reaper_samples(None))  # no reaper state: nothing was killed
    return snap


ORIGINAL = """# Global Apache server metrics.
busy-workers\t1
bytes-per-request\t2048.0
bytes-per-second\t78.7692
cpu-load\t0.102564
idle-workers\t74
requests-per-second\t0.0384615
total-accesses\t3
total-traffic\t6144
uptime\t78

# Metrics internal to apache-manager.
foreign-worker-count\t3
native-worker-count\t5
status-response\t0
workers-hanging\t0
workers-killed-active\t0
workers-killed-idle\t0

# Memory usage of native Apache worker processes.
memory-usage\tnative\tcount\t3
memory-usage\tnative\tmin\t12050432
memory-usage\tnative\tmax\t12677120
memory-usage\tnative\taverage\t12453205.333333334
memory-usage\tnative\tmedian\t12632064

# Memory usage of 'example' WSGI worker processes.
memory-usage\texample\tcount\t2
memory-usage\texample\tmin\t356352
memory-usage\texample\tmax\t372736
memory-usage\texample\taverage\t364544.0
memory-usage\texample\tmedian\t364544.0

# Memory usage of 'zeta' WSGI worker processes.
memory-usage\tzeta\tcount\t1
memory-usage\tzeta\tmin\t372736
memory-usage\tzeta\tmax\t372736
memory-usage\tzeta\taverage\t372736.0
memory-usage\tzeta\tmedian\t372736
"""


def test_original_sections_are_byte_identical():
    text = tab.render([example_snapshot()])
    assert text.startswith(ORIGINAL + "\n# ")
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_new_sections_come_after_the_original_ones():
    heads = sections(tab.render([example_snapshot()]))
    assert heads[:5] == [
        "# Global Apache server metrics.",
        "# Metrics internal to apache-manager.",
        "# Memory usage of native Apache worker processes.",
        "# Memory usage of 'example' WSGI worker processes.",
        "# Memory usage of 'zeta' WSGI worker processes.",
    ]
    assert all("(apache-metrics-exporter)" in h for h in heads[5:])
    values = parse_tab(tab.render([example_snapshot()]))
    assert values["up"] == "1"
    assert values["scoreboard-slots"] == "77"
    assert values["utilisation"] == str(round(1 / 77, 6))
    assert values["scoreboard sending"] == "1" and values["scoreboard waiting"] == "76"
    assert values["active-requests"] == "1"


def test_hanging_workers_use_the_threshold():
    rows = [(101, "W", 400), (102, "R", 299), (103, "_", 9999), (104, "K", 300)]
    snap = build("u", 0.0, parse_auto(AUTO), parse_html(html(rows)).workers, None,
                 ProcessScan(None, None, [], set(), "rss"), Options(hanging_threshold=300))
    values = parse_tab(tab.render([snap]))
    assert values["workers-hanging"] == "2"     # 400 and 300, not the idle 9999
    assert values["longest-request-seconds"] == "400"
    assert values["native-worker-count"] == "4"


def test_missing_keys_of_a_read_page_are_zero_like_the_original():
    snap = build("u", 0.0, parse_auto("BusyWorkers: 2\nIdleWorkers: 3\nScoreboard: WW___\n"),
                 None, None, ProcessScan(None, None, [], set(), "rss"))
    values = parse_tab(tab.render([snap]))
    assert values["total-accesses"] == "0" and values["cpu-load"] == "0.0"
    assert values["status-response"] == "0"
    assert "workers-hanging" not in values  # no worker table: not measured


def test_down_keeps_every_section_and_the_memory_but_no_guesses():
    text = tab.render([example_snapshot(up=False)])
    values = parse_tab(text)
    assert values["status-response"] == "1"
    assert values["up"] == "0"
    assert values["memory-usage native count"] == "3"
    assert values["memory-usage example count"] == "2"
    for key in ("busy-workers", "total-accesses", "workers-hanging", "native-worker-count"):
        assert key not in values
    assert sections(text)[:2] == ["# Global Apache server metrics.",
                                  "# Metrics internal to apache-manager."]


def test_real_event_page_renders_every_original_key():
    page = parse_html(data("2.4.71-event-ext-on.html"))
    snap = build("u", 0.0, parse_auto(data("2.4.71-event-ext-on.auto.txt").decode()),
                 page.workers, page.event_processes, ProcessScan(None, None, [], set(), "rss"))
    snap.samples.extend(reaper_samples(None))
    values = parse_tab(tab.render([snap]))
    for key in ("busy-workers", "bytes-per-request", "bytes-per-second", "cpu-load",
                "idle-workers", "requests-per-second", "total-accesses", "total-traffic",
                "uptime", "status-response", "workers-hanging", "native-worker-count",
                "workers-killed-active", "workers-killed-idle"):
        assert key in values, key
    assert values["event-processes-not-accepting"] == "0"
    assert values["conns-total"] == str(snap.auto.values["conns_total"])
    assert int(values["total-traffic"]) == snap.auto.values["total_kbytes"] * 1024


def test_truncated_group_is_flagged():
    scan = ProcessScan(100, 1.0, [ProcInfo(5, 1.0, "reporting-b", 10, "(wsgi:reporting-b")],
                       {"reporting-b"}, "rss")
    snap = build("u", 0.0, None, None, None, scan)
    values = parse_tab(tab.render([snap]))
    assert values["wsgi-group-name-truncated reporting-b"] == "1"
    assert values["memory-usage reporting-b count"] == "1"


def test_names_cannot_break_a_line_or_a_field():
    hostile = "a\tb\nc\x1b[2J\u2028\udc80"
    scan = ProcessScan(100, 1.0, [ProcInfo(5, 1.0, hostile, 10, "(wsgi:x)")], {hostile}, "rss")
    snap = build("u", 0.0, parse_auto(AUTO), None, None, scan)
    text = tab.render([snap])
    assert text.count("\n") == len(text.splitlines())
    escaped = "a\\x09b\\x0ac\\x1b[2J\\u2028\\udc80"
    assert f"memory-usage\t{escaped}\tcount\t1\n" in text
    assert f"wsgi-group-name-truncated\t{escaped}\t1\n" in text
    assert all(line.isprintable() for line in text.replace("\t", " ").splitlines())


def test_a_request_line_keeps_its_spaces_and_loses_its_controls():
    snap = example_snapshot()
    for i, s in enumerate(snap.samples):
        if s.metric.name == "longest_request":
            snap.samples[i] = s._replace(value="GET /a\tb\r\n\x1b[0m HTTP/1.1")
    assert parse_tab(tab.render([snap]))["longest-request"] == "GET /a b \\x1b[0m HTTP/1.1"


def test_a_group_twice_keeps_the_first_values():
    snap = example_snapshot()
    first = [s for s in snap.samples if s.metric.name == "memory_max_bytes"][0]
    snap.samples.append(first._replace(value=1))
    assert parse_tab(tab.render([snap]))["memory-usage native max"] == "12677120"
