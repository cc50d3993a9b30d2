"""The network operator's overlay sync: tell every host of a VPC where the VPC's instances are.

For a VPC, the desired state of host H is "every other host that has wired instances of
the VPC, its VTEP, and those instances' addresses". `OverlaySyncer.sync(vpc)` computes
it from the store and sends it to each such host (`SyncPeers`, idempotent). Calls for
the same VPC coalesce: many instances wired at once cause few syncs, and a caller
returns only after a sync that started after its call has finished, so when
`await sync(vpc)` returns, every host routes to every instance wired before the call.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from autonet.agent.rpc import agent_pb2 as pb
from autonet.control.context import Context
from autonet.model import naming
from autonet.model.addressing import vtep_addresses, vtep_mac
from autonet.model.kinds import CONNECTED, READY
from autonet.model.objects import Object

# Instance states in which the instance's endpoint exists on its host.
WIRED_STATES = {"Wired", "Routed", "Running", "Provisioned"}
VXLAN_OVERHEAD = {4: 50, 6: 70}


class Coalescer:
    """Run `work(key)` so that every call is served by a run that started after it."""

    def __init__(self, work: Callable[[str], Awaitable[None]]) -> None:
        self.work = work
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._running: set[str] = set()

    async def __call__(self, key: str) -> None:
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            if key not in self._running:
                self._running.add(key)
                asyncio.get_running_loop().create_task(self._drain(key))
        await asyncio.shield(future)

    async def _drain(self, key: str) -> None:
        try:
            while key in self._pending:
                future = self._pending.pop(key)
                try:
                    await self.work(key)
                except Exception as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(None)
        finally:
            self._running.discard(key)


def is_wired(inst: Object, extra_states: set[str]) -> bool:
    return (
        not inst.metadata.deleting
        and inst.state in WIRED_STATES | extra_states
        and bool(inst.status.get("host"))
    )


def vtep(host: Object, vpc_uid: str) -> pb.Vtep:
    ipv4, ipv6 = vtep_addresses(int(host.status["index"]))
    return pb.Vtep(underlay=host.spec["underlay"], mac=vtep_mac(host.uid, vpc_uid), ipv4=ipv4, ipv6=ipv6)


def overlay_mtu(host: Object) -> int:
    version = 6 if ":" in host.spec["underlay"] else 4
    return int(host.status.get("mtu", 1500)) - VXLAN_OVERHEAD[version]


class OverlaySyncer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sync = Coalescer(self._sync)
        # States a plugin inserted into the instance pipeline after Wired count as wired.
        self.extra_wired_states: set[str] = set()

    @classmethod
    def of(cls, ctx: Context) -> OverlaySyncer:
        syncer = ctx.extras.get("overlay")
        if syncer is None:
            syncer = ctx.extras["overlay"] = cls(ctx)
        return syncer

    async def _sync(self, vpc_name: str) -> None:
        vpc = await self.ctx.get("Vpc", vpc_name)
        if vpc is None or not vpc.status.get("vni"):
            return
        hosts = {h.name: h for h in await self.ctx.list("Host")}
        by_host: dict[str, list[str]] = defaultdict(list)
        for inst in await self.ctx.list("Instance"):
            if inst.status.get("vpc") == vpc_name and is_wired(inst, self.extra_wired_states):
                by_host[inst.status["host"]].extend(
                    a for a in (inst.status.get("ipv4"), inst.status.get("ipv6")) if a
                )
        calls = []
        for name in by_host:
            host = hosts.get(name)
            if host is None or host.state not in (READY, CONNECTED) or "index" not in host.status:
                continue  # a Lost host is told when it comes back (Host Init resyncs)
            peers = [
                pb.Peer(host=other, vtep=vtep(hosts[other], vpc.uid), addresses=sorted(addresses))
                for other, addresses in sorted(by_host.items())
                if other != name and other in hosts and "index" in hosts[other].status
            ]
            request = pb.VpcPeers(
                vpc_uid=vpc.uid,
                router_netns=naming.router_netns(host.spec["tag"], vpc.uid),
                vxlan_ifname=naming.vxlan_ifname(vpc.uid),
                vni=int(vpc.status["vni"]),
                local=vtep(host, vpc.uid),
                mtu=overlay_mtu(host),
                peers=peers,
            )
            agent = self.ctx.agents.get(host.name, host.spec["rpc"])
            calls.append(agent.call("SyncPeers", request))
        results: list[Any] = await asyncio.gather(*calls, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
