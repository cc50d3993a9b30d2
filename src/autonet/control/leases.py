"""Address leases: objects of the internal kind `Lease`, one per address held.

Pools: `ip/<network>` and `vip/<vpc>` (addresses), `vni`, `host` and `identity/<vpc>`
(numbers). A lease is created with "must not exist" compare-and-swap in the same
transaction as the transition of its owner (an instance's addresses, an automaton's
service addresses and identity), and deleted in the transaction that removes the
owner. So an address is never held twice, even across controllers and restarts, and
never leaks between two writes. Within one controller, addresses and numbers picked but
not yet committed are remembered for a few seconds, so that concurrent handlers do not
all pick the same lowest free one and lose the race but one.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from autonet.control.outcomes import Fail
from autonet.model.addressing import AddressPool
from autonet.model.errors import ExhaustedError
from autonet.model.objects import Object
from autonet.store import Delete, Op, Put

if TYPE_CHECKING:
    from autonet.control.context import Context

LEASE = "Lease"
PENDING_SECONDS = 5.0


def lease_name(pool: str, address: str) -> str:
    return f"{pool}/{address}"


class LeasePools:
    """The controller's allocators, one per (pool, CIDR), fed with the releases the
    object cache sees, so that picking the lowest free address costs O(1) amortised
    instead of a scan of the pool. They are hints over the cache's leases, rebuilt
    lazily after a restart (control/cache.py holds the truth: the store's leases)."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str], AddressPool] = {}
        self._by_pool: dict[str, list[AddressPool]] = {}
        # Picked but not yet committed, per pool (so concurrent leases pick apart), with
        # the time until which each pick stays reserved.
        self.pending_addresses: dict[str, dict[str, float]] = {}
        self.pending_numbers: dict[str, dict[int, tuple[str, float]]] = {}

    def get(self, pool: str, cidr: str) -> AddressPool:
        found = self._pools.get((pool, cidr))
        if found is None:
            found = self._pools[(pool, cidr)] = AddressPool(cidr)
            self._by_pool.setdefault(pool, []).append(found)
        return found

    def deleted(self, kind: str, name: str) -> None:
        if kind == LEASE:
            pool, _, address = name.rpartition("/")
            for allocator in self._by_pool.get(pool, []):
                allocator.release(address)


async def lease_addresses(
    ctx: Context, pool: str, cidrs: dict[int, str], owner: Object, what: str
) -> tuple[dict[int, str], list[Op]]:
    """Per IP version: the address `owner` holds in `pool`, or the lowest free one of the
    version's CIDR with the operation that leases it. Exhaustion fails with `what: ...`."""
    pending: dict[str, float] = ctx.leases.pending_addresses.setdefault(pool, {})
    now = time.monotonic()
    pools = ctx.leases
    for address in [a for a, until in pending.items() if until < now]:
        del pending[address]
        pools.deleted(LEASE, lease_name(pool, address))  # picked, never committed: free again
    async with ctx.lock(f"lease/{pool}"):
        mine = [
            lease for lease in await ctx.by(LEASE, "owner", owner.uid) if lease.name.startswith(f"{pool}/")
        ]
        if ctx.cache.ready:

            def taken(address: str) -> bool:
                return address in pending or ctx.cache.get(LEASE, lease_name(pool, address)) is not None

        else:  # no cache (a tool, a test): the pool's leases from the store
            held = {lease.spec["address"] for lease in await ctx.by(LEASE, "pool", pool)}

            def taken(address: str) -> bool:
                return address in pending or address in held

        addresses: dict[int, str] = {}
        ops: list[Op] = []
        for version, cidr in cidrs.items():
            kept = [
                lease.spec["address"]
                for lease in mine
                if ipaddress.ip_address(lease.spec["address"]).version == version
            ]
            if kept:
                addresses[version] = kept[0]
                continue
            try:
                address = pools.get(pool, cidr).pick(taken)
            except ExhaustedError as exc:
                raise Fail(f"{what}: {exc}") from None
            pending[address] = now + PENDING_SECONDS
            lease = Object(
                kind=LEASE,
                name=lease_name(pool, address),
                spec={"address": address, "owner": owner.uid, "ref": owner.ref},
            )
            ops.append(Put(LEASE, lease.name, lease.to_data(), 0))
            addresses[version] = address
        return addresses, ops


async def lease_number(
    ctx: Context, pool: str, owner: Object, choose: Callable[[set[int]], int]
) -> tuple[int, list[Op]]:
    """The number `owner` holds in `pool` (a host index, a VNI, an automaton's identity),
    or `choose(taken)` with the operation that leases it."""
    pending: dict[int, tuple[str, float]] = ctx.leases.pending_numbers.setdefault(pool, {})
    now = time.monotonic()
    for picked in [n for n, (_, until) in pending.items() if until < now]:
        del pending[picked]
    async with ctx.lock(f"lease/{pool}"):
        leases = await ctx.by(LEASE, "pool", pool)
        taken = {int(lease.spec["number"]) for lease in leases}
        for committed in taken & set(pending):  # a pick is pending only until committed:
            del pending[committed]  # once released, the number is free at once
        mine = [lease.spec["number"] for lease in leases if lease.spec["owner"] == owner.uid]
        if mine:
            return int(mine[0]), []
        # Numbers picked but not committed yet by other owners are taken too (as for
        # addresses): many automatons applied at once do not all pick the same number.
        number = choose(taken | {n for n, (uid, _) in pending.items() if uid != owner.uid})
        pending[number] = (owner.uid, now + PENDING_SECONDS)
        lease = Object(
            kind=LEASE,
            name=lease_name(pool, str(number)),
            spec={"number": number, "owner": owner.uid, "ref": owner.ref},
        )
        return number, [Put(LEASE, lease.name, lease.to_data(), 0)]


def release(pool: str, addresses: list[str | None]) -> list[Op]:
    return [Delete(LEASE, lease_name(pool, address)) for address in addresses if address]
