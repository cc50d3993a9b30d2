"""Several hosts: VXLAN overlay, placement, tenancy; on 3-host labs, IPv4 and IPv6 underlay."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from autonet.model import naming
from tests.e2e.lab import Lab

pytestmark = pytest.mark.lab

RED = """
kind: Vpc
name: red
spec: {cidrs: [100.80.0.0/16, "fd00:80::/48"]}
---
kind: Network
name: red-a
spec: {vpc: red, cidrs: [100.80.1.0/24, "fd00:80:0:1::/64"]}
---
kind: Network
name: red-b
spec: {vpc: red, cidrs: [100.80.2.0/24, "fd00:80:0:2::/64"]}
---
kind: Automaton
name: srv
spec:
  network: red-a
  command: [python3, -m, autonet.examples.echo, --port, "7000"]
  provides: [{protocol: echo, transport: tcp, port: 7000}, {protocol: echo-udp, transport: udp, port: 7000}]
  replicas: 3
---
kind: Automaton
name: sink
spec:
  network: red-b
  command: [python3, -m, autonet.examples.bulk, serve, --port, "9000"]
  provides: [{protocol: bulk, transport: tcp, port: 9000}]
  replicas: 2
---
kind: Automaton
name: cli
spec: {network: red-b, command: [sleep, infinity], replicas: 1, consumes: [echo, echo-udp, bulk]}
---
kind: Composition
name: red-app
spec:
  links:
    - {from: cli, to: srv, protocol: echo}
    - {from: cli, to: srv, protocol: echo-udp}
    - {from: cli, to: sink, protocol: bulk}
"""

# Same CIDRs as red: overlapping tenants.
GREEN = """
kind: Vpc
name: green
spec: {cidrs: [100.80.0.0/16, "fd00:80::/48"]}
---
kind: Network
name: green-a
spec: {vpc: green, cidrs: [100.80.1.0/24, "fd00:80:0:1::/64"]}
---
kind: Automaton
name: gweb
spec:
  network: green-a
  command: [python3, -m, autonet.examples.http_echo, --port, "8080"]
  provides: [{protocol: http, transport: tcp, port: 8080}]
  replicas: 3
---
kind: Automaton
name: gcli
spec: {network: green-a, command: [sleep, infinity], consumes: [http]}
---
kind: Composition
name: green-app
spec:
  links: [{from: gcli, to: gweb, protocol: http}]
"""


@pytest.fixture(scope="module", params=["ipv4", "ipv6"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    with Lab(hosts=3, underlay=request.param) as lab:
        lab.apply(RED)
        lab.apply(GREEN)
        yield lab


def by_name(lab: Lab) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in lab.instances()}


def addresses(inst: dict[str, Any]) -> list[str]:
    return [inst["status"]["ipv4"], inst["status"]["ipv6"]]


def echo(
    lab: Lab, source: str, address: str, udp: bool = False, timeout: float = 3.0
) -> subprocess.CompletedProcess[str] | Any:
    args = ["python3", "-m", "autonet.examples.echo_client", address, "7000", "--message", f"hi-{source}"]
    return lab.exec_in(source, *args, "--timeout", str(timeout), *(["--udp"] if udp else []))


def router_state(lab: Lab, host_index: int, vpc: str) -> str:
    """Routes, neighbours and FDB of a VPC's router on host N, as the kernel has them."""
    vpc_uid = lab.json("get", "vpc", vpc)["metadata"]["uid"]
    router = naming.router_netns(lab.host_tags()[host_index - 1], vpc_uid)
    commands = [
        ["ip", "-n", router, "route"],
        ["ip", "-n", router, "-6", "route"],
        ["ip", "-n", router, "neigh"],
    ]
    commands.append(["bridge", "-n", router, "fdb", "show"])
    return "\n".join(subprocess.run(c, capture_output=True, text=True).stdout for c in commands)


def test_instances_spread_over_the_hosts(lab: Lab) -> None:
    hosts = lab.json("get", "hosts")
    assert [h["status"]["state"] for h in hosts] == ["Ready"] * 3
    assert sorted(h["status"]["instances"] for h in hosts) == [3, 3, 4]  # 10 instances, least loaded first
    underlay = [ipaddress.ip_address(h["spec"]["underlay"]).version for h in hosts]
    assert underlay == [4 if lab.underlay == "ipv4" else 6] * 3


def test_tcp_udp_icmp_across_hosts_and_networks_v4_and_v6(lab: Lab) -> None:
    insts = by_name(lab)
    client = insts["cli-0"]
    servers = [i for n, i in insts.items() if n.startswith("srv-")]
    remote = [s for s in servers if s["status"]["host"] != client["status"]["host"]]
    assert remote, "placement put no server on another host"
    for server in remote:
        for address in addresses(server):
            assert echo(lab, "cli-0", address).out.strip() == "hi-cli-0"
            assert echo(lab, "cli-0", address, udp=True).out.strip() == "hi-cli-0"
            # ping has a file capability, which an instance cannot use: as root in its namespace.
            ping = lab.root_in("cli-0", "ping", "-c", "1", "-W", "2", address)
            assert ping.returncode == 0, ping.stdout + ping.stderr
    log = lab.ok("logs", remote[0]["name"])
    assert f"tcp from {client['status']['ipv4']}" in log  # a different network of the VPC: routed, no NAT


