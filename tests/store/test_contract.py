"""The contract every Store backend must pass (the ``store`` fixture runs it per backend)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from typing import Any

import pytest

from autonet.store import Check, Compacted, Conflict, Delete, Event, Put, Store, StoreError


async def take(
    store: Store,
    from_revision: int,
    n: int,
    kinds: Collection[str] | None = None,
    timeout: float = 5.0,
) -> list[Event]:
    """The first ``n`` events of a watch (TimeoutError if they do not come in time)."""
    async with contextlib.aclosing(store.watch(from_revision, kinds)) as stream:  # type: ignore[type-var]
        async with asyncio.timeout(timeout):
            return [await anext(stream) for _ in range(n)]


def summary(events: list[Event]) -> list[tuple[str, str, str, int, dict[str, object]]]:
    return [(e.type, r.kind, r.name, r.revision, r.data) for e in events for r in [e.record]]


# -- single-key writes ---------------------------------------------------------------------


async def test_empty_store(store: Store) -> None:
    assert await store.revision() == 0
    assert await store.get("Vpc", "blue") is None
    assert await store.list() == []


async def test_put_and_get_roundtrip(store: Store) -> None:
    spec = {"cidrs": ["100.80.0.0/16", "fd00:80::/48"], "vni": 7}
    data: dict[str, Any] = {"spec": spec, "ok": True, "none": None, "n": 1.5}
    record = await store.put("Vpc", "blue", data)
    assert (record.kind, record.name, record.revision, record.data) == ("Vpc", "blue", 1, data)
    assert await store.get("Vpc", "blue") == record
    data["spec"]["vni"] = 8  # the store keeps its own copy
    assert (await store.get("Vpc", "blue")).data["spec"]["vni"] == 7  # type: ignore[union-attr]


async def test_non_json_data_is_rejected(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.put("Vpc", "blue", {"bad": object()})
    assert await store.revision() == 0


async def test_create_only(store: Store) -> None:
    first = await store.put("Vpc", "blue", {"n": 1}, expected_revision=0)
    with pytest.raises(Conflict) as info:
        await store.put("Vpc", "blue", {"n": 2}, expected_revision=0)
    message = str(info.value)
    assert "Vpc/blue" in message and str(first.revision) in message
    assert (info.value.expected, info.value.actual) == (0, first.revision)
    assert await store.get("Vpc", "blue") == first


async def test_cas_update(store: Store) -> None:
    first = await store.put("Vpc", "blue", {"n": 1})
    second = await store.put("Vpc", "blue", {"n": 2}, expected_revision=first.revision)
    assert second.revision > first.revision and second.data == {"n": 2}
    with pytest.raises(Conflict) as info:
        await store.put("Vpc", "blue", {"n": 3}, expected_revision=first.revision)
    assert (info.value.expected, info.value.actual) == (first.revision, second.revision)
    with pytest.raises(Conflict):  # a key that does not exist has no revision n > 0
        await store.put("Vpc", "red", {"n": 1}, expected_revision=1)
    assert await store.get("Vpc", "blue") == second
    assert await store.get("Vpc", "red") is None


async def test_unconditional_put_overwrites(store: Store) -> None:
    await store.put("Vpc", "blue", {"n": 1})
    record = await store.put("Vpc", "blue", {"n": 2})
    assert await store.get("Vpc", "blue") == record
    assert record.data == {"n": 2}


async def test_delete(store: Store) -> None:
    assert await store.delete("Vpc", "blue") is None  # absent, unconditional: nothing to do
    assert await store.revision() == 0
    record = await store.put("Vpc", "blue", {"n": 1})
    with pytest.raises(Conflict):
        await store.delete("Vpc", "blue", expected_revision=record.revision + 1)
    with pytest.raises(Conflict):
        await store.delete("Vpc", "blue", expected_revision=0)
    assert await store.get("Vpc", "blue") == record
    assert await store.delete("Vpc", "blue", expected_revision=record.revision) == record
    assert await store.get("Vpc", "blue") is None
    assert await store.revision() == record.revision + 1
    with pytest.raises(Conflict):
        await store.delete("Vpc", "blue", expected_revision=record.revision)


async def test_revisions_are_global_and_increase(store: Store) -> None:
    a1 = await store.put("Vpc", "a", {})
    b1 = await store.put("Network", "b", {})
    a2 = await store.put("Vpc", "a", {})
    await store.delete("Network", "b")
    c1 = await store.put("Vpc", "c", {})
    assert [a1.revision, b1.revision, a2.revision, c1.revision] == [1, 2, 3, 5]
    assert await store.revision() == 5
    assert (await store.get("Vpc", "a")).revision == 3  # type: ignore[union-attr]


async def test_list_order_and_prefix(store: Store) -> None:
    for kind, name in [
        ("Vpc", "b"),
        ("Instance", "web-2"),
        ("Vpc", "a"),
        ("Instance", "web-10"),
        ("Instance", "db-1"),
        ("Automaton", "web"),
    ]:
        await store.put(kind, name, {"name": name})
    keys = [(r.kind, r.name) for r in await store.list()]
    assert keys == sorted(keys) and len(keys) == 6
    assert [r.name for r in await store.list("Instance")] == ["db-1", "web-10", "web-2"]
    assert [r.name for r in await store.list("Instance", prefix="web-")] == ["web-10", "web-2"]
    assert [(r.kind, r.name) for r in await store.list(prefix="web")] == [
        ("Automaton", "web"),
        ("Instance", "web-10"),
        ("Instance", "web-2"),
    ]
    assert await store.list("Instance", prefix="%") == []  # no pattern syntax in prefixes
    assert await store.list("Host") == []


# -- transactions --------------------------------------------------------------------------


async def test_commit_applies_all_writes_at_one_revision(store: Store) -> None:
    gone = await store.put("Instance", "old", {"n": 0})
    host = await store.put("Host", "h1", {"state": "Ready"})
    results = await store.commit(
        [
            Put("Instance", "web-1", {"n": 1}, expected_revision=0),
            Put("Instance", "web-2", {"n": 2}),
            Delete("Instance", "old", expected_revision=gone.revision),
            Delete("Instance", "never-there"),
            Check("Host", "h1", expected_revision=host.revision),
        ]
    )
    assert await store.revision() == 3
    web1, web2, deleted, absent, checked = results
    assert web1 is not None and web2 is not None
    assert web1.revision == web2.revision == 3
    assert deleted == gone and absent is None and checked == host
    assert await store.get("Instance", "web-2") == web2
    assert await store.get("Instance", "old") is None


@pytest.mark.parametrize(
    "failing",
    [
        Check("Host", "h1", expected_revision=1),
        Check("Host", "h2", expected_revision=0),
        Put("Instance", "d", {"n": 9}, expected_revision=0),
        Delete("Instance", "d", expected_revision=99),
    ],
)
async def test_commit_is_all_or_nothing(store: Store, failing: Put | Delete | Check) -> None:
    a = await store.put("Instance", "a", {"n": 1})
    b = await store.put("Instance", "b", {"n": 1})
    await store.put("Host", "h1", {})
    await store.put("Host", "h2", {})
    await store.put("Instance", "d", {})
    revision = await store.revision()
    with pytest.raises(Conflict) as info:
        await store.commit(
            [
                Put("Instance", "a", {"n": 2}, expected_revision=a.revision),
                Delete("Instance", "b"),
                Put("Instance", "c", {"n": 1}),
                failing,
            ]
        )
    assert f"{failing.kind}/{failing.name}" in str(info.value)
    assert await store.revision() == revision
    assert await store.get("Instance", "a") == a
    assert await store.get("Instance", "b") == b
    assert await store.get("Instance", "c") is None


async def test_commit_without_writes_keeps_the_revision(store: Store) -> None:
    host = await store.put("Host", "h1", {})
    assert await store.commit([]) == []
    assert await store.commit([Check("Host", "h1", host.revision), Delete("Host", "nope")]) == [host, None]
    assert await store.revision() == host.revision


async def test_commit_rejects_writing_a_key_twice(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.commit([Put("Vpc", "a", {}), Delete("Vpc", "a")])
    assert await store.revision() == 0


async def test_concurrent_cas_increments(store: Store) -> None:
    await store.put("Counter", "c", {"n": 0})
    conflicts = 0

    async def increment(times: int) -> None:
        nonlocal conflicts
        for _ in range(times):
            while True:
                record = await store.get("Counter", "c")
                assert record is not None
                await asyncio.sleep(0)  # let the other task interleave between read and write
                try:
                    await store.put("Counter", "c", {"n": record.data["n"] + 1}, record.revision)
                    break
                except Conflict:
                    conflicts += 1

    await asyncio.gather(increment(100), increment(100))
    assert (await store.get("Counter", "c")).data == {"n": 200}  # type: ignore[union-attr]
    assert conflicts > 0


# -- watch ---------------------------------------------------------------------------------


async def test_watch_replays_history_then_live_events(store: Store) -> None:
    await store.put("Vpc", "a", {"n": 1})
    await store.put("Vpc", "b", {"n": 1})
    await store.put("Vpc", "a", {"n": 2})
    assert summary(await take(store, 1, 2)) == [
        ("put", "Vpc", "b", 2, {"n": 1}),
        ("put", "Vpc", "a", 3, {"n": 2}),
    ]

    async with contextlib.aclosing(store.watch(0)) as stream:  # type: ignore[type-var]
        async with asyncio.timeout(5):
            history = [await anext(stream) for _ in range(3)]
            assert [e.record.revision for e in history] == [1, 2, 3]
            live = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.01)  # the watcher is now waiting for new events
            await store.commit([Put("Vpc", "c", {"n": 1}), Delete("Vpc", "a")])
            await store.put("Vpc", "d", {})
            events = [await live, await anext(stream), await anext(stream)]
    assert summary(events) == [
        ("put", "Vpc", "c", 4, {"n": 1}),
        ("delete", "Vpc", "a", 4, {"n": 2}),
        ("put", "Vpc", "d", 5, {}),
    ]


async def test_watch_filters_kinds(store: Store) -> None:
    await store.put("Vpc", "a", {})
    await store.put("Host", "h", {})
    await store.put("Instance", "i", {})
    await store.delete("Vpc", "a")
    events = await take(store, 0, 3, kinds={"Vpc", "Instance"})
    assert [(e.type, e.record.kind, e.record.revision) for e in events] == [
        ("put", "Vpc", 1),
        ("put", "Instance", 3),
        ("delete", "Vpc", 4),
    ]
    with pytest.raises(TimeoutError):  # nothing more of those kinds
        await take(store, 4, 1, kinds={"Vpc"}, timeout=0.3)


async def test_watch_from_the_future_waits(store: Store) -> None:
    await store.put("Vpc", "a", {})
    waiting = asyncio.ensure_future(take(store, 3, 1))
    await asyncio.sleep(0.01)
    await store.put("Vpc", "b", {})  # revision 2: not after 3
    await store.put("Vpc", "c", {})  # revision 3: not after 3
    await store.put("Vpc", "d", {})
    assert summary(await waiting) == [("put", "Vpc", "d", 4, {})]


async def test_compacted_is_a_store_error() -> None:
    assert issubclass(Compacted, StoreError) and issubclass(Conflict, StoreError)
