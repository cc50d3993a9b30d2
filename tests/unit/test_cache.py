"""The controller's object cache and the address pools, against a real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from autonet.control.cache import ObjectCache
from autonet.control.context import Context
from autonet.control.registry import PluginAPI, load_plugins
from autonet.model.addressing import AddressPool
from autonet.model.errors import ExhaustedError
from autonet.model.objects import Object
from autonet.store import Conflict, Delete, Put, Record, Store


def context(store: Store) -> Context:
    return Context(store=store, kinds=load_plugins(PluginAPI(), only=["builtin"]).kinds)


def instance(name: str, host: str, automaton: str = "web") -> Object:
    return Object(
        kind="Instance",
        name=name,
        spec={"automaton": automaton, "ordinal": 0},
        status={"state": "Provisioned", "host": host},
    )


async def put(store: Store, obj: Object, expected: int | None = None) -> Record:
    return await store.put(obj.kind, obj.name, obj.to_data(), expected)


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.01)


async def test_reads_come_from_memory_and_a_handler_reads_its_own_write_at_once(store: Store) -> None:
    await put(store, instance("web-0", "h1"))
    ctx = context(store)
    await ctx.cache.load()
    cached = await ctx.get("Instance", "web-0")
    assert cached is not None and cached is await ctx.get("Instance", "web-0")  # parsed once
    moved = cached.with_status(host="h2")
    await ctx.store.commit([Put(moved.kind, moved.name, moved.to_data(), cached.metadata.revision)])
    # No watch runs here: the commit itself fed the cache.
    now = await ctx.get("Instance", "web-0")
    assert now is not None and now.status["host"] == "h2"
    assert [i.name for i in await ctx.by("Instance", "host", "h2")] == ["web-0"]
    assert await ctx.by("Instance", "host", "h1") == []  # the index moved with it
    assert ctx.cache.size("Instance", "placed", "h2") == 1


async def test_a_lost_compare_and_swap_refreshes_the_contested_key(store: Store) -> None:
    first = await put(store, instance("web-0", "h1"))
    ctx = context(store)
    await ctx.cache.load()
    await put(store, instance("web-0", "h3"), first.revision)  # another writer, unseen: no watch
    stale = await ctx.get("Instance", "web-0")
    assert stale is not None and stale.status["host"] == "h1"
    with pytest.raises(Conflict):
        changed = stale.with_status(host="h2")
        await ctx.store.commit([Put(changed.kind, changed.name, changed.to_data(), stale.metadata.revision)])
    fresh = await ctx.get("Instance", "web-0")
    assert fresh is not None and fresh.status["host"] == "h3"  # the retry reads the winner


async def test_the_watch_brings_other_writers_changes_and_announces_each_once(store: Store) -> None:
    ctx = context(store)
    seen: list[tuple[str, str]] = []
    ctx.cache.subscribe(lambda kind, name: seen.append((kind, name)))
    task = asyncio.create_task(ctx.cache.run())
    try:
        await until(lambda: ctx.cache.ready)
        record = await put(store, instance("web-1", "h1"))  # behind the controller's back
        await until(lambda: ctx.cache.get("Instance", "web-1") is not None)
        await store.commit([Delete("Instance", "web-1", record.revision)])
        await until(lambda: ctx.cache.get("Instance", "web-1") is None)
        assert seen == [("Instance", "web-1")]  # a delete is not a change to act on
        assert ctx.cache.by("Instance", "automaton", "web") == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_older_record_never_replaces_a_newer_one(store: Store) -> None:
    cache = ObjectCache(store)
    await cache.load()
    new = Record("Instance", "web-0", 7, instance("web-0", "h2").to_data())
    old = Record("Instance", "web-0", 5, instance("web-0", "h1").to_data())
    assert cache.learn_put(new)
    assert not cache.learn_put(old)
    assert not cache.learn_delete("Instance", "web-0", 6)  # a delete older than what we hold
    found = cache.get("Instance", "web-0")
    assert found is not None and found.status["host"] == "h2"


async def test_a_relist_replaces_the_whole_view(store: Store) -> None:
    cache = ObjectCache(store)
    await put(store, instance("web-0", "h1"))
    await cache.load()
    await store.commit([Delete("Instance", "web-0")])
    await put(store, instance("web-1", "h1"))
    announced: list[str] = []
    cache.subscribe(lambda kind, name: announced.append(name))
    await cache.load()
    assert [o.name for o in cache.list("Instance")] == ["web-1"]
    assert [o.name for o in cache.by("Instance", "host", "h1")] == ["web-1"]
    assert announced == ["web-1"]


async def test_a_relist_announces_only_what_changed_while_the_watch_was_away(store: Store) -> None:
    cache = ObjectCache(store)
    for n in range(50):
        await put(store, instance(f"web-{n}", "h1"))
    first: list[str] = []
    cache.subscribe(lambda kind, name: first.append(name))
    await cache.load()
    assert len(first) == 50  # a first load: every object is news
    record = await store.get("Instance", "web-7")
    assert record is not None
    moved = Object.from_data(record.data, record.revision).with_status(host="h2")
    await put(store, moved, record.revision)
    await put(store, instance("web-50", "h1"))
    first.clear()
    await cache.load()
    assert sorted(first) == ["web-50", "web-7"]
    assert [o.name for o in cache.by("Instance", "host", "h2")] == ["web-7"]


def test_an_address_pool_hands_out_the_lowest_free_address_in_amortised_constant_time() -> None:
    held: set[str] = set()
    asked = 0

    def taken(address: str) -> bool:
        nonlocal asked
        asked += 1
        return address in held

    pool = AddressPool("100.64.0.0/22")
    for _ in range(1000):
        held.add(pool.pick(taken))
    assert asked == 1000  # one look per address: no scan from the start
    assert "100.64.0.0" not in held and "100.64.0.1" in held and "100.64.3.232" in held
    for address in ("100.64.0.9", "100.64.0.3"):
        held.discard(address)
        pool.release(address)
    assert pool.pick(taken) == "100.64.0.3"  # released addresses first, lowest first
    held.add("100.64.0.3")
    assert pool.pick(taken) == "100.64.0.9"


def test_a_fresh_pool_over_a_half_full_network_skips_what_is_held_and_says_when_it_is_full() -> None:
    held = {"100.64.7.1", "100.64.7.2", "100.64.7.4"}  # a restart: the leases are in the store
    pool = AddressPool("100.64.7.0/29")
    picked = [pool.pick(held.__contains__) for _ in range(3)]
    held.update(picked)
    assert picked == ["100.64.7.3", "100.64.7.5", "100.64.7.6"]  # never .0 nor .7
    with pytest.raises(ExhaustedError, match=r"100\.64\.7\.0/29 is exhausted"):
        pool.pick(held.__contains__)


async def test_a_released_lease_is_handed_out_again(store: Store) -> None:
    from autonet.control.leases import lease_addresses, release

    ctx = context(store)
    await ctx.cache.load()
    owners = [Object(kind="Instance", name=f"i{n}") for n in range(3)]
    held = {}
    for owner in owners:
        addresses, ops = await lease_addresses(ctx, "ip/n", {4: "100.64.9.0/24"}, owner, "n")
        await ctx.store.commit(ops)
        held[owner.name] = addresses[4]
    assert sorted(held.values()) == ["100.64.9.1", "100.64.9.2", "100.64.9.3"]
    again, _ = await lease_addresses(ctx, "ip/n", {4: "100.64.9.0/24"}, owners[0], "n")
    assert again[4] == held["i0"]  # an owner keeps what it holds
    task = asyncio.create_task(ctx.cache.run())  # releases reach the pool through the watch
    try:
        await until(lambda: ctx.cache.ready)
        await ctx.store.commit(release("ip/n", [held["i1"]]))
        await until(lambda: ctx.cache.get("Lease", f"ip/n/{held['i1']}") is None)
        ctx.leases.pending_addresses.pop("ip/n", None)  # as if the 5 s reservation had passed
        newcomer = Object(kind="Instance", name="i9")
        got, _ = await lease_addresses(ctx, "ip/n", {4: "100.64.9.0/24"}, newcomer, "n")
        assert got[4] == held["i1"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
