"""apache_exporter's whole interface (issue 22): its flags (Debian's 0.12 and
upstream 1.1), its environment, exporter-toolkit's web configuration, and the
endpoint's own process_* series - run through our endpoint unit as systemd
would run it, with Debian's own /etc/default/prometheus-apache-exporter."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from apache_metrics_exporter import config
from apache_metrics_exporter.errors import UsageError
from tests.conftest import exporter_env, prom_series
from tests.harness.apache import free_port
from tests.harness.apache_exporter import flags

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "systemd" / "apache-metrics-exporter-endpoint.service"
DEBIAN_DEFAULTS = Path("/etc/default/prometheus-apache-exporter")
DEBIAN_EXPORTER = "/usr/bin/prometheus-apache-exporter"
BINDIR = os.path.dirname(sys.executable)
EXPORTER = os.path.join(BINDIR, "apache-metrics-exporter")
DEAD_URL = "http://127.0.0.1:9/server-status"
PROCESS_SERIES = ("process_cpu_seconds_total", "process_resident_memory_bytes",
                  "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                  "process_start_time_seconds")


# --- helpers -----------------------------------------------------------------------------

def bcrypt_hash(password: str) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def self_signed(directory: Path, name: str = "server", san: str = "IP:127.0.0.1") -> tuple:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def web_config(directory: Path, text: str) -> Path:
    path = directory / "web-config.yml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def environment_file(path: Path) -> dict:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments,
    blank lines, one level of double or single quotes)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def unit_command(defaults: Path) -> tuple:
    """The endpoint unit's ExecStart as systemd runs it: Environment= first,
    then the EnvironmentFile (our copy of Debian's file) over it; ``$NAME``
    becomes the variable's words, ``${NAME}`` one word."""
    text = UNIT.read_text()
    env = dict(re.findall(r'^Environment="?(\w+)=(.*?)"?$', text, re.M))
    # Debian's file, then ours (the .deb installs it all commented out: it
    # changes nothing until the operator sets something there).
    env_files = re.findall(r"^EnvironmentFile=-?(.*)$", text, re.M)
    assert env_files == [str(DEBIAN_DEFAULTS), "/etc/default/apache-metrics-exporter-endpoint"]
    env.update(environment_file(defaults))
    (line,) = re.findall(r"^ExecStart=(.*)$", text, re.M)
    words = []
    for word in shlex.split(line):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            words.extend(env.get(whole.group(1), "").split())
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    assert words[0] == "/usr/local/bin/apache-metrics-exporter"
    return [EXPORTER, *words[1:]], env


def debian_defaults(tmp: Path, *lines: str) -> Path:
    """A copy of the file the installed package ships, its ARGS line (and
    any other) replaced by ``lines``; the shipped file is never touched."""
    if not DEBIAN_DEFAULTS.exists():
        pytest.skip("prometheus-apache-exporter is not installed (make deps)")
    shipped = DEBIAN_DEFAULTS.read_text()
    assert re.search(r'^ARGS=""$', shipped, re.M), shipped
    copy = tmp / "prometheus-apache-exporter"
    kept = [ln for ln in shipped.splitlines()
            if not any(ln.startswith(new.split("=", 1)[0] + "=") for new in lines)]
    copy.write_text("\n".join(kept + list(lines)) + "\n")
    return copy


class Endpoint:
    """A process answering scrapes; ready when every port accepts connections."""

    def __init__(self, argv: list, env: dict, ports: list) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**exporter_env(), **env})
        deadline = time.monotonic() + 15
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.proc.kill()
                        raise AssertionError(f"not listening on {port}: "
                                             f"{self.proc.communicate()[1]}") from None
                    time.sleep(0.02)

    def stop(self) -> tuple:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def get(url: str, user: str = "", password: str = "", context=None) -> tuple:
    headers = {}
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


# --- the endpoint unit with Debian's defaults file ----------------------------------------

