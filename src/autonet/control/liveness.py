"""Host liveness: heartbeats kept in memory, a host that falls silent becomes `Lost`.

Agents heartbeat every second. A heartbeat only touches this table: the Host object is
written when its state changes (Ready -> Lost, Lost -> Init), never for the heartbeat
itself, so a thousand healthy hosts cost no store writes and wake no watcher.

A controller that starts (or restarts) has seen nobody yet: every host gets one full
timeout of grace from that moment, so a controller restart does not declare the whole
fleet lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from autonet.control.context import Context
from autonet.model.kinds import LOST, READY
from autonet.store import Conflict

DEFAULT_HOST_TIMEOUT = 3.0


class HostLiveness:
    """When each host was last heard from (monotonic seconds), and the timeout."""

    def __init__(self, timeout: float = DEFAULT_HOST_TIMEOUT) -> None:
        self.timeout = timeout
        self.started = time.monotonic()
        self._last_seen: dict[str, float] = {}

    @classmethod
    def of(cls, ctx: Context) -> HostLiveness:
        liveness = ctx.extras.get("liveness")
        if liveness is None:
            liveness = ctx.extras["liveness"] = cls()
        assert isinstance(liveness, HostLiveness)
        return liveness

    def beat(self, host: str) -> None:
        self._last_seen[host] = time.monotonic()

    def silent_for(self, host: str) -> float:
        """Seconds since the host was last heard from (or since this controller started)."""
        return time.monotonic() - self._last_seen.get(host, self.started)

    def forget(self, host: str) -> None:
        self._last_seen.pop(host, None)


async def watch_heartbeats(ctx: Context) -> None:
    """Mark Ready hosts that stopped heartbeating `Lost` (the Host `Lost` operator then
    takes their instances out of service and has them replaced)."""
    liveness = HostLiveness.of(ctx)
    # Checked four times per timeout: a silent host is Lost at most a quarter timeout late.
    period = max(0.05, liveness.timeout / 4)
    while True:
        await asyncio.sleep(period)
        for host in await ctx.list("Host"):
            if host.state != READY or host.metadata.deleting:
                continue
            silent = liveness.silent_for(host.name)
            if silent > liveness.timeout:
                lost = host.with_status(state=LOST, reason=f"no heartbeat for {silent:.1f}s")
                ctx.log.warning("host %s is lost: no heartbeat for %.1fs", host.name, silent)
                with contextlib.suppress(Conflict):
                    await ctx.store.put(host.kind, host.name, lost.to_data(), host.metadata.revision)
