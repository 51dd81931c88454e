"""Direct push to InfluxDB's ``/api/v2/write`` with influxdb-client, with a spool.

influxdb-client costs about 0.4 s to import: only this module imports it, and
only when a push is made. Writes are synchronous (the client's default batching
would hide errors).

Delivery is at-least-once: a batch leaves the spool only after the server said
2xx, so a batch the server stored but answered too late (or not at all) is
sent again. Every point carries its own timestamp in nanoseconds, written
once when the batch was collected and never changed, so a batch sent again
rewrites the same points (same series, same time, same values): storage that
keeps one point per series and time (InfluxDB) holds it once.

A run replays the spool oldest first, for at most ``replay_time`` seconds
(REPLAY_TIME, or half of --interval), then writes its own batch. What a failure
does depends on its kind (``_kind``):

- TRANSIENT (no answer, timeout, 408, 429, 502, 503, 504, or any answer
  with Retry-After): the server is struggling or busy; the replay stops, the
  batch is spooled, nothing is counted against it;
- AUTH (401, 403, 404, and a TLS certificate not trusted or not for the
  URL's name, https:// to a plain port, plain HTTP to a TLS port):
  nothing will succeed until a person acts; the replay stops, the batch is
  spooled, the run fails;
- REJECTED (400 but the one a TLS port gives plain HTTP, 413, 422): this
  batch will never be taken; it is set aside in quarantine/ at once;
- FAILING (500, other 5xx and 4xx): maybe this batch, maybe the server; the replay
  skips it and goes on (until FAILING_IN_A_ROW such failures in a row). A
  spooled batch that failed while a later write of the same run succeeded
  gets a try counted in state.json; at QUARANTINE_TRIES such tries, the first
  at least QUARANTINE_AFTER seconds before, it is set aside in quarantine/.
"""

from __future__ import annotations

import os
import re
import time

from apache_metrics_exporter.errors import OutputError
from apache_metrics_exporter.log import log
from apache_metrics_exporter.paths import Corrupt
from apache_metrics_exporter.push.spool import MAX_FAILING, Batch, Spool
from apache_metrics_exporter.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Any, Callable, Dict, List, Optional, Tuple

TRANSIENT, AUTH, REJECTED, FAILING = "transient", "auth", "rejected", "failing"
LOCK_WAIT = 5.0  # seconds to wait for another run's delivery before spooling instead
WRITE_MARGIN = 1.0  # seconds past --influxdb-timeout before a write is given up
REPLAY_TIME = 10.0  # seconds a run may spend replaying the spool (then: next run)
FAILING_IN_A_ROW = 3  # FAILING answers in a row that stop a replay (the server, not a batch)
QUARANTINE_TRIES = 3  # a spooled batch failing while later ones go is set aside after
QUARANTINE_AFTER = 600  # ... this many tries, the first at least this many seconds ago


class PushSettings(NamedTuple):
    url: str
    org: str
    bucket: str
    token: str
    auth_basic: bool = False
    ca_file: Optional[str] = None
    insecure: bool = False
    timeout: float = 10.0
    replay_time: float = REPLAY_TIME  # no new spooled write starts after this


