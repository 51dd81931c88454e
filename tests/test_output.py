"""--output as `>` and `install` behave: special files written in place, trusted
symlinks followed, untrusted ones replaced, regular files atomically replaced
with their owner and mode kept.

Device nodes, FIFOs and sockets are made in the test's own temporary
directory (never the system's /dev nodes); symlinks are given to `nobody`
with lchown in a sticky (1777) directory of the test's own.
"""

import os
import pwd
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from apache_metrics_exporter import output
from apache_metrics_exporter.errors import OutputError, UsageError
from apache_metrics_exporter.output import check_output_path, write_atomic, write_private
from tests.conftest import run_exporter

NOBODY = pwd.getpwnam("nobody").pw_uid
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, lchown)")


@pytest.fixture
def down(tmp_path):
    """A run against a dead port that reads no state or spool of the machine's."""
    return ["--url", "http://127.0.0.1:9/server-status", "--no-processes",
            "--state-file", str(tmp_path / "no-state.json"),
            "--spool-dir", str(tmp_path / "no-spool"), "--format", "tab"]


@pytest.fixture
def sticky(tmp_path):
    """A world-writable sticky directory like /tmp, inside the test's own."""
    d = tmp_path / "sticky"
    d.mkdir()
    d.chmod(0o1777)
    return d


def null_node(directory, name="null", minor=3):
    """A copy of /dev/null (1,3) or /dev/full (1,7) made with mknod."""
    path = directory / name
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    return path


def lchown_nobody(path):
    os.lchown(path, NOBODY, -1)
    assert os.lstat(path).st_uid == NOBODY


# --- regular files -------------------------------------------------------------

