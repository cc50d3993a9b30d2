"""The controller's health and measurements: /healthz, timing stats, Prometheus /metrics."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from autonet.api.auth import ALLOW_ADMIN, ALLOW_CLUSTER_READ, ALLOW_HEALTH, Principal
from autonet.api.state import API, State

router = APIRouter()

ClusterReader = Annotated[Principal, Depends(ALLOW_CLUSTER_READ)]

LOAD_SCOPES = ("instance", "automaton", "host")
LOAD_FIELDS = ("rx_bps", "tx_bps", "rx_pps", "tx_pps", "flows")


@router.get("/healthz")
async def healthz(state: State, caller: Annotated[Principal, Depends(ALLOW_HEALTH)]) -> dict[str, Any]:
    return {"ok": True, "revision": await state.ctx.store.revision(), "plugins": state.plugins.plugins}


@router.get(f"{API}/stats")
async def stats(state: State, caller: ClusterReader) -> dict[str, Any]:
    """Timing summaries kept in this controller's memory (control/stats.py): the
    placement decision (`placement.*`) and every handler (`handler <Kind>/<State>`);
    and how VPC syncs went (snapshots, deltas, hosts skipped, gaps repaired)."""
    return {**state.ctx.timings.summary(), "vpc_syncs": asdict(state.ctx.network.counts)}


@router.delete(f"{API}/stats")
async def reset_stats(state: State, caller: Annotated[Principal, Depends(ALLOW_ADMIN)]) -> dict[str, Any]:
    """Start the timing samples afresh (a benchmark measures one phase at a time)."""
    state.ctx.timings.reset()
    return {"reset": True}


@router.get("/metrics")
async def metrics(state: State, caller: ClusterReader) -> PlainTextResponse:
    """Prometheus: per instance, automaton and host rates and flows; objects per state."""
    ctx = state.ctx
    snapshot = await ctx.load.snapshot(ctx)
    lines = []
    for scope in LOAD_SCOPES:
        rows = snapshot[f"{scope}s"]
        for field in LOAD_FIELDS:
            metric = f"autonet_{scope}_{field}"
            lines.append(f"# TYPE {metric} gauge")
            lines += [f'{metric}{{{scope}="{row[scope]}"}} {row.get(field, 0)}' for row in rows]
    lines.append("# TYPE autonet_objects gauge")
    for info in state.kinds.all():
        counts: dict[str, int] = {}
        for obj in await ctx.list(info.name):
            counts[obj.state] = counts.get(obj.state, 0) + 1
        lines += [
            f'autonet_objects{{kind="{info.name}",state="{st}"}} {n}' for st, n in sorted(counts.items())
        ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
