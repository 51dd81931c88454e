"""Push to InfluxDB's /api/v2/write (InfluxDB 2.x, 1.8+, VictoriaMetrics, ...).

The lines are the influx writer's; delivery goes through push.InfluxPush with
its spool. influxdb-client is imported only when the first write is made.
"""

from __future__ import annotations

from apache_metrics_exporter.config import read_secret
from apache_metrics_exporter.errors import UsageError
from apache_metrics_exporter.writers.influx import (  # noqa: F401 - render: same lines
    _STAMP_LIMIT,
    render,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Sequence

    from apache_metrics_exporter.collect.snapshot import Snapshot
    from apache_metrics_exporter.push.client import PushSettings
    from apache_metrics_exporter.writers import Settings



def push_settings(settings: Settings) -> PushSettings:
    """PushSettings from the options; UsageError names what is missing."""
    from apache_metrics_exporter.push.client import REPLAY_TIME, PushSettings

    s = settings
    if not s.influxdb_url:
        raise UsageError("--format influxdb needs --influxdb-url, e.g. http://127.0.0.1:8086")
    if not s.influxdb_url.startswith(("http://", "https://")):
        raise UsageError(f"--influxdb-url {s.influxdb_url!r}: expected http(s)://HOST:PORT")
    if not s.influxdb_bucket:
        raise UsageError("--format influxdb needs --influxdb-bucket (InfluxDB 1.8: "
                         "DATABASE/RETENTION, e.g. telegraf/autogen)")
    if s.influxdb_ca_file:
        from apache_metrics_exporter.collect.http import tls_file_problem

        why = tls_file_problem(s.influxdb_ca_file, "--influxdb-ca-file")
        if why:  # a FIFO would block the push for ever in ssl's own open
            raise UsageError(why)
    token = s.influxdb_token
    if s.influxdb_token_file:
        token = read_secret(s.influxdb_token_file, "--influxdb-token-file")
    if s.influxdb_username:
        password = s.influxdb_password
        if s.influxdb_password_file:
            password = read_secret(s.influxdb_password_file, "--influxdb-password-file")
        token = f"{s.influxdb_username}:{password or ''}"
    org = s.influxdb_org or ("-" if s.influxdb_username else "")
    if not org:
        raise UsageError("--format influxdb needs --influxdb-org (InfluxDB 1.8: '-')")
    return PushSettings(url=s.influxdb_url.rstrip("/"), org=org, bucket=s.influxdb_bucket,
                        token=token or "", auth_basic=s.influxdb_auth_basic,
                        ca_file=s.influxdb_ca_file, insecure=s.influxdb_insecure,
                        timeout=s.influxdb_timeout,
                        # A loop's replay must not eat into the next batch's time.
                        replay_time=min(REPLAY_TIME, (s.interval or REPLAY_TIME * 2) / 2))


def check(settings: Settings, urls: Sequence[str]) -> None:
    """Everything about the push that can be checked before fetching."""
    from apache_metrics_exporter.errors import OutputError
    from apache_metrics_exporter.push.spool import Spool

    push_settings(settings)
    if settings.output != "-":
        raise UsageError("--format influxdb pushes; --output does not apply")
    try:
        Spool(settings.spool_dir, settings.spool_max_bytes).ensure()
    except OutputError as exc:
        raise UsageError(str(exc)) from None


class Sink:
    """Delivers each batch (kept for the life of a loop)."""

    def __init__(self, settings: Settings) -> None:
        from apache_metrics_exporter.push.client import InfluxPush
        from apache_metrics_exporter.push.spool import Spool

        self.push = InfluxPush(push_settings(settings),
                               Spool(settings.spool_dir, settings.spool_max_bytes))

    def send(self, text: str, snapshots: Sequence[Snapshot]) -> None:
        """Deliver a batch whose every point carries its own timestamp: the
        influx writer leaves the stamp out only for a clock outside int64
        nanoseconds, and such a point would be stamped by the server on each
        delivery - a replay would duplicate it instead of rewriting it."""
        from apache_metrics_exporter.errors import OutputError

        bad = [s.timestamp for s in snapshots if not 0 <= s.timestamp < _STAMP_LIMIT]
        if bad:
            raise OutputError(f"the system clock reads {bad[0]!r} s since 1970, outside what "
                              "a nanosecond timestamp can hold; nothing was pushed (points "
                              "need their own timestamp): fix the clock")
        stamp = min((int(s.timestamp * 1e9) for s in snapshots), default=0)
        self.push.deliver(text, stamp)

    def close(self) -> None:
        self.push.close()


def sink(settings: Settings) -> Sink:
    return Sink(settings)
