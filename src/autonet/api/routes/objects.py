"""Objects: the kinds, apply (all-or-nothing), get, list, delete, watch, and scale.

Writes go through the store's compare-and-swap transactions: an apply either commits
every object of the manifest or none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from autonet.api import scope
from autonet.api.auth import ALLOW_READ, ALLOW_WRITE, Principal
from autonet.api.state import API, ApiError, ApiState, State, ndjson
from autonet.control.context import Context
from autonet.model import manifest
from autonet.model.kinds import FAILED, INIT, LOST, PROVISIONED, TERMINATING
from autonet.model.objects import Object
from autonet.store import Conflict, Put

Reader = Annotated[Principal, Depends(ALLOW_READ)]
Writer = Annotated[Principal, Depends(ALLOW_WRITE)]

router = APIRouter(prefix=API)


class Documents(BaseModel):
    documents: list[dict[str, Any]]


class ScaleRequest(BaseModel):
    replicas: int = Field(ge=0, le=10_000)


async def user_objects(state: ApiState) -> list[Object]:
    found: list[Object] = []
    for info in state.kinds.all():
        found.extend(await state.ctx.list(info.name))
    return found


async def decorate(ctx: Context, objs: list[Object]) -> list[dict[str, Any]]:
    """Derived, read-only figures that a user expects next to the stored status."""
    out = []
    for obj in objs:
        data = obj.view()
        if obj.kind == "Automaton":
            # Instances on a lost host are counted apart: they are being replaced.
            mine = await ctx.by("Instance", "automaton", obj.name)
            states = Counter(i.state for i in mine)
            data["status"]["ready"] = states[PROVISIONED]
            data["status"]["instances"] = len(mine) - states[LOST]
            data["status"]["lost"] = states[LOST]
            data["status"]["failed"] = states[FAILED]
        elif obj.kind == "Host":
            data["status"]["instances"] = len(await ctx.by("Instance", "placed", obj.name))
        out.append(data)
    return out


async def mark_deleting(ctx: Context, obj: Object) -> None:
    if obj.metadata.deleting:
        return
    gone = obj.model_copy(deep=True)
    gone.metadata.deleting = True
    gone.status["state"] = TERMINATING
    gone.status["reason"] = ""
    await ctx.store.commit([Put(obj.kind, obj.name, gone.to_data(), obj.metadata.revision)])


@router.get("/kinds")
async def list_kinds(state: State, caller: Reader) -> list[dict[str, Any]]:
    return [
        {
            "kind": k.name,
            "plural": k.plural,
            "states": [s.state for s in k.pipeline],
            "done": sorted(k.done),
            "user_managed": k.user_managed,
        }
        for k in state.kinds.all()
    ]


@router.post("/apply")
async def apply(body: Documents, state: State, caller: Writer) -> dict[str, Any]:
    kinds, ctx = state.kinds, state.ctx
    async with state.apply_lock:
        existing = {(o.kind, o.name): o for o in await user_objects(state)}
        objs = manifest.validate(body.documents, kinds, existing.values(), state.plugins.validators)
        scope.check_apply(caller, objs, existing)  # all or nothing: before anything is written
        ops = []
        results = []
        for obj in objs:
            old = existing.get((obj.kind, obj.name))
            first = kinds[obj.kind].first_state()
            if old is None:
                obj.status = {"state": first, "reason": ""}
                ops.append(Put(obj.kind, obj.name, obj.to_data(), 0))
                action = "created"
            elif old.spec != obj.spec:
                obj = obj.with_status(state=first, reason="")
                ops.append(Put(obj.kind, obj.name, obj.to_data(), old.metadata.revision))
                action = "configured"
            else:
                action = "unchanged"
            results.append({"kind": obj.kind, "name": obj.name, "action": action})
        try:
            await ctx.store.commit(ops)
        except Conflict:
            raise ApiError(409, "a concurrent change touched these objects; apply again") from None
        return {"results": results, "revision": await ctx.store.revision()}


@router.post("/delete")
async def delete_many(body: Documents, state: State, caller: Writer) -> dict[str, Any]:
    results = []
    targets = []
    for index, doc in enumerate(body.documents):
        if "kind" not in doc or "name" not in doc:
            raise ApiError(422, f"document {index + 1}: kind and name are required")
        info = state.resolve(str(doc["kind"]))
        obj = await state.ctx.get(info.name, str(doc["name"]))
        if obj is not None:  # all or nothing: every target is checked before any is marked
            await scope.check_reach(state.ctx, caller, obj, "delete")
        targets.append((info, str(doc["name"])))
    for info, name in targets:
        obj = await state.ctx.get(info.name, name)
        if obj is None:
            results.append({"kind": info.name, "name": name, "action": "not found"})
            continue
        await mark_deleting(state.ctx, obj)
        results.append({"kind": info.name, "name": name, "action": "deleting"})
    return {"results": results}


@router.delete("/objects/{kind}/{name}")
async def delete_one(kind: str, name: str, state: State, caller: Writer) -> dict[str, Any]:
    info = state.resolve(kind)
    if not info.user_managed and info.name not in ("Instance", "Host"):
        raise ApiError(422, f"{info.name} objects are managed by autonet and cannot be deleted")
    obj = await state.ctx.get(info.name, name)
    if obj is None:
        raise ApiError(404, f'{info.name} "{name}" not found')
    await scope.check_reach(state.ctx, caller, obj, "delete")
    await mark_deleting(state.ctx, obj)
    return {"results": [{"kind": info.name, "name": name, "action": "deleting"}]}


@router.get("/objects/{kind}")
async def list_objects(
    kind: str, state: State, caller: Reader, automaton: str | None = None
) -> list[dict[str, Any]]:
    """All objects of a kind (a tenant's: those of its VPCs); instances may be narrowed
    to one automaton's."""
    info = state.resolve(kind)
    if automaton is not None and info.name == "Instance":
        found = await state.ctx.by("Instance", "automaton", automaton)
    else:
        found = await state.ctx.list(info.name)
    shown = await decorate(state.ctx, await scope.visible(state.ctx, caller, found))
    return [scope.redact(caller, data) for data in shown]


@router.get("/objects/{kind}/{name}")
async def get_object(kind: str, name: str, state: State, caller: Reader) -> dict[str, Any]:
    info = state.resolve(kind)
    obj = await scope.check_visible(state.ctx, caller, await state.ctx.get(info.name, name), info.name, name)
    return scope.redact(caller, (await decorate(state.ctx, [obj]))[0])


@router.get("/watch")
async def watch(
    state: State, caller: Reader, revision: int = 0, kind: str | None = None
) -> StreamingResponse:
    """Changes as they come; only the kinds of the registry (never tokens), and for a
    tenant only its VPCs' objects."""
    kind_names = [state.resolve(kind).name] if kind else [info.name for info in state.kinds.all()]

    async def stream() -> AsyncIterator[bytes]:
        async for event in state.ctx.store.watch(revision, kind_names):
            if caller.tenant:
                obj = Object.from_data(event.record.data, event.record.revision)
                if not await scope.visible(state.ctx, caller, [obj]):
                    continue
            yield ndjson({"type": event.type, "revision": event.record.revision, "object": event.record.data})

    return StreamingResponse(stream(), media_type="application/x-ndjson")


@router.post("/automatons/{name}/scale")
async def scale(name: str, body: ScaleRequest, state: State, caller: Writer) -> dict[str, Any]:
    async with state.apply_lock:
        obj = await state.ctx.get("Automaton", name)
        if obj is None or obj.metadata.deleting:
            raise ApiError(404, f'Automaton "{name}" not found')
        await scope.check_reach(state.ctx, caller, obj, "scale")
        if obj.spec.get("replicas") != body.replicas:
            obj = obj.with_status(state=INIT, reason="")  # a copy: cached objects are shared
            obj.spec["replicas"] = body.replicas
            await state.ctx.store.commit([Put(obj.kind, obj.name, obj.to_data(), obj.metadata.revision)])
        return {"automaton": name, "replicas": body.replicas}