@pytest.mark.integration
def test_debian_0_12_args_line_with_tls_and_bcrypt_basic_auth(prefork, tmp_path):
    cert, key = self_signed(tmp_path)
    web = web_config(tmp_path, f"""\
tls_server_config:
  cert_file: {cert.name}
  key_file: {key.name}
  min_version: TLS12
basic_auth_users:
  prom: '{bcrypt_hash("s3cret").replace("$2b$", "$2y$")}'
http_server_config:
  headers:
    X-Content-Type-Options: nosniff
""")
    port = free_port()
    defaults = debian_defaults(tmp_path, (
        f'ARGS="--telemetry.address=127.0.0.1:{port} --telemetry.endpoint=/metrics '
        f'--scrape_uri={prefork.status_url}?auto --web.config={web} --log.level=info '
        '--log.format=json --insecure --host_override=127.0.0.1"'))
    argv, env = unit_command(defaults)
    ep = Endpoint(argv, env, [port])
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{port}/metrics"
        assert get(base, context=ctx)[0] == 401
        assert get(base, "prom", "wrong", context=ctx)[0] == 401
        assert get(base, "nobody", "s3cret", context=ctx)[0] == 401
        code, body, headers = get(base, "prom", "s3cret", context=ctx)
        assert code == 200, body
        assert headers.get("X-Content-Type-Options") == "nosniff"
        values = prom_series(body)
        assert values["apache_up"] == 1
        for name in PROCESS_SERIES:
            assert name in values, name
        assert values["process_open_fds"] >= 3
        with pytest.raises(OSError):  # no plain HTTP on a TLS port
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        status, err = ep.stop()
    assert status == 0, err
    lines = err.splitlines()
    assert lines and "s3cret" not in err
    for line in lines:  # --log.format=json: every line one object
        assert set(json.loads(line)) == {"level", "msg", "ts"}, line
    assert any(json.loads(ln)["level"] == "info" for ln in lines)  # --log.level=info


@pytest.mark.integration
def test_upstream_1_1_flags_and_environment_in_the_defaults_file(prefork, tmp_path):
    first, second = free_port(), free_port()
    defaults = debian_defaults(
        tmp_path,
        f'ARGS="--web.listen-address=127.0.0.1:{first} --web.listen-address=127.0.0.1:{second} '
        '--log.format=logfmt --log.level=debug"',
        f"SCRAPE_URI={prefork.status_url}?auto", "METRICS_ENDPOINT=/m",
        "HOST_OVERRIDE=127.0.0.1", "INSECURE=T")
    argv, env = unit_command(defaults)
    ep = Endpoint(argv, env, [first, second])
    try:
        for port in (first, second):
            code, body, _ = get(f"http://127.0.0.1:{port}/m")
            assert code == 200 and prom_series(body)["apache_up"] == 1, body
        assert get(f"http://127.0.0.1:{first}/metrics")[0] == 404  # METRICS_ENDPOINT moved it
    finally:
        status, err = ep.stop()
    assert status == 0, err
    assert re.search(r"^ts=\S+Z level=info msg=\"listening on http://127\.0\.0\.1:"
                     f"{second}/m for http://127\\.0\\.0\\.1:\\d+/server-status\"$", err,
                     re.M), err
    assert re.search(r"^ts=\S+ level=debug msg=", err, re.M), err  # --log.level=debug


@pytest.mark.integration
def test_the_shipped_defaults_file_unchanged(prefork, tmp_path):
    # ARGS="" as shipped: the unit's own address (here moved by the file, as an
    # operator would) and SCRAPE_URI from the file.
    port = free_port()
    defaults = debian_defaults(tmp_path, f"APACHE_METRICS_LISTEN=127.0.0.1:{port}",
                               f"SCRAPE_URI={prefork.status_url}")
    assert 'ARGS=""' in defaults.read_text()
    argv, env = unit_command(defaults)
    assert argv == [EXPORTER]
    ep = Endpoint(argv, env, [port])
    try:
        code, body, _ = get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200 and prom_series(body)["apache_up"] == 1
    finally:
        status, err = ep.stop()
    assert status == 0, err


