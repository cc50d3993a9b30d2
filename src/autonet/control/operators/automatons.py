"""Automaton operator: keep `replicas` instances, named `<automaton>-<ordinal>`.

At Init an automaton leases its service addresses (VIPs) and its identity, a number
unique in its VPC and held for its life (pool `identity/<vpc>`, from 1: 0 means none),
which the VPC routers' composition security matches on. Both are released with it.

Scaling up creates instances with the lowest free ordinals; scaling down sends the
highest ordinals to `Terminating`. Instances on a lost host (state `Lost`) do not count:
the automaton replaces them elsewhere. An external automaton keeps no replicas: its
instances are containers attached through autonet-cni (api/routes/attachments.py). A changed command, user or environment sends running instances back to
`Routed`, where their process is restarted with the new spec.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from autonet.agent.rpc import agent_pb2 as pb
from autonet.control.context import Context
from autonet.control.leases import lease_addresses, lease_number, release
from autonet.control.outcomes import Advance, MoveTo, Outcome, Remove, Retry, Stay
from autonet.control.registry import OperatorSet
from autonet.model.addressing import family_cidr, service_ranges
from autonet.model.kinds import INIT, LOST, PROVISIONED, TERMINATING
from autonet.model.objects import Metadata, Object
from autonet.model.status import AutomatonStatus
from autonet.store import Op, Put

RESTART_FROM = {"Running", "Provisioned"}


def process_hash(spec: dict[str, Any]) -> str:
    relevant = {key: spec.get(key) for key in ("command", "user", "env")}
    for optional in ("resources", "image"):  # only when set: the digests of others stay
        if spec.get(optional):
            relevant[optional] = spec[optional]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def instance_name(automaton: str, ordinal: int) -> str:
    return f"{automaton}-{ordinal}"


async def instances_of(ctx: Context, automaton: str) -> list[Object]:
    return await ctx.by("Instance", "automaton", automaton)


def terminate(obj: Object) -> Op:
    gone = obj.model_copy(deep=True)
    gone.metadata.deleting = True
    gone.status["state"] = TERMINATING
    return Put(obj.kind, obj.name, gone.to_data(), obj.metadata.revision)


async def terminate_all(ctx: Context, instances: list[Object], whose: str = "") -> None:
    """Send `instances` to Terminating; Retry until they are all gone."""
    ops = [terminate(i) for i in instances if not i.metadata.deleting]
    if ops:
        await ctx.store.commit(ops)
    if instances:
        raise Retry(f"waiting for {len(instances)} instance(s){whose} to terminate", delay=0.3)


def vip_pool(vpc: str) -> str:
    return f"vip/{vpc}"


def identity_pool(vpc: str) -> str:
    return f"identity/{vpc}"


MAX_IDENTITY = 2**32 - 1  # an nftables mark


def lowest_free_identity(taken: set[int]) -> int:
    """The lowest number from 1 that no automaton of the VPC holds (0 means none)."""
    return next(n for n in range(1, MAX_IDENTITY + 1) if n not in taken)


def _resync(ctx: Context, vpc: str | None) -> Callable[[], Awaitable[None]] | None:
    return (lambda: ctx.network.sync(vpc)) if vpc else None


def qos_message(qos: dict[str, Any] | None) -> pb.Qos:
    qos = qos or {}
    return pb.Qos(
        ingress_mbps=qos.get("ingress_mbps") or 0,
        egress_mbps=qos.get("egress_mbps") or 0,
        priority=qos.get("priority", "normal"),
    )


async def reshape(automaton: Object, ctx: Context) -> None:
    """Apply a changed spec.qos to the automaton's wired instances, while they run."""
    wanted = automaton.spec.get("qos") or {}
    for inst in await instances_of(ctx, automaton.name):
        if inst.metadata.deleting or inst.state == LOST or inst.status.get("qos", wanted) == wanted:
            continue
        agent = await ctx.agent_for(inst.status["host"])
        await agent.call("SetQos", pb.QosRequest(instance_uid=inst.uid, qos=qos_message(wanted)))
        done = inst.with_status(qos=wanted)
        await ctx.store.commit([Put(inst.kind, inst.name, done.to_data(), inst.metadata.revision)])


operators = OperatorSet()


