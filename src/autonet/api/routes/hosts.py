"""What agents tell the controller: registration, heartbeats, process events, load samples.

These routes record facts only (a host's registration and the boot ID its agent
reports, heartbeats in control/liveness.py, an agent's word that a process stopped, load
in control/load.py); the Host and Instance operators decide every state change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from autonet.api.auth import ALLOW_HOST, Principal
from autonet.api.state import API, ApiError, State
from autonet.control.context import Context
from autonet.control.operators.instances import process_stopped
from autonet.control.outcomes import Retry
from autonet.model.kinds import INIT
from autonet.model.objects import Object
from autonet.store import Conflict, Put

router = APIRouter(prefix=API)
# Over TCP only an agent certificate whose CN is the host (and only for itself); the
# Unix socket (root) for anything.
Agent = Annotated[Principal, Depends(ALLOW_HOST)]


class Registration(BaseModel):
    name: str
    underlay: str
    rpc: str
    tag: str
    capacity: int | None = None
    boot_id: str
    mtu: int = 1500
    hostname: str = ""


class ProcessEvent(BaseModel):
    instance_uid: str
    instance: str = ""
    process: str
    pid: int = 0
    last_exit: str = ""


class Heartbeat(BaseModel):
    boot_id: str
    instances: int = 0
    # Every process that is not running, each beat (level-triggered: a lost event is
    # corrected by the next beat; running ones are left out, so a beat stays small).
    processes: list[ProcessEvent] = Field(default_factory=list)
    # Per VPC router: the VPC's name and the number of the sync it holds.
    vpc_syncs: list[tuple[str, int]] = Field(default_factory=list)


class LoadSample(BaseModel):
    instances: list[dict[str, Any]]


async def stopped(ctx: Context, host: str, event: ProcessEvent) -> bool:
    why = event.last_exit or event.process
    try:
        return await process_stopped(ctx, host, event.instance_uid, event.instance, why)
    except Retry as exc:
        raise ApiError(409, exc.reason) from None


@router.post("/hosts/register")
async def register_host(body: Registration, state: State, caller: Agent) -> dict[str, Any]:
    ctx = state.ctx
    if caller.role == "host" and caller.host != body.name:
        raise ApiError(
            403, f'forbidden: the certificate of host "{caller.host}" cannot register host "{body.name}"'
        )
    spec: dict[str, Any] = {"underlay": body.underlay, "rpc": body.rpc, "tag": body.tag}
    if body.capacity is not None:
        spec["capacity"] = body.capacity
    spec = state.kinds["Host"].validate_spec(body.name, spec)
    ctx.liveness.beat(body.name)
    for _ in range(10):
        old = await ctx.get("Host", body.name)
        # Facts only: what the agent says of itself. A new host starts in Init; for a
        # known one, the Host operators judge (a new boot ID sends it through Init).
        host = old.model_copy(deep=True) if old else Object(kind="Host", name=body.name)
        host.spec = spec
        host.status.update(boot_id=body.boot_id, mtu=body.mtu, hostname=body.hostname)
        if old is None:
            host.status.update(state=INIT, reason="")
        try:
            await ctx.store.commit(
                [Put("Host", body.name, host.to_data(), old.metadata.revision if old else 0)]
            )
            return {"host": body.name, "state": host.state}
        except Conflict:
            continue
    raise ApiError(409, "host registration raced; try again")


@router.post("/hosts/{name}/heartbeat")
async def heartbeat(name: str, body: Heartbeat, state: State, caller: Agent) -> dict[str, Any]:
    """Liveness lives in memory; the Host is written only when its boot ID changes,
    and then only that fact: the Host operators decide what follows."""
    ctx = state.ctx
    ctx.liveness.beat(name)
    for _ in range(10):
        host = await ctx.get("Host", name)
        if host is None:
            raise ApiError(404, f'Host "{name}" is not registered')
        if host.status.get("boot_id") == body.boot_id:
            break
        rebooted = host.with_status(boot_id=body.boot_id)
        try:
            await ctx.store.commit([Put("Host", name, rebooted.to_data(), host.metadata.revision)])
            host = rebooted
            break
        except Conflict:
            continue
    else:
        raise ApiError(409, "heartbeat raced; try again")
    for row in body.processes:
        if row.process != "running":
            await stopped(ctx, name, row)
    ctx.network.held_by(name, body.vpc_syncs)
    return {"host": name, "state": host.state}


@router.post("/hosts/{name}/load")
async def ingest_load(name: str, body: LoadSample, state: State, caller: Agent) -> dict[str, Any]:
    await state.ctx.load.ingest(name, body.instances)
    return {"host": name, "instances": len(body.instances)}


@router.post("/hosts/{name}/events")
async def process_event(name: str, body: ProcessEvent, state: State, caller: Agent) -> dict[str, Any]:
    """A process stopped: its instance stops serving at once and waits to be ready again."""
    if body.process == "running" or not await stopped(state.ctx, name, body):
        return {"action": "none"}
    return {"action": "unready", "instance": body.instance}
