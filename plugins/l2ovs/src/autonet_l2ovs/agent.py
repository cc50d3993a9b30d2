"""The L2 plugin's agent side: the `L2` gRPC service added to every agent.

It runs Open vSwitch for the host, gives instances on `l2: ovs` networks a second
interface (`eth1`, a veth whose host end is a port of the network's bridge), and makes
each network's bridge match what the controller asks: local ports, a kernel VXLAN port
(static FDB: one all-zeros entry per peer host for broadcast and multicast, one entry
per remote instance MAC; no learning), and OpenFlow rules (flows.py): anti-spoofing on
every port, conntrack and composition security, then one rule per MAC to its port and
one for broadcast/multicast to flood. Rules are replaced with `replace-flows`, so rules
that did not change keep their counters.
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import grpc

from autonet.agent.plugins import AgentPluginAPI
from autonet.dataplane import netns
from autonet.dataplane.endpoint import IFA_F_NODAD
from autonet.dataplane.netlink import EEXIST, ENOENT, add_veth, call, link_index
from autonet_l2ovs import l2_pb2 as pb
from autonet_l2ovs import l2_pb2_grpc as pb_grpc
from autonet_l2ovs.flows import FlowError
from autonet_l2ovs.flows import build as build_flows
from autonet_l2ovs.ovs import Ovs, OvsError

L2_PORT = 4790  # the VPC routers' VXLAN uses 4789; this overlay has its own port
INSTANCE_IFNAME = "eth1"


def _tx_offload_off(namespace: str | None, ifname: str) -> None:
    prefix = ["nsenter", f"--net={netns.netns_path(namespace)}"] if namespace else []
    subprocess.run([*prefix, "ethtool", "-K", ifname, "tx", "off"], capture_output=True, check=False)


class L2Servicer(pb_grpc.L2Servicer):
    def __init__(self, api: AgentPluginAPI) -> None:
        self.host_agent = api.host_agent
        self.ovs = Ovs(Path(api.state_dir))
        self.lock = asyncio.Lock()
        self.underlays: dict[str, set[str]] = {}  # each segment's peers, in the underlay filter

    def _status(self) -> pb.OvsStatus:
        if not self.ovs.running():
            return pb.OvsStatus(running=False)
        bridges = [
            pb.Bridge(name=b, ports=self.ovs.ports(b), flows=self.ovs.dump_flows(b))
            for b in self.ovs.bridges()
        ]
        return pb.OvsStatus(running=True, version=self.ovs.version(), bridges=bridges)

    async def _guard(self, context: Any, work: Any) -> pb.OvsStatus:
        async with self.lock:
            try:
                await work()
            except (OvsError, OSError) as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            return self._status()

    async def StartOvs(self, request: pb.StartRequest, context: Any) -> pb.OvsStatus:
        async def work() -> None:
            await asyncio.to_thread(self.ovs.start)

        return await self._guard(context, work)

    async def Dump(self, request: pb.DumpRequest, context: Any) -> pb.OvsStatus:
        return await asyncio.to_thread(self._status)

    async def Attach(self, request: pb.AttachRequest, context: Any) -> pb.OvsStatus:
        async def work() -> None:
            record = self.host_agent.table.get(request.instance_uid)
            if record is None:
                raise OSError(f"instance {request.instance_uid} is not on this host")
            nl = self.host_agent.nl
            host = await nl.host()
            inst = await nl.ns(record.netns)
            if await link_index(host, request.port) is None:
                await add_veth(
                    host, request.port, record.netns, INSTANCE_IFNAME, request.mtu, peer_mac=request.mac
                )
            port = await link_index(host, request.port)
            index = await link_index(inst, INSTANCE_IFNAME)
            assert port is not None and index is not None
            await call(host.link("set", index=port, state="up"))
            await call(inst.link("set", index=index, state="up"))
            for cidr in request.addresses:
                iface = ipaddress.ip_interface(cidr)
                flags = IFA_F_NODAD if iface.version == 6 else 0
                await call(
                    inst.addr(
                        "add",
                        index=index,
                        address=str(iface.ip),
                        prefixlen=iface.network.prefixlen,
                        flags=flags,
                    ),
                    EEXIST,
                )
            await asyncio.to_thread(_tx_offload_off, None, request.port)
            await asyncio.to_thread(_tx_offload_off, record.netns, INSTANCE_IFNAME)
            await asyncio.to_thread(self.ovs.ensure_bridge, request.bridge)
            await asyncio.to_thread(self.ovs.add_port, request.bridge, request.port)

        return await self._guard(context, work)

    async def SyncNetwork(self, request: pb.NetworkState, context: Any) -> pb.OvsStatus:
        try:
            flows = build_flows(request)  # validated before anything changes
        except FlowError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

        async def work() -> None:
            nl = self.host_agent.nl
            host = await nl.host()
            await asyncio.to_thread(self.ovs.ensure_bridge, request.bridge)
            index = await link_index(host, request.vxlan)
            if index is None:
                local = ipaddress.ip_address(request.local_underlay)
                attrs = {"vxlan_local6" if local.version == 6 else "vxlan_local": str(local)}
                await host.link(
                    "add", ifname=request.vxlan, kind="vxlan", vxlan_id=request.vni, vxlan_port=L2_PORT,
                    vxlan_learning=0, mtu=request.mtu, **attrs,
                )  # fmt: skip
                index = await link_index(host, request.vxlan)
                await asyncio.to_thread(_tx_offload_off, None, request.vxlan)
            assert index is not None
            # Only the segment's peer hosts may send to this port (the core's underlay filter).
            underlay = self.host_agent.underlay_filter()
            underlay.police(L2_PORT)
            peers = set(request.peers) | {r.underlay for r in request.remotes}
            underlay.update(self.underlays.get(request.vxlan, set()), peers)
            self.underlays[request.vxlan] = peers
            await call(host.link("set", index=index, state="up"))
            wanted_fdb = {("00:00:00:00:00:00", peer) for peer in request.peers}
            wanted_fdb |= {(r.mac, r.underlay) for r in request.remotes}
            have_fdb = set()
            async for entry in await host.fdb("dump", ifindex=index):
                if entry["ifindex"] == index and entry.get_attr("NDA_DST"):
                    have_fdb.add((str(entry.get_attr("NDA_LLADDR")), str(entry.get_attr("NDA_DST"))))
            for mac, dst in have_fdb - wanted_fdb:
                await call(host.fdb("del", ifindex=index, lladdr=mac, dst=dst), ENOENT)
            for mac, dst in wanted_fdb - have_fdb:
                await call(host.fdb("append", ifindex=index, lladdr=mac, dst=dst, state=0x80), EEXIST)
            wanted_ports = {p.name for p in request.ports} | {request.vxlan}
            for port in await asyncio.to_thread(self.ovs.ports, request.bridge):
                if port not in wanted_ports:
                    await asyncio.to_thread(self.ovs.del_port, request.bridge, port)
            for port in wanted_ports:
                if await link_index(host, port) is not None:
                    await asyncio.to_thread(self.ovs.add_port, request.bridge, port)
            await asyncio.to_thread(self.ovs.replace_flows, request.bridge, flows)

        return await self._guard(context, work)


def setup(api: AgentPluginAPI) -> None:
    # OVS keeps running across agent restarts (like instance processes); `lab down`
    # ends it with every other process of the host's namespace.
    servicer = L2Servicer(api)
    api.add_service(lambda server: pb_grpc.add_L2Servicer_to_server(servicer, server))
