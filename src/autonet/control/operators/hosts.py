"""Host operator: bootstrap a registered host's agent and resynchronise its instances.

Agents register themselves through the API (Host `Init`). Bootstrapping asks the agent
what it holds; instances the store places on this host but the agent has lost (a
wiped state directory) are sent back to `Addressed`, so the pipeline wires them again.
"""

from __future__ import annotations

from autonet.agent.rpc import agent_pb2 as pb
from autonet.control.context import Context
from autonet.control.outcomes import Advance, Outcome
from autonet.control.registry import PluginAPI
from autonet.model.objects import Object
from autonet.store import Put

WIRED_STATES = {"Wired", "Routed", "Running", "Provisioned"}


def register(api: PluginAPI) -> None:
    @api.operator("Host", "Init")
    async def bootstrap(host: Object, ctx: Context) -> Outcome:
        agent = await ctx.agent_for(host.name)
        report = await agent.call("Bootstrap", pb.BootstrapRequest(host=host.name))
        known = {row.instance_uid for row in report.instances}
        lost = []
        for inst in await ctx.list("Instance"):
            if (
                inst.status.get("host") == host.name
                and inst.state in WIRED_STATES
                and inst.uid not in known
                and not inst.metadata.deleting
            ):
                redo = inst.with_status(state="Addressed", reason="re-wiring: the agent lost it")
                lost.append(Put(inst.kind, inst.name, redo.to_data(), inst.metadata.revision))
        return Advance(status={"boot_id": report.boot_id, "resynced": len(lost)}, also=lost)
