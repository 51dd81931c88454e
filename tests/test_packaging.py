"""The packages as a user gets them: the wheel and sdist (``make dist``) and
the Debian package (``make deb``), built from this checkout into temporary
directories, installed, run against a private Apache, upgraded, removed.

The .deb test installs the package on this machine with ``apt-get install
./...deb`` (root only) and leaves the machine as it found it: it skips when
the package (or one of its files) is there already, or when installing it
would pull in other packages (``make deps`` installs its dependencies), and
it compares listings of /etc, /usr/bin, the systemd unit directories and the
man pages from before and after. PACKAGING_DEB=PATH tests a .deb that ``make
deb`` built instead of building one (the upgrade is then a reinstall only).
"""

from __future__ import annotations

import configparser
import gzip
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from tests.conftest import exporter_env, parse_tab

ROOT = Path(__file__).resolve().parent.parent
PKG = "apache-metrics-exporter"
STATE_DIR = Path("/var/lib/apache-metrics-exporter")
CONFFILES = {"/etc/apache-metrics-exporter.conf", "/etc/default/apache-metrics-exporter-endpoint"}
UNITS = ("apache-metrics-exporter.service", "apache-metrics-exporter-endpoint.service",
         "apache-worker-reaper.service", "apache-worker-reaper.timer")
SYSTEM_PYTHON = "/usr/bin/python3"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
APT = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=300"]


def packaging(test):
    """Marks a test that builds or installs a package (``-m packaging``)."""
    return pytest.mark.integration(pytest.mark.packaging(test))


def console_scripts() -> Set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return {line.split("=")[0].strip() for line in lines}


def version() -> str:
    text = (ROOT / "apache_metrics_exporter" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def run(*argv: str, env: Dict[str, str] = None, timeout: float = 300,
        cwd: Path = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def must(*argv: str, **kw) -> subprocess.CompletedProcess:
    proc = run(*argv, **kw)
    assert proc.returncode == 0, f"{' '.join(argv)}: exit {proc.returncode}\n" + (
        proc.stdout + proc.stderr)[-4000:]
    return proc


# Tools make deps does not install, and what their absence means.
_NOT_FROM_DEPS = {"systemctl": "this host has no systemd (a container or chroot): the "
                               "check that the package enables no unit cannot run"}


def need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    outside = [f"{t} not installed: {_NOT_FROM_DEPS[t]}" for t in missing
               if t in _NOT_FROM_DEPS]
    if outside:
        pytest.skip("; ".join(outside))
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make deps installs them)")


# --- the configuration file the package installs ------------------------------

def _keys(text: str) -> Dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def test_packaged_config_is_the_documented_example_commented_out():
    packaged = (ROOT / "packaging" / "debian" / "apache-metrics-exporter.conf").read_text()
    assert not [ln for ln in packaged.splitlines() if ln.strip() and not ln.startswith("#")]
    doc = (ROOT / "docs" / "configuration.md").read_text()
    example = re.search(r"```ini\n# /etc/apache-metrics-exporter.conf\n(.*?)```", doc, re.S)
    documented = _keys("\n".join(ln for ln in example.group(1).splitlines()
                                 if not ln.startswith("#")))
    commented = _keys("\n".join(ln[1:] for ln in packaged.splitlines()
                                if re.match(r"#[a-z-]+ = ", ln)))
    assert commented == documented


# --- building --------------------------------------------------------------------

@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """``make dist`` in a copy of the checkout: the wheel and the sdist."""
    need("twine")
    if run(SYSTEM_PYTHON, "-m", "build", "--version").returncode != 0:
        pytest.skip("python3-build not installed (make deps installs it)")
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "dist", "build", "*.egg-info", "__pycache__", ".*_cache",
        ".hypothesis"))
    out = tmp / "dist"
    must(SYSTEM_PYTHON, "-m", "build", "--no-isolation", "--outdir", str(out), str(src),
         cwd=src)
    must("twine", "check", "--strict", *map(str, out.iterdir()))
    return out


def _only(directory: Path, pattern: str) -> Path:
    (found,) = directory.glob(pattern)
    return found


