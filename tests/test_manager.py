"""apache-manager: the compatible front end, side by side with the real original.

Three layers:

- the front end alone: the original's options, size/time syntax, INI files
  and exit statuses, and what it asks of the collector and the reaper;
- the front end on a private Apache: metrics file, discovery, kills, Apache
  down;
- apache-manager 2.2 itself, from PyPI in a virtualenv this session builds,
  run with the same arguments on the same (daemonised) private Apache: the
  metrics files, the discovery JSON and a dry-run kill selection compared.

INI files are always named through APACHE_MANAGER_INI (empty: none), so the
machine's /etc and ~ files are never read; every output goes to a temporary
directory (never /tmp/apache-manager.txt itself).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List

import psutil
import pytest

from apache_metrics_exporter import manager
from apache_metrics_exporter.errors import UsageError
from tests.conftest import exporter_env, parse_tab, sections
from tests.harness.apache import WSGI_GROUP, free_port
from tests.harness.daemon import DaemonApacheServer
from tests.test_human import Tmux

ORIGINAL_VERSION = "2.2"


def manager_env(**extra: str) -> Dict[str, str]:
    """No APACHE_METRICS_* settings, no INI file unless a test names one."""
    env = exporter_env(**{manager.INI_ENV: ""})
    env.update(extra)
    return env


def run_manager(*args: str, env: Dict[str, str] = None,
                timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apache_metrics_exporter.manager", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else manager_env())


def stderr_lines(proc: subprocess.CompletedProcess) -> List[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]


# ---------------------------------------------------------------------------
# The front end alone


@pytest.mark.parametrize("text, expected", [
    # apache-manager read sizes with humanfriendly.parse_size(binary=True).
    ("50K", 50 * 1024), ("42M", 42 * 1024 ** 2), ("2G", 2 * 1024 ** 3), ("300m", 300 << 20),
    # A bare number is bytes; below 1 MiB it is refused (a forgotten unit:
    # every worker is over it), the one place this front end is stricter.
    ("1.5G", int(1.5 * 1024 ** 3)), ("104857600", 100 << 20), ("50 KB", 50 * 1024),
    ("50KiB", 50 * 1024),
    ("2 gigabytes", 2 * 1024 ** 3), ("1 MB", 1 << 20), ("10 bytes", 10), ("2T", 2 << 40),
])
def test_sizes_as_the_original_read_them(text, expected):
    assert manager.parse_size(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("2s", 2), ("3m", 180), ("5h", 18000), ("2d", 172800), ("1w", 604800), ("90", 90),
    ("5 minutes", 300), ("1.5h", 5400), ("500ms", 0.5), ("1y", 31449600),
    ("1h30m", 5400),  # ours only: the original refused combinations
])
def test_timespans_as_the_original_read_them(text, expected):
    assert manager.parse_timespan(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "M", "12Q", "-5M", "five"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError):
        manager.parse_size(text)


def _settings(*argv: str, ini: str = "") -> manager.Settings:
    old = os.environ.get(manager.INI_ENV)
    os.environ[manager.INI_ENV] = ini
    try:
        return manager.parse_args(list(argv))
    finally:
        if old is None:
            del os.environ[manager.INI_ENV]
        else:
            os.environ[manager.INI_ENV] = old


def test_the_original_command_lines_plan_the_same_work():
    s = _settings("--kill-workers", "--max-memory-active=300M", "--max-memory-idle=150M",
                  "--max-time=2m")
    (step,) = manager.plan(s)
    command, argv = step
    assert command == "reaper"
    assert argv[argv.index("--max-memory-active") + 1] == f"{300 << 20}B"
    # The original held mod_wsgi daemons to the active limit: so do we.
    assert argv[argv.index("--max-memory-wsgi") + 1] == f"{300 << 20}B"
    assert argv[argv.index("--max-memory-idle") + 1] == f"{150 << 20}B"
    assert float(argv[argv.index("--max-time") + 1]) == 120
    assert "--dry-run" not in argv
    # Combined actions run in the original's order whatever the command line's.
    steps = manager.plan(_settings("-c", "-z", "-k", "-a", "1G", "-f", "-"))
    assert [c for c, _ in steps] == ["reaper", "collector", "collector"]
    assert "zabbix-discovery" in steps[1][1]
    assert steps[2][1][steps[2][1].index("--format") + 1] == "tab"
    # getopt's short clusters and unique long prefixes, as the original parsed them.
    s = _settings("-ckn", "--collect", "-T", "90s", "--max-ss", "1m", "-qv")
    assert s.actions == ["collect", "kill"] and s.dry_run and s.max_time == 60
    assert s.hanging_threshold == 90 and (s.verbose, s.quiet) == (1, 1)


def test_default_data_file_and_no_action():
    s = _settings()
    assert s.data_file == "/tmp/apache-manager.txt"
    (step,) = manager.plan(s)
    assert step[1][step[1].index("--format") + 1] == "text"
    assert step[1][step[1].index("--output") + 1] == "-"
    # As the original: no action with --data-file - does nothing.
    assert manager.plan(_settings("-f", "-")) == []
    (step,) = manager.plan(_settings("-c"))
    assert step[1][step[1].index("--output") + 1] == "/tmp/apache-manager.txt"


def test_dry_run_keeps_the_metrics_file_as_the_original_did():
    steps = manager.plan(_settings("-c", "-k", "-n", "-i", "10M"))
    assert [c for c, _ in steps] == ["reaper"] and "--dry-run" in steps[0][1]
    steps = manager.plan(_settings("-c", "-k", "-n", "-i", "10M", "-f", "-"))
    assert [c for c, _ in steps] == ["reaper", "collector"]


def test_ini_files_in_order_and_the_command_line_wins(tmp_path):
    etc = tmp_path / "etc.ini"
    etc.write_text("[apache-manager]\nmax-memory-active = 300M\nmax-memory-idle = 150M\n"
                   "worker-timeout = 2m\nhanging-worker-threshold = 10m\n")
    user = tmp_path / "user.ini"
    user.write_text("[other]\nmax-memory-idle = 1K\n[apache-manager]\nmax-memory-idle = 100M\n"
                    "unknown-key = 1\n")
    s = _settings("-k", "-t", "30s", ini=f"{etc}:{user}")
    assert s.max_memory_active == 300 << 20
    assert s.max_memory_idle == 100 << 20       # the later file wins
    assert s.max_time == 30                     # the command line wins
    assert s.hanging_threshold == 600
    collect = manager.plan(_settings("-c", ini=str(etc)))[0][1]
    assert float(collect[collect.index("-T") + 1]) == 600


def test_ini_search_is_the_originals(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".apache-manager.d").mkdir(parents=True)
    (home / ".config" / "apache-manager.d").mkdir(parents=True)
    for rel in (".apache-manager.ini", ".apache-manager.d/10-b.ini",
                ".apache-manager.d/9-a.ini", ".apache-manager.d/notes.txt",
                ".config/apache-manager.ini", ".config/apache-manager.d/x.ini"):
        (home / rel).write_text("[apache-manager]\n")
    monkeypatch.delenv(manager.INI_ENV, raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    found = [f for f in manager.ini_files() if not f.startswith("/etc/")]
    assert found == [str(home / r) for r in (
        ".apache-manager.ini", ".apache-manager.d/9-a.ini", ".apache-manager.d/10-b.ini",
        ".config/apache-manager.ini", ".config/apache-manager.d/x.ini")]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert not [f for f in manager.ini_files() if ".config" in f]
    monkeypatch.setenv(manager.INI_ENV, f"{tmp_path}/a.ini:{tmp_path}/b.ini")
    assert manager.ini_files() == [f"{tmp_path}/a.ini", f"{tmp_path}/b.ini"]


def test_bad_ini_values_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[apache-manager]\nmax-memory-idle = lots\n")
    with pytest.raises(UsageError, match=r"bad\.ini: \[apache-manager\] max-memory-idle"):
        _settings("-k", ini=str(bad))
    broken = tmp_path / "broken.ini"
    broken.write_text("max-memory-idle = 1M\n")  # no section header
    proc = run_manager("-k", "-i", "1M", env=manager_env(**{manager.INI_ENV: str(broken)}))
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = stderr_lines(proc)
    assert line.startswith("apache-manager: error: ") and "broken.ini" in line


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "option --bogus not recognized"),
    (["-c", "extra"], "no positional arguments"),
    (["-a", "12Q"], "-a expects a size"),
    (["--max-time", "soon"], "--max-time expects a timespan"),
    (["-f"], "option -f requires argument"),
])
def test_usage_errors_are_one_line_and_exit_2(args, message):
    proc = run_manager(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = stderr_lines(proc)
    assert line.startswith("apache-manager: error: ") and message in line


def test_help_names_the_new_commands():
    proc = run_manager("--help")
    assert proc.returncode == 0
    assert "compatible front end" in proc.stdout
    for name in ("apache-metrics-exporter", "apache-worker-reaper", "--collect-metrics",
                 "--kill-workers", "--max-memory-active", "--zabbix-discovery",
                 "/tmp/apache-manager.txt", "apache-manager.ini", "Exit status"):
        assert name in proc.stdout
    assert run_manager("-h").stdout == proc.stdout
    version = run_manager("--version")
    assert version.returncode == 0 and version.stdout.startswith("apache-manager ")


def test_no_url_and_no_ports_conf_is_a_usage_error(tmp_path):
    proc = run_manager("-c", "-f", str(tmp_path / "m.txt"), "--ports-config",
                       str(tmp_path / "missing.conf"))
    assert proc.returncode == 2
    assert "missing.conf" in proc.stderr and not (tmp_path / "m.txt").exists()


def test_loop_settings_from_the_environment_are_refused(tmp_path):
    # apache-manager runs once per cron tick: an interval set for the
    # long-running exporter must not turn it into a loop.
    proc = run_manager("-c", "-f", str(tmp_path / "m.txt"), "--url",
                       "http://127.0.0.1:9/server-status",
                       env=manager_env(APACHE_METRICS_INTERVAL="10"))
    assert proc.returncode == 2 and "interval" in proc.stderr
    assert not (tmp_path / "m.txt").exists()


def test_output_that_cannot_be_written_fails_the_cron_job(tmp_path):
    # stdout on /dev/full (opened by us, written in place: never replaced).
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "apache_metrics_exporter.manager", "-c", "-f", "-", "--url",
             f"http://127.0.0.1:{free_port()}/server-status", "--state-file",
             str(tmp_path / "state.json")],
            stdout=full, stderr=subprocess.PIPE, text=True, env=manager_env(), timeout=60)
    assert proc.returncode == 1 and "cannot write to standard output" in proc.stderr


def test_kill_without_thresholds_does_nothing_like_the_original():
    proc = run_manager("-k", "--url", "http://127.0.0.1:9/server-status")
    assert proc.returncode == 0
    assert "without a threshold" in proc.stderr


# ---------------------------------------------------------------------------
# INI files: trusted like the exporter's config file, every bad value one line
#
# These run the real search path (~/.apache-manager.ini, ~/.apache-manager.d/)
# with HOME in a temporary directory; /etc/apache-manager.ini is only looked
# at (it does not exist on a test machine; the tests skip if it does).

NOBODY = 65534
INI = "[apache-manager]\nmax-memory-idle = 1K\n"


@pytest.fixture
def ini_home(tmp_path):
    """(home, run): a private HOME and apache-manager run with it as root's
    cron would, the INI search path in force (no APACHE_MANAGER_INI)."""
    if any(os.path.lexists(p) for p in ("/etc/apache-manager.ini", "/etc/apache-manager.d")):
        pytest.skip("this machine has its own /etc/apache-manager INI files")
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    env = manager_env(HOME=str(home))
    del env[manager.INI_ENV]
    env.pop("XDG_CONFIG_HOME", None)
    url = f"http://127.0.0.1:{free_port()}/server-status"

    def run(*args: str) -> subprocess.CompletedProcess:
        # A hang (FIFO) or a read without end (/dev/zero) fails by the timeout.
        return run_manager(*(args or ("-k", "-n")), "--url", url, "--state-file",
                           str(tmp_path / "state.json"), env=env, timeout=30)

    return home, run


def _refused(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """The one error line of a run refused before doing anything (exit 2)."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    (line,) = stderr_lines(proc)
    assert line.startswith("apache-manager: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def _obeyed(proc: subprocess.CompletedProcess) -> None:
    """The run went ahead and the INI threshold reached the reaper."""
    assert proc.returncode == 0, proc.stderr
    assert "without a threshold" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_trusted_ini_file_is_obeyed(ini_home):
    home, run = ini_home
    (home / ".apache-manager.ini").write_text("[apache-manager]\nhanging-worker-threshold = 1m\n")
    proc = run()
    assert proc.returncode == 0 and "without a threshold" in proc.stderr  # nothing to kill by
    (home / ".apache-manager.ini").write_text(INI)
    _obeyed(run())
    # Root's file in a sticky shared directory is fine (the kernel keeps others out).
    shared = home / ".apache-manager.d"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "10-mine.ini").write_text(INI)
    _obeyed(run())


