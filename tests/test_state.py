"""The reaper's state file: refused when untrusted, moved aside when corrupt.

Two readers: the reaper (StateFile.locked, under the lock: a corrupt file is
moved aside, counted in state_resets, and the run goes on with fresh totals)
and the collector (state.read via snapshot.reaper_samples, no lock: it only
reports, leaves the reaper figures out and never crashes).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apache_metrics_exporter import cli
from apache_metrics_exporter.errors import OutputError
from apache_metrics_exporter.health import reaper_samples
from apache_metrics_exporter.push.spool import Spool
from apache_metrics_exporter.reaper import state
from apache_metrics_exporter.reaper.state import StateFile, fresh
from tests.conftest import exporter_env, parse_tab, run_exporter

NOBODY = pwd.getpwnam("nobody").pw_uid
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to nobody)")


@pytest.fixture
def down(tmp_path):
    """A run against a dead port that reads no state or spool of the machine's."""
    return ["--url", "http://127.0.0.1:9/server-status", "--no-processes",
            "--state-file", str(tmp_path / "no-state.json"),
            "--spool-dir", str(tmp_path / "no-spool")]
FORMATS = ["tab", "influx", "collectd", "prometheus", "text", "zabbix-discovery"]


def valid(**changes) -> dict:
    s = fresh(1_700_000_000)
    s["totals"]["runs"] = 7
    s["totals"]["kills"]["wsgi"] = 2
    s["last_run"] = {"time": 1_700_000_100, "dry_run": False, "checked": 3,
                     "killed_active": 1, "killed_idle": 0, "killed_wsgi": 1, "would_kill": 0,
                     "escalations": 0, "skipped": 0, "result": "ok"}
    for path, value in changes.items():
        where = s
        keys = path.split("__")
        for k in keys[:-1]:
            where = where[k]
        where[keys[-1]] = value
    return s


def dumps(s: dict) -> bytes:
    return json.dumps(s).encode()


# Every way the content can be wrong: (id, bytes, or a callable making the path).
CORRUPT = {
    "not-utf8": b'{"version": 1, "totals": "\xff\xfe"}',
    "deep-nesting": b"[" * 100_000,
    "deep-object": b'{"a":' * 50_000,
    "not-json": b'{"version": 1, "totals": {"kills": ',
    "empty": b"",
    "a-list": b"[1, 2, 3]",
    "last-run-string": dumps(valid(last_run="x")),
    "last-run-time-string": dumps(valid(last_run__time="x")),
    "killed-active-bool": dumps(valid(last_run__killed_active=True)),
    "killed-active-float": dumps(valid(last_run__killed_active=1.5)),
    "time-infinite": dumps(valid(last_run__time=1e400)).replace(b"Infinity", b"1e400"),
    "time-nan": dumps(valid(last_run__time=float("nan"))),
    "result-with-newline": dumps(valid(last_run__result="ok\nbusy-workers\t999")),
    "dry-run-string": dumps(valid(last_dry_run="x")),
    "dry-run-time-string": dumps(valid(last_dry_run={"time": "x"})),
    "runs-negative": dumps(valid(totals__runs=-1)),
    "runs-beyond-int64": dumps(valid(totals__runs=2**64)),
    "runs-string": dumps(valid(totals__runs="7")),
    "version-true": dumps(valid(version=True)),
    "version-2": dumps(valid(version=2)),
    "kills-missing": dumps(valid(totals__kills={"wsgi": 1})),
    "kills-extra-label": dumps(valid(totals__kills={"native_active": 0, "native_idle": 0,
                                                    "wsgi": 0, "evil\tkind": 1})),
    "counter-missing": dumps({k: v for k, v in valid().items()}
                             | {"totals": {"kills": valid()["totals"]["kills"],
                                           "reasons": valid()["totals"]["reasons"]}}),
    "huge": "huge",
    "directory": "directory",
    "fifo": "fifo",
}


def make(path, case: str) -> None:
    content = CORRUPT[case]
    if content == "huge":  # 300 MB, sparse: read limits, not disk space, are tested
        with open(path, "wb") as fh:
            fh.write(b'{"version": 1, "pad": "')
            fh.truncate(300 * 1024 * 1024)
    elif content == "directory":
        os.mkdir(path)
    elif content == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(content)
    if not os.path.isdir(path):
        os.chmod(path, 0o644)


# --- the reaper's path: StateFile.locked -------------------------------------------

