"""Which Apache a process belongs to, proven: never another server's processes.

Unit tests read a /proc tree built in a temporary directory (procfs.PROC);
integration tests use two private Apaches, process families the test starts
whose name is ``apache2`` (each records every signal it gets), and a
stand-in status page that names their PIDs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from apache_metrics_exporter.collect import procfs
from apache_metrics_exporter.collect.loopback import loopback_addresses
from apache_metrics_exporter.collect.processes import find_parent, parent_of_url
from tests.conftest import (
    NameLookupInTest,
    data,
    exporter_env,
    live_children,
    parse_tab,
    run_exporter,
)
from tests.conftest import _lookups as name_lookups
from tests.harness.apache import ApacheServer, free_port
from tests.harness.killing import kill_all

ROOT = Path(__file__).resolve().parent.parent
REAPER = os.path.join(os.path.dirname(sys.executable), "apache-worker-reaper")
APACHE = ("apache2",)


# --- "local" is decided by address -------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost",
                                  "::ffff:127.0.0.1"])
def test_loopback_hosts(host):
    assert loopback_addresses(host)


# Names are answered by a stub resolver (no DNS query leaves this machine,
# tests/conftest.py refuses real lookups): what an attacker's DNS could say.
NAMES = {
    "127.attacker.example": ["192.0.2.7"],  # looks local, is remote
    "127.0.0.1.nip.io": ["127.0.0.1", "192.0.2.8"],  # one loopback answer of two
    "status.localtest": ["127.0.0.1", "::1"],  # every answer loopback
}
LOOKED_UP: list = []


def fake_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    LOOKED_UP.append(host)
    if host not in NAMES:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM,
             socket.IPPROTO_TCP, "", (a, port or 0)) for a in NAMES[host]]


@pytest.fixture
def resolver(monkeypatch):
    """The stub resolver in place of the system's; the names it was asked."""
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    LOOKED_UP.clear()
    return LOOKED_UP


@pytest.mark.parametrize("host", ["127.attacker.example", "127.0.0.1.nip.io", "192.0.2.1",
                                  "::", "0.0.0.0", "fe80::1%lo", "::ffff:192.0.2.1",
                                  "no-such-host.invalid", ""])
def test_hosts_that_only_look_local_are_remote(host, resolver):
    assert loopback_addresses(host) is None
    # A name is decided by what it resolves to, an address by itself.
    is_name = host in ("127.attacker.example", "127.0.0.1.nip.io", "no-such-host.invalid", "")
    assert resolver == ([host] if is_name else [])


def test_a_name_whose_every_address_is_loopback_is_local(resolver):
    assert loopback_addresses("status.localtest") == ["127.0.0.1", "::1"]
    assert resolver == ["status.localtest"]


def test_the_session_refuses_real_name_lookups():
    # tests/conftest.py: a lookup that would need DNS fails the test, so that
    # a test about names cannot forget its stub.
    with pytest.raises(NameLookupInTest, match="no DNS query"):
        socket.getaddrinfo("127.attacker.example", 80)
    with pytest.raises(NameLookupInTest):
        socket.gethostbyname("no-such-host.invalid")
    assert len(name_lookups) == 2
    name_lookups.clear()  # this test's own, on purpose
    assert socket.getaddrinfo("127.0.0.1", 80) and socket.getaddrinfo("::1", 80)
    assert socket.getaddrinfo("localhost", 80)  # /etc/hosts, no DNS


@pytest.mark.parametrize("name,local", [("127.attacker.example", False),
                                        ("127.0.0.1.nip.io", False),
                                        ("no-such-host.invalid", False),
                                        ("status.localtest", True)])
def test_reaper_decides_a_name_by_its_addresses(tmp_path, name, local):
    # The real command, its resolver stubbed before it is imported
    # (tests/harness/fakedns.py): no DNS query, no connection beyond loopback.
    url = f"http://{name}:{free_port()}/server-status"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.harness.fakedns",
         "apache_metrics_exporter.cli:reaper_console", "--url", url, "--max-time", "5m",
         "--state-file", str(tmp_path / "state.json")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env=exporter_env(FAKE_DNS=json.dumps(NAMES)))
    assert "Traceback" not in proc.stderr
    if local:  # on to the proof: nothing listens there, so nothing is signalled
        assert proc.returncode == 0, proc.stderr
        assert "signalling nothing" in proc.stderr
    else:  # refused before anything is fetched
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "only on an Apache reached over loopback" \
            in proc.stderr