def _world_writable(home: Path) -> Path:
    (home / ".apache-manager.ini").chmod(0o666)
    return home / ".apache-manager.ini"


def _group_writable(home: Path) -> Path:
    (home / ".apache-manager.ini").chmod(0o664)
    return home / ".apache-manager.ini"


def _nobodys(home: Path) -> Path:
    os.chown(home / ".apache-manager.ini", NOBODY, -1)
    return home / ".apache-manager.ini"


def _fifo(home: Path) -> Path:
    (home / ".apache-manager.ini").unlink()
    os.mkfifo(home / ".apache-manager.ini")
    return home / ".apache-manager.ini"


def _dev_zero(home: Path) -> Path:
    (home / ".apache-manager.ini").unlink()
    (home / ".apache-manager.ini").symlink_to("/dev/zero")
    return home / ".apache-manager.ini"


def _in_group_writable_dir(home: Path) -> Path:
    (home / ".apache-manager.d").mkdir()
    (home / ".apache-manager.d").chmod(0o775)
    (home / ".apache-manager.d" / "50-limits.ini").write_text(INI)
    return home / ".apache-manager.d" / "50-limits.ini"


def _nobodys_in_sticky_dir(home: Path) -> Path:
    (home / ".apache-manager.d").mkdir()
    (home / ".apache-manager.d").chmod(0o1777)
    planted = home / ".apache-manager.d" / "50-limits.ini"
    planted.write_text(INI)
    os.chown(planted, NOBODY, -1)
    return planted


