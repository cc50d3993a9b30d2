"""Recent events: the state changes of objects, with their reasons, as a user follows them.

The dashboard's event list and `GET /api/v1/events` read it. It is fed by the object
cache (control/cache.py), so every controller has it for the whole store, whoever made
the change. It keeps the last `size` events in memory, each numbered, and the last
(state, reason) of every object, to tell a change from a rewrite of the same state.

What the cache had when it was loaded is not an event (a controller that starts does
not report the fleet's history as news): an object seen for the first time counts only
when it was written after the view's revision.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass

from autonet.control.cache import ObjectCache

DEFAULT_SIZE = 1000
KINDS = frozenset({"Vpc", "Network", "Automaton", "Instance", "Composition", "Host"})
DELETED = "Deleted"


@dataclass(frozen=True)
class Event:
    seq: int
    time: float  # seconds since the epoch
    kind: str
    name: str
    state: str
    reason: str
    host: str  # an instance's host, else ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class EventLog:
    def __init__(self, cache: ObjectCache, size: int = DEFAULT_SIZE) -> None:
        self.cache = cache
        self.events: deque[Event] = deque(maxlen=size)
        self.seq = 0
        self.last: dict[tuple[str, str], tuple[str, str]] = {}
        cache.subscribe(self._changed)
        cache.subscribe_deletes(self._deleted)

    def _record(self, kind: str, name: str, state: str, reason: str, host: str) -> None:
        self.seq += 1
        self.events.append(Event(self.seq, time.time(), kind, name, state, reason, host))

    def _changed(self, kind: str, name: str) -> None:
        if kind not in KINDS:
            return
        obj = self.cache.get(kind, name)
        if obj is None:
            return
        state = str(obj.status.get("state") or "")
        reason = str(obj.status.get("reason") or "")
        seen = self.last.get((kind, name))
        self.last[(kind, name)] = (state, reason)
        if seen == (state, reason):
            return
        if seen is None and obj.metadata.revision <= self.cache.revision:
            return  # there when the view was loaded: history, not news
        self._record(kind, name, state, reason, str(obj.status.get("host") or ""))

    def _deleted(self, kind: str, name: str) -> None:
        if kind in KINDS and self.last.pop((kind, name), None) is not None:
            self._record(kind, name, DELETED, "", "")

    def after(self, seq: int, limit: int = 200) -> list[Event]:
        """The events numbered above `seq`, oldest first, at most the last `limit` of them."""
        newer = [event for event in self.events if event.seq > seq]
        return newer[-limit:]
