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

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from autonet.api.auth import ALLOW_CLUSTER_READ, Principal
from autonet.api.state import API, State
from autonet.control.shards import Shards
from autonet.store import StoreError

router = APIRouter(prefix=API)


def _row(
    member: str,
    endpoints: Sequence[str],
    state: str,
    shards: list[tuple[str, int]],
    *,
    mine: bool = False,
    started: float | None = None,
    lease_left: float | None = None,
) -> dict[str, Any]:
    return {
        "id": member,
        "endpoints": list(endpoints),
        "self": mine,
        "started": started,
        "state": state,
        "shards": [{"shard": shard, "epoch": epoch} for shard, epoch in shards],
        "vpcs": [shard.removeprefix("vpc/") for shard, _ in shards if shard.startswith("vpc/")],
        "lease_left_s": lease_left,
    }


async def _lease_state(shards: Shards, lease: int) -> tuple[bool, float | None]:
    """Whether another member acts (more than a third of its TTL left), and the time left."""
    try:
        found = await shards.store.client.lease_time_to_live(lease)
    except StoreError:
        return False, None
    remaining, granted = found.TTL, found.grantedTTL
    return remaining * 3 > granted, float(max(remaining, 0))


@router.get("/controllers")
async def list_controllers(
    state: State, caller: Annotated[Principal, Depends(ALLOW_CLUSTER_READ)]
) -> list[dict[str, Any]]:
    """Every controller: id, endpoints, state, shards and epochs, lease time left."""
    shards, identity = state.ctx.shards, state.identity
    if shards is None:
        row = _row(identity.id, identity.endpoints, "acting", [("*", 0)], mine=True)
        row["vpcs"] = ["*"]
        return [row]
    membership = shards.membership
    owned = shards.owned_by()
    rows = []
    for member in sorted(membership.members.values(), key=lambda m: m.id):
        mine = member.id == membership.id
        left: float | None
        if mine:
            acting, left = membership.acting(), round(membership.lease_left(), 2)
        else:
            acting, left = await _lease_state(shards, member.lease)
        held = owned.pop(member.id, [])
        state_name = "acting" if acting else "stopped"
        rows.append(
            _row(
                member.id,
                member.endpoints,
                state_name,
                held,
                mine=mine,
                started=member.started,
                lease_left=left,
            )
        )
    if membership.id not in {row["id"] for row in rows}:  # not (or no longer) a member: it does not act
        held = owned.pop(membership.id, [])
        left = round(membership.lease_left(), 2)
        rows.append(
            _row(
                membership.id,
                membership.endpoints,
                "stopped",
                held,
                mine=True,
                started=membership.started,
                lease_left=left,
            )
        )
    for gone, held in sorted(owned.items()):  # owner keys of a member that is gone
        rows.append(_row(gone, (), "gone", held))
    return rows
