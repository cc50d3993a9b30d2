"""Vpc and Network operators: VNI leases, and deletion once nothing depends on them."""

from __future__ import annotations

from autonet.control.context import Context
from autonet.control.leases import lease_number, release
from autonet.control.outcomes import Advance, Outcome, Remove, Retry
from autonet.control.registry import OperatorSet
from autonet.model.addressing import pick_vni
from autonet.model.errors import ExhaustedError
from autonet.model.kinds import TERMINATING
from autonet.model.objects import Object

operators = OperatorSet()


@operators.handles("Vpc", "Init")
async def lease_vni(vpc: Object, ctx: Context) -> Outcome:
    if vpc.status.get("vni"):
        return Advance()
    try:
        vni, ops = await lease_number(ctx, "vni", vpc, lambda taken: pick_vni(taken, vpc.spec.get("vni")))
    except ExhaustedError as exc:
        raise Retry(str(exc), delay=2.0) from None
    return Advance(status={"vni": vni}, also=ops)


@operators.handles("Vpc", TERMINATING)
async def delete_vpc(vpc: Object, ctx: Context) -> Outcome:
    users = [n.name for n in await ctx.list("Network") if n.spec["vpc"] == vpc.name]
    if users:
        raise Retry(f"waiting for networks to go: {', '.join(users)}", delay=0.5)
    return Remove(also=release("vni", [str(vpc.status["vni"])] if vpc.status.get("vni") else []))


@operators.handles("Network", "Init")
async def provision_network(network: Object, ctx: Context) -> Outcome:
    vpc = await ctx.get("Vpc", network.spec["vpc"])
    if vpc is None or not vpc.status.get("vni"):
        raise Retry(f'waiting for Vpc "{network.spec["vpc"]}"', delay=0.3)
    return Advance(status={"vni": vpc.status["vni"]})


@operators.handles("Network", TERMINATING)
async def delete_network(network: Object, ctx: Context) -> Outcome:
    users = [a.name for a in await ctx.list("Automaton") if a.spec["network"] == network.name]
    if users:
        raise Retry(f"waiting for automatons to go: {', '.join(users)}", delay=0.5)
    return Remove()


async def vpcs_of(composition: Object, ctx: Context) -> set[str]:
    names = {n for link in composition.spec.get("links", []) for n in (link["from"], link["to"])}
    vpcs = set()
    for automaton in await ctx.list("Automaton"):
        if automaton.name in names:
            network = await ctx.get("Network", automaton.spec["network"])
            if network is not None:
                vpcs.add(str(network.spec["vpc"]))
    return vpcs


@operators.handles("Composition", "Init")
async def provision_composition(composition: Object, ctx: Context) -> Outcome:
    """Open the links on every host of their VPCs (set-element updates)."""
    vpcs = await vpcs_of(composition, ctx)
    await ctx.network.sync_all(vpcs)
    return Advance(status={"links": len(composition.spec.get("links", [])), "vpcs": sorted(vpcs)})


@operators.handles("Composition", TERMINATING)
async def delete_composition(composition: Object, ctx: Context) -> Outcome:
    """Close the links first (a deleting composition allows nothing), then go."""
    await ctx.network.sync_all(await vpcs_of(composition, ctx))
    return Remove()
