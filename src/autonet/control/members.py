"""Controller membership on etcd: a lease kept alive, a member key on it, the live members.

With etcd as the store several controllers run at once (docs/architecture.md, "Several
controllers"). Each one is a **member**:

- it holds an etcd lease of ``ttl`` seconds (``--member-ttl``, 3 by default; etcd 3.4
  cannot honour less than 2) and renews it every ``ttl / 3``;
- it puts its member key ``<root>/members/<id>`` on that lease, holding JSON
  ``{"id", "endpoints", "started", "lease"}`` (its advertised API endpoints), so the key
  disappears with the lease: a member whose process died or stopped renewing is gone
  from the member set within the TTL (plus etcd's reaping, every 0.5 s);
- it watches the members prefix (:class:`PrefixMirror`): :attr:`Membership.members` is the
  live member set, from which shards are assigned (control/shards.py).

**Acting.** :meth:`Membership.acting` is False once the last successful keepalive was
*sent* more than two thirds of the TTL ago. Measured from the send (before etcd renewed
the lease), so a controller always stops acting at least a third of the TTL before etcd
can expire its lease and let another member take its shards: a controller that is
paused (SIGSTOP), cut off from etcd, or starved stops by itself — it runs no handler and
sends no sync — until keepalives succeed again. If the lease expired meanwhile (a
keepalive answers TTL 0) the member grants a new one and puts its member key again: it
rejoins, with no shards (the owner keys went with the old lease).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autonet.store import StoreError
from autonet.store.etcd import EtcdStore
from autonet.store.etcdclient import EtcdClient, prefix_end
from autonet.store.etcdrpc import kv_pb2
from autonet.store.etcdrpc import rpc_pb2 as rpc

log = logging.getLogger(__name__)

DEFAULT_TTL = 3.0
MIN_TTL = 2  # etcd 3.4's smallest effective lease TTL (seconds)
ACTING_SHARE = 2 / 3  # of the TTL: how old the last successful keepalive may be
MIRROR_BACKOFF_MAX = 2.0


class PrefixMirror:
    """The keys under an etcd prefix, kept current: a list, then a watch from the list's
    revision; a list again (after a short backoff) whenever the watch breaks. ``changed()``
    is called after each list and after each watch response that changed something.

    ``revision`` is the etcd revision the mirror is complete up to: a key written at or
    before it is in :attr:`kvs` unless it was deleted by then."""

    def __init__(self, client: EtcdClient, prefix: bytes, changed: Callable[[], None]) -> None:
        self.client = client
        self.prefix = prefix
        self.changed = changed
        self.kvs: dict[str, kv_pb2.KeyValue] = {}  # key below the prefix -> its current value
        self.revision = 0
        self.ready = asyncio.Event()  # listed at least once

    def values(self) -> dict[str, dict[str, Any]]:
        """Every key's JSON value (keys that do not hold a JSON object are left out)."""
        found = {}
        for name, kv in self.kvs.items():
            try:
                value = json.loads(kv.value)
            except ValueError:
                continue
            if isinstance(value, dict):
                found[name] = value
        return found

    def _name(self, key: bytes) -> str:
        return key[len(self.prefix) :].decode(errors="replace")

    async def _list(self) -> None:
        response = await self.client.range(self.prefix, prefix_end(self.prefix))
        self.kvs = {self._name(kv.key): kv for kv in response.kvs}
        self.revision = response.header.revision
        self.ready.set()
        self.changed()

    async def run(self) -> None:
        """Follow the prefix until cancelled."""
        failures = 0
        while True:
            try:
                await self._list()
                stream = self.client.watch(
                    self.prefix, prefix_end(self.prefix), start_revision=self.revision + 1
                )
                try:
                    async for response in stream:
                        failures = 0
                        for event in response.events:
                            name = self._name(event.kv.key)
                            if event.type == kv_pb2.Event.DELETE:
                                self.kvs.pop(name, None)
                            else:
                                self.kvs[name] = event.kv
                        self.revision = max(self.revision, response.header.revision)
                        self.changed()
                finally:
                    await stream.aclose()
            except StoreError as exc:
                log.warning("watch of %s failed: %s; listing again", self.prefix.decode(), exc)
            failures += 1
            await asyncio.sleep(min(0.1 * 2 ** min(failures, 8), MIRROR_BACKOFF_MAX))


@dataclass(frozen=True)
class Member:
    """A live controller as its member key describes it."""

    id: str
    endpoints: tuple[str, ...]
    started: float  # wall-clock time it joined
    lease: int  # its etcd lease (its owner keys are on it too)


