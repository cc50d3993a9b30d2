"""Agent clients: abandoning a lost host cuts the calls in flight to it short."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from autonet.agent.rpc import agent_pb2 as pb
from autonet.agent.rpc import agent_pb2_grpc as pb_grpc
from autonet.control.agents import AgentClients
from autonet.control.outcomes import Retry


class SlowAgent(pb_grpc.AgentServicer):
    """An agent that never answers in time (a host behind a partition, as the caller sees it)."""

    async def SyncVpc(self, request: pb.VpcState, context: Any) -> pb.SyncReport:
        await asyncio.sleep(30)
        return pb.SyncReport()

    async def Report(self, request: pb.ReportRequest, context: Any) -> pb.HostReport:
        return pb.HostReport(host="h1")


async def test_abandoning_a_host_turns_its_hanging_calls_into_retries_at_once() -> None:
    server = grpc.aio.server()
    pb_grpc.add_AgentServicer_to_server(SlowAgent(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    clients = AgentClients()
    try:
        address = f"127.0.0.1:{port}"
        assert (await clients.get("h1", address).call("Report", pb.ReportRequest())).host == "h1"
        hanging = asyncio.create_task(clients.get("h1", address).call("SyncVpc", pb.VpcState()))
        await asyncio.sleep(0.3)
        await clients.abandon("h1")
        with pytest.raises(Retry, match="abandoned"):  # not DEADLINE_EXCEEDED 30 s later
            await hanging
        # The host can be called again later (a new channel).
        assert (await clients.get("h1", address).call("Report", pb.ReportRequest())).host == "h1"
    finally:
        await clients.close()
        await server.stop(0)


async def test_a_cancelled_caller_is_still_cancelled() -> None:
    server = grpc.aio.server()
    pb_grpc.add_AgentServicer_to_server(SlowAgent(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    clients = AgentClients()
    try:
        call = asyncio.create_task(clients.get("h1", f"127.0.0.1:{port}").call("SyncVpc", pb.VpcState()))
        await asyncio.sleep(0.3)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        await clients.close()
        await server.stop(0)
