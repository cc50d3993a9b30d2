"""The data plane against attackers, on a 2-host lab driven through the CLI.

(a) Anti-spoofing: a root process inside an instance's namespace (as an attacker with
root there would) sends UDP from another instance's address to a listener that
accepts that other instance: the listener records nothing; the genuine instance's
datagram is recorded. Same from an instance of another VPC on the listener's host.
(b) The underlay: a VXLAN packet crafted by a namespace that is not a host (the
controller's), with the VPC's VNI and an inner packet to an instance, never reaches
it; the same bytes sent from a real host's namespace with that host's address do.
(c) Revocation: a live TCP connection over a link stops within 1 s of the link's
removal; it worked before. The time is measured and printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from autonet.dataplane.overlay import VXLAN_PORT
from autonet.model import naming
from tests.e2e.lab import Lab, crafted_vxlan, send_udp, wait_for

pytestmark = pytest.mark.lab

PORT = 7000  # the listener's UDP port, which the link opens to the client
TCP_PORT = 7100

BLUE = f"""
kind: Vpc
name: blue
spec: {{cidrs: [100.84.0.0/16, "fd00:84::/48"]}}
---
kind: Network
name: blue-a
spec: {{vpc: blue, cidrs: [100.84.1.0/24, "fd00:84:0:1::/64"]}}
---
kind: Automaton
name: listener
spec:
  network: blue-a
  command: [python3, -m, autonet.examples.echo, --port, "{PORT}", --udp-only]
  provides: [{{protocol: echo, transport: udp, port: {PORT}}}]
---
kind: Automaton
name: client
spec: {{network: blue-a, command: [sleep, infinity], consumes: [echo], replicas: 2}}
---
kind: Automaton
name: attacker
spec: {{network: blue-a, command: [sleep, infinity], replicas: 2}}
---
kind: Automaton
name: tcpserver
spec:
  network: blue-a
  command: [python3, -m, autonet.examples.echo, --port, "{TCP_PORT}", --tcp-only]
  provides: [{{protocol: stream, transport: tcp, port: {TCP_PORT}}}]
---
kind: Automaton
name: talker
spec: {{network: blue-a, command: [sleep, infinity], consumes: [stream]}}
---
kind: Composition
name: blue-app
spec:
  links: [{{from: client, to: listener, protocol: echo}}]
---
kind: Composition
name: stream-link
spec:
  links: [{{from: talker, to: tcpserver, protocol: stream}}]
"""

RED = """
kind: Vpc
name: red
spec: {cidrs: [100.85.0.0/16, "fd00:85::/48"]}
---
kind: Network
name: red-a
spec: {vpc: red, cidrs: [100.85.1.0/24, "fd00:85:0:1::/64"]}
---
kind: Automaton
name: intruder
spec: {network: red-a, command: [sleep, infinity], replicas: 2}
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=2) as lab:
        lab.apply(BLUE)
        lab.apply(RED)
        yield lab


def by_name(lab: Lab) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in lab.instances()}


def heard_from(lab: Lab, address: str) -> int:
    """How many datagrams the listener logged from `address`."""
    return lab.ok("logs", "listener-0").count(f"udp from {address}\n")


def in_netns(namespace: str, code: str) -> subprocess.CompletedProcess[str]:
    """Python as root inside a namespace: the attacker's position."""
    return subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
    )


SPOOF = """
import socket, subprocess, sys
source, destination, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
six = ':' in source
# Root in its namespace: take the other instance's address as its own.
subprocess.run(['ip'] + (['-6'] if six else []) + ['addr', 'add', source + ('/128' if six else '/32'),
               'dev', 'eth0'] + (['nodad'] if six else []), check=True)
s = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((source, 0))
for _ in range(3):
    s.sendto(b'spoofed', (destination, port))
print('sent')
"""


def spoof(namespace: str, source: str, destination: str) -> None:
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", SPOOF, source, destination, str(PORT)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout.strip() == "sent", result.stderr