def test_replaces_the_file_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "metrics.txt"
    path.write_text("old\n")
    path.chmod(0o644)
    inode = path.stat().st_ino
    write_atomic(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["metrics.txt"]
    assert path.stat().st_ino != inode  # renamed over, not rewritten in place
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "metrics.txt"
    path.write_text("old\n")
    path.chmod(0o600)
    write_atomic(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert path.stat().st_mode & 0o7777 == 0o600


@root_only
def test_existing_file_keeps_its_owner(tmp_path):
    path = tmp_path / "metrics.txt"
    path.write_text("old\n")
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o640)
    write_atomic(str(path), "new\n")
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (NOBODY, NOBODY, 0o640)
    assert path.read_text() == "new\n"


def test_new_file_is_0644_masked_by_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(str(tmp_path / "a.txt"), "x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    old = os.umask(0o022)
    try:
        write_atomic(str(tmp_path / "b.txt"), "x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644


def test_private_files_get_exactly_their_mode_and_never_follow(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "state.json"
    link.symlink_to(victim)
    write_private(str(link), "{}\n", 0o600)
    assert victim.read_text() == "precious\n"
    assert not link.is_symlink() and link.read_text() == "{}\n"
    assert link.stat().st_mode & 0o777 == 0o600


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


def test_a_directory_is_one_clear_error(tmp_path):
    with pytest.raises(OutputError, match="is a directory; give a file name"):
        write_atomic(str(tmp_path), "x\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "to-dir").symlink_to("d")
    with pytest.raises(OutputError, match="is a directory"):
        write_atomic(str(tmp_path / "to-dir"), "x\n")
    assert (tmp_path / "to-dir").is_symlink() and os.listdir(tmp_path / "d") == []


def test_a_directory_exits_1_with_one_line(down, tmp_path):
    proc = run_exporter(*down, "--output", str(tmp_path))
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if str(tmp_path) in ln]
    assert len(lines) == 1 and "is a directory" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


# --- devices, FIFOs, sockets: in place ----------------------------------------------

@root_only
def test_char_device_is_written_in_place_never_replaced(tmp_path):
    node = null_node(tmp_path)
    before = os.lstat(node)
    write_atomic(str(node), "metrics\n")
    after = os.lstat(node)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino
    assert os.listdir(tmp_path) == ["null"]


@root_only
def test_cli_output_to_a_null_device_as_root(down, tmp_path):
    node = null_node(tmp_path)
    proc = run_exporter(*down, "--output", str(node))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.lstat(node).st_mode)
    assert os.listdir(tmp_path) == ["null"]


@root_only
def test_full_device_reports_and_stays(tmp_path):
    node = null_node(tmp_path, "full", minor=7)
    with pytest.raises(OutputError, match="No space left on device"):
        write_atomic(str(node), "metrics\n")
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_fifo_with_a_reader_gets_the_text(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    text = "metrics\n" * 50_000  # more than a pipe holds: writes wait for the reader
    write_atomic(str(fifo), text)
    reader.join(10)
    assert got == [text.encode()]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_fifo_reader_arriving_late_is_waited_for(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []

    def late():
        time.sleep(0.5)
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=late)
    reader.start()
    write_atomic(str(fifo), "metrics\n")
    reader.join(10)
    assert got == [b"metrics\n"]


def test_fifo_without_reader_does_not_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(output, "SPECIAL_TIMEOUT", 0.5)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(OutputError, match="no process read the FIFO within 0.5 s"):
        write_atomic(str(fifo), "metrics\n")
    assert time.monotonic() - started < 3
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["fifo"]


def test_fifo_reader_that_stops_reading_does_not_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(output, "SPECIAL_TIMEOUT", 0.5)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stuck = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    try:
        started = time.monotonic()
        with pytest.raises(OutputError, match="took in nothing"):
            write_atomic(str(fifo), "x" * 1_000_000)
        assert time.monotonic() - started < 3
    finally:
        os.close(stuck)


def test_fifo_cli_run_is_bounded(down, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    proc = run_exporter(*down, "--output", str(fifo))
    assert time.monotonic() - started < output.SPECIAL_TIMEOUT + 20
    assert proc.returncode == 1 and "no process read the FIFO" in proc.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_socket_is_written_in_place(tmp_path, kind):
    path = str(tmp_path / "sock")
    server = socket.socket(socket.AF_UNIX, kind)
    server.bind(path)
    got = []
    if kind == socket.SOCK_STREAM:
        server.listen(1)

        def serve():
            conn, _ = server.accept()
            with conn:
                chunks = []
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                got.append(b"".join(chunks))
    else:
        def serve():
            got.append(server.recv(65536))
    thread = threading.Thread(target=serve)
    thread.start()
    try:
        write_atomic(path, "metrics\n")
        thread.join(10)
    finally:
        server.close()
    assert got == [b"metrics\n"]
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_socket_without_listener_is_an_error_not_replaced(tmp_path):
    path = str(tmp_path / "sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.close()  # the node stays; nobody listens
    with pytest.raises(OutputError, match="socket"):
        write_atomic(path, "metrics\n")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_dev_stdout_writes_to_stdout(down):
    # /dev/stdout -> /proc/self/fd/1 -> a pipe here: written to, not replaced.
    proc = run_exporter(*down, "--output", "/dev/stdout")
    assert proc.returncode == 0, proc.stderr
    assert "status-response\t1" in proc.stdout


def test_dev_fd_of_this_process(tmp_path):
    code = ("import os\nfrom apache_metrics_exporter.output import write_atomic\n"
            "r, w = os.pipe()\nwrite_atomic(f'/dev/fd/{w}', 'via fd\\n')\n"
            "os.close(w)\nprint(os.read(r, 100).decode(), end='')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.stdout == "via fd\n", proc.stderr


# --- symlinks ------------------------------------------------------------------------

def test_own_symlink_is_followed_and_stays(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old\n")
    target.chmod(0o600)
    link = tmp_path / "metrics.txt"
    link.symlink_to(target)
    write_atomic(str(link), "new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["metrics.txt", "real.txt"]


def test_relative_symlink_chain_into_another_directory(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "real.txt").write_text("old\n")
    (tmp_path / "b" / "hop").symlink_to("real.txt")
    (tmp_path / "a" / "metrics.txt").symlink_to("../b/hop")
    write_atomic(str(tmp_path / "a" / "metrics.txt"), "new\n")
    assert (tmp_path / "b" / "real.txt").read_text() == "new\n"
    assert (tmp_path / "a" / "metrics.txt").is_symlink()
    assert (tmp_path / "b" / "hop").is_symlink()
    assert sorted(os.listdir(tmp_path / "b")) == ["hop", "real.txt"]  # temp file beside it


def test_relative_output_path_through_a_symlink(tmp_path, monkeypatch):
    (tmp_path / "real.txt").write_text("old\n")
    (tmp_path / "metrics.txt").symlink_to("real.txt")
    monkeypatch.chdir(tmp_path)
    write_atomic("metrics.txt", "new\n")
    assert (tmp_path / "real.txt").read_text() == "new\n"
    assert (tmp_path / "metrics.txt").is_symlink()


def test_dangling_own_symlink_creates_its_target(tmp_path):
    link = tmp_path / "metrics.txt"
    link.symlink_to("not-yet.txt")
    write_atomic(str(link), "new\n")
    assert link.is_symlink() and (tmp_path / "not-yet.txt").read_text() == "new\n"


def test_symlink_loop_is_an_error(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OutputError, match="symlinks in a row"):
        write_atomic(str(tmp_path / "a"), "x\n")
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()


@root_only
def test_own_symlink_to_a_device_writes_the_device(tmp_path):
    node = null_node(tmp_path)
    link = tmp_path / "metrics.txt"
    link.symlink_to(node)
    write_atomic(str(link), "x\n")
    assert link.is_symlink() and stat.S_ISCHR(os.lstat(node).st_mode)


@root_only
def test_foreign_symlink_in_sticky_directory_is_not_followed(sticky, tmp_path, capsys):
    # The /tmp/apache-manager.txt case: another user plants the name first.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    link = sticky / "apache-manager.txt"
    link.symlink_to(victim)
    lchown_nobody(link)
    write_atomic(str(link), "metrics\n")
    assert victim.read_text() == "precious\n"
    assert not link.is_symlink() and link.read_text() == "metrics\n"
    st = link.stat()
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o644
    (line,) = capsys.readouterr().err.splitlines()
    assert "not following the symlink" in line and f"uid {NOBODY}" in line


@root_only
def test_foreign_dangling_symlink_in_sticky_directory_creates_nothing_there(sticky, tmp_path):
    target = tmp_path / "would-be-created"
    link = sticky / "metrics.txt"
    link.symlink_to(target)
    lchown_nobody(link)
    write_atomic(str(link), "metrics\n")
    assert not target.exists()
    assert not link.is_symlink() and link.read_text() == "metrics\n"


@root_only
def test_foreign_symlink_to_a_device_in_sticky_directory(sticky, tmp_path):
    node = null_node(tmp_path)
    link = sticky / "metrics.txt"
    link.symlink_to(node)
    lchown_nobody(link)
    write_atomic(str(link), "metrics\n")
    assert stat.S_ISCHR(os.lstat(node).st_mode)
    assert not link.is_symlink() and link.read_text() == "metrics\n"


@root_only
def test_foreign_symlink_outside_sticky_directory_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "metrics.txt"
    link.symlink_to(victim)
    lchown_nobody(link)
    write_atomic(str(link), "metrics\n")
    assert victim.read_text() == "precious\n"
    assert not link.is_symlink()


@root_only
def test_root_symlink_in_sticky_directory_is_followed(sticky, tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old\n")
    link = sticky / "metrics.txt"
    link.symlink_to(target)
    write_atomic(str(link), "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


@root_only
def test_chain_stops_at_the_first_untrusted_link(sticky, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    second = sticky / "second"
    second.symlink_to(victim)
    lchown_nobody(second)
    first = tmp_path / "metrics.txt"
    first.symlink_to(second)  # ours: followed, to the foreign one, which is not
    write_atomic(str(first), "metrics\n")
    assert victim.read_text() == "precious\n"
    assert first.is_symlink()
    assert not second.is_symlink() and second.read_text() == "metrics\n"


@root_only
def test_cli_foreign_symlink_says_one_line_and_succeeds(down, sticky, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = sticky / "apache-manager.txt"
    link.symlink_to(victim)
    lchown_nobody(link)
    proc = run_exporter(*down, "--output", str(link))
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious\n"
    assert "status-response\t1" in link.read_text()
    assert len([ln for ln in proc.stderr.splitlines() if "not following" in ln]) == 1


@root_only
def test_foreign_directory_symlink_in_sticky_directory_is_refused(sticky, tmp_path):
    # /tmp/evil -> /etc planted by another user: --output /tmp/evil/passwd must
    # not replace /etc/passwd, whatever fs.protected_symlinks says.
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0\n")
    evil = sticky / "evil"
    evil.symlink_to(etc)
    lchown_nobody(evil)
    with pytest.raises(OutputError, match=r"directory symlink .*evil is not followed"):
        write_atomic(str(evil / "passwd"), "metrics\n")
    assert (etc / "passwd").read_text() == "root:x:0:0\n"
    assert os.listdir(etc) == ["passwd"]


def test_own_directory_symlinks_and_dots_are_followed(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "sub").mkdir()
    (tmp_path / "via").symlink_to("real/sub")
    write_atomic(str(tmp_path / "via" / ".." / "m.txt"), "up\n")  # .. of the real dir
    assert (tmp_path / "real" / "m.txt").read_text() == "up\n"
    monkeypatch.chdir(tmp_path / "via")
    write_atomic("./n.txt", "here\n")
    assert (tmp_path / "real" / "sub" / "n.txt").read_text() == "here\n"


# --- failures -----------------------------------------------------------------------------

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


@root_only
def test_a_file_planted_in_a_sticky_directory_is_not_handed_back(sticky, capsys):
    # Another user's 0666 file in /tmp: root's metrics must not stay theirs
    # (they could rewrite status-response), as the kernel's protected_regular.
    planted = sticky / "apache-manager.txt"
    planted.write_text("planted\n")
    planted.chmod(0o666)
    os.chown(planted, NOBODY, NOBODY)
    write_atomic(str(planted), "status-response\t1\n")
    st = planted.stat()
    umask = os.umask(0)
    os.umask(umask)
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644 & ~umask)
    assert planted.read_text() == "status-response\t1\n"
    assert "belongs to uid" in capsys.readouterr().err


@root_only
def test_a_fifo_planted_in_a_sticky_directory_is_replaced_not_written(sticky):
    fifo = sticky / "out"
    os.mkfifo(fifo)
    os.chown(fifo, NOBODY, NOBODY)
    write_atomic(str(fifo), "x\n")  # no reader: it would have waited 10 s
    assert fifo.is_file() and fifo.read_text() == "x\n"


def test_a_directory_swapped_for_a_symlink_after_the_checks_gets_nothing(tmp_path):
    # The race the checks alone cannot close: between resolving --output and
    # writing, a directory on the way becomes a symlink to somewhere else.
    # Every step happens in a directory opened without following links.
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.mkdir()
    target = out / "metrics.txt"
    out.rename(tmp_path / "gone")
    out.symlink_to(victim)  # swapped after _resolve would have checked it
    with pytest.raises(OutputError, match="changed while it was written"):
        output._replace(str(target), str(target), b"x\n", None, None)
    assert list(victim.iterdir()) == []
