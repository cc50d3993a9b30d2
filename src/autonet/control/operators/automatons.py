"""Automaton operator: keep `replicas` instances, named `<automaton>-<ordinal>`.

Scaling up creates the missing ordinals; scaling down sends the highest ordinals to
`Terminating`. A changed command, user or environment sends running instances back to
`Routed`, where their process is restarted with the new spec.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from autonet.control.context import Context
from autonet.control.outcomes import Advance, Outcome, Remove, Retry
from autonet.control.registry import PluginAPI
from autonet.control.vpcsync import VpcSyncer
from autonet.model.kinds import TERMINATING
from autonet.model.objects import Metadata, Object
from autonet.store import Op, Put

RESTART_FROM = {"Running", "Provisioned"}


def process_hash(spec: dict[str, Any]) -> str:
    relevant = {key: spec.get(key) for key in ("command", "user", "env")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def instance_name(automaton: str, ordinal: int) -> str:
    return f"{automaton}-{ordinal}"


async def instances_of(ctx: Context, automaton: str) -> list[Object]:
    return [i for i in await ctx.list("Instance", prefix=f"{automaton}-") if i.spec["automaton"] == automaton]


def terminate(obj: Object) -> Op:
    gone = obj.model_copy(deep=True)
    gone.metadata.deleting = True
    gone.status["state"] = TERMINATING
    return Put(obj.kind, obj.name, gone.to_data(), obj.metadata.revision)


def register(api: PluginAPI) -> None:
    @api.operator("Automaton", "Init")
    async def reconcile_replicas(automaton: Object, ctx: Context) -> Outcome:
        wanted = int(automaton.spec.get("replicas", 1))
        current = {i.spec["ordinal"]: i for i in await instances_of(ctx, automaton.name)}
        ops: list[Op] = []
        busy = []
        digest = process_hash(automaton.spec)
        for ordinal in range(wanted):
            inst = current.get(ordinal)
            if inst is None:
                new = Object(
                    kind="Instance",
                    name=instance_name(automaton.name, ordinal),
                    metadata=Metadata(owner=automaton.ref),
                    spec={"automaton": automaton.name, "ordinal": ordinal},
                    status={"state": "Init"},
                )
                ops.append(Put(new.kind, new.name, new.to_data(), 0))
            elif inst.metadata.deleting:
                busy.append(inst.name)  # re-created once the old one is gone
            elif inst.state in RESTART_FROM and inst.status.get("process_hash") != digest:
                ops.append(
                    Put(
                        inst.kind,
                        inst.name,
                        inst.with_status(state="Routed").to_data(),
                        inst.metadata.revision,
                    )
                )
        for ordinal, inst in current.items():
            if ordinal >= wanted and not inst.metadata.deleting:
                ops.append(terminate(inst))
        if ops:
            await ctx.store.commit(ops)
        if busy:
            raise Retry(f"waiting for {', '.join(busy)} to finish terminating", delay=0.3)
        network = await ctx.get("Network", automaton.spec["network"])
        if network is not None:  # its ports may have changed: refresh the VPC's policy
            await VpcSyncer.of(ctx).sync(str(network.spec["vpc"]))
        return Advance(status={"replicas": wanted})

    @api.operator("Automaton", TERMINATING)
    async def delete_automaton(automaton: Object, ctx: Context) -> Outcome:
        remaining = await instances_of(ctx, automaton.name)
        ops = [terminate(i) for i in remaining if not i.metadata.deleting]
        if ops:
            await ctx.store.commit(ops)
        if remaining:
            raise Retry(f"waiting for {len(remaining)} instance(s) to terminate", delay=0.3)
        return Remove()
