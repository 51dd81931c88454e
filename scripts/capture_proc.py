"""Capture the parts of /proc the process reader uses, for one private Apache tree.

For each MPM given (default: prefork and event) this starts the private test
Apache of tests/harness/apache.py (mod_wsgi daemon groups ``example`` with two
processes and ``reporting-backend``, whose name the 17-character process title
cuts), a second small Apache on another port that also listens on ``[::1]``
(the decoy tree), and a non-Apache process listening on a loopback port whose
name has spaces and parentheses. It then turns one native worker of the main
tree into a zombie (the parent is stopped with SIGSTOP, the worker SIGKILLed,
the parent continued after the capture) and copies, for those processes and
this script's own process (the main parent's parent):

- ``PID/stat``, ``PID/cmdline``, ``PID/statm``, ``PID/smaps_rollup``;
- ``PID/task/TID/children`` (the main thread, and every thread with children);
- ``PID/fd/N`` as symlinks to ``socket:[INODE]``, ``pipe:[N]`` or
  ``anon_inode:...`` (links to files are left out);
- ``net/tcp`` and ``net/tcp6``: the header and the rows of sockets the
  captured processes hold (every other socket of the machine is left out);
- ``stat``: only its ``btime`` line.

into ``tests/data/proc-<mpm>-wsgi-decoy/``, with ``capture.json`` (what psutil
said about each process at the moment of the capture, the roles, ports, page
size and clock ticks), the main server's ``httpd.conf`` under ``serverroot/``
and a README.md of provenance. The temporary ServerRoots are rewritten to fixed
placeholders (``/tmp/ame-apache-<mpm>-CAPTURED``, ``...-DECOY``, the stranger's
``/tmp/ame-capture-proc-CAPTURED``), this script's
command line to ``python3 scripts/capture_proc.py``. Run with the project's
virtualenv, as root (Apache's workers then run as www-data, as in production)
or as any user (they run as that user); either way their smaps_rollup is
readable:

    .venv/bin/python scripts/capture_proc.py [prefork] [event]
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.harness.apache import ApacheServer  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data")
STRANGER_NAME = "a b) (c"  # a process name /proc/PID/stat must be parsed with care
KEPT_LINKS = ("socket:[", "pipe:[", "anon_inode:")

STRANGER = """
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()  # until the capture closes our stdin
"""


class DecoyApache(ApacheServer):
    """The test Apache without mod_wsgi, listening on 127.0.0.1 and [::1]."""

    def _config(self) -> str:
        return super()._config() + f"\nListen [::1]:{self.port}\n"


def apache_version() -> str:
    out = subprocess.run(["/usr/sbin/apache2", "-v"], capture_output=True, text=True).stdout
    return out.split("Apache/")[1].split()[0]


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


class Capture:
    def __init__(self, out: str, scrub: dict) -> None:
        self.out = out
        self.scrub = scrub  # bytes -> bytes, applied to command lines
        self.pids: list = []
        self.inodes: set = set()

    def process(self, pid: int, cmdline: bytes | None = None) -> None:
        src, dst = f"/proc/{pid}", os.path.join(self.out, str(pid))
        self.pids.append(pid)
        for name in ("stat", "statm", "smaps_rollup"):
            data = read(f"{src}/{name}")
            if data is not None:
                write(f"{dst}/{name}", data)
        data = cmdline if cmdline is not None else read(f"{src}/cmdline") or b""
        for old, new in self.scrub.items():
            data = data.replace(old, new)
        write(f"{dst}/cmdline", data)
        try:
            fds = os.listdir(f"{src}/fd")
        except OSError:
            fds = []  # a zombie has none
        for fd in fds:
            try:
                link = os.readlink(f"{src}/fd/{fd}")
            except OSError:
                continue
            if link.startswith(KEPT_LINKS):
                os.makedirs(f"{dst}/fd", exist_ok=True)
                os.symlink(link, f"{dst}/fd/{fd}")
                if link.startswith("socket:["):
                    self.inodes.add(int(link[8:-1]))

    def children_lists(self) -> None:
        """task/TID/children, once every process is known (lists are cut to
        the captured processes)."""
        wanted = set(self.pids)
        for pid in self.pids:
            try:
                tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
            except OSError:
                continue
            for tid in tids:
                data = read(f"/proc/{pid}/task/{tid}/children")
                if data is None:
                    continue
                kept = [c for c in data.split() if int(c) in wanted]
                if tid == str(pid) or kept:
                    text = b"".join(c + b" " for c in kept)
                    write(os.path.join(self.out, str(pid), "task", tid, "children"), text)

    def tables(self) -> None:
        for table in ("tcp", "tcp6"):
            lines = (read(f"/proc/net/{table}") or b"").decode("ascii").splitlines()
            rows = [ln for ln in lines[1:]
                    if len(ln.split()) > 9 and int(ln.split()[9]) in self.inodes]
            out = [lines[0]] if lines else []
            for n, row in enumerate(rows):  # renumber the kept rows from 0
                out.append(re.sub(r"^\s*\d+:", f"{n:4d}:", row))
            write(os.path.join(self.out, "net", table), ("\n".join(out) + "\n").encode())
        btime = [ln for ln in (read("/proc/stat") or b"").splitlines()
                 if ln.startswith(b"btime ")]
        write(os.path.join(self.out, "stat"), btime[0] + b"\n")


def psutil_view(pid: int) -> dict:
    p = psutil.Process(pid)
    with p.oneshot():
        view = {"name": p.name(), "ppid": p.ppid(), "status": p.status(),
                "create_time": p.create_time()}
        if view["status"] != psutil.STATUS_ZOMBIE:
            view["rss"] = p.memory_info().rss
    return view


def capture(mpm: str, version: str) -> str:
    stem = f"proc-{mpm}-wsgi-decoy"
    out = os.path.join(DATA, stem)
    tmp = tempfile.mkdtemp(prefix="ame-capture-proc-")
    main = ApacheServer(mpm).start()
    decoy = DecoyApache(mpm, wsgi=False, mpm_conf="StartServers 1\nServerLimit 2\n"
                        if mpm == "prefork" else "StartServers 1\nServerLimit 1\n"
                        "ThreadsPerChild 2\nThreadLimit 2\nMaxRequestWorkers 2\n"
                        "MinSpareThreads 1\nMaxSpareThreads 2\n").start()
    exe = os.path.join(tmp, STRANGER_NAME)
    os.symlink(sys.executable, exe)
    stranger = subprocess.Popen([exe, "-c", STRANGER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    stopped = False
    try:
        assert main.proc and main.root and decoy.proc and stranger.stdin and stranger.stdout
        main_proc, main_root, decoy_proc = main.proc, main.root, decoy.proc
        stranger_port = int(stranger.stdout.readline())
        for _ in range(3):
            for path in ("/index.html", "/embedded", "/daemon", "/long"):
                main.get(path)
        decoy.get("/index.html")
        parent = main_proc.pid
        kids = psutil.Process(parent).children()
        titles = {k.pid: k.cmdline()[0].rstrip(" \0") for k in kids}
        natives = sorted(pid for pid, t in titles.items() if not t.startswith("(wsgi:"))
        # A zombie in the tree: the stopped parent cannot reap the killed worker.
        os.kill(parent, signal.SIGSTOP)
        stopped = True
        zombie = natives[-1]
        os.kill(zombie, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while psutil.Process(zombie).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the killed worker never became a zombie"
            time.sleep(0.01)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(out)
        scrub = {str(main.root).encode(): f"/tmp/ame-apache-{mpm}-CAPTURED".encode(),
                 str(decoy.root).encode(): f"/tmp/ame-apache-{mpm}-DECOY".encode(),
                 tmp.encode(): b"/tmp/ame-capture-proc-CAPTURED"}
        cap = Capture(out, scrub)
        me = os.getpid()
        decoy_kids = [k.pid for k in psutil.Process(decoy_proc.pid).children()]
        roles = {
            "capture": [me],
            "parent": [parent],
            "native": [p for p in natives if p != zombie],
            "zombie": [zombie],
            "wsgi": sorted(pid for pid, t in titles.items() if t.startswith("(wsgi:")),
            "decoy_parent": [decoy_proc.pid],
            "decoy_child": sorted(decoy_kids),
            "stranger": [stranger.pid],
        }
        views = {pid: psutil_view(pid) for pids in roles.values() for pid in pids}
        cap.process(me, cmdline=b"python3\0scripts/capture_proc.py\0")
        for role, pids in roles.items():
            if role != "capture":
                for pid in pids:
                    cap.process(pid)
        cap.children_lists()
        cap.tables()
        os.kill(parent, signal.SIGCONT)
        stopped = False
        conf = main_root.joinpath("httpd.conf").read_bytes()
        for old, new in scrub.items():
            conf = conf.replace(old, new)
        write(os.path.join(out, "serverroot", "httpd.conf"), conf)
        meta = {
            "apache": version, "mpm": mpm, "date": datetime.date.today().isoformat(),
            "as_root": os.geteuid() == 0, "page_size": os.sysconf("SC_PAGE_SIZE"),
            "clock_ticks": os.sysconf("SC_CLK_TCK"),
            "port": main.port, "decoy_port": decoy.port, "stranger_port": stranger_port,
            "stranger_name": STRANGER_NAME,
            "server_root": f"/tmp/ame-apache-{mpm}-CAPTURED",
            "roles": roles, "titles": {str(p): titles[p] for p in sorted(titles)},
            "psutil": {str(p): v for p, v in sorted(views.items())},
        }
        with open(os.path.join(out, "capture.json"), "w") as fh:
            json.dump(meta, fh, indent=1, sort_keys=True)
            fh.write("\n")
        write(os.path.join(out, "README.md"), readme(meta, cap).encode())
        print(f"saved tests/data/{stem}/ ({len(cap.pids)} processes)")
        return stem
    finally:
        if stopped:
            os.kill(main_proc.pid, signal.SIGCONT)
        if stranger.stdin:
            stranger.stdin.close()
        stranger.wait(timeout=10)
        decoy.stop()
        main.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def readme(meta: dict, cap: Capture) -> str:
    r = meta["roles"]
    who = ("run as root: the workers ran as www-data" if meta["as_root"]
           else "run as an ordinary user: the workers ran as that user")
    return f"""# Captured /proc: Apache {meta['apache']}, {meta['mpm']} MPM