def _nobodys_symlink(home: Path) -> Path:
    real = home / "limits.ini"
    real.write_text(INI)
    (home / ".apache-manager.ini").unlink()
    (home / ".apache-manager.ini").symlink_to(real)
    os.lchown(home / ".apache-manager.ini", NOBODY, -1)
    return home / ".apache-manager.ini"


def _directory(home: Path) -> Path:
    (home / ".apache-manager.d" / "50-limits.ini").mkdir(parents=True)
    return home / ".apache-manager.d" / "50-limits.ini"


def _huge(home: Path) -> Path:
    (home / ".apache-manager.ini").write_text(INI + "#" * (100 * 1024) + "\n")
    return home / ".apache-manager.ini"


@pytest.mark.parametrize("make, why", [
    (_world_writable, "is writable by others than its owner (mode 0666); run: chmod go-w"),
    (_group_writable, "is writable by others than its owner (mode 0664); run: chmod go-w"),
    (_nobodys, f"belongs to uid {NOBODY}, neither this user"),
    (_fifo, "is not a regular file (a FIFO)"),
    (_dev_zero, "(-> /dev/zero) is not a regular file (a character device)"),
    (_in_group_writable_dir, "apache-manager.d is writable by others than its owner "
                             "(mode 0775); run: chmod go-w"),
    (_nobodys_in_sticky_dir, f"belongs to uid {NOBODY} in the shared directory"),
    (_nobodys_symlink, f"the symlink {{path}} belongs to uid {NOBODY}"),
    (_directory, "is not a regular file (a directory)"),
    (_huge, "is larger than 64 KiB"),
])
def test_an_untrusted_ini_file_stops_the_run(ini_home, make, why):
    # Issue 19: root's "apache-manager -k" killed a worker because of nobody's
    # max-memory-idle = 1. Now such a file is one line and exit 2, nothing run
    # (not skipped: a threshold the admin set would then be lost unnoticed).
    home, run = ini_home
    (home / ".apache-manager.ini").write_text(INI)
    path = make(home)
    _refused(run(), f"INI file {path}", why.format(path=path))


@pytest.mark.parametrize("key, value, message", [
    ("max-memory-idle", "9" * 400, "size too large: '9999"),
    ("max-memory-active", "99999999999999999999999", "less than 8 EiB"),
    ("max-memory-active", "-5M", "not a size: '-5M'"),
    ("max-memory-idle", "5 monkeys", "not a size"),
    ("max-memory-idle", "10", "'10' without a unit is 10 bytes"),  # a forgotten unit
    ("worker-timeout", "9" * 400, "not a timespan"),
    ("worker-timeout", "1000y", "timespan too long: '1000y' (at most 100 years)"),
    ("worker-timeout", "1e9", "unknown time unit 'e'"),
    ("hanging-worker-threshold", "0.1ns", "timespan too short"),
    ("hanging-worker-threshold", "-1s", "not a timespan"),
])
def test_every_bad_ini_value_is_one_line_naming_file_and_key(ini_home, key, value, message):
    home, run = ini_home
    ini = home / ".apache-manager.d" / "20-x.ini"
    ini.parent.mkdir()
    ini.write_text(f"[apache-manager]\n{key} = {value}\n")
    line = _refused(run("-c", "-k", "-n", "-f", str(home / "m.txt")),
                    f"INI file {ini}: [apache-manager] {key}: ", message)
    assert "--max" not in line and "OverflowError" not in line
    assert len(line) < 400
    assert not (home / "m.txt").exists()


