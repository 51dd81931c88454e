"""trust.py: the one rule for settings files (the exporter's config file and
apache-manager's INI files), on real files, directories and symlinks in
temporary directories. Runs as root here, so "another user" is nobody."""

from __future__ import annotations

import os

import pytest

from apache_metrics_exporter.errors import UsageError
from apache_metrics_exporter.trust import CONFIG_LIMIT, check_trusted, locate, read_trusted
from tests.conftest import run_exporter

NOBODY = 65534


@pytest.fixture
def base(tmp_path):
    root = tmp_path / "t"
    root.mkdir(mode=0o755)
    return root


def test_symlinks_of_this_user_are_followed_as_the_kernel_does(base):
    (base / "etc" / "real").mkdir(parents=True)
    (base / "etc" / "x.ini").write_text("[x]\n")
    (base / "link").symlink_to("etc/real")
    # "link/.." is etc, not base: resolved as the kernel does, not lexically.
    real, st = locate(str(base / "link" / ".." / "x.ini"), "INI file")
    assert real == str(base / "etc" / "x.ini") and st.st_size == 4
    (base / "abs.ini").symlink_to(base / "etc" / "x.ini")
    assert read_trusted(str(base / "abs.ini"), "INI file") == b"[x]\n"
    assert not check_trusted(str(base / "missing.ini"), "INI file")


def test_relative_paths_are_from_the_working_directory(base, monkeypatch):
    (base / "x.ini").write_text("[x]\n")
    monkeypatch.chdir(base)
    assert locate("x.ini", "INI file")[0] == str(base / "x.ini")


@pytest.mark.parametrize("setup, why", [
    (lambda b: os.chown(b / "d", NOBODY, -1), f"the directory {{b}}/d belongs to uid {NOBODY}"),
    (lambda b: (b / "d").chmod(0o757), "the directory {b}/d is writable by others"),
    (lambda b: (b / "d").chmod(0o1777) or os.chown(b / "d" / "x.ini", NOBODY, -1),
     f"{{b}}/d/x.ini belongs to uid {NOBODY} in the shared directory {{b}}/d"),
])
def test_directories_on_the_way_are_checked(base, setup, why):
    (base / "d").mkdir()
    (base / "d" / "x.ini").write_text("[x]\n")
    setup(base)
    with pytest.raises(UsageError, match="^INI file .*: " + why.format(b=base)):
        read_trusted(str(base / "d" / "x.ini"), "INI file")


def test_a_sticky_shared_directory_is_fine_for_this_users_file(base):
    (base / "d").mkdir()
    (base / "d").chmod(0o1777)
    (base / "d" / "x.ini").write_text("[x]\n")
    assert read_trusted(str(base / "d" / "x.ini"), "INI file") == b"[x]\n"


def test_a_symlinked_directory_of_another_user_is_not_followed(base):
    (base / "real").mkdir()
    (base / "real" / "x.ini").write_text("[x]\n")
    (base / "d").symlink_to("real")
    os.lchown(base / "d", NOBODY, -1)
    with pytest.raises(UsageError, match=f"the symlink {base}/d belongs to uid {NOBODY}"):
        locate(str(base / "d" / "x.ini"), "INI file")


def test_a_symlink_loop_is_one_line(base):
    (base / "a").symlink_to("b")
    (base / "b").symlink_to("a")
    with pytest.raises(UsageError, match="more than 40 symlinks"):
        locate(str(base / "a"), "INI file")


def test_reads_are_bounded(base):
    ini = base / "x.ini"
    ini.write_bytes(b"#" * CONFIG_LIMIT)
    assert len(read_trusted(str(ini), "INI file")) == CONFIG_LIMIT
    ini.write_bytes(b"#" * (CONFIG_LIMIT + 1))
    with pytest.raises(UsageError, match="is larger than 64 KiB"):
        read_trusted(str(ini), "INI file")


def test_the_exporters_config_file_follows_the_same_rule(base):
    # One rule for both commands: a config file in a directory others can
    # write is as untrusted as one they can write themselves.
    (base / "d").mkdir()
    conf = base / "d" / "exporter.conf"
    conf.write_text("apache-exe = sshd\n")
    down = ("--url", "http://127.0.0.1:9/server-status", "--format", "tab")
    (base / "d").chmod(0o775)
    proc = run_exporter(*down, "-c", str(conf))
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"config file {conf}: the directory {base}/d is writable by others" in proc.stderr
    (base / "d").chmod(0o755)
    assert run_exporter(*down, "-c", str(conf)).returncode == 0
