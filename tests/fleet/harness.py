"""In-process controllers on one real etcd: each a member with its shards, object cache,
context and (optionally) runner, as `autonet controller --store etcd://...` wires them,
with handles to simulate what the tests need (a paused controller: its keepalives stop)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable

from autonet.control.cache import CachedWrites, ObjectCache
from autonet.control.context import Context
from autonet.control.members import Membership
from autonet.control.registry import PluginAPI
from autonet.control.relay import HeartbeatRelay
from autonet.control.runner import Runner
from autonet.control.shards import Shards
from autonet.model.kinds import builtin_kinds
from autonet.store import open_store
from autonet.store.etcd import EtcdStore

from ..store.etcd_server import EtcdServer

_roots = itertools.count()


def new_root(server: EtcdServer) -> str:
    """A store URL with a key root of its own: a fresh, empty store."""
    return f"etcd://{server.endpoint}/fleet/{next(_roots)}"


def open_etcd(url: str) -> EtcdStore:
    store = open_store(url)
    assert isinstance(store, EtcdStore)
    return store


def kinds_only() -> PluginAPI:
    """autonet's kinds without its operators (a test adds the ones it means)."""
    api = PluginAPI()
    for kind in builtin_kinds():
        api.add_kind(kind)
    return api


async def until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "") -> float:
    """Wait until ``check()`` holds; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return loop.time() - start
        assert loop.time() - start < timeout, f"not reached in {timeout} s: {what or check}"
        await asyncio.sleep(0.02)


class Node:
    """One controller of the fleet, in this process."""

    def __init__(self, url: str, member_id: str, api: PluginAPI | None = None, ttl: float = 2.0) -> None:
        self.id = member_id
        self.api = api or kinds_only()
        self.store = open_etcd(url)
        self.membership = Membership(self.store, member_id, (f"http://{member_id}.test:8080",), ttl)
        self.cache = ObjectCache(self.store)
        self.shards = Shards(self.store, self.membership, self.cache, grace=2.0)
        writes = CachedWrites(self.store, self.cache, self.api.kinds)
        self.ctx = Context(store=writes, kinds=self.api.kinds, shards=self.shards)
        self.ctx.extras["node"] = self
        self.runner = Runner(self.ctx, self.api)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stopped = False

    async def start(self, runner: bool = True, relay: bool = False) -> Node:
        await self.membership.join()
        work = {
            "keepalive": self.membership.keep_alive(),
            "members": self.membership.mirror.run(),
            "shards": self.shards.run(),
        }
        if relay:
            work["relay"] = HeartbeatRelay(self.store, self.membership, self.ctx.liveness).run()
        if runner:
            work["runner"] = self.runner.run()
        else:
            work["cache"] = self.cache.run()
        for name, coroutine in work.items():
            self.tasks[name] = asyncio.create_task(coroutine, name=f"{self.id}-{name}")
        return self

    def owned(self) -> set[str]:
        return set(self.shards.mine)

    async def pause_keepalive(self) -> None:
        """What a paused (SIGSTOP) or cut-off controller looks like to etcd: no keepalive."""
        task = self.tasks.pop("keepalive")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def stop(self, leave: bool = True) -> None:
        """Stop everything; ``leave``: revoke the lease (a clean stop), else let it expire."""
        if self.stopped:
            return
        self.stopped = True
        await self.runner.stop()
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
        if leave:
            await self.membership.leave()
        await self.ctx.agents.close()
        await self.store.close()