@pytest.mark.parametrize("key, value", [
    ("worker-timeout", "1ns"), ("worker-timeout", "1us"), ("worker-timeout", "2 years"),
    ("hanging-worker-threshold", "1us"), ("hanging-worker-threshold", "1ns"),
    ("max-memory-idle", "1 PiB"), ("max-memory-idle", "2 gigabytes"),
    ("max-memory-active", "7E"),
])
def test_the_originals_units_are_accepted_end_to_end(ini_home, key, value):
    # "1ns" passed the front end, then reached the reaper as repr(1e-09) and
    # was refused as "unknown time unit 'e'" under --max-time.
    home, run = ini_home
    lines = ["[apache-manager]", f"{key} = {value}"]
    if not key.startswith("max-memory"):
        lines.append("max-memory-idle = 100M")  # a threshold: the reaper runs
    (home / ".apache-manager.ini").write_text("\n".join(lines) + "\n")
    proc = run("-c", "-k", "-n", "-f", "-")
    assert proc.returncode == 0, proc.stderr
    assert "without a threshold" not in proc.stderr
    assert "unknown time unit" not in proc.stderr and "Traceback" not in proc.stderr
    assert "status-response\t1" in proc.stdout  # the collector ran with -T too


def test_tiny_timespans_reach_the_new_commands_as_themselves():
    from apache_metrics_exporter import config

    s = _settings("-k", "-c", "-t", "1ns", "-T", "1us", "-f", "-")
    (reaper, reaper_argv), (_, collector_argv) = manager.plan(s)
    args = config.parse(config.build_reaper_parser(), reaper_argv)
    assert args.max_time == pytest.approx(1e-9)
    args = config.parse(config.build_parser(), collector_argv)
    assert args.hanging_threshold == pytest.approx(1e-6)
    s = _settings("-k", "-t", "3144960000")  # the largest: 100 years
    args = config.parse(config.build_reaper_parser(), manager.plan(s)[0][1])
    assert args.max_time == 3144960000


def test_a_misspelled_key_is_named_with_the_nearest_one(ini_home):
    # Issue 21: the threshold was silently not applied.
    home, run = ini_home
    ini = home / ".apache-manager.ini"
    ini.write_text("[apache-manager]\nmax-memory-idel = 100M\nworker-timout = 5m\n"
                   "colour = blue\n")
    proc = run()
    assert proc.returncode == 0
    warnings = [ln for ln in stderr_lines(proc) if "is not an apache-manager setting" in ln]
    assert warnings == [
        f"apache-manager: warning: INI file {ini}: [apache-manager] max-memory-idel is not "
        "an apache-manager setting, ignored (did you mean max-memory-idle?)",
        f"apache-manager: warning: INI file {ini}: [apache-manager] worker-timout is not "
        "an apache-manager setting, ignored (did you mean worker-timeout?)",
        f"apache-manager: warning: INI file {ini}: [apache-manager] colour is not an "
        "apache-manager setting, ignored (the settings are max-memory-active, "
        "max-memory-idle, worker-timeout, hanging-worker-threshold)",
    ]
    assert "without a threshold" in proc.stderr  # indeed not applied
    # -qq silences warnings, as apache-manager's other messages; "-z" alone
    # prints errors only (a Zabbix agent takes stderr into the discovery JSON).
    assert "not an apache-manager setting" not in run("-k", "-n", "-qq").stderr
    assert "not an apache-manager setting" not in run("-z", "-f", "-").stderr


@pytest.mark.parametrize("content, message", [
    ("max-memory-idle = 1M\n", "line 1: a setting before any section header; put the "
                               "settings under an [apache-manager] line"),
    ("[apache-manager]\nmax-memory-idle = 1M\nmax-memory-idle = 2M\n",
     "line 3: [apache-manager] max-memory-idle is set twice; keep one"),
    ("[apache-manager]\n[apache-manager]\n", "line 2: section [apache-manager] appears twice"),
    ("[apache-manager]\nmax-memory-idle 1M\n\x1b[2J\n",
     "line 2, 3: expected 'key = value', a [section] line or a comment"),
])
def test_a_malformed_ini_file_is_one_clear_line(ini_home, content, message):
    home, run = ini_home
    (home / ".apache-manager.ini").write_text(content)
    line = _refused(run(), f"INI file {home / '.apache-manager.ini'}, {message}")
    assert "\x1b" not in line and "'" + "max-memory-idle 1M" not in line


def test_it_speaks_with_its_own_name_and_options(tmp_path):
    # The collector and the reaper run inside apache-manager: their messages
    # carry apache-manager's name and the option its user typed.
    url = f"http://127.0.0.1:{free_port()}/server-status"
    state = str(tmp_path / "s.json")
    missing = tmp_path / "no" / "m.txt"
    for flag in ("-f", "--data-file"):
        proc = run_manager("-c", flag, str(missing), "--url", url, "--state-file", state)
        assert proc.returncode == 2
        assert proc.stderr == (f"apache-manager: error: {flag} {missing}: directory "
                               f"{missing.parent} does not exist\n")
    for flag in ("-w", "--watch"):
        proc = run_manager(flag, "--url", url, "--state-file", state)
        assert proc.stderr == f"apache-manager: error: {flag} needs a terminal\n"
    proc = run_manager("-k", "-n", "-a", "1M", "--url", url, "--state-file", state)
    lines = stderr_lines(proc)
    assert lines and all(ln.startswith("apache-manager: ") for ln in lines), lines
    assert any("nothing listens on 127.0.0.1:" in ln and "(connection refused)" in ln
               for ln in lines), lines


