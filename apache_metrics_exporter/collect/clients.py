"""Slow clients and clients holding workers, from the worker table.

A slowloris client opens connections and sends its request a header line at
a time: each connection holds a worker in state ``R`` (reading the request)
for as long as the client likes. A single client flooding the server holds
many busy workers at once. The worker table shows both: the state and SS of
every slot, and the client address of every busy one (docs/insight.md).

Addresses are hostile text and high-cardinality personal data: by default no
address leaves this module, only counts. ``--client-limit N`` names the N
clients holding most busy workers (each keeps a label of its own,
vhosts.collected) and sums the rest as ``other``.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from itertools import filterfalse
from operator import is_not

from apache_metrics_exporter.catalogue import BY_NAME
from apache_metrics_exporter.collect.http import REQUEST_FIELD, Target, request_line
from apache_metrics_exporter.collect.status import (
    busy_rows,
    columns,
    has_column,
    key_columns,
    rows_in,
)
from apache_metrics_exporter.records import NamedTuple
from apache_metrics_exporter.vhosts import OTHER, collected, say_once, shown

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Dict, List, Optional, Sequence

    from apache_metrics_exporter.collect.snapshot import Sample
    from apache_metrics_exporter.collect.status import WorkerRow

READING = "R"
_new = tuple.__new__  # a Sample made in C (see collect/snapshot.py)


class ClientFigures(NamedTuple):
    """What the worker table says about reading workers and busy clients."""

    reading: int  # rows in state R
    reading_oldest: Optional[int]  # the largest SS among them (0: none; None: unmeasured)
    clients: Optional[Dict[str, int]]  # busy rows per address; None: no Client column


# own_requests by URL: the same lines every cycle (a URL split and joined
# twice, twice a cycle). Bounded: cleared when full.
_OWN: Dict[str, List[str]] = {}
_OWN_MAX = 256


def own_requests(url: str) -> List[str]:
    """The request lines Apache shows for the collector's own fetches of the
    status page at ``url`` (http.Fetcher: ``GET PATH?QUERY HTTP/1.1``, the
    HTML page and the ?auto page)."""
    got = _OWN.get(url)
    if got is None:
        got = [request_line(page) for page in (url, Target(url).auto_url)]
        if len(_OWN) >= _OWN_MAX:
            _OWN.clear()
        _OWN[url] = got
    return list(got)


def figures(workers: Sequence[WorkerRow], url: str) -> ClientFigures:
    """Count over the table's columns (linear, in bulk: no Python loop per
    row). A row in state W whose request is one of the collector's own
    fetches of ``url`` (the first of each) is not a client holding a worker:
    it is left out, so an idle server reads no busy client, not one client
    holding every busy worker. Busy rows without an address (a slot
    starting) are held by no client and not counted."""
    mine = own_requests(url)
    _pids, modes, ages = key_columns(workers)  # columns: no row is made
    own = set()
    working = rows_in(modes, "W")
    if mine and working:
        # The first W row showing each of ours (Apache shows at most 63
        # characters of a request, and NULL for none: as row.request).
        requests = columns(workers, ("request",))[0]
        texts = list(map(requests.__getitem__, working))
        shown: Optional[List[str]] = None
        start: Dict[str, int] = {}
        for request in mine:
            if len(request) < REQUEST_FIELD:
                found = texts  # (then only the same text shows it: no cut, not NULL)
            else:
                if shown is None:
                    shown = [("" if text == "NULL" else text)[:REQUEST_FIELD] for text in texts]
                found = shown
            try:
                at = found.index(request, start.get(request, 0))
            except ValueError:
                continue
            start[request] = at + 1  # (the same line twice: its next row)
            own.add(working[at])
    reading_ages = list(map(ages.__getitem__, rows_in(modes, READING)))
    measured: List[int] = list(filter(partial(is_not, None), reading_ages))  # type: ignore[arg-type]
    oldest: Optional[int] = max(0, max(measured, default=0))
    if oldest == 0 and len(measured) < len(reading_ages):
        oldest = None  # rows read, none with an SS that can be: not measured
    per: Optional[Dict[str, int]] = None
    if has_column(workers, "client"):
        addresses = columns(workers, ("client",))[0]
        busy = filterfalse(own.__contains__, busy_rows(modes))
        per = dict(Counter(filter(None, map(addresses.__getitem__, busy))))
    return ClientFigures(len(reading_ages), oldest, per)


def client_samples(workers: Sequence[WorkerRow], url: str, limit: int) -> List[Sample]:
    """The slow-client samples of one worker table (CLIENT_METRICS)."""
    from apache_metrics_exporter.collect.snapshot import Sample

    f = figures(workers, url)
    out = [_new(Sample, (BY_NAME["reading_workers"], f.reading, ()))]
    if f.reading_oldest is not None:
        out.append(_new(Sample, (BY_NAME["reading_oldest_seconds"], f.reading_oldest, ())))
    if f.clients is None:
        return out  # a table without addresses: no client figures, not zeros
    held = sum(f.clients.values())
    top = max(f.clients.values(), default=0)
    out.append(_new(Sample, (BY_NAME["busy_clients"], len(f.clients), ())))
    out.append(_new(Sample, (BY_NAME["top_client_share"],
                             round(top / held, 6) if held else 0.0, ())))
    if limit > 0:
        out.extend(_per_client(f.clients, held, limit))
    return out


def _per_client(clients: Dict[str, int], held: int, limit: int) -> List[Sample]:
    """The ``limit`` addresses holding most busy workers by name (ties by
    address), the rest as ``other``: together, every busy worker held by a
    client."""
    from apache_metrics_exporter.collect.snapshot import Sample

    ranked = sorted(clients.items(), key=lambda item: (-item[1], item[0]))
    named: Dict[str, int] = {}
    first: Dict[str, str] = {}
    for raw, count in ranked[:limit]:
        name = collected(raw)
        if name in named:
            say_once(f"clients {shown(first[name])} and {shown(raw)} would share the "
                     f"label {shown(name)}; the second is counted in client {OTHER!r}")
            continue
        named[name] = count
        first[name] = raw
    rest = held - sum(named.values())
    if rest > 0:
        named[OTHER] = rest
    metric = BY_NAME["client_busy_workers"]
    return [_new(Sample, (metric, count, (("client", name),)))
            for name, count in sorted(named.items())]