@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_reaper_sets_corrupt_state_aside_and_goes_on(tmp_path, case, capsys):
    path = tmp_path / "s.json"
    make(path, case)
    with StateFile(str(path)).locked(5) as s:
        assert s["totals"]["state_resets"] == 1 and s["totals"]["runs"] == 0
        s["totals"]["runs"] += 1
    saved = json.loads(path.read_text())
    assert saved["totals"]["runs"] == 1 and saved["totals"]["state_resets"] == 1
    assert state.problem(saved) == ""
    aside = [p for p in os.listdir(tmp_path) if ".corrupt-" in p]
    assert len(aside) == 1 and aside[0].startswith("s.json.corrupt-")
    (line,) = capsys.readouterr().err.splitlines()
    assert "reaper state" in line and "moved aside to" in line and str(path) in line
    # The next run finds a good file and keeps counting.
    with StateFile(str(path)).locked(5) as s:
        s["totals"]["runs"] += 1
    assert json.loads(path.read_text())["totals"]["runs"] == 2


def test_reaper_refuses_a_directory_with_files_as_its_state_file(tmp_path):
    # --state-file /var/lib/apache-metrics-exporter (the directory), '..' or a
    # trailing slash: the whole directory - the collector's state and the
    # spool with it - was moved aside as a corrupt state file, and the reaper
    # went on to kill. Refused before any work (exit 1); an empty directory
    # is still set aside, as a corrupt file is (CORRUPT["directory"]).
    home = tmp_path / "ame"
    home.mkdir()
    (home / "collector-state.json").write_text("{}")
    for named in (str(home), str(home) + "/", str(home / "spool") + "/.."):
        with pytest.raises(OutputError, match="is a directory with files in it"):
            StateFile(named).check()
        with pytest.raises(OutputError, match="is a directory with files in it"):
            with StateFile(named).locked(5):
                pytest.fail("the state was handed out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ame"]
    assert os.listdir(home) == ["collector-state.json"]


def test_reaper_keeps_a_good_file_and_its_mode(tmp_path):
    path = tmp_path / "s.json"
    path.write_bytes(dumps(valid()))
    path.chmod(0o600)
    with StateFile(str(path)).locked(5) as s:
        assert s["totals"]["runs"] == 7
        s["totals"]["runs"] += 1
    assert json.loads(path.read_text())["totals"]["runs"] == 8
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["s.json", "s.json.lock"]
    assert (tmp_path / "s.json.lock").stat().st_mode & 0o777 == 0o600


def test_new_state_file_is_0644_and_lock_0600(tmp_path):
    path = tmp_path / "s.json"
    with StateFile(str(path)).locked(5) as s:
        s["totals"]["runs"] += 1
    assert path.stat().st_mode & 0o777 == 0o644  # read by a collector of another user
    assert (tmp_path / "s.json.lock").stat().st_mode & 0o777 == 0o600


def test_a_mistyped_state_directory_is_an_error_not_created(tmp_path):
    path = tmp_path / "no-such-dir" / "s.json"
    with pytest.raises(OutputError, match="cannot use --state-file"):
        with StateFile(str(path)).locked(5):
            pass
    assert not (tmp_path / "no-such-dir").exists()


def test_two_corrupt_files_in_one_second_keep_both(tmp_path, capsys):
    path = tmp_path / "s.json"
    for content in (b"one", b"two"):
        path.write_bytes(content)
        with StateFile(str(path)).locked(5):
            pass
    aside = sorted(p for p in os.listdir(tmp_path) if ".corrupt-" in p)
    assert len(aside) == 2
    assert {(tmp_path / p).read_bytes() for p in aside} == {b"one", b"two"}


# --- untrusted state files and locks: refused -----------------------------------------

def untrusted(tmp_path, how: str, which: str = "s.json"):
    path = tmp_path / "s.json"
    path.write_bytes(dumps(valid()))
    path.chmod(0o644)
    target = tmp_path / which
    if which.endswith(".lock"):
        target.touch(0o600)
        target.chmod(0o600)
    if how == "symlink":
        real = tmp_path / ("real-" + which)
        os.rename(target, real)
        target.symlink_to(real)
    elif how == "nobody":
        os.chown(target, NOBODY, -1)
    elif how == "world-writable":
        target.chmod(0o666)
    elif how == "group-writable":
        target.chmod(0o664)
    return path


HOW = ["symlink", pytest.param("nobody", marks=root_only), "world-writable", "group-writable"]
FIX = {"symlink": "is a symlink; refusing to follow it", "nobody": f"belongs to uid {NOBODY}",
       "world-writable": "chmod go-w", "group-writable": "chmod go-w"}


