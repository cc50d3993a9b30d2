"""Host operator: bootstrap a registered host, resync its overlays, notice when it is lost.

    Init -> Connected -> Ready   (-> Lost when heartbeats stop; a heartbeat brings it back)

Agents register themselves through the API (Host `Init`). `Init` leases the host an
index (its VTEP addresses and flow-ID space derive from it) and asks the agent what it
holds; instances the store places on this host but the agent has lost (a wiped state
directory) are sent back to `Addressed`, so the pipeline wires them again. `Connected`
resends the overlay of every VPC the host has instances of, then the host is `Ready`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from autonet.agent.rpc import agent_pb2 as pb
from autonet.control.context import Context
from autonet.control.leases import lease_number
from autonet.control.outcomes import Advance, Outcome
from autonet.control.registry import PluginAPI
from autonet.control.vpcsync import VpcSyncer, wired_states
from autonet.model.flowid import MAX_HOSTS
from autonet.model.kinds import CONNECTED, INIT, LOST, READY
from autonet.model.objects import Object
from autonet.store import Conflict, Op, Put

LOST_AFTER = 10.0  # seconds without a heartbeat
CHECK_EVERY = 2.0


def register(api: PluginAPI) -> None:
    @api.operator("Host", INIT)
    async def bootstrap(host: Object, ctx: Context) -> Outcome:
        ops: list[Op] = []
        index = host.status.get("index")
        if index is None:

            def lowest_free(taken: set[int]) -> int:
                return next(i for i in range(MAX_HOSTS) if i not in taken)

            index, ops = await lease_number(ctx, "host", host, lowest_free)
        agent = await ctx.agent_for(host.name)
        report = await agent.call("Bootstrap", pb.BootstrapRequest(host=host.name))
        known = {row.instance_uid for row in report.instances}
        for inst in await ctx.list("Instance"):
            if (
                inst.status.get("host") == host.name
                and inst.state in wired_states(ctx.kinds)
                and inst.uid not in known
                and not inst.metadata.deleting
            ):
                redo = inst.with_status(state="Addressed", reason="re-wiring: the agent lost it")
                ops.append(Put(inst.kind, inst.name, redo.to_data(), inst.metadata.revision))
        return Advance(status={"boot_id": report.boot_id, "index": index}, also=ops)

    @api.operator("Host", CONNECTED)
    async def resync(host: Object, ctx: Context) -> Outcome:
        vpcs = {
            i.status["vpc"]
            for i in await ctx.list("Instance")
            if i.status.get("host") == host.name and i.status.get("vpc")
        }
        await VpcSyncer.of(ctx).sync_all(vpcs)
        return Advance()

    async def watch_heartbeats(ctx: Context) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            now = datetime.now(UTC)
            for host in await ctx.list("Host"):
                seen = host.status.get("last_seen")
                if host.state != READY or not seen:
                    continue
                silent = (now - datetime.fromisoformat(seen)).total_seconds()
                if silent > LOST_AFTER:
                    lost = host.with_status(state=LOST, reason=f"no heartbeat for {silent:.0f}s")
                    with contextlib.suppress(Conflict):
                        await ctx.store.put(host.kind, host.name, lost.to_data(), host.metadata.revision)

    api.run_in_background(watch_heartbeats)
