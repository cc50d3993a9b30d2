"""The controller's in-memory view of the store: every object parsed once, indexed, kept
current by the store's watch (Kubernetes calls this an informer).

Handlers, placement, leases, apply validation, metrics and load read objects here
(`ctx.get`, `ctx.list`, `ctx.cache.by`) and never list the store; every write still goes
to the store as a compare-and-swap transaction. Three things keep the view exact:

- **read your writes**: the store the context hands out (`CachedWrites`) feeds the cache
  every record a commit returns, so a handler sees its own transition at once, and a
  compare-and-swap that lost refreshes the contested key from the store, so the retry
  reads the winner's version instead of losing again;
- **the watch** brings everybody else's writes (another controller, a direct store
  write) and every delete, in revision order; a record never replaces a newer one (the
  watch may still carry an older put of a key the cache learnt from a commit). Deletes
  are taken from the watch only: a commit does not say at which revision it deleted,
  and a guess could hide a later write; an object removed by its own handler simply
  stays visible for the few milliseconds until the watch says so;
- **guards**: with several controllers (control/shards.py), a handler's writes must
  carry its shard's guard; the runner puts the guards in `ACTING_GUARDS` (a context
  variable, so a handler's own tasks and calls see them and nothing else does) and
  `CachedWrites.commit` adds them to every commit; a fenced commit is told to the
  `fenced` listeners (the shards, which drop the shard);
- **relist**: when the watch breaks (its history was compacted, the store failed, it
  ended), the cache lists the store again, replaces its whole view, announces every key
  that is new or at another revision (and to the delete listeners every key that
  vanished meanwhile), and watches
  from the revision read before that list. Nothing is missed.

Every change is announced (kind, name) to the listeners, once per revision: the runner
is one, and schedules the object's owner.

Objects handed out are shared, not copied (a copy per read is what made every event cost
the size of the store): never mutate them; `with_status` and `model_copy` make new ones.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextvars import ContextVar
from typing import Any

from pydantic import ValidationError

from autonet.model.kinds import KindRegistry
from autonet.model.objects import Object
from autonet.store import (
    Compacted,
    Conflict,
    Delete,
    Event,
    Fenced,
    Guard,
    Op,
    Put,
    Record,
    Store,
    StoreError,
)

log = logging.getLogger(__name__)

# The guards of the handler running in this context (control/shards.py); none outside one.
ACTING_GUARDS: ContextVar[tuple[Guard, ...]] = ContextVar("autonet_acting_guards", default=())

Listener = Callable[[str, str], None]
IndexFn = Callable[[Object], Any]

RELIST_BACKOFF_START = 0.1
RELIST_BACKOFF_MAX = 5.0


def _pool(obj: Object) -> str:
    return obj.name.rsplit("/", 1)[0]


# The lookups the operators make on every event; each maps an object to a key (None: not
# indexed). Plugins add theirs with `ObjectCache.add_index`.
BUILTIN_INDEXES: dict[str, dict[str, IndexFn]] = {
    "Instance": {
        "host": lambda o: o.status.get("host"),
        # placement's load: instances on a host that are not being deleted
        "placed": lambda o: None if o.metadata.deleting else o.status.get("host"),
        "automaton": lambda o: o.spec.get("automaton"),
        "vpc": lambda o: o.status.get("vpc"),
        "network": lambda o: o.status.get("network"),
    },
    "Automaton": {"vpc": lambda o: o.status.get("vpc"), "network": lambda o: o.spec.get("network")},
    "Network": {"vpc": lambda o: o.spec.get("vpc")},
    "Lease": {"pool": _pool, "owner": lambda o: o.spec.get("owner")},
}


def _parse(record: Record) -> Object | None:
    """The record as an object; None (and a warning) for data that is not one, which a
    store shared with other software may hold: it is not the cache's to fail on."""
    try:
        return Object.from_data(record.data, record.revision)
    except ValidationError as exc:
        log.warning("%s/%s in the store is not an object: %s", record.kind, record.name, exc)
        return None


