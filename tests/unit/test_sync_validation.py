"""A VPC sync is checked whole before anything of it reaches the kernel or the disk: a
value that would be spliced into nft script text (`tcp; flush ruleset`), an address
with trailing text, a port out of range are refused with INVALID_ARGUMENT by the
agent's RPC, and the router's saved state is left as it was. The dataplane's own types
refuse the same values, so no caller can get them into a script either."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from autonet.agent.host import HostAgent
from autonet.agent.rpc import agent_pb2 as pb
from autonet.agent.server import AgentServicer
from autonet.dataplane import nftables as nf
from autonet.dataplane.policy import Allow
from autonet.dataplane.services import ServicePort

TAG = "t3st"
ROUTER = f"anr{TAG}00000001"
INJECTION = "tcp; flush ruleset"


class Aborted(Exception):
    pass


class Context:
    """What the servicer needs of a gRPC context: abort records the code and raises."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted(details)


def saved_state() -> dict[str, Any]:
    return {
        "vpc_uid": "v1",
        "router_netns": ROUTER,
        "vxlan_ifname": "anx00000001",
        "vni": 100,
        "mtu": 1450,
        "local": {
            "underlay": "100.64.0.1",
            "mac": "02:00:00:00:00:01",
            "ipv4": "100.127.0.1",
            "ipv6": "fd00::1",
        },
        "rules": [{"transport": "tcp", "port": 80, "source_identity": 1, "destination_identity": 2}],
        "seq": "4",
    }


@pytest.fixture
def agent(tmp_path: Path) -> HostAgent:
    agent = HostAgent("h1", TAG, tmp_path)
    path = agent.overlay_path(ROUTER)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(saved_state()))
    return agent


def state_message(**rule: Any) -> pb.VpcState:
    state = saved_state()
    state["rules"] = [
        {"transport": "tcp", "port": 80, "source_identity": 1, "destination_identity": 2} | rule
    ]
    state["seq"] = 5
    return pb.VpcState(
        vpc_uid=state["vpc_uid"],
        router_netns=ROUTER,
        vxlan_ifname=state["vxlan_ifname"],
        vni=state["vni"],
        mtu=state["mtu"],
        local=pb.Vtep(**state["local"]),
        rules=[pb.Rule(**r) for r in state["rules"]],
        seq=5,
    )


async def refused(call: Any, request: Any) -> Context:
    context = Context()
    with pytest.raises(Aborted):
        await call(request, context)
    return context


@pytest.mark.parametrize(
    "rule",
    [{"transport": INJECTION}, {"transport": "TCP"}, {"transport": "icmp"}, {"port": 0}, {"port": 70000}],
)
async def test_a_snapshot_with_a_malicious_rule_is_refused_and_changes_nothing(
    agent: HostAgent, rule: dict[str, Any]
) -> None:
    before = agent.overlay_path(ROUTER).read_bytes()
    context = await refused(AgentServicer(agent).SyncVpc, state_message(**rule))
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "\n" not in context.details and ("transport" in context.details or "port" in context.details)
    assert agent.overlay_path(ROUTER).read_bytes() == before
    assert ROUTER not in agent.routers  # no router object was made, nothing was applied


@pytest.mark.parametrize(
    "delta",
    [
        pb.VpcDelta(
            added_rules=[pb.Rule(transport=INJECTION, port=80, source_identity=1, destination_identity=2)]
        ),
        pb.VpcDelta(removed_rules=[pb.Rule(transport=INJECTION, port=80)]),
        pb.VpcDelta(members=[pb.Member(address="100.80.0.1 } ; flush ruleset ; {", identity=1)]),
        pb.VpcDelta(members=[pb.Member(address="fe80::1%x; flush ruleset", identity=1)]),
        pb.VpcDelta(
            services=[
                pb.Service(
                    name="web", vip4="100.100.0.1", ports=[pb.ServicePort(transport=INJECTION, port=80)]
                )
            ]
        ),
        pb.VpcDelta(
            peers=[
                pb.Peer(
                    host="h2",
                    vtep=pb.Vtep(
                        underlay="100.64.0.2; drop",
                        mac="02:00:00:00:00:02",
                        ipv4="100.127.0.2",
                        ipv6="fd00::2",
                    ),
                )
            ]
        ),
    ],
)
async def test_a_delta_with_a_malicious_value_is_refused_and_changes_nothing(
    agent: HostAgent, delta: pb.VpcDelta
) -> None:
    delta.router_netns, delta.base_seq, delta.seq = ROUTER, 4, 5
    before = agent.overlay_path(ROUTER).read_bytes()
    context = await refused(AgentServicer(agent).SyncVpcDelta, delta)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert agent.overlay_path(ROUTER).read_bytes() == before
    assert ROUTER not in agent.routers


def test_the_dataplane_types_refuse_what_would_be_script_text() -> None:
    with pytest.raises(ValueError, match="transport"):
        Allow(1, 2, INJECTION, 80)
    with pytest.raises(ValueError, match="identity"):
        Allow(1, 1 << 32, "tcp", 80)
    with pytest.raises(ValueError, match="address"):
        ServicePort("100.100.0.1", "tcp", 80, ("100.80.0.1, 100.80.0.2 } ; flush ruleset",))
    with pytest.raises(ValueError, match="interface"):
        nf.ifname('anv1" . 1.2.3.4 }; flush ruleset; #')
    # Control: the same kinds of values, well formed, pass (and are printed canonically).
    assert Allow(1, 2, "udp", 53).transport == "udp"
    assert ServicePort("fd00:0::1", "tcp", 80, ("fd00::2",)).vip == "fd00::1"
    assert nf.ifname("anv0a1b2c3d") == "anv0a1b2c3d"
