"""Tenant scoping: the VPC each object belongs to, and what a tenant may see and change.

How each kind names its VPC (model/kinds.py):

    Vpc          its own name
    Network      spec.vpc
    Automaton    its network's VPC (spec.network)
    Instance     its automaton's VPC (spec.automaton), else status.vpc once addressed
    Composition  the VPCs of the automatons its links join (links never cross VPCs,
                 model/manifest.py): a composition without links belongs to none
    Host, L2Agent and every other kind: none (cluster infrastructure)

A tenant sees and changes only objects whose VPCs are all in its token's list (an object
that belongs to none is the admin's). Reads of other objects answer as if they did not
exist (404, or left out of a list); changes are refused with a 403 naming the object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from autonet.api.auth import Principal
from autonet.api.state import ApiError
from autonet.control.context import Context
from autonet.model.objects import Object

Lookup = Callable[[str, str], Object | None]
# The kinds a VPC reaches through; the others (Host, plugins' kinds) are infrastructure.
SCOPED_KINDS = ("Vpc", "Network", "Automaton", "Instance", "Composition")


def vpcs_of(obj: Object, lookup: Lookup) -> set[str]:
    """The VPCs `obj` belongs to (empty: none), references resolved through `lookup`."""

    def of_network(name: object) -> set[str]:
        network = lookup("Network", str(name)) if name else None
        vpc = network.spec.get("vpc") if network else None
        return {str(vpc)} if vpc else set()

    def of_automaton(name: object) -> set[str]:
        automaton = lookup("Automaton", str(name)) if name else None
        return of_network(automaton.spec.get("network")) if automaton else set()

    if obj.kind == "Vpc":
        return {obj.name}
    if obj.kind == "Network":
        return {str(obj.spec["vpc"])} if obj.spec.get("vpc") else set()
    if obj.kind == "Automaton":
        return of_network(obj.spec.get("network"))
    if obj.kind == "Instance":
        found = of_automaton(obj.spec.get("automaton"))
        return found or ({str(obj.status["vpc"])} if obj.status.get("vpc") else set())
    if obj.kind == "Composition":
        found = set()
        for link in obj.spec.get("links", []):
            if isinstance(link, dict):
                for end in ("from", "to", "from_"):
                    found |= of_automaton(link.get(end))
        return found
    return set()


def within(principal: Principal, vpcs: set[str]) -> bool:
    """Whether `principal` may reach objects of `vpcs` (a tenant: some, all of them its own)."""
    if not principal.tenant:
        return True
    return bool(vpcs) and vpcs <= principal.vpcs


def index(objects: Iterable[Object]) -> Lookup:
    """A lookup over these objects (the last of a (kind, name) wins)."""
    found = {(o.kind, o.name): o for o in objects}
    return lambda kind, name: found.get((kind, name))


async def context_lookup(ctx: Context) -> Lookup:
    """A lookup over the networks and automatons there are now (what VPCs are found through)."""
    return index([*await ctx.list("Network"), *await ctx.list("Automaton")])


async def visible(ctx: Context, principal: Principal, objs: list[Object]) -> list[Object]:
    """The objects `principal` may see."""
    if not principal.tenant:
        return objs
    lookup = await context_lookup(ctx)
    return [o for o in objs if within(principal, vpcs_of(o, lookup))]


def refused(principal: Principal, obj: Object, what: str) -> ApiError:
    return ApiError(
        403,
        f'forbidden: {obj.kind} "{obj.name}" is outside the VPCs of this tenant token '
        f"({', '.join(sorted(principal.vpcs))}); cannot {what} it",
    )


async def check_reach(ctx: Context, principal: Principal, obj: Object, what: str) -> None:
    """A 403 unless `principal` may act on `obj` (`what`: the verb, for the message)."""
    if principal.tenant and not within(principal, vpcs_of(obj, await context_lookup(ctx))):
        raise refused(principal, obj, what)


async def check_visible(
    ctx: Context, principal: Principal, obj: Object | None, kind: str, name: str
) -> Object:
    """The object if it exists and `principal` may see it, else the 404 of a missing one."""
    if obj is None or not await visible(ctx, principal, [obj]):
        raise ApiError(404, f'{kind} "{name}" not found')
    return obj


def check_apply(principal: Principal, new: list[Object], existing: dict[tuple[str, str], Object]) -> None:
    """A tenant's manifest, all or nothing: every object (as it is and as it would be) in
    its VPCs, and no automaton running as root. Raises the 403 of the first that is not."""
    if not principal.tenant:
        return
    before = index(existing.values())
    after = index([*existing.values(), *new])
    for obj in new:
        if obj.kind not in SCOPED_KINDS:
            raise ApiError(403, f'forbidden: a tenant token cannot change {obj.kind} objects ("{obj.name}")')
        old = existing.get((obj.kind, obj.name))
        if not within(principal, vpcs_of(obj, after)) or (
            old is not None and not within(principal, vpcs_of(old, before))
        ):
            raise refused(principal, obj, "apply")
        if obj.kind == "Automaton" and obj.spec.get("user") == "root":
            raise ApiError(
                403,
                f'forbidden: Automaton "{obj.name}": user: root is for admins only (it gives up isolation)',
            )


def redact(principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
    """An object as a tenant may read it: nothing of the hosts' underlay."""
    if not principal.tenant or data.get("kind") != "Instance":
        return data
    status = {k: v for k, v in data.get("status", {}).items() if k not in ("network_hosts",)}
    return {**data, "status": status}
