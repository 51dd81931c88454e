"""Secrets never shown or kept in any form (issue 19).

A status server, a proxy or InfluxDB may echo the Authorization header in its
reason phrase or error body. Here a real echoing HTTP server on loopback does
exactly that, in every form (the header, its base64 with and without padding,
``user:password``, the password raw, percent-encoded and as Latin-1-misread
UTF-8), and the exporter (one-shot, ``--listen`` at ``-vv``), apache-manager
and the InfluxDB push must show none of it on stderr or stdout, nor keep it in
any file of the spool or quarantine.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List
from urllib.parse import quote, quote_plus

import pytest

from apache_metrics_exporter import scrub
from tests.conftest import exporter_env, run_exporter
from tests.harness.apache import free_port

USER = "monitor"
# ':' '/' '+' '%' ' ' and a non-ASCII letter: every encoding differs from the raw form.
PASSWORD = "s3cr:et/Pa+ss %wörd"
TOKEN = "tok-9c1f/e+7b2a"
INFLUX_USER = "writer"
INFLUX_PASSWORD = "influx-pw:73/+ü"
EXPORTER = os.path.join(os.path.dirname(sys.executable), "apache-metrics-exporter")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def lower_hex(text: str) -> str:
    """Percent-escapes in lower case (``%2f``), as some clients write them."""
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def forms(secret: str, user: str | None = None) -> List[str]:
    """Every form of ``secret`` (and of ``user:secret``) that must not appear."""
    out = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret),
           lower_hex(quote(secret, safe="")), secret.encode().decode("latin-1")}
    if user:
        pair = f"{user}:{secret}"
        encoded = b64(pair)
        out |= {pair, quote(pair, safe=""), encoded.rstrip("="),
                encoded.rstrip("=").replace("+", "-").replace("/", "_")}
    else:
        out.add(b64(secret).rstrip("="))  # a token sent as basic auth
    return sorted(out)


def echoes(header: str) -> str:
    """What the echoing server repeats back: the header and every form of the
    credential in it."""
    scheme, _, credential = header.partition(" ")
    parts = [header, credential, credential.rstrip("="), quote(credential, safe="")]
    if scheme == "Basic":
        pair = base64.b64decode(credential).decode()
        secret = pair.partition(":")[2]
    else:
        pair, secret = "", credential
    for text in (pair, secret):
        if text:
            parts += [text, quote(text, safe=""), lower_hex(quote(text, safe="")),
                      quote_plus(text)]
    return " | ".join(p for p in parts if p)


def latin1(text: str) -> str:
    """``text`` as http.server puts it on the wire (Latin-1), its UTF-8 kept:
    the client reads UTF-8 bytes of a reason phrase as Latin-1."""
    return text.encode("utf-8").decode("latin-1")


class Echo(http.server.BaseHTTPRequestHandler):
    """Echoes the Authorization header (and every form of its credential) in
    the reason phrase and the body: GET answers 500 (or 302 to a URL with the
    credential as user information), POST (InfluxDB's write) answers the
    server's ``post_status`` with the echo as InfluxDB's JSON message (400) or
    as plain text (500)."""

    protocol_version = "HTTP/1.1"
    server: EchoServer

    def _echo(self) -> str:
        header = self.headers.get("Authorization", "")
        self.server.seen.append(header)
        return echoes(header) if header else "no credentials"

    def do_GET(self) -> None:  # noqa: N802
        text = self._echo()
        body = f"echoed: {text}\n".encode()
        if self.path.startswith("/redirect"):
            pair = base64.b64decode(self.headers["Authorization"].split()[1]).decode()
            self.send_response(302, latin1(f"Found {text}"))
            self.send_header("Location", f"http://{quote(pair, safe=':')}@127.0.0.1:9/"
                             "server-status")
        else:
            self.send_response(500, latin1(f"echo {text}"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        text = self._echo()
        status = self.server.post_status
        if status == 400:
            body = json.dumps({"code": "invalid", "message": f"rejected {text}"}).encode()
        else:
            body = f"proxy error, you sent {text}\n".encode()
        self.send_response(status, latin1(f"echo {text}"))
        self.send_header("Content-Type", "application/json" if status == 400 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class EchoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    post_status = 500

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Echo)
        self.seen: List[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def files_text(directory: Path) -> str:
    """Every file under ``directory``, names and contents."""
    out = []
    for path in sorted(directory.rglob("*")):
        out.append(str(path))
        if path.is_file():
            out.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


def assert_hidden(text: str, secrets: List[str]) -> None:
    for form in secrets:
        assert form not in text, f"{form!r} shown in:\n{text}"


HTTP_FORMS = forms(PASSWORD, USER)


# --- the scrubber on its own -----------------------------------------------------

@pytest.fixture
def clean_scrubber() -> Iterator[None]:
    scrub.reset()
    yield
    scrub.reset()


def test_every_form_of_a_registered_secret_is_replaced(clean_scrubber):
    scrub.add_credentials(USER, PASSWORD)
    basic = b64(f"{USER}:{PASSWORD}")
    text = echoes(f"Basic {basic}") + " | " + latin1(PASSWORD) + " | " + \
        basic.replace("=", "%3D") + " | " + basic.rstrip("=") + "="
    out = scrub.scrub(text)
    assert_hidden(out, HTTP_FORMS)
    assert "Basic ***" in out


def test_tokens_and_header_values_are_replaced(clean_scrubber):
    scrub.add_secret(TOKEN)
    out = scrub.scrub(f"Authorization: Token {TOKEN}; Bearer {quote(TOKEN, safe='')}; "
                      f"Basic {b64(TOKEN)}")
    assert_hidden(out, forms(TOKEN))
    assert out.count("***") == 3


def test_secret_headers_from_the_options_are_registered(clean_scrubber):
    scrub.add_header("Authorization", f"Basic {b64('ops:hunter2-long')}")
    scrub.add_header("X-Api-Key", "k3y-0f-the-api")
    scrub.add_header("Cookie", "a=1; session=c00kie-value-77")
    scrub.add_header("Host", "www.example.org")
    out = scrub.scrub("hunter2-long k3y-0f-the-api c00kie-value-77 www.example.org "
                      "ops%3Ahunter2-long")
    assert out == "*** *** *** www.example.org ***"


def test_url_userinfo_is_removed_from_any_url(clean_scrubber):
    assert scrub.scrub("see http://u:p@host:80/x?a=b@c and https://u@h/") == \
        "see http://***@host:80/x?a=b@c and https://***@h/"
    assert scrub.scrub("GET /probe?target=http%3A%2F%2Fu%3Ap%40127.0.0.1%3A80%2Fs HTTP/1.1") \
        == "GET /probe?target=http%3A%2F%2F***%40127.0.0.1%3A80%2Fs HTTP/1.1"
    assert scrub.scrub("mail admin@example.org, see http://host/a@b") == \
        "mail admin@example.org, see http://host/a@b"


def test_an_unknown_basic_credential_is_replaced_a_realm_is_not(clean_scrubber):
    assert scrub.scrub(f"Basic {b64('someone:else')}") == "Basic ***"
    assert scrub.scrub('Basic realm="x", Basic dGVzdA==') == 'Basic realm="x", Basic dGVzdA=='


def test_a_basic_header_echoed_percent_encoded_is_replaced(clean_scrubber):
    # Red-team: a peer that puts the whole header value in a URL (a login
    # redirect's query: Basic%20<base64>, or Basic+<base64>) had the base64
    # of user:password shown: the character before it (the 0 of %20, a +)
    # looked like more base64, so the standalone form did not match.
    scrub.add_credentials("monitor", "longsecretpassword")
    header = f"Basic {b64('monitor:longsecretpassword')}"
    for echoed in (quote(header, safe=""), quote_plus(header), lower_hex(quote(header, safe=""))):
        out = scrub.scrub(f"/login?was={echoed}&x=1")
        assert b64("monitor:longsecretpassword").rstrip("=") not in out, out
        assert out.startswith("/login?was=Basic") and out.endswith("&x=1"), out
    scrub.reset()  # not registered: the generic Basic credential form
    other = f"Basic {b64('someone:else-entirely')}"
    for echoed in (quote(other, safe=""), quote_plus(other)):
        assert b64("someone:else-entirely").rstrip("=") not in scrub.scrub(f"?was={echoed}")


def test_a_one_letter_password_is_replaced_only_in_its_composed_forms(clean_scrubber):
    """The rule for short secrets (docs/configuration.md): replacing every 'x'
    would garble the message and spell the password out."""
    scrub.add_credentials("admin", "x")
    message = (f"max-response-size exceeded: Basic {b64('admin:x')} admin:x "
               f"{b64('admin:x').rstrip('=')} Token x admin%3Ax xylophone")
    assert scrub.scrub(message) == ("max-response-size exceeded: Basic *** *** *** *** *** "
                                    "xylophone")


@pytest.mark.parametrize("shape", ["letters", "schemes", "encoded", "basic", "secrets"])
def test_scrubbing_is_linear_in_time(clean_scrubber, shape):
    """A peer's text can be long and shaped against the patterns (a URL scheme
    looked for from every letter of a long word was quadratic: 40 KB took 8 s)."""
    scrub.add_credentials(USER, PASSWORD)
    scrub.add_secret(TOKEN)
    text = {"letters": "a" * 200_000 + "@", "schemes": "http://" * 30_000,
            "encoded": "%3A%2F%2F" * 20_000, "basic": "Basic " + "A" * 200_000,
            "secrets": f"{PASSWORD} x " * 10_000}[shape]
    started = time.perf_counter()
    scrub.scrub(text)
    assert time.perf_counter() - started < 1.0


def test_nothing_registered_leaves_text_alone(clean_scrubber):
    text = "connection to 127.0.0.1:80 refused: is Apache running and listening there?"
    assert scrub.scrub(text) == text


# --- the commands against an echoing server ---------------------------------------

def http_env(tmp_path: Path) -> dict:
    return exporter_env(APACHE_METRICS_USER=USER,
                        APACHE_METRICS_PASSWORD_FILE=secret_file(tmp_path, "pw", PASSWORD))


@pytest.mark.parametrize("path", ["/server-status", "/redirect/server-status"])
def test_one_shot_run_shows_no_echoed_secret(echo, tmp_path, path):
    proc = run_exporter("--url", echo.url + path, "--no-processes", "--format", "text",
                        env=http_env(tmp_path))
    assert echo.seen and echo.seen[0].startswith("Basic "), "the server was not asked"
    assert "answered HTTP" in proc.stderr and "***" in proc.stderr, proc.stderr
    assert "***" in proc.stdout, proc.stdout  # the text summary says why it is DOWN
    assert_hidden(proc.stderr + proc.stdout, HTTP_FORMS)


def test_credentials_in_the_url_and_a_secret_header_are_not_echoed(echo, tmp_path):
    config = tmp_path / "exporter.conf"
    url = echo.url.replace("://", f"://{USER}:{quote(PASSWORD, safe='')}@")
    config.write_text(f"url = [{url}/server-status]\nheader = [X-Api-Key: {TOKEN}]\n")
    config.chmod(0o600)
    proc = run_exporter("-c", str(config), "--no-processes", "--format", "text", "-v")
    assert "answered HTTP 500" in proc.stderr, proc.stderr
    assert_hidden(proc.stderr + proc.stdout, HTTP_FORMS + forms(TOKEN))


def test_a_one_letter_password_is_hidden_and_messages_stay_whole(echo, tmp_path):
    env = exporter_env(APACHE_METRICS_USER="admin", APACHE_METRICS_PASSWORD="x")
    proc = run_exporter("--url", echo.url + "/server-status", "--no-processes",
                        "--format", "text", env=env)
    assert echo.seen == [f"Basic {b64('admin:x')}"]
    assert f"{echo.url}/server-status?auto answered HTTP 500 echo" in proc.stderr, proc.stderr
    assert_hidden(proc.stderr + proc.stdout, [b64("admin:x").rstrip("="), "admin:x",
                                              "admin%3Ax"])


def test_apache_manager_shows_no_echoed_secret(echo, tmp_path):
    env = http_env(tmp_path)
    env["APACHE_MANAGER_INI"] = ""
    data = tmp_path / "metrics.txt"
    for args in (["-c", "-f", str(data)], []):
        proc = subprocess.run(
            [sys.executable, "-m", "apache_metrics_exporter.manager", "--url",
             echo.url + "/server-status", *args],
            capture_output=True, text=True, timeout=60, env=env)
        assert "answered HTTP 500" in proc.stderr, proc.stderr
        assert_hidden(proc.stderr + proc.stdout, HTTP_FORMS)
    assert "status-response\t1" in data.read_text()
    assert_hidden(data.read_text(), HTTP_FORMS)


@contextmanager
def listening(*args: str, env: dict) -> Iterator[str]:
    """An exporter answering scrapes at -vv; yields its base URL, then its stderr
    is in the returned list's only item once stopped."""
    port = free_port()
    proc = subprocess.Popen([EXPORTER, "--listen", f"127.0.0.1:{port}", "-vv", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.02)
    output: List[str] = []
    try:
        yield f"http://127.0.0.1:{port}", output
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        output += [out, err]


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_listen_and_probe_at_debug_level_show_no_secret(echo, tmp_path):
    stranger = "probe-secret-4711"  # a scraper's own credential, not ours
    with listening("--url", echo.url + "/server-status", "--probe-allow",
                   "http://127.0.0.1:*/server-status", env=http_env(tmp_path)) as (base, out):
        assert get(base + "/metrics") == 200
        assert get(base + "/probe?target=" + echo.url + "/server-status") == 200
        refused = echo.url.replace("://", f"://someone:{stranger}@") + "/server-status"
        assert get(base + "/probe?target=" + quote(refused, safe="")) == 403
        assert get(base + "/probe?target=" + refused) == 403
    stderr = out[1]
    assert "GET /probe?target=" in stderr and "answered HTTP 500" in stderr, stderr
    assert stderr.count("403") >= 2
    assert_hidden("".join(out), HTTP_FORMS + [stranger])


# --- the InfluxDB push ---------------------------------------------------------------

PUSH_CASES = {
    "basic": (["--influxdb-username", INFLUX_USER, "--influxdb-auth-basic"],
              "influxdb-password-file", INFLUX_PASSWORD, forms(INFLUX_PASSWORD, INFLUX_USER)),
    "token": ([], "influxdb-token-file", TOKEN, forms(TOKEN)),
    "token-basic": (["--influxdb-auth-basic"], "influxdb-token-file", TOKEN, forms(TOKEN)),
}


@pytest.mark.parametrize("status", [400, 500])
@pytest.mark.parametrize("case", sorted(PUSH_CASES))
def test_influxdb_push_shows_and_keeps_no_echoed_secret(echo, tmp_path, case, status):
    extra, option, secret, hidden = PUSH_CASES[case]
    echo.post_status = status
    spool = tmp_path / "spool"
    proc = run_exporter(
        "--url", echo.url + "/server-status", "--no-processes", "--format", "influxdb",
        "--influxdb-url", echo.url, "--influxdb-org", "-", "--influxdb-bucket", "db/rp",
        "--spool-dir", str(spool), *extra, f"--{option}", secret_file(tmp_path, "s", secret),
        env=http_env(tmp_path))
    assert any(h != echo.seen[0] for h in echo.seen), "the push did not reach the server"
    assert f"answered HTTP {status}" in proc.stderr and "***" in proc.stderr, proc.stderr
    if status == 400:
        errors = list((spool / "quarantine").glob("*.error"))
        assert errors and "***" in errors[0].read_text()
    else:
        assert list(spool.glob("*.lp")), "the batch was not spooled"
    assert_hidden(proc.stderr + proc.stdout + files_text(spool), hidden + HTTP_FORMS)


def test_page_notes_in_the_text_summary_show_no_secret(clean_scrubber):
    # A warning built from page content (a balancer member's name, a vhost)
    # reaches stdout as a "note:" line of the summary, not only stderr.
    from apache_metrics_exporter.writers import text
    from tests.test_tab import example_snapshot

    scrub.add_credentials(USER, PASSWORD)
    snap = example_snapshot()
    snap.warnings.append(f"balancer member http://{USER}:{PASSWORD}@10.0.0.1/ "
                         f"listed twice (Basic {b64(f'{USER}:{PASSWORD}')})")
    notes = [ln for ln in text.render([snap]).splitlines() if ln.startswith("note:")]
    assert notes and "listed twice" in notes[-1]
    assert PASSWORD not in notes[-1] and b64(f"{USER}:{PASSWORD}") not in notes[-1]


def test_an_influxdb_ca_file_that_is_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)
    proc = run_exporter("--url", "http://127.0.0.1:9/server-status", "--no-processes",
                        "--format", "influxdb", "--influxdb-url", "https://127.0.0.1:9",
                        "--influxdb-org", "o", "--influxdb-bucket", "b",
                        "--influxdb-ca-file", str(fifo), timeout=15)
    assert proc.returncode == 2, proc.stderr
    assert f"--influxdb-ca-file {fifo} is not a regular file" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
