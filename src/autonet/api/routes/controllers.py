"""The controllers of the cluster: `GET /api/v1/controllers`.

Every controller answers for all of them, from what it watches in etcd (control/members.py,
control/shards.py): each live member with its id, advertised API endpoints, when it
started, its state, the shards it owns with their epochs (and the VPCs among them), and
how long its lease lasts without another keepalive. `state` is `acting` or `stopped`:
exact for the controller answering; for the others it is read from their lease, which a
member that stopped acting (paused, cut off from etcd) no longer renews: `stopped` once
less than a third of its TTL is left. A controller whose member key is gone but whose
owner keys are still there (its lease not yet reaped) is listed as `gone`.

One controller on SQLite is the only one: it owns everything (shard `*`, epoch 0).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from autonet.api.state import API, State
from autonet.store import StoreError

router = APIRouter(prefix=API)


def _vpcs(shards: list[dict[str, Any]]) -> list[str]:
    return [s["shard"].removeprefix("vpc/") for s in shards if s["shard"].startswith("vpc/")]


@router.get("/controllers")
async def list_controllers(state: State) -> list[dict[str, Any]]:
    """Every controller: id, endpoints, state, shards and epochs, lease time left."""
    ctx, identity = state.ctx, state.identity
    shards = ctx.shards
    if shards is None:
        return [
            {
                "id": identity.id,
                "endpoints": list(identity.endpoints),
                "self": True,
                "state": "acting",
                "shards": [{"shard": "*", "epoch": 0}],
                "vpcs": ["*"],
                "lease_left": None,
            }
        ]
    membership = shards.membership
    owned = {
        member: [{"shard": shard, "epoch": epoch} for shard, epoch in found]
        for member, found in shards.owned_by().items()
    }
    rows = []
    for member in sorted(membership.members.values(), key=lambda m: m.id):
        mine = member.id == membership.id
        if mine:
            left: float | None = round(membership.lease_left(), 2)
            acting = membership.acting()
        else:
            try:
                lease = await shards.store.client.lease_time_to_live(member.lease)
                remaining, granted = lease.TTL, lease.grantedTTL
                left = float(max(remaining, 0))
                acting = remaining * 3 > granted
            except StoreError:
                left, acting = None, False
        held = owned.pop(member.id, [])
        rows.append(
            {
                "id": member.id,
                "endpoints": list(member.endpoints),
                "self": mine,
                "started": member.started,
                "state": "acting" if acting else "stopped",
                "shards": held,
                "vpcs": _vpcs(held),
                "lease_left": left,
            }
        )
    for gone, held in sorted(owned.items()):  # owner keys of a member that is gone
        rows.append(
            {
                "id": gone,
                "endpoints": [],
                "self": False,
                "state": "gone",
                "shards": held,
                "vpcs": _vpcs(held),
                "lease_left": None,
            }
        )
    return rows
