"""Schemathesis over the API's own OpenAPI, with an admin token: no input makes a 5xx.

In-process (the ASGI app over a SQLite store, no runner, no agents: the routes that need
an agent answer 409/404/503, never 500), as over TCP: the requests carry the bearer
token, so authentication runs on every one. Streaming routes (watch, load stream) never
end by design and are left out.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from autonet.api import auth
from autonet.api.app import create_app
from autonet.control.context import Context
from autonet.control.registry import PluginAPI, load_plugins
from autonet.store import open_store

SEED: list[dict[str, Any]] = [
    {"kind": "Vpc", "name": "blue", "spec": {"cidrs": ["100.80.0.0/16"]}},
    {"kind": "Network", "name": "blue-a", "spec": {"vpc": "blue", "cidrs": ["100.80.1.0/24"]}},
    {"kind": "Automaton", "name": "web", "spec": {"network": "blue-a", "command": ["sleep", "1"]}},
]


STORE_DIR = Path(tempfile.mkdtemp(prefix="an-fuzz-"))  # made at import: schemathesis needs the app then


@pytest.fixture(scope="module", autouse=True)
def _remove_the_store() -> Iterator[None]:
    yield
    shutil.rmtree(STORE_DIR, ignore_errors=True)


def build() -> tuple[Any, str]:
    """The app over a fresh store with a few objects, and an admin token for it."""
    store = open_store(f"sqlite:///{STORE_DIR / 'store.db'}")
    plugins = load_plugins(PluginAPI(), only=["builtin"])
    app = create_app(Context(store=store, kinds=plugins.kinds), plugins)

    async def seed() -> str:
        from autonet.model.objects import Object
        from autonet.store import Put

        await store.commit([Put(d["kind"], d["name"], Object(**d).to_data(), 0) for d in SEED])
        made = await auth.create_token(store, "admin", [], None)
        return str(made["token"])

    return app, asyncio.run(seed())


APP, TOKEN = build()
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers=HEADERS).exclude(
    path_regex=r"/(watch|load/stream)$"
)


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=HEADERS, checks=[not_a_server_error])
