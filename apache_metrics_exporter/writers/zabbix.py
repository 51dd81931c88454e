"""Zabbix low-level discovery of the worker groups, as apache-manager printed it.

``{"data": [{"{#NAME}": "native"}, {"{#NAME}": "<mod_wsgi group>"}, ...]}``,
byte for byte what apache-manager printed (json.dumps' default separators): the
native workers first, then each mod_wsgi daemon group by name. Zabbix item
prototypes then read ``memory-usage<TAB>{#NAME}<TAB>...`` from the tab file
(contrib/zabbix/).
"""

from __future__ import annotations

import json

from apache_metrics_exporter.catalogue import NATIVE_GROUP
from apache_metrics_exporter.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Optional, Sequence

    from apache_metrics_exporter.collect.snapshot import Snapshot
    from apache_metrics_exporter.writers import Settings



def render(snapshots: Sequence[Snapshot], settings: Optional[Settings] = None) -> str:
    if len(snapshots) != 1:
        raise UsageError("--format zabbix-discovery describes one Apache: give one --url")
    groups = [g for g in snapshots[0].processes.groups() if g != NATIVE_GROUP]
    data = [{"{#NAME}": name} for name in [NATIVE_GROUP, *sorted(groups)]]
    return json.dumps({"data": data}) + "\n"  # the original's exact bytes
