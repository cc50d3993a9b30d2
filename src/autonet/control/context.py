"""What a handler gets besides its object: the store, the kinds, the agents, locks."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from autonet.control.agents import AgentClient, AgentClients
from autonet.control.outcomes import Retry
from autonet.model.kinds import KindRegistry
from autonet.model.objects import Object
from autonet.store import Store


@dataclass
class Context:
    store: Store
    kinds: KindRegistry
    agents: AgentClients = field(default_factory=AgentClients)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("autonet.control"))
    extras: dict[str, Any] = field(default_factory=dict)  # per-controller singletons of operators
    _locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))

    def lock(self, key: str) -> asyncio.Lock:
        """A controller-local lock: serialises work that would otherwise only race on CAS."""
        return self._locks[key]

    async def get(self, kind: str, name: str) -> Object | None:
        record = await self.store.get(kind, name)
        return None if record is None else Object.from_data(record.data, record.revision)

    async def list(self, kind: str, prefix: str = "") -> list[Object]:
        return [Object.from_data(r.data, r.revision) for r in await self.store.list(kind, prefix)]

    async def agent_for(self, host_name: str) -> AgentClient:
        host = await self.get("Host", host_name)
        if host is None:
            raise Retry(f"host {host_name} is not registered")
        return self.agents.get(host.name, host.spec["rpc"])
