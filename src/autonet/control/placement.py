"""Placement: which Ready host gets a new instance.

Least loaded first: the host with the fewest instances plus its traffic (from the
agents' load samples; a host moving 1 Gbit/s weighs as much as one more instance),
relative to its capacity when it declares one, ties broken by name so that placement
is deterministic. Hosts at capacity are skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from autonet.model.kinds import READY
from autonet.model.objects import Object

GBIT = 1e9


def choose_host(
    hosts: Iterable[Object], instances: Iterable[Object], traffic_bps: dict[str, float] | None = None
) -> Object | None:
    """Least loaded: instances plus traffic (each Gbit/s counts as one instance)."""
    traffic_bps = traffic_bps or {}
    load = Counter(i.status["host"] for i in instances if i.status.get("host") and not i.metadata.deleting)
    candidates = []
    for host in hosts:
        if host.state != READY or host.metadata.deleting:
            continue
        capacity = host.spec.get("capacity")
        if capacity is not None and load[host.name] >= capacity:
            continue
        weight = load[host.name] + traffic_bps.get(host.name, 0.0) / GBIT
        share = weight / capacity if capacity else weight
        candidates.append((share, load[host.name], host.name, host))
    if not candidates:
        return None
    return min(candidates, key=lambda c: c[:3])[3]
