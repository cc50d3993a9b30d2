"""The router's anti-spoofing guard, backend revocation and the host's VXLAN filter, in
throwaway namespaces (root; no controller, no agent).

Each attack is made as a root user inside an instance's namespace would make it (an
address of another instance added to its own interface, raw ARP and ICMPv6 frames),
and each is paired with the same probe from where it is allowed, which passes.
"""

from __future__ import annotations

import json
import subprocess
import sys

from autonet.dataplane import endpoint as ep
from autonet.dataplane.conntrack import ConntrackReader
from autonet.dataplane.netlink import Netlink
from autonet.dataplane.nftables import Nft
from autonet.dataplane.overlay import VXLAN_PORT, UnderlayFilter
from autonet.dataplane.policy import Allow, RouterPolicy
from autonet.dataplane.services import RouterServices, ServicePort
from tests.dataplane.scratch import Scratch
from tests.dataplane.test_policy import PORT as ECHO_PORT
from tests.dataplane.test_policy import serve, talk

CLIENT, SERVER = 21, 22
PORT = 9100
VIP = "100.64.213.1"
SCRATCH = Scratch("anzgrd", 214)
unique, spec = SCRATCH.unique, SCRATCH.spec


def run_in(namespace: str, code: str, timeout: float = 10) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def ip(namespace: str, *args: str) -> None:
    subprocess.run(["ip", "-n", namespace, *args], check=True, capture_output=True)


