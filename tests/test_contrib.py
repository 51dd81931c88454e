"""The ready-made agent configs in contrib/ are valid and run the exporter right."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib

from tests.conftest import exporter_env
from tests.harness.apache import free_port

ROOT = Path(__file__).resolve().parent.parent
CONTRIB = ROOT / "contrib"
EXPORTER = "/usr/local/bin/apache-metrics-exporter"


def telegraf(name: str) -> dict:
    return tomllib.loads((CONTRIB / "telegraf" / name).read_text())


def test_telegraf_exec_config():
    conf = telegraf("apache-metrics-exporter.conf")
    (plugin,) = conf["inputs"]["exec"]
    assert plugin["data_format"] == "influx"  # exec's default would be json
    (command,) = plugin["commands"]
    assert command[0] == EXPORTER and "--format" in command
    assert command[command.index("--format") + 1] == "influx"
    timeout = int(plugin["timeout"].rstrip("s"))
    assert timeout > 5  # longer than the exporter's own --timeout
    # The older string form, commented out, says the same thing.
    text = (CONTRIB / "telegraf" / "apache-metrics-exporter.conf").read_text()
    old = [ln for ln in text.splitlines() if ln.strip().startswith("# commands = [")]
    assert old and shlex.split(old[0].split('["', 1)[1].rsplit('"]', 1)[0]) == command


def test_telegraf_exec_config_names_every_measurement_the_exporter_adds():
    # Newcomer run: the comment named five added measurements; a run wrote
    # apache_status, apache_accept_queue, apache_clients, apache_vhost,
    # apache_interval and apache_reaper too, which a newcomer took for strays.
    text = (CONTRIB / "telegraf" / "apache-metrics-exporter.conf").read_text()
    comment = " ".join(ln.lstrip("# ") for ln in text.split("[[inputs.exec]]")[0]
                       .splitlines())
    named = set(re.findall(r"\b(apache_[a-z_]+)\b", comment))
    metrics = (ROOT / "docs" / "metrics.md").read_text()
    written = {m for m in re.findall(r"`(apache_[a-z_]+)\.[A-Za-z_]+`", metrics)}
    assert named == written, (named ^ written)


TELEGRAF_STATE_DIR = "/var/lib/telegraf"  # InfluxData's package: root:telegraf 0770


def test_telegraf_exec_config_keeps_its_collector_state_where_telegraf_may_write():
    # exec runs the command as user telegraf, who cannot write the default
    # collector state (/var/lib/apache-metrics-exporter): without its own,
    # no rates, durations or restarts, ever.
    (plugin,) = telegraf("apache-metrics-exporter.conf")["inputs"]["exec"]
    (command,) = plugin["commands"]
    path = command[command.index("--collector-state") + 1]
    assert os.path.dirname(path) == TELEGRAF_STATE_DIR and path.endswith(".json")
    doc = (CONTRIB.parent / "docs" / "influx-telegraf.md").read_text()
    assert f"--collector-state {path}" in doc
    assert "install -d -o root -g telegraf -m 0770 /var/lib/telegraf" in doc


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_telegraf_exec_command_as_an_unprivileged_user_gets_interval_figures(
        prefork, runnable_copy):
    # The contrib command as Telegraf runs it: as its own user (nobody here),
    # its state directory made as the telegraf package makes it (root, the
    # user's group, 0770). The second run compares itself with the first.
    import tempfile

    (plugin,) = telegraf("apache-metrics-exporter.conf")["inputs"]["exec"]
    root = Path(tempfile.mkdtemp(prefix="ame-telegraf-"))
    try:
        root.chmod(0o755)
        state_dir = root / "telegraf"
        state_dir.mkdir()
        os.chown(state_dir, 0, 65534)  # group nogroup, nobody's
        state_dir.chmod(0o770)
        command = [a.replace("http://127.0.0.1/server-status", prefork.status_url)
                   .replace("/run/apache2/apache2.pid", str(prefork.pid_file))
                   .replace(TELEGRAF_STATE_DIR, str(state_dir))
                   for a in plugin["commands"][0]]
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                str(runnable_copy), *command[1:]]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/",
               "APACHE_METRICS_STATE_FILE": str(root / "no-reaper-state.json")}
        runs = []
        for _ in range(2):
            runs.append(subprocess.run(argv, capture_output=True, text=True, env=env,
                                       timeout=60))
            time.sleep(1.1)  # Apache's counters move by whole seconds
        for proc in runs:
            assert proc.returncode == 0, proc.stderr
            assert "collector state" not in proc.stderr and "--collector-state" not in \
                proc.stderr, proc.stderr
        measurements = {ln.split(",", 1)[0].split(" ", 1)[0]
                        for ln in runs[1].stdout.splitlines()}
        assert "apache_interval" in measurements, runs[1].stdout
        assert any(p.stat().st_uid == 65534 for p in state_dir.iterdir())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_telegraf_execd_config():
    conf = telegraf("apache-metrics-exporter-execd.conf")
    (plugin,) = conf["inputs"]["execd"]
    assert plugin["signal"] == "STDIN"
    assert plugin["data_format"] == "influx"
    assert "--execd" in plugin["command"] and plugin["command"][0] == EXPORTER


@pytest.mark.integration
def test_telegraf_exec_command_runs(prefork, influxdb, influx_db):
    (plugin,) = telegraf("apache-metrics-exporter.conf")["inputs"]["exec"]
    command = [a.replace("http://127.0.0.1/server-status", prefork.status_url)
               for a in plugin["commands"][0]]
    argv = [sys.executable, "-m", "apache_metrics_exporter", *command[1:]]
    proc = subprocess.run(argv, capture_output=True, text=True, env=exporter_env(), timeout=30)
    assert proc.returncode == 0
    assert influxdb.write(influx_db, proc.stdout.encode()) == (204, "")


@pytest.mark.skipif(not shutil.which("collectd") and not os.path.exists("/usr/sbin/collectd"),
                    reason="collectd-core not installed")
def test_collectd_config_passes_collectd_t(tmp_path):
    # collectd -t checks the syntax and loads the plugins of this snippet.
    conf = tmp_path / "collectd.conf"
    conf.write_text(f'BaseDir "{tmp_path}"\nPIDFile "{tmp_path}/pid"\n'
                    'TypesDB "/usr/share/collectd/types.db"\n'
                    + (CONTRIB / "collectd" / "apache-metrics-exporter.conf").read_text())
    proc = subprocess.run(["/usr/sbin/collectd", "-t", "-C", str(conf)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"--format" "collectd"' in conf.read_text()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path):
    # The units as shipped, with ExecStart pointing at this environment's scripts.
    bindir = os.path.dirname(sys.executable)
    for unit in (CONTRIB / "systemd").iterdir():
        text = unit.read_text().replace("/usr/local/bin/", bindir + "/")
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    assert any(u.endswith(".timer") for u in units)
    # verify runs man(1) for each Documentation=man: link: the checkout's pages.
    man1 = tmp_path / "man" / "man1"
    man1.mkdir(parents=True)
    for page in (ROOT / "docs" / "man").glob("*.1"):
        (man1 / page.name).symlink_to(page)
    proc = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True,
                          text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning",
                                          "MANPATH": str(tmp_path / "man")})
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                if "apache-" in ln and "Unknown" not in ln.split(":")[0]]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_systemd_units_name_their_man_page():
    # systemctl status and lintian point at the Documentation= key; a newcomer's
    # .deb build reported it missing on every unit.
    for unit in sorted((CONTRIB / "systemd").iterdir()):
        docs = [ln.split("=", 1)[1] for ln in unit.read_text().splitlines()
                if ln.startswith("Documentation=")]
        assert docs, f"{unit.name}: no Documentation="
        for link in " ".join(docs).split():
            assert link.startswith("man:") and link.endswith("(1)"), (unit.name, link)
            assert (ROOT / "docs" / "man" / (link[4:-3] + ".1")).is_file(), (unit.name, link)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", ["apache-metrics-exporter.service",
                                  "apache-metrics-exporter-endpoint.service",
                                  "apache-worker-reaper.service"])
def test_systemd_units_are_sandboxed(unit):
    # Red-team: the push service and the reaper ran as root with no sandbox
    # at all (systemd-analyze security: 9.6 UNSAFE), parsing bytes from the
    # status page and InfluxDB; the endpoint had four settings (8.9). Root
    # stays (the proof reads Apache's /proc/PID/fd, the reaper signals
    # www-data's workers): what they never need is taken away.
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(CONTRIB / "systemd" / unit)],
                          capture_output=True, text=True)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    # 2.9-3.0 "OK" (systemd 252) since the capability set and the syscall filter (5.2-5.3
    # before; all of it proven under a live systemd by
    # scripts/debian13-systemd-check.sh).
    assert float(found.group(1)) <= 4.0, proc.stdout
    text = (CONTRIB / "systemd" / unit).read_text()
    for setting in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                    "PrivateDevices=yes", "ProtectKernelTunables=yes",
                    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
                    "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes"):
        assert f"\n{setting}\n" in text, setting
    (caps,) = [ln.split("=", 1)[1].split() for ln in text.splitlines()
               if ln.startswith("CapabilityBoundingSet=")]
    assert "CAP_SYS_PTRACE" in caps  # /proc/PID/fd, smaps and exe of www-data's workers
    assert ("CAP_KILL" in caps) == (unit == "apache-worker-reaper.service")
    assert not {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SETUID", "CAP_SYS_MODULE"} & set(caps)



def unit_settings(text: str, key: str) -> list:
    """Every word of every ``key=`` line of a unit file."""
    return [w for ln in text.splitlines() if ln.startswith(key + "=")
            for w in ln.split("=", 1)[1].split()]


@pytest.mark.parametrize("unit", sorted(p.name for p in (CONTRIB / "systemd").glob("*.service")))
def test_systemd_units_may_write_the_files_their_command_keeps(unit):
    # ProtectSystem=strict makes every path read-only but StateDirectory= and
    # ReadWritePaths=. The endpoint under a live systemd (Debian 13 in
    # systemd-nspawn) lost apache_restarts_total, silently: it could not
    # write the collector state it keeps by default (a loop only logs that
    # at debug level).
    from apache_metrics_exporter.paths import REAPER_STATE, SPOOL_DIR
    from apache_metrics_exporter.restarts import DEFAULT_PATH as COLLECTOR_STATE

    text = (CONTRIB / "systemd" / unit).read_text()
    assert "ProtectSystem=strict" in text.splitlines()
    writable = ["/var/lib/" + d for d in unit_settings(text, "StateDirectory")]
    writable += [p.lstrip("-") for p in unit_settings(text, "ReadWritePaths")]
    (command,) = [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith("ExecStart=")]
    words = systemd_words(command, text)
    program = os.path.basename(words[0])
    defaults = {"apache-metrics-exporter": {"--collector-state": COLLECTOR_STATE,
                                            "--spool-dir": SPOOL_DIR},
                "apache-worker-reaper": {"--state-file": REAPER_STATE}}[program]
    for option, default in defaults.items():
        path = words[words.index(option) + 1] if option in words else default
        if option == "--spool-dir" and "influxdb" not in words:
            continue  # only a push spools
        assert any(path == d or path.startswith(d + "/") for d in writable), (
            f"{unit}: {option} {path} is read-only under ProtectSystem=strict "
            f"(StateDirectory/ReadWritePaths: {writable})")

# --- the documented config example with every contrib config and documented command ---------

README = CONTRIB.parent / "README.md"
CONTRIBUTING_MD = CONTRIB.parent / "CONTRIBUTING.md"
# The pages of docs/ whose command lines are run here. Not metrics.md (generated,
# no commands) nor migration.md: it shows apache-manager's old lines on purpose
# (kills included), and tests/test_manager.py checks every line of it.
DOC_PAGES = sorted(p for p in (CONTRIB.parent / "docs").glob("*.md")
                   if p.name not in ("metrics.md", "migration.md"))
DEAD_URL = "http://127.0.0.1:9/server-status"  # loopback, nothing listens (discard port)
BINDIR = os.path.dirname(sys.executable)
PROGRAMS = ("apache-metrics-exporter", "apache-worker-reaper", "apache-manager")


def documented_texts() -> list:
    """(where, text) of the README and every docs/ page whose commands run here."""
    return [("README", README.read_text()),
            *((f"docs/{p.name}", p.read_text()) for p in DOC_PAGES)]


def readme_config() -> str:
    """The documented example /etc/apache-metrics-exporter.conf (one, in the
    README or a docs/ page: docs/configuration.md)."""
    blocks = [b for _, text in documented_texts() for b in code_blocks(text, ("ini",))]
    (block,) = [b for b in blocks if b.startswith("# /etc/apache-metrics-exporter.conf")]
    return block


def code_blocks(text: str, languages: tuple) -> list:
    """The fenced code blocks of a Markdown text in one of these languages."""
    blocks, current, language = [], None, ""
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                if language in languages:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _commands_in_text(text: str) -> list:
    """Command lines in README code blocks and contrib comments: those that run
    one of the programs (continuations joined, cron's schedule and user dropped)."""
    out = []
    for block in code_blocks(text, ("sh", "")):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            cron = re.match(r"^(?:#\s*)?(?:\S+\s+){5}root\s+(.*)$", line)
            if cron:
                line = cron.group(1).split(" 2>&1 |", 1)[0]
            words = line.split()
            # A command, not a program's name in output (a benchmark table):
            # nothing after the name, or an option.
            if (words and os.path.basename(words[0]) in PROGRAMS
                    and (len(words) == 1 or words[1].startswith("-"))):
                out.append(shlex.split(line, comments=True))
    return out


def systemd_words(command: str, unit: str) -> list:
    """ExecStart's words as systemd makes them: ``$NAME`` becomes the words of
    the variable (none when unset: an ``EnvironmentFile=-`` that is absent),
    ``${NAME}`` one word."""
    env = dict(re.findall(r'^Environment="?(\w+)=(.*?)"?$', unit, re.M))
    words = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            words.extend(env.get(whole.group(1), "").split())
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return words


def contrib_commands() -> list:
    """(where, argv) of every way contrib/ and the README run the programs."""
    found = []
    for unit in sorted((CONTRIB / "systemd").glob("*.service")):
        (line,) = [ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
        found.append((unit.name, systemd_words(line.split("=", 1)[1], unit.read_text())))
    (exec_plugin,) = telegraf("apache-metrics-exporter.conf")["inputs"]["exec"]
    found.append(("telegraf exec", exec_plugin["commands"][0]))
    (execd,) = telegraf("apache-metrics-exporter-execd.conf")["inputs"]["execd"]
    found.append(("telegraf execd", execd["command"]))
    collectd = (CONTRIB / "collectd" / "apache-metrics-exporter.conf").read_text()
    (exec_line,) = re.findall(r'^\s*Exec\s+(.*)$', collectd, re.M)
    found.append(("collectd Exec", shlex.split(exec_line)[1:]))  # [0] is the user
    zabbix = (CONTRIB / "zabbix" / "apache-metrics-exporter.conf").read_text()
    for key, command in re.findall(r"^UserParameter=([^,]+),(.*)$", zabbix, re.M):
        words = shlex.split(command)
        if os.path.basename(words[0]) in PROGRAMS:
            found.append((f"zabbix {key}", words))
    for cron in re.findall(r"^#\s+(\* \* \* \* \* root .*)$", zabbix, re.M):
        found.append(("zabbix cron", _commands_in_text(f"```\n{cron}\n```")[0]))
    for where, text in documented_texts():
        for words in _commands_in_text(text):
            found.append((where, words))
    return found


def localized(argv: list, tmp: Path) -> list:
    """A command as shipped, pointed at this environment and the test's temp dir."""
    out = [os.path.join(BINDIR, os.path.basename(argv[0]))]
    for word in argv[1:]:
        word = re.sub(r"^https?://127\.0\.0\.1(:\d+)?/server-status$", DEAD_URL, word)
        for shipped in ("/var/lib/apache-metrics-exporter", "/var/lib/prometheus/node-exporter",
                        "/tmp"):
            if word.startswith(shipped + "/"):
                word = str(tmp / "out") + word[len(shipped):]
                break
        if re.fullmatch(r"127\.0\.0\.1:\d+", word):  # --listen: a free port, not the shipped one
            word = f"127.0.0.1:{free_port()}"
        if word.startswith("/etc/"):  # a secret or CA file: one of the test's own
            word = str(tmp / "etc" / os.path.basename(word))
        out.append(word)
    return out


def _start(argv: list, env: dict, tmp: Path) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    proc.stdin.close()  # Telegraf's execd: end of input ends the loop
    return proc


def _finish(proc: subprocess.Popen, deadline: float) -> tuple:
    """Exit status and stderr; a loop still running at the deadline got past
    usage validation (reported before anything is fetched) and is stopped."""
    try:
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=10)
    return proc.returncode, proc.stderr.read()


def _run(argv: list, env: dict, tmp: Path) -> tuple:
    return _finish(_start(argv, env, tmp), time.monotonic() + 8)


def test_every_contrib_command_accepts_the_readme_config(tmp_path):
    (tmp_path / "out" / "spool").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    for name in ("apache-metrics-exporter.token", "apache-metrics-exporter.password"):
        (tmp_path / "etc" / name).write_text("secret\n")
    shutil.copy(CONTRIB.parent / "tests" / "harness" / "apache.py", tmp_path / "etc" / "my-ca.pem")
    config = readme_config()
    keys = re.findall(r"^([\w-]+)\s*=", config, re.M)
    assert "output" not in keys and "format" not in keys  # per command line
    assert "password" not in keys and "influxdb-token" not in keys  # secrets in files
    config = config.replace("http://127.0.0.1/server-status", DEAD_URL)
    config = config.replace("http://127.0.0.1:8086", "http://127.0.0.1:9")
    config = config.replace("/etc/", str(tmp_path / "etc") + "/")
    # Where every run of every command (also those apache-manager starts) reads it.
    conf = tmp_path / ".config" / "apache-metrics-exporter.conf"
    conf.parent.mkdir()
    conf.write_text(config)
    commands = contrib_commands()
    where = {w for w, _ in commands}
    assert {"apache-metrics-exporter.service", "apache-worker-reaper.service", "telegraf exec",
            "telegraf execd", "collectd Exec", "zabbix cron", "README"} <= where
    # Every page with a command line in it is run (the pages that show the
    # consumers' and the reaper's commands at least).
    assert {"docs/configuration.md", "docs/reaper.md", "docs/prometheus.md",
            "docs/influxdb-push.md", "docs/collectd.md", "docs/influx-telegraf.md",
            "docs/tab.md", "docs/zabbix.md"} <= where
    env = exporter_env(HOME=str(tmp_path), COLLECTD_HOSTNAME="web1")
    started = []
    for place, argv in commands:
        if "--watch" in argv or "-w" in argv:
            continue  # needs a terminal: tests/test_human.py runs it in tmux
        run_env = dict(env, COLLECTD_INTERVAL="1") if place == "collectd Exec" else env
        args = localized(argv, tmp_path)
        args += ["--state-file", str(tmp_path / "out" / "state.json")]
        program = os.path.basename(args[0])
        if program == "apache-worker-reaper":
            args.append("--dry-run")  # never signal anything from a test
        elif program == "apache-manager":  # its own file, not the machine's /tmp one
            args += ["--url", DEAD_URL, "--data-file", str(tmp_path / "out" / "manager.txt")]
            assert not {"-k", "--kill-workers"} & set(args)
        else:
            args += ["--spool-dir", str(tmp_path / "out" / "spool")]
        started.append((place, argv, _start(args, run_env, tmp_path)))
    deadline = time.monotonic() + 10
    failures = []
    for place, argv, proc in started:
        status, err = _finish(proc, deadline)
        if status == 2:
            failures.append(f"{place}: {shlex.join(argv)}\n  -> {err.strip()}")
    assert not failures, "\n".join(failures)
    assert len(started) >= 12


def test_config_with_output_breaks_the_influxdb_unit(tmp_path):
    # Why the README keeps `output` out of the shared file: the push refuses it.
    conf = tmp_path / "c.conf"
    conf.write_text(readme_config().replace("/etc/", str(tmp_path) + "/")
                    + f"output = {tmp_path}/apache-manager.txt\n")
    for name in ("apache-metrics-exporter.token", "apache-metrics-exporter.password"):
        (tmp_path / name).write_text("t\n")
    status, err = _run([os.path.join(BINDIR, "apache-metrics-exporter"), "--format", "influxdb",
                        "--config", str(conf), "--spool-dir", str(tmp_path)],
                       exporter_env(HOME=str(tmp_path)), tmp_path)
    assert status == 2 and "--output" in err


def test_cron_lines_name_the_programs_in_full():
    # cron's PATH is /usr/bin:/bin: a bare program name is not found there.
    texts = [text for _, text in documented_texts()]
    texts += [p.read_text() for p in CONTRIB.rglob("*") if p.is_file()]
    lines = [ln for text in texts for ln in re.findall(r"^[#\s]*(\* \* \* \* \* .*)$", text, re.M)]
    assert len(lines) >= 3
    for line in lines:
        program = line.split()[6]
        assert program.startswith("/usr/local/bin/"), line
    assert "/var/lib/prometheus/node-exporter/" in README.read_text()  # Debian's directory


def test_install_steps_give_every_program_the_configs_use():
    # One command per way, each installing what `make deb` / `make dist` build
    # (tests/test_packaging.py checks the file names and what they install).
    readme = README.read_text()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "python3-venv" in install
    steps = code_blocks(install, ("sh",))[0]
    commands = [ln for ln in steps.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(commands) == 3
    deb, pipx, pip = commands
    assert deb == "apt-get install ./dist/apache-metrics-exporter_*_all.deb"
    assert "PIPX_BIN_DIR=/usr/local/bin " in pipx
    assert pipx.endswith("pipx install ./dist/apache_metrics_exporter-*.whl")
    assert pip.endswith("/bin/pip install ./dist/apache_metrics_exporter-*.whl")
    # pipx links every console script into /usr/local/bin, where the configs
    # and documented lines call them.
    scripts = re.search(r"console_scripts =\n((?:[ \t]+\S.*\n)+)",
                        (CONTRIB.parent / "setup.cfg").read_text()).group(1)
    linked = {line.split("=")[0].strip() for line in scripts.strip().splitlines()}
    used = set()
    texts = [text for _, text in documented_texts()]
    texts += [p.read_text() for p in CONTRIB.rglob("*") if p.is_file()]
    for text in texts:
        used |= set(re.findall(r"/usr/local/bin/([\w-]+)", text))
    assert used <= linked


def test_docs_list_what_make_deps_installs():
    makefile = (CONTRIB.parent / "Makefile").read_text()
    packages = re.search(r"^APT_PACKAGES :=((?:.*\\\n)*.*)$", makefile, re.M).group(1)
    packages = packages.replace("\\\n", " ").split()
    # ... and the names that carry a release's version (RELEASE_PACKAGES_12 := ...).
    for release in ("12", "13"):
        line = re.search(rf"^RELEASE_PACKAGES_{release} :=(.*)$", makefile, re.M)
        packages += line.group(1).split()
    # The README's first screen promises what the two commands do to the
    # machine and points to the full list, in CONTRIBUTING.md.
    readme_intro = README.read_text().split("## What it is", 1)[0]
    assert "--no-upgrade" in readme_intro and "enabled" in readme_intro
    assert "(CONTRIBUTING.md)" in readme_intro
    contributing = (CONTRIBUTING_MD).read_text()
    intro = contributing.split("## What `make demo` and `make test` install", 1)[1]
    intro = intro.split("\n## ", 1)[0]
    for package in packages:
        assert f"`{package}`" in intro, package
    assert "--no-upgrade" in intro and "enabled" in intro
    setup = (CONTRIB.parent / "setup.cfg").read_text()
    python = []
    for key in ("install_requires", "test"):
        block = re.search(rf"^{key} =\n((?:[ \t]+\S.*\n)+)", setup, re.M).group(1)
        python += [re.match(r"\s*([\w-]+)", line).group(1) for line in block.splitlines()]
    assert {"psutil", "pytest"} <= set(python)
    for package in python:
        assert f"`{package}`" in intro, package
