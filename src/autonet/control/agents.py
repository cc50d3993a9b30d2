"""Clients of the hosts' agents: one gRPC channel per host, errors mapped to outcomes.

An unreachable agent is a temporary condition (`Retry`); an agent that rejects the
request as invalid is a permanent one (`Fail`). With several controllers, a `gate`
(control/shards.py) refuses the calls of a handler whose controller stopped acting or
lost the handler's shard, before they are sent (`Retry`).

With `tls` (agent/rpc/tls.py) every channel is mutual TLS with the controller's
certificate, and accepts only an agent certificate that names the host dialled. When the
controller's certificate files change, the next call to a host gets a new channel; the
old one is closed once the calls in flight on it had their time (`RETIRE_SECONDS`).
Without `tls` the channels are plaintext (the bench's hollow hosts on loopback).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import grpc

from autonet.agent.rpc import agent_pb2 as pb
from autonet.agent.rpc import agent_pb2_grpc as pb_grpc
from autonet.agent.rpc import tls as rpc_tls
from autonet.control.outcomes import Fail, Retry

RPC_TIMEOUT = 30.0
RETIRE_SECONDS = RPC_TIMEOUT + 5.0  # a replaced channel's calls in flight finish first

Gate = Callable[[], str | None]  # why a call may not be made now (None: it may)


class AgentClient:
    def __init__(
        self,
        host: str,
        address: str,
        gate: Gate | None = None,
        tls: rpc_tls.ClientTls | None = None,
    ) -> None:
        self.host = host
        self.address = address
        self.gate = gate
        self.generation = tls.generation if tls is not None else 0
        self.channel = rpc_tls.channel(tls, host, address)
        self.closed = False
        self.stub = pb_grpc.AgentStub(self.channel)

    async def call(self, method: str, request: Any, timeout: float = RPC_TIMEOUT) -> Any:
        if self.gate is not None and (why := self.gate()) is not None:
            raise Retry(f"{method} to host {self.host} not sent: {why}")
        try:
            return await getattr(self.stub, method)(request, timeout=timeout)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.closed and task is not None and not task.cancelling():
                # The channel was closed under the call (the host was abandoned), not
                # the caller cancelled: a temporary condition like any unreachable agent.
                raise Retry(f"agent on host {self.host}: {method}: abandoned (host lost)") from None
            raise
        except grpc.aio.AioRpcError as err:
            detail = err.details() or err.code().name
            if err.code() in (grpc.StatusCode.INVALID_ARGUMENT,):
                raise Fail(f"agent on host {self.host} rejected {method}: {detail}") from None
            raise Retry(f"agent on host {self.host}: {method}: {detail}") from None

    async def exec(self, request: pb.ExecRequest) -> AsyncIterator[pb.ExecChunk]:
        async for chunk in self.stub.Exec(request):
            yield chunk

    async def follow_logs(self, request: pb.LogsRequest) -> AsyncGenerator[bytes, None]:
        """An instance's log as FollowLogs streams it; the call ends when the caller stops."""
        call = self.stub.FollowLogs(request)
        try:
            async for reply in call:
                yield reply.data
        except grpc.aio.AioRpcError as err:
            raise Retry(
                f"agent on host {self.host}: FollowLogs: {err.details() or err.code().name}"
            ) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        self.closed = True
        await self.channel.close()


class AgentClients:
    def __init__(self, gate: Gate | None = None, tls: rpc_tls.ClientTls | None = None) -> None:
        self._clients: dict[str, AgentClient] = {}
        self.gate = gate
        self.tls = tls
        self._retiring: dict[asyncio.Task[None], AgentClient] = {}

    def get(self, host: str, address: str) -> AgentClient:
        if self.tls is not None:
            self.tls.refresh()
        generation = self.tls.generation if self.tls is not None else 0
        client = self._clients.get(host)
        if client is None or client.address != address or client.generation != generation:
            if client is not None:
                self._retire(client)
            client = AgentClient(host, address, self.gate, self.tls)
            self._clients[host] = client
        return client

    def _retire(self, client: AgentClient) -> None:
        """Close a replaced channel later: calls still running on it are not cut short."""

        async def later() -> None:
            await asyncio.sleep(RETIRE_SECONDS)
            await client.close()

        task = asyncio.get_running_loop().create_task(later())
        self._retiring[task] = client
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def abandon(self, host: str) -> None:
        """Give up on a host (it is lost): close its channel, which cancels every call in
        flight to it at once, instead of letting them hang until their deadline and hold
        up the syncs queued behind them. A later call opens a new channel."""
        client = self._clients.pop(host, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        for task, retired in list(self._retiring.items()):
            task.cancel()
            await retired.close()
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
