"""Identity-based composition security in a throwaway router (root; no controller, no agent).

Three instances behind one router: a client and a server whose identities are linked,
and an outsider. Only the linked pair connects (directly or through a service address);
an unmapped source and a mapped but unlinked identity are refused with a TCP reset,
element updates alone change who may connect, and a removed link ends its live
connections (their conntrack entries are deleted).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from autonet.dataplane import endpoint as ep
from autonet.dataplane.conntrack import ConntrackReader
from autonet.dataplane.netlink import Netlink
from autonet.dataplane.nftables import Nft
from autonet.dataplane.policy import Allow, RouterPolicy
from autonet.dataplane.services import RouterServices, ServicePort
from tests.dataplane.scratch import Scratch

CLIENT, SERVER, OUTSIDER = 11, 12, 13  # identities (any non-zero numbers)
PORT = 9000
VIP = "100.64.211.1"


SCRATCH = Scratch("anzpol", 210)
unique, spec = SCRATCH.unique, SCRATCH.spec


def serve(namespace: str, running: list[subprocess.Popen[Any]]) -> None:
    """An echo server on PORT, both families, answering every connection in upper case."""
    code = (
        "import socket, threading\n"
        "def echo(c):\n"
        "    while data := c.recv(100): c.sendall(data.upper())\n"
        "    c.close()\n"
        "def loop(s):\n"
        "    while True: threading.Thread(target=echo, args=(s.accept()[0],)).start()\n"
        "for family, any_ in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):\n"
        "    s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "    if family == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n"
        f"    s.bind((any_, {PORT})); s.listen(); threading.Thread(target=loop, args=(s,)).start()\n"
        "print('ready', flush=True)\n"
    )
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code], stdout=subprocess.PIPE
    )
    running.append(process)
    assert process.stdout is not None and process.stdout.readline().strip() == b"ready"


def connect(namespace: str, address: str) -> str:
    """HELLO (connected), refused (a TCP reset) or timeout, seen from `namespace`."""
    code = (
        "import socket\n"
        "try:\n"
        f"    s = socket.create_connection(('{address}', {PORT}), timeout=2)\n"
        "    s.sendall(b'hello'); print(s.recv(100).decode())\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except TimeoutError: print('timeout')\n"
    )
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.stdout.strip() or result.stderr.strip()


TALKER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.sendall(b'one'); print(s.recv(100).decode(), flush=True)
sys.stdin.readline()
try:
    s.sendall(b'two'); print(s.recv(100).decode() or 'closed', flush=True)
except ConnectionResetError: print('reset', flush=True)
except TimeoutError: print('timeout', flush=True)
"""


def talk(namespace: str, address: str, port: int) -> subprocess.Popen[str]:
    """A TCP connection from `namespace`: it sends 'one' and prints the echo, then on a
    line of stdin sends 'two' and prints the echo, `reset` or `timeout`."""
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", TALKER, address, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def set_port(policy: RouterPolicy, s: ep.EndpointSpec) -> None:
    """The instance's veth and addresses into the router's anti-spoofing sets, as the
    agent's wiring does."""
    policy.set_port(s.router_ifname, [a for a in (s.ipv4, s.ipv6) if a])


def ping(namespace: str, address: str) -> bool:
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, "ping", "-c", "1", "-W", "1", address],
        capture_output=True,
        timeout=10,
    )
    return result.returncode == 0


