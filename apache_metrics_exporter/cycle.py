"""One collection cycle, and what a run keeps from one cycle to the next.

Every mode collects the same way: the targets at once (collect_all), the
figures others keep between runs added (health.py: the reaper's counters,
the push spool), the restart counts and interval figures derived from the
previous reading (restarts.py), each snapshot's problems said once (report).
The loops (loops.py: one shot, --interval, --execd) and the --listen
endpoint (endpoint.py) all run a ``Cycle``; neither imports the other.

A ``Cycle`` is the one home of the state a long-running run keeps between
its cycles: the previous reading of each target (restarts.Memory) and what
is known of each target's process tree (collect/processes.Reuse: the tree
proof, kept while the listening sockets and the parent are unchanged, and
the children's titles), so a cycle reads only what can change.
"""

from __future__ import annotations

from apache_metrics_exporter.log import WARNING, log

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Callable, List, Optional

    from apache_metrics_exporter.collect.http import Fetcher
    from apache_metrics_exporter.collect.processes import Reuse
    from apache_metrics_exporter.collect.snapshot import Snapshot
    from apache_metrics_exporter.restarts import Memory
    from apache_metrics_exporter.runconfig import RunConfig


def report(snap: Snapshot, shown: bool = False) -> None:
    """The snapshot's problems on stderr: why the page could not be read, as one
    line, then warnings, once each. While the page is down the warnings (about
    configuration, not about the outage) wait for -v, so the outage stands alone.
    ``shown``: the output itself shows them on the terminal stderr goes to
    (the text summary), so they are not said twice."""
    if shown:
        return
    if snap.error:
        log.error("%s", snap.error)
    for warning in snap.warnings:
        if snap.up:
            log.once(WARNING, warning)  # long-running modes repeat none
        elif not log.said(warning):
            log.info("%s", warning)


def track_restarts(config: RunConfig, snapshots: List[Snapshot],
                   memory: Optional[Memory] = None) -> None:
    """Restart counts from the collector's state file and the interval figures
    (restarts.py): compared with the loop's ``memory`` when it has a newer
    reading than the file, or when there is no file. A discovery
    (zabbix-discovery) writes no figure: it neither counts a restart nor
    becomes the reading the next collection's interval starts from (with
    apache-manager -c -z, that was a few milliseconds before)."""
    if config.format == "zabbix-discovery":
        return
    if config.collector_state or memory is not None:
        from apache_metrics_exporter.restarts import DEFAULT_PATH, track

        track(snapshots, config.collector_state, config.collector_state != DEFAULT_PATH,
              memory, config.options.vhost_limit)


class Cycle:
    """The collection of one cycle, and the state kept between cycles.

    ``keep``: a long-running run (--interval, --execd, --listen) keeps the
    previous reading of each target and its process tree in memory; a
    one-shot run has only the collector's state file, and proves the tree
    once."""

    def __init__(self, config: RunConfig, keep: bool = True) -> None:
        self.config = config
        self.options = config.options
        self.memory: Optional[Memory] = None
        self.reuse: Optional[Reuse] = None
        if keep:
            from apache_metrics_exporter.collect.processes import Reuse
            from apache_metrics_exporter.restarts import Memory

            self.memory = Memory()
            self.reuse = Reuse()

    def collect(self, fetchers: List[Fetcher], remember: bool = True,
                blocking: Optional[Callable[..., Any]] = None) -> List[Snapshot]:
        """Every target once, with the figures kept by others added and the
        restart state advanced (``remember``: False for a /probe, which never
        reaches it). ``blocking``: runs the collection (a loop's Stopper, so
        a stop signal can cut it short)."""
        from apache_metrics_exporter.collect.snapshot import collect_all
        from apache_metrics_exporter.health import state_samples

        config = self.config
        extra = state_samples(config.spool_dir, config.spool_max_bytes, config.state_file)
        if blocking is None:
            snapshots = collect_all(fetchers, self.options, self.reuse)
        else:
            snapshots = blocking(collect_all, fetchers, self.options, self.reuse)
        if remember:
            track_restarts(config, snapshots, self.memory)
        for snap in snapshots:
            snap.samples.extend(extra)
        return snapshots
