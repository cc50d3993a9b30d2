"""A thin asyncio client for etcd's v3 gRPC API: KV, transactions, watch, leases, compaction.

Why our own client: with the pinned grpcio/protobuf, ``etcd3`` (python-etcd3) does not import,
``aetcd`` has no TLS and ``etcd-sdk-python`` is synchronous. This module speaks etcd's
protocol directly over ``grpc.aio`` with message classes generated from etcd 3.4's own
``rpc.proto``/``kv.proto``/``auth.proto`` (``autonet.store.etcdrpc``, see ``make proto``).
Those protos live under the proto package ``autonet_etcd.*`` so that they cannot clash with
another etcd stub set loaded in the same process; the gRPC *method paths* on the wire stay
etcd's own (``/etcdserverpb.KV/Range`` ...), which is why the calls are declared here
(:data:`METHODS`) rather than through generated service stubs.

Endpoints. The client is given one or more ``host:port`` endpoints. It uses the first one
that answers and stays on it; when a call fails with ``UNAVAILABLE`` it moves to the next
one (round robin). Reads, watches and lease keepalives are then retried on the next
endpoint. A write is sent only over a connection that is up (a new one is first tried
with a cheap local read), so it fails over only when it was never sent; a write lost on
an established connection may or may not have been applied, so it fails with
:class:`EtcdError` and the caller re-reads (the object pipeline does this anyway after
any store error).

TLS. Given a CA certificate the client verifies the server with it; given also a client
certificate and key it authenticates with them (mutual TLS, etcd's ``--client-cert-auth``).

Errors are :class:`~autonet.store.base.StoreError`\\ s: :class:`EtcdError` (with the gRPC
status code) or :class:`~autonet.store.base.Compacted` when a watch asks for history that
etcd has compacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from autonet.store.base import Compacted, StoreError
from autonet.store.etcdrpc import rpc_pb2 as rpc

log = logging.getLogger(__name__)

Request = TypeVar("Request", bound=Any)
Response = TypeVar("Response", bound=Any)


@dataclass(frozen=True, slots=True)
class Method(Generic[Request, Response]):
    """One RPC of etcd's API: its service and name (the wire path) and its message types."""

    service: str
    name: str
    request: type[Request]
    response: type[Response]

    @property
    def path(self) -> str:
        return f"/etcdserverpb.{self.service}/{self.name}"  # etcd's own package, not ours


RANGE = Method("KV", "Range", rpc.RangeRequest, rpc.RangeResponse)
PUT = Method("KV", "Put", rpc.PutRequest, rpc.PutResponse)
DELETE_RANGE = Method("KV", "DeleteRange", rpc.DeleteRangeRequest, rpc.DeleteRangeResponse)
TXN = Method("KV", "Txn", rpc.TxnRequest, rpc.TxnResponse)
COMPACT = Method("KV", "Compact", rpc.CompactionRequest, rpc.CompactionResponse)
WATCH = Method("Watch", "Watch", rpc.WatchRequest, rpc.WatchResponse)
LEASE_GRANT = Method("Lease", "LeaseGrant", rpc.LeaseGrantRequest, rpc.LeaseGrantResponse)
LEASE_REVOKE = Method("Lease", "LeaseRevoke", rpc.LeaseRevokeRequest, rpc.LeaseRevokeResponse)
LEASE_KEEPALIVE = Method("Lease", "LeaseKeepAlive", rpc.LeaseKeepAliveRequest, rpc.LeaseKeepAliveResponse)
LEASE_TTL = Method("Lease", "LeaseTimeToLive", rpc.LeaseTimeToLiveRequest, rpc.LeaseTimeToLiveResponse)
STATUS = Method("Maintenance", "Status", rpc.StatusRequest, rpc.StatusResponse)

METHODS: tuple[Method[Any, Any], ...] = (
    RANGE,
    PUT,
    DELETE_RANGE,
    TXN,
    COMPACT,
    WATCH,
    LEASE_GRANT,
    LEASE_REVOKE,
    LEASE_KEEPALIVE,
    LEASE_TTL,
    STATUS,
)

_PROBE = rpc.RangeRequest(key=b"\0", count_only=True, serializable=True)  # answered by the member itself
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),  # a watch response carries a whole transaction
    ("grpc.max_send_message_length", -1),  # etcd itself limits requests (--max-request-bytes)
    ("grpc.keepalive_time_ms", 10_000),  # notice a dead endpoint under a quiet watch
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),  # etcd refuses pings without a stream
    ("grpc.enable_retries", 0),  # failover is ours, see the module docs
]


