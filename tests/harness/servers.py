"""Real consumers started on loopback for the tests: InfluxDB 1.6 and collectd.

Each runs from Debian's package binary with its own config and data in a
temporary directory, on free ports of 127.0.0.1, and is always stopped by the
fixture that started it (only the process it started).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import List, Optional

from tests.harness.apache import free_port

INFLUXD = os.environ.get("INFLUXD_BIN", "/usr/bin/influxd")
COLLECTD = os.environ.get("COLLECTD_BIN", "/usr/sbin/collectd")
TYPES_DB = "/usr/share/collectd/types.db"


class _Daemon:
    proc: Optional[subprocess.Popen] = None
    root: Optional[Path] = None

    def _spawn(self, argv: List[str], stdout: Path) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=open(stdout, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
            self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self):
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class InfluxDB(_Daemon):
    """InfluxDB 1.6: its /write endpoint parses line protocol strictly.

    ``auth``: authentication on, with an admin user (ADMIN) that query() uses;
    ``tls``: (certificate, key) files: https only, on the same port."""

    ADMIN = ("admin", "admin-pw")

    def __init__(self, auth: bool = False, tls: Optional[tuple] = None) -> None:
        self.auth = auth
        self.tls = tls

    def start(self, timeout: float = 30) -> InfluxDB:
        self.root = Path(tempfile.mkdtemp(prefix="ame-influxdb-"))
        self.port = free_port()
        conf = self.root / "influxdb.conf"
        http = ""
        if self.auth:
            http += "  auth-enabled = true\n"
        if self.tls:
            http += (f'  https-enabled = true\n  https-certificate = "{self.tls[0]}"\n'
                     f'  https-private-key = "{self.tls[1]}"\n')
        conf.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{self.root}/meta"
[data]
  dir = "{self.root}/data"
  wal-dir = "{self.root}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
{http}[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""")
        self._spawn([INFLUXD, "-config", str(conf)], self.root / "influxd.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with self._open(f"{self.url}/ping") as r:
                    if r.status == 204:
                        if self.auth:  # the first user is created without one
                            user, password = self.ADMIN
                            self.query(f"CREATE USER \"{user}\" WITH PASSWORD "
                                       f"'{password}' WITH ALL PRIVILEGES", login=False)
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        log = (self.root / "influxd.log").read_text()[-2000:]
        self.stop()
        raise RuntimeError(f"influxd did not start: {log}")

    def _open(self, url: str, data: Optional[bytes] = None):
        context = None
        if self.tls:
            import ssl

            context = ssl.create_default_context(cafile=self.tls[0])
        return urllib.request.urlopen(url, data=data, timeout=10, context=context)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def query(self, q: str, db: Optional[str] = None, login: bool = True) -> dict:
        params = {"q": q}
        if db:
            params["db"] = db
        login_query = ""
        if self.auth and login:  # 1.x reads u and p from the URL only
            login_query = "?" + urllib.parse.urlencode(dict(zip("up", self.ADMIN)))
        data = urllib.parse.urlencode(params).encode()
        with self._open(f"{self.url}/query{login_query}", data=data) as r:
            return json.load(r)

    def write(self, db: str, body: bytes, precision: str = "ns") -> tuple:
        """(HTTP status, error text) of a /write."""
        req = urllib.request.Request(f"{self.url}/write?db={db}&precision={precision}",
                                     data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, ""
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def field_types(self, db: str) -> dict:
        """{measurement: {field: type}} from SHOW FIELD KEYS."""
        out = {}
        for series in self.query("SHOW FIELD KEYS", db)["results"][0].get("series", []):
            out[series["name"]] = dict(series["values"])
        return out


class V2Write:
    """What InfluxDB 1.8 adds to 1.6, in front of a real InfluxDB 1.6 on
    loopback: ``POST /api/v2/write?bucket=DB/RP&precision=P`` is sent on to
    ``/write?db=DB&rp=RP&precision=P`` with its body, and 1.8's
    ``Authorization: Token USER:PASSWORD`` becomes basic auth; any other
    request goes through as it is. The answer - status, headers, body - is the
    real server's: it alone decides on credentials, database, retention
    policy, permission and body (as 1.8's serveWriteV2 leaves them to the
    /write handler). ``bodies``: the body of each write that went through."""

    def __init__(self, upstream: str) -> None:
        import base64
        import http.server
        import threading

        self.bodies: List[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _relay(self, method: str) -> None:
                split = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) \
                    if method == "POST" else None
                path = split.path
                query = split.query
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "content-type")}
                if split.path == "/api/v2/write":
                    q = urllib.parse.parse_qs(split.query)
                    bucket = q.get("bucket", [""])[0]
                    db, _, rp = bucket.partition("/")
                    if not db:
                        return self._answer(404, {}, json.dumps(
                            {"error": f"bucket name {bucket!r} has no database"}).encode())
                    precision = {"ns": "n", "us": "u"}.get(q.get("precision", [""])[0],
                                                           q.get("precision", [""])[0])
                    path, query = "/write", urllib.parse.urlencode(
                        {"db": db, "rp": rp, "precision": precision})
                    auth = headers.get("Authorization", "")
                    if auth.startswith("Token ") and ":" in auth:
                        headers["Authorization"] = "Basic " + base64.b64encode(
                            auth[6:].encode()).decode()
                    outer.bodies.append(body or b"")
                req = urllib.request.Request(f"{upstream}{path}?{query}", data=body,
                                             method=method, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        status, answer, text = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, answer, text = e.code, e.headers, e.read()
                self._answer(status, answer, text)

            def _answer(self, status: int, headers, text: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() in ("content-type", "www-authenticate") or \
                            k.lower().startswith("x-influxdb"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def do_GET(self):
                self._relay("GET")

            def do_HEAD(self):
                self._relay("HEAD")

            def do_POST(self):
                self._relay("POST")

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Collectd(_Daemon):
    """collectd 5.12 with the Exec plugin running a command, csv output."""

    def start(self, exec_user: str, command: List[str], hostname: str = "testhost",
              interval: float = 1.0, timeout: float = 15, extra: str = "") -> Collectd:
        """``extra``: more configuration (another plugin beside Exec)."""
        self.root = Path(tempfile.mkdtemp(prefix="ame-collectd-"))
        os.chmod(self.root, 0o755)
        self.csv_dir = self.root / "csv"
        self.hostname = hostname
        args = " ".join(f'"{a}"' for a in command)
        conf = self.root / "collectd.conf"
        conf.write_text(f"""Hostname "{hostname}"
FQDNLookup false
Interval {interval}
BaseDir "{self.root}"
PIDFile "{self.root}/collectd.pid"
TypesDB "{TYPES_DB}"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "{self.root}/collectd.log"
  Timestamp true
</Plugin>
LoadPlugin exec
LoadPlugin csv
<Plugin exec>
  Exec "{exec_user}" {args}
</Plugin>
<Plugin csv>
  DataDir "{self.csv_dir}"
  StoreRates false
</Plugin>
{extra}""")
        self.stdout = self.root / "stdout.log"
        self._spawn([COLLECTD, "-f", "-C", str(conf)], self.stdout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("collectd exited: " + self.stdout.read_text()[-2000:])
            if (self.root / "collectd.log").exists():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("collectd did not start")

    def log(self) -> str:
        try:
            return (self.root / "collectd.log").read_text()
        except OSError:
            return ""

    def csv_files(self) -> dict:
        """{'plugin-instance/type-instance': [(epoch, value...), ...]} from the csv plugin."""
        out: dict = {}
        base = self.csv_dir / self.hostname
        if not base.is_dir():
            return out
        for plugin_dir in base.iterdir():
            for f in plugin_dir.iterdir():
                name = f.name.rsplit("-", 3)[0]  # strip -YYYY-MM-DD
                rows = []
                for line in f.read_text().splitlines()[1:]:
                    parts = line.split(",")
                    rows.append(tuple(float(x) if x != "nan" else float("nan") for x in parts))
                out[f"{plugin_dir.name}/{name}"] = rows
        return out


VICTORIA = os.environ.get("VICTORIA_BIN", "/usr/bin/victoria-metrics")


class VictoriaMetrics(_Daemon):
    """VictoriaMetrics: accepts /api/v2/write, read back through /api/v1/export."""

    def __init__(self, username: str = "", password: str = "") -> None:
        self.username = username
        self.password = password
        self.port = 0

    def start(self, timeout: float = 30) -> VictoriaMetrics:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="ame-victoria-"))
            self.port = free_port()
        argv = [VICTORIA, f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.root}/data", "-retentionPeriod=100y",
                "-search.latencyOffset=0s", "-loggerLevel=WARN"]
        if self.username:
            argv += [f"-httpAuth.username={self.username}",
                     f"-httpAuth.password={self.password}"]
        self._spawn(argv, self.root / "victoria.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with self._open("/health") as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        log = (self.root / "victoria.log").read_text()[-2000:]
        self.stop()
        raise RuntimeError(f"victoria-metrics did not start: {log}")

    def pause(self) -> None:
        """Stop the server but keep its data and port, to start it again."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _open(self, path: str):
        req = urllib.request.Request(self.url + path)
        if self.username:
            import base64
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        return urllib.request.urlopen(req, timeout=10)

    def export(self, match: str, min_samples: int = 1, timeout: float = 15) -> list:
        """[{metric: {...}, values: [...], timestamps: [ms...]}] for a series selector.

        New series become searchable a moment after they are written, even
        after a flush: wait (a readiness poll) until at least ``min_samples``
        samples are there, then return what the server has.
        """
        query = urllib.parse.urlencode({"match[]": match})
        deadline = time.monotonic() + timeout
        while True:
            with self._open("/internal/force_flush"):
                pass
            with self._open(f"/api/v1/export?{query}") as r:
                series = [json.loads(line) for line in r.read().decode().splitlines() if line]
            if sum(len(s["timestamps"]) for s in series) >= min_samples \
                    or time.monotonic() > deadline:
                return series
            time.sleep(0.1)


PROMETHEUS = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")


class Prometheus(_Daemon):
    """A Prometheus server (Debian's package) scraping loopback targets.

    Its configuration, rule files and TSDB live in a temporary directory; it
    listens on a free port of 127.0.0.1 and never reads the system's
    /etc/prometheus or /var/lib/prometheus.
    """

    def __init__(self, jobs: dict, scrape_interval: str = "1s",
                 rule_files: Optional[List[Path]] = None) -> None:
        self.jobs = jobs  # {job name: ["127.0.0.1:PORT", ...]}
        self.scrape_interval = scrape_interval
        self.rule_files = list(rule_files or ())
        self.port = 0

    def start(self, timeout: float = 30) -> Prometheus:
        self.root = Path(tempfile.mkdtemp(prefix="ame-prometheus-"))
        self.port = free_port()
        jobs = "".join(
            f"""  - job_name: {json.dumps(job)}
    static_configs:
      - targets: {json.dumps(targets)}
""" for job, targets in self.jobs.items())
        rules = "".join(f"  - {json.dumps(str(p))}\n" for p in self.rule_files)
        conf = self.root / "prometheus.yml"
        conf.write_text(f"""global:
  scrape_interval: {self.scrape_interval}
  scrape_timeout: {self.scrape_interval}
  evaluation_interval: {self.scrape_interval}
rule_files:
{rules or "  []"}
scrape_configs:
{jobs}""")
        self._spawn([PROMETHEUS, f"--config.file={conf}",
                     f"--storage.tsdb.path={self.root}/data",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     "--log.level=warn"], self.root / "prometheus.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        log = self.log()[-2000:]
        self.stop()
        raise RuntimeError(f"prometheus did not start: {log}")

    def log(self) -> str:
        try:
            return (self.root / "prometheus.log").read_text()
        except (OSError, TypeError):
            return ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params) -> dict:
        """The ``data`` of a successful /api/v1 answer; an error raises with its text."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
                answer = json.load(r)
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read().decode(errors="replace") or "{}")
        if answer.get("status") != "success":
            raise AssertionError(f"/api/v1/{path} {params}: {answer.get('error', answer)}")
        return answer["data"]

    def query(self, expr: str, at: Optional[float] = None) -> list:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", **params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                        step=str(step))["result"]