@pytest.mark.integration
def test_client_certificates_and_allowed_sans(prefork, tmp_path):
    cert, key = self_signed(tmp_path)
    client_cert, client_key = self_signed(tmp_path, "client")
    other_cert, other_key = self_signed(tmp_path, "other", "DNS:other.example")
    cas = tmp_path / "client-cas.pem"  # both clients verify; only one has an allowed SAN
    cas.write_text(client_cert.read_text() + other_cert.read_text())
    web = web_config(tmp_path, f"""\
tls_server_config:
  cert_file: {cert}
  key_file: {key}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {cas.name}
  client_allowed_sans: ["127.0.0.1"]
""")
    port = free_port()
    ep = Endpoint([EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--web.config.file",
                   str(web), "--scrape_uri", prefork.status_url], {}, [port])
    try:
        url = f"https://127.0.0.1:{port}/metrics"
        anonymous = ssl.create_default_context(cafile=str(cert))
        with pytest.raises(OSError):  # no client certificate: no answer
            get(url, context=anonymous)
        other = ssl.create_default_context(cafile=str(cert))
        other.load_cert_chain(str(other_cert), str(other_key))
        with pytest.raises(OSError):  # verified, but none of client_allowed_sans
            get(url, context=other)
        known = ssl.create_default_context(cafile=str(cert))
        known.load_cert_chain(str(client_cert), str(client_key))
        code, body, _ = get(url, context=known)
        assert code == 200 and prom_series(body)["apache_up"] == 1
    finally:
        status, err = ep.stop()
    assert status == 0, err


@pytest.mark.integration
@pytest.mark.skipif(not os.path.exists(DEBIAN_EXPORTER), reason="prometheus-apache-exporter "
                    "is not installed (make deps)")
def test_one_web_config_file_serves_both_exporters_alike(prefork, tmp_path):
    # The file an apache_exporter user has works unchanged here, and means the same.
    cert, key = self_signed(tmp_path)
    web = web_config(tmp_path, f"""\
tls_server_config:
  cert_file: {cert.name}
  key_file: {key.name}
basic_auth_users:
  prom: '{bcrypt_hash("pw")}'
""")
    results = {}
    # Each by the flag names Debian's exporter of this release takes (ours takes both).
    named = flags(DEBIAN_EXPORTER)
    for name, argv in (("theirs", [DEBIAN_EXPORTER]), ("ours", [EXPORTER])):
        port = free_port()
        ep = Endpoint([*argv, f"{named['listen']}=127.0.0.1:{port}",
                       f"--scrape_uri={prefork.status_url}?auto",
                       f"{named['web_config']}={web}"],
                      {}, [port])
        try:
            ctx = ssl.create_default_context(cafile=str(cert))
            url = f"https://127.0.0.1:{port}/metrics"
            results[name] = (get(url, context=ctx)[0], get(url, "prom", "no", context=ctx)[0],
                             get(url, "prom", "pw", context=ctx)[0])
        finally:
            ep.stop()
    assert results["ours"] == results["theirs"] == (401, 401, 200), results


# --- the web configuration file: strict, trusted, one line ---------------------------------

def run(*args: str, env: dict = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXPORTER, *args], capture_output=True, text=True, timeout=60,
                          env={**exporter_env(), **(env or {})})


