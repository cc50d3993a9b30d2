"""The L2 plugin (Open vSwitch), end to end on a 2-host lab: a new kind, operator and stage,
and composition security enforced by OVS on the segment (conntrack, anti-spoofing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autonet_l2ovs.agent import L2_PORT

from tests.e2e.lab import Lab, crafted_vxlan, failure_kind, send_udp

pytestmark = pytest.mark.lab

MANIFEST = """
kind: Vpc
name: lan
spec: {cidrs: [100.89.0.0/16, "fd00:89::/48"]}
---
kind: Network
name: lan-a
spec: {vpc: lan, cidrs: [100.89.1.0/24, "fd00:89:0:1::/64"], l2: ovs}
---
kind: Network
name: lan-b
spec: {vpc: lan, cidrs: [100.89.2.0/24, "fd00:89:0:2::/64"]}
---
kind: Automaton
name: node
spec:
  network: lan-a
  command: [python3, -m, autonet.examples.echo, --port, "7000"]
  provides: [{protocol: echo, transport: tcp, port: 7000}, {protocol: echo, transport: udp, port: 7000}]
  consumes: [echo]
  replicas: 2
---
kind: Automaton
name: stranger
spec: {network: lan-a, command: [sleep, infinity], consumes: [echo]}
---
kind: Automaton
name: web
spec:
  network: lan-b
  command: [python3, -m, autonet.examples.http_echo, --port, "8080"]
  provides: [{protocol: http, transport: tcp, port: 8080}]
  replicas: 2
---
kind: Automaton
name: client
spec: {network: lan-b, command: [sleep, infinity], consumes: [http]}
---
kind: Composition
name: lan-app
spec:
  links: [{from: client, to: web, protocol: http}]
---
kind: Composition
name: mesh
spec:
  links: [{from: node, to: node, protocol: echo}]