# --- a /proc tree built by the test ------------------------------------------

def _hex(addr: str) -> str:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    raw = socket.inet_pton(family, addr)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return raw.hex().upper()


class FakeProc:
    """Processes (stat, children, socket fds) and TCP listeners under a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "net").mkdir(parents=True)
        self.tables = {"tcp": [], "tcp6": []}
        (root / "stat").write_text("cpu 0\nbtime 1700000000\n")

    def process(self, pid: int, name: str, ppid: int, sockets=(), state: str = "S") -> None:
        d = self.root / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "task" / str(pid)).mkdir(parents=True)
        (d / "task" / str(pid) / "children").write_text("")
        (d / "stat").write_text(f"{pid} ({name}) {state} {ppid} " + "0 " * 17 + "100 0 0\n")
        (d / "cmdline").write_text(f"/usr/sbin/{name}\0-k\0start\0")
        (d / "statm").write_text("100 10 0 0 0 0 0\n")
        for n, inode in enumerate(sockets, start=3):
            os.symlink(f"socket:[{inode}]", d / "fd" / str(n))
        parent = self.root / str(ppid) / "task" / str(ppid) / "children"
        if parent.exists():
            parent.write_text(parent.read_text() + f"{pid} ")

    def listen(self, addr: str, port: int, inode: int) -> None:
        table = "tcp6" if ":" in addr else "tcp"
        self.tables[table].append(
            f"   0: {_hex(addr)}:{port:04X} {'0' * len(_hex(addr))}:0000 0A "
            f"00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0 100 0 0 10 0")
        for name, lines in self.tables.items():
            (self.root / "net" / name).write_text(
                "  sl  local_address rem_address   st\n" + "\n".join(lines) + "\n")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    fp = FakeProc(tmp_path / "proc")
    fp.listen("10.0.0.9", 9999, 1)  # something else, elsewhere
    monkeypatch.setattr(procfs, "PROC", str(fp.root))
    monkeypatch.setattr(procfs, "_boot_time", None)
    return fp


def two_apaches(fake: FakeProc) -> None:
    """Apache A (PID 100) on 127.0.0.1:8080, Apache B (PID 200) on *:8081."""
    fake.process(1, "systemd", 0)
    fake.process(100, "apache2", 1, sockets=[1001])
    fake.process(101, "apache2", 100, sockets=[1001])
    fake.process(102, "apache2", 100)
    fake.process(200, "apache2", 1, sockets=[2001, 2002])
    fake.process(201, "apache2", 200, sockets=[2001, 2002])
    fake.listen("127.0.0.1", 8080, 1001)
    fake.listen("0.0.0.0", 8081, 2001)
    fake.listen("::", 8081, 2002)


def test_listener_of_the_url_names_the_parent(fake):
    two_apaches(fake)
    assert find_parent(["127.0.0.1"], 8080, APACHE).pid == 100
    assert find_parent(["127.0.0.1"], 8081, APACHE).pid == 200
    assert find_parent(["::1"], 8081, APACHE).pid == 200


def test_page_pids_of_another_tree_are_only_hints(fake):
    # The page of the server on 8080 "names" B's child: B does not hold 8080.
    two_apaches(fake)
    assert find_parent(["127.0.0.1"], 8080, APACHE, hints=[201]).pid == 100


def test_dead_port_gets_no_parent_though_other_apaches_run(fake):
    two_apaches(fake)
    parent = find_parent(["127.0.0.1"], 8090, APACHE, hints=[101, 201])
    assert parent.pid is None and "nothing listens on 127.0.0.1:8090" in parent.reason


def test_specific_address_wins_over_the_wildcard(fake):
    two_apaches(fake)
    fake.process(300, "apache2", 1, sockets=[3001])
    fake.listen("127.0.0.2", 8081, 3001)
    assert find_parent(["127.0.0.2"], 8081, APACHE).pid == 300
    assert find_parent(["127.0.0.1"], 8081, APACHE).pid == 200


def test_listener_that_is_not_apache(fake):
    fake.process(1, "systemd", 0)
    fake.process(50, "python3", 1, sockets=[5001])
    fake.process(100, "apache2", 1, sockets=[1001])
    fake.listen("127.0.0.1", 8080, 5001)
    parent = find_parent(["127.0.0.1"], 8080, APACHE, hints=[100])
    assert parent.pid is None and "'python3' (PID 50), not apache2" in parent.reason


def test_a_co_listener_that_is_not_apache_makes_the_tree_unproven(fake):
    # localhost is ::1 and 127.0.0.1; Apache holds 127.0.0.1:8080, another
    # user's process [::1]:8080 and may be the one that answers (it names
    # Apache's workers on its page): nothing is trusted, whatever the hints.
    fake.process(1, "systemd", 0)
    fake.process(100, "apache2", 1, sockets=[1001])
    fake.process(101, "apache2", 100, sockets=[1001])
    fake.process(66, "python3", 1, sockets=[6601])
    fake.listen("127.0.0.1", 8080, 1001)
    fake.listen("::1", 8080, 6601)
    parent = find_parent(["::1", "127.0.0.1"], 8080, APACHE, hints=[101])
    assert parent.pid is None and "'python3' (PID 66)" in parent.reason
    assert find_parent(["127.0.0.1"], 8080, APACHE, hints=[101]).pid == 100


def test_an_ipv4_listener_beside_apaches_ipv6_only_socket(fake):
    # Apache on [::] (maybe IPV6_V6ONLY), another process on 0.0.0.0 of the
    # same port: an IPv4 connection may reach either.
    fake.process(1, "systemd", 0)
    fake.process(100, "apache2", 1, sockets=[2002])
    fake.process(66, "python3", 1, sockets=[6602])
    fake.listen("::", 8080, 2002)
    fake.listen("0.0.0.0", 8080, 6602)
    assert find_parent(["127.0.0.1"], 8080, APACHE).pid is None
    assert find_parent(["::1"], 8080, APACHE).pid == 100


def test_two_apaches_on_one_port_are_ambiguous(fake):
    fake.process(1, "systemd", 0)
    fake.process(100, "apache2", 1, sockets=[1001])
    fake.process(200, "apache2", 1, sockets=[1002])
    fake.listen("127.0.0.1", 8080, 1001)
    fake.listen("127.0.0.1", 8080, 1002)  # SO_REUSEPORT
    assert find_parent(["127.0.0.1"], 8080, APACHE).pid is None


def test_pid_file_is_trusted_only_where_the_socket_cannot_be_seen(fake, tmp_path,
                                                                  monkeypatch):
    two_apaches(fake)
    pid_file = tmp_path / "apache2.pid"
    pid_file.write_text("200\n")
    # It contradicts what can be seen: refused.
    parent = find_parent(["127.0.0.1"], 8080, APACHE, str(pid_file))
    assert parent.pid is None and "names PID 200" in parent.reason
    # Nothing listens where the URL points: refused too.
    assert find_parent(["127.0.0.1"], 8090, APACHE, str(pid_file)).pid is None

    def denied(pid):
        raise procfs.Denied(pid)

    monkeypatch.setattr(procfs, "socket_inodes", denied)
    without = find_parent(["127.0.0.1"], 8080, APACHE)
    assert without.pid is None and "give --pid-file" in without.reason
    pid_file.write_text("100\n")
    assert find_parent(["127.0.0.1"], 8080, APACHE, str(pid_file)).pid == 100


def test_pid_file_naming_no_apache(fake, tmp_path):
    two_apaches(fake)
    fake.process(400, "bash", 1)
    pid_file = tmp_path / "apache2.pid"
    for text in ("400", "", "x", "9" * 40):
        pid_file.write_text(text)
        assert find_parent(["127.0.0.1"], 8080, APACHE, str(pid_file)).pid is None


def test_remote_url_has_no_parent_without_pid_file(fake, tmp_path):
    two_apaches(fake)
    parent = parent_of_url("192.0.2.1", 8080, APACHE)
    assert parent.pid is None and "not a loopback address" in parent.reason
    pid_file = tmp_path / "apache2.pid"
    pid_file.write_text("100")
    assert parent_of_url("192.0.2.1", 8080, APACHE, str(pid_file)).pid == 100


def test_exited_children_are_not_workers(fake):
    from apache_metrics_exporter.collect.processes import scan

    two_apaches(fake)
    fake.process(103, "apache2", 100, state="Z")
    assert sorted(c.pid for c in scan(100, APACHE).children) == [101, 102]


def test_real_listening_sockets_are_found():
    v4 = socket.socket(socket.AF_INET)
    v4.bind(("127.0.0.1", 0))
    v4.listen()
    port = v4.getsockname()[1]
    v6 = socket.socket(socket.AF_INET6)
    try:
        v6.bind(("::1", port))
        v6.listen()
        found = dict(procfs.listening_sockets(port))
        assert found["127.0.0.1"] == os.fstat(v4.fileno()).st_ino
        assert found["::1"] == os.fstat(v6.fileno()).st_ino
        assert os.fstat(v4.fileno()).st_ino in procfs.socket_inodes(os.getpid())
    finally:
        v4.close()
        v6.close()


# --- real servers and processes ------------------------------------------------

def reap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([REAPER, *args], capture_output=True, text=True, timeout=120,
                          env=exporter_env())


@pytest.fixture(scope="module")
def other_apache():
    """A second private Apache (worker MPM, ExtendedStatus off), its own port."""
    with ApacheServer("worker", extended_status=False) as server:
        yield server


@pytest.mark.integration
def test_dead_url_neither_reports_nor_reaps_other_apaches(prefork, other_apache, tmp_path):
    before = {s.proc.pid: live_children(s.proc.pid) for s in (prefork, other_apache)}
    url = f"http://127.0.0.1:{free_port()}/server-status"
    proc = run_exporter("--url", url, "-v")
    values = parse_tab(proc.stdout)
    assert values["status-response"] == "1"
    assert not [k for k in values if k.startswith("memory-usage")], values
    state = tmp_path / "state.json"
    proc = reap("--url", url, "--max-memory-wsgi", "1K", "--max-memory-idle", "1K",
                "--max-memory-active", "1K", "--state-file", str(state), "--grace", "1")
    assert proc.returncode == 0, proc.stderr
    assert "nothing listens on 127.0.0.1:" in proc.stderr
    assert json.loads(state.read_text())["last_run"]["result"] == "skipped"
    after = {s.proc.pid: live_children(s.proc.pid) for s in (prefork, other_apache)}
    assert after == before


@pytest.mark.integration
def test_extended_status_off_reports_exactly_its_own_tree(prefork, other_apache):
    from apache_metrics_exporter.collect.http import Fetcher, Target
    from apache_metrics_exporter.collect.snapshot import collect

    for server in (other_apache, prefork):
        fetcher = Fetcher(Target(server.status_url))
        try:
            snap = collect(fetcher)
        finally:
            fetcher.close()
        assert snap.up
        assert snap.processes.parent_pid == server.proc.pid
        found = {c.pid for c in snap.processes.children}
        assert found and found <= {p.pid for p in psutil.Process(server.proc.pid).children()}


@pytest.mark.integration
def test_reaper_on_one_apache_never_touches_the_other(prefork, other_apache, tmp_path):
    untouched = live_children(prefork.proc.pid)
    proc = reap("--url", other_apache.status_url, "--max-memory-wsgi", "1K",
                "--state-file", str(tmp_path / "state.json"), "--grace", "2")
    assert proc.returncode == 0, proc.stderr
    assert "killed" in proc.stderr
    assert live_children(prefork.proc.pid) == untouched


# A status page served by a process the test starts; ``NAME`` is its process
# name (a symlink to Python), PIDS the worker rows it lists (state W, SS 99999).
STAND_IN = r"""
import http.server, os, sys
page = open(sys.argv[1], "rb").read()
auto = open(sys.argv[2], "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = auto if "auto" in self.path else page
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""

# Every signal a reaper could send but SIGKILL/SIGSTOP, taken one at a time
# with sigwaitinfo and noted; MARKER (SIGRTMAX, after every standard signal)
# is the test's "you have taken everything sent before this" probe.
MARKER = signal.SIGRTMAX
TRAP = r"""
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG: die with the family's parent
if os.getppid() == 1:
    sys.exit()  # it is gone already
wanted = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH,
          signal.SIGRTMAX}
signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
print("ready", flush=True)
while True:
    signum = signal.sigwaitinfo(wanted).si_signo
    with open(sys.argv[1], "a") as fh:
        fh.write(f"{os.getpid()} got {signum}\n")
"""


def signals_noted(log: Path, pids, timeout: float = 10) -> list:
    """The log's lines once each of ``pids`` has taken every signal sent to it
    before this call (the kernel hands out the lowest-numbered pending signal
    first, so the MARKER sent now comes last); the markers' lines left out."""
    markers = {f"{pid} got {MARKER.value}" for pid in pids}
    for pid in pids:
        os.kill(pid, MARKER)
    deadline = time.monotonic() + timeout
    while True:  # until every marker is in: the readiness condition itself
        lines = log.read_text().splitlines()
        if markers <= set(lines):
            return [ln for ln in lines if ln not in markers]
        assert time.monotonic() < deadline, f"not every process noted the marker: {lines}"
        time.sleep(0.01)


def worker_page(pids) -> bytes:
    html = data("2.4.71-prefork-ext-on.html").decode("latin-1")
    head = html[:html.index("<tr><td><b>0-0")]
    rows = "".join(
        f"<tr><td><b>{n}-0</b></td><td>{pid}</td><td>0/1/1</td><td><b>W</b>\n</td>"
        "<td>0.01</td><td>99999</td><td>0</td><td>1</td><td>0.0</td><td>0.00</td>"
        "<td>0.00\n</td><td>127.0.0.1</td><td>http/1.1</td><td nowrap>x:80</td>"
        "<td nowrap>GET /slow HTTP/1.1</td></tr>\n" for n, pid in enumerate(pids))
    return (head + rows + "</table>\n</body></html>\n").encode("latin-1")


@pytest.fixture
def shared_dir():
    """A directory every user can read and write (the `nobody` family logs here)."""
    d = tempfile.mkdtemp(prefix="ame-safety-")
    os.chmod(d, 0o777)
    yield Path(d)
    subprocess.run(["rm", "-rf", d], check=False)


def start_named(shared: Path, name: str, script: str, *args: str, user=None):
    """A Python process whose process name is ``name`` (started via a symlink)."""
    exe = shared / name
    if not exe.exists():
        os.symlink(sys.executable, exe)
    path = shared / f"{name}-{len(list(shared.iterdir()))}.py"
    path.write_text(script)
    path.chmod(0o644)
    proc = subprocess.Popen([str(exe), str(path), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, user=user)
    first = proc.stdout.readline().strip()
    return proc, first


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="starts processes as root and as nobody")
@pytest.mark.parametrize("server_name", ["apache2", "python3"])
def test_page_naming_other_trees_gets_no_signal(shared_dir, tmp_path, server_name):
    log = shared_dir / "signals.log"
    log.touch()
    log.chmod(0o666)
    families = []
    (shared_dir / "trap.py").write_text(TRAP)
    (shared_dir / "trap.py").chmod(0o644)
    try:
        for user in (None, "nobody"):
            parent, kids = start_named(shared_dir, "apache2", (
                "import subprocess, sys\n"
                f"cs = [subprocess.Popen([sys.executable, {str(shared_dir / 'trap.py')!r}, "
                f"{str(log)!r}], stdout=subprocess.PIPE) for _ in range(2)]\n"
                "[c.stdout.readline() for c in cs]\n"
                "print(' '.join(str(c.pid) for c in cs), flush=True)\n"
                "sys.stdin.read()\n"), user=user)
            families.append((parent, [int(p) for p in kids.split()]))
            assert [psutil.Process(p).name() for p in families[-1][1]] == ["apache2"] * 2
        foreign = [p for parent, kids in families for p in [parent.pid, *kids]]
        page, auto = tmp_path / "page.html", tmp_path / "auto.txt"
        page.write_bytes(worker_page(foreign))
        auto.write_bytes(data("2.4.71-prefork-ext-on.auto.txt"))
        server, port = start_named(shared_dir, server_name, STAND_IN, str(page), str(auto))
        try:
            url = f"http://127.0.0.1:{port}/server-status"
            state = tmp_path / "state.json"
            proc = reap("--url", url, "--max-time", "1s", "--max-memory-active", "1K",
                        "--max-memory-idle", "1K", "--max-memory-wsgi", "1K",
                        "--state-file", str(state), "--grace", "1")
            assert proc.returncode == 0, proc.stderr
            collected = run_exporter("--url", url)
        finally:
            server.kill()
            server.wait()
        assert signals_noted(log, [p for _, kids in families for p in kids]) == []
        assert all(parent.poll() is None for parent, _ in families)
        assert all(psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in foreign)
        last = json.loads(state.read_text())["last_run"]
        assert last["killed_native_active"] == last["killed_wsgi"] == 0
        if server_name == "apache2":
            assert "never signalled" in proc.stderr
        else:
            assert "'python3'" in proc.stderr and "not apache2" in proc.stderr
        values = parse_tab(collected.stdout)
        assert values["status-response"] == "0"
        assert values.get("memory-usage native count", "0") == "0"
    finally:
        for parent, kids in families:
            kill_all(kids)
            parent.kill()
            parent.wait()

# IPv4, IPv6 and an IPv4-mapped IPv6 listener: what the socket table must tell apart.
DUAL_STACK = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"),
              (socket.AF_INET6, "::ffff:127.0.0.1"))


