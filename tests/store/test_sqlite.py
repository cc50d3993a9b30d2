"""What the SQLite backend promises beyond the contract: durability, several processes
sharing one file, bounded history, and URL handling."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autonet.store import Compacted, Conflict, StoreError, open_store
from autonet.store.sqlite import SqliteStore

from .test_contract import take


async def test_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    kept = await store.put("Vpc", "blue", {"spec": {"vni": 7}})
    await store.put("Vpc", "red", {})
    await store.delete("Vpc", "red")
    await store.close()

    store = SqliteStore(path)
    assert await store.get("Vpc", "blue") == kept
    assert await store.revision() == 3  # the delete of the newest key is not forgotten
    assert (await store.put("Vpc", "red", {})).revision == 4
    assert [e.type for e in await take(store, 0, 4)] == ["put", "put", "delete", "put"]
    await store.close()


async def test_file_and_parent_dirs_are_created_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    store = open_store(f"sqlite://{path}")
    assert isinstance(store, SqliteStore) and path.exists()
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_closed_store_raises(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.get("Vpc", "blue")


async def test_own_writes_wake_watchers_without_polling(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", poll_interval=60)
    waiting = asyncio.ensure_future(take(store, 0, 1, timeout=2))
    await asyncio.sleep(0.01)
    await store.put("Vpc", "blue", {})
    assert [e.record.name for e in await waiting] == ["blue"]
    await store.close()


async def test_second_store_on_the_same_file(tmp_path: Path) -> None:
    writer = SqliteStore(tmp_path / "store.db", poll_interval=60)
    reader = SqliteStore(tmp_path / "store.db")  # sees the writer's writes by polling only
    await writer.put("Vpc", "a", {"n": 1})
    waiting = asyncio.ensure_future(take(reader, 0, 3, timeout=2))
    await asyncio.sleep(0.01)
    record = await writer.put("Vpc", "b", {"n": 1})
    await writer.delete("Vpc", "a")
    assert [(e.type, e.record.name) for e in await waiting] == [("put", "a"), ("put", "b"), ("delete", "a")]
    with pytest.raises(Conflict):  # CAS holds across both store objects
        await reader.put("Vpc", "b", {"n": 2}, expected_revision=record.revision - 1)
    assert (await reader.put("Vpc", "b", {"n": 2}, record.revision)).revision == 4
    assert await writer.revision() == 4
    await writer.close()
    await reader.close()


INCREMENT = """
import asyncio, sys
from autonet.store import Conflict, open_store

async def main() -> None:
    store = open_store(sys.argv[1])
    for _ in range(int(sys.argv[2])):
        while True:
            record = await store.get("Counter", "c")
            try:
                await store.put("Counter", "c", {"n": record.data["n"] + 1}, record.revision)
                break
            except Conflict:
                pass
    await store.close()

asyncio.run(main())
"""


async def test_two_processes_cas_on_the_same_file(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'store.db'}"
    store = open_store(url)
    await store.put("Counter", "c", {"n": 0})
    args = [sys.executable, "-c", INCREMENT, url, "200"]
    procs = [subprocess.Popen(args) for _ in range(2)]
    deadline = time.monotonic() + 60
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for p in procs:
        p.kill()
        assert p.wait() == 0
    assert (await store.get("Counter", "c")).data == {"n": 400}  # type: ignore[union-attr]
    assert await store.revision() == 401
    await store.close()


async def test_history_is_compacted(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", history=10)
    for i in range(30):
        await store.put("Vpc", f"v{i}", {})
    head = await store.revision()
    with pytest.raises(Compacted, match="compacted"):
        await take(store, 0, 1)
    assert [e.record.revision for e in await take(store, head - 10, 10)] == list(range(head - 9, head + 1))
    with sqlite3.connect(tmp_path / "store.db") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] <= 11
    await store.close()


async def test_slow_watcher_overtaken_by_compaction(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", history=10)
    await store.put("Vpc", "a", {})
    stream = store.watch(0)
    assert (await anext(stream)).record.revision == 1
    for i in range(30):
        await store.put("Vpc", f"v{i}", {})
    with pytest.raises(Compacted):
        await anext(stream)
    await store.close()


@pytest.mark.parametrize("url", ["etcd2://h:1", "/var/lib/store.db", "SQLite:///x.db"])
def test_open_store_rejects_unknown_schemes(url: str) -> None:
    with pytest.raises(StoreError, match=r"unsupported store URL .* supported schemes are sqlite://"):
        open_store(url)


@pytest.mark.parametrize("url", ["sqlite://relative/store.db", "sqlite://"])
def test_open_store_rejects_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(StoreError, match="sqlite:///absolute/path"):
        open_store(url)
