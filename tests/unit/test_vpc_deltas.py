"""Incremental VPC syncs without a kernel: a delta applied on top of a snapshot is the next
snapshot; the controller sends hosts deltas, nothing when nothing concerns them, and a
snapshot when an agent finds a gap (a delta lost on the wire), driven against hollow
hosts over real gRPC and a real SQLite store."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from autonet.agent.hollow import HollowHost, start_host, underlay_address
from autonet.agent.rpc import agent_pb2 as pb
from autonet.agent.vpcdelta import StaleEpoch, apply_delta, check_epoch, epoch, rule_key
from autonet.control.context import Context
from autonet.control.operators.network import (
    SETTLE,
    HostSync,
    VpcChanges,
    VpcSyncer,
    VpcTables,
    make_snapshot,
)
from autonet.control.registry import PluginAPI, load_plugins
from autonet.model import naming
from autonet.model.objects import Object
from autonet.store import Store

# -- a delta on top of its base is the next snapshot ----------------------------------------


def random_tables(rng: random.Random) -> tuple[VpcTables, dict[Any, pb.Rule]]:
    members = {}
    for n in rng.sample(range(40), rng.randint(0, 30)):
        address = f"100.80.0.{n + 1}"
        members[address] = pb.Member(
            address=address, instance=f"i{n}", automaton=f"a{n % 4}", identity=rng.choice([0, 1, 2, 3])
        )
    peers = {
        f"h{n}": pb.Peer(
            host=f"h{n}",
            addresses=sorted(rng.sample(list(members) or ["x"], min(len(members), rng.randint(0, 3)))),
        )
        for n in rng.sample(range(6), rng.randint(0, 5))
    }
    services = {
        f"a{n}": pb.Service(
            name=f"a{n}",
            vip4=f"100.100.0.{n + 1}",
            ports=[
                pb.ServicePort(
                    transport="tcp", port=8080, backends=sorted(rng.sample(list(members) or ["x"], 1))
                )
            ],
        )
        for n in rng.sample(range(4), rng.randint(0, 4))
    }
    rules = [
        pb.Rule(source_identity=s, destination_identity=d, transport=t, port=80)
        for s, d, t in rng.sample(
            [(s, d, t) for s in (1, 2, 3) for d in (1, 2, 3) for t in ("tcp", "udp")], 5
        )
    ]
    return VpcTables(members, peers, services), {
        rule_key(MessageToDict(r, preserving_proto_field_name=True)): r for r in rules
    }


def as_state(message: pb.VpcState) -> dict[str, Any]:
    """A snapshot in the agent's form, its lists in key order (as apply_delta keeps them)."""
    state = MessageToDict(message, preserving_proto_field_name=True)
    for field, key in (("peers", "host"), ("members", "address"), ("services", "name")):
        state[field] = sorted(state.get(field, []), key=lambda e, key=key: e[key])
    state["rules"] = sorted(state.get("rules", []), key=rule_key)
    return state


@pytest.mark.parametrize("seed", range(20))
def test_a_delta_applied_on_top_of_its_base_is_the_next_snapshot(seed: int) -> None:
    rng = random.Random(seed)
    header = pb.VpcState(vpc_uid="v", router_netns="anrtx", vni=4097, mtu=1450, vpc_name="blue")
    before, rules_before = random_tables(rng)
    after, rules_after = random_tables(rng)
    base = make_snapshot(header, before, "h1", rules_before)
    base.seq = 5
    delta = VpcChanges.between(before, after).delta("h1", HostSync(5, b"", rules_before), rules_after)
    delta.seq = 9
    patched = apply_delta(as_state(base), MessageToDict(delta, preserving_proto_field_name=True))
    expected = make_snapshot(header, after, "h1", rules_after)
    expected.seq = 9
    assert patched == as_state(expected)
    # A host never hears of itself as a peer, in a snapshot or a delta.
    assert all(p.host != "h1" for p in [*expected.peers, *delta.peers])


