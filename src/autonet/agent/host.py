"""What the agent does to its host: instances, routers, processes, reconciliation.

`HostAgent` is the implementation behind the RPC servicer (agent/server.py). It is
made of parts, one module a concern, that share the state its `__init__` sets
(agent/base.py): the VPC routers and the VPC sync (agent/routers.py), instance
endpoints and QoS (agent/wiring.py), process supervision and logs
(agent/processes.py), load, flows and reports (agent/telemetry.py). What needs them
all is here: deleting an instance, and reconciling on start: kernel objects carrying
this host's tag that the instance table does not know are removed (and the cgroups and
logs of instances it does not hold), and every known instance is repaired and its process
adopted or restarted. Instance logs are capped by copytruncate rotation
(agent/logs.py), which the server runs every second.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from autonet.agent import logs
from autonet.agent.flows import Counters, FlowIds
from autonet.agent.processes import Processes
from autonet.agent.routers import Router
from autonet.agent.state import DEFAULT_UID_RANGE, InstanceRecord, InstanceTable, UidsExhausted
from autonet.agent.supervisor import Supervised, process_start_time
from autonet.agent.telemetry import Telemetry
from autonet.agent.warmpool import WarmPool
from autonet.agent.wiring import Wiring
from autonet.dataplane import cgroups, containers, netns
from autonet.dataplane import endpoint as ep
from autonet.dataplane.netlink import Netlink
from autonet.model import naming

log = logging.getLogger(__name__)


class HostAgent(Wiring, Processes, Telemetry):
    def __init__(
        self,
        host: str,
        tag: str,
        state_dir: Path,
        log_max_bytes: int = logs.DEFAULT_MAX_BYTES,
        warm_pool: int = 0,
        uid_range: tuple[int, int] = DEFAULT_UID_RANGE,
    ) -> None:
        self.host = host
        self.tag = tag
        self.state_dir = state_dir
        self.log_max_bytes = log_max_bytes
        self.boot_id = uuid.uuid4().hex
        self.table = InstanceTable(state_dir, uid_range)
        self.hierarchy = cgroups.detect()
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
            await self._remove_cgroup(self.cgroup(record))
            async with self._router_locks[record.router_netns]:
                held = self.routers.get(record.router_netns)
                if held is not None:
                    held.policy.remove_port(record.endpoint["router_ifname"])
                await ep.delete_endpoint(
                    self.nl, record.netns, record.router_netns, record.endpoint["router_ifname"]
                )
                self.table.remove(uid)
                if record.router_netns not in self.table.routers():
                    router = self.routers.pop(record.router_netns, None)
                    if router is not None:
                        self.forget_router(router)
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
        done = {"removed_netns": 0, "removed_cgroups": 0, "removed_links": 0, "repaired": 0}
        done |= {"adopted": 0, "restarted": 0}
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
        held = {containers.container_name(uid) for uid in self.table.records}
        stray = [
            name for name in await asyncio.to_thread(containers.of_hosts, [self.tag]) if name not in held
        ]
        if stray:
            log.info("reconcile: removing containers no instance owns: %s", ", ".join(stray))
            complaint = await asyncio.to_thread(containers.remove, stray)
            if complaint:
                log.warning("reconcile: podman: %s", complaint)
        done["removed_containers"] = len(stray)
        for name in cgroups.groups_of_host(self.hierarchy, self.tag) - wanted:
            log.info("reconcile: removing cgroup %s that no instance owns", name)
            await self._remove_cgroup(cgroups.Group(self.hierarchy, self.tag, name))
            done["removed_cgroups"] += 1
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
            before = record.process_uid
            try:
                if self.table.lease_uid(record) != before:  # from before leases, or the range changed
                    self.table.save(record)
            except UidsExhausted as exc:
                log.error("reconcile: %s: %s", record.name, exc)  # its process will not start
            try:
                await self._wire(record)
            except ValueError as exc:  # an attached container gone without its runtime's DEL
                log.warning("reconcile: %s not wired again: %s", record.name, exc)
                continue
            done["repaired"] += 1

            if record.process is not None and record.uid not in self.processes:
                alive = record.pid and process_start_time(record.pid) == record.pid_start != 0
                self._supervise(record, adopt=bool(alive))
                done["adopted" if alive else "restarted"] += 1
        return done

    async def close(self) -> None:
        """Stop supervising (processes keep running and are adopted on the next start)."""
        for proc in self.processes.values():
            if proc._task is not None:
                proc._task.cancel()
        await self.pool.close()
        self.nl.close()
