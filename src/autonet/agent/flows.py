"""Flows and load of the instances on this host, from the kernel's own counters.

- Flows: the conntrack table of each VPC router, seen from an instance: a connection
  the instance opened is `outbound` (its peer is the reply source: the real backend
  when the instance used a service address), one opened to it is `inbound`. Each
  connection gets a flow ID from this host's snowflake generator the first time it
  is seen, so IDs are unique across hosts.
- Load: per instance, the byte and packet counters of its router-side veth (what the
  router receives is what the instance sent), turned into rates between two samples,
  and the number of its active flows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from autonet.dataplane.conntrack import Connection
from autonet.model.flowid import FlowIdGenerator


@dataclass
class Member:
    instance: str
    automaton: str


def flow_rows(
    connections: list[Connection],
    addresses: set[str],
    members: dict[str, Member],
    ids: FlowIds,
) -> list[dict[str, Any]]:
    rows = []
    now_ns = time.time_ns()
    for conn in connections:
        if conn.orig.src in addresses:
            direction, local, peer = "outbound", conn.orig, conn.reply
            tx = (conn.orig_bytes, conn.orig_packets)
            rx = (conn.reply_bytes, conn.reply_packets)
            peer_address, peer_port = peer.src, peer.sport
            local_address, local_port = local.src, local.sport
            service = conn.orig.dst if conn.orig.dst != conn.reply.src else ""
        elif conn.reply.src in addresses:
            direction = "inbound"
            tx = (conn.reply_bytes, conn.reply_packets)
            rx = (conn.orig_bytes, conn.orig_packets)
            peer_address, peer_port = conn.orig.src, conn.orig.sport
            local_address, local_port = conn.reply.src, conn.reply.sport
            service = conn.orig.dst if conn.orig.dst != conn.reply.src else ""
        else:
            continue
        member = members.get(peer_address)
        rows.append(
            {
                "flow_id": ids.get(conn),
                "protocol": conn.protocol,
                "direction": direction,
                "local_address": local_address,
                "local_port": local_port,
                "peer_address": peer_address,
                "peer_port": peer_port,
                "peer_instance": member.instance if member else "",
                "peer_automaton": member.automaton if member else "",
                "service_address": service,
                "tx_bytes": tx[0],
                "tx_packets": tx[1],
                "rx_bytes": rx[0],
                "rx_packets": rx[1],
                "age_seconds": round((now_ns - conn.start_ns) / 1e9, 3) if conn.start_ns else 0.0,
                "state": conn.state,
            }
        )
    return rows


class FlowIds:
    """Flow ID per tracked connection, stable while the connection lives."""

    def __init__(self, host_index: int = 0) -> None:
        self.generator = FlowIdGenerator(host_index)
        self._ids: dict[tuple[int, int], int] = {}

    def reset(self, host_index: int) -> None:
        if host_index != self.generator.host_index:
            self.generator = FlowIdGenerator(host_index)
            self._ids.clear()

    def get(self, conn: Connection) -> int:
        flow_id = self._ids.get(conn.key)
        if flow_id is None:
            flow_id = self._ids[conn.key] = self.generator.next()
        return flow_id

    def forget_except(self, live: set[tuple[int, int]]) -> None:
        for key in [k for k in self._ids if k not in live]:
            del self._ids[key]


@dataclass
class Counters:
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    at: float = field(default_factory=time.monotonic)


def rates(previous: Counters | None, current: Counters) -> dict[str, float]:
    """Per-second rates between two samples (0 on the first sample or a counter reset)."""
    if previous is None or current.at <= previous.at:
        return {"rx_bps": 0.0, "tx_bps": 0.0, "rx_pps": 0.0, "tx_pps": 0.0}
    span = current.at - previous.at

    def rate(now: int, before: int) -> float:
        return max(0.0, (now - before) / span)

    return {
        "rx_bps": round(rate(current.rx_bytes, previous.rx_bytes) * 8, 1),
        "tx_bps": round(rate(current.tx_bytes, previous.tx_bytes) * 8, 1),
        "rx_pps": round(rate(current.rx_packets, previous.rx_packets), 1),
        "tx_pps": round(rate(current.tx_packets, previous.tx_packets), 1),
    }
