"""Direct push to InfluxDB's ``/api/v2/write`` with influxdb-client, with a spool.

influxdb-client costs about 0.4 s to import: only this module imports it, and
only when a push is made. Writes are synchronous (the client's default batching
would hide errors). A batch that cannot be written for a transient reason
(connection refused/reset, timeout, 5xx, 429) is spooled and replayed, oldest
first, before new data at the next successful write; points keep their own
timestamps, so a replay neither duplicates nor shifts data. 401/403 keep the
spool and fail the run; a 400 (the server rejects the data) sets that batch
aside in quarantine with the server's message.
"""

from __future__ import annotations

import time

from apache_metrics_exporter.errors import OutputError
from apache_metrics_exporter.log import log
from apache_metrics_exporter.paths import Corrupt
from apache_metrics_exporter.push.spool import Spool
from apache_metrics_exporter.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, List, Optional

TRANSIENT, AUTH, REJECTED = "transient", "auth", "rejected"
LOCK_WAIT = 5.0  # seconds to wait for another run's delivery before spooling instead
WRITE_MARGIN = 1.0  # seconds past --influxdb-timeout before a write is given up


class PushSettings(NamedTuple):
    url: str
    org: str
    bucket: str
    token: str
    auth_basic: bool = False
    ca_file: Optional[str] = None
    insecure: bool = False
    timeout: float = 10.0