def listen(namespace: str, port: int, processes: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """A UDP listener (both families) that prints `source payload` per datagram and
    ends 1.5 s after the last one."""
    code = (
        "import select, socket\n"
        "socks = []\n"
        "for family, any_ in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):\n"
        "    s = socket.socket(family, socket.SOCK_DGRAM)\n"
        "    if family == socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n"
        f"    s.bind((any_, {port})); socks.append(s)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    ready, _, _ = select.select(socks, [], [], 1.5)\n"
        "    if not ready: break\n"
        "    for s in ready:\n"
        "        data, peer = s.recvfrom(2000)\n"
        "        print(peer[0], data.decode(), flush=True)\n"
    )
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    processes.append(process)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def heard(listener: subprocess.Popen[str]) -> list[str]:
    out, _ = listener.communicate(timeout=15)
    return out.splitlines()


def send_udp(namespace: str, source: str, destination: str, port: int, payload: str) -> None:
    family = "AF_INET6" if ":" in destination else "AF_INET"
    run_in(
        namespace,
        f"import socket\ns = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n"
        f"s.bind(('{source}', 0)); s.sendto(b'{payload}', ('{destination}', {port}))\n",
    )


async def router_with(nl: Netlink, count: int) -> tuple[str, list[ep.EndpointSpec], Nft, RouterPolicy]:
    router = unique("r")
    await ep.ensure_router(nl, router)
    specs = [spec(router, i + 1) for i in range(count)]
    for s in specs:
        await ep.ensure_endpoint(nl, s)
    nft = Nft(router)
    policy = RouterPolicy(nft)
    for s in specs:
        policy.set_port(s.router_ifname, [str(s.ipv4), str(s.ipv6)])
    return router, specs, nft, policy


async def test_an_instance_cannot_send_from_another_instances_address(
    nl: Netlink, processes: list[subprocess.Popen[str]]
) -> None:
    """The attacker adds the client's addresses to its own eth0 and sends from them to a
    server that accepts the client: nothing arrives; the client's own datagrams do."""
    _, (client, server, attacker), nft, policy = await router_with(nl, 3)
    try:
        identities = {str(a): CLIENT for a in (client.ipv4, client.ipv6)}
        identities |= {str(a): SERVER for a in (server.ipv4, server.ipv6)}
        policy.sync(identities, {Allow(CLIENT, SERVER, "udp", PORT)})
        ip(attacker.netns, "addr", "add", f"{client.ipv4}/32", "dev", "eth0")
        ip(attacker.netns, "-6", "addr", "add", f"{client.ipv6}/128", "dev", "eth0", "nodad")

        listener = listen(server.netns, PORT, processes)
        for family in ("ipv4", "ipv6"):
            source, destination = getattr(client, family), getattr(server, family)
            send_udp(attacker.netns, source, destination, PORT, f"spoofed-{family}")
            send_udp(client.netns, source, destination, PORT, f"genuine-{family}")
        assert sorted(heard(listener)) == sorted(
            [f"{client.ipv4} genuine-ipv4", f"{client.ipv6} genuine-ipv6"]
        )
        final = nft.run("list chain inet autonet from_port").splitlines()[-3]  # (then "}" twice)
        assert final.split()[:2] == ["counter", "packets"] and int(final.split()[2]) >= 2  # both spoofs
    finally:
        nft.close()


ARP_PROBE = """
import socket, struct, time
def mac(text): return bytes.fromhex(text.replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(('eth0', 0x0806))
own = open('/sys/class/net/eth0/address').read().strip()
sender = socket.inet_aton('{sender}')
arp = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 1, mac(own), sender, bytes(6),
                  socket.inet_aton('169.254.1.1'))
s.send(b'\\xff' * 6 + mac(own) + b'\\x08\\x06' + arp)
s.settimeout(0.2)
deadline, answered = time.time() + 1.5, False
while time.time() < deadline and not answered:
    try: frame = s.recv(100)
    except TimeoutError: continue
    op, spa, tpa = struct.unpack('!H', frame[20:22])[0], frame[28:32], frame[38:42]
    answered = op == 2 and spa == socket.inet_aton('169.254.1.1') and tpa == sender
print('answered' if answered else 'silence')
"""

NA_PROBE = """
import socket, struct
own = open('/sys/class/net/eth0/address').read().strip()
index = socket.if_nametoindex('eth0')
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
target = socket.inet_pton(socket.AF_INET6, '{target}')
option = bytes([2, 1]) + bytes.fromhex(own.replace(':', ''))
s.sendto(struct.pack('!BBHI', 136, 0, 0, 0x20000000) + target + option, ('ff02::1', 0, 0, index))
"""


def na_drops(nft: Nft) -> int:
    chain = json.loads(nft.run("list chain inet autonet from_port", json=True))
    for item in chain["nftables"]:
        rule = item.get("rule")
        if rule and "nd-neighbor-advert" in json.dumps(rule["expr"]):
            for expr in rule["expr"]:
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
    raise AssertionError("no neighbour advertisement rule")


async def test_an_instance_cannot_poison_the_routers_neighbours(nl: Netlink) -> None:
    """ARP with another instance's sender address gets no answer (and leaves no
    neighbour entry); a neighbour advertisement for another instance's address is
    dropped. Controls: the instance's own ARP is answered, its own advertisement and
    its link-local neighbour discovery with the router pass."""
    router, (victim, attacker), nft, policy = await router_with(nl, 2)
    try:
        policy.sync({}, set())
        assert run_in(attacker.netns, ARP_PROBE.format(sender=attacker.ipv4)) == "answered"
        assert run_in(attacker.netns, ARP_PROBE.format(sender=victim.ipv4)) == "silence"
        neighbours = subprocess.run(
            ["ip", "-n", router, "neigh", "show", "dev", attacker.router_ifname],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert str(victim.ipv4) not in neighbours

        before = na_drops(nft)
        run_in(attacker.netns, NA_PROBE.format(target=attacker.ipv6))  # its own: passes
        assert na_drops(nft) == before
        run_in(attacker.netns, NA_PROBE.format(target=victim.ipv6))
        assert na_drops(nft) == before + 1
        # Neighbour discovery between the instance and its router works (link-local).
        ping = subprocess.run(
            ["ip", "netns", "exec", attacker.netns, "ping", "-6", "-c", "1", "-W", "2", "fe80::1%eth0"],
            capture_output=True,
        )
        assert ping.returncode == 0, ping.stdout
    finally:
        nft.close()


async def test_a_removed_backend_loses_its_live_flows(
    nl: Netlink, processes: list[subprocess.Popen[str]]
) -> None:
    """A UDP flow to a service address keeps its backend through conntrack when the
    backend leaves the service (the stale entry kube-proxy deletes); deleting the
    entries of removed backends ends it."""
    router, (client, backend), nft, policy = await router_with(nl, 2)
    services = RouterServices(nft)
    conntrack = ConntrackReader(router)
    try:
        policy.sync(
            {str(client.ipv4): CLIENT, str(backend.ipv4): SERVER}, {Allow(CLIENT, SERVER, "udp", PORT)}
        )
        services.sync([ServicePort(VIP, "udp", PORT, (str(backend.ipv4),))])
        listener = listen(backend.netns, PORT, processes)
        code = (
            "import socket, sys\n"
            f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('{VIP}', {PORT}))\n"
            "for line in sys.stdin:\n"
            "    s.send(line.strip().encode())\n"
            "    print('sent', flush=True)\n"
        )
        sender = subprocess.Popen(
            ["ip", "netns", "exec", client.netns, sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(sender)
        assert sender.stdin is not None and sender.stdout is not None

        def send(payload: str) -> None:
            assert sender.stdin is not None and sender.stdout is not None
            sender.stdin.write(payload + "\n")
            sender.stdin.flush()
            assert sender.stdout.readline().strip() == "sent"

        send("before")  # the control: the flow reaches the backend
        services.sync([ServicePort(VIP, "udp", PORT, ())])  # the backend leaves
        send("stale")  # conntrack still sends it to the old backend
        deleted = await conntrack.delete_where(services.revokes)
        assert [(c.orig.dst, c.reply.src) for c in deleted] == [(VIP, str(backend.ipv4))]
        send("after")
        assert heard(listener) == [f"{client.ipv4} before", f"{client.ipv4} stale"]
    finally:
        conntrack.close()
        nft.close()


async def test_only_known_hosts_reach_the_vxlan_port(
    nl: Netlink, processes: list[subprocess.Popen[str]]
) -> None:
    """A host namespace with two neighbours on the underlay, a known peer and a
    stranger: only the peer's datagrams reach UDP 4789, over IPv4 and IPv6, and the
    peer is dropped too once no VPC has it."""
    host, peer, stranger = unique("h"), unique("p"), unique("x")
    for name in (host, peer, stranger):
        await nl.ns(name, create=True)
    for n, (other, link) in enumerate(((peer, "anzgp"), (stranger, "anzgx")), start=1):
        subprocess.run(
            ["ip", "-n", host, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", other],
            check=True,
        )
        ip(host, "addr", "add", f"100.64.215.{4 * n + 1}/30", "dev", link)
        ip(other, "addr", "add", f"100.64.215.{4 * n + 2}/30", "dev", "eth0")
        ip(host, "-6", "addr", "add", f"fd00:215:{n}::1/64", "dev", link, "nodad")
        ip(other, "-6", "addr", "add", f"fd00:215:{n}::2/64", "dev", "eth0", "nodad")
        for name, device in ((host, link), (other, "eth0")):
            ip(name, "link", "set", device, "up")
    nft = Nft(host)
    try:
        underlay = UnderlayFilter(nft)
        known = {"100.64.215.6", "fd00:215:1::2"}
        underlay.update(set(), known)
        listener = listen(host, VXLAN_PORT, processes)
        for source, name in (("100.64.215.6", peer), ("100.64.215.10", stranger)):
            send_udp(
                name, source, "100.64.215.5" if name == peer else "100.64.215.9", VXLAN_PORT, f"v4-{name}"
            )
        for source, n, name in (("fd00:215:1::2", 1, peer), ("fd00:215:2::2", 2, stranger)):
            send_udp(name, source, f"fd00:215:{n}::1", VXLAN_PORT, f"v6-{name}")
        assert sorted(heard(listener)) == sorted([f"100.64.215.6 v4-{peer}", f"fd00:215:1::2 v6-{peer}"])

        # A plugin's overlay port is policed once it asks; a port nobody polices is not.
        underlay.police(4790)
        for port in (4790, 4791):
            listener = listen(host, port, processes)
            for source, name in (("100.64.215.6", peer), ("100.64.215.10", stranger)):
                destination = "100.64.215.5" if name == peer else "100.64.215.9"
                send_udp(name, source, destination, port, f"{port}-{name}")
            expected = [f"100.64.215.6 {port}-{peer}"] + (
                [f"100.64.215.10 {port}-{stranger}"] if port == 4791 else []
            )
            assert sorted(heard(listener)) == sorted(expected), port

        underlay.update(known, set())  # no VPC has the peer any more
        listener = listen(host, VXLAN_PORT, processes)
        send_udp(peer, "100.64.215.6", "100.64.215.5", VXLAN_PORT, "late")
        assert heard(listener) == []
    finally:
        nft.close()


async def test_after_a_restart_the_first_sync_revokes_what_it_no_longer_allows(
    nl: Netlink, processes: list[subprocess.Popen[str]]
) -> None:
    """The agent restarts (a new RouterPolicy rebuilds the table) and the state it now
    holds has lost one of two links: the connection over the lost link is reset, the
    one over the kept link goes on (the control)."""
    router, (client, kept, lost), nft, policy = await router_with(nl, 3)
    conntrack = ConntrackReader(router)
    try:
        identities = {str(client.ipv4): CLIENT, str(kept.ipv4): SERVER, str(lost.ipv4): SERVER + 1}
        policy.sync(
            identities, {Allow(CLIENT, SERVER, "tcp", ECHO_PORT), Allow(CLIENT, SERVER + 1, "tcp", ECHO_PORT)}
        )
        talkers = []
        for server in (kept, lost):
            serve(server.netns, processes)
            talker = talk(client.netns, str(server.ipv4), ECHO_PORT)
            processes.append(talker)
            assert talker.stdout is not None and talker.stdout.readline().strip() == "ONE"
            talkers.append(talker)

        restarted = RouterPolicy(nft)  # as a restarted agent's router: ports first, then the state
        for s in (client, kept, lost):
            restarted.set_port(s.router_ifname, [str(s.ipv4), str(s.ipv6)])
        restarted.sync(identities, {Allow(CLIENT, SERVER, "tcp", ECHO_PORT)})
        deleted = await conntrack.delete_where(restarted.revokes)
        assert [(c.orig.src, c.reply.src) for c in deleted if c.protocol == "tcp"] == [
            (str(client.ipv4), str(lost.ipv4))
        ]
        answers = []
        for talker in talkers:
            assert talker.stdin is not None and talker.stdout is not None
            talker.stdin.write("go\n")
            talker.stdin.flush()
            answers.append(talker.stdout.readline().strip())
        assert answers == ["TWO", "reset"]
    finally:
        conntrack.close()
        nft.close()
