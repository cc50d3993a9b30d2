"""The storage contract: records, events, operations, errors and the ``Store`` protocol.

Every object of the control plane lives in a store as a JSON document under a
``(kind, name)`` key. The store keeps one **global revision** counter: every
write (a single put/delete, or one multi-key :meth:`Store.commit`) bumps it by
one, and every key records the revision at which it was last written. This is
the etcd model, and it is what gives the object pipeline its two primitives:

* **compare-and-swap** — a write can carry ``expected_revision``: ``None`` writes
  unconditionally, ``0`` requires the key to be absent (create-only), ``n > 0``
  requires the key to exist at exactly revision ``n``. A failed expectation
  raises :class:`Conflict`, and the loser re-reads and retries.
* **watch** — every write is also an :class:`Event` in a bounded history, so a
  consumer can resume from the last revision it has seen and receive, in order,
  everything that happened since, then live events as they happen.

Several controllers on one store (etcd) shard the work between them; a commit made for a
shard carries a :class:`Guard` (the shard's owner key must still be at the revision the
controller claimed it at, its **epoch**), so a controller that lost the shard (paused,
cut off) cannot write: the commit raises :class:`Fenced` and changes nothing. One
controller alone (SQLite) owns everything: guards are no-ops there.

Backends (SQLite, etcd) implement :class:`Store`; the contract tests in
``tests/store`` are what "implements" means.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Record:
    """One stored object: its key, the revision of its last write, and its data."""

    kind: str
    name: str
    revision: int  # the global store revision at which this record was last written (> 0)
    data: dict[str, Any]  # JSON-serialisable


@dataclass(frozen=True, slots=True)
class Event:
    """One change, as delivered by :meth:`Store.watch`.

    For a ``delete``, ``record.data`` is the last data the key held and
    ``record.revision`` is the revision of the delete itself.
    """

    type: Literal["put", "delete"]
    record: Record


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``data`` under ``(kind, name)`` — an operation of :meth:`Store.commit`."""

    kind: str
    name: str
    data: dict[str, Any]
    expected_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``(kind, name)`` — an operation of :meth:`Store.commit`."""

    kind: str
    name: str
    expected_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """Write nothing, but fail the commit unless ``(kind, name)`` is at ``expected_revision``."""

    kind: str
    name: str
    expected_revision: int


Op = Put | Delete | Check


@dataclass(frozen=True, slots=True)
class Guard:
    """A fence on :meth:`Store.commit`: apply the commit only while the owner key of
    ``shard`` (``vpc/<name>``, ``hosts``) is still at revision ``epoch``, i.e. while the
    controller that claimed the shard at that epoch still owns it."""

    shard: str
    epoch: int


class StoreError(Exception):
    """Any failure of the store: bad URL, bad data, backend failure, closed store."""


class Conflict(StoreError):
    """A compare-and-swap expectation failed: somebody else wrote the key first."""

    def __init__(self, kind: str, name: str, expected: int, actual: int) -> None:
        self.kind, self.name, self.expected, self.actual = kind, name, expected, actual
        want = "absent" if expected == 0 else f"at revision {expected}"
        have = "absent" if actual == 0 else f"at revision {actual}"
        super().__init__(f"conflict on {kind}/{name}: expected {want}, but it is {have}")


class Fenced(Conflict):
    """A guarded commit was refused: the shard's owner key is no longer at the guard's
    epoch (its owner's lease expired, or it handed the shard over). Nothing was written."""

    def __init__(self, shard: str, epoch: int, actual: int) -> None:
        self.shard, self.epoch = shard, epoch
        self.kind, self.name, self.expected, self.actual = "owner", shard, epoch, actual
        StoreError.__init__(self, f"write to {shard} rejected: no longer its owner (epoch {epoch})")


class Compacted(StoreError):
    """A watch asked for history that was already dropped; re-list and watch from now."""


def check_expectation(kind: str, name: str, expected: int | None, current: Record | None) -> None:
    """Raise :class:`Conflict` unless ``current`` satisfies ``expected`` (see module docs)."""
    if expected is None:
        return
    if expected < 0:
        raise StoreError(f"{kind}/{name}: expected_revision must be None or >= 0, not {expected}")
    actual = current.revision if current is not None else 0
    if actual != expected:
        raise Conflict(kind, name, expected, actual)


def encode_data(kind: str, name: str, data: dict[str, Any]) -> str:
    """``data`` as compact JSON; :class:`StoreError` unless it is a JSON-serialisable dict."""
    if not isinstance(data, dict):
        raise StoreError(f"{kind}/{name}: data must be a dict, not {type(data).__name__}")
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{kind}/{name}: data is not JSON-serialisable: {e}") from e


class SingleWrites:
    """`put` and `delete` as one-operation commits: what a backend whose `commit` does
    the work inherits."""

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> builtins.list[Record | None]:
        raise NotImplementedError

    async def put(
        self, kind: str, name: str, data: dict[str, Any], expected_revision: int | None = None
    ) -> Record:
        (record,) = await self.commit([Put(kind, name, data, expected_revision)])
        assert record is not None
        return record

    async def delete(self, kind: str, name: str, expected_revision: int | None = None) -> Record | None:
        (record,) = await self.commit([Delete(kind, name, expected_revision)])
        return record


@runtime_checkable
class Store(Protocol):
    """What every backend provides. All keys are ``(kind, name)`` pairs of strings."""

    async def get(self, kind: str, name: str) -> Record | None:
        """The record under the key, or ``None``."""
        ...

    async def list(self, kind: str | None = None, prefix: str = "") -> builtins.list[Record]:
        """Records of ``kind`` (all kinds if ``None``) whose name starts with ``prefix``,
        sorted by ``(kind, name)``."""
        ...

    async def put(
        self, kind: str, name: str, data: dict[str, Any], expected_revision: int | None = None
    ) -> Record:
        """Write the key; returns the written record. :class:`Conflict` if the CAS fails."""
        ...

    async def delete(self, kind: str, name: str, expected_revision: int | None = None) -> Record | None:
        """Remove the key; returns the record as it was before, or ``None`` if it was absent.
        :class:`Conflict` if the CAS fails."""
        ...

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> builtins.list[Record | None]:
        """Apply all ops atomically, or none of them.

        Every expectation is checked against the state *before* the commit; if
        one fails, nothing changes and :class:`Conflict` is raised; if a guard
        fails (checked first), nothing changes and :class:`Fenced` is raised (a
        backend of one controller, SQLite, ignores guards). Otherwise all
        writes share one new revision (no new revision if nothing was written).
        A key may be written (Put/Delete) at most once per commit. Returns, per
        op: the written record (Put), the deleted record or ``None`` (Delete),
        the current record or ``None`` (Check).
        """
        ...

    async def revision(self) -> int:
        """The current global revision (0 for an empty, never-written store)."""
        ...

    def watch(self, from_revision: int, kinds: Collection[str] | None = None) -> AsyncIterator[Event]:
        """Every event with revision > ``from_revision`` (of ``kinds``, if given), in
        revision order (the events of one commit in the order of its ops): first the
        stored history, then live events, forever — until the consumer stops iterating.
        Raises :class:`Compacted` if part of that history was already dropped."""
        ...

    async def close(self) -> None:
        """Release the backend; the store must not be used afterwards."""
        ...
