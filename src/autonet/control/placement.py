"""Placement: which Ready host gets a new instance.

Least loaded first: the host with the fewest instances (relative to its capacity when
it declares one), ties broken by name so that placement is deterministic. Hosts at
capacity are skipped. A later issue adds traffic to the load.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from autonet.model.kinds import READY
from autonet.model.objects import Object


def choose_host(hosts: Iterable[Object], instances: Iterable[Object]) -> Object | None:
    load = Counter(i.status["host"] for i in instances if i.status.get("host") and not i.metadata.deleting)
    candidates = []
    for host in hosts:
        if host.state != READY or host.metadata.deleting:
            continue
        capacity = host.spec.get("capacity")
        if capacity is not None and load[host.name] >= capacity:
            continue
        share = load[host.name] / capacity if capacity else float(load[host.name])
        candidates.append((share, load[host.name], host.name, host))
    if not candidates:
        return None
    return min(candidates, key=lambda c: c[:3])[3]