class PushFailed(Exception):
    """A write failed; ``kind`` says whether to spool, stop or quarantine."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class InfluxPush:
    """One client for the life of the process (kept across loop cycles)."""

    def __init__(self, settings: PushSettings, spool: Spool) -> None:
        self.settings = settings
        self.spool = spool
        self._client: Any = None
        self._write_api: Any = None

    def _api(self) -> Any:
        if self._write_api is None:
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS

            s = self.settings
            self._client = InfluxDBClient(
                url=s.url, token=s.token, org=s.org, timeout=int(s.timeout * 1000),
                verify_ssl=not s.insecure, ssl_ca_cert=s.ca_file, auth_basic=s.auth_basic,
                retries=False)
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        return self._write_api

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = self._write_api = None

    def _scrub(self, text: str) -> str:
        """``text`` without the token, password or basic-auth header in any
        form (a server or proxy may echo them), nor URL user information."""
        from apache_metrics_exporter.scrub import scrub

        return scrub(text)

    def write(self, body: str) -> None:
        """One write, bounded by a wall-clock deadline (--influxdb-timeout): the
        client's timeout is per socket operation, and a server answering one
        byte at a time would hold the run (and the spool's lock) for ever."""
        import threading

        outcome: List[BaseException] = []

        def run() -> None:
            try:
                self._write(body)
            except BaseException as exc:  # carried to the caller's thread
                outcome.append(exc)
            else:
                outcome.append(StopIteration())

        worker = threading.Thread(target=run, name="influxdb-write", daemon=True)
        worker.start()
        worker.join(self.settings.timeout + WRITE_MARGIN)
        if not outcome:
            self.close()  # the client is left to the stuck thread; a new one next time
            raise PushFailed(TRANSIENT, self._scrub(
                f"no complete answer from InfluxDB at {self.settings.url} within "
                f"{self.settings.timeout:g} s (--influxdb-timeout)"))
        if not isinstance(outcome[0], StopIteration):
            raise outcome[0]

    def _write(self, body: str) -> None:
        """One synchronous write; PushFailed says what kind of failure."""
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        where = self.settings.url
        try:
            self._api().write(bucket=self.settings.bucket, org=self.settings.org,
                              record=body.encode("utf-8"), write_precision=WritePrecision.NS)
        except ApiException as exc:
            status = exc.status or 0
            message = _server_message(exc.body) or exc.reason or ""
            text = self._scrub(f"InfluxDB at {where} answered HTTP {status}: {message}")
            if status in (401, 403):
                raise PushFailed(AUTH, text + "; check the token (--influxdb-token-file) or "
                                 "user/password") from None
            if status == 400 or status == 422:
                raise PushFailed(REJECTED, text) from None
            if status == 404:
                raise PushFailed(AUTH, text + "; check --influxdb-org and "
                                 "--influxdb-bucket") from None
            raise PushFailed(TRANSIENT, text) from None
        except (Urllib3Error, OSError) as exc:
            reason = _reason(exc)
            raise PushFailed(TRANSIENT, self._scrub(
                f"cannot reach InfluxDB at {where}: {reason}")) from None

    def deliver(self, body: str, timestamp_ns: int) -> None:
        """Replay the spool, then write ``body``; spool it if that fails for now.

        Raises OutputError when the operator must act (credentials, rejected
        data, spool not writable or not trusted); the data is kept in the spool
        or quarantine. A spooled file that cannot be read is set aside and
        counted (Spool.set_aside), and the rest goes on: this batch is always
        sent or spooled.
        """
        spool = self.spool
        spool.ensure()
        from apache_metrics_exporter.locks import Busy

        try:
            with spool.locked(LOCK_WAIT):
                self._deliver_locked(body, timestamp_ns)
        except Busy:
            # Another run is delivering (maybe to a slow InfluxDB): this batch
            # waits in the spool for the next delivery instead of being lost.
            if body:
                spool.add(body, timestamp_ns)
                log.warning("another run is writing to InfluxDB; this batch waits in %s "
                            "for the next run", spool.dir)

    def _deliver_locked(self, body: str, timestamp_ns: int) -> None:
        """deliver()'s work, under the spool's lock."""
        spool = self.spool
        state = spool.load_state()
        spool.check_quarantine(state)

        def quarantine(batch: Any, failure: PushFailed) -> str:
            try:
                where = spool.quarantine(batch, self._scrub(str(failure)))
            except (OSError, OutputError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                return f"(nowhere: the quarantine cannot be used: {reason})"
            state["quarantined_batches"] = state.get("quarantined_batches", 0) + 1
            return where

        failure: Optional[PushFailed] = None
        for batch in spool.batches(everything=True):
            try:
                lines = spool.read(batch)
            except FileNotFoundError:
                continue  # gone since the listing
            except (Corrupt, OSError) as exc:
                why = str(exc) if isinstance(exc, Corrupt) else \
                    f"cannot be read ({exc.strerror})"
                spool.set_aside(batch.path, why, state, " (not sent)")
                continue
            try:
                self.write(lines)
            except PushFailed as exc:
                if exc.kind == REJECTED:
                    log.error("%s; the spooled batch was set aside in %s", exc,
                              quarantine(batch, exc))
                    continue
                failure = exc
                break
            spool.remove(batch)
            state["last_success"] = int(time.time())
        if failure is None and body:
            try:
                self.write(body)
                state["last_success"] = int(time.time())
            except PushFailed as exc:
                failure = exc
        if failure is not None and body:
            batch = spool.add(body, timestamp_ns)
            if failure.kind == REJECTED:
                quarantine(batch, failure)
        dropped = spool.enforce_bound()
        if dropped:
            state["dropped_points"] = state.get("dropped_points", 0) + dropped
            log.warning("spool %s is over --spool-max-bytes (%d): dropped the oldest "
                        "%d points", spool.dir, spool.max_bytes, dropped)
        spool.save_state(state)
        if failure is None:
            return
        pending = sum(b.points for b in spool.batches())
        if failure.kind == TRANSIENT:
            # Data, not a crash: the run succeeded in keeping everything.
            log.error("%s; %d points kept in %s for the next successful write",
                      failure, pending, spool.dir)
            return
        if failure.kind == REJECTED:
            raise OutputError(f"{failure}; the batch was set aside in "
                              f"{spool.dir}/quarantine and will not be retried")
        raise OutputError(f"{failure}; {pending} points kept in {spool.dir}")


def _server_message(body: Any) -> str:
    """The server's message, scrubbed before it is cut short (a secret cut in
    half would no longer be recognised)."""
    from apache_metrics_exporter.scrub import scrub

    if not body:
        return ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(body)
    try:
        import json

        data = json.loads(text)
        if isinstance(data, dict):
            return scrub(str(data.get("message") or data.get("error") or text))
    except ValueError:
        pass
    return " ".join(scrub(text).split())[:300]


def _reason(exc: BaseException) -> str:
    from apache_metrics_exporter.scrub import scrub

    text = scrub(str(getattr(exc, "reason", "") or exc))
    for known in ("Connection refused", "timed out", "Connection reset",
                  "Name or service not known", "certificate verify failed"):
        if known.lower() in text.lower():
            return known
    return " ".join(text.split())[:200]
