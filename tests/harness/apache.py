"""A private Apache httpd for tests and the demo.

Each instance gets its own ServerRoot in a fresh temporary directory, listens on
a free port on 127.0.0.1 only, and is always stopped by signalling the process
tree it started (never anything else). The system's Apache configuration and
ports 80/443 are never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import psutil

APACHE_BIN = os.environ.get("APACHE_BIN", "/usr/sbin/apache2")
MODULES = os.environ.get("APACHE_MODULES", "/usr/lib/apache2/modules")
MPMS = ("prefork", "worker", "event")

# Group names: "example" fits Debian's 17-character argv[0]; the long one does
# not, so its process title is cut and the collector must say so.
WSGI_GROUP = "example"
WSGI_LONG_GROUP = "reporting-backend"

WSGI_APP = r'''
import ctypes, os, time
from urllib.parse import parse_qs

HOG = []

def application(environ, start_response):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    if "ignore_term" in q:
        # A worker that ignores SIGTERM (libc's signal(): any thread may call it).
        ctypes.CDLL(None).signal(15, ctypes.c_void_p(1))
    if "sleep" in q:
        time.sleep(float(q["sleep"][0]))
    if "hold" in q:
        # Hold this worker until the test creates the release file (or for at
        # most "hold" seconds): saturation tests end the slow requests when
        # they choose, not after a guessed time.
        release = os.path.join(environ["DOCUMENT_ROOT"], "release")
        end = time.monotonic() + float(q["hold"][0])
        while not os.path.exists(release) and time.monotonic() < end:
            time.sleep(0.02)
    if "burn" in q:
        # Use this much CPU (in the serving process: an Apache worker when embedded).
        end = time.process_time() + float(q["burn"][0])
        while time.process_time() < end:
            pass
    if "hog" in q:
        # Touch every page so the memory is really resident.
        HOG.append(bytearray(b"x" * (int(q["hog"][0]) * 1024 * 1024)))
    group = environ.get("mod_wsgi.process_group", "")
    body = ("pid=%d group=%s\n" % (os.getpid(), group)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

MPM_CONF = {
    "prefork": """
StartServers 2
MinSpareServers 2
MaxSpareServers 4
MaxRequestWorkers 10
ServerLimit 10
""",
    "worker": """
StartServers 2
ServerLimit 4
ThreadsPerChild 5
ThreadLimit 5
MaxRequestWorkers 20
MinSpareThreads 5
MaxSpareThreads 15
""",
    "event": """
StartServers 2
ServerLimit 4
ThreadsPerChild 5
ThreadLimit 5
MaxRequestWorkers 20
MinSpareThreads 5
MaxSpareThreads 15
""",
}


def small_mpm_conf(mpm: str, workers: int) -> str:
    """An MPM configuration with exactly ``workers`` workers, all started at
    once and never more: a few slow requests hold every one of them."""
    if mpm == "prefork":
        return f"""
StartServers {workers}
MinSpareServers 1
MaxSpareServers {workers}
MaxRequestWorkers {workers}
ServerLimit {workers}
"""
    return f"""