class ObjectCache:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.ready = False  # loaded at least once: reads may be served from memory
        self.revision = 0  # the store revision the view is complete up to
        self._objects: dict[str, dict[str, Object]] = defaultdict(dict)
        self._indexes: dict[str, dict[str, IndexFn]] = {k: dict(v) for k, v in BUILTIN_INDEXES.items()}
        # (kind, index) -> key -> name -> object
        self._by: dict[tuple[str, str], dict[Any, dict[str, Object]]] = defaultdict(lambda: defaultdict(dict))
        self._listeners: list[Listener] = []
        self._delete_listeners: list[Listener] = []
        self._rng = random.Random()

    # -- reading ---------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> Object | None:
        return self._objects[kind].get(name)

    def list(self, kind: str, prefix: str = "") -> builtins.list[Object]:
        """The objects of `kind` (whose names start with `prefix`: a scan; the indexes,
        `by`, answer the frequent questions without one)."""
        found = self._objects[kind]
        if not prefix:
            return builtins.list(found.values())
        return [obj for name, obj in found.items() if name.startswith(prefix)]

    def by(self, kind: str, index: str, key: Any) -> builtins.list[Object]:
        """The objects of `kind` whose `index` is `key` (e.g. Instance by host)."""
        self.index_function(kind, index)
        return builtins.list(self._by[(kind, index)].get(key, {}).values())

    def index_function(self, kind: str, index: str) -> IndexFn:
        try:
            return self._indexes[kind][index]
        except KeyError:
            raise KeyError(f"no index {index!r} on {kind}") from None

    def size(self, kind: str, index: str, key: Any) -> int:
        """How many objects `by(kind, index, key)` would return, in O(1)."""
        self.index_function(kind, index)
        return len(self._by[(kind, index)].get(key, {}))

    def add_index(self, kind: str, index: str, key: IndexFn) -> None:
        self._indexes.setdefault(kind, {})[index] = key
        by = self._by[(kind, index)]
        for obj in self._objects[kind].values():
            value = key(obj)
            if value is not None:
                by[value][obj.name] = obj

    # -- learning ----------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        """`listener(kind, name)` after every change the cache takes in (puts)."""
        self._listeners.append(listener)

    def subscribe_deletes(self, listener: Listener) -> None:
        """`listener(kind, name)` after an object left the store (e.g. a lease released)."""
        self._delete_listeners.append(listener)

    def _unindex(self, obj: Object) -> None:
        for index, key in self._indexes.get(obj.kind, {}).items():
            value = key(obj)
            if value is not None:
                bucket = self._by[(obj.kind, index)].get(value)
                if bucket is not None:
                    bucket.pop(obj.name, None)
                    if not bucket:
                        del self._by[(obj.kind, index)][value]

    def _index(self, obj: Object) -> None:
        for index, key in self._indexes.get(obj.kind, {}).items():
            value = key(obj)
            if value is not None:
                self._by[(obj.kind, index)][value][obj.name] = obj

    def learn_put(self, record: Record) -> bool:
        """Take a written record unless the view already has it or something newer."""
        old = self._objects[record.kind].get(record.name)
        if old is not None and old.metadata.revision >= record.revision:
            return False
        obj = _parse(record)
        if obj is None:
            return False
        if old is not None:
            self._unindex(old)
        self._objects[record.kind][record.name] = obj
        self._index(obj)
        self._announce(record.kind, record.name)
        return True

    def learn_delete(self, kind: str, name: str, revision: int) -> bool:
        old = self._objects[kind].get(name)
        if old is None or old.metadata.revision > revision:
            return False
        self._unindex(old)
        del self._objects[kind][name]
        for listener in self._delete_listeners:
            listener(kind, name)
        return True

    def _announce(self, kind: str, name: str) -> None:
        for listener in self._listeners:
            listener(kind, name)

    def _apply(self, event: Event) -> None:
        record = event.record
        if event.type == "put":
            self.learn_put(record)
        else:
            self.learn_delete(record.kind, record.name, record.revision)
        self.revision = max(self.revision, record.revision)

    async def refresh(self, kind: str, name: str) -> None:
        """Read one key from the store (after a lost compare-and-swap on it)."""
        record = await self.store.get(kind, name)
        if record is not None:
            self.learn_put(record)
        else:
            self.learn_delete(kind, name, await self.store.revision())

    # -- loading and watching ---------------------------------------------------------------------
    async def load(self) -> int:
        """List the whole store into a fresh view; announce every key. Returns the
        revision to watch from (read before the list: a write in between is both listed
        and watched, harmlessly, instead of missed)."""
        revision = await self.store.revision()
        records = await self.store.list()
        objects: dict[str, dict[str, Object]] = defaultdict(dict)
        for record in records:
            obj = _parse(record)
            if obj is not None:
                objects[record.kind][record.name] = obj
        gone = [
            (kind, name)
            for kind, found in self._objects.items()
            for name in found
            if name not in objects[kind]
        ]
        # A relist announces only what it finds changed (new, or at another revision):
        # the listeners already saw the rest, and a large store must not send every
        # object back through the runner because a watch broke.
        before = self._objects
        changed = [
            (kind, name)
            for kind, found in objects.items()
            for name, obj in found.items()
            if (old := before.get(kind, {}).get(name)) is None
            or old.metadata.revision != obj.metadata.revision
        ]
        self._objects = objects
        self._by = defaultdict(lambda: defaultdict(dict))
        for found in objects.values():
            for obj in found.values():
                self._index(obj)
        self.revision = revision
        self.ready = True
        for kind, name in gone:  # deleted while the watch was away
            for listener in self._delete_listeners:
                listener(kind, name)
        for kind, name in changed:
            self._announce(kind, name)
        return revision

    async def run(self) -> None:
        """Load, then follow the watch forever; load again whenever it breaks (cancel to stop)."""
        failures = 0
        while True:
            seen = 0
            try:
                revision = await self.load()
                async for event in self.store.watch(revision):
                    seen += 1
                    self._apply(event)
                log.warning("store watch ended; listing again")
            except Compacted as exc:
                log.warning("store watch fell behind the history (%s); listing again", exc)
            except Exception as exc:
                # Whatever broke the watch (store down, a backend bug), the controller must
                # not stop running operators because of it: log and start over.
                log.warning("store watch failed: %s: %s; listing again", type(exc).__name__, exc)
            failures = 0 if seen else failures  # a watch that delivered made progress
            step = min(RELIST_BACKOFF_START * 2 ** min(failures, 16), RELIST_BACKOFF_MAX)
            await asyncio.sleep(self._rng.uniform(step / 2, step))
            failures += 1


