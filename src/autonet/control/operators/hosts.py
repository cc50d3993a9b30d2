"""Host operator: bootstrap a registered host, resync its overlays, handle its loss.

    Init -> Connected -> Ready   (-> Lost when heartbeats stop; a heartbeat brings it back)
    Ready -> Init                (its agent restarted: a new boot ID)
    Terminating -> (removed)     (`autonet delete host NAME`, e.g. for a host that is gone)

Agents register themselves through the API (Host `Init`). `Init` leases the host an
index (its VTEP addresses and flow-ID space derive from it) and asks the agent what it
holds. What the agent holds that no longer exists (instances deleted, or lost and
replaced while the host was away) is removed from the host right there, before the
host can be Ready again; instances the store places on this host but the agent has lost
(a wiped or torn state directory) are sent back to `Addressed`, so the pipeline wires
them again. `Connected` resends the overlay of every VPC the host has instances of,
then the host is `Ready`.

The API only records facts (a registration, the boot ID an agent reports, heartbeats
in control/liveness.py); these operators decide every transition. `Ready` is looked
at whenever a heartbeat would be overdue: silent for longer than `--host-timeout`, the
host is `Lost`. `Lost` takes every instance of the host out of service
at once: they become `Lost`, which is not a wired state, so the VPC syncs that follow
drop their routes, policy elements, Maglev slots and DNS members on every other host;
their automatons go back to `Init` and create replacements on Ready hosts. A lost
instance keeps its address leases until its host returns (and removes it) or is
deleted, so no address is answered by two live instances.
"""

from __future__ import annotations

from autonet.agent.rpc import agent_pb2 as pb
from autonet.control.context import Context
from autonet.control.leases import lease_number, release
from autonet.control.operators.automatons import terminate, terminate_all
from autonet.control.operators.network import wired_states
from autonet.control.outcomes import Advance, MoveTo, Outcome, Remove, Stay
from autonet.control.registry import OperatorSet
from autonet.model.flowid import MAX_HOSTS
from autonet.model.kinds import CONNECTED, INIT, LOST, READY, TERMINATING
from autonet.model.objects import Object
from autonet.store import Op, Put

HOST_POOL = "host"
LOST_RECHECK = 0.25  # seconds between looks at a lost host for heartbeats
RECHECK_SLACK = 0.05


def silence(host: Object, ctx: Context) -> MoveTo | None:
    """`Lost`, if the host's agent has not been heard from for longer than the timeout."""
    liveness = ctx.liveness
    silent = liveness.silent_for(host.name)
    if silent <= liveness.timeout:
        return None
    return MoveTo(LOST, status={"reason": f"no heartbeat for {silent:.1f}s"})


async def instances_on(ctx: Context, host: str) -> list[Object]:
    return await ctx.by("Instance", "host", host)


operators = OperatorSet()


@operators.handles("Host", INIT)
async def bootstrap(host: Object, ctx: Context) -> Outcome:
    if (lost := silence(host, ctx)) is not None:
        return lost  # (re)bootstrapping a host that died meanwhile: it is lost
    ops: list[Op] = []
    index = host.status.get("index")
    if index is None:

        def lowest_free(taken: set[int]) -> int:
            return next(i for i in range(MAX_HOSTS) if i not in taken)

        index, ops = await lease_number(ctx, HOST_POOL, host, lowest_free)
    agent = await ctx.agent_for(host.name)
    report = await agent.call("Bootstrap", pb.BootstrapRequest(host=host.name))
    mine = {inst.uid: inst for inst in await instances_on(ctx, host.name)}
    held = {row.instance_uid for row in report.instances}
    for uid in sorted(held):
        inst = mine.get(uid)
        if inst is None or inst.state == LOST or inst.metadata.deleting:
            # Deleted, or lost and replaced, while the host was away: it goes before
            # the host is Ready again, so it never serves next to its replacement.
            await agent.call("DeleteInstance", pb.InstanceRef(instance_uid=uid))
    for inst in mine.values():
        if inst.metadata.deleting:
            continue
        if inst.state == LOST:  # gone from the host now; its Terminating releases its leases
            ops.append(terminate(inst))
        elif inst.state in wired_states(ctx.kinds) and inst.uid not in held:
            redo = inst.with_status(state="Addressed", reason="re-wiring: the agent lost it")
            ops.append(Put(inst.kind, inst.name, redo.to_data(), inst.metadata.revision))
    # `booted`: the agent boot this bootstrap was for; a host whose agent reports
    # another boot ID (a restarted agent) is bootstrapped again.
    return Advance(status={"booted": report.boot_id, "index": index}, also=ops)


