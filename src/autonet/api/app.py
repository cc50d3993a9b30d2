"""The controller's REST API: the app, its shared state and its routers.

Routes live in `api/routes/`, one module and one `APIRouter` per resource (objects,
policy, hosts, instances, Overwatch, measurements, controllers, events and
graph, the dashboard, container attachments); they reach the controller's context
and plugins through the `State` dependency (api/state.py), never by closing over them.
Every error is JSON `{"error": "<one line>"}` with a 4xx (or 503) status, so that the
CLI can print it as is.

Who may call what: api/auth.py (principals, tokens, one `Rule` per route) and
api/scope.py (a tenant's VPCs).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from autonet.api.auth import Authenticate
from autonet.api.routes import (
    attachments,
    controllers,
    hosts,
    instances,
    metrics,
    objects,
    overwatch,
    policy,
    tokens,
    ui,
    views,
)
from autonet.api.state import ApiError, ApiState, Identity
from autonet.control.context import Context
from autonet.control.registry import PluginAPI
from autonet.model.errors import ValidationError

ROUTERS = (
    metrics.router,
    objects.router,
    policy.router,
    instances.router,
    hosts.router,
    overwatch.router,
    controllers.router,
    tokens.router,
    views.router,
    attachments.router,
    ui.router,
)


async def api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=422)


def create_app(ctx: Context, plugins: PluginAPI, identity: Identity | None = None) -> FastAPI:
    app = FastAPI(
        title="autonet",
        version="0.1.0",
        description="The autonet controller API: objects, their pipeline states, instances.",
    )
    app.state.autonet = ApiState(ctx, plugins) if identity is None else ApiState(ctx, plugins, identity)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ValidationError, validation_error)
    for router in ROUTERS:
        app.include_router(router)
    # Every request is authenticated before any route (deny by default: api/auth.py);
    # the Unix socket's server wraps the app with auth.local (root).
    app.add_middleware(Authenticate)
    return app