@packaging
def test_wheel_and_sdist_carry_version_man_pages_and_packaging(dist):
    v = version()
    wheel = _only(dist, f"apache_metrics_exporter-{v}-py3-none-any.whl")
    sdist = _only(dist, f"apache[-_]metrics[-_]exporter-{v}.tar.gz")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    man = {n.rsplit("/", 1)[1] for n in names if "/data/share/man/man1/" in n}
    assert man == {f"{c}.1" for c in console_scripts()}
    entry = zipfile.ZipFile(wheel).read(f"apache_metrics_exporter-{v}.dist-info/entry_points.txt")
    assert {ln.split("=")[0].strip() for ln in entry.decode().splitlines() if "=" in ln} \
        == console_scripts()
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"packaging/debian/control", "packaging/debian/rules", "scripts/build-deb.sh",
            "contrib/systemd/apache-worker-reaper.timer", "docs/man/apache-manager.1",
            "LICENSE"} <= members


@packaging
def test_wheel_in_a_fresh_virtualenv_gives_commands_and_man_pages(dist, prefork, tmp_path):
    """pip install of the wheel: the three commands work and ``man`` finds
    their pages through PATH alone (man-db maps VENV/bin to VENV/share/man)."""
    need("man")
    venv = tmp_path / "venv"
    # Debian's psutil, lxml and configargparse (make deps): no download.
    must(SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv))
    wheel = _only(dist, "*.whl")
    must(str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel))
    env = {k: v for k, v in exporter_env().items() if k != "MANPATH"}
    env["PATH"] = f"{venv}/bin:/usr/bin:/bin"
    for command in sorted(console_scripts()):
        out = must(command, "--version", env=env).stdout
        assert version() in out
        page = must("man", "-w", command, env=env).stdout.strip()
        assert page == f"{venv}/share/man/man1/{command}.1"
    must("apache-metrics-exporter", "--url", prefork.status_url, "--format", "tab",
         "--output", str(tmp_path / "m.txt"), env=env)
    assert parse_tab((tmp_path / "m.txt").read_text())["status-response"] == "0"


# --- the Debian package -------------------------------------------------------------

def dpkg_status(package: str = PKG) -> str:
    """'' when dpkg knows nothing of it, else its status ('install ok installed',
    'deinstall ok config-files', ...)."""
    proc = run("dpkg-query", "-W", "-f=${Status}", package)
    return proc.stdout.strip() if proc.returncode == 0 else ""


@pytest.fixture(scope="module")
def debs(dist, tmp_path_factory) -> List[Path]:
    """The .deb (``make deb``'s script, from the sdist), and the same package
    as revision 2 to upgrade to (repacked with the next version: building it
    again would take the same minute for the same files)."""
    given = os.environ.get("PACKAGING_DEB")
    if given:
        return [Path(given)]
    if os.geteuid() != 0:
        pytest.skip("installing a .deb needs root")
    need("dpkg-buildpackage", "dh", "dh_python3", "lintian")
    out = tmp_path_factory.mktemp("deb")
    env = {**os.environ, "SDIST": str(_only(dist, "*.tar.gz")), "LINTIAN": "0"}
    proc = must("sh", str(ROOT / "scripts" / "build-deb.sh"), str(out), env=env, timeout=900)
    first = Path(proc.stdout.strip().splitlines()[-1])
    assert first.name == f"{PKG}_{version()}-1_all.deb"
    tree = out / "tree"
    must("dpkg-deb", "-R", str(first), str(tree))
    control = tree / "DEBIAN" / "control"
    control.write_text(control.read_text().replace(f"Version: {version()}-1\n",
                                                   f"Version: {version()}-2\n"))
    second = out / f"{PKG}_{version()}-2_all.deb"
    must("dpkg-deb", "--root-owner-group", "-b", str(tree), str(second))
    return [first, second]