def _listen(stack: ExitStack, family: int, address: str, port: int = 0,
            backlog: int = 4) -> socket.socket:
    """A listening TCP socket of the test's own, closed when ``stack`` ends."""
    sock = stack.enter_context(socket.socket(family))
    sock.bind((address, port))
    sock.listen(backlog)
    return sock


def test_the_kernels_listener_list_and_proc_net_tcp_agree():
    # procfs asks sock_diag (netlink) for LISTEN sockets only, falling back
    # to /proc/net/tcp{,6}: both must say the same, IPv4-mapped included.
    with ExitStack() as stack:
        socks = [_listen(stack, family, addr) for family, addr in DUAL_STACK]
        kernel = procfs._netlink_listeners()
        assert kernel is not None, "sock_diag is not available here"
        assert sorted(kernel) == sorted(procfs.tcp_listeners("/proc/."))
        mine = {os.fstat(s.fileno()).st_ino for s in socks}
        assert mine <= {inode for _raw, _port, inode in kernel}


def test_one_sock_diag_request_answers_for_both_families_as_two_would(monkeypatch):
    # procfs asks with sock_diag's original TCP request, which the kernel
    # answers for IPv4 and IPv6 at once; a kernel that refuses it is asked
    # once per family (SOCK_DIAG_BY_FAMILY). Both ways: the same rows.
    with ExitStack() as stack:
        socks = [_listen(stack, family, addr, backlog=4 + i)
                 for i, (family, addr) in enumerate(DUAL_STACK)]
        mine = {os.fstat(s.fileno()).st_ino for s in socks}
        real = procfs._netlink_answer
        answers: list = []

        def answer(sock, seq, refuse_first: bool = False):  # noqa: ANN001,ANN202
            rows = real(sock, seq)
            answers.append(rows)
            return None if refuse_first and len(answers) == 1 else rows

        monkeypatch.setattr(procfs, "_netlink_answer", answer)
        once = procfs._netlink_rows()
        assert once is not None and len(answers) == 1
        answers.clear()
        monkeypatch.setattr(procfs, "_netlink_answer",
                            lambda sock, seq: answer(sock, seq, refuse_first=True))
        per_family = procfs._netlink_rows()
        assert per_family is not None and len(answers) == 3
        assert sorted(r for r in once if r[2] in mine) \
            == sorted(r for r in per_family if r[2] in mine)
        assert sorted((len(r[0]), r[4]) for r in once if r[2] in mine) \
            == [(4, 4), (4, 6), (16, 5)]  # the mapped address as IPv4; each one's backlog
        # A kernel that refuses both ways: /proc/net/tcp{,6} is read instead.
        monkeypatch.setattr(procfs, "_netlink_answer", lambda sock, seq: None)
        assert procfs._netlink_rows() is None
        assert {r[2] for r in procfs.listener_rows() or ()} >= mine


