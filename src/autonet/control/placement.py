"""Placement: which Ready host gets a new instance.

Least loaded first: the host with the fewest instances plus its traffic (from the
agents' load samples; a host moving 1 Gbit/s weighs as much as one more instance),
relative to its capacity when it declares one, ties broken by name so that placement
is deterministic. Hosts at capacity are skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from autonet.model.kinds import READY
from autonet.model.objects import Object

GBIT = 1e9


def host_load(instances: Iterable[Object]) -> Counter[str]:
    """Instances per host, not counting those being deleted."""
    return Counter(i.status["host"] for i in instances if i.status.get("host") and not i.metadata.deleting)


def choose_host(
    hosts: Iterable[Object], load: Mapping[str, int], traffic_bps: Mapping[str, float] | None = None
) -> Object | None:
    """Least loaded: instances (`load`, per host) plus traffic (each Gbit/s counts as one
    instance). O(hosts): the caller keeps the per-host counts (the cache's index)."""
    traffic_bps = traffic_bps or {}
    candidates = []
    for host in hosts:
        if host.state != READY or host.metadata.deleting:
            continue
        placed = load.get(host.name, 0)
        capacity = host.spec.get("capacity")
        if capacity is not None and placed >= capacity:
            continue
        weight = placed + traffic_bps.get(host.name, 0.0) / GBIT
        share = weight / capacity if capacity else weight
        candidates.append((share, placed, host.name, host))
    if not candidates:
        return None
    return min(candidates, key=lambda c: c[:3])[3]
