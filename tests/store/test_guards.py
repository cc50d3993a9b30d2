"""Guarded commits: a write made for a shard applies only while the shard's owner key is
still at the epoch its writer holds (etcd); SQLite, the store of one controller, ignores
guards."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from autonet.store import Conflict, Fenced, Guard, Put, open_store
from autonet.store.etcd import EtcdStore

from .etcd_server import EtcdServer, needs_etcd

_roots = itertools.count()


def etcd_store(server: EtcdServer) -> EtcdStore:
    store = open_store(f"etcd://{server.endpoint}/guards/{next(_roots)}")
    assert isinstance(store, EtcdStore)
    return store


async def claim(store: EtcdStore, shard: str, lease: int = 0) -> int:
    """Put the shard's owner key (on ``lease``); its revision, the epoch."""
    response = await store.client.put(store.owner_key(shard), b'{"member": "m1"}', lease=lease)
    return int(response.header.revision)


async def test_sqlite_ignores_guards(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        (record,) = await store.commit([Put("Vpc", "blue", {"a": 1})], [Guard("vpc/blue", 12345)])
        assert record is not None and record.data == {"a": 1}
    finally:
        await store.close()


@needs_etcd
async def test_a_guarded_commit_applies_while_the_owner_key_is_at_its_epoch(etcd: EtcdServer) -> None:
    store = etcd_store(etcd)
    try:
        epoch = await claim(store, "vpc/blue")
        (record,) = await store.commit([Put("Vpc", "blue", {"a": 1})], [Guard("vpc/blue", epoch)])
        assert record is not None
        assert (await store.get("Vpc", "blue")) == record
    finally:
        await store.close()


@needs_etcd
async def test_a_commit_after_the_owner_lease_expired_is_fenced_and_changes_nothing(etcd: EtcdServer) -> None:
    store = etcd_store(etcd)
    try:
        lease, _ = await store.lease_grant(5)
        epoch = await claim(store, "vpc/blue", lease)
        await store.put("Vpc", "blue", {"a": 1})
        before = await store.get("Vpc", "blue")
        assert before is not None
        await store.lease_revoke(lease)  # the owner key goes with the lease
        with pytest.raises(Fenced) as caught:
            await store.commit(
                [Put("Vpc", "blue", {"a": 2}, before.revision), Put("Network", "n", {})],
                [Guard("vpc/blue", epoch)],
            )
        assert str(caught.value) == f"write to vpc/blue rejected: no longer its owner (epoch {epoch})"
        assert isinstance(caught.value, Conflict) and caught.value.actual == 0
        assert await store.get("Vpc", "blue") == before
        assert await store.get("Network", "n") is None
        # A new owner's key is another epoch: the old guard still fails, the new one holds.
        new_epoch = await claim(store, "vpc/blue")
        with pytest.raises(Fenced) as again:
            await store.commit([Put("Vpc", "blue", {"a": 3})], [Guard("vpc/blue", epoch)])
        assert again.value.actual == new_epoch
        await store.commit([Put("Vpc", "blue", {"a": 3})], [Guard("vpc/blue", new_epoch)])
    finally:
        await store.close()


@needs_etcd
async def test_a_failed_guard_wins_over_a_failed_expectation(etcd: EtcdServer) -> None:
    """Fenced, not a plain Conflict: the writer must drop the shard, not re-read and retry."""
    store = etcd_store(etcd)
    try:
        with pytest.raises(Fenced):
            await store.commit([Put("Vpc", "blue", {}, expected_revision=7)], [Guard("hosts", 99)])
        epoch = await claim(store, "hosts")
        with pytest.raises(Conflict) as caught:
            await store.commit([Put("Vpc", "blue", {}, expected_revision=7)], [Guard("hosts", epoch)])
        assert not isinstance(caught.value, Fenced)
    finally:
        await store.close()