def test_the_listeners_of_one_port_are_those_of_the_whole_table(monkeypatch):
    # A batch whose targets share one port asks the kernel for that port's
    # listeners only (sock_diag's source port); they must be exactly the
    # whole table's on that port, asked either way, and /proc/net/tcp's.
    from apache_metrics_exporter.collect.host import Host

    with ExitStack() as stack:
        first = _listen(stack, socket.AF_INET, "127.0.0.1")
        port = first.getsockname()[1]
        socks = [first, _listen(stack, socket.AF_INET6, "::1", port)]
        other = _listen(stack, socket.AF_INET, "127.0.0.1", backlog=2)
        whole = procfs.listener_rows() or []
        mine = sorted(r for r in whole if r[1] == port)
        assert len(mine) == 2 and any(r[1] != port for r in whole)
        assert sorted(procfs.listener_rows(None, port) or ()) == mine
        assert sorted(procfs._netlink_rows(port) or ()) == mine
        assert sorted(r[:4] for r in procfs.listener_rows("/proc/.", port) or ()) \
            == sorted(r[:4] for r in mine)
        real = procfs._netlink_answer
        answers: list = []

        def refusing(sock, seq):  # noqa: ANN001,ANN202
            answers.append(1)
            rows = real(sock, seq)
            return None if len(answers) == 1 else rows

        monkeypatch.setattr(procfs, "_netlink_answer", refusing)
        assert sorted(procfs._netlink_rows(port) or ()) == mine  # asked per family
        monkeypatch.setattr(procfs, "_netlink_answer", real)
        asked: list = []
        real_rows = procfs.listener_rows
        monkeypatch.setattr(procfs, "listener_rows",
                            lambda *args: asked.append(args) or real_rows(*args))
        host = Host([port, port])
        text = sorted(host.listeners(port))
        assert text == sorted(Host().listeners(port))
        assert [(a, i) for a, i, _q, _l in text] == sorted(
            [("127.0.0.1", os.fstat(socks[0].fileno()).st_ino),
             ("::1", os.fstat(socks[1].fileno()).st_ino)])
        assert asked == [(None, port, None), (None, 0, None)]
        # Asked for a port it was not made for: it reads the whole table.
        other_port = other.getsockname()[1]
        assert [row[1] for row in host.listeners(other_port)] \
            == [os.fstat(other.fileno()).st_ino]
        assert asked[-1] == (None, 0, None) and len(asked) == 3
        assert sorted(host.listeners(port)) == text and len(asked) == 3
        Host([port, other_port]).listeners(port)
        assert asked[-1] == (None, 0, None)