"""

MESH = "kind: Composition\nname: mesh\nspec:\n  links: [{from: node, to: node, protocol: echo}]\n"

# A root process sends one UDP datagram with a source address of its choosing (IP_HDRINCL):
# what an instance would do to pass for another one.
SPOOF_UDP = (
    "import socket, struct, sys\n"
    "src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
    "payload = b'spoofed'\n"
    "udp = struct.pack('!HHHH', 40000, port, 8 + len(payload), 0) + payload\n"
    "ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,\n"
    "                 socket.inet_aton(src), socket.inet_aton(dst))\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)\n"
    "s.sendto(ip + udp, (dst, 0))\n"
    "print('sent')\n"
)

# A live TCP connection that echoes every 0.2 s for `seconds`; prints the wall-clock time
# of every echo that came back, then `stalled` if one did not.
LIVE_TCP = (
    "import socket, sys, time\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    "s.settimeout(0.5)\n"
    "end = time.time() + float(sys.argv[3])\n"
    "while time.time() < end:\n"
    "    s.sendall(b'x')\n"
    "    try:\n"
    "        s.recv(16)\n"
    "    except OSError:\n"
    "        print('stalled', flush=True)\n"
    "        break\n"
    "    print(f'echo {time.time():.3f}', flush=True)\n"
    "    time.sleep(0.2)\n"
)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=2) as lab:
        lab.apply(MANIFEST)
        yield lab


def node(lab: Lab, name: str) -> dict[str, Any]:
    return next(i for i in lab.instances("node") if i["name"] == name)


def flows(lab: Lab, host: str) -> list[str]:
    agent = lab.json("get", "l2agent", host)
    return [flow for bridge in agent["status"].get("bridges", []) for flow in bridge["flows"]]


def packets_to(lab: Lab, host: str, mac: str) -> int:
    matching = [f for f in flows(lab, host) if f"dl_dst={mac}" in f]
    return sum(int(f.split("n_packets=")[1].split(",")[0]) for f in matching)


def test_l2_instances_on_both_hosts_talk_over_ipv4_and_ipv6(lab: Lab) -> None:
    a, b = node(lab, "node-0"), node(lab, "node-1")
    assert a["status"]["host"] != b["status"]["host"]
    assert a["status"]["state"] == "Provisioned" and a["status"]["l2_port"].startswith("anq")
    for address in (b["status"]["ipv4"], b["status"]["ipv6"]):
        result = lab.exec_in("node-0", "python3", "-m", "autonet.examples.echo_client", address, "7000")
        assert result.out.strip() == "ping", result.err
    routes = lab.exec_in("node-0", "ip", "route").out
    assert "100.89.1.0/24 dev eth1" in routes  # peers of the L2 network are on-link through OVS


def test_openflow_counters_grow_with_the_traffic(lab: Lab) -> None:
    b = node(lab, "node-1")
    host = b["status"]["host"]
    mac = b["status"]["l2_mac"]
    deadline = time.monotonic() + 15
    while not flows(lab, host):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    before = packets_to(lab, host, mac)
    for _ in range(5):
        lab.exec_in("node-0", "python3", "-m", "autonet.examples.echo_client", b["status"]["ipv4"], "7000")
    deadline = time.monotonic() + 15
    while packets_to(lab, host, mac) <= before + 5:
        assert time.monotonic() < deadline, f"counters did not grow: {flows(lab, host)}"
        time.sleep(0.5)


def test_ordinary_networks_are_unaffected(lab: Lab) -> None:
    for web in lab.instances("web"):
        result = lab.http_get("client-0", f"http://{web['status']['ipv4']}:8080/")
        assert result.out.strip() == web["name"]
        assert "l2_port" not in web["status"] and web["status"]["state"] == "Provisioned"
    assert "eth1" not in lab.exec_in("client-0", "ip", "-br", "link").out


def test_an_instance_not_linked_is_dropped_while_a_linked_one_connects(lab: Lab) -> None:
    """OVS drops what no link allows: the probe times out (no RST, no ICMP: the listener
    never sees it); the same probe from a linked instance is answered."""
    target = node(lab, "node-1")
    for address in (target["status"]["ipv4"], target["status"]["ipv6"]):
        probe = ("python3", "-m", "autonet.examples.echo_client", address, "7000", "--timeout", "2")
        control = lab.exec_in("node-0", *probe)
        assert control.out.strip() == "ping", f"positive control node-0 -> {address}: {control.err}"
        for udp in ((), ("--udp",)):
            refused = lab.exec_in("stranger-0", *probe, *udp)
            assert refused.code != 0, f"stranger-0 reached {address}: {refused.out!r}"
            assert failure_kind(refused.err) == "timeout", refused.err
    stranger = lab.instances("stranger")[0]["status"]["ipv4"]
    assert stranger not in lab.ok("logs", "node-1")


def test_a_spoofed_source_address_is_dropped_at_the_port(lab: Lab) -> None:
    """A root process of an instance forges a linked instance's source address: its own
    bridge port drops it. The control: the same datagram with the sender's own address."""
    sender, target = node(lab, "node-0"), node(lab, "node-1")
    src, dst = sender["status"]["ipv4"], target["status"]["ipv4"]
    before = lab.ok("logs", "node-1").count(f"udp from {src}")
    sent = lab.root_in("node-0", sys.executable, "-c", SPOOF_UDP, src, dst, "7000")
    assert sent.stdout.strip() == "sent", sent.stderr
    deadline = time.monotonic() + 10
    while lab.ok("logs", "node-1").count(f"udp from {src}") == before:
        assert time.monotonic() < deadline, "the control datagram never arrived"
        time.sleep(0.3)
    seen = lab.ok("logs", "node-1").count(f"udp from {src}")
    forged = lab.root_in("stranger-0", sys.executable, "-c", SPOOF_UDP, src, dst, "7000")
    assert forged.stdout.strip() == "sent", forged.stderr  # it left the instance
    time.sleep(2)
    assert lab.ok("logs", "node-1").count(f"udp from {src}") == seen, "a forged datagram got through"


