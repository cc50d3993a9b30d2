"""Hollow hosts answer the agent protocol as the controller expects (driven by its real client)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from autonet.agent.hollow import FAKE_PID_BASE, HollowHost, listening_ports, start_host, underlay_address
from autonet.agent.rpc import agent_pb2 as pb
from autonet.control.agents import AgentClient
from autonet.control.outcomes import Fail, Retry
from autonet.control.stats import Timings


def test_the_ports_a_hollow_process_listens_on_come_from_its_command() -> None:
    assert listening_ports(["hollow-service", "--port", "8080"]) == ["tcp/8080"]
    assert listening_ports(["x", "--listen", "udp/53", "--listen", "tcp/80", "--port", "8080"]) == [
        "tcp/80",
        "tcp/8080",
        "udp/53",
    ]
    assert listening_ports(["sleep", "infinity"]) == []
    assert listening_ports(["x", "--port"]) == []
    assert listening_ports(["x", "--listen", "sctp/9"]) == []


def test_made_up_underlays_stay_in_the_lab_ranges() -> None:
    assert underlay_address(0) == "100.127.0.1"
    assert underlay_address(250) == "100.127.1.1"
    assert underlay_address(0, "ipv6") == "fd00:ff::1"
    with pytest.raises(ValueError):
        underlay_address(250 * 256)


@pytest.fixture
async def hollow() -> AsyncIterator[tuple[HollowHost, AgentClient]]:
    host = HollowHost("hollow-0000", "t123", underlay_address(0))
    server = await start_host(host)
    client = AgentClient(host.name, host.rpc)
    try:
        yield host, client
    finally:
        await client.close()
        await server.stop(0)


def endpoint(uid: str, router: str = "anrt123vpc00001") -> pb.Endpoint:
    return pb.Endpoint(
        instance_uid=uid,
        instance_name=f"web-{uid}",
        vpc_uid="vpc1",
        netns=f"anit123{uid}",
        router_netns=router,
        router_ifname=f"anv{uid}",
        ipv4="100.96.0.2",
        ipv6="fd00:96:0:1::2",
        mtu=1450,
    )


async def test_bootstrap_wire_start_report_and_delete_as_the_operators_expect(
    hollow: tuple[HollowHost, AgentClient],
) -> None:
    host, agent = hollow
    assert host.rpc.startswith("127.0.0.1:")
    report = await agent.call("Bootstrap", pb.BootstrapRequest(host=host.name, index=7))
    assert (report.host, report.boot_id, list(report.instances)) == (host.name, host.boot_id, [])
    assert host.index == 7

    row = await agent.call("EnsureEndpoint", endpoint("i1"))
    assert (row.instance_uid, row.wired, row.process) == ("i1", True, "none")
    again = await agent.call("EnsureEndpoint", endpoint("i1"))  # idempotent
    assert again == row and len(host.instances) == 1

    # Running -> Provisioned needs: running, a pid, every provided port listening.
    process = pb.Process(instance_uid="i1", command=["hollow-service", "--port", "8080"], user="nobody")
    started = await agent.call("EnsureProcess", process)
    assert started.process == "running" and started.pid >= FAKE_PID_BASE
    report = await agent.call("Report", pb.ReportRequest(instance_uid="i1"))
    (only,) = report.instances
    assert (only.process, only.pid, list(only.listening)) == ("running", started.pid, ["tcp/8080"])
    assert (await agent.call("EnsureProcess", process)).pid == started.pid  # still the same process
    assert host.processes_down() == []  # heartbeats carry only processes that stopped
    assert list((await agent.call("Report", pb.ReportRequest(instance_uid="nope"))).instances) == []
    assert list((await agent.call("Report", pb.ReportRequest())).routers) == ["anrt123vpc00001"]

    gone = await agent.call("DeleteInstance", pb.InstanceRef(instance_uid="i1"))
    assert gone.deleted
    report = await agent.call("Report", pb.ReportRequest())
    assert (list(report.instances), list(report.routers)) == ([], [])
    assert (await agent.call("DeleteInstance", pb.InstanceRef(instance_uid="i1"))).deleted  # idempotent


async def test_sync_vpc_records_element_counts_for_routers_it_has(
    hollow: tuple[HollowHost, AgentClient],
) -> None:
    host, agent = hollow
    await agent.call("EnsureEndpoint", endpoint("i1"))
    state = pb.VpcState(
        vpc_uid="vpc1",
        vpc_name="blue",
        router_netns="anrt123vpc00001",
        vni=4097,
        peers=[pb.Peer(host="h2", addresses=["100.96.0.3", "fd00:96:0:1::3"])],
        rules=[pb.Rule(source_identity=2, destination_identity=1, transport="tcp", port=8080)],
        services=[pb.Service(name="web", ports=[pb.ServicePort(transport="tcp", port=8080, backends=["a"])])],
        members=[pb.Member(address="100.96.0.2"), pb.Member(address="100.96.0.3")],
    )
    reply = await agent.call("SyncVpc", state)
    assert (reply.present, reply.added, reply.removed) == (True, 8, 0)
    record = host.syncs["anrt123vpc00001"]
    assert (record.vpc, record.vni, record.syncs, len(record.synced_at)) == ("blue", 4097, 1, 1)
    assert record.counts == {
        "peers": 1,
        "remote_addresses": 2,
        "rules": 1,
        "services": 1,
        "backends": 1,
        "members": 2,
    }
    del state.rules[:]
    reply = await agent.call("SyncVpc", state)
    assert (reply.present, reply.added, reply.removed) == (True, 0, 1)
    # No instance of the VPC here, no router: nothing to do, as the real agent says.
    other = pb.VpcState(vpc_uid="vpc2", router_netns="anrt123vpc00002")
    assert not (await agent.call("SyncVpc", other)).present
    status = host.status()
    assert status["routers"]["anrt123vpc00001"]["rules"] == 0
    assert status["calls"]["SyncVpc"] == 3


async def test_a_router_refuses_syncs_of_a_lower_epoch_than_it_has_seen(
    hollow: tuple[HollowHost, AgentClient],
) -> None:
    """A controller that lost a VPC (a lower epoch) cannot undo what its successor synced."""
    host, agent = hollow
    router = "anrt123vpc00001"
    await agent.call("EnsureEndpoint", endpoint("i1"))
    members = [pb.Member(address="100.96.0.2")]
    snapshot = pb.VpcState(vpc_uid="vpc1", vpc_name="blue", router_netns=router, vni=4097, members=members)
    snapshot.seq, snapshot.epoch = 1, 5
    assert (await agent.call("SyncVpc", snapshot)).present
    assert host.syncs[router].epoch == 5 and host.status()["routers"][router]["epoch"] == 5

    stale = pb.VpcState()
    stale.CopyFrom(snapshot)
    stale.seq, stale.epoch = 7, 3
    del stale.members[:]
    with pytest.raises(Retry, match="SyncVpc: stale epoch 3 < 5"):  # FAILED_PRECONDITION
        await agent.call("SyncVpc", stale)
    delta = pb.VpcDelta(
        vpc_uid="vpc1", router_netns=router, seq=2, base_seq=1, removed_members=["100.96.0.2"]
    )
    delta.epoch = 3
    with pytest.raises(Retry, match="SyncVpcDelta: stale epoch 3 < 5"):
        await agent.call("SyncVpcDelta", delta)
    assert host.syncs[router].counts["members"] == 1 and host.syncs[router].seq == 1  # untouched

    delta.epoch = 5  # the owner's own delta applies; a higher epoch's snapshot too
    assert (await agent.call("SyncVpcDelta", delta)).seq == 2
    snapshot.seq, snapshot.epoch = 1, 9
    assert (await agent.call("SyncVpc", snapshot)).present
    delta.seq, delta.base_seq, delta.epoch = 2, 1, 5
    with pytest.raises(Retry, match="stale epoch 5 < 9"):
        await agent.call("SyncVpcDelta", delta)
    assert host.syncs[router].epoch == 9


async def test_errors_map_to_the_controllers_outcomes(hollow: tuple[HollowHost, AgentClient]) -> None:
    _, agent = hollow
    with pytest.raises(Retry, match="unknown instance"):  # no endpoint yet: try again later
        await agent.call("EnsureProcess", pb.Process(instance_uid="nope", command=["x"]))
    with pytest.raises(Fail, match="router_netns"):
        await agent.call("EnsureEndpoint", pb.Endpoint(instance_uid="i1"))
    chunks = []
    with pytest.raises(Exception, match="no namespace"):
        async for chunk in agent.exec(pb.ExecRequest(instance_uid="i1", command=["true"])):
            chunks.append(chunk)
    assert chunks == []


def test_timings_summarise_and_bound_their_samples() -> None:
    timings = Timings(keep=100)
    for n in range(1, 201):
        timings.add("placement.decision", n / 1000)
    with timings.timed("handler Instance/Init"):
        pass
    summary = timings.summary()["timings"]
    decision = summary["placement.decision"]
    assert (decision["n"], decision["kept"]) == (200, 100)  # the newest 100: 101..200 ms
    assert (decision["p50_ms"], decision["p99_ms"], decision["max_ms"]) == (151.0, 199.0, 200.0)
    assert summary["handler Instance/Init"]["n"] == 1
    timings.reset()
    assert timings.summary()["timings"] == {}
