"""Fencing: a controller that was paused — its keepalives stopped, its lease expired,
another member claimed its VPC — cannot write when it wakes up: the write is rejected,
logged in one line, changes nothing, and the shard is dropped; nor may its handlers call
agents. Writes from the API (a user's request) are not guarded: any controller takes them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from autonet.control.agents import AgentClient
from autonet.control.cache import ACTING_GUARDS
from autonet.control.context import Context
from autonet.control.outcomes import Advance, Outcome, Retry
from autonet.model.objects import Object
from autonet.store import Guard, Put

from .harness import Node, kinds_only, until


def gated_pipeline() -> tuple[object, str]:
    """Vpc Init: the handler waits for its controller's gate, then advances (one write)."""
    api = kinds_only()

    @api.operator("Vpc", "Init")
    async def provision(vpc: Object, ctx: Context) -> Outcome:
        ctx.extras["entered"].set()
        await ctx.extras["gate"].wait()
        return Advance(status={"vni": 4097})

    return api, "vpc/blue"


def with_gate(node: Node) -> Node:
    node.ctx.extras.update(gate=asyncio.Event(), entered=asyncio.Event())
    return node


async def test_a_paused_controllers_late_write_is_fenced_and_changes_nothing(
    nodes: Callable[..., Node], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    api, shard = gated_pipeline()
    a = with_gate(nodes("a", api=api))
    await a.start()
    vpc = Object(kind="Vpc", name="blue", spec={"cidrs": ["100.80.0.0/16"]}, status={"state": "Init"})
    await a.store.put("Vpc", "blue", vpc.to_data())
    await asyncio.wait_for(a.ctx.extras["entered"].wait(), 5)  # a's handler runs, holding the shard
    epoch = a.shards.mine[shard]
    before = await a.store.get("Vpc", "blue")

    await a.pause_keepalive()  # a is paused: no keepalives, its lease runs out
    b = with_gate(nodes("b", api=api))
    await b.start()
    await until(lambda: shard in b.owned(), 8, "b claims the VPC once a's lease is gone")
    assert b.shards.mine[shard] > epoch
    assert not a.membership.acting()

    a.ctx.extras["gate"].set()  # a wakes up: its handler returns and the runner writes
    line = f"write to {shard} rejected: no longer its owner (epoch {epoch})"
    await until(lambda: line in caplog.text, 5, "the fenced write is logged")
    assert caplog.text.count(line) == 1
    assert await a.store.get("Vpc", "blue") == before  # nothing written
    assert shard not in a.owned()

    # Nor may a's handlers call agents any more (the call is not even sent) ...
    client = AgentClient("h1", "127.0.0.1:9", gate=a.shards.gate)
    token = ACTING_GUARDS.set((Guard(shard, epoch),))
    try:
        with pytest.raises(Retry, match="not sent: controller a is not acting"):
            await client.call("Report", None)
    finally:
        ACTING_GUARDS.reset(token)
        await client.close()
    # ... but a user's write through a's API is taken: requests are not guarded.
    record = await a.store.get("Vpc", "blue")
    assert record is not None
    await a.ctx.store.commit([Put("Vpc", "blue", {**record.data, "spec": {"cidrs": ["100.81.0.0/16"]}})])
    b.ctx.extras["gate"].set()
