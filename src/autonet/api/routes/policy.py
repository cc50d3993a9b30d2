"""Composition security as a user asks about it: may A talk to B, and what a composition opens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from autonet.api import scope
from autonet.api.auth import ALLOW_READ, Principal
from autonet.api.state import API, State
from autonet.control.context import Context
from autonet.model import policy
from autonet.model.objects import Object

router = APIRouter(prefix=API)
Reader = Annotated[Principal, Depends(ALLOW_READ)]


async def automaton_index(ctx: Context) -> dict[str, Object]:
    return {a.name: a for a in await ctx.list("Automaton") if not a.metadata.deleting}


@router.get("/policy/check")
async def policy_check(
    source: str,
    target: str,
    state: State,
    caller: Reader,
    port: int | None = None,
    transport: str | None = None,
) -> dict[str, Any]:
    ctx = state.ctx
    if caller.tenant:  # both ends its own (an unknown one is answered by the check itself)
        for end in (source, target):
            if (automaton := await ctx.get("Automaton", end)) is not None:
                await scope.check_visible(ctx, caller, automaton, "Automaton", end)
    allowed, reason = policy.check(
        source, target, await ctx.list("Composition"), await automaton_index(ctx), port, transport
    )
    return {"from": source, "to": target, "port": port, "allowed": allowed, "reason": reason}


@router.get("/compositions/{name}/matrix")
async def composition_matrix(name: str, state: State, caller: Reader) -> list[dict[str, Any]]:
    found = await state.ctx.get("Composition", name)
    composition = await scope.check_visible(state.ctx, caller, found, "Composition", name)
    return [vars(o) for o in policy.openings([composition], await automaton_index(state.ctx))]