async def lease_vips(automaton: Object, ctx: Context) -> tuple[dict[str, Any], list[Op]]:
    """The automaton's service addresses, leased from its VPC's service ranges, and its
    identity in the VPC."""
    network = await ctx.get("Network", automaton.spec["network"])
    if network is None:
        raise Retry(f'waiting for Network "{automaton.spec["network"]}"', delay=0.3)
    vpc = await ctx.get("Vpc", network.spec["vpc"])
    if vpc is None:
        raise Retry(f'waiting for Vpc "{network.spec["vpc"]}"', delay=0.3)
    cidrs = {}
    for version in (4, 6):
        service = family_cidr(service_ranges(vpc.spec), version)
        if family_cidr(network.spec["cidrs"], version) and service:
            cidrs[version] = service
    vips, ops = await lease_addresses(ctx, vip_pool(vpc.name), cidrs, automaton, f'Vpc "{vpc.name}": service')
    identity, identity_ops = await lease_number(ctx, identity_pool(vpc.name), automaton, lowest_free_identity)
    status: dict[str, Any] = {
        "vpc": vpc.name,
        "identity": identity,
        **{f"vip{v}": a for v, a in vips.items()},
    }
    return status, ops + identity_ops


@operators.handles("Automaton", "Init")
async def reconcile_replicas(automaton: Object, ctx: Context) -> Outcome:
    vips, lease_ops = await lease_vips(automaton, ctx)
    if automaton.spec.get("external"):  # its instances come and go through autonet-cni
        await reshape(automaton, ctx)
        return Advance(
            status={"replicas": 0, **vips}, also=lease_ops, after=lambda: ctx.network.sync(vips["vpc"])
        )
    wanted = int(automaton.spec.get("replicas", 1))
    current = await instances_of(ctx, automaton.name)
    # Instances on a lost host do not count: they are replaced, and removed when
    # their host returns. Ordinals still held by any object are not reused yet.
    live = sorted(
        (i for i in current if not i.metadata.deleting and i.state != LOST),
        key=lambda i: int(i.spec["ordinal"]),
    )
    used = {int(i.spec["ordinal"]) for i in current}
    free = (n for n in itertools.count() if n not in used)
    ops: list[Op] = [terminate(inst) for inst in live[wanted:]]  # the highest ordinals go
    for _ in range(wanted - len(live)):
        ordinal = next(free)
        new = Object(
            kind="Instance",
            name=instance_name(automaton.name, ordinal),
            metadata=Metadata(owner=automaton.ref),
            spec={"automaton": automaton.name, "ordinal": ordinal},
            status={"state": "Init"},
        )
        ops.append(Put(new.kind, new.name, new.to_data(), 0))
    digest = process_hash(automaton.spec)
    for inst in live[:wanted]:
        if inst.state in RESTART_FROM and inst.status.get("process_hash") != digest:
            restart = inst.with_status(state="Routed")
            ops.append(Put(inst.kind, inst.name, restart.to_data(), inst.metadata.revision))
    if ops:
        await ctx.store.commit(ops)
    await reshape(automaton, ctx)
    return Advance(
        status={"replicas": wanted, **vips},
        also=lease_ops,
        # its ports or addresses may have changed: refresh the VPC's hosts
        after=lambda: ctx.network.sync(vips["vpc"]),
    )


@operators.handles("Automaton", PROVISIONED)
async def keep_identity(automaton: Object, ctx: Context) -> Outcome:
    """An automaton provisioned before identities existed holds none, so its instances
    would be denied: back to Init, whose handler leases one. (A controller that starts
    looks at every object, so an upgrade needs nothing more.)"""
    if automaton.status.get("identity") or automaton.metadata.deleting:
        return Stay()
    return MoveTo(INIT, status={"reason": "leasing its policy identity"})


@operators.handles("Automaton", TERMINATING)
async def delete_automaton(automaton: Object, ctx: Context) -> Outcome:
    await terminate_all(ctx, await instances_of(ctx, automaton.name))
    s = AutomatonStatus.of(automaton)  # what its Init leased, if it ran
    leases = (
        release(vip_pool(s.vpc), [s.vip4, s.vip6])
        + release(identity_pool(s.vpc), [str(s.identity) if s.identity else None])
        if s.vpc
        else []
    )
    return Remove(also=leases, after=_resync(ctx, s.vpc))