@pytest.mark.parametrize("text,expected", [
    ("tls_server_config:\n  cert_fil: x\nbasic_auth: {}\nrate_limit:\n  burst: 1\n  every: 1s\n",
     "unknown keys basic_auth, tls_server_config.cert_fil, rate_limit.every"),
    ("basic_auth_users:\n  prom: plaintext-password\n", "basic_auth_users.prom: not a bcrypt"),
    ("tls_server_config:\n  cert_file: c.pem\n", "missing one of key or key_file"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: "
     "RequireAnyClientCert\n", "RequireAnyClientCert: a certificate nobody verifies"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n",
     "client CAs are given without a client_auth_type"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: SSL3\n",
     "unknown TLS version 'SSL3'"),
    ("http_server_config:\n  headers:\n    Server: x\n", "'Server' cannot be set"),
    ("basic_auth_users:\n  a: x\n  a: y\n", "line 3: key 'a' given twice"),
    ("tls_server_config: [\n", "line 2"),
])
def test_bad_web_configs_are_one_line_before_listening(tmp_path, text, expected):
    web = web_config(tmp_path, text)
    proc = run("--listen", f"127.0.0.1:{free_port()}", "--url", DEAD_URL,
               "--web.config.file", str(web))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and expected in proc.stderr, proc.stderr
    assert "plaintext-password" not in proc.stderr


def test_an_untrusted_web_config_is_refused(tmp_path):
    web = web_config(tmp_path, "basic_auth_users: {}\n")
    web.chmod(0o666)
    proc = run("--listen", f"127.0.0.1:{free_port()}", "--url", DEAD_URL,
               "--web.config", str(web))
    assert proc.returncode == 2 and "writable by others" in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_web_config_and_listen_options_do_not_both_set_auth(tmp_path):
    web = web_config(tmp_path, f"basic_auth_users:\n  a: '{bcrypt_hash('x')}'\n")
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    proc = run("--listen", f"127.0.0.1:{free_port()}", "--url", DEAD_URL, "--web.config.file",
               str(web), "--listen-user", "a", "--listen-password-file", str(secret))
    assert proc.returncode == 2 and "basic auth is set twice" in proc.stderr, proc.stderr


def test_rate_limit_answers_429(tmp_path):
    web = web_config(tmp_path, "rate_limit:\n  interval: 1h\n  burst: 2\n")
    port = free_port()
    ep = Endpoint([EXPORTER, "--listen", f"127.0.0.1:{port}", "--url", DEAD_URL,
                   "--web.config.file", str(web)], {}, [port])
    try:
        codes = [get(f"http://127.0.0.1:{port}/")[0] for _ in range(3)]
    finally:
        ep.stop()
    assert codes == [200, 200, 429]


# --- the environment ----------------------------------------------------------------------

@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("APACHE_METRICS_") or name in dict(config.FOREIGN_ENV):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", "/nonexistent")
    return monkeypatch


def test_upstream_environment_variables(clean_env):
    clean_env.setenv("SCRAPE_URI", "http://127.0.0.1:81/server-status?auto")
    clean_env.setenv("METRICS_ENDPOINT", "/m")
    clean_env.setenv("HOST_OVERRIDE", "www.example.org")
    clean_env.setenv("INSECURE", "t")
    args = config.parse(config.build_parser(), [])
    assert args.url == ["http://127.0.0.1:81/server-status?auto"]
    assert args.telemetry_endpoint == "/m" and args.host_override == "www.example.org"
    assert args.insecure is True
    # Ours wins over theirs, the command line over both; the reaper reads none.
    clean_env.setenv("APACHE_METRICS_URL", "http://127.0.0.1:82/server-status")
    assert config.parse(config.build_parser(), [])
    assert config.parse(config.build_parser(), []).url == ["http://127.0.0.1:82/server-status"]
    assert config.parse(config.build_parser(), ["--scrape_uri", DEAD_URL]).url == [DEAD_URL]
    clean_env.delenv("APACHE_METRICS_URL")
    assert config.parse(config.build_reaper_parser(), []).url is None
    clean_env.setenv("INSECURE", "false")
    assert config.parse(config.build_parser(), []).insecure is False


def test_insecure_takes_go_booleans_only(clean_env):
    clean_env.setenv("INSECURE", "maybe")
    with pytest.raises(UsageError, match="INSECURE: expected true or false"):
        config.parse(config.build_parser(), [])


