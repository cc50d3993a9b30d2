"""Instance wiring: an instance's endpoint on this host, its resolv.conf and its QoS.

An endpoint is the instance's namespace and the veth pair to its VPC router
(dataplane/endpoint.py); the record made for it holds the uid/gid leased to the instance
(agent/state.py). Wiring an instance makes its router first if need be, which
fails closed: a new router denies everything until the VPC's saved state (or a
SyncVpc) says more. The instance's veth and addresses go into the router's
anti-spoofing sets before the veth is made, so no packet from it goes unchecked. A
namespace from the warm pool is taken when one is ready; an attached container's
namespace (autonet-cni) is adopted by name instead. QoS is
a rate per direction with a priority, set by tc on both ends of the veth pair.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from autonet.agent.routers import VpcRouters, instance_addresses
from autonet.agent.state import InstanceRecord
from autonet.agent.warmpool import WarmPool
from autonet.dataplane import endpoint as ep
from autonet.dataplane import netns
from autonet.dataplane import qos as qos_tc
from autonet.model import naming

log = logging.getLogger(__name__)


class Wiring(VpcRouters):
    """The part of HostAgent that wires instances to their routers and sets their QoS."""

    pool: WarmPool

    # -- endpoints -------------------------------------------------------------------------
    def _endpoint_spec(self, record: InstanceRecord) -> ep.EndpointSpec:
        e = record.endpoint
        return ep.EndpointSpec(
            netns=e["netns"],
            router_netns=e["router_netns"],
            router_ifname=e["router_ifname"],
            mac=e["mac"],
            router_mac=e["router_mac"],
            ipv4=e.get("ipv4") or None,
            ipv6=e.get("ipv6") or None,
            mtu=int(e.get("mtu") or 1500),
        )

    async def ensure_endpoint(self, uid: str, name: str, endpoint: dict[str, Any]) -> InstanceRecord:
        for key in ("netns", "router_netns"):
            if not self.owns_netns(endpoint[key]):
                raise ValueError(f"{key} {endpoint[key]!r} does not carry this host's tag {self.tag!r}")
        adopted = endpoint.get("adopt_netns")
        if adopted and not netns.exists(endpoint["netns"]):
            refused = await asyncio.to_thread(netns.not_adoptable, adopted, naming.MANAGED_NETNS_PREFIXES)
            if refused:
                raise ValueError(f"adopt_netns refused on host {self.host}: {refused}")
        async with self._instance_locks[uid]:
            record = self.table.get(uid)
            if record is None:
                record = InstanceRecord(uid=uid, name=name, endpoint=endpoint)
            else:
                record.endpoint = endpoint
            self.table.lease_uid(record)  # its own uid/gid from the wiring on (exec needs it too)
            self.table.save(record)
            await self._wire(record)
            return record

    async def _wire(self, record: InstanceRecord) -> None:
        # Not write_atomically: the file is bind-mounted into the instance's processes, so
        # it must keep its inode; it is rewritten from the table at every wiring anyway.
        resolv = self.resolv_path(record.uid)
        resolv.parent.mkdir(parents=True, exist_ok=True)
        contents = (record.endpoint.get("resolv_conf") or "").encode()
        if not resolv.exists() or resolv.read_bytes() != contents:
            resolv.write_bytes(contents)
        os.chmod(resolv, 0o644)
        async with self._router_locks[record.router_netns]:
            if record.router_netns not in self.routers or not netns.exists(record.router_netns):
                await ep.ensure_router(self.nl, record.router_netns)
            router = await self._router(record.router_netns)
            if router.policy.applied is None:  # fail closed: deny until the control plane says more
                saved = self.saved_vpc(record.router_netns)
                try:
                    if saved is not None:
                        await self._apply_vpc(record.router_netns, saved)
                        router.state = saved
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("overlay file of %s does not apply (%r): ignored", record.router_netns, exc)
                    saved = None
                if saved is None:
                    router.policy.sync({}, set())
                    router.services.sync([])
            adopted = record.endpoint.get("adopt_netns")
            if adopted:  # an attached container's: the runtime made it, we name it
                if not netns.exists(record.netns):
                    netns.adopt(record.netns, adopted)
            elif not netns.exists(record.netns):
                self.pool.take(record.netns)  # a namespace made ahead, if one is ready
            # Anti-spoofing before the veth exists: its first packet is already checked.
            router.policy.set_port(record.endpoint["router_ifname"], instance_addresses(record.endpoint))
            await ep.ensure_endpoint(self.nl, self._endpoint_spec(record))
            await self._apply_qos(record)

    async def _apply_qos(self, record: InstanceRecord) -> None:
        """Ingress (toward the instance) on the router side, egress on the instance's eth0."""
        qos = record.endpoint.get("qos") or {}
        priority = qos.get("priority") or "normal"
        e = record.endpoint
        await qos_tc.set_rate(
            self.nl, e["router_netns"], e["router_ifname"], qos.get("ingress_mbps") or None, priority
        )
        await qos_tc.set_rate(
            self.nl, e["netns"], ep.INSTANCE_IFNAME, qos.get("egress_mbps") or None, priority
        )

    async def set_qos(self, uid: str, qos: dict[str, Any]) -> InstanceRecord:
        async with self._instance_locks[uid]:
            record = self.table.get(uid)
            if record is None:
                raise KeyError(f"instance {uid} is not on host {self.host}")
            record.endpoint["qos"] = qos
            self.table.save(record)
            await self._apply_qos(record)
            return record
