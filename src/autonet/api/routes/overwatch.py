"""Overwatch, the external QoS manager: the load table (a snapshot, or a stream of them)
and an automaton's rate limits. See docs/overwatch.md."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from autonet.api import scope
from autonet.api.auth import ALLOW_CLUSTER_READ, ALLOW_WRITE, Principal
from autonet.api.state import API, ApiError, State, ndjson
from autonet.control import overwatch

router = APIRouter(prefix=API)
ClusterReader = Annotated[Principal, Depends(ALLOW_CLUSTER_READ)]


class QosBody(BaseModel):
    ingress_mbps: float | None = Field(default=None, gt=0)
    egress_mbps: float | None = Field(default=None, gt=0)
    priority: str = "normal"


@router.get("/load")
async def load_snapshot(state: State, caller: ClusterReader) -> dict[str, Any]:
    """Overwatch: the load of every instance, automaton and host (latest samples)."""
    return await state.ctx.load.snapshot(state.ctx)


@router.get("/load/stream")
async def load_stream(state: State, caller: ClusterReader) -> StreamingResponse:
    """Overwatch: one snapshot per line (NDJSON), each time new samples arrive."""
    table = state.ctx.load

    async def stream() -> AsyncIterator[bytes]:
        while True:
            async with table.updated:
                await table.updated.wait()
            yield ndjson(await table.snapshot(state.ctx))

    return StreamingResponse(stream(), media_type="application/x-ndjson")


@router.put("/automatons/{name}/qos")
async def put_qos(
    name: str, body: QosBody, state: State, caller: Annotated[Principal, Depends(ALLOW_WRITE)]
) -> dict[str, Any]:
    """Overwatch: set an automaton's rate limits; its running instances are reshaped."""
    automaton = await state.ctx.get("Automaton", name)
    if automaton is not None:
        await scope.check_reach(state.ctx, caller, automaton, "set the rate limits of")
    qos = body.model_dump(exclude_none=True)
    try:
        obj = await overwatch.set_qos(state.ctx, name, qos if len(qos) > 1 else None)
    except KeyError as exc:
        raise ApiError(404, str(exc.args[0])) from None
    return {"automaton": name, "qos": obj.spec.get("qos")}