StartServers 1
ServerLimit 1
ThreadsPerChild {workers}
ThreadLimit {workers}
MaxRequestWorkers {workers}
MinSpareThreads 1
MaxSpareThreads {workers}
"""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApacheServer:
    """A throwaway Apache httpd; use as a context manager or call start/stop."""

    def __init__(self, mpm: str = "prefork", extended_status: bool = True,
                 wsgi: bool = True, extra_conf: str = "", tls: bool = False,
                 proxy: bool = False, mpm_conf: Optional[str] = None,
                 client_auth: bool = False, workers: Optional[int] = None,
                 listen_backlog: Optional[int] = None,
                 status_require: str = "Require ip 127.0.0.1",
                 listen_all: bool = False, access_log: Optional[str] = None,
                 redirect: bool = False, status_module: bool = True) -> None:
        if mpm not in MPMS:
            raise ValueError(f"unknown MPM {mpm!r}")
        self.mpm = mpm
        self.extended_status = extended_status
        self.wsgi = wsgi
        self.extra_conf = extra_conf
        self.tls = tls          # also listen with mod_ssl (self-signed, session cache)
        self.proxy = proxy      # a mod_proxy_balancer with ProxyStatus On
        # workers: exactly that many (small_mpm_conf), for saturation tests;
        # listen_backlog: Apache's ListenBacklog (the accept queue's limit).
        self.mpm_conf = mpm_conf if mpm_conf is not None else \
            small_mpm_conf(mpm, workers) if workers else MPM_CONF[mpm]
        self.listen_backlog = listen_backlog
        self.client_auth = client_auth  # the TLS vhost requires a client certificate
        # The access rule of <Location /server-status>.
        self.status_require = status_require
        # False: no LoadModule status_module, the <Location>s kept (a
        # configuration whose SetHandler server-status does nothing).
        self.status_module = status_module
        # Listen on every address (a wildcard), not 127.0.0.1 only: only in a
        # network namespace of the test's own (tests/test_check.py).
        self.listen_all = listen_all
        # None: no access log; "all": every request logged to logs/access.log;
        # "excluded": the status page kept out of it (SetEnvIf + env=!dontlog).
        self.access_log = access_log
        # /moved-status answers 301 to /moved-status/, where the status page is.
        self.redirect = redirect
        self.root: Optional[Path] = None
        self.port = 0
        self.tls_port = 0
        self.proc: Optional[subprocess.Popen] = None

    # -- addresses -------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status_url(self) -> str:
        return f"{self.base_url}/server-status"

    @property
    def tls_status_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}/server-status"

    @property
    def cert_file(self) -> Path:
        """The server's self-signed certificate (use as --ca-file)."""
        assert self.root is not None
        return self.root / "tls" / "cert.pem"

    @property
    def pid_file(self) -> Path:
        assert self.root is not None
        return self.root / "run" / "apache2.pid"

    @property
    def error_log(self) -> Path:
        assert self.root is not None
        return self.root / "logs" / "error.log"

    # -- configuration ---------------------------------------------------
    def _config(self) -> str:
        root = self.root
        user = ""
        if os.geteuid() == 0:
            user = "User www-data\nGroup www-data\n"
        wsgi = ""
        if self.wsgi:
            wsgi = f"""
LoadModule wsgi_module {MODULES}/mod_wsgi.so
WSGISocketPrefix {root}/run/wsgi
WSGIRestrictSignal Off
WSGIDaemonProcess {WSGI_GROUP} display-name=%{{GROUP}} processes=2 threads=2 home={root}/app
WSGIDaemonProcess {WSGI_LONG_GROUP} display-name=%{{GROUP}} processes=1 threads=1 \\
    home={root}/app
WSGIScriptAlias /daemon {root}/app/app.wsgi process-group={WSGI_GROUP} application-group=%{{GLOBAL}}
WSGIScriptAlias /long {root}/app/app.wsgi \\
    process-group={WSGI_LONG_GROUP} application-group=%{{GLOBAL}}
WSGIScriptAlias /embedded {root}/app/app.wsgi application-group=%{{GLOBAL}}
<Directory {root}/app>
  Require all granted
</Directory>
"""
        tls = ""
        if self.tls:
            tls = f"""
LoadModule socache_shmcb_module {MODULES}/mod_socache_shmcb.so
LoadModule ssl_module {MODULES}/mod_ssl.so
Listen 127.0.0.1:{self.tls_port} https
SSLSessionCache shmcb:{root}/run/ssl_scache(512000)
<VirtualHost 127.0.0.1:{self.tls_port}>
  SSLEngine on
  SSLCertificateFile {root}/tls/cert.pem
  SSLCertificateKeyFile {root}/tls/key.pem
  {"SSLVerifyClient require" if self.client_auth else ""}
  {f"SSLCACertificateFile {root}/tls/client.pem" if self.client_auth else ""}
</VirtualHost>
"""
        proxy = ""
        if self.proxy:
            proxy = f"""
LoadModule proxy_module {MODULES}/mod_proxy.so
LoadModule proxy_http_module {MODULES}/mod_proxy_http.so
LoadModule proxy_balancer_module {MODULES}/mod_proxy_balancer.so
LoadModule slotmem_shm_module {MODULES}/mod_slotmem_shm.so
LoadModule lbmethod_byrequests_module {MODULES}/mod_lbmethod_byrequests.so
ProxyStatus On
<Proxy balancer://app>
  BalancerMember http://127.0.0.1:{self.port}
  BalancerMember http://localhost:{self.port}
</Proxy>
ProxyPass /app/ balancer://app/
"""
        log = ""
        if self.access_log:
            log = f"""
LoadModule setenvif_module {MODULES}/mod_setenvif.so
LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
SetEnvIf Request_URI "^/server-status" dontlog
CustomLog {root}/logs/access.log combined{" env=!dontlog" if self.access_log == "excluded" else ""}
"""
        moved = ""
        if self.redirect:
            moved = f"""
LoadModule alias_module {MODULES}/mod_alias.so
RedirectMatch 301 ^/moved-status$ http://127.0.0.1:{self.port}/moved-status/
<Location /moved-status/>
  SetHandler server-status
  Require ip 127.0.0.1
</Location>
"""
        listen = str(self.port) if self.listen_all else f"127.0.0.1:{self.port}"
        return f"""# Generated by tests/harness/apache.py: a private test server.
ServerRoot {root}
ServerName 127.0.0.1
Listen {listen}
PidFile {root}/run/apache2.pid
DefaultRuntimeDir {root}/run
Mutex file:{root}/run default
ErrorLog {root}/logs/error.log
LogLevel warn
{f"ListenBacklog {self.listen_backlog}" if self.listen_backlog else ""}
{user}
LoadModule mpm_{self.mpm}_module {MODULES}/mod_mpm_{self.mpm}.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule authz_host_module {MODULES}/mod_authz_host.so
{f"LoadModule status_module {MODULES}/mod_status.so" if self.status_module else ""}
{self.mpm_conf}
KeepAlive On
ExtendedStatus {"On" if self.extended_status else "Off"}
DocumentRoot {root}/htdocs
<Directory {root}/htdocs>
  Require all granted
</Directory>
<Location /server-status>
  SetHandler server-status
  {self.status_require}
</Location>
<Location /denied-status>
  SetHandler server-status
  Require all denied
</Location>
{wsgi}
{tls}
{proxy}
{log}
{moved}
{self.extra_conf}
"""

    # -- life cycle ------------------------------------------------------
    def start(self, timeout: float = 20.0) -> ApacheServer:
        """Start Apache and return once the status page and WSGI daemons answer."""
        self.root = Path(tempfile.mkdtemp(prefix=f"ame-apache-{self.mpm}-"))
        os.chmod(self.root, 0o755)  # workers run as www-data when we are root
        for sub in ("run", "logs", "htdocs", "app", "tls"):
            (self.root / sub).mkdir(mode=0o755)
        if self.tls:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(self.root / "tls" / "key.pem"),
                 "-out", str(self.root / "tls" / "cert.pem")],
                check=True, capture_output=True)
            if self.client_auth:
                subprocess.run(
                    ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                     "-subj", "/CN=monitoring-client",
                     "-keyout", str(self.root / "tls" / "client.key"),
                     "-out", str(self.root / "tls" / "client.pem")],
                    check=True, capture_output=True)
        os.chmod(self.root / "run", 0o755)
        (self.root / "htdocs" / "index.html").write_text(
            "<html><head><title>hello</title></head><body>hello</body></html>\n")
        (self.root / "app" / "app.wsgi").write_text(WSGI_APP)
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            self.tls_port = free_port() if self.tls else 0
            conf = self.root / "httpd.conf"
            conf.write_text(self._config())
            self.proc = subprocess.Popen(
                [APACHE_BIN, "-d", str(self.root), "-f", str(conf), "-DFOREGROUND"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(self.root / "logs" / "stderr.log", "ab"),
                start_new_session=True,
            )
            if self._wait_ready(timeout):
                return self
            last_error = self._log_tail()
            self._kill_tree()
        raise RuntimeError(f"private Apache ({self.mpm}) did not start: {last_error}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.status_url + "?auto", timeout=2) as r:
                    if r.status == 200 and (not self.wsgi or self._wsgi_ready()):
                        break
            except urllib.error.HTTPError:
                if not self.status_module and (not self.wsgi or self._wsgi_ready()):
                    break  # its 404 is the answer: Apache serves
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        else:
            return False
        if self.wsgi:  # the daemon groups must really serve, not just exist
            try:
                for path in ("/daemon", "/long"):
                    self.get(path, timeout=max(1.0, deadline - time.monotonic()))
            except (urllib.error.URLError, OSError):
                return False
        return True

    def _wsgi_ready(self) -> bool:
        names = [p.info["cmdline"][0] for p in self.children()
                 if p.info.get("cmdline")]
        return sum(1 for n in names if n.startswith("(wsgi:")) >= 3

    def children(self) -> list:
        """Direct children of the Apache parent (workers and WSGI daemons)."""
        if self.proc is None:
            return []
        try:
            kids = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []
        out = []
        for k in kids:
            try:
                k.info = {"cmdline": k.cmdline()}
            except psutil.Error:
                continue
            out.append(k)
        return out

    def _log_tail(self) -> str:
        text = ""
        for name in ("error.log", "stderr.log"):
            try:
                text += (self.root / "logs" / name).read_text()[-2000:]
            except OSError:
                pass
        return text.strip()

    def _kill_tree(self) -> None:
        if self.proc is None:
            return
        try:
            tree = [psutil.Process(self.proc.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        for p in tree:
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        psutil.wait_procs(tree, timeout=5)
        self.proc = None

    def stop(self) -> None:
        """Stop Apache (only the tree we started) and remove its directory."""
        self._kill_tree()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def restart_stopped(self) -> None:
        """Stop Apache but keep its directory, so it can be started again."""
        self._kill_tree()

    def start_again(self, timeout: float = 20.0) -> None:
        """Start a stopped server again on the same port with the same config."""
        assert self.root is not None and self.proc is None
        self.proc = subprocess.Popen(
            [APACHE_BIN, "-d", str(self.root), "-f", str(self.root / "httpd.conf"),
             "-DFOREGROUND"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.root / "logs" / "stderr.log", "ab"), start_new_session=True)
        if not self._wait_ready(timeout):
            raise RuntimeError(f"private Apache did not start again: {self._log_tail()}")

    def __enter__(self) -> ApacheServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- traffic ---------------------------------------------------------
    @property
    def release_file(self) -> Path:
        """Creating it ends every ``?hold=`` request of the WSGI app."""
        assert self.root is not None
        return self.root / "htdocs" / "release"

    def get(self, path: str, timeout: float = 10.0) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as r:
            return r.read()