def test_a_delta_keeps_the_highest_epoch_and_a_lower_one_is_stale() -> None:
    state = {"seq": "1", "epoch": "7", "vxlan_ifname": "anx1"}
    assert epoch(apply_delta(state, {"seq": "2", "base_seq": "1", "epoch": "7"})) == 7
    assert epoch(apply_delta(state, {"seq": "2", "base_seq": "1", "epoch": "9"})) == 9
    assert "epoch" not in apply_delta({"seq": "1"}, {"seq": "2", "base_seq": "1"})  # 0: absent, as in JSON
    check_epoch(7, 7)
    check_epoch(0, 0)  # one controller: always 0
    with pytest.raises(StaleEpoch, match="stale epoch 6 < 7"):
        check_epoch(7, 6)


def test_a_delta_names_only_what_changed() -> None:
    one = pb.Member(address="100.80.0.1", instance="web-0", automaton="web", identity=1)
    two = pb.Member(address="100.80.0.2", instance="web-1", automaton="web", identity=1)
    before = VpcTables({"100.80.0.1": one}, {}, {})
    after = VpcTables({"100.80.0.1": one, "100.80.0.2": two}, {}, {})
    delta = VpcChanges.between(before, after).delta("h1", HostSync(3, b"", {}), {})
    assert list(delta.members) == [two]
    assert (delta.base_seq, list(delta.removed_members), list(delta.peers)) == (3, [], [])


# -- the controller's syncer against hollow hosts --------------------------------------------


def obj(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any]) -> Object:
    return Object(kind=kind, name=name, spec=spec, status=status)


class Fleet:
    """Two hollow hosts, a VPC with an automaton, and instances placed on the hosts."""

    def __init__(self, store: Store) -> None:
        api = load_plugins(PluginAPI(), only=["builtin"])
        self.ctx = Context(store, api.kinds)
        self.syncer = VpcSyncer(self.ctx)
        self.hosts = {
            name: HollowHost(name, naming.host_tag("t", name), underlay_address(i))
            for i, name in enumerate(("h1", "h2"))
        }
        self.vpc = obj("Vpc", "blue", {}, {"state": "Provisioned", "vni": 4097})

    def router(self, host: str) -> str:
        return naming.router_netns(self.hosts[host].tag, self.vpc.uid)

    async def put(self, o: Object) -> None:
        await self.ctx.store.put(o.kind, o.name, o.to_data())

    async def add_instance(self, n: int, host: str) -> None:
        inst = obj(
            "Instance",
            f"web-{n}",
            {"automaton": "web", "ordinal": n},
            {
                "state": "Provisioned",
                "host": host,
                "vpc": "blue",
                "network": "net",
                "ipv4": f"100.80.0.{n + 2}",
            },
        )
        await self.put(inst)
        # The hollow host holds a router for the VPC once an instance of it is wired there.
        hollow = self.hosts[host]
        hollow.routers.setdefault(self.router(host), set()).add(inst.uid)

    def members(self, host: str) -> int:
        return self.hosts[host].syncs[self.router(host)].counts["members"]

    def calls(self, call: str) -> int:
        return sum(h.calls[call] for h in self.hosts.values())


@pytest.fixture
async def fleet(store: Store) -> AsyncIterator[Fleet]:
    fleet = Fleet(store)
    servers = []
    for i, (name, hollow) in enumerate(fleet.hosts.items()):
        servers.append(await start_host(hollow))
        spec = {"underlay": hollow.underlay, "rpc": hollow.rpc, "tag": hollow.tag}
        await fleet.put(obj("Host", name, spec, {"state": "Ready", "index": i + 1, "mtu": 1500}))
    await fleet.put(fleet.vpc)
    await fleet.put(
        obj(
            "Automaton",
            "web",
            {"network": "net", "command": ["true"]},
            {"state": "Provisioned", "vpc": "blue", "identity": 1},
        )
    )
    try:
        yield fleet
    finally:
        await fleet.ctx.agents.close()
        for server in servers:
            await server.stop(0)


