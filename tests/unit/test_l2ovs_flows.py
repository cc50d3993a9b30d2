"""The L2 plugin's OpenFlow rules without a lab: what a network's state becomes, that
`ovs-ofctl` accepts it, that bad values never reach a rule, and which openings the
control side derives from compositions."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from autonet.model.objects import Object

pytest.importorskip("autonet_l2ovs")

from autonet_l2ovs import l2_pb2 as pb
from autonet_l2ovs.control import network_allows
from autonet_l2ovs.flows import FlowError, build

A4, A6, B4, B6 = "100.89.1.2", "fd00:89:0:1::2", "100.89.1.3", "fd00:89:0:1::3"


def state(**changes: object) -> pb.NetworkState:
    fields: dict[str, object] = {
        "bridge": "anbnet",
        "vxlan": "anwnet",
        "vni": 7,
        "zone": 77,
        "ports": [pb.Port(name="anqa", mac="02:00:00:00:00:0a", addresses=[A4, A6])],
        "remotes": [pb.Remote(mac="02:00:00:00:00:0b", underlay="100.64.0.12", addresses=[B4, B6])],
        "allows": [
            pb.Allow(sources=[A4, A6], destinations=[B4, B6], transport="tcp", port=7000),
            pb.Allow(sources=[A4, A6], destinations=[B4, B6], transport="ping"),
        ],
    }
    fields.update(changes)
    return pb.NetworkState(**fields)  # type: ignore[arg-type]


def test_a_port_may_send_only_from_its_own_mac_and_addresses() -> None:
    flows = build(state())
    port_in = [f for f in flows if f.startswith("table=0,") and "in_port=anqa" in f and "resubmit" in f]
    assert port_in and all("dl_src=02:00:00:00:00:0a" in f for f in port_in)
    assert any(f"arp_spa={A4}" in f and "arp_sha=02:00:00:00:00:0a" in f for f in port_in)
    assert any(f"nw_src={A4}" in f for f in port_in) and any(f"ipv6_src={A6}" in f for f in port_in)
    assert not any(B4 in f or B6 in f for f in port_in)  # never a neighbour's address
    # a neighbour advertisement only for its own targets (or link-local), others dropped
    targets = {m for f in port_in for m in re.findall(r"nd_target=([^,]+)", f)}
    assert targets == {A6, "fe80::/10"}
    assert "table=0,in_port=anqa,priority=110,icmp6,icmp_type=136,actions=drop" in flows
    assert "table=0,priority=0,actions=drop" in flows


def test_openings_are_conjunctions_for_new_and_established_connections() -> None:
    flows = build(state())
    policy = [f for f in flows if f.startswith("table=2,")]
    assert (
        f"table=2,priority=80,ct_state=+trk+new-inv,ip,nw_src={A4},actions=conjunction(1,1/2),conjunction(3,1/2)"
        in policy
    )
    assert (
        f"table=2,priority=80,ct_state=+trk+new-inv,tcp,nw_dst={B4},tp_dst=7000,actions=conjunction(1,2/2)"
        in policy
    )
    assert (
        f"table=2,priority=80,ct_state=+trk+est-inv,ip,ct_nw_proto=6,ct_nw_dst={B4},ct_tp_dst=7000,actions=conjunction(2,2/2)"
        in policy
    )
    assert (
        f"table=2,priority=80,ct_state=+trk+new-inv,icmp6,ipv6_dst={B6},icmp_type=128,actions=conjunction(3,2/2)"
        in policy
    )
    assert "table=2,priority=80,conj_id=1,ip,actions=ct(commit,zone=77),resubmit(,3)" in policy
    assert "table=2,priority=100,ct_state=+trk+inv,actions=drop" in policy
    assert "table=1,priority=50,ip,actions=ct(table=2,zone=77)" in flows
    # without openings, nothing is committed: new and established IP traffic is dropped
    bare = build(state(allows=[]))
    assert not any("conj" in f for f in bare) and "table=2,priority=0,actions=drop" in bare


@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="Open vSwitch is not installed")
def test_ovs_ofctl_accepts_every_rule(tmp_path: Path) -> None:
    numbered = {"anqa": "1", "anwnet": "2"}  # parse-flows knows no port names
    text = "\n".join(build(state()))
    for name, number in numbered.items():
        text = text.replace(f"in_port={name}", f"in_port={number}").replace(
            f"output:{name}", f"output:{number}"
        )
    path = tmp_path / "flows"
    path.write_text(text + "\n")
    result = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "parse-flows", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "changes",
    [
        {"zone": 0},
        {"vxlan": "eth0"},
        {"ports": [pb.Port(name="anqa,actions=normal", mac="02:00:00:00:00:0a")]},
        {"ports": [pb.Port(name="anqa", mac="02:00:00:00:00:0a,actions=normal")]},
        {"ports": [pb.Port(name="anqa", mac="02:00:00:00:00:0a", addresses=["100.89.1.2,actions=normal"])]},
        {"allows": [pb.Allow(sources=[A4], destinations=[B4], transport="tcp,actions=normal", port=1)]},
        {"allows": [pb.Allow(sources=[A4], destinations=[B4], transport="tcp", port=0)]},
        {"allows": [pb.Allow(sources=[A4], destinations=[B4], transport="tcp", port=70000)]},
        {"allows": [pb.Allow(sources=["0/0"], destinations=[B4], transport="udp", port=53)]},
    ],
)
def test_a_bad_value_never_becomes_a_rule(changes: dict[str, object]) -> None:
    with pytest.raises(FlowError):
        build(state(**changes))


def instance(name: str, automaton: str, ipv4: str, ipv6: str) -> Object:
    return Object(
        kind="Instance", name=name, spec={"automaton": automaton}, status={"ipv4": ipv4, "ipv6": ipv6}
    )


def test_openings_cover_the_linked_automatons_on_the_segment_only() -> None:
    members = [
        instance("a-0", "a", A4, A6),
        instance("b-0", "b", B4, B6),
        instance("c-0", "c", "100.89.1.4", ""),
    ]
    automatons = [
        Object(kind="Automaton", name="a", spec={"network": "n", "consumes": ["echo"]}),
        Object(
            kind="Automaton",
            name="b",
            spec={"network": "n", "provides": [{"protocol": "echo", "transport": "udp", "port": 7}]},
        ),
        Object(kind="Automaton", name="c", spec={"network": "n", "consumes": ["echo"]}),
        Object(
            kind="Automaton",
            name="far",
            spec={"network": "other", "provides": [{"protocol": "echo", "transport": "tcp", "port": 9}]},
        ),
    ]
    links = [{"from": "a", "to": "b", "protocol": "echo"}, {"from": "a", "to": "far", "protocol": "echo"}]
    compositions = [Object(kind="Composition", name="app", spec={"links": links})]
    allows = network_allows(members, compositions, automatons)
    assert [(list(x.sources), list(x.destinations), x.transport, x.port) for x in allows] == [
        ([A4, A6], [B4, B6], "ping", 0),
        ([A4, A6], [B4, B6], "udp", 7),
    ]  # c is not linked; far has no instance on the segment (the router handles it)
    assert network_allows(members, [], automatons) == []
