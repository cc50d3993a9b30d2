"""What the dashboard shows besides the objects: recent events and the composition graph.

`GET /api/v1/events?after=SEQ` returns the state changes after event SEQ (control/events.py);
`GET /api/v1/graph?format=dot|svg` the composition graph (model/graph.py), the same one
`autonet graph` draws, rendered as SVG by Graphviz on the controller.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from autonet.api import scope
from autonet.api.routes.objects import Reader, decorate
from autonet.api.state import API, ApiError, State
from autonet.model import graph

router = APIRouter(prefix=API)

GRAPH_FORMATS = {"dot": "text/vnd.graphviz", "svg": "image/svg+xml"}


@router.get("/events")
async def recent_events(
    state: State,
    caller: Reader,
    after: Annotated[int, Query(ge=0, description="Only events numbered above this")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Recent state changes of objects (oldest first) and the number of the last one. A
    tenant sees those of the objects it can see now (not of deleted ones)."""
    log = state.events
    events = log.after(after, limit)
    if caller.tenant:
        shown = []
        for event in events:
            obj = await state.ctx.get(event.kind, event.name)
            if obj is not None and await scope.visible(state.ctx, caller, [obj]):
                shown.append({**event.as_dict(), "host": ""})  # no hosts for tenants
        return {"events": shown, "last": log.seq}
    return {"events": [event.as_dict() for event in events], "last": log.seq}


@router.get("/graph")
async def composition_graph(
    state: State, caller: Reader, format: Annotated[str, Query(description="dot or svg")] = "svg"
) -> Response:
    """The composition graph: automatons with instances per host, links, VPCs, networks
    (a tenant's: only its VPCs, and no hosts)."""
    if format not in GRAPH_FORMATS:
        raise ApiError(422, f"format: must be one of {', '.join(GRAPH_FORMATS)}")
    objects = {
        plural: await decorate(state.ctx, await scope.visible(state.ctx, caller, await state.ctx.list(kind)))
        for kind, plural in graph.KIND_NAMES
        if not (caller.tenant and kind == "Host")
    }
    dot_text = graph.build_dot(objects)
    try:
        body = await asyncio.to_thread(graph.render, dot_text, format)
    except graph.GraphError as exc:
        raise ApiError(503, str(exc)) from None
    return Response(body, media_type=GRAPH_FORMATS[format])