Captured on {meta['date']} by `scripts/capture_proc.py` ({who}) from
Apache/{meta['apache']} (Debian 12 package `apache2`) with mod_wsgi
(`libapache2-mod-wsgi-py3`), started through `tests/harness/apache.py`; page
size {meta['page_size']} bytes, {meta['clock_ticks']} clock ticks per second.
Only the files the process reader (`apache_metrics_exporter/collect/procfs.py`) reads
were copied, for {len(cap.pids)} processes; `capture.json` has the roles, ports
and what psutil said about each process at that moment.

- The main tree, `127.0.0.1:{meta['port']}`: parent {r['parent'][0]}
  (`ApacheServer("{meta['mpm']}")`), native workers {', '.join(map(str, r['native']))},
  mod_wsgi daemons {', '.join(map(str, r['wsgi']))} (group `example` x 2 and
  `reporting-backend`, whose title the 17 characters of `/usr/sbin/apache2`
  cut to `(wsgi:reporting-b`), and worker {r['zombie'][0]} made a zombie (the
  parent stopped with SIGSTOP, the worker SIGKILLed, the parent continued after
  the capture). Its `httpd.conf` is under `serverroot/`.
- A decoy Apache tree on `127.0.0.1:{meta['decoy_port']}` and `[::1]:{meta['decoy_port']}`
  (no mod_wsgi): parent {r['decoy_parent'][0]}, children
  {', '.join(map(str, r['decoy_child']))}.