async def test_only_linked_identities_connect_and_elements_alone_change_it(
    nl: Netlink, processes: list[subprocess.Popen[Any]]
) -> None:
    router = unique("r")
    await ep.ensure_router(nl, router)
    client, server, outsider, stranger = (spec(router, i) for i in (1, 2, 3, 4))
    for s in (client, server, outsider, stranger):
        await ep.ensure_endpoint(nl, s)
    nft = Nft(router)
    try:
        policy, services = RouterPolicy(nft), RouterServices(nft)
        for s in (client, server, outsider, stranger):
            set_port(policy, s)
        identities = {
            a: identity
            for s, identity in ((client, CLIENT), (server, SERVER), (outsider, OUTSIDER))
            for a in (s.ipv4, s.ipv6)
            if a
        }  # the stranger has no identity
        rules = {Allow(CLIENT, SERVER, "tcp", PORT)}
        assert policy.sync(identities, rules) == (6 + 2, 0)  # 6 addresses, allow and ping
        services.sync([ServicePort(VIP, "tcp", PORT, (str(server.ipv4),))])
        serve(server.netns, processes)

        # The positive control: the linked pair, both families, and through the VIP.
        assert connect(client.netns, str(server.ipv4)) == "HELLO"
        assert connect(client.netns, str(server.ipv6)) == "HELLO"
        assert connect(client.netns, VIP) == "HELLO"
        assert ping(client.netns, str(server.ipv4))
        # Refused at once: an unmapped source, a mapped but unlinked identity, the
        # reverse direction of the link, the VIP for the unlinked identity.
        assert connect(stranger.netns, str(server.ipv4)) == "refused"
        assert connect(stranger.netns, str(server.ipv6)) == "refused"
        assert connect(outsider.netns, str(server.ipv4)) == "refused"
        assert connect(outsider.netns, VIP) == "refused"
        assert not ping(outsider.netns, str(server.ipv4))
        serve(client.netns, processes)
        assert connect(server.netns, str(client.ipv4)) == "refused"

        # The outsider joins the client's automaton: one map element changes, no rule.
        moved = {**identities, str(outsider.ipv4): CLIENT}
        assert policy.sync(moved, rules) == (1, 1)
        assert connect(outsider.netns, str(server.ipv4)) == "HELLO"
        assert connect(outsider.netns, str(server.ipv6)) == "refused"  # its IPv6 did not move
        # The link goes: new connections are refused.
        assert policy.sync(moved, set()) == (0, 2)
        assert connect(client.netns, str(server.ipv4)) == "refused"
        rules_text = nft.run("list chain inet autonet forward")
        assert "@allow" in rules_text  # the rules stayed, only elements changed
    finally:
        nft.close()


async def test_replies_pass_and_a_removed_link_ends_its_live_connections(
    nl: Netlink, processes: list[subprocess.Popen[Any]]
) -> None:
    """Replies of an allowed connection pass although the reverse pair is not allowed;
    when the link goes, the conntrack entries it allowed are deleted (as the agent does
    on every sync that takes something away), so the open connection ends at once
    instead of living on through "accept established"."""
    router = unique("r")
    await ep.ensure_router(nl, router)
    client, server = spec(router, 5), spec(router, 6)
    for s in (client, server):
        await ep.ensure_endpoint(nl, s)
    nft = Nft(router)
    conntrack = ConntrackReader(router)
    try:
        policy = RouterPolicy(nft)
        for s in (client, server):
            set_port(policy, s)
        identities = {str(client.ipv4): CLIENT, str(server.ipv4): SERVER}
        policy.sync(identities, {Allow(CLIENT, SERVER, "tcp", PORT)})
        serve(server.netns, processes)
        talker = talk(client.netns, str(server.ipv4), PORT)
        processes.append(talker)  # killed at the end if stuck
        assert talker.stdout is not None and talker.stdin is not None
        assert talker.stdout.readline().strip() == "ONE"  # the control: it works, replies pass
        assert [c for c in await conntrack.dump() if c.reply.sport == PORT]

        policy.sync(identities, set())  # the link goes while the connection is open
        assert policy.revoked.rules == {(CLIENT, SERVER, "tcp", PORT)}
        deleted = await conntrack.delete_where(policy.revokes)
        assert [(c.orig.src, c.reply.src, c.reply.sport) for c in deleted] == [
            (str(client.ipv4), str(server.ipv4), PORT)
        ]
        talker.stdin.write("go\n")
        talker.stdin.flush()
        assert talker.stdout.readline().strip() == "reset"  # its next packet is refused
        assert connect(client.netns, str(server.ipv4)) == "refused"
    finally:
        conntrack.close()
        nft.close()
