"""What the agent does to its host: instances, routers, processes, reconciliation.

`HostAgent` is the implementation behind the RPC servicer (agent/server.py). Its parts,
one module a concern, share the state its `__init__` sets (agent/base.py): the VPC
routers and the VPC sync (agent/routers.py), instance endpoints and QoS
(agent/wiring.py), process supervision and logs (agent/processes.py). The rest is here,
with reconciliation on start: kernel objects carrying this host's tag that the table
does not know are removed (and the logs of instances it does not hold), and every known
instance is repaired and its process adopted or restarted. Instance logs are capped by
copytruncate rotation (agent/logs.py), which the server runs every second.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from autonet.agent import logs
from autonet.agent.flows import Counters, FlowIds, flow_rows, rates
from autonet.agent.processes import Processes
from autonet.agent.routers import Router
from autonet.agent.state import InstanceRecord, InstanceTable
from autonet.agent.supervisor import Supervised, process_start_time
from autonet.agent.warmpool import WarmPool
from autonet.agent.wiring import Wiring
from autonet.dataplane import endpoint as ep
from autonet.dataplane import netns
from autonet.dataplane.netlink import Netlink
from autonet.model import naming

log = logging.getLogger(__name__)


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


class HostAgent(Wiring, Processes):
    def __init__(
        self,
        host: str,
        tag: str,
        state_dir: Path,
        log_max_bytes: int = logs.DEFAULT_MAX_BYTES,
        warm_pool: int = 0,
    ) -> None:
        self.host = host
        self.tag = tag
        self.state_dir = state_dir
        self.log_max_bytes = log_max_bytes
        self.boot_id = uuid.uuid4().hex
        self.table = InstanceTable(state_dir)
        self.nl = Netlink()
        self.pool = WarmPool(self.nl, tag, warm_pool)
        self.processes: dict[str, Supervised] = {}
        self.routers: dict[str, Router] = {}
        # Process state changes, for the controller (a dead process leaves its service at once).
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.flow_ids = FlowIds()
        self._counters: dict[str, Counters] = {}
        self._last_state: dict[str, str] = {}
        self._router_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._instance_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # -- flows and load ----------------------------------------------------------------------
    def _addresses(self, record: InstanceRecord) -> set[str]:
        return {a for a in (record.endpoint.get("ipv4"), record.endpoint.get("ipv6")) if a}

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

    # -- deletion --------------------------------------------------------------------------
    async def delete_instance(self, uid: str) -> InstanceRecord | None:
        async with self._instance_locks[uid]:
            record = self.table.get(uid)
            proc = self.processes.pop(uid, None)
            if proc is not None:
                await proc.stop()
            if record is None:
                return None
            self._kill_namespace_processes(record.netns)
            async with self._router_locks[record.router_netns]:
                await ep.delete_endpoint(
                    self.nl, record.netns, record.router_netns, record.endpoint["router_ifname"]
                )
                self.table.remove(uid)
                if record.router_netns not in self.table.routers():
                    router = self.routers.pop(record.router_netns, None)
                    if router is not None:
                        router.close()
                    await ep.delete_router(self.nl, record.router_netns)
                    self.overlay_path(record.router_netns).unlink(missing_ok=True)
            self.resolv_path(uid).unlink(missing_ok=True)
            # Names are reused (web-0 again after a scale down and up): keep a newer one's log.
            if all(other.name != record.name for other in self.table.records.values()):
                logs.remove(self.log_path(record.name))
        self._instance_locks.pop(uid, None)
        return record

    # -- reconciliation ----------------------------------------------------------------------
    async def reconcile(self) -> dict[str, int]:
        """Make the kernel match the instance table; returns counts of what was done."""
        done = {"removed_netns": 0, "removed_links": 0, "repaired": 0, "adopted": 0, "restarted": 0}
        done["removed_logs"] = self._remove_stray_logs()
        wanted = {record.netns for record in self.table.records.values()} | self.table.routers()
        for name in netns.list_names(naming.pool_netns_prefix(self.tag)):
            netns.delete(name)  # a pool left by a crashed agent: made afresh
        for name in netns.list_names("an"):
            if self.owns_netns(name) and name not in wanted:
                log.info("reconcile: removing namespace %s that no instance owns", name)
                self._kill_namespace_processes(name)
                self.nl.forget(name)
                netns.delete(name)
                done["removed_netns"] += 1
        for router in self.table.routers():
            if not netns.exists(router):
                continue
            mine = {
                r.endpoint["router_ifname"] for r in self.table.records.values() if r.router_netns == router
            }
            for link in await ep.router_links(self.nl, router):
                if link not in mine:
                    await ep.delete_link(self.nl, router, link)
                    done["removed_links"] += 1
        for record in list(self.table.records.values()):
            await self._wire(record)
            done["repaired"] += 1

            if record.process is not None and record.uid not in self.processes:
                alive = record.pid and process_start_time(record.pid) == record.pid_start != 0
                self._supervise(record, adopt=bool(alive))
                done["adopted" if alive else "restarted"] += 1
        return done

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
                    "listening": listening_ports(proc.pid) if proc and proc.pid else [],
                }
            )
        return rows

    async def close(self) -> None:
        """Stop supervising (processes keep running and are adopted on the next start)."""
        for proc in self.processes.values():
            if proc._task is not None:
                proc._task.cancel()
        await self.pool.close()
        self.nl.close()
