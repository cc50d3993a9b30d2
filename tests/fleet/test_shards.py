"""Shards: every object maps to one; rendezvous hashing spreads the shards over the live
members and moves only a dead member's; a member that joins takes its shards over without
two owners acting at once (checked on etcd's history of the owner keys and on the
handlers' own record)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

from autonet.control.cache import ObjectCache
from autonet.control.context import Context
from autonet.control.outcomes import Outcome, Stay
from autonet.control.shards import HOSTS, acting_shard, rendezvous_owner, shard_of, vpc_shard
from autonet.model.objects import Object
from autonet.store.etcdclient import prefix_end
from autonet.store.etcdrpc import kv_pb2

from .harness import Node, kinds_only, until

VPCS = ["blue", "green", "red", "teal"]


def obj(kind: str, name: str, spec: dict | None = None, status: dict | None = None) -> Object:  # type: ignore[type-arg]
    return Object(kind=kind, name=name, spec=spec or {}, status=status or {"state": "Init"})


def test_every_object_maps_to_its_vpcs_shard_or_hosts() -> None:
    cache = ObjectCache(None)  # type: ignore[arg-type]
    for record in [
        obj("Network", "blue-a", {"vpc": "blue"}),
        obj("Automaton", "web", {"network": "blue-a"}),
    ]:
        cache._objects[record.kind][record.name] = record
    blue = vpc_shard("blue")
    assert shard_of(obj("Vpc", "blue"), cache) == blue
    assert shard_of(obj("Network", "blue-a", {"vpc": "blue"}), cache) == blue
    assert shard_of(obj("Automaton", "web", {"network": "blue-a"}), cache) == blue
    scheduled = obj("Instance", "web-0", {"automaton": "web"}, {"state": "Scheduled"})
    assert shard_of(scheduled, cache) == acting_shard(scheduled, cache) == blue
    new = obj("Instance", "web-1", {"automaton": "web"})
    assert shard_of(new, cache) == blue and acting_shard(new, cache) == HOSTS  # placement
    assert shard_of(obj("Composition", "shop", {"links": [{"from": "web", "to": "web"}]}), cache) == blue
    assert shard_of(obj("Lease", "ip/blue-a/100.80.1.2"), cache) == blue
    assert shard_of(obj("Lease", "vip/blue/100.80.255.1"), cache) == blue
    assert shard_of(obj("Lease", "identity/blue/1"), cache) == blue
    assert shard_of(obj("Lease", "vni/4097", {"ref": "Vpc/blue"}), cache) == blue
    assert shard_of(obj("Lease", "host/3"), cache) == HOSTS
    assert shard_of(obj("Host", "h1"), cache) == HOSTS
    assert shard_of(obj("Automaton", "lonely", {"network": "nowhere"}), cache) == HOSTS  # not known yet


def test_rendezvous_spreads_shards_and_moves_only_a_dead_members() -> None:
    members = ["c1", "c2", "c3"]
    shards = [vpc_shard(v) for v in VPCS]
    owners = {shard: rendezvous_owner(shard, members) for shard in shards}
    assert owners == {shard: rendezvous_owner(shard, list(reversed(members))) for shard in shards}
    assert len(set(owners.values())) >= 2  # 4 VPCs over 3 members
    for dead in members:
        alive = [m for m in members if m != dead]
        after = {shard: rendezvous_owner(shard, alive) for shard in shards}
        assert {s for s in shards if after[s] != owners[s]} == {s for s in shards if owners[s] == dead}
    many = Counter(rendezvous_owner(vpc_shard(f"v{n}"), members) for n in range(600))
    assert all(150 <= count <= 250 for count in many.values()), many


async def test_each_vpc_has_one_owner_and_only_a_dead_members_shards_move(nodes: Callable[..., Node]) -> None:
    fleet = [await nodes(name, ttl=2.0).start(runner=False) for name in ("c1", "c2", "c3")]
    for vpc in VPCS:
        await fleet[0].store.put("Vpc", vpc, obj("Vpc", vpc).to_data())
    shards = {HOSTS, *(vpc_shard(v) for v in VPCS)}
    ids = [n.id for n in fleet]

    def settled(live: list[Node]) -> bool:
        want = {s: rendezvous_owner(s, [n.id for n in live]) for s in shards}
        return all({s for s in shards if want[s] == n.id} == n.owned() for n in live)

    await until(lambda: settled(fleet), 10, "shards owned as rendezvous says")
    epochs = {s: e for n in fleet for s, e in n.shards.mine.items()}
    owner = {s: n.id for n in fleet for s in n.owned()}
    victim = next(n for n in fleet if any(s.startswith("vpc/") for s in n.owned()))
    moved = victim.owned()

    await victim.pause_keepalive()
    live = [n for n in fleet if n is not victim]
    started = time.monotonic()
    await until(lambda: settled(live), 10, "the dead member's shards taken over")
    took = time.monotonic() - started
    assert took <= victim.membership.ttl + 2.0
    for node in live:
        for shard, epoch in node.shards.mine.items():
            if shard in moved:
                assert epoch > epochs[shard]  # claimed anew: a higher epoch
            else:
                assert (owner[shard], epochs[shard]) == (node.id, epoch)  # did not move
    assert ids == ["c1", "c2", "c3"]


async def owner_history(node: Node, since: int, until_revision: int) -> list[kv_pb2.Event]:
    """Every change of the owner keys in etcd's history between two revisions."""
    prefix = node.store.owners_prefix
    events: list[kv_pb2.Event] = []
    stream = node.store.client.watch(prefix, prefix_end(prefix), start_revision=since)
    try:
        async for response in stream:
            events += [e for e in response.events if e.kv.mod_revision <= until_revision]
            if (
                response.header.revision >= until_revision
                or response.events[-1].kv.mod_revision >= until_revision
            ):
                break
    finally:
        await stream.aclose()
    return events


