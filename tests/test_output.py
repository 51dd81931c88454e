"""Safe, atomic output: temp file in the same directory, fsync, rename."""

import os
import subprocess

import pytest

from apache_metrics_exporter.errors import OutputError, UsageError
from apache_metrics_exporter.output import check_output_path, write_atomic


def test_replaces_the_file_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "metrics.txt"
    path.write_text("old\n")
    write_atomic(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["metrics.txt"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_planted_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "metrics.txt"
    link.symlink_to(victim)
    write_atomic(str(link), "metrics\n")
    assert victim.read_text() == "precious\n"
    assert not link.is_symlink() and link.read_text() == "metrics\n"


def test_original_predictable_temp_name_is_not_used(tmp_path):
    # apache-manager wrote through PATH.tmp; a symlink planted there must not matter.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "metrics.txt.tmp").symlink_to(victim)
    write_atomic(str(tmp_path / "metrics.txt"), "metrics\n")
    assert victim.read_text() == "precious\n"


def test_missing_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        check_output_path(str(tmp_path / "nope" / "metrics.txt"))
    with pytest.raises(UsageError, match="is a directory"):
        check_output_path(str(tmp_path))


@pytest.fixture
def tiny_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:  # e.g. a container without the right to mount
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_keeps_the_old_file_and_says_why(tiny_fs):
    path = tiny_fs / "metrics.txt"
    path.write_text("previous complete file\n")
    with pytest.raises(OutputError, match="No space left on device.*previous file"):
        write_atomic(str(path), "x" * 200_000)
    assert path.read_text() == "previous complete file\n"
    assert os.listdir(tiny_fs) == ["metrics.txt"]


def test_stdout_full(tmp_path):
    # /dev/full makes every write fail with ENOSPC.
    code = ("import sys\nfrom apache_metrics_exporter.output import write_atomic\n"
            "from apache_metrics_exporter.errors import OutputError\n"
            "try:\n    write_atomic('-', 'x' * 100000)\n"
            "except OutputError as e:\n    print(e, file=sys.stderr); sys.exit(1)\n")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([os.sys.executable, "-c", code], stdout=full,
                              stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 1
    assert "cannot write to standard output: No space left on device" in proc.stderr
