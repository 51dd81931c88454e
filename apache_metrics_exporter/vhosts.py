"""Virtual host names as series names: distinct hosts stay distinct in every format.

A page names the virtual host of each worker row. Each format can carry some
names unchanged (collectd only ``[A-Za-z0-9_.-]`` and 63 characters, the tab
file only what a Zabbix key can hold, ...); a name it cannot carry unchanged
is sanitised and cut, and so could become the name of another host. Such a
name gets a suffix instead: ``_`` and 8 hex digits of the BLAKE2b digest of
the name as collected, so two distinct names never share a series. A name
that needs no change keeps it exactly (dashboards keep working).

The aggregate of ``--vhost-limit`` is ``other``; a host really named ``other``
(or ``-``, the name of rows without a host) is collected as ``other_HASH``, so
the aggregate cannot swallow it. If two names still met (a hash collision, or
a page that crafts a name to look like another's mapped form), the later one
is counted in ``other`` and that is said once on stderr: never dropped.

Client addresses (``--client-limit``, collect/clients.py) are hostile text
of the same kind and go through the same rules (``written``).
"""

from __future__ import annotations

from apache_metrics_exporter.catalogue import CLIENT_METRICS, INTERVAL_METRICS, VHOST_METRICS
from apache_metrics_exporter.log import WARNING, log
from apache_metrics_exporter.units import visible

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs 3 ms
    from typing import Any, Callable, Dict, List, Sequence

OTHER = "other"  # the aggregate bucket of --vhost-limit
EMPTY = "-"  # active rows that name no virtual host
RESERVED = (OTHER, EMPTY)
MAX_NAME = 200  # characters of a collected name (Apache itself shows at most 31)
SUFFIX = 9  # "_" and 8 hex digits

_NAMES = {m.name for m in VHOST_METRICS}
# Labels renamed alike: virtual hosts, and client addresses (--client-limit,
# collect/clients.py) - the same hostile text, the same per-format rules.
# The third set: renamed like the others, but never summed into "other" (a
# quantile of per-vhost request durations, intervals.py, cannot be): a host
# that would share another's name is left out of these (said once, as above).
_KINDS = {"vhost": ("virtual hosts", _NAMES,
                    {m.name for m in INTERVAL_METRICS if "vhost" in m.labels}),
          "client": ("clients", {m.name for m in CLIENT_METRICS if "client" in m.labels},
                     set())}
_LONGEST = "vhost_longest_request_seconds"  # the aggregate takes the maximum, others sum


def digest(name: str) -> str:
    """8 hex digits of BLAKE2b over the name's UTF-8 (lone surrogates kept)."""
    from hashlib import blake2b  # only when a name needs it: hashlib costs ~9 ms

    return blake2b(name.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()


def suffixed(base: str, name: str, limit: int) -> str:
    """``base`` cut to leave room, then ``_`` and the digest of ``name``: at most
    ``limit`` characters."""
    return base[:max(limit - SUFFIX, 1)] + "_" + digest(name)


def collected(raw: str) -> str:
    """The label a snapshot gives the virtual host a worker row names."""
    if not raw:
        return EMPTY
    if raw in RESERVED or len(raw) > MAX_NAME:
        return suffixed(raw, raw, MAX_NAME)
    return raw


def shown(name: str) -> str:
    """A name quoted for a message: escaped, at most 80 characters."""
    return repr(visible(name[:80]) + ("..." if len(name) > 80 else ""))


def say_once(message: str) -> None:
    """A warning on stderr, once per process (loops repeat batches)."""
    log.once(WARNING, message)


def _renamed_keys() -> Dict[str, str]:
    """The label key renamed() looks at, by the name of each metric it
    renames ("": more than one, and written() takes renamed()'s two passes)."""
    keys: Dict[str, str] = {}
    for key, (_, names, only) in _KINDS.items():
        for name in names | only:
            keys[name] = "" if name in keys else key
    return keys


_RENAMED = _renamed_keys()


def written(samples: Sequence, name_of: Callable[[str], str], fmt: str) -> List:
    """renamed() for every kind of name a writer gets: virtual hosts, then
    client addresses, with the format's one ``name_of``."""
    # The usual case first, in one pass: every name is written as collected,
    # so renamed() would hand back the samples as they are, twice. Anything
    # else (a name to change, a label that is no text) takes both passes.
    kinds = _RENAMED
    try:
        for s in samples:
            key = kinds.get(s.metric.name)
            if key is not None:
                label = dict(s.labels).get(key, "")
                if not key or name_of(label) != label:
                    break
        else:
            return list(samples)
    except Exception:  # noqa: BLE001 - renamed() raises it again, as it always did
        pass
    return renamed(renamed(samples, name_of, fmt), name_of, fmt, "client")


def renamed(samples: Sequence, name_of: Callable[[str], str], fmt: str,
            key: str = "vhost") -> List:
    """The samples with each ``key`` label (vhost, client) as ``fmt`` writes
    it (``name_of``); a name that would be another's is counted in ``other``
    instead, and that is said once. Other samples pass unchanged, in order."""
    what, metrics, renamed_only = _KINDS[key]
    names: Dict[str, str] = {OTHER: OTHER}
    owner: Dict[str, str] = {OTHER: OTHER}
    for s in samples:
        if s.metric.name in metrics or s.metric.name in renamed_only:
            label = dict(s.labels).get(key, "")
            if label not in names:
                name = name_of(label)
                names[label] = name
                first = owner.setdefault(name, label)
                if first != label:
                    say_once(f"--format {fmt}: {what} {shown(first)} and "
                             f"{shown(label)} would both be written as {shown(name)}; "
                             f"the second is counted in {key} {OTHER!r}")
    if all(k == v for k, v in names.items()):
        return list(samples)  # the usual case: every name as it was collected
    folded: Dict[str, float] = {}
    template: Dict[str, Any] = {}
    for s in samples:
        if s.metric.name in metrics:
            label = dict(s.labels).get(key, "")
            if label != OTHER and owner[names[label]] != label:
                metric = s.metric.name
                template.setdefault(metric, s)
                if metric in folded:
                    folded[metric] = (max if metric == _LONGEST else sum)(
                        (folded[metric], s.value))
                else:
                    folded[metric] = s.value
    out = []
    for s in samples:
        if s.metric.name in renamed_only:
            labels = dict(s.labels)
            label = labels.get(key, "")
            if label == OTHER or owner[names[label]] == label:
                labels[key] = names[label]
                out.append(s._replace(labels=tuple(labels.items())))
            continue
        if s.metric.name not in metrics:
            out.append(s)
            continue
        label = dict(s.labels).get(key, "")
        if label == OTHER:
            extra = folded.pop(s.metric.name, None)
            if extra is not None:
                both = (s.value, extra)
                s = s._replace(value=max(both) if s.metric.name == _LONGEST else sum(both))
            out.append(s)
        elif owner[names[label]] == label:
            out.append(s._replace(labels=((key, names[label]),)))
    for metric, value in folded.items():  # no aggregate yet: one is made
        out.append(template[metric]._replace(value=value, labels=((key, OTHER),)))
    return out
