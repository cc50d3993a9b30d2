"""Composition security in a VPC router: default deny, allowed identity pairs in nftables.

Every automaton has a numeric identity, unique in its VPC (0: none). The router maps
each instance address of the VPC (local and remote) to its automaton's identity, and
allows (source identity, destination identity, transport, port) per link opening, as
Cilium does. So the elements grow with instances + links, not instances x instances.

    table inet autonet
      map id4/id6     { address : identity }                   every member of the VPC
      set allow       { source . destination . l4proto . dport }  one per link opening
      set ping        { source . destination }                   linked identities may ping
      chain forward   established/related accept; for a new connection the source's
                      identity goes to meta mark, the destination's to ct mark, and the
                      pair must be in the sets; the rest is rejected (a refused
                      connection fails at once, and never reaches the peer)
      chain input     policy drop: the router answers only ICMP and DNS

An unmapped address has identity 0, which no element holds: it is denied. The policy
runs after DNAT to service addresses (autonet_lb's prerouting), so it sees backends.

A new instance, link or port is a map or set element update; the rules never change.
The control plane sends the full desired state; `RouterPolicy.sync` applies the
difference in one nftables transaction.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from autonet.dataplane.nftables import Nft

TABLE = "autonet"

# Why the marks: nftables has no registers to keep two lookups in, but meta mark and
# ct mark are two 32-bit values a rule can set from a map and then concatenate. Both are
# reset first: a lookup miss stops the rule and leaves the old value, and the service
# chain leaves its Maglev slot in meta mark. The allowing rules zero meta mark again so
# that no identity leaves the chain with the packet (the VXLAN device looks its
# underlay route up with the packet's mark, so a stray mark could meet a host's fwmark
# rules). ct mark keeps the destination's identity on the connection; nothing else
# reads it.
SKELETON = f"""
table inet {TABLE} {{
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
"""


@dataclass(frozen=True, order=True)
class Allow:
    """The instances of identity `source` may open connections to those of `destination`."""

    source: int
    destination: int
    transport: str  # tcp | udp
    port: int


@dataclass
class _Elements:
    maps: dict[str, dict[str, int]] = field(default_factory=lambda: {"id4": {}, "id6": {}})
    sets: dict[str, set[str]] = field(default_factory=lambda: {"allow": set(), "ping": set()})

    def count(self) -> int:
        return sum(len(m) for m in self.maps.values()) + sum(len(s) for s in self.sets.values())


def _elements(identities: dict[str, int], rules: set[Allow]) -> _Elements:
    wanted = _Elements()
    for address, identity in identities.items():
        if identity > 0:  # 0 is "no identity": leaving it out denies the address
            wanted.maps[f"id{ipaddress.ip_address(address).version}"][address] = identity
    for rule in rules:
        if rule.source > 0 and rule.destination > 0:
            wanted.sets["allow"].add(f"{rule.source} . {rule.destination} . {rule.transport} . {rule.port}")
            wanted.sets["ping"].add(f"{rule.source} . {rule.destination}")
    return wanted


def _command(verb: str, name: str, elements: list[str]) -> str:
    return f"{verb} element inet {TABLE} {name} {{ {', '.join(sorted(elements))} }}" if elements else ""


def _script(applied: _Elements, wanted: _Elements) -> tuple[str, int, int]:
    """The nft commands that turn `applied` into `wanted`: deletions first, so that an
    address whose identity changed is deleted and added back in the same transaction."""
    deletes, adds = [], []
    added = removed = 0
    for name, want in wanted.maps.items():
        have = applied.maps[name]
        gone = [a for a, i in have.items() if want.get(a) != i]
        new = [f"{a} : {i}" for a, i in want.items() if have.get(a) != i]
        deletes.append(_command("delete", name, gone))
        adds.append(_command("add", name, new))
        added, removed = added + len(new), removed + len(gone)
    for name, want_set in wanted.sets.items():
        have_set = applied.sets[name]
        deletes.append(_command("delete", name, list(have_set - want_set)))
        adds.append(_command("add", name, list(want_set - have_set)))
        added, removed = added + len(want_set - have_set), removed + len(have_set - want_set)
    return "\n".join(c for c in deletes + adds if c), added, removed


class RouterPolicy:
    """The policy of one router namespace, with what it last applied (to send only changes)."""

    def __init__(self, nft: Nft) -> None:
        self.nft = nft
        self.applied: _Elements | None = None

    def sync(self, identities: dict[str, int], rules: set[Allow]) -> tuple[int, int]:
        """Make the router hold these identities (address -> identity) and allowed
        identity pairs; returns (elements added, elements removed)."""
        wanted = _elements(identities, rules)
        if self.applied is None:
            # First sync (or after an agent restart): rebuild the table in one transaction.
            script, added, _ = _script(_Elements(), wanted)
            self.nft.run(f"table inet {TABLE}\ndelete table inet {TABLE}\n{SKELETON}\n{script}")
            self.applied = wanted
            return added, 0
        script, added, removed = _script(self.applied, wanted)
        if script:
            self.nft.run(script)
        self.applied = wanted
        return added, removed
