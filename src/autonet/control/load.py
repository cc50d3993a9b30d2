"""The load table: the latest per-instance samples of every host, aggregated.

Agents post a sample every couple of seconds (rates of their instances' veth counters
and active flows). The controller keeps the latest sample per host in memory (load is
a measurement, not desired state: nothing is lost if a controller restarts, the next
samples refill it) and aggregates per automaton and per host on demand: the seed's
"automaton table". Readers (autonet top, the Overwatch stream, placement, /metrics)
get snapshots.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autonet.control.context import Context

RATE_FIELDS = ("rx_bps", "tx_bps", "rx_pps", "tx_pps")
STALE_AFTER = 10.0


class LoadTable:
    def __init__(self) -> None:
        self._hosts: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self.updated = asyncio.Condition()

    async def ingest(self, host: str, rows: list[dict[str, Any]]) -> None:
        self._hosts[host] = (time.time(), rows)
        async with self.updated:
            self.updated.notify_all()

    def host_bps(self) -> dict[str, float]:
        now = time.time()
        return {
            host: sum(r.get("rx_bps", 0) + r.get("tx_bps", 0) for r in rows)
            for host, (at, rows) in self._hosts.items()
            if now - at < STALE_AFTER
        }

    async def snapshot(self, ctx: Context) -> dict[str, Any]:
        automaton_of = {i.uid: i.spec["automaton"] for i in await ctx.list("Instance")}
        now = time.time()
        instances = []
        for host, (at, rows) in sorted(self._hosts.items()):
            if now - at >= STALE_AFTER:
                continue
            for row in rows:
                automaton = automaton_of.get(row["instance_uid"])
                if automaton is not None:
                    instances.append({**row, "host": host, "automaton": automaton, "sampled_at": at})
        return {
            "at": now,
            "instances": sorted(instances, key=lambda r: r["instance"]),
            "automatons": _aggregate(instances, "automaton"),
            "hosts": _aggregate(instances, "host"),
        }


def _aggregate(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"instances": 0, "flows": 0, **dict.fromkeys(RATE_FIELDS, 0.0)}
    )
    for row in rows:
        group = groups[row[key]]
        group["instances"] += 1
        group["flows"] += row.get("flows", 0)
        for field in RATE_FIELDS:
            group[field] = round(group[field] + row.get(field, 0.0), 1)
    return [{key: name, **values} for name, values in sorted(groups.items())]
