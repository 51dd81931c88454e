"""A private Zabbix server (6.0 on Debian 12, 7.0 on 13), its PHP frontend's API
and a Zabbix agent, on loopback.

Everything comes from Debian's packages (zabbix-server-pgsql,
zabbix-frontend-php, php-cli, php8.2-cgi or php8.4-cgi, php-pgsql, postgresql,
zabbix-agent) and lives in one temporary directory:

- a PostgreSQL cluster (``initdb`` as user postgres, trust authentication,
  127.0.0.1 and a free port, its socket in the directory) with Zabbix's
  schema, images and data loaded in README.Debian's order;
- ``zabbix_server -f`` with its own config, log, pid and control socket
  (it drops from root to user zabbix; ListenPort must be 1024-32767);
- a copy of /usr/share/zabbix whose CONFIG_FILE_PATH points at its own
  zabbix.conf.php (Debian hard-codes /etc/zabbix/), served by PHP's built-in
  server as user nobody: the JSON-RPC API the template is imported through;
- ``zabbix_agentd -f`` with a private config (own port, the given
  UserParameters), started and stopped separately.

Nothing listens beyond 127.0.0.1, nothing is enabled or started through the
init system, and stop() ends only the processes started here (SIGTERM to
their process group, SIGKILL after a bound) before removing the directory.
"""

from __future__ import annotations

import gzip
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional


def _newest(pattern: str, default: str) -> Path:
    """The highest-versioned match of a release-versioned path (PostgreSQL 15 on
    Debian 12, 17 on 13; PHP's extension API directory), or the default."""
    found = sorted(Path("/").glob(pattern.lstrip("/")),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parts])
    return found[-1] if found else Path(default)


def _debian_major() -> str:
    try:
        return Path("/etc/debian_version").read_text().split(".", 1)[0].strip()
    except OSError:
        return ""


PG_BIN = _newest("/usr/lib/postgresql/*/bin", "/usr/lib/postgresql/15/bin")
SERVER_BIN = "/usr/sbin/zabbix_server"
AGENT_BIN = "/usr/sbin/zabbix_agentd"
PHP_BIN = "/usr/bin/php"
FRONTEND = Path("/usr/share/zabbix")
SCHEMA_DIR = Path("/usr/share/zabbix-server-pgsql")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
# What the stack needs, by Debian package (for the skip reason).
REQUIRED = {
    "zabbix-server-pgsql": SERVER_BIN,
    "zabbix-frontend-php": str(FRONTEND / "api_jsonrpc.php"),
    "php-cli": PHP_BIN,
    "php-pgsql": str(_newest("/usr/lib/php/*/pgsql.so", "/usr/lib/php/20220829/pgsql.so")),
    "postgresql": str(PG_BIN / "initdb"),
    "zabbix-agent": AGENT_BIN,
}
# PHP's CGI by its versioned name (the Makefile's RELEASE_PACKAGES_NN).
PHP_CGI = "php8.2-cgi" if _debian_major() == "12" else "php8.4-cgi"
PACKAGES = ("zabbix-server-pgsql", "zabbix-frontend-php", "php-pgsql", "postgresql",
            "php-cli", PHP_CGI, "zabbix-agent")


