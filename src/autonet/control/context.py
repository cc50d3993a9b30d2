"""What a handler gets besides its object: the store, the cache, the kinds, the agents, locks.

Reads (`get`, `list`, `cache.by`) are served from the controller's object cache once it
has loaded (control/cache.py), from the store before that; writes go to the store,
through a wrapper that keeps the cache current with them and checks each status
written against its kind's status model (model/status.py).

With several controllers (etcd), `shards` says which objects are this controller's
(control/shards.py); the context wires it to the write path (a fenced write drops the
shard) and to the agent clients (no call from a handler that may not act). Alone
(SQLite) it is None: everything is this controller's.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from autonet.control.agents import AgentClient, AgentClients
from autonet.control.cache import CachedWrites, ObjectCache
from autonet.control.leases import LeasePools
from autonet.control.liveness import HostLiveness
from autonet.control.load import LoadTable
from autonet.control.operators.network import VpcSyncer
from autonet.control.outcomes import Retry
from autonet.control.shards import HOSTS, Shards
from autonet.control.stats import Timings
from autonet.model.kinds import KindRegistry
from autonet.model.objects import Object
from autonet.store import Store


@dataclass
class Context:
    store: Store
    kinds: KindRegistry
    cache: ObjectCache = field(init=False)
    agents: AgentClients = field(default_factory=AgentClients)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("autonet.control"))
    # The controller's shared services, one each per controller:
    liveness: HostLiveness = field(default_factory=HostLiveness)  # heartbeats, in memory
    load: LoadTable = field(default_factory=LoadTable)  # the agents' load samples
    timings: Timings = field(default_factory=Timings)  # step durations, for /api/v1/stats
    leases: LeasePools = field(default_factory=LeasePools)  # the lowest-free allocators
    network: VpcSyncer = field(init=False)  # the network operator: VPC syncs to hosts
    extras: dict[str, Any] = field(default_factory=dict)  # plugins' own per-controller state
    shards: Shards | None = None  # several controllers: which objects are this one's
    _locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))

    def __post_init__(self) -> None:
        if isinstance(self.store, CachedWrites):
            self.cache = self.store.cache
        else:
            self.cache = ObjectCache(self.store)
            self.store = CachedWrites(self.store, self.cache, self.kinds)
        self.cache.subscribe_deletes(self.leases.deleted)
        if self.shards is not None:
            assert isinstance(self.store, CachedWrites) and self.shards.cache is self.cache
            self.store.fenced.append(self.shards.fenced)
            self.agents.gate = self.shards.gate
            self.shards.subscribe_gained(self._gained)
        self.network = VpcSyncer(self)

    def _gained(self, shards: set[str], keys: set[tuple[str, str]]) -> None:
        if HOSTS in shards:  # hosts nobody heard from yet get a full timeout from now
            self.liveness.grace()

    def acts_on(self, obj: Object) -> bool:
        """Whether this controller is the one to act on `obj` now: always, alone; with
        several controllers, when it owns the object's shard and acts (control/shards.py).
        Handlers run only where this holds; a plugin's background loop asks it itself."""
        return self.shards is None or self.shards.may_handle(obj)

    def lock(self, key: str) -> asyncio.Lock:
        """A controller-local lock: serialises work that would otherwise only race on CAS."""
        return self._locks[key]

    async def get(self, kind: str, name: str) -> Object | None:
        if self.cache.ready:
            return self.cache.get(kind, name)
        record = await self.store.get(kind, name)
        return None if record is None else Object.from_data(record.data, record.revision)

    async def list(self, kind: str, prefix: str = "") -> list[Object]:
        if self.cache.ready:
            return self.cache.list(kind, prefix)
        return [Object.from_data(r.data, r.revision) for r in await self.store.list(kind, prefix)]

    async def by(self, kind: str, index: str, key: str) -> builtins.list[Object]:
        """Objects of `kind` whose `index` (control/cache.py) is `key`, e.g. Instances by host."""
        if self.cache.ready:
            return self.cache.by(kind, index, key)
        wanted = self.cache.index_function(kind, index)
        return [o for o in await self.list(kind) if wanted(o) == key]

    async def agent_for(self, host_name: str) -> AgentClient:
        host = await self.get("Host", host_name)
        if host is None:
            raise Retry(f"host {host_name} is not registered")
        return self.agents.get(host.name, host.spec["rpc"])