class PushFailed(Exception):
    """A write failed; ``kind`` says whether to spool, stop or quarantine.
    ``status`` is the HTTP status (0: no answer), ``detail`` the server's
    message or the connection's error, scrubbed (--check tells them apart)."""

    def __init__(self, kind: str, message: str, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.detail = detail


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
            rest = self._client.api_client.rest_client
            rest.pool_manager = _BoundedAnswers(rest.pool_manager)
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
        byte at a time would hold the run (and the spool's lock) for ever.

        An empty ``body`` is sent as a write with no line (the run never sends
        one; --check does, to learn whether the token may write to the bucket
        without writing a point)."""
        self._bounded(lambda: self._write(body), "influxdb-write")

    def ping(self) -> Tuple[str, str]:
        """(version, build) the server gives in its answer to /ping ("" when
        it gives none), asked through this push's client - its URL, TLS
        settings and timeout - within the same deadline as a write;
        PushFailed as for a write. For --check."""
        return self._bounded(self._ping, "influxdb-ping")

    def _bounded(self, call: Callable[[], Any], name: str) -> Any:
        """``call()`` in a thread, given up after --influxdb-timeout plus
        WRITE_MARGIN (TRANSIENT): what it returns, or what it raised."""
        import threading

        outcome: List[Any] = []

        def run() -> None:
            try:
                result = call()
            except BaseException as exc:  # carried to the caller's thread
                outcome.append(exc)
            else:
                outcome.append((result,))

        worker = threading.Thread(target=run, name=name, daemon=True)
        worker.start()
        worker.join(self.settings.timeout + WRITE_MARGIN)
        if not outcome:
            self.close()  # the client is left to the stuck thread; a new one next time
            raise PushFailed(TRANSIENT, self._scrub(
                f"no complete answer from InfluxDB at {self.settings.url} within "
                f"{self.settings.timeout:g} s (--influxdb-timeout)"),
                detail=f"no complete answer within {self.settings.timeout:g} s")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0][0]

    def _write(self, body: str) -> None:
        """One synchronous write; PushFailed says what kind of failure."""
        from influxdb_client import WritePrecision

        try:
            self._api().write(bucket=self.settings.bucket, org=self.settings.org,
                              record=body.encode("utf-8"), write_precision=WritePrecision.NS)
        except Exception as exc:
            failure = self._failed(exc, write=True)
            if failure is None:
                raise
            raise failure from None

    def _ping(self) -> Tuple[str, str]:
        from influxdb_client import PingService

        try:
            self._api()
            _data, _status, headers = PingService(self._client.api_client) \
                .get_ping_with_http_info(_return_http_data_only=False)
        except Exception as exc:
            failure = self._failed(exc, write=False)
            if failure is None:
                raise
            raise failure from None
        return (headers.get("X-Influxdb-Version", "") if headers else "",
                headers.get("X-Influxdb-Build", "") if headers else "")

    def _failed(self, exc: Exception, write: bool) -> Optional[PushFailed]:
        """The PushFailed for an error of the client or the connection; None
        for any other exception (it goes on as it is)."""
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        where = self.settings.url
        if isinstance(exc, ApiException):
            status = exc.status or 0
            message = _server_message(exc.body) or exc.reason or ""
            detail = _said(str(message))
            if not status:  # no answer: influxdb-client wraps urllib3's SSLError so
                return self._no_answer(detail)
            text = self._scrub(f"InfluxDB at {where} answered HTTP {status}: {message}")
            kind = _kind(status, "Retry-After" in (getattr(exc, "headers", None) or {}))
            if status == 400 and _PLAIN_TO_TLS.match(detail):
                # The URL, not the data: quarantining the batch would lose it.
                kind, text = AUTH, f"{text}; give --influxdb-url https://..."
            elif write and status in (401, 403):
                text += "; check the token (--influxdb-token-file) or user/password"
            elif write and status == 404 and detail.lower() == "404 page not found":
                text += ("; the server has no /api/v2/write: InfluxDB before 1.8, or "
                         "--influxdb-url is not the server's base URL (http://HOST:8086)")
            elif write and status == 404:
                text += "; check --influxdb-org and --influxdb-bucket"
            return PushFailed(kind, text, status, detail)
        if isinstance(exc, (Urllib3Error, OSError)):
            return self._no_answer(_detail(exc), _reason(exc))
        return None

    def _no_answer(self, detail: str, reason: str = "") -> PushFailed:
        """No HTTP answer: a TLS problem that only a person can mend (a
        certificate not trusted or not for this name, https:// to a plain
        port) stops the run as bad credentials do - the batch stays in the
        spool - while anything else (refused, reset, timed out) is for now."""
        where = self.settings.url
        fix = tls_fix(detail, self.settings.ca_file)
        if fix is not None:
            return PushFailed(AUTH, self._scrub(f"TLS with InfluxDB at {where} failed: "
                                                f"{detail}; {fix}"), 0, detail)
        return PushFailed(TRANSIENT, self._scrub(
            f"cannot reach InfluxDB at {where}: {reason or detail}"), 0, detail)

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
        """deliver()'s work, under the spool's lock (the module's docstring
        says what each kind of failure does)."""
        spool = self.spool
        state = spool.load_state()
        spool.check_quarantine(state)
        failing: Dict = state.setdefault("failing", {})

        def quarantine(batch: Batch, failure: PushFailed) -> Optional[str]:
            """Set ``batch`` aside; where, or None (said) if it stays in the spool."""
            try:
                where = spool.quarantine(batch, self._scrub(str(failure)))
            except (OSError, OutputError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                log.error("cannot set %s aside: the quarantine cannot be used (%s)",
                          batch.path, reason)
                return None
            failing.pop(os.path.basename(batch.path), None)
            state["quarantined_batches"] = state.get("quarantined_batches", 0) + 1
            return where

        def delivered(batch: Optional[Batch] = None) -> None:
            if batch is not None:
                spool.remove(batch)
                failing.pop(os.path.basename(batch.path), None)
            state["last_success"] = int(time.time())
            struck.extend(pending)  # a later write went: their failures are their own
            pending.clear()

        deadline = time.monotonic() + self.settings.replay_time
        stop: Optional[PushFailed] = None  # what ended the replay early
        pending: List[Tuple[Batch, PushFailed]] = []  # FAILING, no later success yet
        struck: List[Tuple[Batch, PushFailed]] = []  # FAILING, a later write succeeded
        in_a_row = left = 0
        batches = spool.batches(everything=True)
        for n, batch in enumerate(batches):
            if time.monotonic() >= deadline:
                left = len(batches) - n
                break
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
                    where = quarantine(batch, exc)
                    if where:
                        log.error("%s; the spooled batch was set aside in %s", exc, where)
                    continue
                if exc.kind == FAILING:
                    pending.append((batch, exc))
                    in_a_row += 1
                    if in_a_row < FAILING_IN_A_ROW:
                        continue  # maybe this batch only: try the next
                stop = exc
                break
            in_a_row = 0
            delivered(batch)
        if left:
            log.info("replay of %s stopped at its deadline (%g s): %d batches left for "
                     "the next run", spool.dir, self.settings.replay_time, left)

        failure: Optional[PushFailed] = None  # why this run's batch was not delivered
        if body:
            if stop is not None and stop.kind in (TRANSIENT, AUTH):
                failure = stop  # nothing would go now: no further request
            else:
                try:
                    self.write(body)
                    delivered()
                except PushFailed as exc:
                    failure = exc
            if failure is not None:
                new = spool.add(body, timestamp_ns)
                if failure.kind == REJECTED and quarantine(new, failure) is None:
                    failure = PushFailed(AUTH, f"{failure}; the batch stays in the spool "
                                               "until the quarantine can be used")
        else:
            failure = stop
        self._count_tries(struck, failing, quarantine)

        dropped = spool.enforce_bound()
        if dropped:
            state["dropped_points"] = state.get("dropped_points", 0) + dropped
            log.warning("spool %s is over --spool-max-bytes (%d): dropped the oldest "
                        "%d points", spool.dir, spool.max_bytes, dropped)
        removed = spool.enforce_quarantine_bound()
        if removed:
            state["dropped_points"] = state.get("dropped_points", 0) + removed
            log.warning("quarantine %s is over --spool-max-bytes (%d): removed the oldest "
                        "%d points", spool.quarantine_dir, spool.max_bytes, removed)
        names = {os.path.basename(b.path) for b in spool.batches()}
        kept = sorted((entry["first"], name) for name, entry in failing.items() if name in names)
        state["failing"] = {name: failing[name] for _, name in kept[:MAX_FAILING]}
        spool.save_state(state)
        if failure is None:
            return
        pending_points = sum(b.points for b in spool.batches())
        if failure.kind in (TRANSIENT, FAILING):
            # Data, not a crash: the run succeeded in keeping everything.
            log.error("%s; %d points kept in %s for the next successful write",
                      failure, pending_points, spool.dir)
            return
        if failure.kind == REJECTED:
            raise OutputError(f"{failure}; the batch was set aside in "
                              f"{spool.dir}/quarantine and will not be retried")
        raise OutputError(f"{failure}; {pending_points} points kept in {spool.dir}")

    def _count_tries(self, struck: List[Tuple[Batch, PushFailed]], failing: Dict,
                     quarantine: Callable[[Batch, PushFailed], Optional[str]]) -> None:
        """Count a try for each spooled batch that failed while a later write
        succeeded; set aside those that reached QUARANTINE_TRIES over
        QUARANTINE_AFTER seconds (one line each, once)."""
        now = int(time.time())
        for batch, exc in struck:
            name = os.path.basename(batch.path)
            before = failing.get(name) or {"tries": 0, "first": now}
            entry = {"tries": before["tries"] + 1, "first": min(before["first"], now)}
            failing[name] = entry
            if entry["tries"] >= QUARANTINE_TRIES and now - entry["first"] >= QUARANTINE_AFTER:
                where = quarantine(batch, exc)
                if where:
                    log.error("%s; the spooled batch (%d points) failed %d times over %d "
                              "minutes while later batches were written: set aside in %s",
                              exc, batch.points, entry["tries"],
                              (now - entry["first"]) // 60, where)
                continue
            log.info("%s; the spooled batch %s failed while a later one was written (try "
                     "%d; set aside after %d tries over %d minutes)", exc, name,
                     entry["tries"], QUARANTINE_TRIES, QUARANTINE_AFTER // 60)


MAX_ANSWER = 64 * 1024  # bytes of an InfluxDB answer's body read (its message)


class _Answer:
    """What influxdb-client reads of a urllib3 response it preloads
    (status, reason, headers, data), with the body read by _BoundedAnswers."""

    def __init__(self, response: Any, data: bytes) -> None:
        self.status, self.reason = response.status, response.reason
        self.headers, self.data = response.headers, data

    def getheaders(self) -> Any:
        return self.headers

    def getheader(self, name: str, default: Any = None) -> Any:
        return self.headers.get(name, default)


class _BoundedAnswers:
    """influxdb-client's urllib3 pool manager, but that an answer's body is
    read to at most MAX_ANSWER bytes, and a compressed one inflated to at
    most that: influxdb-client reads and inflates the whole of it, so a
    hostile or broken server could make a run take any amount of memory
    (a 200 kB gzip answer took it from 220 to 641 MB). Only the server's
    message is ever used of it (a write's answer is 204 with no body)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:  # clear(), connection_from_url, ...
        return getattr(self._pool, name)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("preload_content", True):
            return self._pool.request(*args, **kwargs)  # (a stream: not ours)
        kwargs["preload_content"] = False
        response = self._pool.request(*args, **kwargs)
        raw = response.read(MAX_ANSWER + 1, decode_content=False) or b""
        whole = len(raw) <= MAX_ANSWER and not response.read(1, decode_content=False)
        if whole:
            response.release_conn()  # the connection is kept for the next write
        else:
            response.close()  # never read past the bound, nor kept half read
        body = _inflated(raw[:MAX_ANSWER], response.headers.get("Content-Encoding", ""))
        # influxdb-client decodes it as UTF-8: a body cut in a character, or
        # not UTF-8 at all, would raise there (a traceback, the batch lost).
        return _Answer(response, body.decode("utf-8", "replace").encode("utf-8"))


def _inflated(raw: bytes, coding: str) -> bytes:
    """The body as sent, at most MAX_ANSWER bytes of it once inflated
    (gzip, deflate); a coding it cannot read gives nothing."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding not in ("gzip", "x-gzip", "deflate"):
        return b""
    import zlib

    try:  # 47: a gzip or zlib header, told apart; -15: deflate without one
        return zlib.decompressobj(47).decompress(raw, MAX_ANSWER)
    except zlib.error:
        try:
            return zlib.decompressobj(-15).decompress(raw, MAX_ANSWER)
        except zlib.error:
            return b""


def _kind(status: int, retry_after: bool = False) -> str:
    """What an HTTP error status means for the batch and the run."""
    if status in (401, 403, 404):
        return AUTH  # credentials, org or bucket: a person must act
    if status in (400, 413, 422):
        return REJECTED  # this data will never be taken
    if status in (408, 429, 502, 503, 504) or retry_after:
        # the server (or a proxy before it) asks us to come back later: says
        # nothing about this batch, which must not be counted towards quarantine
        return TRANSIENT
    return FAILING  # 500, other 5xx and 4xx: this batch or the server - the next write tells


def _server_message(body: Any) -> str:
    """The server's message (a JSON answer's ``message`` or ``error``, else
    the text), scrubbed before it is cut short (a secret cut in half would
    no longer be recognised): one line of at most 300 characters, whatever
    the server sent (a 30 MB message made a 30 MB error line and
    quarantine/*.error at every run)."""
    if not body:
        return ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(body)
    try:
        import json

        data = json.loads(text)
        if isinstance(data, dict):
            text = str(data.get("message") or data.get("error") or text)
    except (ValueError, RecursionError):  # (no JSON, or nested past the recursion limit)
        # A JSON answer cut short (MAX_ANSWER): its message as far as it goes.
        cut = _JSON_MESSAGE.match(text)
        if cut is not None:
            try:
                text = json.loads('"' + cut.group(1) + '"')
            except ValueError:  # (an escape cut in two)
                text = cut.group(1)
    return _said(text)


_JSON_MESSAGE = re.compile(r'\s*\{.*?"(?:message|error)"\s*:\s*"((?:[^"\\]|\\.)*)', re.S)


# Go's and nginx's answers to plain HTTP on a TLS port, as the message of a
# 400 (whitespace made single spaces): the whole text of Go's, the head of
# nginx's page. Never the words anywhere in a message: a data rejection may
# quote the data (InfluxDB's parse errors quote the line, 1.x's tag limit the
# value), and a request line of Apache's (longest_request) can hold them.
_PLAIN_TO_TLS = re.compile(r"Client sent an HTTP request to an HTTPS server\.?\Z|<html> ?<head> ?"
                           r"<title>400 The plain HTTP request was sent to HTTPS port</title>",
                           re.I)


def tls_fix(detail: str, ca_file: Optional[str]) -> Optional[str]:
    """What to do about a TLS failure in ``detail`` (a connection's error),
    None when it is none that a person must mend."""
    low = detail.lower()
    if "wrong version number" in low or "record layer failure" in low:
        return ("the server does not speak TLS there: give --influxdb-url http://... (or "
                "the server's TLS port)")
    if "certificate verify failed" not in low:
        return None
    if "mismatch" in low or "not valid for" in low:
        return ("the certificate is not for the host name of --influxdb-url: give the URL "
                "by a name the certificate has")
    if "expired" in low:
        return ("the server's certificate has expired (or this host's clock is ahead): renew "
                "it, or set the clock")
    if "not yet valid" in low:
        return ("the server's certificate is not valid yet: this host's clock is behind (or "
                "the certificate was dated ahead); set the clock")
    if ca_file:
        return (f"the certificate is not signed by a CA of --influxdb-ca-file {ca_file}: "
                "give the CA that signed it")
    return ("give --influxdb-ca-file with the CA that signed InfluxDB's certificate (a "
            "self-signed one: the certificate itself); --influxdb-insecure skips the check")


def _detail(exc: BaseException) -> str:
    """A connection error's own words (scrubbed, bounded): _reason keeps
    only the known part, --check shows the rest (e.g. which name a
    certificate does not match)."""
    return _said(str(getattr(exc, "reason", "") or exc))


def _said(text: str) -> str:
    """What a server or a connection said, fit for a line: scrubbed before
    it is cut short (a secret cut in half would no longer be recognised),
    whitespace made single spaces, at most 300 characters."""
    from apache_metrics_exporter.scrub import scrub

    return " ".join(scrub(text).split())[:300]


def _reason(exc: BaseException) -> str:
    from apache_metrics_exporter.scrub import scrub

    text = scrub(str(getattr(exc, "reason", "") or exc))
    for known in ("Connection refused", "timed out", "Connection reset",
                  "Name or service not known", "certificate verify failed"):
        if known.lower() in text.lower():
            return known
    return _said(text)[:200]
