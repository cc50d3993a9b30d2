"""Instance endpoints and the VPC router namespace they hang off.

Layout (Calico-style routed endpoints, no broadcast domain):

    instance netns: eth0  100.x.y.z/32, fd..::n/128, default via 169.254.1.1 / fe80::1
         | veth (created in the router namespace, its peer born in the instance netns)
    router netns:   anv.. fe80::1/64; 169.254.1.1/32 on lo; /32 and /128 routes per instance

Every neighbour entry on both sides is static (the control plane knows all MACs), so no
ARP or NDP is needed before the first packet. All calls are idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2 import AsyncIPRoute

from autonet.dataplane import netns
from autonet.dataplane.netlink import (
    EADDRNOTAVAIL,
    EEXIST,
    ENODEV,
    ENOENT,
    ESRCH,
    Netlink,
    add_veth,
    call,
    link_index,
)

GATEWAY_V4 = "169.254.1.1"
GATEWAY_V6 = "fe80::1"
INSTANCE_IFNAME = "eth0"
VETH_PREFIX = "anv"
IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80
RT_SCOPE_LINK = 253

ROUTER_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    "net.netfilter.nf_conntrack_acct": "1",  # bytes and packets per flow
    "net.netfilter.nf_conntrack_timestamp": "1",  # flow start times
}


@dataclass(frozen=True)
class EndpointSpec:
    """Everything the kernel needs to wire one instance into its VPC router."""

    netns: str  # the instance's namespace
    router_netns: str  # the VPC router namespace on this host
    router_ifname: str  # the router-side veth name (unique in the router namespace)
    mac: str  # the instance's eth0 MAC
    router_mac: str  # the router-side veth MAC (the instance's gateway)
    ipv4: str | None  # bare address, held as /32
    ipv6: str | None  # bare address, held as /128
    mtu: int = 1500


async def ensure_router(nl: Netlink, name: str) -> None:
    """Create the VPC router namespace `name` if missing and give it its gateway address."""
    fresh = not netns.exists(name)
    ipr = await nl.ns(name, create=True)
    await call(ipr.link("set", index=1, state="up"))
    await call(ipr.addr("add", index=1, address=GATEWAY_V4, prefixlen=32), EEXIST)
    if fresh or _sysctl(name, "net.ipv4.ip_forward") != "1":
        netns.write_sysctls(name, ROUTER_SYSCTLS)


def _sysctl(name: str, key: str) -> str:
    def read() -> str:
        with open("/proc/sys/" + key.replace(".", "/")) as handle:
            return handle.read().strip()

    return netns.call_in(name, read)


async def delete_router(nl: Netlink, name: str) -> None:
    nl.forget(name)
    netns.delete(name)


async def ensure_endpoint(nl: Netlink, spec: EndpointSpec) -> None:
    """Create (or repair) the instance namespace, its veth and its addresses and routes."""
    router = await nl.ns(spec.router_netns)
    inst = await nl.ns(spec.netns, create=True)
    rindex = await link_index(router, spec.router_ifname)
    iindex = await link_index(inst, INSTANCE_IFNAME)
    if rindex is not None and iindex is None:  # half-made veth from an interrupted call
        await call(router.link("del", index=rindex), ENODEV)
        rindex = None
    if rindex is None:
        if iindex is not None:
            await call(inst.link("del", index=iindex), ENODEV)
        await add_veth(
            router, spec.router_ifname, spec.netns, INSTANCE_IFNAME, spec.mtu, spec.router_mac, spec.mac
        )
        rindex = await link_index(router, spec.router_ifname)
        iindex = await link_index(inst, INSTANCE_IFNAME)
    assert rindex is not None and iindex is not None

    await call(router.link("set", index=rindex, state="up"))
    await call(
        router.addr("add", index=rindex, address=GATEWAY_V6, prefixlen=64, flags=IFA_F_NODAD),
        EEXIST,
    )
    await call(inst.link("set", index=1, state="up"))
    await call(inst.link("set", index=iindex, state="up"))
    if spec.ipv4:
        await call(inst.addr("add", index=iindex, address=spec.ipv4, prefixlen=32), EEXIST)
        await _neigh(inst, iindex, GATEWAY_V4, spec.router_mac)
        await call(inst.route("replace", dst=f"{GATEWAY_V4}/32", oif=iindex, scope=RT_SCOPE_LINK))
        await call(inst.route("replace", dst="0.0.0.0/0", gateway=GATEWAY_V4, oif=iindex))
        await _neigh(router, rindex, spec.ipv4, spec.mac)
        await call(router.route("replace", dst=f"{spec.ipv4}/32", oif=rindex))
    if spec.ipv6:
        await call(
            inst.addr("add", index=iindex, address=spec.ipv6, prefixlen=128, flags=IFA_F_NODAD),
            EEXIST,
        )
        await _neigh(inst, iindex, GATEWAY_V6, spec.router_mac)
        await call(inst.route("replace", dst="::/0", gateway=GATEWAY_V6, oif=iindex))
        await _neigh(router, rindex, spec.ipv6, spec.mac)
        await call(router.route("replace", dst=f"{spec.ipv6}/128", oif=rindex))


async def _neigh(ipr: AsyncIPRoute, index: int, address: str, mac: str) -> None:
    await call(ipr.neigh("replace", ifindex=index, dst=address, lladdr=mac, state=NUD_PERMANENT))


async def delete_endpoint(nl: Netlink, instance_netns: str, router_netns: str, router_ifname: str) -> None:
    """Remove the veth (its routes and neighbours go with it) and the instance namespace."""
    if netns.exists(router_netns):
        router = await nl.ns(router_netns)
        index = await link_index(router, router_ifname)
        if index is not None:
            await call(router.link("del", index=index), ENODEV, ENOENT)
    nl.forget(instance_netns)
    netns.delete(instance_netns)


async def router_links(nl: Netlink, router_netns: str) -> list[str]:
    """Names of the instance veths in a router namespace (for garbage collection)."""
    router = await nl.ns(router_netns)
    names = []
    async for link in await router.get_links():
        name = str(link.get_attr("IFLA_IFNAME"))
        if name.startswith(VETH_PREFIX):
            names.append(name)
    return names


async def delete_link(nl: Netlink, namespace: str, ifname: str) -> None:
    ipr = await nl.ns(namespace)
    index = await link_index(ipr, ifname)
    if index is not None:
        await call(ipr.link("del", index=index), ENODEV, ENOENT, ESRCH, EADDRNOTAVAIL)
