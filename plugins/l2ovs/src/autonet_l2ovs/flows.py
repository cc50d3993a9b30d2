"""The OpenFlow rules of one network's bridge: anti-spoofing, conntrack, composition security.

Built the way Neutron's OVS firewall driver builds them, from validated values only (every
address, MAC, port name, transport and port number is parsed before it reaches a rule):

    table 0  ports in    a local port may send only from its own MAC and addresses (ARP:
                         sender MAC/IP; IPv6: its address, or link-local/unspecified for
                         neighbour discovery; a neighbour advertisement only for its own
                         target); the VXLAN port only from the MACs of known remote
                         instances. Everything else is dropped.
    table 1  classify    ARP and neighbour discovery go straight to forwarding; IPv4/IPv6
                         go through conntrack in the network's zone (ct(table=2)).
    table 2  policy      invalid: drop; related: forward; a new connection is committed
                         and forwarded only if (source address, destination address,
                         transport, port) is in an opening; an established one is
                         forwarded only while its original tuple is still in an opening,
                         so removing a link ends its live connections at once.
    table 3  forwarding  one rule per MAC to its port (or the VXLAN port), flood for
                         broadcast and multicast.

Openings are conjunctive matches (source addresses x destination address/port), so a
link costs rules in proportion to its instances plus its ports, not their product.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from autonet_l2ovs import l2_pb2 as pb

PORTS_IN, CLASSIFY, POLICY, FORWARD = 0, 1, 2, 3
TRANSPORTS = {"tcp": 6, "udp": 17}
PING = "ping"
ND_TYPES = (133, 134, 135, 143, 131, 132)  # RS, RA, NS, MLDv2 report, MLD report/done (NA: below)
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NAME = re.compile(r"^an[a-z0-9]{1,13}$")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class FlowError(ValueError):
    """A value of the desired state that cannot become a rule (nothing is applied)."""


def _mac(value: str) -> str:
    mac = value.lower()
    if not _MAC.match(mac):
        raise FlowError(f"not a MAC address: {value!r}")
    return mac


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise FlowError(f"not an autonet port name: {value!r}")
    return value


def _addresses(values: Iterable[str]) -> list[Address]:
    try:
        return [ipaddress.ip_address(v) for v in values]
    except ValueError as exc:
        raise FlowError(str(exc)) from None


def _src(address: Address) -> str:
    return f"ip,nw_src={address}" if address.version == 4 else f"ipv6,ipv6_src={address}"


def _port_in(port: pb.Port) -> list[str]:
    """Anti-spoofing for one local port: its own MAC and addresses, nothing else."""
    name, mac = _name(port.name), _mac(port.mac)
    own = _addresses(port.addresses)
    own6 = [str(a) for a in own if a.version == 6] + ["fe80::/10"]
    head = f"table={PORTS_IN},in_port={name},dl_src={mac}"
    go = f"actions=resubmit(,{CLASSIFY})"
    flows = [f"{head},priority=100,arp,arp_sha={mac},arp_spa={a},{go}" for a in own if a.version == 4]
    # A neighbour advertisement claims its target: only for the port's own addresses.
    flows += [
        f"{head},priority=120,icmp6,ipv6_src={s},icmp_type=136,nd_target={t},{go}" for s in own6 for t in own6
    ]
    flows.append(f"table={PORTS_IN},in_port={name},priority=110,icmp6,icmp_type=136,actions=drop")
    # Neighbour/router solicitations and MLD may come from link-local or unspecified (DAD).
    flows += [
        f"{head},priority=100,icmp6,ipv6_src={s},icmp_type={t},{go}" for s in [*own6, "::"] for t in ND_TYPES
    ]
    flows += [f"{head},priority=90,{_src(a)},{go}" for a in own]
    return flows


def _conjunctions(allows: Iterable[pb.Allow], zone: int) -> list[str]:
    """New and established connections of each opening, as conjunctive matches."""
    merged: dict[str, list[str]] = {}
    finals = []
    for index, allow in enumerate(allows):
        transport = allow.transport
        if transport not in TRANSPORTS and transport != PING:
            raise FlowError(f"unknown transport {transport!r}")
        if transport != PING and not 0 < allow.port < 65536:
            raise FlowError(f"port out of range: {allow.port}")
        new_id, est_id = 2 * index + 1, 2 * index + 2
        for source in _addresses(allow.sources):
            ip = "ip" if source.version == 4 else "ipv6"
            ct = "ct_nw_src" if source.version == 4 else "ct_ipv6_src"
            merged.setdefault(f"ct_state=+trk+new-inv,{_src(source)}", []).append(
                f"conjunction({new_id},1/2)"
            )
            merged.setdefault(f"ct_state=+trk+est-inv,{ip},{ct}={source}", []).append(
                f"conjunction({est_id},1/2)"
            )
        for dest in _addresses(allow.destinations):
            v4 = dest.version == 4
            ip, dst, ct = ("ip", "nw_dst", "ct_nw_dst") if v4 else ("ipv6", "ipv6_dst", "ct_ipv6_dst")
            if transport == PING:
                new = f"{'icmp' if v4 else 'icmp6'},{dst}={dest},icmp_type={8 if v4 else 128}"
                est = f"{ip},ct_nw_proto={1 if v4 else 58},{ct}={dest}"
            else:
                new = f"{transport}{'' if v4 else '6'},{dst}={dest},tp_dst={allow.port}"
                est = f"{ip},ct_nw_proto={TRANSPORTS[transport]},{ct}={dest},ct_tp_dst={allow.port}"
            merged.setdefault(f"ct_state=+trk+new-inv,{new}", []).append(f"conjunction({new_id},2/2)")
            merged.setdefault(f"ct_state=+trk+est-inv,{est}", []).append(f"conjunction({est_id},2/2)")
        commit = f"actions=ct(commit,zone={zone}),resubmit(,{FORWARD})"
        finals += [f"table={POLICY},priority=80,conj_id={new_id},{ip},{commit}" for ip in ("ip", "ipv6")]
        finals.append(f"table={POLICY},priority=80,conj_id={est_id},actions=resubmit(,{FORWARD})")
    dims = [
        f"table={POLICY},priority=80,{match},actions={','.join(sorted(set(a)))}"
        for match, a in merged.items()
    ]
    return dims + finals


def build(state: pb.NetworkState) -> list[str]:
    """Every rule of the network's bridge on this host, in `ovs-ofctl add-flows` syntax."""
    if not 0 < state.zone < 65536:
        raise FlowError(f"conntrack zone out of range: {state.zone}")
    vxlan = _name(state.vxlan)
    zone = state.zone
    flows: list[str] = []
    for port in state.ports:
        flows += _port_in(port)
    flows += [
        f"table={PORTS_IN},priority=100,in_port={vxlan},dl_src={_mac(r.mac)},actions=resubmit(,{CLASSIFY})"
        for r in state.remotes
    ]
    flows += [
        f"table={CLASSIFY},priority=100,arp,actions=resubmit(,{FORWARD})",
        *(
            f"table={CLASSIFY},priority=100,icmp6,icmp_type={t},actions=resubmit(,{FORWARD})"
            for t in (*ND_TYPES, 136)
        ),
        # One zone per network: overlapping VPCs on one host never share conntrack entries.
        f"table={CLASSIFY},priority=50,ip,actions=ct(table={POLICY},zone={zone})",
        f"table={CLASSIFY},priority=50,ipv6,actions=ct(table={POLICY},zone={zone})",
        f"table={POLICY},priority=100,ct_state=+trk+inv,actions=drop",
        f"table={POLICY},priority=90,ct_state=+trk+rel-inv,actions=resubmit(,{FORWARD})",
    ]
    flows += _conjunctions(state.allows, zone)
    flows += [
        f"table={FORWARD},priority=100,dl_dst={_mac(p.mac)},actions=output:{_name(p.name)}"
        for p in state.ports
    ]
    flows += [
        f"table={FORWARD},priority=100,dl_dst={_mac(r.mac)},actions=output:{vxlan}" for r in state.remotes
    ]
    flows.append(f"table={FORWARD},priority=50,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=flood")
    flows += [f"table={t},priority=0,actions=drop" for t in (PORTS_IN, CLASSIFY, POLICY, FORWARD)]
    return flows