@packaging
def test_lintian_finds_no_error_and_each_warning_is_explained(debs):
    need("lintian")
    proc = run("lintian", "--fail-on", "none", str(debs[0]), timeout=600)
    tags = re.findall(r"^([EWIPX]): \S+: (\S+)", proc.stdout, re.M)
    assert proc.returncode == 0 and not [t for t in tags if t[0] == "E"], proc.stdout
    explained = (ROOT / "CONTRIBUTING.md").read_text()
    unexplained = {tag for level, tag in tags if level == "W" and f"`{tag}`" not in explained}
    assert not unexplained, f"explain in CONTRIBUTING.md or override: {unexplained}"


@packaging
def test_deb_contents(debs):
    """What a user finds after installing, read from the archive."""
    with tarfile.open(fileobj=_fsys(debs[0])) as tar:
        members = {m.name.lstrip("."): m for m in tar.getmembers()}
        units = {n.rsplit("/", 1)[1]: tar.extractfile(m).read().decode()
                 for n, m in members.items() if "/systemd/system/" in n and m.isfile()}
    for command in console_scripts():
        assert members[f"/usr/bin/{command}"].mode == 0o755
        assert f"/usr/share/man/man1/{command}.1.gz" in members
    assert set(units) == set(UNITS)
    for name, text in units.items():
        assert "/usr/local/" not in text, name
        for exe in re.findall(r"^ExecStart=(\S+)", text, re.M):
            assert exe[len("/usr/bin/"):] in console_scripts(), (name, exe)
    assert "EnvironmentFile=-/etc/default/apache-metrics-exporter-endpoint" in \
        units["apache-metrics-exporter-endpoint.service"]
    state = members[str(STATE_DIR)]
    assert state.isdir() and (state.uid, state.gid, state.mode) == (0, 0, 0o755)
    for conffile in CONFFILES:
        assert members[conffile].mode == 0o644
    control = must("dpkg-deb", "-f", str(debs[0]), "Version", "Depends").stdout
    assert f"Version: {version()}-" in control
    assert "python3-psutil" in control and "influxdb" not in control  # vendored instead
    assert "/usr/share/apache-metrics-exporter/vendor/influxdb_client/__init__.py" in members
    docs = "/usr/share/doc/apache-metrics-exporter/"
    assert [n for n in members if n.startswith(f"{docs}docs/configuration.md")]  # .gz
    assert not [n for n in members if n.startswith(f"{docs}docs/man")]  # in man1 only
    assert "/usr/local/" not in tar_text(debs[0], f"{docs}examples/collectd/{PKG}.conf")


def tar_text(deb: Path, path: str) -> str:
    with tarfile.open(fileobj=_fsys(deb)) as tar:
        return tar.extractfile("." + path).read().decode()


def _fsys(deb: Path):
    import io

    return io.BytesIO(must_bytes("dpkg-deb", "--fsys-tarfile", str(deb)))