def genuine(lab: Lab, client: str, destination: str) -> None:
    result = lab.exec_in(
        client,
        "python3",
        "-m",
        "autonet.examples.echo_client",
        destination,
        str(PORT),
        "--udp",
        "--timeout",
        "2",
    )
    assert result.code == 0, result.err


def test_placement_spans_both_hosts(lab: Lab) -> None:
    found = by_name(lab)
    assert {i["status"]["host"] for i in found.values()} == {"h1", "h2"}
    listener_host = found["listener-0"]["status"]["host"]
    assert any(found[f"client-{n}"]["status"]["host"] != listener_host for n in (0, 1))


@pytest.mark.parametrize("attacker", ["attacker-0", "attacker-1", "intruder-0", "intruder-1"])
def test_an_instance_cannot_send_as_another(lab: Lab, attacker: str) -> None:
    """From every attacker (same VPC, other VPC; on either host), UDP with the client's
    source address (IPv4 and IPv6) records nothing; the client's own is recorded."""
    found = by_name(lab)
    client, listener = found["client-0"], found["listener-0"]
    for family in ("ipv4", "ipv6"):
        source, destination = client["status"][family], listener["status"][family]
        before = heard_from(lab, source)
        spoof(found[attacker]["status"]["netns"], source, destination)
        time.sleep(0.5)
        assert heard_from(lab, source) == before, f"{attacker} sent as client-0 over {family}"
        genuine(lab, "client-0", destination)  # the control: the same probe, from the right port
        count = before
        wait_for(lambda: heard_from(lab, source) > count, timeout=5, what="the genuine datagram")  # noqa: B023


# -- (b) the underlay ------------------------------------------------------------------------