@pytest.mark.parametrize("which", ["s.json", "s.json.lock"])
@pytest.mark.parametrize("how", HOW)
def test_reaper_refuses_an_untrusted_state_file_or_lock(tmp_path, how, which):
    path = untrusted(tmp_path, how, which)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OutputError) as err:
        with StateFile(str(path)).locked(5):
            pytest.fail("the block must not run")
    message = str(err.value)
    assert str(tmp_path / which) in message and FIX[how] in message
    assert "\n" not in message
    assert sorted(os.listdir(tmp_path)) == before  # nothing moved, nothing written
    with pytest.raises(OutputError, match=FIX[how]):
        StateFile(str(path)).check()  # the same, before any other work


@pytest.mark.parametrize("how", HOW)
def test_collector_leaves_out_an_untrusted_state_file(tmp_path, how, capsys):
    path = untrusted(tmp_path, how)
    assert reaper_samples(str(path)) == []
    (line,) = capsys.readouterr().err.splitlines()
    assert str(path) in line and FIX[how] in line and "reaper figures left out" in line


def test_reaper_cli_refuses_untrusted_state_file_with_exit_1(tmp_path):
    path = untrusted(tmp_path, "world-writable")
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from apache_metrics_exporter.cli import "
         "reaper_main; sys.exit(reaper_main())", "--url", "http://127.0.0.1:9/server-status",
         "--max-memory-idle", "1G",
         "--state-file", str(path)],
        capture_output=True, text=True, timeout=60, env=exporter_env())
    assert proc.returncode == 1, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if str(path) in ln]
    assert "chmod go-w" in line and "Traceback" not in proc.stderr
    assert json.loads(path.read_text())["totals"]["runs"] == 7  # untouched


# --- the collector's path: reaper_samples and every format ----------------------------

def test_reaper_samples_of_a_good_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_bytes(dumps(valid()))
    values = {(s.metric.name, s.labels): s.value for s in reaper_samples(str(path))}
    # The file (written before 0.2.0) says killed_active 1 of which killed_wsgi 1.
    assert values[("reaper_last_run_kills", (("kind", "wsgi"),))] == 1
    assert values[("reaper_last_run_kills", (("kind", "native_active"),))] == 0
    assert values[("reaper_runs_total", ())] == 7
    assert values[("reaper_kills_total", (("kind", "wsgi"),))] == 2
    assert values[("reaper_last_run_timestamp_seconds", ())] == 1_700_000_100
    assert all(type(v) is int for v in values.values())


def test_a_dry_run_moves_no_reported_figure_but_would_kill(tmp_path):
    # DESIGN: dry runs change no counter but would-kill. The last run's time
    # and kills (workers-killed-* in the tab file) stay those of the last run
    # that could act, so they agree with reaper_runs_total (docs/tab.md).
    path = tmp_path / "s.json"
    s = valid()
    state.record_run(s, state.RunCounts(time=1_700_000_900, dry_run=True, checked=3,
                                        would_kill=2, result="dry-run"))
    s["totals"]["would_kill"] += 2
    path.write_bytes(dumps(s))
    values = {(m.metric.name, m.labels): m.value for m in reaper_samples(str(path))}
    assert values[("reaper_last_run_timestamp_seconds", ())] == 1_700_000_100
    assert values[("reaper_runs_total", ())] == 7
    assert values[("reaper_last_run_kills", (("kind", "wsgi"),))] == 1
    assert values[("reaper_would_kill_total", ())] == 2
    assert json.loads(path.read_text())["last_dry_run"]["would_kill"] == 2
    # A real run is the last run.
    state.record_run(s, state.RunCounts(time=1_700_001_000, checked=3))
    assert s["last_run"]["time"] == 1_700_001_000


def test_no_state_file_means_nothing_was_killed(tmp_path):
    values = {(s.metric.name, s.labels): s.value
              for s in reaper_samples(str(tmp_path / "none"))}
    assert values == {("reaper_last_run_kills", (("kind", k),)): 0
                      for k in ("native_active", "native_idle", "wsgi")}



