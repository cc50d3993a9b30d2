"""The SQLite backend: the default store of a single controller.

Layout of the database file::

    objects(kind, name, revision, data)        the current state, one row per key
    events(revision, seq, type, kind, name, data)
                                               the change history that watch replays
    meta(key, value)                           'revision': the global revision;
                                               'compacted': history <= it is dropped

The global revision lives in ``meta`` rather than being derived from the rows,
so it never goes backwards — not after deletes, not after a restart.

Concurrency. SQLite statements on a local file take microseconds, so they run
inline in the calling coroutine: no thread per call, no awaits inside a
transaction. One connection is shared and guarded by a :class:`threading.Lock`
(never held across an ``await``, so it cannot deadlock the event loop, and it
keeps the store safe even if used from several threads or event loops).
Every write is a ``BEGIN IMMEDIATE`` transaction that reads the revision, checks
the expectations and writes — so it is atomic also against a second process
that opens the same file (WAL mode lets readers proceed meanwhile; a busy
timeout makes writers queue instead of failing).

Watch. A watcher replays ``events`` in chunks of revisions, then sleeps until a
write made through this same object wakes it (an :class:`asyncio.Event` per
watcher), or at most ``poll_interval`` seconds — which is how writes made by
other processes are seen.

History is bounded: once it is more than 10% over ``history`` revisions, the
oldest events are dropped down to ``history`` (amortised: one bulk delete per
``history/10`` writes). A watch that needs dropped events raises
:class:`Compacted`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from autonet.store.base import (
    Check,
    Compacted,
    Delete,
    Event,
    Guard,
    Op,
    Put,
    Record,
    SingleWrites,
    Store,
    StoreError,
    check_expectation,
    encode_data,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, name TEXT NOT NULL, revision INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
    kind TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
"""

_WATCH_CHUNK = 1000  # revisions replayed per read while a watcher catches up