def vxlan_packet(lab: Lab, listener: dict[str, Any], inner_source: str) -> bytes:
    """A VXLAN packet to the listener's host: the VPC's VNI (read from the kernel, as an
    attacker could guess it), the inner frame to the VTEP's MAC, carrying an IPv4 UDP
    datagram from `inner_source` to the listener's port."""
    vpc_uid = lab.json("get", "vpc", "blue")["metadata"]["uid"]
    host_index = int(listener["status"]["host"][1:])
    router = naming.router_netns(lab.host_tags()[host_index - 1], vpc_uid)
    link = json.loads(
        subprocess.run(
            ["ip", "-n", router, "-j", "-d", "link", "show", naming.vxlan_ifname(vpc_uid)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )[0]
    vni, vtep_mac = int(link["linkinfo"]["info_data"]["id"]), link["address"]
    return crafted_vxlan(vni, vtep_mac, inner_source, listener["status"]["ipv4"], PORT)


def send_vxlan(namespace: str, source: str, destination: str, packet: bytes) -> None:
    send_udp(namespace, source, destination, VXLAN_PORT, packet)


def test_a_crafted_vxlan_packet_from_a_non_host_never_reaches_an_instance(lab: Lab) -> None:
    found = by_name(lab)
    listener = found["listener-0"]
    client = next(
        found[f"client-{n}"]
        for n in (0, 1)
        if found[f"client-{n}"]["status"]["host"] != listener["status"]["host"]
    )
    info = lab.info
    target_host = info.address(info.index(listener["status"]["host"]))
    source = client["status"]["ipv4"]
    packet = vxlan_packet(lab, listener, source)

    before = heard_from(lab, source)
    send_vxlan(info.netns("controller"), info.address(info.index("controller")), target_host, packet)
    time.sleep(1)
    assert heard_from(lab, source) == before, "a non-host's VXLAN packet reached the listener"

    # The control: the same bytes from the client's real host, with its address, arrive.
    client_host = client["status"]["host"]
    send_vxlan(info.netns(client_host), info.address(info.index(client_host)), target_host, packet)
    wait_for(lambda: heard_from(lab, source) > before, timeout=5, what="the crafted packet from a real host")


def test_a_peer_host_cannot_claim_a_local_instances_address(lab: Lab) -> None:
    """A real peer host sends, over VXLAN, a datagram whose inner source is a client
    that lives on the listener's own host: the router drops it (the source does not
    route back through the VXLAN device). Control: the same from that client itself."""
    found = by_name(lab)
    listener = found["listener-0"]
    here = listener["status"]["host"]
    local = [found[f"client-{n}"] for n in (0, 1) if found[f"client-{n}"]["status"]["host"] == here]
    if not local:
        pytest.skip("no client shares the listener's host in this placement")
    peer = "h2" if here == "h1" else "h1"
    info = lab.info
    source = local[0]["status"]["ipv4"]
    before = heard_from(lab, source)
    packet = vxlan_packet(lab, listener, source)
    send_vxlan(info.netns(peer), info.address(info.index(peer)), info.address(info.index(here)), packet)
    time.sleep(1)
    assert heard_from(lab, source) == before, "a peer host's packet passed as a local instance's"
    genuine(lab, local[0]["name"], listener["status"]["ipv4"])
    wait_for(lambda: heard_from(lab, source) > before, timeout=5, what="the local client's own datagram")


# -- (c) revocation ----------------------------------------------------------------------------

TALK = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.settimeout(0.5)
s.sendall(b'hello'); assert s.recv(100) == b'hello'
print('connected', time.time(), flush=True)
deadline = time.time() + 20
last = time.time()
while time.time() < deadline:
    try:
        s.sendall(b'ping')
        if s.recv(100) != b'ping':
            print('closed', time.time(), flush=True); break
        last = time.time()
    except OSError as exc:
        print('failed', time.time(), type(exc).__name__, last, flush=True); break
    time.sleep(0.02)
else:
    print('alive', time.time(), flush=True)
"""


def test_a_live_connection_stops_within_a_second_of_its_links_removal(lab: Lab) -> None:
    found = by_name(lab)
    server = found["tcpserver-0"]
    env = {**os.environ, **lab.env, "AUTONET_LAB": lab.name}
    talker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autonet.cli.main",
            "exec",
            "talker-0",
            "--",
            "python3",
            "-c",
            TALK,
            server["status"]["ipv4"],
            str(TCP_PORT),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(3)  # the connection is up and echoing (the control, checked below)
        issued = time.time()
        lab.ok("delete", "composition", "stream-link")
        removed = time.time()
        out, err = talker.communicate(timeout=40)
    finally:
        talker.kill()
    lines = [line.split() for line in out.splitlines()]
    assert lines and lines[0][0] == "connected", f"the connection never worked: {out!r} {err!r}"
    connected = float(lines[0][1])
    assert connected < issued, "the connection was not up before the link's removal"
    assert lines[-1][0] in ("failed", "closed"), f"the connection outlived its link: {out!r}"
    stopped = float(lines[-1][1])
    last_echo = float(lines[-1][3]) if lines[-1][0] == "failed" else stopped
    print(
        f"\nrevocation: `autonet delete composition` took {removed - issued:.3f} s (CLI start included); "
        f"the connection failed {stopped - issued:.3f} s after the command was issued, "
        f"{stopped - removed:+.3f} s from its return ({lines[-1][2] if lines[-1][0] == 'failed' else 'closed'}); "
        f"last echo {last_echo - issued:.3f} s after issue; talker on {found['talker-0']['status']['host']}, "
        f"server on {server['status']['host']}"
    )
    assert last_echo >= issued - 0.5, "the connection was not alive until the removal"
    assert stopped - removed < 1.0, f"the connection stopped {stopped - removed:.3f} s after the removal"
    # And a new connection is refused (the link is gone for new flows too).
    result = lab.connect("talker-0", server["status"]["ipv4"], TCP_PORT)
    assert result.code != 0
