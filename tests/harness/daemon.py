"""A private Apache that daemonises, as on a real host.

The original apache-manager finds Apache's parent as a child of PID 1 named
``apache2``; the foreground server of :mod:`tests.harness.apache` is a child
of the test, so it would not be found. This variant starts the same private
configuration (own ServerRoot in a temporary directory, a free loopback port)
with ``apache2 -k start``: httpd forks, the launcher exits and the parent is
re-parented to PID 1. It is still stopped by signalling only the tree it
started (its process group: httpd calls setsid when it daemonises), with a
SIGKILL for what survives.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import psutil

from tests.harness.apache import APACHE_BIN, WSGI_APP, ApacheServer, free_port


class _Daemon:
    """The handle ApacheServer keeps in ``proc``, for a process that is not our child."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._proc = psutil.Process(pid)

    def poll(self) -> Optional[int]:
        try:
            if self._proc.is_running() and self._proc.status() != psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            pass
        return 0

    def wait(self, timeout: Optional[float] = None) -> int:
        try:
            self._proc.wait(timeout)
        except psutil.TimeoutExpired:
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0) from None
        except psutil.NoSuchProcess:
            pass
        return 0


class DaemonApacheServer(ApacheServer):
    """ApacheServer whose parent is a daemon (child of PID 1)."""

    def start(self, timeout: float = 20.0) -> DaemonApacheServer:
        if self.tls or self.client_auth:
            raise ValueError("the daemonised variant has no TLS set-up")
        self.root = Path(tempfile.mkdtemp(prefix=f"ame-apached-{self.mpm}-"))
        os.chmod(self.root, 0o755)  # workers run as www-data when we are root
        for sub in ("run", "logs", "htdocs", "app", "tls"):
            (self.root / sub).mkdir(mode=0o755)
        (self.root / "htdocs" / "index.html").write_text("<html><body>hello</body></html>\n")
        (self.root / "app" / "app.wsgi").write_text(WSGI_APP)
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            conf = self.root / "httpd.conf"
            conf.write_text(self._config())
            with open(self.root / "logs" / "stderr.log", "ab") as err:
                launcher = subprocess.run(
                    [APACHE_BIN, "-d", str(self.root), "-f", str(conf), "-k", "start"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    start_new_session=True, timeout=timeout)
            pid = self._daemon_pid(timeout) if launcher.returncode == 0 else None
            if pid is not None:
                self.proc = _Daemon(pid)  # type: ignore[assignment]
                if self._wait_ready(timeout):
                    return self
            last_error = self._log_tail()
            self._kill_tree()
        raise RuntimeError(f"daemonised private Apache ({self.mpm}) did not start: "
                           f"{last_error}")

    def _daemon_pid(self, timeout: float) -> Optional[int]:
        """The daemon's PID from its PID file, once it is a child of PID 1."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = int(self.pid_file.read_text().strip())
                proc = psutil.Process(pid)
                if proc.ppid() == 1 and proc.cwd() is not None:
                    return pid
            except (OSError, ValueError, psutil.Error):
                pass
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        """Stop Apache (only the process group it started) and remove its directory."""
        if self.proc is None and self.root is not None:
            # A start that failed half-way: the PID file names what to stop.
            pid = self._daemon_pid(0.5)
            if pid is not None:
                self.proc = _Daemon(pid)  # type: ignore[assignment]
        super().stop()
