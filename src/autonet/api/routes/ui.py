"""The live dashboard: static HTML, CSS and JavaScript served with the package at `/ui`.

The page itself holds no data: everything it shows comes from the API (objects, load,
flows, events, the graph), fetched by the page with the same credentials as any other
client (a bearer token from the URL's `#token=` fragment or typed in), so the dashboard
is behind the API's authentication; the files themselves are public (api/auth.py). No build step: the files are plain, in api/ui/.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse, Response

from autonet.api.auth import ALLOW_PUBLIC
from autonet.api.state import ApiError

router = APIRouter(dependencies=[Depends(ALLOW_PUBLIC)])

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def asset(name: str) -> bytes:
    return files("autonet.api").joinpath("ui", name).read_bytes()


@router.get("/ui", include_in_schema=False)
async def dashboard_root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/", include_in_schema=False)
async def dashboard() -> Response:
    return Response(asset("index.html"), media_type=ASSETS["index.html"])


@router.get("/ui/{name}", include_in_schema=False)
async def dashboard_asset(name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, f"/ui/{name}: no such file")
    return Response(asset(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
