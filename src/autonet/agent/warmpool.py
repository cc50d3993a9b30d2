"""A warm pool of network namespaces, made ahead so that wiring an instance costs no
namespace creation.

Creating a namespace (unshare in a thread, bind mount, a netlink socket, `lo` up) is
the one step of an endpoint that does not depend on the instance. The agent keeps
`size` of them ready under pool names (`anw<host tag><serial>`); wiring a new instance
renames one to the instance's namespace name (a bind mount and an unmount,
dataplane/netns.py `rename`) and refills the pool in the background, between requests.
Pool namespaces carry the host's tag, so the agent's garbage collector and `lab down`
treat them like its other namespaces; an agent that starts removes leftovers and makes
a fresh pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

from autonet.dataplane import netns
from autonet.dataplane.netlink import Netlink, call
from autonet.model import naming

log = logging.getLogger(__name__)

DEFAULT_SIZE = 8


class WarmPool:
    def __init__(self, nl: Netlink, tag: str, size: int = DEFAULT_SIZE) -> None:
        self.nl = nl
        self.tag = tag
        self.size = size
        self.ready: list[str] = []
        self._serial = itertools.count()
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.taken = 0  # namespaces handed to instances (for tests and metrics)

    def start(self) -> None:
        if self.size > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._fill_forever())
            self._wanted.set()

    async def _fill_forever(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while len(self.ready) < self.size:
                name = naming.pool_netns(self.tag, next(self._serial))
                try:
                    ipr = await self.nl.ns(name, create=True)
                    await call(ipr.link("set", index=1, state="up"))
                except OSError as exc:  # no room, a stray name: try again on the next take
                    log.warning("warm pool: cannot make %s: %s", name, exc)
                    break
                self.ready.append(name)
                await asyncio.sleep(0)  # one at a time between requests

    def take(self, name: str) -> bool:
        """Rename a ready namespace to `name`; False if none is ready (make one then)."""
        while self.ready:
            pooled = self.ready.pop()
            self._wanted.set()
            try:
                self.nl.rename(pooled, name)
            except OSError as exc:
                log.warning("warm pool: cannot rename %s to %s: %s", pooled, name, exc)
                self.nl.forget(pooled)
                netns.delete(pooled)
                continue
            self.taken += 1
            return True
        self._wanted.set()
        return False

    async def close(self) -> None:
        """Stop filling and remove the namespaces not handed out."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for name in self.ready:
            self.nl.forget(name)
            netns.delete(name)
        self.ready.clear()