def test_custom_headers_are_sent_and_secret_ones_stay_off_the_command_line(clean_env):
    args = config.parse(config.build_parser(), ["--url", DEAD_URL, "--custom_headers",
                                                "X-A=1=2", "--custom_headers", "X-B="])
    (target,) = config.targets(args)
    assert ("X-A", "1=2") in target.headers and ("X-B", "") in target.headers
    with pytest.raises(UsageError, match="visible to every user in ps"):
        config.parse(config.build_parser(), ["--custom_headers", "Authorization=Basic eA=="])
    args = config.parse(config.build_parser(), ["--url", DEAD_URL, "--custom_headers", "X"])
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        config.targets(args)


# --- logging --------------------------------------------------------------------------------

@pytest.mark.parametrize("level,shown", [
    ("error", {"error"}), ("warn", {"error"}), ("info", {"info", "error"})])
def test_log_level_and_logfmt(level, shown):
    # A dead URL: an error line (refused) and an info line (no process figures).
    proc = run("--url", DEAD_URL, "--format", "prometheus", f"--log.level={level}",
               "--log.format=logfmt")
    assert proc.returncode == 0, proc.stderr
    levels = re.findall(r"^ts=\d{4}-\d\d-\d\dT[\d:.]+Z level=(\w+) msg=", proc.stderr, re.M)
    assert len(levels) == len(proc.stderr.splitlines()), proc.stderr
    assert set(levels) == shown, proc.stderr


def test_logfmt_quotes_as_go_kit_does():
    from apache_metrics_exporter.log import WARNING, _structured

    line = _structured("logfmt", WARNING, 'say "hi" \\ there')
    assert line.endswith(' level=warn msg="say \\"hi\\" \\\\ there"\n')
    assert _structured("logfmt", WARNING, "plain").endswith(" level=warn msg=plain\n")


# --- process_* series ---------------------------------------------------------------------

def test_process_series_are_this_process():
    import psutil

    from apache_metrics_exporter import selfmetrics

    got = {s.metric.prom: s.value for s in selfmetrics.samples()}
    me = psutil.Process()
    assert abs(got["process_start_time_seconds"] - me.create_time()) < 1
    assert abs(got["process_resident_memory_bytes"] - me.memory_info().rss) < 16 << 20
    assert got["process_virtual_memory_bytes"] == pytest.approx(me.memory_info().vms, rel=0.1)
    assert abs(got["process_open_fds"] - me.num_fds()) <= 1  # the listing's own descriptor
    cpu = me.cpu_times()
    assert abs(got["process_cpu_seconds_total"] - (cpu.user + cpu.system)) < 0.1
    assert got["process_max_fds"] == me.rlimit(psutil.RLIMIT_NOFILE)[0]
    assert got["apache_metrics_exporter_build_info"] == 1


def test_process_series_are_read_anew_at_each_scrape_from_one_descriptor():
    # /proc/self/stat is held open and read again (pread at 0) at each
    # scrape: the figures must still move, no descriptor pile up, and a
    # forked process read its own file, not its parent's.
    import psutil

    from apache_metrics_exporter import selfmetrics

    def cpu() -> float:
        return {s.metric.prom: s.value for s in selfmetrics.samples()}[
            "process_cpu_seconds_total"]

    first = cpu()
    fds = psutil.Process().num_fds()
    for _ in range(50):
        cpu()
    assert psutil.Process().num_fds() == fds
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert cpu() - first >= 0.2
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write, selfmetrics._self_stat().split()[0])
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert int(os.read(read, 64)) == child
    finally:
        os.close(read)
        os.waitpid(child, 0)


def test_a_held_stat_descriptor_closed_or_reused_is_opened_again(tmp_path):
    """Red team (redteam5): something closing the process's descriptors
    (a library daemonising, closerange) left the held /proc/self/stat
    descriptor dead - the process series gone until a restart - or, once
    its number was reused by another open file, read that file at offset 0
    and took its numbers for this process's figures."""
    import psutil

    from apache_metrics_exporter import selfmetrics

    def got():
        return {s.metric.prom: s.value for s in selfmetrics.samples()}

    selfmetrics._self_stat()
    os.close(selfmetrics._held[1])  # closed behind its back
    assert "process_cpu_seconds_total" in got()
    fake = tmp_path / "fake"
    fake.write_bytes(b"1 (fake) S " + b"900000 " * 50 + b"\n")
    fd = selfmetrics._held[1]
    os.close(fd)
    reused = os.open(fake, os.O_RDONLY)  # the lowest free number: the held one's
    try:
        assert reused == fd
        figures = got()
        assert abs(figures["process_start_time_seconds"] - psutil.Process().create_time()) < 1
        assert os.read(reused, 8) == b"1 (fake)"  # the other file's descriptor left alone
    finally:
        os.close(reused)