def open_url(url: str) -> Store:  # (typed as Store: mypy checks that SqliteStore is one)
    """Open ``sqlite:///abs/path/store.db`` (the file and its parent dirs are created)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise StoreError(f"bad SQLite store URL {url!r}: expected sqlite:///absolute/path.db")
    return SqliteStore(parts.path)


class SqliteStore(SingleWrites):
    """A :class:`~autonet.store.base.Store` in one SQLite file (see the module docs)."""

    def __init__(
        self,
        path: str | Path,
        *,
        history: int = 100_000,
        poll_interval: float = 0.05,
        busy_timeout: float = 5.0,
    ) -> None:
        if history < 1:
            raise StoreError(f"history must be >= 1 revision, not {history}")
        self.path = Path(path)
        self.history = history
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open SQLite store {self.path}: {e}") from e
        self._conn: sqlite3.Connection | None = conn
        with self._transaction(write=True) as db:
            for statement in _SCHEMA.split(";"):  # executescript() would COMMIT first
                if statement.strip():
                    db.execute(statement)

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path}>"

    # -- plumbing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """Run a block in one transaction on the shared connection; map sqlite errors."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"store {self.path} is closed")
            db = self._conn
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                except BaseException:
                    db.rollback()
                    raise
                db.commit()
            except sqlite3.Error as e:
                raise StoreError(f"SQLite store {self.path}: {e}") from e

    @staticmethod
    def _meta(db: sqlite3.Connection, key: str) -> int:
        value: int = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
        return value

    @staticmethod
    def _read(db: sqlite3.Connection, kind: str, name: str) -> Record | None:
        row = db.execute(
            "SELECT revision, data FROM objects WHERE kind = ? AND name = ?", (kind, name)
        ).fetchone()
        return None if row is None else Record(kind, name, row[0], json.loads(row[1]))

    def _wake_watchers(self) -> None:
        for loop, event in builtins.list(self._waiters):
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(event.set)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, kind: str, name: str) -> Record | None:
        with self._transaction() as db:
            return self._read(db, kind, name)

    async def list(self, kind: str | None = None, prefix: str = "") -> builtins.list[Record]:
        query = "SELECT kind, name, revision, data FROM objects WHERE substr(name, 1, ?) = ?"
        args: builtins.list[Any] = [len(prefix), prefix]
        if kind is not None:
            query += " AND kind = ?"
            args.append(kind)
        with self._transaction() as db:
            rows = db.execute(query + " ORDER BY kind, name", args).fetchall()
        return [Record(k, n, r, json.loads(d)) for k, n, r, d in rows]

    async def revision(self) -> int:
        with self._transaction() as db:
            return self._meta(db, "revision")

    # -- writes ----------------------------------------------------------------------------

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> builtins.list[Record | None]:
        # Guards are ignored: one controller owns every shard of a SQLite store.
        encoded: dict[int, str] = {}  # op index -> JSON of a Put, encoded before locking
        written: set[tuple[str, str]] = set()
        for i, op in enumerate(ops):
            if isinstance(op, Put):
                encoded[i] = encode_data(op.kind, op.name, op.data)
            if isinstance(op, Put | Delete):
                if (op.kind, op.name) in written:
                    raise StoreError(f"{op.kind}/{op.name} is written twice in one commit")
                written.add((op.kind, op.name))

        with self._transaction(write=True) as db:
            before = {(op.kind, op.name): self._read(db, op.kind, op.name) for op in ops}
            for op in ops:
                check_expectation(op.kind, op.name, op.expected_revision, before[op.kind, op.name])

            revision = self._meta(db, "revision") + 1
            results: builtins.list[Record | None] = []
            events: builtins.list[tuple[Any, ...]] = []
            for i, op in enumerate(ops):
                current = before[op.kind, op.name]
                if isinstance(op, Put):
                    db.execute(
                        "INSERT INTO objects VALUES (?, ?, ?, ?) ON CONFLICT (kind, name)"
                        " DO UPDATE SET revision = excluded.revision, data = excluded.data",
                        (op.kind, op.name, revision, encoded[i]),
                    )
                    events.append(("put", op.kind, op.name, encoded[i]))
                    results.append(Record(op.kind, op.name, revision, json.loads(encoded[i])))
                elif isinstance(op, Delete) and current is not None:
                    db.execute("DELETE FROM objects WHERE kind = ? AND name = ?", (op.kind, op.name))
                    events.append(("delete", op.kind, op.name, json.dumps(current.data)))
                    results.append(current)
                else:  # a Check, or a Delete of an absent key
                    results.append(current if isinstance(op, Check) else None)
            if not events:
                return results  # nothing written: no new revision
            db.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                [(revision, seq, *event) for seq, event in enumerate(events)],
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (revision,))
            self._compact(db, revision)
        self._wake_watchers()
        return results

    def _compact(self, db: sqlite3.Connection, revision: int) -> None:
        """Drop history older than ``self.history`` revisions, once it is 10% over."""
        if revision - self._meta(db, "compacted") > self.history + self.history // 10:
            keep_after = revision - self.history
            db.execute("DELETE FROM events WHERE revision <= ?", (keep_after,))
            db.execute("UPDATE meta SET value = ? WHERE key = 'compacted'", (keep_after,))

    # -- watch -----------------------------------------------------------------------------

    def _read_events(
        self, after: int, kinds: tuple[str, ...] | None
    ) -> tuple[builtins.list[Event], int, int]:
        """Events in ``(after, after + chunk]``; returns them, the new position and the head."""
        with self._transaction() as db:
            head = self._meta(db, "revision")
            compacted = self._meta(db, "compacted")
            if after < compacted:
                raise Compacted(
                    f"store {self.path}: history up to revision {compacted} was compacted,"
                    f" cannot watch from revision {after}"
                )
            upto = min(head, after + _WATCH_CHUNK)
            query = "SELECT type, kind, name, revision, data FROM events"
            query += " WHERE revision > ? AND revision <= ?"
            args: builtins.list[Any] = [after, upto]
            if kinds is not None:
                query += f" AND kind IN ({', '.join('?' * len(kinds))})"
                args.extend(kinds)
            rows = db.execute(query + " ORDER BY revision, seq", args).fetchall()
        events = [Event(_event_type(t), Record(k, n, r, json.loads(d))) for t, k, n, r, d in rows]
        return events, max(after, upto), head

    async def watch(self, from_revision: int, kinds: Collection[str] | None = None) -> AsyncIterator[Event]:
        wanted = None if kinds is None else tuple(sorted(set(kinds)))
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        self._waiters.add(waiter)
        try:
            position = max(from_revision, 0)
            while True:
                waiter[1].clear()  # before reading: a write after this read will set it again
                events, position, head = self._read_events(position, wanted)
                for event in events:
                    yield event
                if position >= head:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_interval):
                            await waiter[1].wait()
        finally:
            self._waiters.discard(waiter)

    async def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._wake_watchers()  # they fail fast with "store is closed" instead of polling


def _event_type(value: str) -> Literal["put", "delete"]:
    return "delete" if value == "delete" else "put"
