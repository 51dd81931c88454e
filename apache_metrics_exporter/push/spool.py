"""The push spool: batches that could not be delivered, kept on disk until they can.

Layout of the spool directory:

- ``NNNNNNNNNNNNNNNNNNNN.PID.POINTS.lp``: one batch of line protocol each; the
  name starts with the batch's timestamp (ns, zero-padded), so sorting names
  sorts batches oldest first, and it carries the number of points, so the
  health figures need no reading of the files;
- ``quarantine/``: batches set aside, each with a ``.error`` file holding the
  server's message - never retried: those the server rejected (HTTP 400, 413,
  422) and those that kept failing while later batches were written
  (push/client.py says when); bounded by ``--spool-max-bytes`` like the spool;
- ``state.json``: last success, dropped points, quarantined batches, corrupt
  files, and the batches failing for now (``failing``: name -> tries and the
  time of the first);
- ``.lock``: held (flock) by the run that replays and writes, so two
  overlapping runs never send the same batch twice.

Every file is written atomically (output.write_private), mode 0600, in a
directory of mode 0700.

Trust: the spool directory must not be a symlink, must belong to this user
or root and must not be writable by group or others - otherwise anyone could
plant a batch (or a symlink to a secret that root would read and send). A push
refuses such a spool (one line with the fix); the collector leaves the push
figures out and says why. Inside the spool nothing is followed: every file is
opened with O_NOFOLLOW and must be a regular file.

Corrupt content - a batch that is not UTF-8 or larger than the spool may
hold, a directory, symlink or special file named like a batch, a state.json
that is too big, not JSON or has wrong types - is moved aside
(``NAME.corrupt-EPOCH``) by the run that holds the lock, counted
(``push_corrupt_files_total``) and reported in one line; the run goes on and
its own batch is sent or spooled. The collector, which reads state.json
without the lock, only reports a corrupt one and leaves its figures out.
"""

from __future__ import annotations

import json
import os
import stat
from contextlib import ExitStack, contextmanager

from apache_metrics_exporter.errors import OutputError
from apache_metrics_exporter.locks import exclusive
from apache_metrics_exporter.log import WARNING, log
from apache_metrics_exporter.output import write_private
from apache_metrics_exporter.paths import (
    Corrupt,
    check,
    is_int,
    move_aside,
    parse_json,
    problem,
    read_bounded,
)
from apache_metrics_exporter.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Dict, Iterable, Iterator, List, Optional

STATE_VERSION = 1
STATE_MAX_BYTES = 64 * 1024  # a real state.json is about 100 bytes
MIN_BATCH_LIMIT = 16 * 1024 * 1024  # read limit of a batch: this or --spool-max-bytes
_COUNTS = ("dropped_points", "quarantined_batches", "corrupt_files")
MAX_FAILING = 200  # batches tracked in state.json's "failing" (keeps it far below 64 KiB)


class Health(NamedTuple):
    """What the collector reports about the push. dropped_points,
    quarantined_batches and corrupt_files are None when state.json cannot be
    read, the quarantine's figures when quarantine/ cannot be listed (left
    out, not reported as zero)."""

    last_success: Optional[int]  # epoch seconds
    spooled_points: int
    dropped_points: Optional[int]
    quarantined_batches: Optional[int]
    corrupt_files: Optional[int]
    quarantine_batches: Optional[int] = None  # now in quarantine/
    quarantine_bytes: Optional[int] = None


class Batch(NamedTuple):
    """A spooled batch file (path, points from its name, size in bytes)."""
    path: str
    points: int
    size: int



def _digits(text: str, most: int) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= most


def _parse_name(name: str) -> Optional[int]:
    """The number of points a batch file's name says it holds; None: no batch."""
    parts = name.split(".")
    if (len(parts) == 4 and parts[3] == "lp" and _digits(parts[0], 20)
            and _digits(parts[1], 10) and _digits(parts[2], 18)):
        return int(parts[2])
    return None


def fresh_state() -> Dict:
    """A state.json for a spool that has none (or had a corrupt one)."""
    return {"version": STATE_VERSION, "last_success": None, "failing": {},
            **{k: 0 for k in _COUNTS}}


def state_problem(state: object) -> str:
    """What is wrong with a parsed state.json ('' when nothing)."""
    if type(state) is not dict:
        return "is not a JSON object"
    if type(state.get("version")) is not int or state["version"] != STATE_VERSION:
        return f"is not version {STATE_VERSION}"
    last = state.get("last_success")
    if last is not None and not is_int(last):
        return "has a bad last_success"
    for key in _COUNTS:
        # corrupt_files came later: a file without it is fine.
        if not is_int(state.get(key, 0)):
            return f"has a bad {key}"
    # failing came later too: {batch name: {"tries": n, "first": epoch}}.
    failing = state.get("failing", {})
    if type(failing) is not dict or len(failing) > MAX_FAILING:
        return "has a bad failing"
    for name, entry in failing.items():
        if (_parse_name(name) is None or type(entry) is not dict or len(entry) != 2
                or not is_int(entry.get("tries"), 1) or not is_int(entry.get("first"))):
            return "has a bad failing"
    return ""


