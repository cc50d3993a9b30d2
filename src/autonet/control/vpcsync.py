"""The network operator's VPC sync: overlay routes and composition security, per host.

For a VPC, the desired state of host H is
- the overlay: every other host that has wired instances of the VPC, its VTEP, and
  those instances' addresses (H routes to them over VXLAN);
- the policy: the identity of every wired instance's automaton (so H maps each
  address of the VPC to it), and one rule (source identity, destination identity,
  transport, port) per link opening where either automaton has an instance on H
  (model/policy.py says which automatons are linked). The elements grow with instances
  plus links, not with instances times instances;
- the services: every automaton's VIPs and DNS name, and per provided port the ready
  (Provisioned) instances that connections to the VIP are balanced over.

`VpcSyncer.sync(vpc)` computes this from the store and sends each such host one
`SyncVpc` (idempotent). Calls for the same VPC coalesce: many instances wired at once
cause few syncs, and a caller returns only after a sync that started after its call has
finished, so when `await sync(vpc)` returns, every host of the VPC routes to, and
enforces the policy of, every instance wired before the call.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from autonet.agent.rpc import agent_pb2 as pb
from autonet.control.context import Context
from autonet.model import naming
from autonet.model.addressing import vtep_addresses, vtep_mac
from autonet.model.kinds import CONNECTED, PROVISIONED, READY, KindRegistry
from autonet.model.objects import Object
from autonet.model.policy import Opening, openings


def wired_states(kinds: KindRegistry) -> set[str]:
    """Instance states in which its endpoint exists on its host: `Wired` and every stage
    after it, including stages plugins inserted."""
    states = [stage.state for stage in kinds["Instance"].pipeline]
    return set(states[states.index("Wired") :])


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


def vtep(host: Object, vpc_uid: str) -> pb.Vtep:
    ipv4, ipv6 = vtep_addresses(int(host.status["index"]))
    return pb.Vtep(underlay=host.spec["underlay"], mac=vtep_mac(host.uid, vpc_uid), ipv4=ipv4, ipv6=ipv6)


def overlay_mtu(host: Object) -> int:
    version = 6 if ":" in host.spec["underlay"] else 4
    return int(host.status.get("mtu", 1500)) - VXLAN_OVERHEAD[version]


def addresses(inst: Object) -> list[str]:
    return [a for a in (inst.status.get("ipv4"), inst.status.get("ipv6")) if a]


def identities(automatons: Iterable[Object]) -> dict[str, int]:
    """Automaton name -> its identity, for the automatons that hold one (leased at Init)."""
    return {a.name: int(a.status["identity"]) for a in automatons if a.status.get("identity")}


def identity_rules(found: Iterable[Opening], identity: dict[str, int], local: set[str]) -> list[pb.Rule]:
    """One rule per opening whose source or target automaton has an instance in `local`
    (the automatons on the host): whatever the number of instances, a link costs one
    element per (transport, port) it opens."""
    rules = {
        (identity[o.source], identity[o.target], o.transport, o.port)
        for o in found
        if (o.source in local or o.target in local) and o.source in identity and o.target in identity
    }
    return [
        pb.Rule(source_identity=s, destination_identity=d, transport=t, port=p)
        for s, d, t, p in sorted(rules)
    ]


def member_list(wired: Iterable[Object], identity: dict[str, int]) -> list[pb.Member]:
    """Every address of the wired instances, with its instance, automaton and identity."""
    return [
        pb.Member(
            address=address,
            instance=inst.name,
            automaton=inst.spec["automaton"],
            identity=identity.get(inst.spec["automaton"], 0),
        )
        for inst in wired
        for address in addresses(inst)
    ]


def service_table(automatons: Iterable[Object], wired: dict[str, list[Object]]) -> list[pb.Service]:
    """Every automaton of the VPC with its VIPs; each provided port with its ready instances."""
    services = []
    for automaton in sorted(automatons, key=lambda a: a.name):
        if automaton.metadata.deleting:
            continue
        ready = [i for i in wired.get(automaton.name, []) if i.state == PROVISIONED]
        backends = sorted(a for i in ready for a in addresses(i))
        ports = [
            pb.ServicePort(transport=p["transport"], port=int(p["port"]), backends=backends)
            for p in automaton.spec.get("provides", [])
        ]
        services.append(
            pb.Service(
                name=automaton.name,
                vip4=automaton.status.get("vip4", ""),
                vip6=automaton.status.get("vip6", ""),
                ports=ports,
            )
        )
    return services


class VpcSyncer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sync = Coalescer(self._sync)
        self.wired_states = wired_states(ctx.kinds)
        # Per network, the hosts holding its wired instances, as of the last sync.
        self.network_hosts: dict[str, set[str]] = {}

    @classmethod
    def of(cls, ctx: Context) -> VpcSyncer:
        syncer = ctx.extras.get("vpcsync")
        if syncer is None:
            syncer = ctx.extras["vpcsync"] = cls(ctx)
        return syncer

    def is_wired(self, inst: Object) -> bool:
        return (
            not inst.metadata.deleting and inst.state in self.wired_states and bool(inst.status.get("host"))
        )

    async def sync_all(self, vpcs: Iterable[str]) -> None:
        await asyncio.gather(*(self.sync(vpc) for vpc in sorted(set(vpcs))))

    async def _sync(self, vpc_name: str) -> None:
        vpc = await self.ctx.get("Vpc", vpc_name)
        if vpc is None or not vpc.status.get("vni"):
            return
        hosts = {h.name: h for h in await self.ctx.list("Host")}
        wired = [i for i in await self.ctx.by("Instance", "vpc", vpc_name) if self.is_wired(i)]
        by_host: dict[str, list[str]] = defaultdict(list)
        by_automaton: dict[str, list[Object]] = defaultdict(list)
        network_hosts: dict[str, set[str]] = defaultdict(set)
        local: dict[str, set[str]] = defaultdict(set)  # per host, the automatons it runs
        for inst in wired:
            by_host[inst.status["host"]].extend(addresses(inst))
            local[inst.status["host"]].add(inst.spec["automaton"])
            by_automaton[inst.spec["automaton"]].append(inst)
            network_hosts[inst.status["network"]].add(inst.status["host"])
        self.network_hosts.update(network_hosts)
        all_automatons = await self.ctx.by("Automaton", "vpc", vpc_name)
        automatons = {a.name: a for a in all_automatons if a.name in by_automaton}
        identity = identities(automatons.values())
        found = openings(await self.ctx.list("Composition"), automatons)
        services = service_table(all_automatons, by_automaton)
        members = member_list(wired, identity)
        calls = []
        for name in by_host:
            host = hosts.get(name)
            if host is None or host.state not in (READY, CONNECTED) or "index" not in host.status:
                continue  # a Lost host is told when it comes back (Host Connected resyncs)
            peers = [
                pb.Peer(host=other, vtep=vtep(hosts[other], vpc.uid), addresses=sorted(found))
                for other, found in sorted(by_host.items())
                if other != name and other in hosts and "index" in hosts[other].status
            ]
            request = pb.VpcState(
                vpc_uid=vpc.uid,
                router_netns=naming.router_netns(host.spec["tag"], vpc.uid),
                vxlan_ifname=naming.vxlan_ifname(vpc.uid),
                vni=int(vpc.status["vni"]),
                local=vtep(host, vpc.uid),
                mtu=overlay_mtu(host),
                peers=peers,
                rules=identity_rules(found, identity, local[name]),
                vpc_name=vpc_name,
                services=services,
                members=members,
            )
            agent = self.ctx.agents.get(host.name, host.spec["rpc"])
            calls.append(agent.call("SyncVpc", request))
        results: list[Any] = await asyncio.gather(*calls, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]


RESYNC_EVERY = 30.0


async def resync_forever(ctx: Context) -> None:
    """Anti-entropy: push every VPC to its hosts periodically, repairing anything missed."""
    while True:
        await asyncio.sleep(RESYNC_EVERY)
        syncer = VpcSyncer.of(ctx)
        for vpc in await ctx.list("Vpc"):
            try:
                await syncer.sync(vpc.name)
            except Exception as exc:
                ctx.log.warning("periodic resync of Vpc %s failed: %s", vpc.name, exc)