def test_a_front_end_says_each_warning_once(tmp_path):
    # -c runs the collector's options through two parsers (the check before
    # any run, then the run): a warning about them is said once.
    env = manager_env(APACHE_METRICS_NO_SUCH_SETTING="1")
    proc = run_manager("-c", "-f", "-", "--url", f"http://127.0.0.1:{free_port()}/s",
                       "--state-file", str(tmp_path / "s.json"), env=env)
    assert proc.stderr.count("APACHE_METRICS_NO_SUCH_SETTING") == 1, proc.stderr


# ---------------------------------------------------------------------------
# The front end on a private Apache


@pytest.mark.integration
def test_collect_writes_the_original_file(prefork, tmp_path):
    out = tmp_path / "apache-manager.txt"
    state = tmp_path / "state.json"
    # Each run its own collector state: with one, the second run would add the
    # interval sections the first (no previous reading) could not have. And
    # -z's discovery, collected first in the same run, is no previous reading.
    env = {**manager_env(), "APACHE_METRICS_COLLECTOR_STATE": str(tmp_path / "c1.json")}
    proc = run_manager("--collect-metrics", "--data-file", str(out), "--url",
                       prefork.status_url, "--state-file", str(state), env=env)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert sections(text)[:4] == ["# Global Apache server metrics.",
                                  "# Metrics internal to apache-manager.",
                                  "# Memory usage of native Apache worker processes.",
                                  f"# Memory usage of {WSGI_GROUP!r} WSGI worker processes."]
    values = parse_tab(text)
    assert values["status-response"] == "0" and int(values["memory-usage native count"]) >= 1
    # -f - prints the same file on stdout; -z prints the discovery.
    env["APACHE_METRICS_COLLECTOR_STATE"] = str(tmp_path / "c2.json")
    proc = run_manager("-c", "-z", "-f", "-", "--url", prefork.status_url, "--state-file",
                       str(state), env=env)
    assert proc.returncode == 0
    first, rest = proc.stdout.split("\n", 1)
    assert json.loads(first)["data"][0] == {"{#NAME}": "native"}
    assert sections(rest) == sections(text)


@pytest.mark.integration
def test_ports_conf_gives_the_url_as_before(prefork, tmp_path):
    # As --help and docs/migration.md say: not simply the first Listen line,
    # but one where something listens, plain http first.
    assert "one where something\n                             listens" in \
        run_manager("--help").stdout
    ports = tmp_path / "ports.conf"
    ports.write_text(f"# comment\nListen 127.0.0.1:{free_port()}\n"
                     f"Listen 127.0.0.1:{prefork.port}\n\n<IfModule ssl_module>\n"
                     f"\tListen 127.0.0.1:{free_port()} https\n</IfModule>\n")
    out = tmp_path / "m.txt"
    proc = run_manager("-c", "-f", str(out), "--ports-config", str(ports), "--state-file",
                       str(tmp_path / "state.json"))
    assert proc.returncode == 0, proc.stderr
    assert parse_tab(out.read_text())["status-response"] == "0"


@pytest.mark.integration
def test_apache_down_is_written_not_lost(tmp_path):
    # The original raised and left the old file in place (status-response 1
    # never reached monitoring); now the file says so and cron sees status 0.
    out = tmp_path / "m.txt"
    out.write_text("old\n")
    proc = run_manager("-c", "-f", str(out), "--url",
                       f"http://127.0.0.1:{free_port()}/server-status",
                       "--state-file", str(tmp_path / "state.json"))
    assert proc.returncode == 0
    assert parse_tab(out.read_text())["status-response"] == "1"
    assert len(stderr_lines(proc)) == 1 and "error" in proc.stderr


# Three more daemon groups whose names the 17-character title cuts: two
# that the configuration completes, one it cannot (it shares its cut with
# the harness's own reporting-backend).
CUT_GROUPS = "".join(
    f"WSGIDaemonProcess {name} display-name=%{{GROUP}} processes=1 threads=1\n"
    for name in ("reporting-frontend", "scheduler-workers", "reporting-backend-2"))


@pytest.mark.integration
def test_cut_group_names_are_one_true_warning(tmp_path):
    from tests.harness.apache import ApacheServer

    with ApacheServer("prefork", extra_conf=CUT_GROUPS) as apache:
        state = str(tmp_path / "s.json")
        # apache-manager names groups as the title shows them: the
        # configuration is not asked, and the warning does not say it is.
        proc = run_manager("-k", "-n", "-a", "1G", "--url", apache.status_url,
                           "--state-file", state)
        assert proc.returncode == 0, proc.stderr
        cut = [ln for ln in stderr_lines(proc) if "cut short" in ln]
        assert cut == ["apache-manager: warning: mod_wsgi daemon group names 'reporting-b', "
                       "'reporting-f', 'scheduler-w' are cut short by the process title "
                       "(17 characters of room) and reported so; names of at most 10 "
                       "characters fit whole"], proc.stderr
        # The reaper completes what the configuration can tell, and says why
        # it could not for the rest.
        from tests.test_reaper import reap

        proc = reap("--url", apache.status_url, "--max-memory-idle", "1G", "--dry-run",
                    "--state-file", state)
        cut = [ln for ln in stderr_lines(proc) if "cut short" in ln]
        assert cut == ["apache-worker-reaper: warning: mod_wsgi daemon group name "
                       "'reporting-b' is cut short by the process title (17 characters of "
                       "room) and reported so: Apache's configuration could not tell the "
                       "whole name (unreadable, or several WSGIDaemonProcess names start "
                       "so); names of at most 10 characters fit whole"], proc.stderr


