"""Shards: which of several controllers acts on which objects, and the epochs that fence them.

Every object maps to a **shard** (:func:`shard_of`): ``vpc/<name>`` for a VPC and
everything in it — the Vpc, its Networks, Automatons, Instances and Compositions, the
leases of its pools (``ip/<network>``, ``vip/<vpc>``, ``identity/<vpc>``, its ``vni``) —
and ``hosts`` for Host objects, host-level pools (the host index) and kinds that belong
to no VPC (a plugin's per-host objects). An object whose VPC cannot be told yet (an
automaton whose network does not exist) is in ``hosts`` until it can; the shard it then
moves to is told (:meth:`Shards.subscribe_gained` listeners get its key). A handler runs
for its object's shard, except placement (Instance ``Init``), which runs for ``hosts``:
one controller places every instance, so placements see each other
(:func:`acting_shard`).

**Owners.** The owner of a shard is the live member (control/members.py) with the highest
``blake2b(member id, shard)`` (rendezvous hashing): members agree on it without talking,
and a member that joins or leaves moves only the shards it wins or held. A controller
*claims* a shard it should own by putting ``<root>/owners/<shard>`` on its own lease in a
transaction that requires the key to be absent; the key's revision is the shard's
**epoch**. A dead owner's key goes with its lease; a live owner whose shard moves to a
member that joined hands it over: it stops starting handlers of the shard, waits for those
in flight (cancels them after ``grace`` seconds), and only then deletes its key (a
transaction on the key's revision); only then can the new owner's claim succeed. So two
controllers never act on one shard at once — and if one believes it still does (paused,
cut off), its writes fail:

**Fencing.** Every write a handler makes is one store transaction that also compares the
owner key's revision with the epoch the controller holds (:class:`~autonet.store.Guard`;
the runner sets the guards of the handler's shard, control/cache.py adds them to each
commit). A write after the shard moved raises :class:`~autonet.store.Fenced`, writes
nothing, is logged in one line, and the shard is dropped. Syncs to agents carry the
epoch, and agents refuse a lower one than they have seen (agent/routers.py).

One controller on SQLite has no :class:`Shards`: it owns everything, unguarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from autonet.control.cache import ACTING_GUARDS, ObjectCache
from autonet.control.members import Membership, PrefixMirror
from autonet.model.objects import Object
from autonet.store import Fenced, Guard, StoreError
from autonet.store.etcd import EtcdStore
from autonet.store.etcdrpc import rpc_pb2 as rpc

log = logging.getLogger(__name__)

HOSTS = "hosts"
HANDOVER_GRACE = 5.0  # seconds a handover waits for handlers in flight before cancelling them
TICK = 0.25  # seconds between reconciliations when nothing wakes them

Key = tuple[str, str]


def vpc_shard(vpc: str) -> str:
    return f"vpc/{vpc}"


def _weight(member: str, shard: str) -> int:
    digest = hashlib.blake2b(f"{member}\0{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(shard: str, members: Iterable[str]) -> str | None:
    """The member that should own ``shard``: the highest hash of (member, shard)."""
    return max(members, key=lambda member: (_weight(member, shard), member), default=None)


# -- objects to shards -----------------------------------------------------------------------


def _network_vpc(cache: ObjectCache, network: str | None) -> str | None:
    found = cache.get("Network", network) if network else None
    return str(found.spec["vpc"]) if found is not None and found.spec.get("vpc") else None


def _automaton_vpc(cache: ObjectCache, automaton: Object | None) -> str | None:
    if automaton is None:
        return None
    return automaton.status.get("vpc") or _network_vpc(cache, automaton.spec.get("network"))


def _lease_vpc(cache: ObjectCache, lease: Object) -> str | None:
    pool = lease.name.rsplit("/", 1)[0]
    family, _, rest = pool.partition("/")
    if family == "ip":
        return _network_vpc(cache, rest)
    if family in ("vip", "identity"):
        return rest or None
    if family == "vni":  # held by a Vpc
        kind, _, name = str(lease.spec.get("ref", "")).partition("/")
        return name if kind == "Vpc" and name else None
    return None  # the host index, and pools of plugins


def composition_vpcs(composition: Object, cache: ObjectCache) -> set[str]:
    """The VPCs of the automatons a composition links (those that exist)."""
    links = composition.spec.get("links", [])
    names = {str(n) for link in links for n in (link.get("from"), link.get("to")) if n}
    vpcs = {_automaton_vpc(cache, cache.get("Automaton", name)) for name in names}
    return {vpc for vpc in vpcs if vpc}


def vpc_of(obj: Object, cache: ObjectCache) -> str | None:
    """The VPC an object belongs to (from its spec, status and the cache), None if none
    or not known yet."""
    kind = obj.kind
    if kind == "Vpc":
        return obj.name
    if kind == "Network":
        return str(obj.spec["vpc"]) if obj.spec.get("vpc") else None
    if kind == "Automaton":
        return _automaton_vpc(cache, obj)
    if kind == "Instance":
        automaton = cache.get("Automaton", str(obj.spec.get("automaton", "")))
        return obj.status.get("vpc") or _automaton_vpc(cache, automaton)
    if kind == "Composition":
        return min(composition_vpcs(obj, cache), default=None)
    if kind == "Lease":
        return _lease_vpc(cache, obj)
    return None


VPC_KINDS = frozenset({"Vpc", "Network", "Automaton", "Instance", "Composition"})


def shard_of(obj: Object, cache: ObjectCache) -> str:
    """The shard an object belongs to (module docs)."""
    vpc = vpc_of(obj, cache)
    return vpc_shard(vpc) if vpc else HOSTS


def is_placement(obj: Object) -> bool:
    """Whether the object's next handler is placement (Instance Init), which the owner of
    ``hosts`` runs whatever the instance's VPC: one controller places every instance."""
    return obj.kind == "Instance" and obj.state == "Init" and not obj.metadata.deleting