def test_a_long_running_collector_reads_the_state_again_only_when_it_changed(
        tmp_path, monkeypatch, capsys):
    # A loop's every cycle read and checked the reaper's state (27 us of JSON
    # and checks): now only when it is another file or was written since -
    # the reaper replaces it whole, a chmod or chown changes its ctime.
    path = tmp_path / "s.json"
    path.write_bytes(dumps(valid()))
    reads = []
    real = state.read
    monkeypatch.setattr(state, "read", lambda p: reads.append(p) or real(p))

    def runs() -> int:
        return {s.metric.name: s.value for s in reaper_samples(str(path))}.get(
            "reaper_runs_total", -1)

    assert [runs() for _ in range(3)] == [7, 7, 7] and len(reads) == 1
    s = valid()
    s["totals"]["runs"] = 8
    new = tmp_path / "s.json.new"  # as the reaper writes it: a new file renamed over
    new.write_bytes(dumps(s))
    new.replace(path)
    assert [runs() for _ in range(2)] == [8, 8] and len(reads) == 2
    path.chmod(0o666)  # no longer trusted: read again, and left out
    assert reaper_samples(str(path)) == [] and len(reads) == 3
    assert "chmod go-w" in capsys.readouterr().err
    path.chmod(0o644)
    assert runs() == 8 and len(reads) == 4
    path.unlink()  # gone: no reaper ran
    assert runs() == -1 and len(reads) == 4

@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_collector_reports_corrupt_state_and_moves_nothing(tmp_path, case, capsys):
    path = tmp_path / "s.json"
    make(path, case)
    before = sorted(os.listdir(tmp_path))
    assert reaper_samples(str(path)) == []  # unknown, not zero
    (line,) = capsys.readouterr().err.splitlines()
    assert str(path) in line and "reaper figures left out" in line
    assert sorted(os.listdir(tmp_path)) == before


def absent(out: str) -> bool:
    """No reaper figure in the output (any format's spelling)."""
    return "reaper" not in out and "workers-killed" not in out and "killed" not in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_survives_every_corrupt_state(down, tmp_path, fmt, capfd):
    good = tmp_path / "good.json"
    good.write_bytes(dumps(valid()))
    assert cli.main([*down, "--format", fmt, "--state-file", str(good)]) == 0
    out, err = capfd.readouterr()
    if fmt != "zabbix-discovery":  # (discovery lists targets, no values)
        assert not absent(out), out  # the check below can see reaper figures
    for case in sorted(CORRUPT):
        path = tmp_path / f"{case}.json"
        make(path, case)
        status = cli.main([*down, "--format", fmt, "--state-file", str(path)])
        out, err = capfd.readouterr()
        assert status == 0, (case, err)
        assert "Traceback" not in err
        said = [ln for ln in err.splitlines() if str(path) in ln]
        assert len(said) == 1 and "reaper figures left out" in said[0], (case, err)
        assert absent(out), (case, out)
        if fmt == "tab":
            assert "status-response\t1" in out


def test_the_same_good_state_is_reported_in_every_format(down, tmp_path, capfd):
    path = tmp_path / "s.json"
    path.write_bytes(dumps(valid()))
    cli.main([*down, "--format", "tab", "--state-file", str(path)])
    tab = parse_tab(capfd.readouterr().out)
    assert tab["workers-killed-active"] == "1" and tab["reaper-runs-total"] == "7"
    cli.main([*down, "--format", "influx", "--state-file", str(path)])
    assert "runs=7i" in capfd.readouterr().out


def test_huge_state_file_is_not_read_into_memory(down, tmp_path):
    path = tmp_path / "s.json"
    make(path, "huge")
    # VmHWM: this process's own peak (ru_maxrss would carry over the peak of
    # the forking pytest process across exec, hundreds of MiB late in a run).
    code = ("import sys\nfrom apache_metrics_exporter.cli import main\n"
            "status = main(sys.argv[1:])\nsys.stdout.flush()\n"
            "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM:')][0]\n"
            "print(hwm.split()[1], file=sys.stderr)\n"
            "sys.exit(status)\n")
    proc = subprocess.run([sys.executable, "-c", code, *down, "--format", "tab",
                           "--state-file", str(path)],
                          capture_output=True, text=True, timeout=60, env=exporter_env())
    assert proc.returncode == 0, proc.stderr
    assert "is larger than" in proc.stderr
    max_rss_kib = int(proc.stderr.strip().splitlines()[-1])
    assert max_rss_kib < 100 * 1024  # the 300 MB file made it use 592 MiB once