class Membership:
    """This controller's lease and member key, and the live member set (module docs)."""

    def __init__(
        self, store: EtcdStore, member_id: str, endpoints: Sequence[str] = (), ttl: float = DEFAULT_TTL
    ) -> None:
        if not member_id or "/" in member_id:
            raise ValueError(f"member id {member_id!r}: it must be non-empty and without '/'")
        if ttl < MIN_TTL:
            raise ValueError(f"member TTL {ttl:g} s: etcd cannot keep a lease shorter than {MIN_TTL} s")
        self.store = store
        self.id = member_id
        self.endpoints = tuple(endpoints)
        self.ttl = float(ttl)
        self.started = time.time()
        self.lease = 0  # the current lease (0: none yet)
        self._last_ok: float | None = None  # monotonic time the last good keepalive was sent
        self.mirror = PrefixMirror(store.client, store.members_prefix, self._members_changed)
        self._listeners: list[Callable[[], None]] = []
        self._lease_listeners: list[Callable[[], None]] = []
        self._down_since: float | None = None  # for logging an outage once

    # -- what others read ------------------------------------------------------------------

    @property
    def members(self) -> dict[str, Member]:
        """The live members, by id (from the watch of the members prefix)."""
        found = {}
        for name, value in self.mirror.values().items():
            found[name] = Member(
                id=name,
                endpoints=tuple(value.get("endpoints", ())),
                started=float(value.get("started", 0.0)),
                lease=int(self.mirror.kvs[name].lease),
            )
        return found

    def acting(self) -> bool:
        """Whether this controller may act: its last successful keepalive was sent less than
        two thirds of the TTL ago (module docs)."""
        return self._last_ok is not None and time.monotonic() - self._last_ok < ACTING_SHARE * self.ttl

    def lease_left(self) -> float:
        """At least how long etcd keeps this member's lease without another keepalive."""
        if self._last_ok is None:
            return 0.0
        return max(0.0, self._last_ok + self.ttl - time.monotonic())

    def subscribe(self, listener: Callable[[], None]) -> None:
        """``listener()`` after the member set changed."""
        self._listeners.append(listener)

    def subscribe_lease_lost(self, listener: Callable[[], None]) -> None:
        """``listener()`` when the lease was found expired (every key on it is gone)."""
        self._lease_listeners.append(listener)

    def _members_changed(self) -> None:
        for listener in self._listeners:
            listener()

    # -- the lease -------------------------------------------------------------------------

    @property
    def key(self) -> bytes:
        return self.store.members_prefix + self.id.encode()

    async def join(self) -> None:
        """Grant a lease and put the member key on it (again, after the lease expired).
        :class:`StoreError` if another live controller holds this member id."""
        sent = time.monotonic()
        lease, granted = await self.store.lease_grant(max(MIN_TTL, round(self.ttl)))
        value = {"id": self.id, "endpoints": list(self.endpoints), "started": self.started, "lease": lease}
        absent = rpc.Compare(
            key=self.key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0
        )
        put = rpc.RequestOp(
            request_put=rpc.PutRequest(key=self.key, value=json.dumps(value).encode(), lease=lease)
        )
        response = await self.store.client.txn(
            [absent], [put], [rpc.RequestOp(request_range=rpc.RangeRequest(key=self.key))]
        )
        if not response.succeeded:
            await self.store.lease_revoke(lease)
            held = response.responses[0].response_range.kvs
            raise StoreError(
                f"member id {self.id!r} is held by another live controller"
                f" (lease {held[0].lease if held else 0:x}): waiting for it to go"
            )
        self.lease = lease
        self.ttl = float(granted)
        self._last_ok = sent
        log.info("member %s joined (lease %x, TTL %d s)", self.id, lease, granted)

    async def _keepalive(self) -> None:
        """One renewal; joins again if the lease has expired."""
        sent = time.monotonic()
        async with asyncio.timeout(self.ttl / 3):
            ttl = await self.store.lease_keepalive(self.lease)
        if ttl > 0:
            self._last_ok = sent
            return
        log.warning("member %s: lease %x expired: its shards are gone; joining again", self.id, self.lease)
        self._last_ok = None
        for listener in self._lease_listeners:
            listener()
        await self.join()

    async def keep_alive(self) -> None:
        """Renew the lease every TTL/3 until cancelled (joins first if needed)."""
        while True:
            started = time.monotonic()
            try:
                if not self.lease:
                    await self.join()
                else:
                    await self._keepalive()
                if self._down_since is not None:
                    log.warning(
                        "member %s: etcd keepalives work again after %.1f s",
                        self.id,
                        time.monotonic() - self._down_since,
                    )
                    self._down_since = None
            except (StoreError, TimeoutError) as exc:
                if self._down_since is None:
                    self._down_since = started
                    log.warning("member %s: keepalive failed: %s", self.id, str(exc) or "timed out")
            await asyncio.sleep(max(0.0, self.ttl / 3 - (time.monotonic() - started)))

    async def run(self) -> None:
        """Keep the lease alive and follow the member set, until cancelled."""
        await asyncio.gather(self.keep_alive(), self.mirror.run())

    async def leave(self) -> None:
        """Revoke the lease: the member key and every owner key on it go at once."""
        if self.lease:
            try:
                await self.store.lease_revoke(self.lease)
            except StoreError as exc:
                log.warning("member %s: cannot revoke lease %x: %s", self.id, self.lease, exc)
            self.lease = 0
            self._last_ok = None