def acting_shard(obj: Object, cache: ObjectCache) -> str:
    """The shard whose owner runs the handler of the object's current state: its own,
    except placement (:func:`is_placement`)."""
    return HOSTS if is_placement(obj) else shard_of(obj, cache)


@dataclass(frozen=True)
class Owner:
    """A shard's owner key as the owners watch last saw it."""

    member: str
    epoch: int
    lease: int


class Shards:
    """This controller's shards: claims, handovers, epochs, and the guards of its handlers."""

    def __init__(
        self, store: EtcdStore, membership: Membership, cache: ObjectCache, grace: float = HANDOVER_GRACE
    ) -> None:
        self.store = store
        self.membership = membership
        self.cache = cache
        self.grace = grace
        self.mine: dict[str, int] = {}  # shard -> the epoch this controller holds it at
        self.held: set[tuple[str, int]] = set()  # every (shard, epoch) it ever held
        self.releasing: set[str] = set()  # handing over: no new handler starts
        self.owners = PrefixMirror(store.client, store.owners_prefix, self.wake)
        self.unresolved: set[Key] = set()  # objects in `hosts` until their VPC is known
        self._inflight: Counter[str] = Counter()
        self._idle: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._was_acting = False
        self._gained: list[Callable[[set[str], set[Key]], None]] = []
        self._lost: list[Callable[[str], None]] = []
        self._cancel: list[Callable[[str], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        membership.subscribe(self.wake)
        membership.subscribe_lease_lost(self._lease_lost)
        cache.subscribe(self._object_changed)

    # -- listeners -------------------------------------------------------------------------

    def subscribe_gained(self, listener: Callable[[set[str], set[Key]], None]) -> None:
        """``listener(shards, keys)`` when this controller starts acting on ``shards`` (claimed
        them, or acts again after a pause) and on objects ``keys`` whose shard became known."""
        self._gained.append(listener)

    def subscribe_lost(self, listener: Callable[[str], None]) -> None:
        """``listener(shard)`` when this controller no longer owns ``shard``."""
        self._lost.append(listener)

    def subscribe_cancel(self, listener: Callable[[str], None]) -> None:
        """``listener(shard)``: cancel the handlers of ``shard`` still running (a handover
        waited ``grace`` seconds for them)."""
        self._cancel.append(listener)

    def _announce_gained(self, shards: set[str], keys: Iterable[Key] = ()) -> None:
        for listener in self._gained:
            listener(shards, set(keys))

    # -- what the runner, the syncer and the API ask ---------------------------------------------

    @property
    def member(self) -> str:
        return self.membership.id

    def shard_of(self, obj: Object) -> str:
        shard = shard_of(obj, self.cache)
        if shard == HOSTS and obj.kind in VPC_KINDS:
            self.unresolved.add((obj.kind, obj.name))
        return shard

    def acting_shard(self, obj: Object) -> str:
        own = self.shard_of(obj)
        return HOSTS if is_placement(obj) else own

    def owner(self, shard: str) -> Owner | None:
        """The shard's owner as the owners watch last saw it."""
        kv = self.owners.kvs.get(shard)
        if kv is None:
            return None
        try:
            member = str(json.loads(kv.value).get("member", ""))
        except (ValueError, AttributeError):
            member = ""
        return Owner(member, kv.mod_revision, kv.lease)

    def holds(self, shard: str) -> Guard | None:
        """The guard of ``shard`` if this controller may act on it now: it owns it, is not
        handing it over, and its lease is kept alive."""
        epoch = self.mine.get(shard)
        if epoch is None or shard in self.releasing or not self.membership.acting():
            return None
        return Guard(shard, epoch)

    def may_handle(self, obj: Object) -> bool:
        """Whether a change of ``obj`` is this controller's to handle (a cheap pre-check)."""
        return self.holds(self.acting_shard(obj)) is not None

    def enter(self, obj: Object) -> tuple[str, tuple[Guard, ...]] | None:
        """Start a handler of ``obj``: its acting shard and the guards of its writes, or None
        if this controller may not act on it now. Pair with :meth:`leave`.

        The guards: the acting shard's at this controller's epoch, and, when the object's
        own shard is another (placement), that shard's at the epoch its owner holds."""
        shard = self.acting_shard(obj)
        guard = self.holds(shard)
        if guard is None:
            return None
        guards = [guard]
        own = self.shard_of(obj)
        if own != shard and (owner := self.owner(own)) is not None:
            guards.append(Guard(own, owner.epoch))
        self._inflight[shard] += 1
        return shard, tuple(guards)

    def leave(self, shard: str) -> None:
        self._inflight[shard] -= 1
        if self._inflight[shard] <= 0:
            del self._inflight[shard]
            idle = self._idle.get(shard)
            if idle is not None:
                idle.set()

    def fenced(self, exc: Fenced) -> None:
        """A write was refused by its guard: one line in the log, and the shard is dropped
        if it is the one this controller held at that epoch."""
        if (exc.shard, exc.epoch) in self.held:  # ours (maybe dropped already: the watch was first)
            log.warning("%s", exc)
            if self.mine.get(exc.shard) == exc.epoch:
                self._drop(exc.shard, "a write was fenced")
        else:  # the other guard of a placement: that VPC changed owner meanwhile
            log.info(
                "a write checked against %s at epoch %d was refused: its owner changed", exc.shard, exc.epoch
            )

    def gate(self) -> str | None:
        """Why the handler (or sync) running in this context may not call an agent now:
        this controller is not acting, or no longer holds the shard it runs for (None: it
        may; calls outside a handler, e.g. a user's exec, are not gated)."""
        guards = ACTING_GUARDS.get()
        if not guards:
            return None
        if not self.membership.acting():
            return f"controller {self.member} is not acting (its etcd lease is not being kept alive)"
        if self.mine.get(guards[0].shard) != guards[0].epoch:
            return f"controller {self.member} no longer owns {guards[0].shard} (epoch {guards[0].epoch})"
        return None

    # -- the reconciliation --------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def _object_changed(self, kind: str, name: str) -> None:
        if kind in ("Vpc", "Network", "Automaton"):
            self.wake()

    def known(self) -> set[str]:
        """The shards that exist: ``hosts``, and every VPC's (named by a Vpc or a Network)."""
        shards = {HOSTS}
        shards.update(vpc_shard(vpc.name) for vpc in self.cache.list("Vpc"))
        shards.update(vpc_shard(str(n.spec["vpc"])) for n in self.cache.list("Network") if n.spec.get("vpc"))
        return shards

    async def run(self) -> None:
        """Follow the owner keys and reconcile the shards this controller owns, until cancelled."""
        mirror = asyncio.create_task(self.owners.run(), name="owners-watch")
        try:
            while True:
                # (asyncio.timeout, not wait_for: in Python 3.11 wait_for may swallow a
                # cancellation that comes as the event is set, and this loop is woken often)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    await self.reconcile()
                except StoreError as exc:
                    log.warning("shards of %s: %s (trying again)", self.member, exc)
        finally:
            mirror.cancel()
            for task in [mirror, *self._tasks]:
                task.cancel()
            await asyncio.gather(mirror, *self._tasks, return_exceptions=True)

    async def reconcile(self) -> None:
        """One round: drop what was lost, resume after a pause, hand over what moved, claim
        what this controller should own."""
        acting = self.membership.acting()
        if self.owners.ready.is_set():
            self._check_keys()  # first: what was lost during a pause is not picked up again
            self._resolve()
        if acting and not self._was_acting and self.mine:
            self._announce_gained(set(self.mine))  # back from a pause: pick up what was skipped
        self._was_acting = acting
        if not self.owners.ready.is_set():
            return
        members = set(self.membership.members)
        if not acting or self.member not in members or not self.cache.ready:
            return
        known = self.known()
        claims = []
        for shard in sorted(known | set(self.mine)):
            target = rendezvous_owner(shard, members)
            if shard in self.mine:
                if (target != self.member or shard not in known) and shard not in self.releasing:
                    self._spawn(self._release(shard, target))
            elif target == self.member and shard not in self.owners.kvs:
                claims.append(self._claim(shard))
        results = await asyncio.gather(*claims, return_exceptions=True)
        gained = {r for r in results if isinstance(r, str)}
        for error in (r for r in results if isinstance(r, BaseException)):
            log.warning("shards of %s: a claim failed: %s", self.member, error)
        if gained:
            self._announce_gained(gained)

    def _check_keys(self) -> None:
        """Shards whose owner key is no longer this controller's (its lease expired, it was
        handed over) are dropped; a key of this lease not in ``mine`` (a claim whose answer
        was lost) is adopted."""
        for shard, epoch in list(self.mine.items()):
            kv = self.owners.kvs.get(shard)
            if self.owners.revision >= epoch and (kv is None or kv.mod_revision != epoch):
                self._drop(shard, "its owner key is gone" if kv is None else "another member owns it")
        lease = self.membership.lease
        for shard, kv in self.owners.kvs.items():
            if lease and kv.lease == lease and shard not in self.mine:
                self.mine[shard] = kv.mod_revision
                self.held.add((shard, kv.mod_revision))
                log.info("member %s owns %s (epoch %d, adopted)", self.member, shard, kv.mod_revision)
                self._announce_gained({shard})

    def _resolve(self) -> None:
        """Objects that were in ``hosts`` for want of their VPC: those whose VPC is now
        known go to its shard's owner."""
        if not self.unresolved:
            return
        moved: set[Key] = set()
        for key in list(self.unresolved):
            obj = self.cache.get(*key)
            if obj is None:
                self.unresolved.discard(key)
                continue
            if shard_of(obj, self.cache) != HOSTS:
                self.unresolved.discard(key)
                moved.add(key)
        if moved:
            self._announce_gained(set(), moved)

    async def _claim(self, shard: str) -> str | None:
        """Put the owner key on this member's lease if there is none; the shard if it did."""
        key = self.store.owner_key(shard)
        lease = self.membership.lease
        value = json.dumps({"member": self.member, "lease": lease}).encode()
        absent = rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0)
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))
        response = await self.store.client.txn([absent], [put])
        if not response.succeeded or lease != self.membership.lease:
            return None
        self.mine[shard] = response.header.revision
        self.held.add((shard, response.header.revision))
        log.info("member %s owns %s (epoch %d)", self.member, shard, response.header.revision)
        return shard

    async def _release(self, shard: str, to: str | None) -> None:
        """Hand ``shard`` over: no new handler, the ones in flight end, then the key goes."""
        epoch = self.mine[shard]
        self.releasing.add(shard)
        log.info("member %s hands %s over to %s (epoch %d)", self.member, shard, to or "nobody", epoch)
        try:
            await self._drain(shard)
            key = self.store.owner_key(shard)
            same = rpc.Compare(key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=epoch)
            delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
            await self.store.client.txn([same], [delete])
        except StoreError as exc:
            log.warning("member %s: handover of %s failed: %s (trying again)", self.member, shard, exc)
            if self.mine.get(shard) == epoch:
                self.releasing.discard(shard)
                self._announce_gained({shard})
            return
        # The shard stays `releasing` until the owners watch shows its key gone (_check_keys).
        self.wake()

    async def _drain(self, shard: str) -> None:
        """Wait until no handler of ``shard`` runs; after ``grace`` seconds, cancel them."""
        idle = self._idle.setdefault(shard, asyncio.Event())
        try:
            cancelled = False
            while self._inflight.get(shard, 0) > 0:
                idle.clear()
                try:
                    async with asyncio.timeout(None if cancelled else self.grace):
                        await idle.wait()
                except TimeoutError:
                    log.warning(
                        "handover of %s: %d handler(s) still running after %g s: cancelling them",
                        shard,
                        self._inflight.get(shard, 0),
                        self.grace,
                    )
                    for listener in self._cancel:
                        listener(shard)
                    cancelled = True
        finally:
            self._idle.pop(shard, None)

    def _drop(self, shard: str, why: str) -> None:
        epoch = self.mine.pop(shard, None)
        self.releasing.discard(shard)
        if epoch is None:
            return
        log.info("member %s no longer owns %s (epoch %d): %s", self.member, shard, epoch, why)
        for listener in self._lost:
            listener(shard)

    def _lease_lost(self) -> None:
        for shard in list(self.mine):
            self._drop(shard, "the member's lease expired")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- for GET /api/v1/controllers -----------------------------------------------------------

    def owned_by(self) -> dict[str, list[tuple[str, int]]]:
        """Member id -> the shards it owns with their epochs, as the owners watch saw them."""
        found: dict[str, list[tuple[str, int]]] = {}
        for shard in sorted(self.owners.kvs):
            owner = self.owner(shard)
            if owner is not None:
                found.setdefault(owner.member, []).append((shard, owner.epoch))
        return found