class EtcdError(StoreError):
    """A failed etcd call; ``code`` is its gRPC status code (``None`` if it has none)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Tls:
    """PEM files for TLS to etcd: the CA that signed the servers' certificates and,
    for mutual TLS, this client's certificate and key."""

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise StoreError("etcd TLS: a client certificate needs its key and a key needs its certificate")

        def read(path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as e:
                raise StoreError(f"etcd TLS: cannot read {path}: {e.strerror}") from e

        return grpc.ssl_channel_credentials(read(self.cacert), read(self.key), read(self.cert))


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix`` (etcd's convention)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


class EtcdClient:
    """etcd's KV, Watch, Lease and Compact calls over one ``grpc.aio`` channel at a time.

    All methods raise :class:`EtcdError` (or :class:`Compacted`); see the module docs for
    how endpoints fail over.
    """

    def __init__(self, endpoints: Sequence[str], *, tls: Tls | None = None, timeout: float = 10.0) -> None:
        if not endpoints:
            raise StoreError("etcd: no endpoints given")
        self.endpoints = tuple(endpoints)
        self.timeout = timeout
        self._credentials = tls.credentials() if tls is not None else None
        self._index = 0  # the endpoint in use
        self._channel: grpc.aio.Channel | None = None
        self._retired: dict[grpc.aio.Channel, asyncio.TimerHandle] = {}  # channel -> its closing
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        tls = " tls" if self._credentials is not None else ""
        return f"<EtcdClient {','.join(self.endpoints)}{tls} using {self.endpoint}>"

    @property
    def endpoint(self) -> str:
        """The endpoint in use (or the next to be tried)."""
        return self.endpoints[self._index]

    # -- channels and failover -------------------------------------------------------------

    def _current(self) -> grpc.aio.Channel:
        if self._closed:
            raise EtcdError("etcd client is closed")
        if self._channel is None:
            target = self.endpoint
            if self._credentials is not None:
                self._channel = grpc.aio.secure_channel(target, self._credentials, options=_CHANNEL_OPTIONS)
            else:
                self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        return self._channel

    def _fail_over(self, channel: grpc.aio.Channel, error: grpc.aio.AioRpcError) -> None:
        """``channel`` failed with UNAVAILABLE: move on to the next endpoint (once per failure)."""
        retired = self._channel
        if retired is None or retired is not channel:
            return  # somebody already moved on
        old = self.endpoint
        self._index = (self._index + 1) % len(self.endpoints)
        self._channel = None
        if len(self.endpoints) > 1:
            log.warning("etcd %s unavailable (%s), trying %s", old, error.details(), self.endpoint)
        # calls still on it end by their deadline first; a watch there resumes on the new one
        self._retired[retired] = asyncio.get_running_loop().call_later(
            self.timeout, self._close_retired, retired
        )

    def _close_retired(self, channel: grpc.aio.Channel) -> None:
        self._retired.pop(channel, None)
        task = asyncio.ensure_future(channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _closed_under_us(self) -> bool:
        """Whether the CancelledError being handled is not this task's cancellation but a
        call cancelled by closing its channel (the client closed, or a retired channel's
        grace ran out). Raises :class:`EtcdError` if the client is closed."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return False
        if self._closed:
            raise EtcdError("etcd client is closed")
        return True

    @staticmethod
    def _reraise_cancellation(error: grpc.aio.AioRpcError) -> None:
        """A stream call whose task is being cancelled may end as an RPC error CANCELLED
        rather than a CancelledError: raise the cancellation, so that it is not mistaken
        for a failure to retry (which would swallow it)."""
        task = asyncio.current_task()
        if error.code() == grpc.StatusCode.CANCELLED and task is not None and task.cancelling():
            raise asyncio.CancelledError from None

    def _unavailable(self, error: grpc.aio.AioRpcError | None) -> EtcdError:
        why = error.details() if error is not None else "no answer"
        if self._credentials is not None and any(w in why for w in ("TSI_", "SSL", "andshake")):
            why += " (a TLS failure: do the CA, certificate and key match the etcd cluster's?)"
        return EtcdError(
            f"no etcd endpoint answers ({', '.join(self.endpoints)}): {why}", grpc.StatusCode.UNAVAILABLE
        )

    def _error(self, method: Method[Any, Any], error: grpc.aio.AioRpcError) -> StoreError:
        details = error.details() or ""
        if "required revision has been compacted" in details:
            return Compacted(f"etcd {self.endpoint}: {details}")
        if error.code() == grpc.StatusCode.CANCELLED and self._closed:
            return EtcdError("etcd client is closed", error.code())
        return EtcdError(f"etcd {self.endpoint} {method.name}: {error.code().name}: {details}", error.code())

    async def _unary(
        self, channel: grpc.aio.Channel, method: Method[Request, Response], request: Request
    ) -> Response:
        call = channel.unary_unary(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        response: Response = await call(request, timeout=self.timeout)
        return response

    async def _call(
        self, method: Method[Request, Response], request: Request, *, idempotent: bool
    ) -> Response:
        """One unary call, failing over as the module docs say: a write is sent only on a
        channel that is up (a cheap local read connects a new one first), so a write that
        fails over was never sent, and one lost on the way is reported, not repeated."""
        last: grpc.aio.AioRpcError | None = None
        for _ in range(len(self.endpoints) + 1):  # every endpoint, and the first one again
            channel = self._current()
            sent = False
            try:
                if not idempotent and channel.get_state() != grpc.ChannelConnectivity.READY:
                    await self._unary(channel, RANGE, _PROBE)
                sent = True
                return await self._unary(channel, method, request)
            except asyncio.CancelledError:
                if not self._closed_under_us():
                    raise
                if sent and not idempotent:
                    raise EtcdError(
                        f"etcd {method.name} was cut off with its channel; it may or may not have been applied"
                    ) from None
                continue  # the channel was retired: try again on the current one
            except grpc.aio.AioRpcError as e:
                self._reraise_cancellation(e)
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise self._error(method, e) from None
                endpoint, last = self.endpoint, e
                self._fail_over(channel, e)
                if sent and not idempotent:
                    raise EtcdError(
                        f"etcd {endpoint} went away during {method.name}; it may or may not have"
                        f" been applied: {e.details()}",
                        e.code(),
                    ) from None
        raise self._unavailable(last)

    # -- KV --------------------------------------------------------------------------------

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> rpc.RangeResponse:
        """Keys in ``[key, range_end)`` (just ``key`` if no ``range_end``), sorted by key;
        at ``revision`` if not 0. Linearizable."""
        request = rpc.RangeRequest(
            key=key,
            range_end=range_end,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
        )
        return await self._call(RANGE, request, idempotent=True)

    async def put(
        self, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False
    ) -> rpc.PutResponse:
        """Write ``key`` (attached to ``lease`` if not 0)."""
        request = rpc.PutRequest(key=key, value=value, lease=lease, prev_kv=prev_kv)
        return await self._call(PUT, request, idempotent=False)

    async def delete(
        self, key: bytes, range_end: bytes = b"", *, prev_kv: bool = False
    ) -> rpc.DeleteRangeResponse:
        """Delete ``key`` (or ``[key, range_end)``)."""
        request = rpc.DeleteRangeRequest(key=key, range_end=range_end, prev_kv=prev_kv)
        return await self._call(DELETE_RANGE, request, idempotent=False)

    async def txn(
        self,
        compare: Sequence[rpc.Compare],
        success: Sequence[rpc.RequestOp],
        failure: Sequence[rpc.RequestOp] = (),
    ) -> rpc.TxnResponse:
        """If every ``compare`` holds, apply ``success``, else ``failure``, atomically."""
        request = rpc.TxnRequest(compare=compare, success=success, failure=failure)
        read_only = all(op.WhichOneof("request") == "request_range" for op in [*success, *failure])
        return await self._call(TXN, request, idempotent=read_only)

    async def compact(self, revision: int, *, physical: bool = False) -> None:
        """Drop the history before ``revision`` (:class:`Compacted` if it already is)."""
        request = rpc.CompactionRequest(revision=revision, physical=physical)
        await self._call(COMPACT, request, idempotent=True)

    async def status(self) -> rpc.StatusResponse:
        """The endpoint's status: version, leader, raft term and index, revision."""
        return await self._call(STATUS, rpc.StatusRequest(), idempotent=True)

    # -- leases ----------------------------------------------------------------------------

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> rpc.LeaseGrantResponse:
        """A new lease of ``ttl`` seconds (etcd picks its ID unless ``lease_id`` is given)."""
        response = await self._call(
            LEASE_GRANT, rpc.LeaseGrantRequest(TTL=ttl, ID=lease_id), idempotent=False
        )
        if response.error:
            raise EtcdError(f"etcd {self.endpoint} LeaseGrant: {response.error}")
        return response

    async def lease_revoke(self, lease_id: int) -> None:
        """End the lease now: the keys attached to it are deleted."""
        await self._call(LEASE_REVOKE, rpc.LeaseRevokeRequest(ID=lease_id), idempotent=True)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> rpc.LeaseTimeToLiveResponse:
        """The lease's remaining TTL (-1 if it does not exist), granted TTL and keys."""
        return await self._call(
            LEASE_TTL, rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=keys), idempotent=True
        )

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease once; returns its new TTL in seconds (0: it has expired)."""
        last: grpc.aio.AioRpcError | None = None
        for _ in range(len(self.endpoints) + 1):
            channel = self._current()
            call = channel.stream_stream(
                LEASE_KEEPALIVE.path,
                request_serializer=rpc.LeaseKeepAliveRequest.SerializeToString,
                response_deserializer=rpc.LeaseKeepAliveResponse.FromString,
            )()
            try:
                async with asyncio.timeout(self.timeout):
                    await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                    response = await call.read()
            except TimeoutError:
                raise EtcdError(
                    f"etcd {self.endpoint} LeaseKeepAlive: no answer in {self.timeout}s",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ) from None
            except asyncio.CancelledError:
                if not self._closed_under_us():
                    raise
                continue
            except grpc.aio.AioRpcError as e:
                self._reraise_cancellation(e)
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise self._error(LEASE_KEEPALIVE, e) from None
                last = e
                self._fail_over(channel, e)
                continue
            finally:
                call.cancel()
            if response is grpc.aio.EOF:
                raise EtcdError(f"etcd {self.endpoint} LeaseKeepAlive: the stream ended")
            ttl: int = response.TTL
            return max(ttl, 0)
        raise self._unavailable(last)

    # -- watch -----------------------------------------------------------------------------

    async def watch(
        self, key: bytes, range_end: bytes = b"", *, start_revision: int = 0, prev_kv: bool = False
    ) -> AsyncGenerator[rpc.WatchResponse, None]:
        """Every change of ``[key, range_end)`` from ``start_revision`` (inclusive; 0: from now
        on), as etcd's watch responses that carry events (each holds whole revisions, in
        order), forever. Resumes on the next endpoint after a failure without losing or
        repeating events. :class:`Compacted` if ``start_revision`` is already compacted."""
        next_revision = start_revision
        failures = 0
        while True:
            channel = self._current()
            call = channel.stream_stream(
                WATCH.path,
                request_serializer=rpc.WatchRequest.SerializeToString,
                response_deserializer=rpc.WatchResponse.FromString,
            )()
            create = rpc.WatchCreateRequest(
                key=key, range_end=range_end, start_revision=next_revision, prev_kv=prev_kv
            )
            try:
                await call.write(rpc.WatchRequest(create_request=create))
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        raise EtcdError(f"etcd {self.endpoint} ended the watch stream")
                    failures = 0
                    if not next_revision:  # "from now on": resume after what is now
                        next_revision = response.header.revision + 1
                    if response.compact_revision:
                        raise Compacted(
                            f"etcd {self.endpoint}: history before revision {response.compact_revision}"
                            f" was compacted, cannot watch from revision {next_revision}"
                        )
                    if response.canceled:
                        raise EtcdError(
                            f"etcd {self.endpoint} cancelled the watch: {response.cancel_reason or 'no reason'}"
                        )
                    if response.events:
                        next_revision = response.events[-1].kv.mod_revision + 1
                        yield response
            except asyncio.CancelledError:
                if not self._closed_under_us():
                    raise
                log.info("etcd watch resumes from revision %d on %s", next_revision, self.endpoint)
            except grpc.aio.AioRpcError as e:
                self._reraise_cancellation(e)
                retired = e.code() == grpc.StatusCode.CANCELLED and channel is not self._channel
                if self._closed or (e.code() != grpc.StatusCode.UNAVAILABLE and not retired):
                    raise self._error(WATCH, e) from None
                failures += 1
                self._fail_over(channel, e)
                if failures > len(self.endpoints):
                    raise self._unavailable(e) from None
                await asyncio.sleep(0.05 * failures)
                log.info("etcd watch resumes from revision %d on %s", next_revision, self.endpoint)
            finally:
                call.cancel()

    # -- the end ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the channels; calls in progress fail, and so do later ones."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
        for retired, timer in list(self._retired.items()):
            timer.cancel()
            await retired.close()
        self._retired.clear()
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task