def test_a_kept_sock_diag_socket_answers_each_query_and_never_an_older_one(monkeypatch):
    # A long-running run asks the socket table on one kept sock_diag socket
    # (procfs.SockDiag). An answer to another query - one cut short, its
    # answer still waiting - must never be taken for this one's.
    import struct

    made: list = []
    real_socket = procfs._diag_socket
    monkeypatch.setattr(procfs, "_diag_socket", lambda: made.append(1) or real_socket())
    with ExitStack() as stack:
        socks = [_listen(stack, socket.AF_INET, "127.0.0.1", backlog=3) for _ in range(2)]
        mine, theirs = (s.getsockname()[1] for s in socks)
        expected = sorted(procfs._netlink_rows(mine) or ())
        assert [row[2] for row in expected] == [os.fstat(socks[0].fileno()).st_ino]
        made.clear()
        diag = procfs.SockDiag()
        for _ in range(3):
            assert sorted(diag.rows(mine) or ()) == expected
        assert len(made) == 1  # one socket for every query
        # A query cut short: its answer (about the other port) waits on the socket.
        held = diag._sock
        assert held is not None
        req = struct.pack("=BBBB", socket.AF_INET, 0, 0, 0) + struct.pack(">H46x", theirs) \
            + struct.pack("=II", 1 << 10, 0)
        held.send(struct.pack("=IHHII", 16 + len(req), 18, 0x301, diag._seq + 3, 0) + req)
        assert sorted(diag.rows(mine) or ()) == expected  # not the other port's
        assert diag._sock is None and len(made) == 2  # that socket closed; asked on a new one
        assert sorted(diag.rows(mine) or ()) == expected and len(made) == 3  # kept anew
        assert sorted(diag.rows(mine) or ()) == expected and len(made) == 3
        diag.close()
        assert diag._sock is None
