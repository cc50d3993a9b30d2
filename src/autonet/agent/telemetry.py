"""What the agent reports of its instances: load samples, flows, listening ports.

Load and flows come from the kernel's own counters (agent/flows.py): per instance, the
counters of its router-side veth and its connections in the router's conntrack table.
`report` is the instance table as the controller sees it, with each process's state
and the ports it listens on (the controller's readiness check).
"""

from __future__ import annotations

from typing import Any

from autonet.agent.flows import Counters, FlowIds, flow_rows, rates
from autonet.agent.routers import VpcRouters, instance_addresses
from autonet.agent.state import InstanceRecord
from autonet.dataplane import netns

TCP_LISTEN = "0A"


def listening_ports(pid: int) -> list[str]:
    """TCP ports in LISTEN and bound UDP ports in the network namespace of process `pid`.

    /proc/PID/net/* shows the namespace of that process, so no setns is needed.
    """
    found: set[str] = set()
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{proto}") as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if proto.startswith("tcp") and state != TCP_LISTEN:
                        continue
                    found.add(f"{proto.rstrip('6')}/{int(local.rsplit(':', 1)[1], 16)}")
        except (OSError, StopIteration):
            continue
    return sorted(found)


class Telemetry(VpcRouters):
    """The part of HostAgent that samples load and flows and reports the instances."""

    flow_ids: FlowIds
    _counters: dict[str, Counters]

    @staticmethod
    def _listening(record: InstanceRecord, pid: int) -> list[str]:
        """What listens in the instance's namespace. A container's supervised process is
        `podman run`, in the host's namespace: any process in the instance's will do."""
        if (record.process or {}).get("image"):
            inside = netns.pids_in(record.netns)
            return listening_ports(inside[0]) if inside else []
        return listening_ports(pid)

    # -- flows and load ----------------------------------------------------------------------
    def _addresses(self, record: InstanceRecord) -> set[str]:
        return set(instance_addresses(record.endpoint))

    async def flows(self, uid: str) -> list[dict[str, Any]]:
        record = self.table.get(uid)
        if record is None:
            raise KeyError(f"instance {uid} is not on host {self.host}")
        router = await self._router(record.router_netns)
        connections = await router.conntrack.dump()
        return flow_rows(connections, self._addresses(record), router.members, self.flow_ids)

    async def sample_load(self) -> list[dict[str, Any]]:
        """Per instance: rates since the previous sample and active flows."""
        rows = []
        live: set[tuple[int, int]] = set()
        for router_netns in sorted(self.table.routers()):
            if not netns.exists(router_netns):
                continue
            router = await self._router(router_netns)
            ipr = await self.nl.ns(router_netns)
            stats = {}
            async for link in await ipr.get_links():
                counters = link.get_attr("IFLA_STATS64")
                if counters is not None:
                    stats[str(link.get_attr("IFLA_IFNAME"))] = counters
            connections = await router.conntrack.dump()
            live |= {c.key for c in connections}
            for record in self.table.records.values():
                if record.router_netns != router_netns:
                    continue
                counters = stats.get(record.endpoint["router_ifname"])
                if counters is None:
                    continue
                # The router receives what the instance sends.
                now = Counters(
                    rx_bytes=counters["tx_bytes"], tx_bytes=counters["rx_bytes"],
                    rx_packets=counters["tx_packets"], tx_packets=counters["rx_packets"],
                )  # fmt: skip
                addresses = self._addresses(record)
                flows = sum(1 for c in connections if c.orig.src in addresses or c.reply.src in addresses)
                rows.append(
                    {
                        "instance_uid": record.uid,
                        "instance": record.name,
                        **rates(self._counters.get(record.uid), now),
                        "rx_bytes": now.rx_bytes,
                        "tx_bytes": now.tx_bytes,
                        "flows": flows,
                    }
                )
                self._counters[record.uid] = now
        self.flow_ids.forget_except(live)
        for uid in [u for u in self._counters if u not in self.table.records]:
            del self._counters[uid]
        return rows

    def report(self, only: str = "") -> list[dict[str, Any]]:
        """One row per instance (or only for `only`), with the ports it listens on (readiness)."""
        rows = []
        if only:
            records = [self.table.records[only]] if only in self.table.records else []
        else:
            records = list(self.table.records.values())
        for record in records:
            proc = self.processes.get(record.uid)
            rows.append(
                {
                    "instance_uid": record.uid,
                    "instance_name": record.name,
                    "netns": record.netns,
                    "wired": netns.exists(record.netns),
                    "process": proc.state if proc else "none",
                    "pid": proc.pid if proc else 0,
                    "restarts": proc.restarts if proc else 0,
                    "last_exit": proc.last_exit if proc else "",
                    "listening": self._listening(record, proc.pid) if proc and proc.pid else [],
                    "process_uid": 0 if (record.process or {}).get("user") == "root" else record.process_uid,
                }
            )
        return rows