def test_a_crafted_l2_vxlan_packet_from_a_non_host_never_reaches_an_instance(lab: Lab) -> None:
    """An attacker on the underlay that is no host sends the L2 network's VXLAN (port
    4790, the VNI read from the kernel) with a frame from a linked instance's MAC and
    address: the target's host drops it. The control: the same bytes from that
    instance's real host arrive."""
    sender, target = node(lab, "node-0"), node(lab, "node-1")
    host = target["status"]["host"]
    info = lab.info
    namespace = info.netns(host)
    vxlans = json.loads(
        subprocess.run(["ip", "-n", namespace, "-j", "-d", "link", "show", "type", "vxlan"],
                       capture_output=True, text=True, check=True).stdout
    )  # fmt: skip
    l2 = next(link for link in vxlans if link["linkinfo"]["info_data"].get("port") == L2_PORT)
    packet = crafted_vxlan(
        int(l2["linkinfo"]["info_data"]["id"]), target["status"]["l2_mac"],
        sender["status"]["ipv4"], target["status"]["ipv4"], 7000, src_mac=sender["status"]["l2_mac"],
    )  # fmt: skip
    heard = f"udp from {sender['status']['ipv4']}"
    before = lab.ok("logs", "node-1").count(heard)
    destination = info.address(info.index(host))
    send_udp(info.netns("controller"), info.address(info.index("controller")), destination, L2_PORT, packet)
    time.sleep(1)
    assert lab.ok("logs", "node-1").count(heard) == before, "a non-host's L2 VXLAN packet reached node-1"
    real = sender["status"]["host"]
    send_udp(info.netns(real), info.address(info.index(real)), destination, L2_PORT, packet)
    deadline = time.monotonic() + 10
    while lab.ok("logs", "node-1").count(heard) == before:
        assert time.monotonic() < deadline, "the same packet from the real host never arrived"
        time.sleep(0.3)


def test_removing_the_link_stops_live_and_new_connections(lab: Lab) -> None:
    target = node(lab, "node-1")["status"]["ipv4"]
    env = {**os.environ, **lab.env, "AUTONET_LAB": lab.name}
    argv = [sys.executable, "-m", "autonet.cli.main", "exec", "node-0", "--"]
    live = subprocess.Popen(
        [*argv, "python3", "-c", LIVE_TCP, target, "7000", "12"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        time.sleep(4)  # the connection is up and echoing
        lab.ok("delete", "composition", "mesh")
        removed = time.time()
        out, _ = live.communicate(timeout=60)
    finally:
        live.kill()
    echoes = [float(line.split()[1]) for line in out.splitlines() if line.startswith("echo ")]
    assert any(t < removed for t in echoes), f"the live connection never worked: {out!r}"
    assert "stalled" in out and all(t < removed + 1.0 for t in echoes), f"it outlived the link: {out!r}"
    refused = lab.exec_in(
        "node-0", "python3", "-m", "autonet.examples.echo_client", target, "7000", "--timeout", "2"
    )
    assert refused.code != 0 and failure_kind(refused.err) == "timeout", refused.err
    lab.apply(MESH)  # and the link back: new connections work again
    deadline = time.monotonic() + 20
    while lab.exec_in("node-0", "python3", "-m", "autonet.examples.echo_client", target, "7000").code != 0:
        assert time.monotonic() < deadline, "the restored link does not carry connections"


def test_deleting_instances_removes_their_rules_on_every_host(lab: Lab) -> None:
    macs = [node(lab, n)["status"]["l2_mac"] for n in ("node-0", "node-1")]
    lab.ok("scale", "node", "0", "--wait")
    deadline = time.monotonic() + 20
    while any(mac in flow for host in ("h1", "h2") for flow in flows(lab, host) for mac in macs):
        assert time.monotonic() < deadline, "rules of deleted instances are still there"
        time.sleep(0.5)
    lab.ok("scale", "node", "2", "--wait")


def test_lab_down_stops_open_vswitch_and_leaves_nothing() -> None:
    with Lab(hosts=2) as lab:
        lab.apply(MANIFEST)
        state = lab.info.dir
        pids = [int(p.read_text()) for p in state.glob("hosts/*/ovs/run/*.pid")]
        assert len(pids) == 4  # ovsdb-server and ovs-vswitchd on each host
        lab.down()
        for pid in pids:
            alive = Path(f"/proc/{pid}").exists() and "ovs" in Path(f"/proc/{pid}/cmdline").read_text()
            assert not alive, f"OVS process {pid} survived lab down"
        assert lab.kernel_netns() == []
        assert not os.path.exists(state)
