"""How a plugin adds an RPC service to the agent (entry point group `autonet.agent_plugins`).

An entry point names a callable `setup(api: AgentPluginAPI) -> None`; it may add gRPC
services (`api.add_service`) and run code at start and stop (`api.on_start`,
`api.on_stop`). The core agent knows nothing more of its plugins.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

GROUP = "autonet.agent_plugins"


@dataclass
class AgentPluginAPI:
    host: str
    state_dir: str
    host_agent: Any  # the HostAgent: plugins may read the instance table
    services: list[Callable[[Any], None]] = field(default_factory=list)
    start_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    stop_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def add_service(self, register: Callable[[Any], None]) -> None:
        """`register(server)` adds a servicer, e.g. `add_FooServicer_to_server(s, server)`."""
        self.services.append(register)

    def on_start(self, hook: Callable[[], Awaitable[None]]) -> None:
        self.start_hooks.append(hook)

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        self.stop_hooks.append(hook)


def load(api: AgentPluginAPI) -> list[str]:
    loaded = []
    for entry in entry_points(group=GROUP):
        try:
            entry.load()(api)
            loaded.append(entry.name)
        except Exception:
            log.exception("agent plugin %s failed to load", entry.name)
    return loaded