def test_cli_warning_is_said_once_per_loop(down, tmp_path):
    path = tmp_path / "s.json"
    make(path, "deep-nesting")
    proc = run_exporter(*down, "--format", "influx", "--state-file", str(path), "--execd",
                        stdin="\n\n\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("apache_exporter,") == 3
    assert len([ln for ln in proc.stderr.splitlines() if str(path) in ln]) == 1


@pytest.mark.integration
def test_reaper_cli_sets_corrupt_state_aside(down, prefork, tmp_path):
    # The reaper's own run (a dry run on a private Apache), then the collector.
    for case in ("deep-nesting", "result-with-newline", "huge", "directory"):
        path = tmp_path / f"{case}.json"
        make(path, case)
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; from apache_metrics_exporter.cli import "
             "reaper_main; sys.exit(reaper_main())", "--url", prefork.status_url,
             "--max-memory-idle", "64G", "--dry-run", "--state-file", str(path)],
            capture_output=True, text=True, timeout=120, env=exporter_env())
        assert proc.returncode == 0, (case, proc.stderr)
        (line,) = [ln for ln in proc.stderr.splitlines() if "reaper state" in ln]
        assert "moved aside to" in line
        assert stat.S_ISREG(os.lstat(path).st_mode)
        assert json.loads(path.read_text())["totals"]["state_resets"] == 1
        tab = parse_tab(run_exporter(*down, "--state-file", str(path)).stdout)
        assert tab["reaper-state-resets-total"] == "1"


@root_only
def test_unprivileged_collector_reports_what_it_cannot_read(runnable_copy):
    # As installed: root's reaper state 0600 and push spool 0700; the exporter
    # run by another user (here nobody) leaves those figures out and says why.
    top = tempfile.mkdtemp(prefix="ame-private-")
    try:
        os.chmod(top, 0o755)
        path = os.path.join(top, "reaper-state.json")
        with open(path, "wb") as fh:
            fh.write(dumps(valid()))
        os.chmod(path, 0o600)
        spool = Spool(os.path.join(top, "spool"), 10_000)
        spool.ensure()
        spool.add("m f=1i 1\n", 1)
        proc = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             str(runnable_copy), "--url", "http://127.0.0.1:9/server-status", "--no-processes",
             "--format", "tab", "--state-file", path, "--spool-dir", spool.dir],
            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                             "HOME": "/"})
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        (state_line,) = [ln for ln in proc.stderr.splitlines() if path in ln]
        assert "Permission denied" in state_line and "reaper figures left out" in state_line
        (spool_line,) = [ln for ln in proc.stderr.splitlines() if spool.dir in ln]
        assert "Permission denied" in spool_line and "push figures left out" in spool_line
        values = parse_tab(proc.stdout)
        assert values["status-response"] == "1"
        assert not [k for k in values if "reaper" in k or "push" in k or "killed" in k]
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- property: any content is either a valid state or reported corrupt ---------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


