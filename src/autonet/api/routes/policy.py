"""Composition security as a user asks about it: may A talk to B, and what a composition opens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from autonet.api.state import API, ApiError, State
from autonet.control.context import Context
from autonet.model import policy
from autonet.model.objects import Object

router = APIRouter(prefix=API)


async def automaton_index(ctx: Context) -> dict[str, Object]:
    return {a.name: a for a in await ctx.list("Automaton") if not a.metadata.deleting}


@router.get("/policy/check")
async def policy_check(
    source: str, target: str, state: State, port: int | None = None, transport: str | None = None
) -> dict[str, Any]:
    ctx = state.ctx
    allowed, reason = policy.check(
        source, target, await ctx.list("Composition"), await automaton_index(ctx), port, transport
    )
    return {"from": source, "to": target, "port": port, "allowed": allowed, "reason": reason}


@router.get("/compositions/{name}/matrix")
async def composition_matrix(name: str, state: State) -> list[dict[str, Any]]:
    composition = await state.ctx.get("Composition", name)
    if composition is None:
        raise ApiError(404, f'Composition "{name}" not found')
    return [vars(o) for o in policy.openings([composition], await automaton_index(state.ctx))]
