"""The VXLAN overlay of a VPC router: one device, and static routes, neighbours and FDB.

The control plane hands each host the full list of the VPC's remote hosts and their
instances; `sync_vpc` makes the router namespace match it and removes what is no
longer wanted, so the call is idempotent and self-healing:

    fdb:   <peer vtep MAC> dst <peer underlay>           (one per peer host)
    neigh: <peer vtep IPv4/IPv6> lladdr <peer vtep MAC>  (one per peer host, permanent)
    route: <peer vtep IPv4>/32 dev vx                    (so the router can answer it)
    route: <instance>/32 via <peer vtep IPv4> dev vx onlink, /128 via <peer vtep IPv6>

No learning, no multicast, no flooding. The device is created from the host namespace
(so its UDP socket lives on the underlay) directly into the router namespace.

A VXLAN socket takes a packet from anyone who can reach the host's UDP port, and the
VNI is no secret: so in the host namespace `UnderlayFilter` drops VXLAN packets whose
source is not the underlay address of a known host (a peer of some VPC or segment this
host carries):

    table inet autonet_underlay
      set hosts4/hosts6   the peers' underlay addresses, counted over the VPCs
      set ports           the overlays' UDP ports: 4789, and those plugins add (4790: l2ovs)
      chain input         udp dport in ports, source not in the set: drop
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from pyroute2 import AsyncIPRoute

from autonet.dataplane import nftables as nf
from autonet.dataplane.endpoint import IFA_F_NODAD, NUD_PERMANENT
from autonet.dataplane.netlink import EEXIST, ENOENT, ESRCH, Netlink, call, link_index, netns_fd

VXLAN_PORT = 4789
RTNH_F_ONLINK = 4
RTPROT_AUTONET = 250  # marks the routes we own on the VXLAN device
AF_BRIDGE = 7


UNDERLAY_TABLE = "autonet_underlay"
UNDERLAY_SKELETON = f"""
table inet {UNDERLAY_TABLE} {{
  set hosts4 {{ type ipv4_addr; }}
  set hosts6 {{ type ipv6_addr; }}
  set ports {{ type inet_service; }}
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    udp dport @ports ip saddr != @hosts4 drop
    udp dport @ports ip6 saddr != @hosts6 drop
  }}
}}
"""


class UnderlayFilter:
    """The host namespace's VXLAN filter: only known hosts' underlay addresses may send.

    Each VPC router (and each plugin's segment) contributes its peers; an address stays in the set while some
    router has it as a peer (a count per address), so an update is the change only.
    """

    def __init__(self, nft: nf.Nft) -> None:
        self.nft = nft
        self.counts: Counter[str] = Counter()
        self.ports = {VXLAN_PORT}
        self.made = False

    def police(self, port: int) -> None:
        """Filter UDP `port` too (another overlay's, e.g. a plugin's VXLAN): only known
        hosts' underlay addresses may send to it. Its peers come through `update`."""
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not a UDP port")
        if port not in self.ports:
            self.ports.add(port)
            if self.made:
                self.nft.run(f"add element inet {UNDERLAY_TABLE} ports {{ {port} }}")

    def update(self, old: set[str], new: set[str]) -> None:
        """One router's peers went from `old` to `new` (underlay addresses)."""
        new = {nf.address(a) for a in new}
        added, gone = [], []
        for address in new - old:
            self.counts[address] += 1
            if self.counts[address] == 1:
                added.append(address)
        for address in old - new:
            self.counts[address] -= 1
            if self.counts[address] <= 0:
                del self.counts[address]
                gone.append(address)
        script = []
        if not self.made:  # first use (agent start): the table afresh, a known state
            script += [
                f"table inet {UNDERLAY_TABLE}",
                f"delete table inet {UNDERLAY_TABLE}",
                UNDERLAY_SKELETON,
            ]
            added = list(self.counts)
            gone = []
            script.append(
                f"add element inet {UNDERLAY_TABLE} ports {{ {', '.join(map(str, sorted(self.ports)))} }}"
            )
        for verb, addresses in (("delete", gone), ("add", added)):
            for family, name in ((4, "hosts4"), (6, "hosts6")):
                chosen = sorted(a for a in addresses if (":" in a) == (family == 6))
                if chosen:
                    script.append(f"{verb} element inet {UNDERLAY_TABLE} {name} {{ {', '.join(chosen)} }}")
        if script:
            self.nft.run("\n".join(script))
        self.made = True

    def hosts(self) -> set[str]:
        return set(self.counts)


@dataclass(frozen=True)
class Vtep:
    underlay: str
    mac: str
    ipv4: str
    ipv6: str


@dataclass
class Peer:
    vtep: Vtep
    addresses: list[str] = field(default_factory=list)  # the peer's instances (IPv4 and IPv6)


@dataclass
class VxlanSpec:
    ifname: str
    vni: int
    local: Vtep
    mtu: int


async def ensure_vxlan(nl: Netlink, router_netns: str, spec: VxlanSpec) -> int:
    router = await nl.ns(router_netns)
    index = await link_index(router, spec.ifname)
    if index is None:
        host = await nl.host()
        local = ipaddress.ip_address(spec.local.underlay)
        attrs = {"vxlan_local6" if local.version == 6 else "vxlan_local": str(local)}
        with netns_fd(router_netns) as fd:
            await host.link(
                "add",
                ifname=spec.ifname,
                kind="vxlan",
                vxlan_id=spec.vni,
                vxlan_port=VXLAN_PORT,
                vxlan_learning=0,
                address=spec.local.mac,
                mtu=spec.mtu,
                net_ns_fd=fd,
                **attrs,
            )
        index = await link_index(router, spec.ifname)
        assert index is not None
    await call(router.link("set", index=index, state="up", mtu=spec.mtu))
    await call(router.addr("add", index=index, address=spec.local.ipv4, prefixlen=32), EEXIST)
    await call(
        router.addr("add", index=index, address=spec.local.ipv6, prefixlen=64, flags=IFA_F_NODAD), EEXIST
    )
    return index


async def _current_routes(router: AsyncIPRoute, index: int) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    for family in (2, 10):
        async for route in await router.get_routes(family=family, oif=index, proto=RTPROT_AUTONET):
            if route.get_attr("RTA_OIF") != index or route["proto"] != RTPROT_AUTONET:
                continue
            dst = f"{route.get_attr('RTA_DST')}/{route['dst_len']}"
            found[dst] = (family, str(route.get_attr("RTA_GATEWAY") or ""))
    return found


async def _current_neighbours(router: AsyncIPRoute, index: int) -> dict[str, str]:
    found: dict[str, str] = {}
    async for neigh in await router.get_neighbours(ifindex=index):
        if neigh["ifindex"] == index and neigh["state"] & NUD_PERMANENT:
            found[str(neigh.get_attr("NDA_DST"))] = str(neigh.get_attr("NDA_LLADDR"))
    return found


async def _current_fdb(router: AsyncIPRoute, index: int) -> dict[str, str]:
    found: dict[str, str] = {}
    async for entry in await router.fdb("dump", ifindex=index):
        if entry["ifindex"] == index and entry.get_attr("NDA_DST"):
            found[str(entry.get_attr("NDA_LLADDR"))] = str(entry.get_attr("NDA_DST"))
    return found


def _desired(peers: list[Peer]) -> tuple[dict[str, str], dict[str, str], dict[str, tuple[int, str]]]:
    fdb: dict[str, str] = {}
    neigh: dict[str, str] = {}
    routes: dict[str, tuple[int, str]] = {}
    for peer in peers:
        fdb[peer.vtep.mac] = peer.vtep.underlay
        neigh[peer.vtep.ipv4] = peer.vtep.mac
        neigh[peer.vtep.ipv6] = peer.vtep.mac
        routes[f"{peer.vtep.ipv4}/32"] = (2, "")
        for address in peer.addresses:
            if ipaddress.ip_address(address).version == 4:
                routes[f"{address}/32"] = (2, peer.vtep.ipv4)
            else:
                routes[f"{address}/128"] = (10, peer.vtep.ipv6)
    return fdb, neigh, routes


Entries = tuple[dict[str, str], dict[str, str], dict[str, tuple[int, str]]]


async def sync_vpc(
    nl: Netlink, router_netns: str, spec: VxlanSpec, peers: list[Peer], applied: Entries | None = None
) -> tuple[int, int, Entries]:
    """Make the router's overlay match `peers`.

    `applied` is what the previous call made (kept by the caller); without it the
    kernel is read back, which costs more than the change itself on a busy router.
    Returns (entries added, entries removed, what is now applied).
    """
    index = await ensure_vxlan(nl, router_netns, spec)
    router = await nl.ns(router_netns)
    want_fdb, want_neigh, want_routes = _desired(peers)
    if applied is None:
        have_fdb = await _current_fdb(router, index)
        have_neigh = await _current_neighbours(router, index)
        have_routes = await _current_routes(router, index)
    else:
        have_fdb, have_neigh, have_routes = applied
    added = removed = 0
    for mac, dst in want_fdb.items():
        if have_fdb.get(mac) != dst:
            if mac in have_fdb:
                await call(router.fdb("del", ifindex=index, lladdr=mac, dst=have_fdb[mac]), ENOENT)
            await call(router.fdb("append", ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT), EEXIST)
            added += 1
    for address, mac in want_neigh.items():
        if have_neigh.get(address) != mac:
            await call(router.neigh("replace", ifindex=index, dst=address, lladdr=mac, state=NUD_PERMANENT))
            added += 1
    for dst, (family, gateway) in want_routes.items():
        if have_routes.get(dst) != (family, gateway):
            extra = {"gateway": gateway, "flags": RTNH_F_ONLINK} if gateway else {"scope": 253}
            await call(
                router.route("replace", dst=dst, oif=index, proto=RTPROT_AUTONET, family=family, **extra)
            )
            added += 1
    for dst, (family, _) in have_routes.items():
        if dst not in want_routes:
            await call(router.route("del", dst=dst, oif=index, family=family), ENOENT, ESRCH)
            removed += 1
    for address in have_neigh:
        if address not in want_neigh:  # permanent entries on the device are all ours
            await call(router.neigh("del", ifindex=index, dst=address), ENOENT)
            removed += 1
    for mac, dst in have_fdb.items():
        if mac not in want_fdb:
            await call(router.fdb("del", ifindex=index, lladdr=mac, dst=dst), ENOENT)
            removed += 1
    return added, removed, (want_fdb, want_neigh, want_routes)
