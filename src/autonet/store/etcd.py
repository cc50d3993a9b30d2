"""The etcd backend: the store of several controllers, on an etcd v3 cluster (3.4 API).

URL::

    etcd://HOST:PORT[,HOST:PORT...][/ROOT][?cacert=CA.pem&cert=CLIENT.pem&key=CLIENT-key.pem]

The client uses the first endpoint that answers and fails over to the next on UNAVAILABLE
(:mod:`autonet.store.etcdclient`); ``cacert`` turns TLS on, ``cert`` and ``key`` make it
mutual. Further query options: ``timeout`` (seconds per call, default 10) and ``history``
(revisions of history the store keeps, default 100000; 0 leaves compaction to etcd's own
``--auto-compaction-*`` flags).

Key layout, under ``ROOT`` (default ``/autonet``)::

    ROOT/objects/<kind>/<name>     the object's data as compact JSON
    ROOT/meta/origin               written once, when the store is first used
    ROOT/members/<id>              a live controller, on its lease (control/members.py)
    ROOT/owners/<shard>            the owner of a shard, on its lease (control/shards.py)

Revisions. etcd's revision is global and a transaction bumps it once, whatever it writes:
that is the store's contract. The store counts from its origin: store revision = etcd
revision - the revision that created ``ROOT/meta/origin``, so a new store starts at 0 like
every backend, and several stores (roots) can share one etcd. ``Record.revision`` is the
key's ``mod_revision`` counted the same way. Writes to the same etcd outside ``ROOT/objects``
(leases, membership keys) advance the store's revision too: revisions stay increasing and
global, they are just not consecutive then.

Compare-and-swap: ``expected_revision=0`` is ``create_revision == 0`` (absent), ``n`` is
``mod_revision == origin + n``. :meth:`EtcdStore.commit` is one etcd transaction holding
every compare; its success branch reads the checked keys first, then writes in op order
(so a commit's watch events come in op order); its failure branch reads every compared key,
which names the first op whose expectation failed in the :class:`Conflict`. A commit's
guards (:class:`~autonet.store.base.Guard`) are more compares in the same transaction:
``mod_revision`` of ``ROOT/owners/<shard>`` equal to the guard's epoch (an etcd revision);
one that fails raises :class:`~autonet.store.base.Fenced` and nothing is written.

Watch is etcd's watch from ``origin + from_revision + 1`` with ``prev_kv``, so a delete
event carries the data the key last held. A watch of compacted history raises
:class:`Compacted`. History is bounded like SQLite's: once the head is more than 10% over
``history`` revisions past the last compaction, the store compacts down to ``history``.

Leases (for controller membership) are exposed as :meth:`EtcdStore.lease_grant`,
:meth:`~EtcdStore.lease_keepalive`, :meth:`~EtcdStore.lease_revoke`; ``store.client`` is
the underlying :class:`~autonet.store.etcdclient.EtcdClient` for keys outside the objects.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from autonet.store.base import (
    Check,
    Compacted,
    Delete,
    Event,
    Fenced,
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
from autonet.store.etcdclient import EtcdClient, EtcdError, Tls, prefix_end
from autonet.store.etcdrpc import kv_pb2
from autonet.store.etcdrpc import rpc_pb2 as rpc

log = logging.getLogger(__name__)

DEFAULT_PORT = 2379
DEFAULT_ROOT = "/autonet"
_PAGE = 1000  # keys per range call while listing
_OPTIONS = {"cacert", "cert", "key", "timeout", "history"}


def open_url(url: str) -> Store:  # (typed as Store: mypy checks that EtcdStore is one)
    """Open ``etcd://HOST:PORT[,HOST:PORT...][/ROOT][?options]`` (see the module docs)."""
    endpoints, root, options = parse_url(url)
    try:
        timeout = float(options.get("timeout", "10"))
        history = int(options.get("history", "100000"))
    except ValueError as e:
        raise StoreError(f"bad etcd store URL {url!r}: {e}") from e
    tls = None
    if {"cacert", "cert", "key"} & options.keys():
        paths = {name: Path(options[name]) if name in options else None for name in ("cacert", "cert", "key")}
        tls = Tls(paths["cacert"], paths["cert"], paths["key"])
    return EtcdStore(EtcdClient(endpoints, tls=tls, timeout=timeout), root=root, history=history)