@operators.handles("Host", CONNECTED)
async def resync(host: Object, ctx: Context) -> Outcome:
    if (lost := silence(host, ctx)) is not None:
        return lost
    vpcs = {i.status["vpc"] for i in await instances_on(ctx, host.name) if i.status.get("vpc")}
    syncer = ctx.network
    syncer.forget_host(host.name)  # whatever its agent holds, snapshots set it right
    await syncer.sync_all(vpcs)
    return Advance()


@operators.handles("Host", READY)
async def watch_ready(host: Object, ctx: Context) -> Outcome:
    """A Ready host stays Ready while its agent heartbeats, and the boot it was
    bootstrapped for; it is looked at again when its heartbeat would be overdue."""
    if host.status.get("boot_id") != host.status.get("booted"):
        return MoveTo(INIT, status={"reason": "its agent restarted (new boot ID)"})
    if (lost := silence(host, ctx)) is not None:
        return lost
    liveness = ctx.liveness
    return Stay(recheck_after=liveness.timeout - liveness.silent_for(host.name) + RECHECK_SLACK)


@operators.handles("Host", LOST)
async def evacuate(host: Object, ctx: Context) -> Outcome:
    """Its instances leave every data plane and are replaced on Ready hosts."""
    # A VPC sync that began before the loss may be waiting on this host's agent: cut
    # it short, so the syncs that take the host's instances out are not queued behind.
    await ctx.agents.abandon(host.name)
    ops: list[Op] = []
    vpcs: set[str] = set()
    automatons: set[str] = set()
    for inst in await instances_on(ctx, host.name):
        if inst.metadata.deleting or inst.state == LOST:
            continue
        lost = inst.with_status(state=LOST, reason=f"host {host.name} is lost")
        ops.append(Put(inst.kind, inst.name, lost.to_data(), inst.metadata.revision))
        automatons.add(inst.spec["automaton"])
        if inst.status.get("vpc"):
            vpcs.add(inst.status["vpc"])
    for name in sorted(automatons):  # back to Init: they count their live instances again
        automaton = await ctx.get("Automaton", name)
        if automaton is not None and not automaton.metadata.deleting:
            again = automaton.with_status(state=INIT, reason=f"replacing instances lost with {host.name}")
            ops.append(Put(automaton.kind, automaton.name, again.to_data(), automaton.metadata.revision))
    if ops:
        await ctx.store.commit(ops)
        ctx.log.warning("host %s lost: %d instance(s) out of service", host.name, len(ops))
        await ctx.network.sync_all(vpcs)
    liveness = ctx.liveness
    if liveness.heard(host.name) and liveness.alive(host.name):
        # Back (healed, or its agent restarted): Init removes what was replaced.
        return MoveTo(INIT, status={"reason": "heard from again"})
    return Stay(recheck_after=LOST_RECHECK)


@operators.handles("Host", TERMINATING)
async def remove_host(host: Object, ctx: Context) -> Outcome:
    """A host deleted by the user: its instances go (no agent is asked), then the host."""
    await terminate_all(ctx, await instances_on(ctx, host.name), " of the host")
    ctx.liveness.forget(host.name)
    index = host.status.get("index")
    return Remove(also=release(HOST_POOL, [str(index)]) if index is not None else [])