- A non-Apache process named `{meta['stranger_name']}` (Python through a
  symlink), PID {r['stranger'][0]}, listening on `127.0.0.1:{meta['stranger_port']}`.
- The capture script itself, PID {r['capture'][0]}, the main parent's parent.

Per process: `stat`, `cmdline`, `statm`, `smaps_rollup` (what could be read:
a zombie has no memory maps), `task/TID/children` (the main thread and threads
with children), `fd/N` for sockets, pipes and anonymous inodes as symlinks to
the kernel's `socket:[INODE]`-style names. `net/tcp` and `net/tcp6`: the
header and only the rows of sockets these processes hold (rows renumbered).
`stat`: only the `btime` line.

Scrubbed: every other process and socket of the machine; links to files in
`fd/`; the temporary ServerRoots, rewritten to `{meta['server_root']}` and
`/tmp/ame-apache-{meta['mpm']}-DECOY` in command lines and in `httpd.conf`,
the stranger's temporary directory to `/tmp/ame-capture-proc-CAPTURED`;
the capture script's command line (`python3 scripts/capture_proc.py`).
Re-create with `.venv/bin/python scripts/capture_proc.py {meta['mpm']}` (PIDs,
ports and figures change; the tests read them from `capture.json`).
"""


def main(argv: list) -> int:
    """Capture the MPMs named in ``argv`` (default: prefork and event)."""
    version = apache_version()
    for mpm in argv or ["prefork", "event"]:
        capture(mpm, version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
