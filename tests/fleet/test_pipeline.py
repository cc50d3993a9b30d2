"""Two controllers run autonet's own pipeline on one etcd, against hollow hosts: each VPC
is provisioned by its owner, placement by the owner of `hosts` (which hears heartbeats
only through the other's relay), every router holds its VPC owner's epoch; when the owner
of a VPC dies (its lease expires: kill -9), the other takes the VPC over, snapshots it to
the hosts under its higher epoch, and a scale of the VPC's automaton completes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from autonet.agent.hollow import HollowHost, start_host, underlay_address
from autonet.control.registry import PluginAPI, load_plugins
from autonet.control.shards import HOSTS, rendezvous_owner, vpc_shard
from autonet.model import naming
from autonet.model.objects import Object

from .harness import Node, until

MANIFEST = [
    ("Vpc", "blue", {"cidrs": ["100.80.0.0/16"]}),
    ("Vpc", "green", {"cidrs": ["100.81.0.0/16"]}),
    ("Network", "blue-a", {"vpc": "blue", "cidrs": ["100.80.1.0/24"]}),
    ("Network", "green-a", {"vpc": "green", "cidrs": ["100.81.1.0/24"]}),
    (
        "Automaton",
        "web",
        {"network": "blue-a", "command": ["hollow-service", "--port", "8080"], "replicas": 3},
    ),
    ("Automaton", "db", {"network": "green-a", "command": ["hollow-service"], "replicas": 2}),
]


def builtin() -> PluginAPI:
    return load_plugins(PluginAPI(), only=["builtin"])


async def beat(node: Node, hosts: list[HollowHost]) -> None:
    """The agents heartbeat to this controller only (as if its API were theirs)."""
    while True:
        for host in hosts:
            node.ctx.liveness.beat(host.name)
        await asyncio.sleep(0.3)


async def instances(node: Node) -> list[Object]:
    return [Object.from_data(r.data, r.revision) for r in await node.store.list("Instance")]


async def all_provisioned(node: Node, count: int) -> bool:
    found = await instances(node)
    return len(found) == count and all(i.state == "Provisioned" for i in found)


def router_epochs(hosts: list[HollowHost], vpc_uid: str) -> dict[str, int]:
    found = {}
    for host in hosts:
        record = host.syncs.get(naming.router_netns(host.tag, vpc_uid))
        if record is not None:
            found[host.name] = record.epoch
    return found


async def test_two_controllers_share_the_pipeline_and_one_takes_over_a_dead_ones_vpc(
    nodes: Callable[..., Node],
) -> None:
    hosts = [HollowHost(f"h{i}", naming.host_tag("fleet", f"h{i}"), underlay_address(i)) for i in (1, 2)]
    servers = [await start_host(host) for host in hosts]
    fleet = [await nodes(name, api=builtin()).start(relay=True) for name in ("c1", "c2")]
    # The agents talk to the controller that does not judge them: liveness goes through the relay.
    listener = next(node for node in fleet if node.id != rendezvous_owner(HOSTS, ["c1", "c2"]))
    beating = asyncio.create_task(beat(listener, hosts))
    try:
        store = fleet[0].store
        for host in hosts:
            spec = {"underlay": host.underlay, "rpc": host.rpc, "tag": host.tag}
            status = {"state": "Init", "boot_id": host.boot_id, "mtu": 1500}
            await store.put(
                "Host", host.name, Object(kind="Host", name=host.name, spec=spec, status=status).to_data()
            )
        for kind, name, spec in MANIFEST:
            await store.put(
                kind, name, Object(kind=kind, name=name, spec=spec, status={"state": "Init"}).to_data()
            )

        await until(lambda: all_provisioned(fleet[0], 5), 20, "5 instances Provisioned")
        owners = {shard: node for node in fleet for shard in node.owned()}
        assert set(owners) == {HOSTS, vpc_shard("blue"), vpc_shard("green")}
        vpcs: dict[str, Any] = {v: await store.get("Vpc", v) for v in ("blue", "green")}
        for name, record in vpcs.items():
            epoch = owners[vpc_shard(name)].shards.mine[vpc_shard(name)]
            held = router_epochs(hosts, record.data["metadata"]["uid"])
            assert held and set(held.values()) == {epoch}, (name, held, epoch)

        # The owner of blue dies (no clean stop: its lease runs out); the other takes over.
        dead = owners[vpc_shard("blue")]
        heir = next(node for node in fleet if node is not dead)
        old_epoch = dead.shards.mine[vpc_shard("blue")]
        if dead is listener:  # the agents now talk to the survivor
            beating.cancel()
            beating = asyncio.create_task(beat(heir, hosts))
        snapshots_before = sum(host.calls["SyncVpc"] for host in hosts)
        await dead.stop(leave=False)
        await until(lambda: vpc_shard("blue") in heir.owned(), 8, "the heir claims blue")
        new_epoch = heir.shards.mine[vpc_shard("blue")]
        assert new_epoch > old_epoch
        blue_uid = vpcs["blue"].data["metadata"]["uid"]
        await until(
            lambda: set(router_epochs(hosts, blue_uid).values()) == {new_epoch}, 5, "routers at the new epoch"
        )
        assert sum(host.calls["SyncVpc"] for host in hosts) > snapshots_before  # snapshots first

        web = await heir.store.get("Automaton", "web")
        assert web is not None
        scaled = Object.from_data(web.data, web.revision)
        scaled.spec["replicas"] = 5
        scaled = scaled.with_status(state="Init")
        await heir.store.put("Automaton", "web", scaled.to_data(), web.revision)
        await until(lambda: all_provisioned(heir, 7), 20, "the scale completes under the heir")
        addresses = [i.status["ipv4"] for i in await instances(heir)]
        assert len(addresses) == len(set(addresses)) == 7  # no address leased twice
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        for server in servers:
            await server.stop(0)
