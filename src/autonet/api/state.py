"""What every route shares: the controller's context and plugins, reached through a
typed dependency (`state: State` in a route's signature), and the API's error.

`create_app` puts one `ApiState` on `app.state`; routes never close over it, so each
route is a plain module-level function that a reader can follow.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from autonet.control.context import Context
from autonet.control.events import EventLog
from autonet.control.registry import PluginAPI
from autonet.model.errors import ValidationError
from autonet.model.kinds import KindInfo, KindRegistry

API = "/api/v1"


class ApiError(Exception):
    """An answer `{"error": message}` with an HTTP status (4xx, 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Identity:
    """This controller as it presents itself: its member id and its API endpoints."""

    id: str
    endpoints: tuple[str, ...] = ()


@dataclass
class ApiState:
    ctx: Context
    plugins: PluginAPI
    identity: Identity = field(default_factory=lambda: Identity("controller"))
    # Applies and scales run one at a time: each validates against all objects first.
    apply_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    events: EventLog = field(init=False)  # recent state changes, fed by the object cache

    def __post_init__(self) -> None:
        self.events = EventLog(self.ctx.cache)

    @property
    def kinds(self) -> KindRegistry:
        return self.plugins.kinds

    def resolve(self, word: str) -> KindInfo:
        """The kind a user's word names (name, plural or alias), or a 404."""
        try:
            return self.kinds.resolve(word)
        except ValidationError as exc:
            raise ApiError(404, str(exc)) from None


async def api_state(request: Request) -> ApiState:
    """The app's shared state (async: FastAPI runs a plain `def` dependency in a thread)."""
    state = request.app.state.autonet
    assert isinstance(state, ApiState)
    return state


State = Annotated[ApiState, Depends(api_state)]


def ndjson(item: Any) -> bytes:
    """One line of a newline-delimited JSON stream."""
    return (json.dumps(item) + "\n").encode()
