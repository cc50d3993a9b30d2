"""The Overwatch hook: a QoS manager that sees load samples and answers with QoS changes.

A plugin is an entry point in the group `autonet.overwatch` naming a factory; the
controller enables it with `--overwatch NAME[:key=value,...]` (the pairs become keyword
arguments). After every new load sample the controller calls `observe(snapshot)` (the
same snapshot as `GET /api/v1/load`) and applies the returned `QosChange`s exactly as a
user's `PUT /api/v1/automatons/NAME/qos` would: the automaton's `spec.qos` changes, and
its instances are reshaped on their hosts while they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from autonet.control.context import Context
from autonet.model.kinds import INIT
from autonet.model.objects import Object
from autonet.store import Conflict, Put

log = logging.getLogger(__name__)

GROUP = "autonet.overwatch"


@dataclass(frozen=True)
class QosChange:
    automaton: str
    ingress_mbps: float | None = None
    egress_mbps: float | None = None
    priority: str = "normal"
    reason: str = ""

    def qos(self) -> dict[str, Any]:
        qos: dict[str, Any] = {"priority": self.priority}
        if self.ingress_mbps:
            qos["ingress_mbps"] = self.ingress_mbps
        if self.egress_mbps:
            qos["egress_mbps"] = self.egress_mbps
        return qos


class Overwatch(Protocol):
    def observe(self, snapshot: dict[str, Any]) -> list[QosChange]: ...


def load(spec: str) -> Overwatch:
    """`name` or `name:key=value,key=value` -> the plugin instance."""
    name, _, args = spec.partition(":")
    params: dict[str, Any] = {}
    for pair in filter(None, args.split(",")):
        key, _, value = pair.partition("=")
        try:
            params[key] = float(value)
        except ValueError:
            params[key] = value
    found = {e.name: e for e in entry_points(group=GROUP)}
    if name not in found:
        raise ValueError(f"no Overwatch plugin {name!r} (installed: {', '.join(sorted(found)) or 'none'})")
    plugin: Overwatch = found[name].load()(**params)
    return plugin


async def set_qos(ctx: Context, automaton: str, qos: dict[str, Any] | None) -> Object:
    """Change an automaton's spec.qos (None removes it); its operator reshapes the instances."""
    for _ in range(10):
        obj = await ctx.get("Automaton", automaton)
        if obj is None or obj.metadata.deleting:
            raise KeyError(f'Automaton "{automaton}" not found')
        if obj.spec.get("qos") == qos:
            return obj
        spec = dict(obj.spec)
        if qos is None:
            spec.pop("qos", None)
        else:
            spec["qos"] = ctx.kinds["Automaton"].validate_spec(automaton, {**spec, "qos": qos})["qos"]
        updated = obj.model_copy(update={"spec": spec}, deep=True).with_status(state=INIT, reason="")
        try:
            await ctx.store.commit([Put(obj.kind, obj.name, updated.to_data(), obj.metadata.revision)])
            return updated
        except Conflict:
            continue
    raise RuntimeError(f'Automaton "{automaton}": qos update kept losing races')


async def run(ctx: Context, plugins: list[Overwatch]) -> None:
    table = ctx.load
    while True:
        async with table.updated:
            await table.updated.wait()
        await asyncio.sleep(0.1)  # let the other hosts' samples of this round arrive
        snapshot = await table.snapshot(ctx)
        for plugin in plugins:
            try:
                changes = plugin.observe(snapshot)
            except Exception:
                log.exception("Overwatch plugin %s failed", type(plugin).__name__)
                continue
            for change in changes:
                log.info("Overwatch: %s qos -> %s (%s)", change.automaton, change.qos(), change.reason)
                with contextlib.suppress(KeyError, Conflict):
                    await set_qos(ctx, change.automaton, change.qos())
