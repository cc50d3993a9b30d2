"""Endpoints in throwaway namespaces (CNI-plugin style): wire, talk, repair, remove."""

from __future__ import annotations

import subprocess
import sys
import uuid

from autonet.dataplane import endpoint as ep
from autonet.dataplane import netns
from autonet.dataplane.netlink import Netlink
from autonet.model.addressing import mac_for


def unique(prefix: str) -> str:
    return f"an{prefix}{uuid.uuid4().hex[:10]}"


def spec(router: str, index: int) -> ep.EndpointSpec:
    uid = uuid.uuid4().hex
    return ep.EndpointSpec(
        netns=unique("t"),
        router_netns=router,
        router_ifname=f"anv{uid[:8]}",
        mac=mac_for(uid),
        router_mac=mac_for("gw" + uid),
        ipv4=f"100.64.200.{index}",
        ipv6=f"fd00:200::{index}",
        mtu=1450,
    )


def run_in(namespace: str, code: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def talk(server_ns: str, client_ns: str, address: str) -> str:
    family = "AF_INET6" if ":" in address else "AF_INET"
    server = subprocess.Popen(
        [
            "ip", "netns", "exec", server_ns, sys.executable, "-c",
            f"import socket; s=socket.socket(socket.{family}); s.bind(('{address}', 9000)); s.listen();"
            "c,_=s.accept(); c.sendall(c.recv(100).upper()); c.close()",
        ]
    )  # fmt: skip
    try:
        client = run_in(
            client_ns,
            "import socket,time\n"
            "for _ in range(50):\n"
            "    try:\n"
            f"        s=socket.create_connection(('{address}', 9000), timeout=2); break\n"
            "    except ConnectionRefusedError: time.sleep(0.05)\n"
            "s.sendall(b'hello'); print(s.recv(100).decode())",
        )
        return client.stdout.strip() or client.stderr.strip()
    finally:
        server.kill()
        server.wait()


async def test_create_netns_is_idempotent_and_delete_removes_it() -> None:
    name = unique("n")
    netns.create(name).close()
    netns.create(name).close()
    assert netns.exists(name)
    assert netns.delete(name)
    assert not netns.exists(name)
    assert not netns.delete(name)


async def test_two_endpoints_talk_over_ipv4_and_ipv6(nl: Netlink) -> None:
    router = unique("r")
    await ep.ensure_router(nl, router)
    a, b = spec(router, 1), spec(router, 2)
    for s in (a, b):
        await ep.ensure_endpoint(nl, s)
    assert talk(b.netns, a.netns, "100.64.200.2") == "HELLO"
    assert talk(b.netns, a.netns, "fd00:200::2") == "HELLO"


async def test_ensure_endpoint_is_idempotent_and_repairs_a_lost_veth(nl: Netlink) -> None:
    router = unique("r")
    await ep.ensure_router(nl, router)
    a, b = spec(router, 3), spec(router, 4)
    await ep.ensure_endpoint(nl, a)
    await ep.ensure_endpoint(nl, b)
    await ep.ensure_endpoint(nl, b)  # again: nothing changes, nothing fails
    await ep.delete_link(nl, router, b.router_ifname)  # someone removes the veth
    await ep.ensure_endpoint(nl, b)
    assert talk(b.netns, a.netns, "100.64.200.4") == "HELLO"


async def test_delete_endpoint_removes_namespace_veth_and_routes(nl: Netlink) -> None:
    router = unique("r")
    await ep.ensure_router(nl, router)
    a = spec(router, 5)
    await ep.ensure_endpoint(nl, a)
    await ep.delete_endpoint(nl, a.netns, router, a.router_ifname)
    assert not netns.exists(a.netns)
    assert a.router_ifname not in await ep.router_links(nl, router)
    routes = subprocess.run(["ip", "-n", router, "route"], capture_output=True, text=True).stdout
    assert "100.64.200.5" not in routes
    await ep.delete_endpoint(nl, a.netns, router, a.router_ifname)  # idempotent


async def test_instances_have_no_route_beyond_their_gateway(nl: Netlink) -> None:
    router = unique("r")
    await ep.ensure_router(nl, router)
    a = spec(router, 6)
    await ep.ensure_endpoint(nl, a)
    result = run_in(a.netns, "import socket; socket.create_connection(('100.64.0.1', 7080), timeout=1)")
    assert result.returncode != 0  # the router has no route to any underlay