@pytest.mark.integration
def test_missing_data_file_directory_fails_the_cron_job(prefork, tmp_path):
    proc = run_manager("-c", "-f", str(tmp_path / "no" / "such" / "m.txt"), "--url",
                       prefork.status_url, "--state-file", str(tmp_path / "s.json"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def _hog(server, path: str, megabytes: int) -> int:
    body = server.get(f"{path}?hog={megabytes}").decode()
    return int(re.search(r"pid=(\d+)", body).group(1))


@pytest.mark.integration
def test_collect_and_kill_in_one_run(own_apache, tmp_path):
    pid = _hog(own_apache, "/daemon", 64)
    assert psutil.Process(pid).memory_info().rss > 64 << 20
    out, state = tmp_path / "m.txt", tmp_path / "state.json"
    ini = tmp_path / "apache-manager.ini"
    ini.write_text("[apache-manager]\nmax-memory-active = 48M\n")
    # A dry run first: nothing is killed, nothing counted as killed.
    proc = run_manager("-k", "-n", "--url", own_apache.status_url, "--state-file", str(state),
                       env=manager_env(**{manager.INI_ENV: str(ini)}))
    assert proc.returncode == 0, proc.stderr
    assert f"apache-manager: info: would kill mod_wsgi daemon {pid} " in proc.stderr
    assert psutil.pid_exists(pid) and "apache-worker-reaper" not in proc.stderr
    proc = run_manager("-c", "-k", "-f", str(out), "--url", own_apache.status_url,
                       "--state-file", str(state),
                       env=manager_env(**{manager.INI_ENV: str(ini)}))
    assert proc.returncode == 0, proc.stderr
    psutil.wait_procs([psutil.Process(pid)] if psutil.pid_exists(pid) else [], timeout=15)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    values = parse_tab(out.read_text())
    assert values["workers-killed-active"] == "1" and values["workers-killed-idle"] == "0"
    assert values["reaper-kills-total wsgi"] == "1"


@pytest.fixture
def terminal(tmp_path):
    if not shutil.which("tmux"):
        pytest.skip("tmux missing")
    term = Tmux(120, 40, tmp_path)
    try:
        yield term
    finally:
        term.close()


@pytest.mark.integration
def test_watch_and_summary_in_a_real_terminal(prefork, terminal):
    import shlex

    term = terminal
    term.wait_for("PROMPT$")
    run = " ".join(shlex.quote(a) for a in (
        sys.executable, "-m", "apache_metrics_exporter.manager", "--url", prefork.status_url))
    term.type(f"{manager.INI_ENV}= {run} -w")
    term.wait_for("sorted by memory")
    term.type("q", enter=False)
    term.wait_for_count("PROMPT$", 2)
    # No action: the human summary, as the original printed it on a terminal.
    term.type(f"{manager.INI_ENV}= {run} 2>/dev/null; echo DO\"\"NE")
    shown = term.wait_for("\nDONE")
    assert "native" in shown and "# Global Apache server metrics." not in shown
    assert "Traceback" not in shown


# ---------------------------------------------------------------------------
# Side by side with apache-manager 2.2 from PyPI

# How the original is pointed at the test's Apache, and only at it: a small
# wrapper imports it and (1) sets apache_manager.PORTS_CONF, the module
# constant its ports_config property returns, to a ports.conf in a temporary
# directory (the original has no URL option), (2) gives its update_dotdee
# ConfigLoader an explicit list of INI files (AM_INI_FILES, usually none)
# instead of its search of /etc and ~, (3) drops coloredlogs' syslog handler
# (messages stay on stderr), and (4) narrows PID 1's apache2 children to the
# daemon this test started, so a system Apache could never be picked. Its
# process discovery itself is untouched: it still needs the daemonised master
# (a child of PID 1).
WRAPPER = r'''
import os, sys
import apache_manager
apache_manager.PORTS_CONF = os.environ["AM_PORTS_CONF"]
import update_dotdee
_ini = [f for f in os.environ.get("AM_INI_FILES", "").split(os.pathsep) if f]
apache_manager.ConfigLoader = (
    lambda **kw: update_dotdee.ConfigLoader(available_files=_ini, **kw))
import coloredlogs
_install = coloredlogs.install
def _no_syslog(*args, **kw):
    kw.pop("syslog", None)
    return _install(*args, **kw)
coloredlogs.install = _no_syslog
import proc.apache
_tree = proc.apache.get_process_tree
def _only_ours(*args, **kw):
    init = _tree(*args, **kw)
    master = int(os.environ["AM_APACHE_PID"])
    init.children[:] = [c for c in init.children
                        if c.pid == master or c.exe_name != "apache2"]
    return init
proc.apache.get_process_tree = _only_ours
from apache_manager.cli import main
sys.argv[0] = "apache-manager"
sys.exit(main())
'''


def _restore_pipes(venv: Path) -> None:
    """Python 3.13 (Debian 13) removed the ``pipes`` module; the original's
    dependency executor 23.2 imports it and calls only ``pipes.quote``, which
    was ``shlex.quote`` all along. Where it is gone, the original's own
    virtualenv gets a one-line ``pipes`` with that function (a warning says
    so), so the comparison runs on both releases; nothing else changes."""
    python = str(venv / "bin" / "python")
    if subprocess.run([python, "-c", "import pipes"], capture_output=True,
                      timeout=60).returncode == 0:
        return
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    (Path(site) / "pipes.py").write_text("from shlex import quote  # removed in Python 3.13\n")
    warnings.warn("Python 3.13 has no pipes module: the original apache-manager runs with "
                  "pipes.quote = shlex.quote in its own virtualenv", stacklevel=1)


@pytest.fixture(scope="session")
def original_manager():
    """apache-manager 2.2 from PyPI in its own virtualenv (once per session)."""
    root = Path(tempfile.mkdtemp(prefix="ame-original-"))
    try:
        venv = root / "venv"
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True,
                       capture_output=True, timeout=120)
        try:
            pip = subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                 f"apache-manager=={ORIGINAL_VERSION}"],
                capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip("PyPI unreachable: pip install apache-manager timed out")
        if pip.returncode != 0:
            tail = " ".join(pip.stderr.split()[-30:])
            pytest.skip(f"PyPI unreachable or apache-manager {ORIGINAL_VERSION} not "
                        f"installable: {tail}")
        _restore_pipes(venv)
        wrapper = root / "apache-manager-original.py"
        wrapper.write_text(WRAPPER)
        yield [str(venv / "bin" / "python"), str(wrapper)]
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def daemon_apache():
    """A private prefork Apache whose parent is a child of PID 1, for the session."""
    server = DaemonApacheServer("prefork").start()
    try:
        yield server
    finally:
        server.stop()