class CachedWrites:
    """The store as handlers see it: writes go to the real store, and what they wrote
    (or, after a lost compare-and-swap, what won) is fed to the cache at once.

    With `kinds`, every write is checked first: the status keys a put changes (against
    the cached version; all its keys if there is none) must be declared by the kind's
    status model with values of their types (model/status.py), or the commit raises
    StatusError and writes nothing."""

    def __init__(self, store: Store, cache: ObjectCache, kinds: KindRegistry | None = None) -> None:
        self.inner = store
        self.cache = cache
        self.kinds = kinds
        self.fenced: list[Callable[[Fenced], None]] = []  # told of every fenced commit

    async def get(self, kind: str, name: str) -> Record | None:
        return await self.inner.get(kind, name)

    async def list(self, kind: str | None = None, prefix: str = "") -> builtins.list[Record]:
        return await self.inner.list(kind, prefix)

    async def revision(self) -> int:
        return await self.inner.revision()

    def watch(self, from_revision: int, kinds: Collection[str] | None = None) -> AsyncIterator[Event]:
        return self.inner.watch(from_revision, kinds)

    async def close(self) -> None:
        await self.inner.close()

    async def put(
        self, kind: str, name: str, data: dict[str, Any], expected_revision: int | None = None
    ) -> Record:
        record = (await self.commit([Put(kind, name, data, expected_revision)]))[0]
        assert record is not None
        return record

    async def delete(self, kind: str, name: str, expected_revision: int | None = None) -> Record | None:
        await self.commit([Delete(kind, name, expected_revision)])
        return None

    def check(self, ops: Sequence[Op]) -> None:
        """StatusError if a put writes a status its kind's model refuses."""
        if self.kinds is None:
            return
        for op in ops:
            if isinstance(op, Put) and op.kind in self.kinds:
                old = self.cache.get(op.kind, op.name)
                status = op.data.get("status") or {}
                self.kinds[op.kind].check_status(op.name, status, None if old is None else old.status)

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> builtins.list[Record | None]:
        """Commit `ops` with `guards` and those of the handler running (`ACTING_GUARDS`)."""
        self.check(ops)
        try:
            results = await self.inner.commit(ops, (*guards, *ACTING_GUARDS.get()))
        except Fenced as fenced:
            for listener in self.fenced:
                listener(fenced)
            raise
        except Conflict as conflict:
            await self.cache.refresh(conflict.kind, conflict.name)
            raise
        for op, result in zip(ops, results, strict=False):
            if isinstance(op, Put) and result is not None:
                self.cache.learn_put(result)
        return results


__all__ = ["ACTING_GUARDS", "CachedWrites", "ObjectCache", "StoreError"]