def paths_of(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths_of(v, prefix + (k,))


@st.composite
def almost_valid(draw):
    """A good state with one value somewhere replaced by anything JSON can hold."""
    s = valid()
    where = draw(st.sampled_from(list(paths_of(s))[1:]))
    target = s
    for k in where[:-1]:
        target = target[k]
    target[where[-1]] = draw(JSON)
    return json.dumps(s).encode()


def check_reported(path) -> None:
    samples = reaper_samples(str(path))
    for s in samples:
        assert type(s.value) is int and 0 <= s.value < 2**63, s
        assert all(v in state.KINDS + state.REASONS for _, v in s.labels), s


@settings(max_examples=300, deadline=None)
@given(data=almost_valid() | st.binary(max_size=300))
def test_any_content_is_a_good_state_or_reported(data):
    top = tempfile.mkdtemp()
    try:
        path = os.path.join(top, "s.json")
        with open(path, "wb") as fh:
            fh.write(data)
        check_reported(path)  # the collector: never raises, never a wrong type
        with StateFile(path).locked(5) as s:  # the reaper: always a usable state
            assert state.problem(s) == ""
            s["totals"]["runs"] += 1
        with open(path, "rb") as fh:
            assert state.problem(json.loads(fh.read())) == ""
    finally:
        shutil.rmtree(top)


# --- state directories reached through symlinks ---------------------------------------
# /var/lib/apache-metrics-exporter -> /srv/ame, or a symlinked /var: a link
# among the directories owned by this user or root (outside a sticky
# world-writable directory) is followed, as for --output; only the last
# component - the state file, the spool directory - must not be a symlink.

def linked_dir(tmp_path, how: str):
    """(a directory reached through a symlink, the real directory)."""
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    if how == "link":  # tmp/a -> real (relative)
        (tmp_path / "a").symlink_to("real")
        return tmp_path / "a", real
    top = tmp_path / "top"  # tmp/p -> tmp/top (absolute), then top/real
    top.mkdir(mode=0o755)
    os.rename(real, top / "real")
    (tmp_path / "p").symlink_to(top)
    return tmp_path / "p" / "real", top / "real"


LINKED = ["link", "parent"]


@pytest.mark.parametrize("how", LINKED)
def test_reaper_state_in_a_symlinked_directory_is_kept(tmp_path, how):
    where, real = linked_dir(tmp_path, how)
    path = where / "reaper-state.json"
    for n in range(2):
        with StateFile(str(path)).locked(5) as s:
            assert s["totals"]["runs"] == n
            s["totals"]["runs"] += 1
    assert sorted(os.listdir(real)) == ["reaper-state.json", "reaper-state.json.lock"]
    assert json.loads((real / "reaper-state.json").read_text())["totals"]["runs"] == 2
    assert reaper_samples(str(path))  # the collector reads it there too
    (real / "reaper-state.json").write_bytes(b"not json")
    with StateFile(str(path)).locked(5) as s:  # set aside beside it, a fresh one kept
        s["totals"]["runs"] += 1
    assert [p for p in os.listdir(real) if ".corrupt-" in p]
    assert json.loads((real / "reaper-state.json").read_text())["totals"]["runs"] == 1


@pytest.mark.parametrize("how", LINKED)
def test_private_files_are_written_through_a_symlinked_directory(tmp_path, how):
    from apache_metrics_exporter.output import write_private

    where, real = linked_dir(tmp_path, how)
    write_private(str(where / "f.json"), "{}\n", 0o600)
    assert (real / "f.json").read_text() == "{}\n"
    assert (real / "f.json").stat().st_mode & 0o777 == 0o600
    assert not (where / "f.json").is_symlink()


@pytest.mark.parametrize("how", LINKED)
def test_collector_state_in_a_symlinked_directory_keeps_the_counts(tmp_path, how):
    from apache_metrics_exporter import restarts
    from tests.test_restarts import T0, counts, snap

    where, real = linked_dir(tmp_path, how)
    path = str(where / "collector-state.json")
    first, graceful, hard = snap(uptime=100, at=T0), snap(uptime=110, config=2, at=T0 + 10), \
        snap(uptime=2, at=T0 + 20)
    for s in (first, graceful, hard):
        restarts.track([s], path, explicit=True)
    assert counts(first) == {"graceful": 0, "hard": 0}
    assert counts(graceful) == {"graceful": 1, "hard": 0}
    assert counts(hard) == {"graceful": 1, "hard": 1}
    assert json.loads((real / "collector-state.json").read_text())["targets"]


@pytest.mark.parametrize("how", LINKED)
def test_spool_in_a_symlinked_directory_keeps_its_batches(tmp_path, how):
    where, real = linked_dir(tmp_path, how)
    spool = Spool(str(where / "spool"), 10_000)
    spool.ensure()
    with spool.locked():
        batch = spool.add("m f=1i 1\n", 1)
        spool.save_state(spool.load_state())
    assert spool.read(batch) == "m f=1i 1\n"
    assert sorted(os.listdir(real / "spool")) == sorted(
        [".lock", "quarantine", "state.json", os.path.basename(batch.path)])
    assert spool.health().spooled_points == 1


def sticky_link(tmp_path, owner: int, sticky: bool = True):
    """tmp/sticky (mode 1777, like /tmp) holding evil -> tmp/real owned by ``owner``."""
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    sticky_dir = tmp_path / "sticky"
    sticky_dir.mkdir()
    sticky_dir.chmod(0o1777 if sticky else 0o755)
    link = sticky_dir / "evil"
    link.symlink_to(real)
    os.lchown(link, owner, -1)
    return link, real


REFUSED = [pytest.param(True, id="sticky"), pytest.param(False, id="plain")]


@root_only
@pytest.mark.parametrize("sticky", REFUSED)
def test_another_users_directory_symlink_is_refused_everywhere(tmp_path, sticky, capsys):
    from apache_metrics_exporter import restarts
    from apache_metrics_exporter.output import write_private
    from tests.test_restarts import counts, snap

    link, real = sticky_link(tmp_path, NOBODY, sticky)
    (real / "s.json").write_bytes(dumps(valid()))
    why = (f"the directory symlink {link} is not followed (owned by uid {NOBODY}")
    with pytest.raises(OutputError, match=f"--state-file {link}/s.json: ") as err:
        with StateFile(str(link / "s.json")).locked(5):
            pytest.fail("the block must not run")
    assert why in str(err.value) and "give the real path" in str(err.value)
    with pytest.raises(OutputError, match=why.replace("(", r"\(")):
        StateFile(str(link / "s.json")).check()
    with pytest.raises(OutputError, match=why.replace("(", r"\(")):
        Spool(str(link / "spool"), 10_000).ensure()
    with pytest.raises(OutputError, match=why.replace("(", r"\(")):
        write_private(str(link / "f.json"), "{}\n")
    s = snap()
    restarts.track([s], str(link / "collector.json"), explicit=True)
    assert counts(s) == {}
    assert reaper_samples(str(link / "s.json")) == []
    err = capsys.readouterr().err
    assert err.count(why) == 2 and "restart counts left out" in err
    assert "reaper figures left out" in err
    assert os.listdir(real) == ["s.json"]  # nothing written through it
    assert (real / "s.json").read_bytes() == dumps(valid())


@root_only
def test_own_directory_symlink_in_a_sticky_directory_is_followed(tmp_path):
    link, real = sticky_link(tmp_path, os.geteuid())
    with StateFile(str(link / "s.json")).locked(5) as s:
        s["totals"]["runs"] += 1
    assert json.loads((real / "s.json").read_text())["totals"]["runs"] == 1


@root_only
def test_reaper_cli_refuses_a_foreign_directory_symlink_with_exit_1(tmp_path):
    link, real = sticky_link(tmp_path, NOBODY)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from apache_metrics_exporter.cli import "
         "reaper_main; sys.exit(reaper_main())", "--url", "http://127.0.0.1:9/server-status",
         "--max-memory-idle", "1G", "--state-file", str(link / "s.json")],
        capture_output=True, text=True, timeout=60, env=exporter_env())
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"the directory symlink {link} is not followed" in line
    assert "Traceback" not in proc.stderr and os.listdir(real) == []


