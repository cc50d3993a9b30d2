"""Host liveness: when each host's agent was last heard from, kept in memory.

Agents heartbeat every second. A heartbeat only touches this table (the API records
it; the Host operators read it and decide: a Ready host silent for longer than the
timeout becomes `Lost`, a lost one heard again goes back to `Init`). The Host object is
written when its state changes, never for the heartbeat itself, so a thousand healthy
hosts cost no store writes and wake no watcher.

With several controllers an agent heartbeats to one of them; each controller tells the
others what it heard (control/relay.py), which they take in with `beat_at`.

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
        self._heard_here: dict[str, float] = {}  # heartbeats this controller took itself

    def grace(self) -> None:
        """Hosts not heard from yet get one full timeout from now (this controller just
        became the one that judges them: it took the `hosts` shard over)."""
        self.started = time.monotonic()

    def beat(self, host: str) -> None:
        self._last_seen[host] = self._heard_here[host] = time.monotonic()

    def beat_at(self, host: str, when: float) -> None:
        """A heartbeat another controller heard at monotonic time `when` (as this
        controller counts): kept if it is the latest heard from the host."""
        if when > self._last_seen.get(host, float("-inf")):
            self._last_seen[host] = min(when, time.monotonic())

    def heard_within(self, seconds: float) -> dict[str, float]:
        """Host -> seconds since this controller itself heard it (not what others told:
        `beat_at`), for the hosts it heard in the last `seconds`."""
        now = time.monotonic()
        return {host: now - seen for host, seen in self._heard_here.items() if now - seen <= seconds}

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
        self._heard_here.pop(host, None)
