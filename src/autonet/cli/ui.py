"""`autonet ui`: the dashboard of a lab (or any API the CLI reaches) on 127.0.0.1.

A lab's API listens on a Unix socket that a browser cannot open, so `autonet ui` serves
on 127.0.0.1:PORT and forwards `/ui/...` and `/api/v1/...` (GET only: the dashboard
reads) to the API with the CLI's own endpoint and credentials. Another local user may
reach that port, so the forwarder has its own session token: it prints the URL with the
token in its fragment (`#token=...`, which the browser never sends in a request line or
a log), and refuses every API request without it (401), as the controller's TCP API does.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Annotated

import httpx
import uvicorn
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from autonet.cli.client import Client

HOST = "127.0.0.1"
FORWARDED_HEADERS = ("content-type", "cache-control")

app = FastAPI(title="autonet ui forwarder", docs_url=None, redoc_url=None, openapi_url=None)


class Forwarder:
    """The forwarder's state: where the API is, and the session token it checks."""

    def __init__(self, client: Client, token: str) -> None:
        self.client = client
        self.token = token

    def authorized(self, authorization: str | None) -> bool:
        expected = f"Bearer {self.token}"
        return authorization is not None and secrets.compare_digest(authorization, expected)

    async def get(self, path: str, request: Request) -> Response:
        def send() -> httpx.Response:
            return self.client.http.get(path, params=dict(request.query_params))

        try:
            reply = await asyncio.to_thread(send)
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"cannot reach the API at {self.client.address}: {exc}"}, 502)
        headers = {k: v for k, v in reply.headers.items() if k.lower() in FORWARDED_HEADERS}
        return Response(reply.content, status_code=reply.status_code, headers=headers)


def forwarder(request: Request) -> Forwarder:
    found = request.app.state.forwarder
    assert isinstance(found, Forwarder)
    return found


@app.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@app.get("/ui/{path:path}")
async def page(path: str, request: Request) -> Response:
    """The dashboard's files: no data in them, so no token needed."""
    return await forwarder(request).get(f"/ui/{path}", request)


@app.get("/api/v1/{path:path}")
async def api_get(
    path: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """What the dashboard reads, for a holder of the session token."""
    ui = forwarder(request)
    if not ui.authorized(authorization):
        return JSONResponse(
            {"error": "this dashboard wants the token printed by `autonet ui`"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return await ui.get(f"/api/v1/{path}", request)


def url(port: int, token: str) -> str:
    return f"http://{HOST}:{port}/ui/#token={token}"


def serve(client: Client, port: int, announce: bool = True) -> None:
    """Serve the dashboard until interrupted; print its URL first."""
    token = secrets.token_urlsafe(24)
    app.state.forwarder = Forwarder(client, token)
    config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started and announce:
            bound = server.servers[0].sockets[0].getsockname()[1] if port == 0 else port
            print(f"autonet dashboard: {url(bound, token)}", flush=True)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
