"""A running instance, through its host's agent: exec a command in it, its logs, its flows.

Each answer needs the agent of the instance's host: an instance not wired yet is a 409,
an agent that cannot be reached a 503.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel, ConfigDict, Field

from autonet.agent.rpc import agent_pb2 as pb
from autonet.api import scope
from autonet.api.auth import ALLOW_OPERATE, ALLOW_READ, Principal
from autonet.api.state import API, ApiError, State, ndjson
from autonet.control.agents import AgentClient
from autonet.control.context import Context
from autonet.control.outcomes import Fail, Retry
from autonet.model.objects import Object

router = APIRouter(prefix=API)

FLOW_COUNTERS = ("flow_id", "tx_bytes", "tx_packets", "rx_bytes", "rx_packets")


class ExecBody(BaseModel):
    # No `user`: a command runs as the instance's own user; a body naming one is a 422.
    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1)
    stdin: str = ""  # base64
    timeout: float = 0.0


async def placed_instance(ctx: Context, name: str, caller: Principal, what: str) -> Object:
    inst = await ctx.get("Instance", name)
    if inst is None:
        raise ApiError(404, f'Instance "{name}" not found')
    await scope.check_reach(ctx, caller, inst, what)
    if not inst.status.get("host") or inst.state in ("Init", "Scheduled", "Addressed"):
        raise ApiError(409, f'Instance "{name}" is not wired yet (state {inst.state})')
    return inst


@contextmanager
def unavailable() -> Iterator[None]:
    """An agent that cannot answer (Retry, Fail) makes a 503."""
    try:
        yield
    except (Retry, Fail) as exc:
        raise ApiError(503, str(exc)) from None


async def agent_of(ctx: Context, inst: Object) -> AgentClient:
    with unavailable():
        return await ctx.agent_for(inst.status["host"])


@router.post("/instances/{name}/exec")
async def exec_in(
    name: str, body: ExecBody, state: State, caller: Annotated[Principal, Depends(ALLOW_OPERATE)]
) -> StreamingResponse:
    inst = await placed_instance(state.ctx, name, caller, "exec in")
    agent = await agent_of(state.ctx, inst)
    request = pb.ExecRequest(
        instance_uid=inst.uid,
        command=body.command,
        stdin=base64.b64decode(body.stdin),
        timeout=body.timeout,
    )

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for chunk in agent.exec(request):
                which = chunk.WhichOneof("payload")
                if which == "exit_code":
                    line: dict[str, Any] = {"exit": chunk.exit_code}
                else:
                    line = {which: base64.b64encode(getattr(chunk, which)).decode()}
                yield ndjson(line)
        except Exception as exc:  # the stream has started: report in-band
            yield ndjson({"error": f"exec failed: {exc}"})

    return StreamingResponse(stream(), media_type="application/x-ndjson")


@router.get("/instances/{name}/logs")
async def logs(
    name: str,
    state: State,
    caller: Annotated[Principal, Depends(ALLOW_READ)],
    tail: int = 0,
    follow: bool = False,
) -> Response:
    if tail < 0:
        raise ApiError(422, "tail: must be >= 0")
    inst = await placed_instance(state.ctx, name, caller, "read the logs of")
    agent = await agent_of(state.ctx, inst)
    request = pb.LogsRequest(instance_uid=inst.uid, tail_lines=tail, follow=follow)
    if not follow:
        with unavailable():
            reply = await agent.call("Logs", request)
        return PlainTextResponse(reply.data.decode(errors="replace"))
    chunks = agent.follow_logs(request)
    with unavailable():
        # The first reply comes at once: an unknown instance is still an HTTP error.
        first = await anext(chunks, b"")

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        except Retry:
            return  # the agent went away: end the stream as `tail -f` ends on EOF
        finally:
            await chunks.aclose()

    return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")


@router.get("/instances/{name}/flows")
async def flows(
    name: str, state: State, caller: Annotated[Principal, Depends(ALLOW_READ)]
) -> list[dict[str, Any]]:
    inst = await placed_instance(state.ctx, name, caller, "read the flows of")
    agent = await agent_of(state.ctx, inst)
    with unavailable():
        reply = await agent.call("Flows", pb.InstanceRef(instance_uid=inst.uid))
    rows = [
        MessageToDict(f, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        for f in reply.flows
    ]
    for row in rows:  # 64-bit counters come as strings in protobuf's JSON mapping
        for field in FLOW_COUNTERS:
            row[field] = int(row[field])
    return rows
