"""Instance operators: schedule, address, wire, route, start, confirm; and tear down.

    Init -> Scheduled -> Addressed -> Wired -> Routed -> Running -> Provisioned
    Terminating -> (removed)

An instance with `spec.attachment` is a container a runtime made and attached through
autonet-cni: it is placed on the attachment's host, wired into the runtime's namespace
(which the agent adopts, never empties and never removes), and gets no process: once
wired and routed it is Provisioned.

Addresses are leases in the store (kind `Lease`, `ip/<network>/<address>`), created
with compare-and-swap in the same transaction that records them on the instance: an
address is never held twice, and a crash between the two writes cannot happen.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from autonet.agent.rpc import agent_pb2 as pb
from autonet.control.context import Context
from autonet.control.leases import lease_addresses, release
from autonet.control.operators.automatons import process_hash, qos_message
from autonet.control.operators.network import overlay_mtu
from autonet.control.outcomes import Advance, Fail, MoveTo, Outcome, Remove, Retry, Stay
from autonet.control.placement import choose_host, host_load
from autonet.control.registry import OperatorSet
from autonet.model import naming
from autonet.model.addressing import family_cidr, mac_for
from autonet.model.kinds import LOST, PROVISIONED, READY, TERMINATING
from autonet.model.objects import Object
from autonet.model.status import AddressedStatus, InstanceStatus
from autonet.store import Conflict, Put

READY_CHECK_DELAY = 0.2


def ip_pool(network: str) -> str:
    return f"ip/{network}"


async def owner_objects(ctx: Context, inst: Object) -> tuple[Object, Object, Object]:
    automaton = await ctx.get("Automaton", inst.spec["automaton"])
    if automaton is None:
        raise Fail(f'automaton "{inst.spec["automaton"]}" is gone')
    network = await ctx.get("Network", automaton.spec["network"])
    if network is None:
        raise Fail(f'network "{automaton.spec["network"]}" is gone')
    vpc = await ctx.get("Vpc", network.spec["vpc"])
    if vpc is None or not vpc.status.get("vni"):
        raise Retry(f'waiting for Vpc "{network.spec["vpc"]}"', delay=0.3)
    return automaton, network, vpc


def resolv_conf(vpc: str) -> str:
    return f"nameserver 169.254.1.1\nsearch {vpc}.autonet\noptions ndots:1 timeout:1 attempts:2\n"


async def process_stopped(ctx: Context, host: str, uid: str, name: str, why: str) -> bool:
    """Record an agent's word that an instance's process is not running, if the instance
    is serving (the `Provisioned` operator then takes it out of service at once).

    Level-triggered: agents say it in every heartbeat, so a lost event or a lost race
    cannot leave a dead process as a backend. Returns whether the fact was new."""
    for _ in range(10):
        inst = await ctx.get("Instance", name) if name else None
        if inst is None or inst.uid != uid or inst.status.get("host") != host:
            return False
        if inst.state != PROVISIONED or inst.metadata.deleting or inst.status.get("process_down"):
            return False
        noted = inst.with_status(process_down=why or "stopped")
        try:
            await ctx.store.commit([Put(inst.kind, inst.name, noted.to_data(), inst.metadata.revision)])
        except Conflict:
            continue  # changed meanwhile: judge the new version
        return True
    raise Retry(f"instance {name} keeps changing; report again")


operators = OperatorSet()


async def place_attached(inst: Object, ctx: Context, host_name: str) -> Outcome:
    host = await ctx.get("Host", host_name)
    if host is None:
        raise Fail(f'host "{host_name}" is not a host of this cluster (the attachment names it)')
    if host.state != READY:
        raise Retry(f"waiting for host {host_name} to be Ready (it is {host.state})", delay=1.0)
    placed = inst.with_status(state=ctx.kinds["Instance"].next_state(inst), host=host.name, reason="")
    await ctx.store.commit([Put(inst.kind, inst.name, placed.to_data(), inst.metadata.revision)])
    return Stay()


def is_attached(inst: Object) -> bool:
    return bool(inst.spec.get("attachment"))


@operators.handles("Instance", "Init")
async def schedule(inst: Object, ctx: Context) -> Outcome:
    timings = ctx.timings
    waited = time.perf_counter()
    async with ctx.lock("placement"):
        # Timed for `bench scale` (GET /api/v1/stats): the decision is reading its
        # inputs plus choosing; the lock wait and the commit are kept apart.
        started = time.perf_counter()
        timings.add("placement.lock_wait", started - waited)
        attachment = inst.spec.get("attachment")
        if attachment:  # a container is where its runtime made it
            return await place_attached(inst, ctx, attachment["host"])
        hosts = await ctx.list("Host")
        if ctx.cache.ready:  # O(hosts): counts kept by the cache's index
            load: Mapping[str, int] = {h.name: ctx.cache.size("Instance", "placed", h.name) for h in hosts}
        else:
            load = host_load(await ctx.list("Instance"))
        read = time.perf_counter()
        host = choose_host(hosts, load, ctx.load.host_bps())
        decided = time.perf_counter()
        timings.add("placement.inputs", read - started)
        timings.add("placement.choose", decided - read)
        timings.add("placement.decision", decided - started)
        if host is None:
            raise Retry("no Ready host with free capacity", delay=1.0)
        # Commit under the lock so the next placement sees this one.
        placed = inst.with_status(state=ctx.kinds["Instance"].next_state(inst), host=host.name, reason="")
        with timings.timed("placement.commit"):
            await ctx.store.commit([Put(inst.kind, inst.name, placed.to_data(), inst.metadata.revision)])
    return Stay()  # the placement is already written, under the lock


@operators.handles("Instance", "Scheduled")
async def address(inst: Object, ctx: Context) -> Outcome:
    _, network, vpc = await owner_objects(ctx, inst)
    host = await ctx.get("Host", inst.status["host"])
    if host is None:
        raise Retry(f"host {inst.status['host']} is gone", delay=1.0)
    cidrs = {v: c for v in (4, 6) if (c := family_cidr(network.spec["cidrs"], v))}
    held, ops = await lease_addresses(ctx, ip_pool(network.name), cidrs, inst, f'network "{network.name}"')
    status: dict[str, object] = {f"ipv{v}": a for v, a in held.items()}
    tag = host.spec["tag"]
    status.update(
        network=network.name,
        # What the instance was addressed from; plugins' stage predicates read it.
        network_spec=network.spec,
        vpc=vpc.name,
        vpc_uid=vpc.uid,
        netns=(naming.attached_netns if is_attached(inst) else naming.instance_netns)(tag, inst.uid),
        router_netns=naming.router_netns(tag, vpc.uid),
        router_ifname=naming.router_ifname(inst.uid),
        mac=mac_for(inst.uid),
        router_mac=mac_for("gw:" + inst.uid),
        mtu=overlay_mtu(host),
    )
    return Advance(status=status, also=ops)


@operators.handles("Instance", "Addressed")
async def wire(inst: Object, ctx: Context) -> Outcome:
    automaton, _, _ = await owner_objects(ctx, inst)
    s = AddressedStatus.of(inst)  # what the scheduler and IPAM wrote
    agent = await ctx.agent_for(s.host)
    await agent.call(
        "EnsureEndpoint",
        pb.Endpoint(
            instance_uid=inst.uid,
            instance_name=inst.name,
            vpc_uid=s.vpc_uid,
            netns=s.netns,
            router_netns=s.router_netns,
            router_ifname=s.router_ifname,
            mac=s.mac,
            router_mac=s.router_mac,
            ipv4=s.ipv4 or "",
            ipv6=s.ipv6 or "",
            mtu=s.mtu,
            resolv_conf=resolv_conf(s.vpc),
            qos=qos_message(automaton.spec.get("qos")),
            adopt_netns=(inst.spec.get("attachment") or {}).get("netns", ""),
        ),
    )
    return Advance(status={"qos": automaton.spec.get("qos") or {}})


@operators.handles("Instance", "Wired")
async def route(inst: Object, ctx: Context) -> Outcome:
    """The network operator: every host of the VPC learns where the instance is.

    It also records the hosts that hold instances of the instance's network, for
    stages a plugin may insert after this one (an L2 agent programs them all)."""
    syncer = ctx.network
    await syncer.sync(inst.status["vpc"])  # a sync that started after this instance was wired
    hosts = syncer.network_hosts.get(inst.status["network"], set())
    return Advance(status={"network_hosts": sorted(hosts | {inst.status["host"]})})


@operators.handles("Instance", "Routed")
async def start_process(inst: Object, ctx: Context) -> Outcome:
    automaton, _, _ = await owner_objects(ctx, inst)
    if is_attached(inst):  # its runtime runs the container's processes
        return Advance(status={"process_hash": ""})
    agent = await ctx.agent_for(inst.status["host"])
    spec = automaton.spec
    env = {
        **spec.get("env", {}),
        "AUTONET_INSTANCE": inst.name,
        "AUTONET_AUTOMATON": automaton.name,
        "AUTONET_IPV4": inst.status.get("ipv4", ""),
        "AUTONET_IPV6": inst.status.get("ipv6", ""),
    }
    resources = spec.get("resources") or {}
    await agent.call(
        "EnsureProcess",
        pb.Process(
            instance_uid=inst.uid,
            command=spec.get("command") or [],
            image=spec.get("image") or "",
            user="root" if spec.get("user") == "root" else "",  # else: the instance's own uid
            env=env,
            resources=pb.Resources(**{k: v for k, v in resources.items() if v}) if resources else None,
        ),
    )
    return Advance(status={"process_hash": process_hash(spec)})


@operators.handles("Instance", "Running")
async def confirm(inst: Object, ctx: Context) -> Outcome:
    agent = await ctx.agent_for(inst.status["host"])
    report = await agent.call("Report", pb.ReportRequest(instance_uid=inst.uid))
    row = next((r for r in report.instances if r.instance_uid == inst.uid), None)
    if row is None:
        return MoveTo("Addressed", status={"reason": "the agent lost it: wiring again"})
    automaton, _, _ = await owner_objects(ctx, inst)
    if is_attached(inst):  # wired is ready: what runs in it is its runtime's business
        return Advance(after=lambda: ctx.network.sync(inst.status["vpc"]))
    wanted = {f"{p['transport']}/{p['port']}" for p in automaton.spec.get("provides", [])}
    missing = sorted(wanted - set(row.listening))
    if row.process == "running" and row.pid and not missing:
        # Ready: it becomes a backend of its service on every host of the VPC.
        return Advance(
            status={
                "pid": row.pid,
                "restarts": row.restarts,
                "process_uid": row.process_uid,
                "last_exit": row.last_exit,
            },
            after=lambda: ctx.network.sync(inst.status["vpc"]),
        )
    if row.process == "running" and missing:
        raise Retry(f"process running, not yet listening on {', '.join(missing)}", delay=READY_CHECK_DELAY)
    if row.process == "failed":
        raise Fail(f"process keeps failing: {row.last_exit} (see `autonet logs {inst.name}`)")
    raise Retry(f"process {row.process or 'starting'}: {row.last_exit}".strip(": "), delay=READY_CHECK_DELAY)


@operators.handles("Instance", PROVISIONED)
async def serving(inst: Object, ctx: Context) -> Outcome:
    """A serving instance whose process stopped leaves its service at once and waits,
    in `Running`, until it is ready again (the agent restarts the process)."""
    why = inst.status.get("process_down")
    if not why:
        return Stay()
    return MoveTo(
        "Running",
        status={"reason": f"process {why}; waiting until it is ready", "process_down": None},
        after=lambda: ctx.network.sync(inst.status["vpc"]),
    )


@operators.handles("Instance", TERMINATING)
async def tear_down(inst: Object, ctx: Context) -> Outcome:
    """Undo what the stages it went through did: any of them may not have run."""
    s = InstanceStatus.of(inst)
    host = await ctx.get("Host", s.host) if s.host else None
    if host is not None and host.state == LOST and not host.metadata.deleting:
        # Its process may still run behind a partition: its addresses stay leased
        # until the host returns (and removes it) or is deleted.
        raise Retry(f"host {host.name} is lost: the instance goes when it returns", delay=1.0)
    if s.vpc:  # first the other hosts forget it, then it goes
        await ctx.network.sync(s.vpc)
    if host is not None and not host.metadata.deleting and s.netns:
        agent = await ctx.agent_for(host.name)
        await agent.call("DeleteInstance", pb.InstanceRef(instance_uid=inst.uid))
    leases = release(ip_pool(s.network), [s.ipv4, s.ipv6]) if s.network else []
    return Remove(also=leases)
