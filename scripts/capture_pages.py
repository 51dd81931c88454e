"""Capture real mod_status pages from private Apache servers into tests/data/.

For each MPM (prefork, worker, event) and ExtendedStatus On/Off: start the
private test Apache (tests/harness/apache.py), send traffic to static, embedded
WSGI and mod_wsgi daemon URLs, keep one slow request in flight, then save the
``?auto`` page and the HTML page; then prefork and event under a
slowloris-style client. Run with the project's virtualenv:

    .venv/bin/python scripts/capture_pages.py
    .venv/bin/python scripts/capture_pages.py --slowloris   # only those
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.harness.apache import MPMS, ApacheServer  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data")


def apache_version() -> str:
    out = subprocess.run(["/usr/sbin/apache2", "-v"], capture_output=True, text=True).stdout
    return out.split("Apache/")[1].split()[0]


def capture(mpm: str, extended: bool, version: str, tls_proxy: bool = False) -> None:
    with ApacheServer(mpm, extended_status=extended, tls=tls_proxy, proxy=tls_proxy) as apache:
        for _ in range(3):
            for path in ("/index.html", "/embedded", "/daemon", "/long"):
                apache.get(path)
            if tls_proxy:
                apache.get("/app/index.html")
                ctx = ssl.create_default_context(cafile=str(apache.cert_file))
                urllib.request.urlopen(apache.tls_status_url, context=ctx).read()
        slow = threading.Thread(target=apache.get, args=("/embedded?sleep=2",))
        slow.start()
        time.sleep(1.2)  # the slow request is now 1 s into its worker
        stem = f"{version}-{mpm}-ext-{'on' if extended else 'off'}"
        if tls_proxy:
            stem = f"{version}-{mpm}-tls-proxy"
        for suffix, url in (("auto.txt", apache.status_url + "?auto"),
                            ("html", apache.status_url)):
            with urllib.request.urlopen(url) as r:
                body = r.read()
            with open(os.path.join(DATA, f"{stem}.{suffix}"), "wb") as fh:
                fh.write(body)
            print(f"saved tests/data/{stem}.{suffix} ({len(body)} bytes)")
        slow.join()


def capture_slowloris(mpm: str, version: str) -> None:
    """A page under a slowloris-style client (docs/insight.md): 4 connections
    from 127.0.0.3 sending a header line a second, beside one ordinary request
    from 127.0.0.2 sleeping 4 s, both 2 s old at capture time."""
    import http.client

    from tests.harness.slowloris import Slowloris

    def ordinary() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", apache.port, timeout=30,
                                          source_address=("127.0.0.2", 0))
        conn.request("GET", "/embedded?sleep=4")
        conn.getresponse().read()
        conn.close()

    with ApacheServer(mpm) as apache:
        apache.get("/index.html")
        slow = threading.Thread(target=ordinary)
        with Slowloris(apache.port, connections=4, threads=2, source="127.0.0.3"):
            slow.start()
            time.sleep(2)
            stem = f"{version}-{mpm}-slowloris"
            for suffix, url in (("auto.txt", apache.status_url + "?auto"),
                                ("html", apache.status_url)):
                with urllib.request.urlopen(url) as r:
                    body = r.read()
                with open(os.path.join(DATA, f"{stem}.{suffix}"), "wb") as fh:
                    fh.write(body)
                print(f"saved tests/data/{stem}.{suffix} ({len(body)} bytes)")
        slow.join()


def main() -> int:
    version = apache_version()
    if sys.argv[1:] == ["--slowloris"]:  # only these (the others stay as captured)
        for mpm in ("prefork", "event"):
            capture_slowloris(mpm, version)
        return 0
    for mpm in MPMS:
        for extended in (True, False):
            capture(mpm, extended, version)
    capture("event", True, version, tls_proxy=True)
    for mpm in ("prefork", "event"):
        capture_slowloris(mpm, version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