def test_same_host_pair_talks(lab: Lab) -> None:
    insts = by_name(lab)
    client = insts["cli-0"]
    local = [
        i
        for n, i in insts.items()
        if n.startswith(("srv-", "sink-")) and i["status"]["host"] == client["status"]["host"]
    ]
    assert local, "no instance shares the client's host"
    target = local[0]
    port = "7000" if target["name"].startswith("srv") else "9000"
    for address in addresses(target):
        if port == "7000":
            assert echo(lab, "cli-0", address).code == 0
        else:
            result = lab.exec_in(
                "cli-0", "python3", "-m", "autonet.examples.bulk", "send", address, port, "--megabytes", "5"
            )
            assert result.code == 0, result.out + result.err


def test_100_megabytes_cross_host_arrive_intact(lab: Lab) -> None:
    insts = by_name(lab)
    client = insts["cli-0"]
    sinks = [
        i
        for n, i in insts.items()
        if n.startswith("sink-") and i["status"]["host"] != client["status"]["host"]
    ]
    assert sinks
    for address in addresses(sinks[0]):
        result = lab.exec_in(
            "cli-0", "python3", "-m", "autonet.examples.bulk", "send", address, "9000", "--megabytes", "100"
        )
        assert result.code == 0, result.out + result.err
        assert result.out.startswith("ok 100 MB")


def test_routes_to_remote_instances_go_directly_to_their_host(lab: Lab) -> None:
    insts = by_name(lab)
    client_host = int(insts["cli-0"]["status"]["host"][1:])
    hosts = {h["name"]: h for h in lab.json("get", "hosts")}
    state = router_state(lab, client_host, "red")
    for inst in insts.values():
        if inst["status"].get("vpc") != "red" or inst["status"]["host"] == f"h{client_host}":
            continue
        index = hosts[inst["status"]["host"]]["status"]["index"]
        vtep = f"169.254.{16 + index // 256}.{index % 256}"
        assert f"{inst['status']['ipv4']} via {vtep} dev" in state, state


def test_vpcs_with_the_same_cidrs_are_isolated(lab: Lab) -> None:
    insts = by_name(lab)
    green = [i for n, i in insts.items() if n.startswith("gweb-")]
    for web in green:  # green reaches green
        result = lab.http_get("gcli-0", f"http://{web['status']['ipv4']}:8080/")
        assert result.out.strip() == web["name"], result.err
    servers = [i for n, i in insts.items() if n.startswith("srv-")]
    seen_before = {s["name"]: lab.ok("logs", s["name"]).count("from") for s in servers}
    for server in servers:  # green cannot reach red's echo servers, at any address
        for address in addresses(server):
            # A short wait for the UDP reply that must not come: the red listeners' logs,
            # checked below, would show a datagram that arrived however late.
            assert echo(lab, "gcli-0", address, timeout=1).code != 0
            assert echo(lab, "gcli-0", address, udp=True, timeout=1).code != 0
    for web in green:  # red cannot reach green's web servers
        for address in addresses(web):
            lab.assert_no_connection(
                "cli-0",
                f"http://[{address}]:8080/" if ":" in address else f"http://{address}:8080/",
                kinds=("refused", "unreachable"),
            )
    seen_after = {s["name"]: lab.ok("logs", s["name"]).count("from") for s in servers}
    assert seen_after == seen_before, "a red listener saw traffic from green"


def test_deleting_instances_removes_their_routes_everywhere_and_reused_addresses_reach_the_new_one(
    lab: Lab,
) -> None:
    before = by_name(lab)
    gone = [before["srv-1"], before["srv-2"]]
    lab.ok("scale", "srv", "1", "--wait")
    for host in (1, 2, 3):
        state = router_state(lab, host, "red")
        for inst in gone:
            for address in addresses(inst):
                assert f"{address} " not in state, f"h{host} still routes {address}:\n{state}"
    lab.ok("scale", "srv", "3", "--wait")
    after = by_name(lab)
    for name in ("srv-1", "srv-2"):
        new = after[name]
        assert new["metadata"]["uid"] != before[name]["metadata"]["uid"]
        assert new["status"]["ipv4"] in {i["status"]["ipv4"] for i in gone}  # the address came back
        assert echo(lab, "cli-0", new["status"]["ipv4"]).code == 0
        assert f"tcp from {after['cli-0']['status']['ipv4']}" in lab.ok("logs", name)


def test_a_host_without_instances_of_a_vpc_has_no_router_and_peers_forget_it(lab: Lab) -> None:
    lab.ok("scale", "gweb", "0", "--wait")
    gcli_host = int(by_name(lab)["gcli-0"]["status"]["host"][1:])
    vpc_uid = lab.json("get", "vpc", "green")["metadata"]["uid"]
    for host in (1, 2, 3):
        router = naming.router_netns(lab.host_tags()[host - 1], vpc_uid)
        exists = subprocess.run(["ip", "netns", "pids", router], capture_output=True).returncode == 0
        assert exists == (host == gcli_host), f"h{host}"
    assert "dst" not in router_state(lab, gcli_host, "green").split("\n\n")[-1]  # no FDB entries left
    lab.ok("scale", "gweb", "3", "--wait")
