"""The L2 plugin's control side: the L2Agent kind, the L2 operator, a pipeline stage.

    Network.spec.l2: ovs                 an L2 segment managed through Open vSwitch
    L2Agent (one per host that needs it) Init -> OvsReady -> Provisioned
    Instance ... Wired -> L2AgentReady -> Routed ...   (only on l2: ovs networks)

When an instance on an `l2: ovs` network is wired, the core network operator records
the network's hosts on it (`status.network_hosts`) and the instance moves to
`L2AgentReady`. The L2 operator owns that state: it makes sure every such host has a
Provisioned L2Agent (Open vSwitch running), attaches the instance to the network's
bridge on its host (a second interface, eth1, with the network's prefix), programs the
OpenFlow rules on every host of the network, and lets the instance continue.
Deletions are followed by watching the store: a network's hosts are re-synced whenever
one of its instances changes, so deleted instances lose their rules everywhere.

Composition security on the segment is enforced by OVS itself (flows.py): every host of
the network gets the network's openings (the links between automatons with instances on
it, as source and destination addresses plus transport/port) and drops everything else;
its rules follow instances, automatons and compositions. Traffic that leaves the segment
(to other networks) crosses the VPC routers and their policy. Service addresses are
served by the routers: an instance reaches an automaton on its own l2 segment by its
instances' addresses (the replies would not cross the router).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

import grpc
from pydantic import BaseModel

from autonet.control.context import Context
from autonet.control.operators.network import Coalescer, addresses
from autonet.control.outcomes import Advance, Outcome, Remove, Retry
from autonet.control.registry import OperatorSet, PluginAPI
from autonet.model.addressing import mac_for
from autonet.model.kinds import INIT, PROVISIONED, TERMINATING, KindInfo, Stage
from autonet.model.naming import digest
from autonet.model.objects import Object
from autonet.model.policy import openings
from autonet.model.status import Status
from autonet.store import Conflict
from autonet_l2ovs import l2_pb2 as pb
from autonet_l2ovs import l2_pb2_grpc as pb_grpc
from autonet_l2ovs.flows import PING

L2_READY = "L2AgentReady"
OVS_READY = "OvsReady"
VXLAN_OVERHEAD = {4: 50, 6: 70}
REFRESH_SECONDS = 3.0


class L2AgentSpec(BaseModel):
    host: str


class L2AgentStatus(Status):
    version: str | None = None  # the Open vSwitch version, once started
    running: bool | None = None  # whether its daemons ran at the last look
    bridges: list[dict[str, Any]] | None = None  # its bridges: name, ports, OpenFlow rules with counters


def on_ovs(inst: Object) -> bool:
    return (inst.status.get("network_spec") or {}).get("l2") == "ovs"


def bridge_name(network_uid: str) -> str:
    return f"anb{digest(network_uid, 8)}"


def vxlan_name(network_uid: str) -> str:
    return f"anw{digest(network_uid, 8)}"


def port_name(instance_uid: str) -> str:
    return f"anq{digest(instance_uid, 8)}"


def l2_mac(instance_uid: str) -> str:
    return mac_for(f"l2:{instance_uid}")


def conntrack_zone(network_uid: str) -> int:
    """The network's conntrack zone in OVS (1..65535), stable across hosts and restarts."""
    return int(digest(network_uid, 4), 36) % 65535 + 1


def network_allows(
    members: list[Object], compositions: list[Object], automatons: list[Object]
) -> list[pb.Allow]:
    """The openings between automatons with instances on the segment (by address); one
    ping opening per linked pair, as the routers allow echo requests between them."""
    on_segment: dict[str, list[str]] = {}
    for inst in members:
        on_segment.setdefault(inst.spec["automaton"], []).extend(addresses(inst))
    found = openings(compositions, {a.name: a for a in automatons})
    wanted = {(o.source, o.target, o.transport, o.port) for o in found}
    wanted |= {(o.source, o.target, PING, 0) for o in found}
    return [
        pb.Allow(sources=sorted(on_segment[s]), destinations=sorted(on_segment[t]), transport=tr, port=p)
        for s, t, tr, p in sorted(wanted)
        if s in on_segment and t in on_segment
    ]