async def test_a_joining_member_takes_shards_over_without_two_owners_acting(
    nodes: Callable[..., Node],
) -> None:
    """Handlers run non-stop on every VPC while two members join; each handler records
    when it ran and for whom. No two members ever act on one shard at once, and etcd's
    history of owner keys shows each key created only when absent, deleted before the
    next owner's."""
    api = kinds_only()
    runs: list[tuple[str, str, float, float]] = []  # member, shard, start, end

    @api.operator("Vpc", "Init")
    async def busy(vpc: Object, ctx: Context) -> Outcome:
        node = ctx.extras["node"]
        start = time.monotonic()
        await asyncio.sleep(0.03)
        runs.append((node.id, vpc_shard(vpc.name), start, time.monotonic()))
        return Stay(recheck_after=0.01)

    first = await nodes("c1", api=api).start()
    for vpc in VPCS:
        await first.store.put("Vpc", vpc, obj("Vpc", vpc).to_data())
    shards = {vpc_shard(v) for v in VPCS}
    await until(lambda: shards <= first.owned(), 5)
    since = (await first.store.client.status()).header.revision
    await asyncio.sleep(0.3)

    joined = [await nodes(name, api=api).start() for name in ("c2", "c3")]
    fleet = [first, *joined]

    def settled() -> bool:
        want = {s: rendezvous_owner(s, ["c1", "c2", "c3"]) for s in shards}
        return all({s for s in shards if want[s] == n.id} == n.owned() & shards for n in fleet)

    await until(settled, 10, "shards handed over")
    await asyncio.sleep(0.3)  # the new owners act for a while
    head = (await first.store.client.status()).header.revision
    assert any(member != "c1" for member, *_ in runs), "the new members never acted"

    # 1. The handlers' record: per shard, no two members' runs overlap in time.
    by_shard: dict[str, list[tuple[float, float, str]]] = {}
    for member, shard, start, end in runs:
        by_shard.setdefault(shard, []).append((start, end, member))
    for shard, spans in by_shard.items():
        ends: dict[str, float] = {}  # member -> the end of its latest run so far
        for start, end, member in sorted(spans):
            for other, other_end in ends.items():
                assert other == member or other_end <= start, (
                    f"{shard}: {other} still ran when {member} began"
                )
            ends[member] = max(end, ends.get(member, end))

    # 2. etcd's history: each owner key is created when absent and deleted before the next.
    history = await owner_history(first, since, head)
    holder: dict[str, str | None] = {}
    for event in history:
        shard = event.kv.key[len(first.store.owners_prefix) :].decode()
        if event.type == kv_pb2.Event.PUT:
            assert holder.get(shard) is None, f"{shard}: claimed while {holder[shard]} held it"
            assert event.kv.version == 1  # a create, never an overwrite
            holder[shard] = event.kv.value.decode()
        else:
            holder[shard] = None
    assert any(event.type == kv_pb2.Event.DELETE for event in history)  # handovers happened