@pytest.mark.integration
@pytest.mark.parametrize("how", LINKED)
def test_real_reaper_dry_run_saves_its_counters_through_a_symlinked_directory(
        prefork, tmp_path, how):
    from tests.test_reaper import reap

    where, real = linked_dir(tmp_path, how)
    for _ in range(2):
        proc = reap("--url", prefork.status_url, "--max-memory-idle", "1M", "--dry-run",
                    "--state-file", str(where / "reaper-state.json"))
        assert proc.returncode == 0, proc.stderr
    saved = json.loads((real / "reaper-state.json").read_text())
    assert saved["last_dry_run"]["result"] == "dry-run" and saved["last_run"] is None
    assert saved["totals"]["would_kill"] >= 2  # both runs counted (idle workers > 1M)


@pytest.mark.integration
@pytest.mark.parametrize("how", LINKED)
def test_collector_through_a_symlinked_directory_keeps_restart_counts(prefork, tmp_path, how):
    where, real = linked_dir(tmp_path, how)
    args = ["--url", prefork.status_url, "--format", "tab",
            "--collector-state", str(where / "collector-state.json")]
    for _ in range(2):
        proc = run_exporter(*args)
        assert proc.returncode == 0, proc.stderr
        assert "restart counts left out" not in proc.stderr
        tab = parse_tab(proc.stdout)
        assert (tab["restarts-graceful"], tab["restarts-hard"]) == ("0", "0")
    saved = json.loads((real / "collector-state.json").read_text())
    assert list(saved["targets"]) == [prefork.status_url]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
@pytest.mark.parametrize("how", LINKED)
def test_push_outage_spools_through_a_symlinked_directory_and_delivers_later(
        prefork, victoria, tmp_path, how):
    from tests.test_push import push_args, timestamps

    where, real = linked_dir(tmp_path, how)
    spool = str(where / "spool")
    base = ["--url", prefork.status_url, "--no-processes"]
    down = run_exporter(*base, *push_args(f"http://127.0.0.1:{closed_port()}", spool))
    assert down.returncode == 0, down.stderr
    (line,) = down.stderr.strip().splitlines()
    assert "points kept in" in line, line
    (kept,) = Spool(str(real / "spool"), 1).batches()
    up = run_exporter(*base, *push_args(victoria.url, spool))
    assert up.returncode == 0 and up.stderr == "", up.stderr
    assert Spool(str(real / "spool"), 1).batches() == []
    stamps = timestamps(victoria, "apache_exporter_up", 2)
    assert len(set(stamps)) == 2  # the spooled batch and the new one, each once
    assert int(os.path.basename(kept.path).split(".")[0]) // 1_000_000 == min(stamps)