async def l2_stub(ctx: Context, host: str) -> pb_grpc.L2Stub:
    agent = await ctx.agent_for(host)
    return pb_grpc.L2Stub(agent.channel)


async def rpc(ctx: Context, host: str, method: str, request: Any) -> Any:
    stub = await l2_stub(ctx, host)
    try:
        return await getattr(stub, method)(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        raise Retry(f"L2 agent on {host}: {method}: {exc.details() or exc.code().name}") from None


operators = OperatorSet()


def setup(api: PluginAPI) -> None:
    api.extend_spec("Network", "l2", Literal["ovs"] | None, None)
    api.extend_status("Instance", "l2_port", str)  # its OVS port (the host end of its eth1)
    api.extend_status("Instance", "l2_mac", str)  # the MAC of its eth1
    api.add_kind(
        KindInfo(
            "L2Agent",
            "l2agents",
            L2AgentSpec,
            [Stage(INIT), Stage(OVS_READY), Stage(PROVISIONED)],
            user_managed=False,
            status_model=L2AgentStatus,
        )
    )
    api.insert_stage("Instance", L2_READY, after="Wired", when=on_ovs)
    api.add_operators(operators)
    api.run_in_background(follow_instances)
    api.run_in_background(refresh_agents)


@operators.handles("L2Agent", INIT)
async def start_ovs(agent: Object, ctx: Context) -> Outcome:
    status = await rpc(ctx, agent.spec["host"], "StartOvs", pb.StartRequest())
    if not status.running:
        raise Retry("Open vSwitch did not start", delay=1.0)
    return Advance(status={"version": status.version})


@operators.handles("L2Agent", OVS_READY)
async def confirm_ovs(agent: Object, ctx: Context) -> Outcome:
    status = await rpc(ctx, agent.spec["host"], "Dump", pb.DumpRequest())
    if not status.running:
        raise Retry("Open vSwitch is not running", delay=1.0)
    return Advance()


@operators.handles("L2Agent", TERMINATING)
async def forget_agent(agent: Object, ctx: Context) -> Outcome:
    return Remove()


# Per controller context (one per controller in a process running several): the
# coalescing network syncs.
syncs: dict[int, Coalescer] = {}
# Instances being programmed: part of their network before their state says so.
programming: dict[str, Object] = {}


def network_sync(ctx: Context) -> Coalescer:
    sync = syncs.get(id(ctx))
    if sync is None:
        sync = syncs[id(ctx)] = Coalescer(lambda network: sync_network(ctx, network))
    return sync


@operators.handles("Instance", L2_READY)
async def program_l2(inst: Object, ctx: Context) -> Outcome:
    hosts = inst.status.get("network_hosts") or [inst.status["host"]]
    missing = []
    for host in hosts:
        agent = await ctx.get("L2Agent", host)
        if agent is None:
            new = Object(kind="L2Agent", name=host, spec={"host": host}, status={"state": INIT})
            with contextlib.suppress(Conflict):
                await ctx.store.put("L2Agent", host, new.to_data(), 0)
            missing.append(host)
        elif agent.state != PROVISIONED:
            missing.append(host)
    if missing:
        raise Retry(f"waiting for Open vSwitch on {', '.join(missing)}", delay=0.3)
    network = await ctx.get("Network", inst.status["network"])
    if network is None:
        raise Retry("network is gone", delay=1.0)
    prefixes = {4: None, 6: None}
    for cidr in network.spec["cidrs"]:
        prefixes[6 if ":" in cidr else 4] = cidr.split("/")[1]
    with_prefix = [
        f"{inst.status[f'ipv{v}']}/{p}" for v, p in prefixes.items() if p and inst.status.get(f"ipv{v}")
    ]
    await rpc(
        ctx, inst.status["host"], "Attach",
        pb.AttachRequest(
            instance_uid=inst.uid, bridge=bridge_name(network.uid), port=port_name(inst.uid),
            mac=l2_mac(inst.uid), addresses=with_prefix, mtu=int(inst.status["mtu"]),
        ),
    )  # fmt: skip
    l2 = {"l2_port": port_name(inst.uid), "l2_mac": l2_mac(inst.uid)}
    programming[inst.uid] = inst.with_status(**l2)
    try:
        await network_sync(ctx)(network.name)
    finally:
        programming.pop(inst.uid, None)
    return Advance(status=l2)


async def sync_network(ctx: Context, network_name: str) -> None:
    network = await ctx.get("Network", network_name)
    if network is None:
        return
    hosts = {h.name: h for h in await ctx.list("Host")}
    stored = {i.uid: i for i in await ctx.list("Instance")}
    stored.update(programming)
    members = [
        i
        for i in stored.values()
        if i.status.get("network") == network_name and i.status.get("l2_port") and not i.metadata.deleting
    ]
    by_host: dict[str, list[Object]] = {}
    for inst in members:
        by_host.setdefault(inst.status["host"], []).append(inst)
    allows = network_allows(members, await ctx.list("Composition"), await ctx.list("Automaton"))
    agents = {a.name for a in await ctx.list("L2Agent") if a.state == PROVISIONED}
    calls = []
    for host_name in sorted(agents):
        host = hosts.get(host_name)
        if host is None:
            continue
        underlay = host.spec["underlay"]
        remotes = [
            pb.Remote(mac=i.status["l2_mac"], underlay=hosts[h].spec["underlay"], addresses=addresses(i))
            for h, insts in by_host.items()
            if h != host_name and h in hosts
            for i in insts
        ]
        request = pb.NetworkState(
            bridge=bridge_name(network.uid),
            vxlan=vxlan_name(network.uid),
            vni=int(digest(network.uid, 4), 36) % 16_000_000 + 1,
            local_underlay=underlay,
            mtu=int(host.status.get("mtu", 1500)) - VXLAN_OVERHEAD[6 if ":" in underlay else 4],
            ports=[
                pb.Port(name=i.status["l2_port"], mac=i.status["l2_mac"], addresses=addresses(i))
                for i in by_host.get(host_name, [])
            ],
            remotes=remotes,
            peers=sorted(hosts[h].spec["underlay"] for h in by_host if h != host_name and h in hosts),
            zone=conntrack_zone(network.uid),
            allows=allows,
        )
        calls.append(rpc(ctx, host_name, "SyncNetwork", request))
    await asyncio.gather(*calls)


async def follow_instances(ctx: Context) -> None:
    """Re-sync a network's hosts when one of its L2 instances goes, and every L2
    network when a composition or an automaton changes (links and ports are rules)."""
    revision = await ctx.store.revision()
    async for event in ctx.store.watch(revision, ["Instance", "Composition", "Automaton"]):
        data, kind = event.record.data, event.record.kind
        if not ctx.acts_on(Object.from_data(data, event.record.revision)):  # (several controllers)
            continue
        status = data.get("status", {})
        networks: set[str] = set()
        if kind == "Composition" or (kind == "Automaton" and data.get("spec", {}).get("network")):
            l2 = {n.name for n in await ctx.list("Network") if n.spec.get("l2") == "ovs"}
            # A link's openings involve its automatons' segments only; a composition may
            # link automatons anywhere, so every segment is re-synced (coalesced).
            networks = l2 if kind == "Composition" else l2 & {data["spec"]["network"]}
        elif (
            status.get("l2_port")
            and status.get("network")
            and (event.type == "delete" or data["metadata"].get("deleting"))
        ):
            networks = {status["network"]}
        for network in sorted(networks):
            with contextlib.suppress(Exception):
                await network_sync(ctx)(network)


async def refresh_agents(ctx: Context) -> None:
    """Keep each L2Agent's status showing its bridges, ports and rules with counters."""
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        for agent in await ctx.list("L2Agent"):
            if agent.state != PROVISIONED or not ctx.acts_on(agent):  # (several controllers)
                continue
            with contextlib.suppress(Exception):
                status = await (await l2_stub(ctx, agent.spec["host"])).Dump(pb.DumpRequest(), timeout=10)
                bridges = [
                    {"name": b.name, "ports": list(b.ports), "flows": list(b.flows)} for b in status.bridges
                ]
                if agent.status.get("bridges") != bridges:
                    updated = agent.with_status(bridges=bridges, running=status.running)
                    await ctx.store.put(agent.kind, agent.name, updated.to_data(), agent.metadata.revision)
