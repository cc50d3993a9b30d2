"""Attachments: containers a runtime made, attached to an external automaton (autonet-cni).

`POST /api/v1/automatons/NAME/attachments` makes the container an instance of the
automaton (named `NAME-<ordinal>` like any other, with `spec.attachment` saying where
the container is); asking again for the same container answers the same instance, as
CNI's ADD must be safe to repeat. `GET .../attachments/CONTAINER` is that instance,
`DELETE .../attachments/CONTAINER` sends it to Terminating, and answers as well when
there is nothing to delete (CNI's DEL is idempotent).

Only a host's own certificate (for containers on that host) or an admin may call them:
an attachment names a namespace path on a host, and a tenant naming another tenant's
container namespace would pull it into its own VPC (docs/security.md).
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from autonet.api import scope
from autonet.api.auth import ALLOW_ATTACH, Principal
from autonet.api.routes.objects import decorate, mark_deleting
from autonet.api.state import API, ApiError, ApiState, State
from autonet.model.kinds import Attachment
from autonet.model.objects import Metadata, Object
from autonet.store import Put

router = APIRouter(prefix=API)


Attacher = Annotated[Principal, Depends(ALLOW_ATTACH)]


def check_host(caller: Principal, host: str, what: str) -> None:
    """A host's certificate acts for containers on that host only."""
    if caller.role == "host" and caller.host != host:
        raise ApiError(
            403, f'forbidden: the certificate of host "{caller.host}" cannot {what} on host "{host}"'
        )


async def external_automaton(state: ApiState, caller: Principal, name: str, what: str) -> Object:
    automaton = await scope.check_visible(
        state.ctx, caller, await state.ctx.get("Automaton", name), "Automaton", name
    )
    await scope.check_reach(state.ctx, caller, automaton, what)
    if not automaton.spec.get("external"):
        raise ApiError(
            422, f'Automaton "{name}" is not external (spec.external: true takes attached containers)'
        )
    return automaton


async def attached(state: ApiState, automaton: str, container_id: str) -> Object | None:
    for inst in await state.ctx.by("Instance", "automaton", automaton):
        if (inst.spec.get("attachment") or {}).get("container_id") == container_id:
            return inst
    return None


@router.post("/automatons/{name}/attachments")
async def attach(name: str, body: Attachment, state: State, caller: Attacher) -> dict[str, Any]:
    """Attach a container (its namespace path, its host) as an instance of `name`."""
    check_host(caller, body.host, "attach a container")
    async with state.apply_lock:
        automaton = await external_automaton(state, caller, name, "attach a container to")
        host = await state.ctx.get("Host", body.host)
        if host is None:
            raise ApiError(422, f'host "{body.host}" is not a host of this cluster')
        found = await attached(state, name, body.container_id)
        if found is not None:
            if (
                found.spec["attachment"]["netns"] != body.netns
                or found.spec["attachment"]["host"] != body.host
            ):
                raise ApiError(
                    409, f"container {body.container_id} is attached already, as {found.name}, elsewhere"
                )
            return (await decorate(state.ctx, [found]))[0]
        used = {int(i.spec["ordinal"]) for i in await state.ctx.by("Instance", "automaton", name)}
        ordinal = next(n for n in itertools.count() if n not in used)
        inst = Object(
            kind="Instance",
            name=f"{name}-{ordinal}",
            metadata=Metadata(owner=automaton.ref),
            spec={
                "automaton": name,
                "ordinal": ordinal,
                "attachment": body.model_dump(mode="json"),
            },
            status={"state": "Init"},
        )
        state.kinds["Instance"].validate_spec(inst.name, inst.spec)
        await state.ctx.store.commit([Put(inst.kind, inst.name, inst.to_data(), 0)])
    created = await state.ctx.get("Instance", inst.name)
    return (await decorate(state.ctx, [created or inst]))[0]


@router.get("/automatons/{name}/attachments/{container_id}")
async def get_attachment(name: str, container_id: str, state: State, caller: Attacher) -> dict[str, Any]:
    await external_automaton(state, caller, name, "read")
    found = await attached(state, name, container_id)
    if found is None:
        raise ApiError(404, f"container {container_id} is not attached to {name}")
    check_host(caller, found.spec["attachment"]["host"], "read a container")
    return scope.redact(caller, (await decorate(state.ctx, [found]))[0])


@router.delete("/automatons/{name}/attachments/{container_id}")
async def detach(name: str, container_id: str, state: State, caller: Attacher) -> dict[str, Any]:
    """Detach a container: its instance goes (and with it the veth, the addresses and
    the agent's name for the namespace; the runtime's namespace stays the runtime's)."""
    await external_automaton(state, caller, name, "detach a container from")
    found = await attached(state, name, container_id)
    if found is None:
        return {"instance": None, "action": "none"}
    check_host(caller, found.spec["attachment"]["host"], "detach a container")
    await mark_deleting(state.ctx, found)
    return {"instance": found.name, "action": "deleting"}