class SideBySide:
    """The original and ours, with the same arguments on the same Apache."""

    def __init__(self, original: List[str], server, tmp: Path) -> None:
        self.original = original
        self.server = server
        self.tmp = tmp
        self.ports = tmp / "ports.conf"
        self.ports.write_text(f"Listen 127.0.0.1:{server.port}\n")

    def run_original(self, *args: str, ini: str = "") -> subprocess.CompletedProcess:
        env = manager_env(AM_PORTS_CONF=str(self.ports), AM_APACHE_PID=str(self.server.proc.pid),
                          HOME=str(self.tmp), AM_INI_FILES=ini)
        return subprocess.run([*self.original, *args], capture_output=True, text=True,
                              timeout=120, env=env)

    def run_ours(self, *args: str, ini: str = "") -> subprocess.CompletedProcess:
        # The same ports.conf: ours finds the URL the way the original did.
        return run_manager(*args, "--ports-config", str(self.ports), "--state-file",
                           str(self.tmp / "state.json"),
                           env=manager_env(HOME=str(self.tmp), **{manager.INI_ENV: ini}))


@pytest.fixture
def side_by_side(original_manager, daemon_apache, tmp_path):
    return SideBySide(original_manager, daemon_apache, tmp_path)


def _lines(text: str) -> List[List[str]]:
    return [ln.split("\t") for ln in text.splitlines()]


# Values that cannot move between two runs a moment apart on an idle server.
STABLE = ("status-response", "workers-hanging", "workers-killed-active", "workers-killed-idle",
          "native-worker-count", "foreign-worker-count", "busy-workers", "idle-workers")


def _compare_files(theirs: str, ours: str) -> List[str]:
    """Differences that matter; [] when ours is a drop-in for theirs."""
    problems = []
    a, b = _lines(theirs), _lines(ours)
    if len(b) < len(a):
        return [f"ours has {len(b)} lines, the original {len(a)}"]
    for x, y in zip(a, b):
        if len(x) != len(y) or x[:-1] != y[:-1]:
            problems.append(f"line {x!r} is {y!r} in ours")
            continue
        if len(x) == 1:
            continue  # comment or blank line: compared whole above
        key, va, vb = " ".join(x[:-1]), x[-1], y[-1]
        if ("." in va) != ("." in vb):  # int vs float rendering
            problems.append(f"{key}: {va!r} vs {vb!r} (number format)")
        elif key in STABLE or key.endswith(" count"):
            if va != vb:
                problems.append(f"{key}: {va} vs {vb}")
        elif key == "total-accesses":
            if not 0 <= int(vb) - int(va) <= 20:
                problems.append(f"{key}: {va} then {vb}")
        elif key == "uptime":
            if not 0 <= int(vb) - int(va) <= 30:
                problems.append(f"{key}: {va} then {vb}")
        elif key.startswith("memory-usage "):
            if not 0.7 < float(vb) / float(va) < 1.4:
                problems.append(f"{key}: {va} vs {vb} (RSS)")
    if b[len(a):] and b[len(a)] != [""]:
        problems.append("ours does not continue with a blank line before its new sections")
    return problems


@pytest.mark.integration
def test_metrics_file_key_by_key(side_by_side):
    theirs_file, ours_file = side_by_side.tmp / "theirs.txt", side_by_side.tmp / "ours.txt"
    problems: List[str] = []
    for _attempt in range(3):  # a worker starting between the two runs moves counts
        p1 = side_by_side.run_original("--collect-metrics", "--data-file", str(theirs_file))
        p2 = side_by_side.run_ours("--collect-metrics", "--data-file", str(ours_file))
        assert p1.returncode == 0, p1.stderr
        assert p2.returncode == 0, p2.stderr
        theirs, ours = theirs_file.read_text(), ours_file.read_text()
        problems = _compare_files(theirs, ours)
        if not problems:
            break
        time.sleep(1)
    assert not problems, "\n".join(problems) + "\n--- original:\n" + theirs + "--- ours:\n" + ours
    # The original's sections are all there, in its order, each key in its order.
    assert sections(ours)[:len(sections(theirs))] == sections(theirs)
    assert len(sections(theirs)) >= 4  # native + at least two mod_wsgi groups
    # -f - prints the same on stdout in both.
    p1 = side_by_side.run_original("-c", "-f", "-")
    p2 = side_by_side.run_ours("-c", "-f", "-")
    assert [ln.split("\t")[:-1] for ln in p1.stdout.splitlines()] == \
        [ln.split("\t")[:-1] for ln in p2.stdout.splitlines()[:len(p1.stdout.splitlines())]]


@pytest.mark.integration
def test_zabbix_discovery_is_byte_identical(side_by_side):
    theirs = side_by_side.run_original("--zabbix-discovery")
    ours = side_by_side.run_ours("--zabbix-discovery")
    assert theirs.returncode == ours.returncode == 0
    assert ours.stdout == theirs.stdout
    # A Zabbix agent takes stderr into the value: the truncated group name's
    # warning must not spoil an existing "apache-manager -z" UserParameter.
    assert ours.stderr == ""
    names = [d["{#NAME}"] for d in json.loads(ours.stdout)["data"]]
    assert names[0] == "native" and WSGI_GROUP in names
    assert run_manager("-z", "--url", side_by_side.server.status_url).stdout == theirs.stdout


def _slow_request(server, seconds: float) -> threading.Thread:
    def go() -> None:
        try:
            server.get(f"/embedded?sleep={seconds}", timeout=seconds + 30)
        except OSError:
            pass  # the worker may be killed by a later test's real kill

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


