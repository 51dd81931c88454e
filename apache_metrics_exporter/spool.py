"""The push spool: batches that could not be delivered, kept on disk until they can.

Layout of the spool directory:

- ``NNNNNNNNNNNNNNNNNNNN.PID.POINTS.lp``: one batch of line protocol each; the
  name starts with the batch's timestamp (ns, zero-padded), so sorting names
  sorts batches oldest first, and it carries the number of points, so the
  health figures need no reading of the files;
- ``quarantine/``: batches the server rejected (HTTP 400), each with a
  ``.error`` file holding the server's message - never retried;
- ``state.json``: last success, dropped points, quarantined batches;
- ``.lock``: held (flock) by the run that replays and writes, so two
  overlapping runs never send the same batch twice.

Every file is written atomically (output.write_atomic).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Dict, Iterator, List, NamedTuple, Optional

from apache_metrics_exporter.errors import OutputError
from apache_metrics_exporter.locks import exclusive
from apache_metrics_exporter.output import write_atomic

STATE_VERSION = 1


class Health(NamedTuple):
    """What the collector reports about the push."""

    last_success: Optional[int]   # epoch seconds
    spooled_points: int
    dropped_points: int
    quarantined_batches: int


class Batch(NamedTuple):
    path: str
    points: int
    size: int


def _parse_name(name: str) -> Optional[int]:
    parts = name.split(".")
    if len(parts) == 4 and parts[3] == "lp" and parts[0].isdigit() and parts[2].isdigit():
        return int(parts[2])
    return None


class Spool:
    """A spool directory (created on first use, mode 0700)."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.state_path = os.path.join(directory, "state.json")

    def ensure(self) -> None:
        """Create the directory; a UsageError-style OutputError if impossible."""
        try:
            # makedirs gives only the last directory its mode: make both here.
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            os.makedirs(os.path.join(self.dir, "quarantine"), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create --spool-dir {self.dir}: {exc.strerror}; "
                              "give a directory this user can write") from None
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise OutputError(f"--spool-dir {self.dir} is not writable by this user")

    @contextmanager
    def locked(self, timeout: float = 60.0) -> Iterator[None]:
        """Exclusive use of the spool; waits for an overlapping run to finish."""
        with exclusive(os.path.join(self.dir, ".lock"), timeout, "another run"):
            yield

    # -- batches -----------------------------------------------------------
    def batches(self) -> List[Batch]:
        """Spooled batches, oldest first."""
        out = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        for name in names:
            points = _parse_name(name)
            if points is None:
                continue
            path = os.path.join(self.dir, name)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            out.append(Batch(path, points, size))
        return out

    def add(self, body: str, timestamp_ns: int) -> Batch:
        """Keep a batch for later; the name sorts it among the others by time."""
        points = body.count("\n")
        name = f"{timestamp_ns:020d}.{os.getpid()}.{points}.lp"
        path = os.path.join(self.dir, name)
        write_atomic(path, body, mode=0o600)
        return Batch(path, points, len(body.encode()))

    def read(self, batch: Batch) -> str:
        with open(batch.path, encoding="utf-8") as fh:
            return fh.read()

    def remove(self, batch: Batch) -> None:
        try:
            os.unlink(batch.path)
        except FileNotFoundError:
            pass

    def quarantine(self, batch: Batch, message: str) -> str:
        """Set a rejected batch aside with the server's message."""
        target = os.path.join(self.dir, "quarantine", os.path.basename(batch.path))
        os.replace(batch.path, target)
        write_atomic(target + ".error", message.rstrip("\n") + "\n", mode=0o600)
        return target

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
    def load_state(self) -> Dict:
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                state = json.load(fh)
            if isinstance(state, dict) and state.get("version") == STATE_VERSION:
                return state
        except (OSError, ValueError):
            pass
        return {"version": STATE_VERSION, "last_success": None, "dropped_points": 0,
                "quarantined_batches": 0}

    def save_state(self, state: Dict) -> None:
        write_atomic(self.state_path, json.dumps(state, sort_keys=True) + "\n", mode=0o600)

    def health(self) -> Optional[Health]:
        """The push's health, or None where nothing was ever pushed from here."""
        batches = self.batches()
        if not batches and not os.path.exists(self.state_path):
            return None
        state = self.load_state()
        return Health(state.get("last_success"), sum(b.points for b in batches),
                      int(state.get("dropped_points", 0)),
                      int(state.get("quarantined_batches", 0)))