# --- redteam3: one file named twice --------------------------------------------------

@pytest.mark.parametrize("given", ["same", "through-a-link", "output"])
def test_one_file_named_for_two_kinds_of_state_is_refused_before_anything_runs(
        down, tmp_path, given, capsys):
    """Red team (redteam3): --collector-state (or --output) naming the reaper's
    state file - a shared config file's slip - made each of the collector and
    the reaper set the other's content aside as corrupt at every run: the
    reaper's counters reported as reset, the restart counts never kept, and
    a new NAME.corrupt-EPOCH file every cycle until the disk filled. Refused
    as a usage error (exit 2), one line naming both options, nothing touched."""
    path = tmp_path / "s.json"
    path.write_bytes(dumps(valid()))
    path.chmod(0o644)
    other = str(path)
    if given == "through-a-link":
        (tmp_path / "link").symlink_to(tmp_path)
        other = str(tmp_path / "link" / "s.json")
    option = "--output" if given == "output" else "--collector-state"
    status = cli.main([*down, "--format", "tab", "--state-file", str(path), option, other])
    err = capsys.readouterr().err
    assert status == 2, err
    (line,) = err.strip().splitlines()
    assert option in line and "--state-file" in line and "the same file" in line
    assert sorted(os.listdir(tmp_path)) == (["link", "s.json"] if given == "through-a-link"
                                            else ["s.json"])
    assert json.loads(path.read_text()) == valid()


def test_the_spools_own_state_is_no_collector_state(tmp_path, capsys):
    spool = tmp_path / "spool"
    status = cli.main(["--url", "http://127.0.0.1:9/server-status", "--no-processes",
                       "--format", "influxdb", "--influxdb-url", "http://127.0.0.1:9/",
                       "--influxdb-token", "t", "--influxdb-org", "o",
                       "--influxdb-bucket", "b", "--spool-dir", str(spool),
                       "--state-file", str(tmp_path / "r.json"),
                       "--collector-state", str(spool / "state.json")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "--collector-state" in err and "--spool-dir" in err
    assert not spool.exists()


@pytest.mark.parametrize("slash", ["", "/"])
def test_a_state_path_naming_a_directory_with_files_in_it_moves_nothing(
        tmp_path, slash, capsys):
    """Red team (redteam5): a state path naming the directory that holds the
    state ('collector-state = /var/lib/apache-metrics-exporter/', the file
    name forgotten) was read as a corrupt state file: the whole directory -
    the reaper's counters, the spool's batches - moved aside to
    NAME.corrupt-EPOCH and a state file written in its place, so every
    reaper run then failed; as root, '/var/lib/' would have moved /var/lib.
    A directory with files in it is refused, nothing moved; an empty one is
    still set aside as before."""
    from apache_metrics_exporter import restarts
    from tests.test_restarts import T0, snap

    held = tmp_path / "ame"
    held.mkdir(mode=0o755)
    (held / "reaper-state.json").write_bytes(dumps(valid()))
    (held / "reaper-state.json").chmod(0o644)
    (held / "spool").mkdir(mode=0o755)
    restarts.track([snap(uptime=100, at=T0)], str(held) + slash, explicit=True)
    err = capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["ame"], err
    assert sorted(os.listdir(held)) == ["reaper-state.json", "spool"]
    assert "is a directory" in err and "Traceback" not in err
    with pytest.raises(OutputError, match="is a directory"):
        with StateFile(str(held) + slash).locked(5):
            pytest.fail("the block must not run")
    with pytest.raises(OutputError, match="is a directory"):
        StateFile(str(held) + slash).check()
    assert sorted(os.listdir(tmp_path)) == ["ame"]
    assert json.loads((held / "reaper-state.json").read_text()) == valid()


def test_no_reaper_state_gives_the_same_zero_counts_each_time(tmp_path):
    """The figures without a state file are made once and handed out anew:
    a caller extending its list changes nothing the next one gets."""
    path = str(tmp_path / "none")
    first = reaper_samples(path)
    assert {(s.metric.name, s.labels): s.value for s in first} == {
        ("reaper_last_run_kills", (("kind", k),)): 0
        for k in ("native_active", "native_idle", "wsgi")}
    first.append("changed by a caller")
    assert reaper_samples(path) == first[:-1] == reaper_samples(None)
    assert reaper_samples(path) is not reaper_samples(path)
