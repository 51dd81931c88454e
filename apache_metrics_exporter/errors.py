"""Exceptions that map to the documented exit statuses and one-line messages."""

PROG = "apache-metrics-exporter"
REAPER_PROG = "apache-worker-reaper"
# 0: done (Apache down is data, not a failure); 1: the output or state could
# not be written; 2: bad options or configuration, found before any fetch.
EXIT_OK, EXIT_OUTPUT, EXIT_USAGE = 0, 1, 2


class ExporterError(Exception):
    """Base class: the message is shown to the user as one line, no traceback."""


class UsageError(ExporterError):
    """Bad options or configuration (exit status 2), found before any fetch."""


class FetchError(ExporterError):
    """The status page could not be read; the run goes on and reports up=0.

    ``reason`` is the short word a snapshot reports for it where the raiser
    knows it (``http_error``, ``not_status_page``, ``tls``, ``bad_response``);
    otherwise it is told from the exception the error was raised from
    (collect.snapshot.fetch_reason)."""

    def __init__(self, message: str = "", reason: "str | None" = None) -> None:
        super().__init__(message)
        self.reason = reason


class OutputError(ExporterError):
    """The output could not be written (exit status 1)."""
