"""Host liveness: when each host's agent was last heard from, kept in memory.

Agents heartbeat every second. A heartbeat only touches this table (the API records
it; the Host operators read it and decide: a Ready host silent for longer than the
timeout becomes `Lost`, a lost one heard again goes back to `Init`). The Host object is
written when its state changes, never for the heartbeat itself, so a thousand healthy
hosts cost no store writes and wake no watcher.

A controller that starts (or restarts) has seen nobody yet: every host gets one full
timeout of grace from that moment, so a controller restart does not declare the whole
fleet lost.
"""

from __future__ import annotations

import time

DEFAULT_HOST_TIMEOUT = 3.0


class HostLiveness:
    """When each host was last heard from (monotonic seconds), and the timeout."""

    def __init__(self, timeout: float = DEFAULT_HOST_TIMEOUT) -> None:
        self.timeout = timeout
        self.started = time.monotonic()
        self._last_seen: dict[str, float] = {}

    def beat(self, host: str) -> None:
        self._last_seen[host] = time.monotonic()

    def silent_for(self, host: str) -> float:
        """Seconds since the host was last heard from (or since this controller started)."""
        return time.monotonic() - self._last_seen.get(host, self.started)

    def heard(self, host: str) -> bool:
        """Whether this controller has heard from the host since it started."""
        return host in self._last_seen

    def alive(self, host: str) -> bool:
        return self.silent_for(host) <= self.timeout

    def forget(self, host: str) -> None:
        self._last_seen.pop(host, None)