def with_tls(url: str, cacert: Path | None, cert: Path | None, key: Path | None) -> str:
    """``url`` with the TLS files as options (absolute paths), checked to be readable:
    how ``autonet controller --etcd-cacert/--etcd-cert/--etcd-key`` reach the store."""
    parse_url(url)
    given = {name: path for name, path in (("cacert", cacert), ("cert", cert), ("key", key)) if path}
    if not given:
        return url
    Tls(cacert, cert, key).credentials()  # StoreError if a file is missing or cert/key are unpaired
    query = urlencode({name: str(path.resolve()) for name, path in given.items()})
    return f"{url}{'&' if '?' in url else '?'}{query}"


def parse_url(url: str) -> tuple[list[str], str, dict[str, str]]:
    """``(endpoints as host:port, root, options)`` of an etcd store URL."""
    parts = urlsplit(url)
    if parts.scheme != "etcd" or not parts.netloc or parts.fragment:
        raise StoreError(f"bad etcd store URL {url!r}: expected etcd://HOST:PORT[,HOST:PORT...][/ROOT]")
    endpoints = []
    for endpoint in parts.netloc.split(","):
        host, port = _host_port(endpoint)
        if not host:
            raise StoreError(f"bad etcd store URL {url!r}: endpoint {endpoint!r} has no host")
        endpoints.append(f"{host}:{port}")
    root = unquote(parts.path).rstrip("/") or DEFAULT_ROOT
    options: dict[str, str] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True, strict_parsing=False).items():
        if name not in _OPTIONS:
            raise StoreError(
                f"bad etcd store URL {url!r}: unknown option {name!r} (known: {sorted(_OPTIONS)})"
            )
        options[name] = values[-1]
    return endpoints, root, options


def _host_port(endpoint: str) -> tuple[str, int]:
    """``HOST[:PORT]`` with IPv6 addresses in brackets -> (host as gRPC wants it, port)."""
    if endpoint.startswith("["):
        host, _, rest = endpoint.partition("]")
        host += "]"
        port = rest.removeprefix(":")
    else:
        host, _, port = endpoint.partition(":")
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise StoreError(f"bad etcd endpoint {endpoint!r}: the port is not a number") from None
    if not 0 < number < 65536:
        raise StoreError(f"bad etcd endpoint {endpoint!r}: port out of range")
    return host, number


def _hint(error: EtcdError, ops: int) -> StoreError:
    """Say which etcd flag to raise when a commit is over one of etcd's request limits."""
    text = str(error)
    if "too many operations in txn request" in text:
        return EtcdError(f"{text} (a commit of {ops} ops: run etcd with a larger --max-txn-ops)", error.code)
    if "request is too large" in text:
        return EtcdError(
            f"{text} (a commit of {ops} ops: run etcd with a larger --max-request-bytes)", error.code
        )
    return error