def must_bytes(*argv: str) -> bytes:
    proc = subprocess.run(list(argv), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


# What the host looks like, as listings: (path, type, mode, uid, gid).
SNAPSHOT_TREES = ("/etc", "/usr/bin", "/usr/sbin", "/usr/share/man/man1",
                  "/usr/lib/systemd/system", "/lib/systemd/system",
                  "/var/lib/systemd/deb-systemd-helper-enabled",
                  "/var/lib/systemd/deb-systemd-helper-masked")
SNAPSHOT_LEVELS = ("/usr/share", "/usr/lib", "/var/lib")  # their entries only


def snapshot() -> Set[Tuple]:
    entries = set()

    def add(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        entries.add((path, stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                     st.st_uid, st.st_gid))

    for tree in SNAPSHOT_TREES:
        for top, dirs, files in os.walk(tree):
            for name in dirs + files:
                add(os.path.join(top, name))
    for level in SNAPSHOT_LEVELS:
        for name in os.listdir(level):
            if os.path.join(level, name) != str(STATE_DIR):  # checked on its own
                add(os.path.join(level, name))
    return entries


def changed(before: Set[Tuple], after: Set[Tuple]) -> List[str]:
    """Paths that differ, less those another package owns now (an install
    running beside this test, e.g. another checkout's make deps)."""
    paths = sorted({e[0] for e in before ^ after})
    if not paths:
        return []
    owned = run("dpkg-query", "-S", *paths).stdout
    owners = {line.split(": ", 1)[1] for line in owned.splitlines() if ": " in line}
    return [p for p in paths if p not in owners]


def apt(*args: str) -> subprocess.CompletedProcess:
    return must(*APT, *args, env={**os.environ, **APT_ENV}, timeout=600)


def installed_commands_env(tmp: Path) -> Dict[str, str]:
    env = {k: v for k, v in exporter_env().items() if k != "MANPATH"}
    env["PATH"] = "/usr/bin:/bin"  # cron's and systemd's: the packaged commands
    env["HOME"] = str(tmp)
    return env


@packaging
def test_deb_installs_runs_upgrades_and_purges_without_a_trace(debs, prefork, victoria,
                                                              tmp_path):
    need("apt-get", "dpkg-query", "man", "systemctl")
    if os.geteuid() != 0:
        pytest.skip("installing a .deb needs root")
    if dpkg_status():
        pytest.skip(f"{PKG} is already known to dpkg ({dpkg_status()}): the test installs "
                    "and purges it, so it leaves a package it did not install alone")
    present = [f for f in CONFFILES if os.path.lexists(f)]
    if present:
        pytest.skip(f"{', '.join(present)} exist(s) without the package: not overwritten")
    plan = run(*APT, "--simulate", "install", str(debs[0]), env={**os.environ, **APT_ENV})
    others = [ln.split()[1] for ln in plan.stdout.splitlines()
              if ln.startswith("Inst ") and ln.split()[1] != PKG]
    if plan.returncode != 0 or others:
        pytest.skip("installing the .deb would install other packages too "
                    f"({' '.join(others) or plan.stderr.strip()}): run make deps first")
    # A state directory left by something else (a pip install, a test that
    # did not use its own state paths) is not the package's: it is moved
    # aside while the package is installed (purge deletes the directory) and
    # put back as it was afterwards.
    before = snapshot()
    env = installed_commands_env(tmp_path)
    with _state_dir_set_aside():
        try:
            _install_run_upgrade_purge(debs, env, prefork, victoria, tmp_path)
        finally:
            if dpkg_status():  # a failure above: the package this test installed goes
                run(*APT, "purge", PKG, env={**os.environ, **APT_ENV}, timeout=600)
    assert not changed(before, snapshot())


def _install_run_upgrade_purge(debs: List[Path], env: Dict[str, str], prefork, victoria,
                               tmp_path: Path) -> None:
    assert not STATE_DIR.exists()
    apt("install", str(debs[0]))
    _check_installed(env, f"{version()}-1")
    _run_each_command(env, prefork, victoria, tmp_path)
    files = [f for f in must("dpkg-query", "-L", PKG).stdout.splitlines()
             if f.startswith("/") and os.path.isfile(f)]

    # Upgrades: the same package again, then the next revision; an edit the
    # operator made to a conffile stays, without a question.
    with open("/etc/apache-metrics-exporter.conf", "a") as conf:
        conf.write("# edited by the operator\n")
    apt("install", "--reinstall", str(debs[0]))
    if len(debs) > 1:
        apt("install", str(debs[1]))
    _check_installed(env, f"{version()}-{len(debs)}")
    assert "# edited by the operator" in Path("/etc/apache-metrics-exporter.conf").read_text()
    must("apache-metrics-exporter", "--url", prefork.status_url, "--format", "tab",
         "--output", str(tmp_path / "after-upgrade.txt"), env=env)

    apt("remove", PKG)
    assert dpkg_status() == "deinstall ok config-files"
    left = [f for f in files if os.path.lexists(f)]
    assert sorted(left) == sorted(CONFFILES)  # remove keeps the conffiles
    assert (STATE_DIR / "collector-state.json").exists()  # and the commands' state
    apt("purge", PKG)
    assert dpkg_status() == ""
    assert not [f for f in files if os.path.lexists(f)]
    assert not STATE_DIR.exists()  # purge: the state goes too (documented)
    for unit in UNITS:
        state = run("systemctl", "is-enabled", unit).stdout.strip()
        assert state in ("", "not-found"), (unit, state)


class _state_dir_set_aside:
    """Keep a state directory the test did not make out of the package's
    reach, then put it back as it was (never deleted: if something made the
    directory again meanwhile, both are left and the test fails saying so)."""

    def __init__(self) -> None:
        self.aside = STATE_DIR.with_name(f"{STATE_DIR.name}.kept-by-test-{os.getpid()}")
        self.preexisting = STATE_DIR.exists()

    def __enter__(self) -> None:
        if self.preexisting:
            os.rename(STATE_DIR, self.aside)

    def __exit__(self, *exc) -> None:
        if not self.preexisting:
            return
        try:
            os.rename(self.aside, STATE_DIR)
        except OSError as error:
            message = (f"{STATE_DIR} was made again while the test ran; the one from "
                       f"before is {self.aside} ({error.strerror})")
            if exc[0] is not None:  # the first failure says more: keep it
                print(message, file=sys.stderr)
                return
            raise AssertionError(message) from None


def _check_installed(env: Dict[str, str], expected: str) -> None:
    assert dpkg_status() == "install ok installed"
    assert must("dpkg-query", "-W", "-f=${Version}", PKG).stdout == expected
    conffiles = must("dpkg-query", "-W", "-f=${Conffiles}", PKG).stdout
    assert {line.split()[0] for line in conffiles.strip().splitlines()} == CONFFILES
    for command in sorted(console_scripts()):
        assert shutil.which(command, path=env["PATH"]) == f"/usr/bin/{command}"
        assert version() in must(command, "--version", env=env).stdout
        page = must("man", "-w", command, env=env).stdout.strip()
        assert page == f"/usr/share/man/man1/{command}.1.gz"
        with gzip.open(page, "rt") as man:
            assert man.read().startswith(f".TH {command.upper()} 1")
    for unit in UNITS:  # installed, never enabled ("static": the reaper's
        # service has no [Install], its timer starts it)
        state = run("systemctl", "is-enabled", unit).stdout.strip()
        assert state in ("disabled", "static"), (unit, state)
        assert not list(Path("/etc/systemd/system").rglob(unit)), unit
    st = STATE_DIR.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)


def _run_each_command(env: Dict[str, str], apache, victoria, tmp: Path) -> None:
    url = apache.status_url
    # The collector, with its state in the package's directory (purge removes it).
    collector_env = dict(env)
    collector_env.pop("APACHE_METRICS_COLLECTOR_STATE", None)
    must("apache-metrics-exporter", "--url", url, "--format", "tab",
         "--output", str(tmp / "apache-manager.txt"), env=collector_env)
    tab = parse_tab((tmp / "apache-manager.txt").read_text())
    assert tab["status-response"] == "0"
    assert (STATE_DIR / "collector-state.json").is_file()
    # The reaper, a dry run (its state file is the session's).
    proc = must("apache-worker-reaper", "--url", url, "--dry-run", "--max-time", "1h", env=env)
    assert "Traceback" not in proc.stderr
    # apache-manager: the original's command line.
    must("apache-manager", f"--url={url}", "--collect-metrics",
         "--data-file", str(tmp / "manager.txt"), env=env)
    assert parse_tab((tmp / "manager.txt").read_text())["status-response"] == "0"
    # The InfluxDB push, through the vendored influxdb-client.
    token = tmp / "token"
    token.write_text("t\n")
    token.chmod(0o600)
    must("apache-metrics-exporter", "--url", url, "--format", "influxdb",
         "--influxdb-url", victoria.url, "--influxdb-org", "o", "--influxdb-bucket", "b",
         "--influxdb-token-file", str(token), "--spool-dir", str(tmp / "spool"), env=env)
    (up,) = victoria.export('{__name__="apache_exporter_up"}')
    assert up["values"] == [1]
    assert not list((tmp / "spool").glob("*.lp"))  # sent, not spooled


def test_build_deb_says_what_is_missing(tmp_path):
    """No sdist: one line naming the fix, no traceback, nothing written."""
    proc = run("sh", str(ROOT / "scripts" / "build-deb.sh"), str(tmp_path / "out"),
               env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        proc.stderr.strip()] and "make dist" in proc.stderr
    assert not list((tmp_path / "out").iterdir())