def test_process_series_only_on_the_endpoint_not_in_a_one_shot():
    proc = run("--url", DEAD_URL, "--format", "prometheus", "--no-processes", "-q")
    assert proc.returncode == 0 and "apache_up 0" in proc.stdout
    assert "process_" not in proc.stdout and "build_info" not in proc.stdout


def test_systemd_socket_activation(tmp_path):
    # As systemd passes a socket: descriptor 3, LISTEN_FDS=1, LISTEN_PID=its pid.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    script = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
              "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
              f"os.execv({EXPORTER!r}, [{EXPORTER!r}, '--web.systemd-socket', '--url', "
              f"{DEAD_URL!r}])")
    proc = subprocess.Popen([sys.executable, "-c", script, str(sock.fileno())],
                            pass_fds=(sock.fileno(),), stderr=subprocess.PIPE, text=True,
                            env=exporter_env())
    sock.close()
    try:
        code, body, _ = get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200 and prom_series(body)["apache_up"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read()
    proc = run("--web.systemd-socket", "--url", DEAD_URL)
    assert proc.returncode == 2 and "systemd passed no socket" in proc.stderr


@pytest.mark.parametrize("name", ["APACHE_METRICS_WEB_SYSTEMD_SOCKET",
                                  "APACHE_METRICS_WEB.SYSTEMD_SOCKET"])
def test_systemd_socket_from_the_environment(name):
    # The name --help shows is one a shell can export; the dotted name an
    # earlier --help showed (settable by env(1) or systemd's Environment=)
    # still works, and neither is warned about as unknown.
    proc = run("--url", DEAD_URL, env={name: "true"})
    assert proc.returncode == 2 and "systemd passed no socket" in proc.stderr, proc.stderr
    assert "is not an option" not in proc.stderr
    # The new name, when set, wins over the old one.
    proc = run("--url", DEAD_URL, "--format", "prometheus", "--no-processes",
               env={"APACHE_METRICS_WEB.SYSTEMD_SOCKET": "true",
                    "APACHE_METRICS_WEB_SYSTEMD_SOCKET": "false"})
    assert proc.returncode == 0 and "apache_up 0" in proc.stdout, proc.stderr


@pytest.mark.parametrize("command", ["apache-metrics-exporter", "apache-worker-reaper"])
def test_help_shows_env_vars_a_shell_can_set_and_no_dead_link(command):
    out = subprocess.run([os.path.join(BINDIR, command), "--help"], capture_output=True,
                         text=True, timeout=60, env=exporter_env()).stdout
    names = re.findall(r"\[env var:\s+(\S+)\]", out)
    assert len(names) > 20
    assert [n for n in names if not re.fullmatch(r"APACHE_METRICS_[A-Z0-9_]+", n)] == []
    if command == "apache-metrics-exporter":
        assert "APACHE_METRICS_WEB_SYSTEMD_SOCKET" in names
    assert "goo.gl" not in out
    assert "https://github.com/bw2/ConfigArgParse#config-file-syntax" in " ".join(out.split())


def test_help_names_every_apache_exporter_flag():
    out = run("--help").stdout
    for flag in ("--log.level", "--log.format", "--web.config.file", "--web.listen-address",
                 "--web.systemd-socket", "--telemetry.address", "--telemetry.endpoint",
                 "--scrape_uri", "--insecure", "--host_override", "--custom_headers"):
        assert flag in out, flag