class EtcdStore(SingleWrites):
    """A :class:`~autonet.store.base.Store` on etcd (see the module docs)."""

    def __init__(self, client: EtcdClient, *, root: str = DEFAULT_ROOT, history: int = 100_000) -> None:
        if history < 0:
            raise StoreError(f"history must be >= 0 revisions (0: etcd compacts), not {history}")
        self.client = client
        self.history = history
        self.root = root.rstrip("/").encode() + b"/"
        self._objects = self.root + b"objects/"
        self._origin_key = self.root + b"meta/origin"
        self.members_prefix = self.root + b"members/"
        self.owners_prefix = self.root + b"owners/"
        self._origin: int | None = None
        self._compacted: int | None = None  # the etcd revision this store last compacted to

    def __repr__(self) -> str:
        return f"<EtcdStore {','.join(self.client.endpoints)} {self.root.decode()}>"

    # -- keys and revisions ----------------------------------------------------------------

    def key(self, kind: str, name: str) -> bytes:
        """The etcd key of ``(kind, name)``."""
        if not kind or "/" in kind:
            raise StoreError(f"bad kind {kind!r}: it must be non-empty and without '/'")
        return self._objects + f"{kind}/{name}".encode()

    def owner_key(self, shard: str) -> bytes:
        """The etcd key naming the owner of ``shard`` (its revision is the shard's epoch)."""
        return self.owners_prefix + shard.encode()

    async def origin(self) -> int:
        """The etcd revision that is this store's revision 0 (its origin key is made on first use)."""
        if self._origin is None:
            absent = rpc.Compare(
                key=self._origin_key,
                target=rpc.Compare.CREATE,
                result=rpc.Compare.EQUAL,
                create_revision=0,
            )
            marker = json.dumps({"store": "autonet", "format": 1}).encode()
            response = await self.client.txn(
                [absent],
                [rpc.RequestOp(request_put=rpc.PutRequest(key=self._origin_key, value=marker))],
                [rpc.RequestOp(request_range=rpc.RangeRequest(key=self._origin_key))],
            )
            if response.succeeded:
                self._origin = response.header.revision
            else:
                self._origin = response.responses[0].response_range.kvs[0].create_revision
        return self._origin

    def _record(self, kv: kv_pb2.KeyValue, origin: int, revision: int | None = None) -> Record:
        kind, _, name = kv.key[len(self._objects) :].decode().partition("/")
        try:
            data = json.loads(kv.value) if kv.value else {}
        except ValueError as e:
            raise StoreError(f"{self}: {kind}/{name} does not hold JSON: {e}") from e
        return Record(kind, name, (kv.mod_revision if revision is None else revision) - origin, data)

    # -- reads -----------------------------------------------------------------------------

    async def get(self, kind: str, name: str) -> Record | None:
        key = self.key(kind, name)
        origin = await self.origin()
        response = await self.client.range(key)
        return self._record(response.kvs[0], origin) if response.kvs else None

    async def list(self, kind: str | None = None, prefix: str = "") -> builtins.list[Record]:
        start = self._objects if kind is None else self.key(kind, prefix)
        end = prefix_end(start)
        origin = await self.origin()
        for attempt in range(3):
            try:
                records = await self._snapshot(start, end, origin)
                break
            except Compacted:  # compacted past the first page's revision: read it all again
                if attempt == 2:
                    raise
        if kind is None and prefix:
            records = [r for r in records if r.name.startswith(prefix)]
        records.sort(key=lambda r: (r.kind, r.name))  # by (kind, name), not by key bytes
        return records

    async def _snapshot(self, start: bytes, end: bytes, origin: int) -> builtins.list[Record]:
        """Every record in ``[start, end)``, in pages, all at the first page's revision."""
        records: builtins.list[Record] = []
        at = 0
        while True:
            response = await self.client.range(start, end, limit=_PAGE, revision=at)
            at = at or response.header.revision
            records += [self._record(kv, origin) for kv in response.kvs]
            if not response.more or not response.kvs:
                return records
            start = response.kvs[-1].key + b"\0"

    async def revision(self) -> int:
        origin = await self.origin()
        response = await self.client.range(self._origin_key, count_only=True)
        return response.header.revision - origin

    # -- writes ----------------------------------------------------------------------------

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> builtins.list[Record | None]:
        keys = [self.key(op.kind, op.name) for op in ops]
        encoded: dict[int, bytes] = {}  # op index -> JSON of a Put
        written: set[bytes] = set()
        for i, op in enumerate(ops):
            if op.expected_revision is not None and op.expected_revision < 0:
                raise StoreError(
                    f"{op.kind}/{op.name}: expected_revision must be None or >= 0, not {op.expected_revision}"
                )
            if isinstance(op, Put):
                encoded[i] = encode_data(op.kind, op.name, op.data).encode()
            if isinstance(op, Put | Delete):
                if keys[i] in written:
                    raise StoreError(f"{op.kind}/{op.name} is written twice in one commit")
                written.add(keys[i])
        if not ops:
            return []
        origin = await self.origin()

        compares: builtins.list[rpc.Compare] = []
        compared: dict[bytes, int] = {}  # key -> its index in the failure branch's reads
        for guard in guards:
            key = self.owner_key(guard.shard)
            compares.append(
                rpc.Compare(
                    key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=guard.epoch
                )
            )
            compared.setdefault(key, len(compared))
        for op, key in zip(ops, keys, strict=True):
            if op.expected_revision is None:
                continue
            if op.expected_revision == 0:
                compares.append(
                    rpc.Compare(
                        key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0
                    )
                )
            else:
                compares.append(
                    rpc.Compare(
                        key=key,
                        target=rpc.Compare.MOD,
                        result=rpc.Compare.EQUAL,
                        mod_revision=origin + op.expected_revision,
                    )
                )
            compared.setdefault(key, len(compared))
        success: builtins.list[rpc.RequestOp] = []
        slot: dict[int, int] = {}  # op index -> its index in the success branch
        for i, op in enumerate(ops):  # the reads first: a Check returns the state before the commit
            if isinstance(op, Check):
                slot[i] = len(success)
                success.append(rpc.RequestOp(request_range=rpc.RangeRequest(key=keys[i])))
        for i, op in enumerate(ops):  # then the writes, in op order (their watch events' order)
            if isinstance(op, Put):
                slot[i] = len(success)
                success.append(rpc.RequestOp(request_put=rpc.PutRequest(key=keys[i], value=encoded[i])))
            elif isinstance(op, Delete):
                slot[i] = len(success)
                delete = rpc.DeleteRangeRequest(key=keys[i], prev_kv=True)
                success.append(rpc.RequestOp(request_delete_range=delete))
        failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=key)) for key in compared]

        try:
            response = await self.client.txn(compares, success, failure)
        except EtcdError as e:
            raise _hint(e, len(ops)) from e

        if not response.succeeded:
            reads = [r.response_range.kvs for r in response.responses]
            for guard in guards:
                kvs = reads[compared[self.owner_key(guard.shard)]]
                actual = kvs[0].mod_revision if kvs else 0
                if actual != guard.epoch:
                    raise Fenced(guard.shard, guard.epoch, actual)
            for op, key in zip(ops, keys, strict=True):
                if op.expected_revision is not None:
                    kvs = reads[compared[key]]
                    check_expectation(op.kind, op.name, op.expected_revision, self._first(kvs, origin))
            raise StoreError(f"{self}: the transaction failed but every expectation holds")  # not reached

        results: builtins.list[Record | None] = []
        revision = response.header.revision
        for i, op in enumerate(ops):
            answer = response.responses[slot[i]]
            if isinstance(op, Put):
                results.append(Record(op.kind, op.name, revision - origin, json.loads(encoded[i])))
            elif isinstance(op, Delete):
                results.append(self._first(answer.response_delete_range.prev_kvs, origin))
            else:
                results.append(self._first(answer.response_range.kvs, origin))
        if written:
            await self._maybe_compact(revision)
        return results

    def _first(self, kvs: Sequence[kv_pb2.KeyValue], origin: int) -> Record | None:
        return self._record(kvs[0], origin) if kvs else None

    # -- history ---------------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Drop the history up to store revision ``revision``: a watch from before it raises
        :class:`Compacted`. Compacting what already is compacted does nothing."""
        origin = await self.origin()
        with contextlib.suppress(Compacted):
            await self.client.compact(origin + revision)
        self._compacted = max(self._compacted or 0, origin + revision)

    async def _maybe_compact(self, head: int) -> None:
        """Keep ``history`` revisions, compacting once the head is 10% past that."""
        if not self.history:
            return
        floor = self._compacted if self._compacted is not None else await self.origin()
        if head - floor <= self.history + self.history // 10:
            return
        self._compacted = head - self.history
        try:
            await self.client.compact(self._compacted)
        except Compacted:
            pass  # another controller compacted further already
        except StoreError as e:  # the commit itself succeeded: compaction is retried later
            log.warning("%s: compaction to etcd revision %d failed: %s", self, self._compacted, e)
            self._compacted = floor

    # -- watch -----------------------------------------------------------------------------

    async def watch(self, from_revision: int, kinds: Collection[str] | None = None) -> AsyncIterator[Event]:
        wanted = None if kinds is None else frozenset(kinds)
        one_kind = wanted is not None and len(wanted) == 1
        start = self.key(next(iter(wanted or ())), "") if one_kind else self._objects  # just its keys
        origin = await self.origin()
        stream = self.client.watch(
            start, prefix_end(start), start_revision=origin + max(from_revision, 0) + 1, prev_kv=True
        )
        try:
            async for response in stream:
                for event in response.events:
                    if event.type == kv_pb2.Event.DELETE:
                        revision = event.kv.mod_revision
                        gone = event.prev_kv if event.HasField("prev_kv") else event.kv
                        record = self._record(gone, origin, revision)
                        if wanted is None or record.kind in wanted:
                            yield Event("delete", record)
                    else:
                        record = self._record(event.kv, origin)
                        if wanted is None or record.kind in wanted:
                            yield Event("put", record)
        except Compacted as e:
            raise Compacted(f"{self}: cannot watch from revision {from_revision}: {e}") from e
        finally:
            await stream.aclose()

    # -- leases ----------------------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new etcd lease: ``(lease ID, granted TTL in seconds)``."""
        response = await self.client.lease_grant(ttl)
        return response.ID, response.TTL

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease; its new TTL in seconds, 0 if it has already expired."""
        return await self.client.lease_keepalive(lease_id)

    async def lease_revoke(self, lease_id: int) -> None:
        """End the lease now; the keys attached to it are deleted."""
        await self.client.lease_revoke(lease_id)

    async def close(self) -> None:
        await self.client.close()
