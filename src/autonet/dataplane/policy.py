"""Composition security in a VPC router: default deny, allowed identity pairs in nftables.

Every automaton has a numeric identity, unique in its VPC (0: none). The router maps
each instance address of the VPC (local and remote) to its automaton's identity, and
allows (source identity, destination identity, transport, port) per link opening, as
Cilium does. So the elements grow with instances + links, not instances x instances.

    table inet autonet
      set port4/port6 { ifname . address }   each local instance's veth and its addresses
      set target6     the same IPv6 pairs, keyed on the ICMPv6 target field (@th,64,128:
                      this nft has no `icmpv6 taddr`), as 128-bit integers
      chain guard     prerouting, priority raw (before conntrack and DNAT): anti-spoofing
                      - from an instance's veth (anv*): the source must be one of that
                        instance's addresses (iifname . saddr in port4/port6); IPv6
                        link-local sources only to link-scope destinations; a neighbour
                        advertisement's target and a DAD probe's target must be its own
                        (or link-local); router advertisements and redirects are dropped
                      - from the VXLAN device (anx*): the source must route back through
                        it (fib saddr . iif), i.e. be a remote member or a peer's VTEP,
                        never a local instance
      map id4/id6     { address : identity }                   every member of the VPC
      set allow       { source . destination . l4proto . dport }  one per link opening
      set ping        { source . destination }                   linked identities may ping
      chain forward   established/related accept; for a new connection the source's
                      identity goes to meta mark, the destination's to ct mark, and the
                      pair must be in the sets; the rest is rejected (a refused
                      connection fails at once, and never reaches the peer)
      chain input     policy drop: the router answers only ICMP and DNS
    table arp autonet_arp
      set port4, chain input: an ARP packet from an instance's veth whose sender address
                      is not that instance's (or 0.0.0.0, a probe) is dropped

Why a guard before the policy rather than identities keyed on `iifname . saddr`: the
guard makes "this packet's source address is its sender's" true for everything after
it (the identity maps, the service DNAT, conntrack, the DNS responder, flow reports),
so every later lookup by address is sound, and no packet with a forged source creates
a conntrack entry. The identity maps stay one element per address.

The guard's drops are counted (`nft list chain inet autonet from_port`): a spoofing
instance shows there.

An unmapped address has identity 0, which no element holds: it is denied. The policy
runs after DNAT to service addresses (autonet_lb's prerouting), so it sees backends.

A new instance, link or port is a map or set element update; the rules never change.
The control plane sends the full desired state; `RouterPolicy.sync` applies the
difference in one nftables transaction and notes what it took away (`Revoked`), so
that the caller deletes the conntrack entries of flows no longer allowed: "accept
established" comes first in the forward chain, and without that deletion a removed
link would keep its live connections.

Every value in the script text is checked first (nftables.transport, port, mark,
address, ifname): nothing from a sync reaches nft unchecked.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from autonet.dataplane import nftables as nf
from autonet.dataplane.conntrack import Connection

TABLE = "autonet"

# Why the marks: nftables has no registers to keep two lookups in, but meta mark and
# ct mark are two 32-bit values a rule can set from a map and then concatenate. Both are
# reset first: a lookup miss stops the rule and leaves the old value, and the service
# chain leaves its Maglev slot in meta mark. The allowing rules zero meta mark again so
# that no identity leaves the chain with the packet (the VXLAN device looks its
# underlay route up with the packet's mark, so a stray mark could meet a host's fwmark
# rules). ct mark keeps the destination's identity on the connection; nothing else
# reads it.
ARP_TABLE = "autonet_arp"

SKELETON = f"""
table inet {TABLE} {{
  set port4 {{ type ifname . ipv4_addr; }}
  set port6 {{ type ifname . ipv6_addr; }}
  set target6 {{ typeof iifname . @th,64,128; }}
  chain guard {{
    type filter hook prerouting priority raw; policy accept;
    iifname "anv*" jump from_port
    iifname "anx*" fib saddr . iif oif missing counter drop
  }}
  chain from_port {{
    icmpv6 type {{ nd-router-advert, nd-redirect }} counter drop
    icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @target6 @th,64,16 & 0xffc0 != 0xfe80 counter drop
    ip6 saddr :: icmpv6 type nd-neighbor-solicit iifname . @th,64,128 @target6 accept
    ip6 saddr :: icmpv6 type nd-neighbor-solicit @th,64,16 & 0xffc0 == 0xfe80 accept
    ip6 saddr :: icmpv6 type mld2-listener-report accept
    ip6 saddr fe80::/10 ip6 daddr {{ fe80::/10, ff02::/16 }} accept
    iifname . ip saddr @port4 accept
    iifname . ip6 saddr @port6 accept
    counter drop
  }}
  map id4 {{ type ipv4_addr : mark; }}
  map id6 {{ type ipv6_addr : mark; }}
  set allow {{ type mark . mark . inet_proto . inet_service; }}
  set ping {{ type mark . mark; }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state invalid drop
    meta mark set 0 ct mark set 0
    meta mark set ip saddr map @id4
    meta mark set ip6 saddr map @id6
    ct mark set ip daddr map @id4
    ct mark set ip6 daddr map @id6
    meta mark . ct mark . meta l4proto . th dport @allow meta mark set 0 accept
    icmp type echo-request meta mark . ct mark @ping meta mark set 0 accept
    icmpv6 type echo-request meta mark . ct mark @ping meta mark set 0 accept
    meta l4proto tcp reject with tcp reset
    reject with icmpx type admin-prohibited
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iifname "lo" accept
    meta l4proto {{ icmp, ipv6-icmp }} accept
    udp dport 53 accept
    tcp dport 53 accept
  }}
}}
table arp {ARP_TABLE} {{
  set port4 {{ type ifname . ipv4_addr; }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "anv*" arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @port4 counter drop
  }}
}}
"""


RuleKey = tuple[int, int, str, int]


@dataclass(frozen=True, order=True)
class Allow:
    """The instances of identity `source` may open connections to those of `destination`."""

    source: int
    destination: int
    transport: str  # tcp | udp
    port: int

    def __post_init__(self) -> None:  # the values go into nft script text: checked here
        nf.mark(self.source)
        nf.mark(self.destination)
        nf.transport(self.transport)
        nf.port(self.port)


@dataclass
class _Elements:
    maps: dict[str, dict[str, int]] = field(default_factory=lambda: {"id4": {}, "id6": {}})
    allow: set[RuleKey] = field(default_factory=set)
    ping: set[tuple[int, int]] = field(default_factory=set)

    def count(self) -> int:
        return sum(len(m) for m in self.maps.values()) + len(self.allow) + len(self.ping)


@dataclass
class Revoked:
    """What a sync took away: addresses whose identity went or changed, allowed rules
    and ping pairs removed. A connection that needed one of them is no longer allowed."""

    addresses: set[str] = field(default_factory=set)
    rules: set[RuleKey] = field(default_factory=set)
    pings: set[tuple[int, int]] = field(default_factory=set)
    # After a rebuild (an agent restart) what was taken away meanwhile is unknown: every
    # connection the policy does not allow now is revoked.
    everything: bool = False

    def __bool__(self) -> bool:
        return bool(self.addresses or self.rules or self.pings or self.everything)


def _elements(identities: dict[str, int], rules: set[Allow]) -> _Elements:
    wanted = _Elements()
    for address, identity in identities.items():
        if nf.mark(identity) > 0:  # 0 is "no identity": leaving it out denies the address
            address = nf.address(address)
            wanted.maps["id4" if ":" not in address else "id6"][address] = identity
    for rule in rules:
        if rule.source > 0 and rule.destination > 0:
            wanted.allow.add((rule.source, rule.destination, rule.transport, rule.port))
            wanted.ping.add((rule.source, rule.destination))
    return wanted


def _command(verb: str, name: str, elements: list[str], table: str = f"inet {TABLE}") -> str:
    return f"{verb} element {table} {name} {{ {', '.join(sorted(elements))} }}" if elements else ""


def _key(element: tuple[int | str, ...]) -> str:
    return " . ".join(map(str, element))


def _script(applied: _Elements, wanted: _Elements) -> tuple[str, int, int, Revoked]:
    """The nft commands that turn `applied` into `wanted`: deletions first, so that an
    address whose identity changed is deleted and added back in the same transaction."""
    deletes, adds = [], []
    added = removed = 0
    revoked = Revoked()
    for name, want in wanted.maps.items():
        have = applied.maps[name]
        gone = [a for a, i in have.items() if want.get(a) != i]
        new = [f"{a} : {i}" for a, i in want.items() if have.get(a) != i]
        deletes.append(_command("delete", name, gone))
        adds.append(_command("add", name, new))
        added, removed = added + len(new), removed + len(gone)
        revoked.addresses.update(gone)
    revoked.rules = applied.allow - wanted.allow
    revoked.pings = applied.ping - wanted.ping
    sets: list[tuple[str, set[Any], set[Any]]] = [
        ("allow", applied.allow, wanted.allow),
        ("ping", applied.ping, wanted.ping),
    ]
    for name, old, new_set in sets:
        deletes.append(_command("delete", name, [_key(e) for e in old - new_set]))
        adds.append(_command("add", name, [_key(e) for e in new_set - old]))
        added, removed = added + len(new_set - old), removed + len(old - new_set)
    return "\n".join(c for c in deletes + adds if c), added, removed, revoked


def _port_elements(ifname: str, addresses: tuple[str, ...]) -> dict[str, list[str]]:
    elements: dict[str, list[str]] = {"port4": [], "port6": [], "target6": []}
    for address in addresses:
        elements["port6" if ":" in address else "port4"].append(f'"{ifname}" . {address}')
        if ":" in address:
            elements["target6"].append(f'"{ifname}" . {int(ipaddress.IPv6Address(address)):#034x}')
    return elements


def _port_commands(verb: str, ifname: str, addresses: tuple[str, ...]) -> list[str]:
    elements = _port_elements(ifname, addresses)
    commands = [_command(verb, name, found) for name, found in elements.items()]
    commands.append(_command(verb, "port4", elements["port4"], f"arp {ARP_TABLE}"))
    return [c for c in commands if c]


class RouterPolicy:
    """The policy of one router namespace, with what it last applied (to send only
    changes), the local instances' ports (anti-spoofing) and what the last sync revoked."""

    def __init__(self, nft: nf.Nft) -> None:
        self.nft = nft
        self.applied: _Elements | None = None
        self.ports: dict[str, tuple[str, ...]] = {}  # veth -> the instance's addresses
        self.revoked = Revoked()

    def set_port(self, ifname: str, addresses: list[str]) -> None:
        """Packets from veth `ifname` may carry these source addresses (and no other)."""
        ifname = nf.ifname(ifname)
        wanted = tuple(sorted(nf.address(a) for a in addresses))
        have = self.ports.get(ifname, ())
        if have == wanted:
            return
        if self.applied is not None:
            gone = tuple(a for a in have if a not in wanted)
            new = tuple(a for a in wanted if a not in have)
            script = _port_commands("delete", ifname, gone) + _port_commands("add", ifname, new)
            self.nft.run("\n".join(script))
        self.ports[ifname] = wanted  # (the first sync writes them all with the table)

    def remove_port(self, ifname: str) -> None:
        have = self.ports.pop(nf.ifname(ifname), ())
        if have and self.applied is not None:
            self.nft.run("\n".join(_port_commands("delete", ifname, have)))

    def identity(self, address: str) -> int:
        """The identity the router holds for `address` (0: none)."""
        if self.applied is None:
            return 0
        return self.applied.maps["id6" if ":" in address else "id4"].get(address, 0)

    def revokes(self, connection: Connection) -> bool:
        """Whether the last sync took away what `connection` needed. Its destination is
        the reply's source: the backend, after a service's DNAT."""
        revoked = self.revoked
        destination = connection.reply.src
        if revoked.everything:
            # (a connection to the router itself, DNS or ICMP, is not allowed here either:
            # deleting its entry is harmless, its next packet is accepted by `input` anew)
            return self.applied is not None and not self._allows(connection)
        if {connection.orig.src, destination} & revoked.addresses:
            return True
        pair = (self.identity(connection.orig.src), self.identity(destination))
        if connection.protocol in ("icmp", "icmpv6"):
            return pair in revoked.pings
        return (*pair, connection.protocol, connection.reply.sport) in revoked.rules

    def _allows(self, connection: Connection) -> bool:
        """Whether the policy now allows `connection` as a new one."""
        assert self.applied is not None
        pair = (self.identity(connection.orig.src), self.identity(connection.reply.src))
        if connection.protocol in ("icmp", "icmpv6"):
            return pair in self.applied.ping
        return (*pair, connection.protocol, connection.reply.sport) in self.applied.allow

    def sync(self, identities: dict[str, int], rules: set[Allow]) -> tuple[int, int]:
        """Make the router hold these identities (address -> identity) and allowed
        identity pairs; returns (elements added, elements removed)."""
        wanted = _elements(identities, rules)
        if self.applied is None:
            # First sync (or after an agent restart): rebuild the tables in one transaction.
            script, added, _, _ = _script(_Elements(), wanted)
            ports = [c for ifname, a in self.ports.items() for c in _port_commands("add", ifname, a)]
            self.nft.run(
                f"table inet {TABLE}\ndelete table inet {TABLE}\n"
                f"table arp {ARP_TABLE}\ndelete table arp {ARP_TABLE}\n"
                f"{SKELETON}\n{script}\n" + "\n".join(ports)
            )
            self.applied = wanted
            self.revoked = Revoked(everything=True)
            return added, 0
        script, added, removed, self.revoked = _script(self.applied, wanted)
        if script:
            self.nft.run(script)
        self.applied = wanted
        return added, removed