@pytest.mark.integration
@pytest.mark.parametrize("where", ["command line", "INI file"])
def test_dry_run_kill_selects_the_same_workers(side_by_side, where):
    server = side_by_side.server
    native = _hog(server, "/embedded", 48)   # a native worker, idle afterwards
    daemon = _hog(server, "/daemon", 48)     # a mod_wsgi daemon ("active" to the original)
    _slow_request(server, 40)                # a native worker busy for 40 s
    time.sleep(7)
    thresholds: tuple = ("--max-memory-active=32M", "--max-memory-idle=32M", "--max-time=5s")
    ini = ""
    if where == "INI file":
        path = side_by_side.tmp / "apache-manager.ini"
        path.write_text("[apache-manager]\nmax-memory-active = 32M\nmax-memory-idle = 32 MB\n"
                        "worker-timeout = 5 seconds\n")
        thresholds, ini = (), str(path)
    theirs = side_by_side.run_original("--dry-run", "--kill-workers", *thresholds, ini=ini)
    ours = side_by_side.run_ours("--dry-run", "--kill-workers", *thresholds, ini=ini)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    picked_theirs = {int(p) for p in re.findall(
        r"Killing (?:native|non-native|WSGI) worker (\d+)", theirs.stderr)}
    picked_ours = {int(p) for p in re.findall(
        r"would kill (?:native worker|mod_wsgi daemon) (\d+)", ours.stderr)}
    # The memory hogs, and the worker serving the slow request (it may be the
    # native hog itself: then it is over both limits, and picked once).
    assert {native, daemon} <= picked_theirs, theirs.stderr
    assert "sleep=40" in theirs.stderr and "sleep=40" in ours.stderr
    assert picked_ours == picked_theirs, theirs.stderr + "\n" + ours.stderr
    # Nothing was killed by either.
    assert psutil.pid_exists(native) and psutil.pid_exists(daemon)
    # The slow request (and an earlier test's, still running) is hanging by
    # -T 5s in both metrics files, and by neither with the default 5 minutes.
    for hanging in (("-T", "5s"), ()):
        theirs = side_by_side.run_original("-c", "-f", "-", *hanging)
        ours = side_by_side.run_ours("-c", "-f", "-", *hanging)
        count = int(parse_tab(theirs.stdout)["workers-hanging"])
        assert count >= 1 if hanging else count == 0
        assert parse_tab(ours.stdout)["workers-hanging"] == str(count)


# ---------------------------------------------------------------------------
# docs/migration.md says what works


DOC = Path(__file__).resolve().parent.parent / "docs" / "migration.md"


def _doc_blocks() -> List[str]:
    return re.findall(r"```\n(.*?)```", DOC.read_text(), re.S)


def test_migration_doc_lines_are_valid():
    from apache_metrics_exporter import config

    blocks = _doc_blocks()
    commands = [ln.split(" root ", 1)[1] for b in blocks for ln in b.splitlines()
                if ln.startswith(("* ", "*/"))]
    assert len(commands) == 4
    for command in commands:
        prog, *argv = command.split()
        if prog != "apache-manager":  # the new lines name the program by its full path
            assert prog.startswith("/usr/local/bin/"), prog
            prog = os.path.basename(prog)
        if prog == "apache-manager":
            assert manager.parse_args(argv).actions
        elif prog == "apache-metrics-exporter":
            config.parse(config.build_parser(), argv)
        else:
            assert prog == "apache-worker-reaper"
            args = config.parse(config.build_reaper_parser(), argv)
            assert args.max_memory_wsgi == [(None, 300 << 20)]


def test_migration_doc_config_files_mean_the_same(tmp_path):
    from apache_metrics_exporter import config

    ini, conf = [b for b in _doc_blocks() if "max-memory-idle = 150M" in b]
    (tmp_path / "old.ini").write_text(ini)
    (tmp_path / "new.conf").write_text(conf)
    old = _settings("-k", ini=str(tmp_path / "old.ini"))
    for source in (ini, conf):  # the old INI file works as the new config file too
        path = tmp_path / "x.conf"
        path.write_text(source)
        reaper = config.parse(config.build_reaper_parser(), ["--config", str(path)])
        assert (reaper.max_memory_active, reaper.max_memory_idle, reaper.max_time) == (
            old.max_memory_active, old.max_memory_idle, old.max_time)
        collector = config.parse(config.build_parser(), ["--config", str(path)])
        assert collector.hanging_threshold == old.hanging_threshold
    new = config.parse(config.build_reaper_parser(), ["--config", str(tmp_path / "new.conf")])
    assert new.max_memory_wsgi == [(None, old.max_memory_active)]


def test_one_file_named_for_two_kinds_of_state_is_refused_before_the_reaper_kills(
        tmp_path, monkeypatch, capsys):
    """Red team (redteam5): '-k -c -f PATH' with PATH the reaper's state file
    (or the collector state) ran the reaper - kills and all - and only then
    did the collector's run stop with exit 2 on the two kinds of state in one
    file: apache-manager promises its usage errors before anything is
    fetched or killed."""
    from apache_metrics_exporter import cli

    monkeypatch.setenv(manager.INI_ENV, "")
    ran = []
    monkeypatch.setattr(cli, "reaper_main", lambda argv: ran.append("reaper") or 0)
    monkeypatch.setattr(cli, "main", lambda argv: ran.append("collector") or 0)
    state = str(tmp_path / "reaper-state.json")
    status = manager.main(["-k", "-a", "1G", "-c", "-f", state, "--state-file", state,
                           "--url", "http://127.0.0.1:9/server-status"])
    err = capsys.readouterr().err
    assert status == 2 and ran == [], err
    (line,) = err.strip().splitlines()
    # (in apache-manager's own option names: -f is its --data-file)
    assert f"-f {state} and --state-file" in line and "give -f a file" in line
    assert os.listdir(tmp_path) == []
