"""API tokens: `POST /api/v1/tokens` (the secret is in this answer only), list, revoke.

Admin only (an admin token, or root on the Unix socket). See api/auth.py.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from autonet.api import auth
from autonet.api.auth import ALLOW_ADMIN, Principal
from autonet.api.state import API, State

router = APIRouter(prefix=API)
Admin = Annotated[Principal, Depends(ALLOW_ADMIN)]


class TokenRequest(BaseModel):
    role: str
    vpcs: list[str] = Field(default_factory=list, max_length=1000)
    ttl: str | None = None  # 30s, 15m, 1h, 7d, 2w; none: it does not expire


@router.post("/tokens")
async def create_token(body: TokenRequest, state: State, caller: Admin) -> dict[str, Any]:
    return await auth.create_token(state.ctx.store, body.role, body.vpcs, body.ttl)


@router.get("/tokens")
async def list_tokens(state: State, caller: Admin) -> list[dict[str, Any]]:
    return await auth.list_tokens(state.ctx.store)


@router.delete("/tokens/{token_id}")
async def revoke_token(token_id: str, state: State, caller: Admin) -> dict[str, Any]:
    await auth.revoke_token(state.ctx.store, token_id)
    return {"revoked": token_id}