def missing() -> List[str]:
    """The Debian packages whose files are not there (empty: the stack can run)."""
    out = [pkg for pkg, path in REQUIRED.items() if not os.path.exists(path)]
    for user in ("postgres", "zabbix", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            out.append(f"user {user}")
    if os.geteuid() != 0:
        out.append("root (to run PostgreSQL and Zabbix as their own users)")
    return out


def low_free_port() -> int:
    """A free port of 127.0.0.1 in 10000-32767: zabbix_server refuses ports above
    32767, and the kernel's ephemeral ports start at 32768."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(10000, 32767)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 10000-32767 on 127.0.0.1")


def _wait_port(port: int, deadline: float, proc: Optional[subprocess.Popen] = None) -> bool:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class ApiError(RuntimeError):
    """An error answer of the Zabbix API."""


class ZabbixStack:
    """Server + database + API; ``agent()`` adds an agent. Use as a context manager."""

    def __init__(self) -> None:
        self.root: Optional[Path] = None
        self.procs: List[subprocess.Popen] = []
        self.pg_port = 0
        self.server_port = 0
        self.web_port = 0
        self.token = ""
        self.timings: Dict[str, float] = {}

    # -- paths -----------------------------------------------------------
    @property
    def pg_data(self) -> Path:
        assert self.root is not None
        return self.root / "pg"

    @property
    def server_conf(self) -> Path:
        assert self.root is not None
        return self.root / "server" / "zabbix_server.conf"

    @property
    def server_log(self) -> Path:
        assert self.root is not None
        return self.root / "server" / "zabbix_server.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/api_jsonrpc.php"

    # -- life cycle ------------------------------------------------------
    def start(self, timeout: float = 120) -> ZabbixStack:
        deadline = time.monotonic() + timeout
        self.root = Path(tempfile.mkdtemp(prefix="ame-zabbix-"))
        os.chmod(self.root, 0o755)
        try:
            t0 = time.monotonic()
            self._postgres(deadline)
            self.timings["database"] = time.monotonic() - t0
            t0 = time.monotonic()
            self._server(deadline)
            self._frontend(deadline)
            self.login()
            self.timings["server and API"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, argv: List[str], user: Optional[str] = None, input: Optional[bytes] = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
        if user is not None:
            argv = ["runuser", "-u", user, "--"] + argv
        proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: "
                               f"{(proc.stderr or proc.stdout).decode(errors='replace')[-2000:]}")
        return proc

    def _postgres(self, deadline: float) -> None:
        assert self.root is not None
        sock = self.root / "pgsock"
        for d in (self.pg_data, sock):
            d.mkdir(mode=0o700)
            shutil.chown(d, "postgres", "postgres")
        self._run([str(PG_BIN / "initdb"), "-D", str(self.pg_data), "-A", "trust",
                   "-U", "zabbix", "-E", "UTF8", "--locale=C", "--no-sync"], user="postgres")
        self.pg_port = low_free_port()
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -c unix_socket_directories={sock}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), "-o", opts, "-w",
                   "-t", "60", "-l", str(self.pg_data / "server.log"), "start"],
                  user="postgres")
        psql = [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "zabbix",
                "-q", "-v", "ON_ERROR_STOP=1"]
        self._run(psql + ["-d", "postgres", "-c", "CREATE DATABASE zabbix"])
        for name in ("schema.sql.gz", "images.sql.gz", "data.sql.gz"):
            sql = gzip.decompress((SCHEMA_DIR / name).read_bytes())
            self._run(psql + ["-d", "zabbix"], input=sql,
                      timeout=max(10.0, deadline - time.monotonic()))

    def _server(self, deadline: float) -> None:
        assert self.root is not None
        d = self.root / "server"
        d.mkdir(mode=0o755)
        shutil.chown(d, "zabbix", "zabbix")
        self.server_port = low_free_port()
        self.server_conf.write_text(f"""# Generated by tests/harness/zabbix.py.
ListenIP=127.0.0.1
ListenPort={self.server_port}
SourceIP=127.0.0.1
LogType=file
LogFile={self.server_log}
LogFileSize=0
PidFile={d}/zabbix_server.pid
SocketDir={d}
TmpDir={d}
DBHost=127.0.0.1
DBPort={self.pg_port}
DBName=zabbix
DBUser=zabbix
CacheUpdateFrequency=2
HousekeepingFrequency=0
StartPollers=2
StartPollersUnreachable=1
StartTrappers=1
StartPingers=1
StartDiscoverers=0
StartHTTPPollers=0
StartAlerters=1
StartEscalators=1
StartLLDProcessors=1
StartPreprocessors=1
StartReportWriters=0
StartODBCPollers=0
StartTimers=1
Timeout=10
UnreachablePeriod=10
UnavailableDelay=5
UnreachableDelay=2
LogSlowQueries=0
""")
        self._spawn([SERVER_BIN, "-c", str(self.server_conf), "-f"], d / "stdout.log")
        if not _wait_port(self.server_port, deadline, self.procs[-1]):
            raise RuntimeError(f"zabbix_server did not listen: {self._tail(self.server_log)}")

    def _frontend(self, deadline: float) -> None:
        assert self.root is not None
        ui = self.root / "ui"
        shutil.copytree(FRONTEND, ui, symlinks=True)
        for font in ("fonts/DejaVuSans.ttf", "assets/fonts/DejaVuSans.ttf"):
            link = ui / font
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(FONT)
        conf = ui / "conf" / "zabbix.conf.php"
        core = ui / "include" / "classes" / "core" / "CConfigFile.php"
        core.write_text(core.read_text().replace("'/etc/zabbix/zabbix.conf.php'",
                                                 repr(str(conf))))
        conf.write_text(f"""<?php
$DB['TYPE'] = 'POSTGRESQL';
$DB['SERVER'] = '127.0.0.1';
$DB['PORT'] = '{self.pg_port}';
$DB['DATABASE'] = 'zabbix';
$DB['USER'] = 'zabbix';
$DB['PASSWORD'] = '';
$DB['SCHEMA'] = '';
$DB['ENCRYPTION'] = false;
$DB['KEY_FILE'] = '';
$DB['CERT_FILE'] = '';
$DB['CA_FILE'] = '';
$DB['VERIFY_HOST'] = false;
$DB['CIPHER_LIST'] = '';
$DB['VAULT_URL'] = '';
$DB['VAULT_DB_PATH'] = '';
$DB['VAULT_TOKEN'] = '';
$DB['DOUBLE_IEEE754'] = true;
$ZBX_SERVER = '127.0.0.1';
$ZBX_SERVER_PORT = '{self.server_port}';
$ZBX_SERVER_NAME = 'apache-metrics-exporter test';
$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
""")
        self.web_port = low_free_port()
        self._spawn(["runuser", "-u", "nobody", "--", PHP_BIN, "-d", "date.timezone=UTC",
                     "-d", "memory_limit=512M", "-d", "post_max_size=32M",
                     "-d", "max_execution_time=300",
                     "-S", f"127.0.0.1:{self.web_port}", "-t", str(ui)],
                    self.root / "php.log")
        if not _wait_port(self.web_port, deadline, self.procs[-1]):
            raise RuntimeError(f"php -S did not listen: {self._tail(self.root / 'php.log')}")

    def _spawn(self, argv: List[str], log: Path) -> None:
        with open(log, "ab") as out:
            self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                               stderr=subprocess.STDOUT,
                                               start_new_session=True))

    @staticmethod
    def _stop_group(proc: subprocess.Popen, timeout: float = 10) -> None:
        """SIGTERM the process group started here (zabbix_server's forks, php's
        workers go with it), SIGKILL what is left after timeout."""

        def group_alive() -> bool:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return False
            return True

        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                proc.poll()
                if proc.returncode is not None and not group_alive():
                    return
                time.sleep(0.1)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            self._stop_group(proc)
        self.procs.clear()
        if self.root is not None:
            if (self.pg_data / "postmaster.pid").exists():
                try:
                    self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), "-m", "immediate",
                               "-w", "-t", "30", "stop"], user="postgres", timeout=60)
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> ZabbixStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _tail(path: Path) -> str:
        try:
            return path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    # -- the API ---------------------------------------------------------
    def api(self, method: str, params: Any = None, timeout: float = 120) -> Any:
        """One JSON-RPC call; ApiError on an error answer."""
        body: Dict[str, Any] = {"jsonrpc": "2.0", "method": method,
                                "params": params if params is not None else {}, "id": 1}
        if self.token and method not in ("apiinfo.version", "user.login"):
            body["auth"] = self.token
        req = urllib.request.Request(self.api_url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json-rpc"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            answer = json.loads(r.read())
        if "error" in answer:
            raise ApiError(f"{method}: {answer['error']}")
        return answer["result"]

    def login(self) -> None:
        self.token = self.api("user.login", {"username": "Admin", "password": "zabbix"})
        # data.sql's own host polls 127.0.0.1:10050: nothing of ours.
        for host in self.api("host.get", {"filter": {"host": "Zabbix server"},
                                          "output": ["hostid"]}):
            self.api("host.update", {"hostid": host["hostid"], "status": 1})

    def reload_config(self) -> None:
        """Make the server see new hosts and items now (not after CacheUpdateFrequency)."""
        subprocess.run([SERVER_BIN, "-c", str(self.server_conf), "-R", "config_cache_reload"],
                       capture_output=True, timeout=30)

    def check_now(self, itemids: List[str]) -> None:
        """Ask the server to poll these items now (API task "check now")."""
        for i in range(0, len(itemids), 200):
            self.api("task.create", [{"type": 6, "request": {"itemid": itemid}}
                                     for itemid in itemids[i:i + 200]])

    # -- an agent --------------------------------------------------------
    def agent(self, hostname: str, userparameters: str, timeout: float = 30) -> Agent:
        assert self.root is not None
        return Agent(self.root / f"agent-{hostname}", hostname, userparameters).start(timeout)


class Agent:
    """A private ``zabbix_agentd -f`` (passive checks only) on 127.0.0.1."""

    def __init__(self, root: Path, hostname: str, userparameters: str) -> None:
        self.root = root
        self.hostname = hostname
        self.userparameters = userparameters
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    @property
    def conf(self) -> Path:
        return self.root / "zabbix_agentd.conf"

    @property
    def log(self) -> Path:
        return self.root / "zabbix_agentd.log"

    def start(self, timeout: float = 30) -> Agent:
        self.root.mkdir(mode=0o755, exist_ok=True)
        shutil.chown(self.root, "zabbix", "zabbix")
        self.port = low_free_port()
        self.conf.write_text(f"""# Generated by tests/harness/zabbix.py: a private test agent.
ListenIP=127.0.0.1
ListenPort={self.port}
SourceIP=127.0.0.1
Server=127.0.0.1
ServerActive=
Hostname={self.hostname}
LogType=file
LogFile={self.log}
LogFileSize=0
PidFile={self.root}/zabbix_agentd.pid
StartAgents=3
Timeout=10
""" + self.userparameters)
        with open(self.root / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen([AGENT_BIN, "-c", str(self.conf), "-f"],
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        if not _wait_port(self.port, time.monotonic() + timeout, self.proc):
            log = ZabbixStack._tail(self.log)
            self.stop()
            raise RuntimeError(f"zabbix_agentd did not listen: {log}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            ZabbixStack._stop_group(self.proc)
            self.proc = None