async def test_hosts_get_a_snapshot_then_deltas_and_nothing_when_nothing_changed(fleet: Fleet) -> None:
    await fleet.add_instance(0, "h1")
    await fleet.add_instance(1, "h2")
    await fleet.syncer.sync("blue")
    assert (fleet.calls("SyncVpc"), fleet.calls("SyncVpcDelta")) == (2, 0)
    assert fleet.members("h1") == fleet.members("h2") == 2

    await fleet.add_instance(2, "h1")
    await fleet.syncer.sync("blue")
    assert (fleet.calls("SyncVpc"), fleet.calls("SyncVpcDelta")) == (2, 2)
    assert fleet.members("h1") == fleet.members("h2") == 3
    assert fleet.hosts["h2"].syncs[fleet.router("h2")].counts["remote_addresses"] == 2  # web-0, web-2 on h1

    await fleet.syncer.sync("blue")  # nothing changed: no call at all
    assert (fleet.calls("SyncVpc"), fleet.calls("SyncVpcDelta")) == (2, 2)
    assert fleet.syncer.counts.skipped == 2


async def test_a_delta_lost_on_the_wire_is_repaired_by_a_snapshot(fleet: Fleet) -> None:
    await fleet.add_instance(0, "h1")
    await fleet.add_instance(1, "h2")
    await fleet.syncer.sync("blue")
    fleet.syncer.drop_deltas = 1  # the next delta never arrives; the syncer believes it did
    await fleet.add_instance(2, "h1")
    await fleet.syncer.sync("blue")
    assert fleet.syncer.counts.dropped == 1
    assert sorted([fleet.members("h1"), fleet.members("h2")]) == [2, 3]  # one host missed web-2

    await fleet.add_instance(3, "h2")  # the next change: a delta to each host
    await fleet.syncer.sync("blue")
    assert fleet.syncer.counts.gaps == 1  # the host that missed web-2 refused its delta
    assert fleet.members("h1") == fleet.members("h2") == 4
    assert fleet.calls("SyncVpc") == 3  # the two first snapshots, and the repair


async def test_a_reconnected_host_gets_a_snapshot(fleet: Fleet) -> None:
    await fleet.add_instance(0, "h1")
    await fleet.syncer.sync("blue")
    fleet.syncer.forget_host("h1")
    await fleet.syncer.sync("blue")
    assert (fleet.calls("SyncVpc"), fleet.calls("SyncVpcDelta")) == (2, 0)


async def test_a_heartbeat_that_shows_a_lost_delta_gets_the_host_a_snapshot(fleet: Fleet) -> None:
    await fleet.add_instance(0, "h1")
    await fleet.add_instance(1, "h2")
    await fleet.syncer.sync("blue")
    for name, hollow in fleet.hosts.items():  # in step: nothing to repair
        fleet.syncer.held_by(name, hollow.vpc_syncs())
    assert not fleet.syncer.drifted
    fleet.syncer.drop_deltas = 1
    await fleet.add_instance(2, "h1")
    await fleet.syncer.sync("blue")
    missed = next(name for name in fleet.hosts if fleet.members(name) == 2)
    for held in fleet.syncer.tables["blue"].hosts.values():
        held.at -= SETTLE  # as if the heartbeat came a while after the (lost) delta
    fleet.syncer.held_by(missed, fleet.hosts[missed].vpc_syncs())
    assert fleet.syncer.drifted == {"blue"}
    await fleet.syncer.sync("blue")  # what repair_forever does with it
    assert fleet.members("h1") == fleet.members("h2") == 3
    assert fleet.calls("SyncVpc") == 3  # the two first snapshots, and the repair


async def test_a_controller_that_never_synced_a_vpc_a_host_reports_syncs_it(fleet: Fleet) -> None:
    await fleet.add_instance(0, "h1")
    await fleet.syncer.sync("blue")
    restarted = VpcSyncer(fleet.ctx)  # a new controller: it knows nothing of the hosts
    restarted.held_by("h1", fleet.hosts["h1"].vpc_syncs())
    assert restarted.drifted == {"blue"}