def _warn_once(text: str) -> None:
    log.once(WARNING, text)  # loops say each once


def _named_batches(entries: Iterable[os.DirEntry], directory: str,
                   everything: bool = False) -> List[Batch]:
    """The entries of ``directory`` named like a batch, oldest first: regular
    files only, or with ``everything`` whatever else is so named too."""
    out = []
    for entry in sorted(entries, key=lambda e: e.name):
        points = _parse_name(entry.name)
        if points is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if everything or stat.S_ISREG(st.st_mode):
            out.append(Batch(os.path.join(directory, entry.name), points, st.st_size))
    return out


class Spool:
    """A spool directory (created on first use, mode 0700)."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.state_path = os.path.join(directory, "state.json")
        self.quarantine_dir = os.path.join(directory, "quarantine")

    def ensure(self) -> None:
        """Create the directory, or check an existing one can be trusted;
        OutputError (one line naming the path and the fix) if not."""
        try:
            if not check(self.dir, "--spool-dir", directory=True):
                # makedirs gives only the last directory its mode: 0700 here.
                os.makedirs(self.dir, mode=0o700, exist_ok=True)
                check(self.dir, "--spool-dir", directory=True)  # made by someone else?
            try:
                os.mkdir(self.quarantine_dir, 0o700)
            except FileExistsError:
                pass  # checked under the lock (deliver)
        except OSError as exc:
            raise OutputError(f"cannot create --spool-dir {self.dir}: {exc.strerror}; "
                              "give a directory this user can write") from None
        if not os.access(self.dir, os.R_OK | os.W_OK | os.X_OK):
            raise OutputError(f"--spool-dir {self.dir} is not readable and writable by "
                              "this user")

    @contextmanager
    def locked(self, timeout: float = 60.0) -> Iterator[None]:
        """Exclusive use of the spool; waits for an overlapping run to finish."""
        path = os.path.join(self.dir, ".lock")
        with ExitStack() as stack:
            try:
                stack.enter_context(exclusive(path, timeout, "another run"))
            except OSError as exc:
                raise OutputError(f"cannot lock the spool ({path}): {exc.strerror}") from None
            yield

    # -- batches -----------------------------------------------------------
    def batches(self, everything: bool = False) -> List[Batch]:
        """Spooled batches, oldest first: regular files only, or with
        ``everything`` also whatever else is named like one (to set aside)."""
        try:
            with os.scandir(self.dir) as entries:
                return _named_batches(entries, self.dir, everything)
        except FileNotFoundError:
            return []

    def add(self, body: str, timestamp_ns: int) -> Batch:
        """Keep a batch for later; the name sorts it among the others by time."""
        points = body.count("\n")
        name = f"{timestamp_ns:020d}.{os.getpid()}.{points}.lp"
        path = os.path.join(self.dir, name)
        write_private(path, body, mode=0o600)
        return Batch(path, points, len(body.encode()))

    def read(self, batch: Batch) -> str:
        """A batch's lines; Corrupt when it is not a regular UTF-8 file of a
        size the spool can hold."""
        data = read_bounded(batch.path, max(self.max_bytes, MIN_BATCH_LIMIT))
        if not data:
            raise Corrupt("is empty")
        if b"\0" in data:
            raise Corrupt("contains NUL bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise Corrupt("is not UTF-8 text") from None

    def remove(self, batch: Batch) -> None:
        try:
            os.unlink(batch.path)
        except FileNotFoundError:
            pass

    def quarantine(self, batch: Batch, message: str) -> str:
        """Set a batch aside with the server's message (the one place a
        server's message is kept on disk)."""
        target = os.path.join(self.quarantine_dir, os.path.basename(batch.path))
        os.replace(batch.path, target)
        write_private(target + ".error", message.rstrip("\n") + "\n", mode=0o600)
        return target

    def quarantined(self) -> List[Batch]:
        """The batches in quarantine/, oldest first (regular files named like
        a batch); OSError when it cannot be listed."""
        # O_NOFOLLOW: a quarantine that is a symlink is not listed (the push
        # sets it aside under the lock: check_quarantine).
        fd = os.open(self.quarantine_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            with os.scandir(fd) as entries:
                return _named_batches(entries, self.quarantine_dir)
        finally:
            os.close(fd)

    def enforce_quarantine_bound(self) -> int:
        """Remove the oldest quarantined batches (with their .error) until the
        quarantine fits in --spool-max-bytes too; the points removed."""
        try:
            batches = self.quarantined()
        except OSError:
            return 0
        total = sum(b.size for b in batches)
        removed = 0
        for batch in batches:
            if total <= self.max_bytes:
                break
            for path in (batch.path, batch.path + ".error"):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            total -= batch.size
            removed += batch.points
        return removed

    def set_aside(self, path: str, why: str, state: Dict, consequence: str = "") -> None:
        """Move a corrupt file aside, count it in ``state``, say so in one line."""
        try:
            where = f"moved aside to {move_aside(path)}"
        except OSError as exc:
            where = f"could not be moved aside ({exc.strerror})"
        state["corrupt_files"] = state.get("corrupt_files", 0) + 1
        log.error("spool file %s %s; %s%s", path, why, where, consequence)

    def check_quarantine(self, state: Dict) -> None:
        """Under the lock: quarantine/ is a private directory of ours, or it
        is set aside (counted) and made again."""
        path = self.quarantine_dir
        try:
            why = problem(os.lstat(path), path, "quarantine", directory=True)
        except FileNotFoundError:
            why = "is missing"
        if why:
            if why != "is missing":
                self.set_aside(path, "cannot be used (" + why + ")", state)
            try:
                os.mkdir(path, 0o700)
            except OSError as exc:  # said again if a batch needs it (quarantine)
                log.error("cannot create %s: %s", path, exc.strerror)

    def enforce_bound(self) -> int:
        """Drop the oldest batches until the spool fits; the points dropped."""
        batches = self.batches()
        total = sum(b.size for b in batches)
        dropped = 0
        for batch in batches:
            if total <= self.max_bytes:
                break
            self.remove(batch)
            total -= batch.size
            dropped += batch.points
        return dropped

    # -- state -------------------------------------------------------------
    def _read_state(self) -> Dict:
        """state.json parsed and checked; OSError (FileNotFoundError: there is
        none), or Corrupt saying why it cannot be used."""
        state: Any = parse_json(read_bounded(self.state_path, STATE_MAX_BYTES))
        why = state_problem(state)
        if why:
            raise Corrupt(why)
        return state

    def load_state(self) -> Dict:
        """Under the lock: the state, or a fresh one (a corrupt file is set
        aside and counted)."""
        try:
            return self._read_state()
        except FileNotFoundError:
            return fresh_state()
        except (Corrupt, OSError) as exc:
            why = str(exc) if isinstance(exc, Corrupt) else f"cannot be read ({exc.strerror})"
            state = fresh_state()
            self.set_aside(self.state_path, why, state, "; its counters start again from zero")
            return state

    def save_state(self, state: Dict) -> None:
        write_private(self.state_path, json.dumps(state, sort_keys=True) + "\n", mode=0o600)

    def health(self) -> Optional[Health]:
        """The push's health, or None where nothing was ever pushed from here
        (or the spool cannot be trusted: said once). Reads without the lock
        and never moves anything."""
        try:
            check(self.dir, "--spool-dir", directory=True)
        except OutputError as exc:
            _warn_once(f"{exc}; push figures left out")
            return None
        try:
            batches = self.batches()
        except OSError as exc:  # e.g. root's 0700 spool, read by another user
            _warn_once(f"cannot read --spool-dir {self.dir} ({exc.strerror}); push figures "
                       "left out")
            return None
        if not batches and not os.path.lexists(self.state_path):
            return None
        spooled = sum(b.points for b in batches)
        q_batches: Optional[int] = None
        q_bytes: Optional[int] = None
        try:
            quarantined = self.quarantined()
            q_batches, q_bytes = len(quarantined), sum(b.size for b in quarantined)
        except FileNotFoundError:
            q_batches = q_bytes = 0
        except OSError:
            pass  # e.g. a symlink: set aside by the next push, figures left out
        try:
            state = self._read_state()
        except FileNotFoundError:
            state = fresh_state()
        except (Corrupt, OSError) as exc:
            if isinstance(exc, Corrupt):
                _warn_once(f"spool file {self.state_path} {exc}; push figures left out "
                           "until the next push sets it aside")
            else:
                _warn_once(f"cannot read {self.state_path} ({exc.strerror}); push figures "
                           "left out")
            return Health(None, spooled, None, None, None, q_batches, q_bytes)
        return Health(state.get("last_success"), spooled, state.get("dropped_points", 0),
                      state.get("quarantined_batches", 0), state.get("corrupt_files", 0),
                      q_batches, q_bytes)
