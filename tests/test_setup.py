"""`make deps` (scripts/install-deps.sh): only missing packages, no upgrades,
nothing started, nothing left enabled at boot that was not enabled before.

apt-get, dpkg-query, systemctl, update-rc.d and id are stand-ins on PATH that
record their arguments and act on files in the test's temporary directory
(a package "install" enables services there the way Debian's postinsts do), so
the machine's packages and services are never touched.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install-deps.sh"

STUBS = {
    # dpkg-query -W -f='${Status}\n' PKG
    "dpkg-query": r'''
pkg=$(eval echo \${$#})
if grep -qx "$pkg" "$T/installed"; then echo "install ok installed"; else exit 1; fi
''',
    # apt-get update | install ... PKGS: an install enables each package's
    # services (systemd unit + SysV start link), as deb-systemd-helper does.
    "apt-get": r'''
echo "apt-get $*" >> "$T/log"
[ "$1" = update ] && exit 0
for arg in "$@"; do
    case $arg in -*|install) continue;; esac
    echo "$arg" >> "$T/installed"
    svc=$(grep "^$arg " "$T/services" | cut -d' ' -f2)
    for s in $svc; do
        echo "$s.service" >> "$T/units"
        : > "$T/etc/rc2.d/S01$s"
        if [ ! -e "$POLICY_RC_D" ]; then echo "$s.service" >> "$T/running"; fi
    done
done
exit "${APT_RC:-0}"
''',
    "systemctl": r'''
echo "systemctl $*" >> "$T/log"
case $1 in
    list-unit-files) sort -u "$T/units" | sed 's/$/ enabled enabled/';;
    list-units) sort -u "$T/running" | sed 's/$/ loaded active running x/';;
    disable)
        for u in "$@"; do
            case $u in -*|disable) continue;; esac
            grep -vx "$u" "$T/units" > "$T/units.new"; mv "$T/units.new" "$T/units"
            rm -f "$T/etc/rc2.d/S01${u%.service}"; : > "$T/etc/rc2.d/K01${u%.service}"
        done;;
    stop) grep -vx "$2" "$T/running" > "$T/r.new"; mv "$T/r.new" "$T/running";;
esac
''',
    "update-rc.d": r'''
echo "update-rc.d $*" >> "$T/log"
mv "$T/etc/rc2.d/S01$1" "$T/etc/rc2.d/K01$1"
''',
    "id": 'echo 0\n',
}


class Host:
    """A pretend Debian host in a temporary directory."""

    def __init__(self, tmp: Path, installed: list, enabled: list, services: dict,
                 systemd: bool = True) -> None:
        self.tmp = tmp
        (tmp / "bin").mkdir()
        (tmp / "etc" / "rc2.d").mkdir(parents=True)
        for name, body in STUBS.items():
            if name == "systemctl" and not systemd:
                continue
            stub = tmp / "bin" / name
            stub.write_text("#!/bin/sh\n" + body)
            stub.chmod(0o755)
        (tmp / "installed").write_text("".join(f"{p}\n" for p in installed))
        (tmp / "units").write_text("".join(f"{s}.service\n" for s in enabled))
        (tmp / "running").write_text("".join(f"{s}.service\n" for s in enabled))
        for s in enabled:
            (tmp / "etc" / "rc2.d" / f"S01{s}").touch()
        (tmp / "services").write_text("".join(f"{p} {' '.join(s)}\n"
                                              for p, s in services.items()))
        (tmp / "log").touch()
        (tmp / "run-systemd").mkdir()

    def run(self, *packages: str, **env: str) -> subprocess.CompletedProcess:
        environ = {"PATH": f"{self.tmp}/bin:/usr/bin:/bin", "T": str(self.tmp),
                   "DEPS_ETC": str(self.tmp / "etc"),
                   "POLICY_RC_D": str(self.tmp / "policy-rc.d"),
                   "SYSTEMD_RUN": str(self.tmp / "run-systemd"), **env}
        return subprocess.run(["sh", str(SCRIPT), *packages], capture_output=True, text=True,
                              env=environ, timeout=60)

    def log(self) -> list:
        return (self.tmp / "log").read_text().splitlines()

    def enabled(self) -> set:
        units = set((self.tmp / "units").read_text().split())
        links = {p.name[3:] for p in (self.tmp / "etc" / "rc2.d").iterdir()
                 if p.name.startswith("S")}
        return units | {f"{s}.service" for s in links}


SERVICES = {"apache2": ["apache2"], "influxdb": ["influxdb"], "collectd-core": ["collectd"],
            "prometheus": ["prometheus"], "curl": []}


def test_only_missing_packages_without_upgrades(tmp_path):
    host = Host(tmp_path, installed=["apache2", "curl", "openssl"], enabled=["apache2"],
                services=SERVICES)
    proc = host.run("apache2", "curl", "openssl", "influxdb", "collectd-core", "prometheus")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installs = [line for line in host.log() if line.startswith("apt-get install")]
    assert installs == ["apt-get install -y -q --no-install-recommends --no-upgrade "
                        "influxdb collectd-core prometheus"]
    # What the install enabled is disabled again; apache2, enabled before, stays.
    assert host.enabled() == {"apache2.service"}
    assert "systemctl disable --quiet apache2.service" not in host.log()
    assert {"systemctl disable --quiet influxdb.service",
            "systemctl disable --quiet collectd.service"} <= set(host.log())
    assert "disabled at boot again" in proc.stdout
    # The policy-rc.d that kept them from starting is gone again; nothing was started.
    assert not (tmp_path / "policy-rc.d").exists()
    assert (tmp_path / "running").read_text().split() == ["apache2.service"]
    assert not any(line.startswith("systemctl stop") for line in host.log())


def test_nothing_to_do_when_everything_is_installed(tmp_path):
    host = Host(tmp_path, installed=["apache2", "curl"], enabled=[], services=SERVICES)
    proc = host.run("apache2", "curl")
    assert proc.returncode == 0 and proc.stdout == ""
    assert host.log() == []  # not even apt-get update


def test_sysv_only_host_and_a_failed_install(tmp_path):
    # No systemctl at all: SysV start links are what enables a service at boot.
    host = Host(tmp_path, installed=[], enabled=["collectd"], services=SERVICES,
                systemd=False)
    proc = host.run("influxdb", "collectd-core", APT_RC="100")
    assert proc.returncode == 100  # apt-get's failure is the result
    assert "update-rc.d influxdb disable" in host.log()
    assert "update-rc.d collectd disable" not in host.log()
    assert sorted(p.name for p in (tmp_path / "etc" / "rc2.d").iterdir()) == [
        "K01influxdb", "S01collectd"]


def test_an_existing_policy_rc_d_is_kept(tmp_path):
    host = Host(tmp_path, installed=[], enabled=[], services=SERVICES)
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    assert host.run("prometheus").returncode == 0
    assert policy.read_text() == "#!/bin/sh\nexit 101\n"


def test_a_service_started_anyway_is_stopped(tmp_path):
    # A package that starts its service although policy-rc.d says no: stopped
    # again when systemd runs (and only that one).
    host = Host(tmp_path, installed=[], enabled=["apache2"], services=SERVICES)
    proc = host.run("influxdb", POLICY_RC_D=str(tmp_path / "cannot" / "policy-rc.d"))
    assert proc.returncode == 0, proc.stderr
    assert "systemctl stop influxdb.service" in host.log()
    assert (tmp_path / "running").read_text().split() == ["apache2.service"]


def test_not_root_names_the_missing_packages(tmp_path):
    host = Host(tmp_path, installed=["curl"], enabled=[], services=SERVICES)
    (tmp_path / "bin" / "id").write_text("#!/bin/sh\necho 1000\n")
    proc = host.run("curl", "influxdb")
    assert proc.returncode == 1 and "missing Debian packages: influxdb" in proc.stderr
    assert host.log() == []


def test_makefile_deps_uses_the_script():
    makefile = (ROOT / "Makefile").read_text()
    deps = makefile.split("\ndeps:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/install-deps.sh $(APT_PACKAGES)" in deps
    assert "apt-get" not in deps  # no second way in


def _make_list(makefile: str, name: str) -> list:
    return re.search(rf"^{name} :=((?:.*\\\n)*.*)$", makefile, re.M).group(1) \
        .replace("\\\n", " ").split()


def test_make_demo_installs_only_what_the_demo_uses():
    """A newcomer tries `make demo` on an Apache host: it installs Apache,
    mod_wsgi, Python's venv and VictoriaMetrics (the demo's push), not the
    test stack's PostgreSQL, Zabbix server, InfluxDB or PHP; the same way
    as make deps (the script), and every one of them in the test stack too."""
    makefile = (ROOT / "Makefile").read_text()
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert demo.split("\n", 1)[0].split() == ["demo-deps", "pyenv"]
    deps = makefile.split("\ndemo-deps:", 1)[1].split("\n\n", 1)[0]
    assert deps.strip() == "@sh scripts/install-deps.sh $(DEMO_PACKAGES)"
    packages = _make_list(makefile, "DEMO_PACKAGES")
    assert set(packages) <= set(_make_list(makefile, "APT_PACKAGES"))
    assert {"apache2", "libapache2-mod-wsgi-py3", "victoria-metrics"} <= set(packages)
    assert not {"postgresql", "zabbix-server-pgsql", "influxdb", "php-cli"} & set(packages)
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    for package in packages:
        assert f"`{package}`" in contributing.split("`make test` installs the whole", 1)[0]


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/apt-get"),
                    reason="needs root and apt-get")
def test_real_apt_would_not_upgrade_installed_packages():
    # apt-get -s (simulate) on this machine: an installed package named with
    # --no-upgrade is neither upgraded nor reinstalled.
    proc = subprocess.run(["apt-get", "-s", "-q", "install", "--no-install-recommends",
                           "--no-upgrade", "dpkg"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not any(line.startswith(("Inst ", "Conf ")) for line in proc.stdout.splitlines())
