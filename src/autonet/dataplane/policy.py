"""Composition security in a VPC router: default deny, allowed pairs in nftables sets.

    table inet autonet
      set allow4/allow6  { saddr . daddr . l4proto . dport }   linked pairs, provider's port
      set ping4/ping6    { saddr . daddr }                       linked pairs may ping
      chain forward      established/related, then the sets; the rest is rejected
                         (a refused connection fails at once, and never reaches the peer)
      chain input        policy drop: the router answers only ICMP and DNS

A new instance, link or port is a set-element update; the rules never change. The
control plane sends the full set of pairs that concern this router's instances;
`sync_policy` applies the difference in one nftables transaction.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from autonet.dataplane.nftables import Nft

TABLE = "autonet"

SKELETON = f"""
table inet {TABLE} {{
  set allow4 {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service; }}
  set allow6 {{ type ipv6_addr . ipv6_addr . inet_proto . inet_service; }}
  set ping4 {{ type ipv4_addr . ipv4_addr; }}
  set ping6 {{ type ipv6_addr . ipv6_addr; }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state invalid drop
    ip saddr . ip daddr . meta l4proto . th dport @allow4 accept
    ip6 saddr . ip6 daddr . meta l4proto . th dport @allow6 accept
    icmp type echo-request ip saddr . ip daddr @ping4 accept
    icmpv6 type echo-request ip6 saddr . ip6 daddr @ping6 accept
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
    source: str
    destination: str
    transport: str  # tcp | udp
    port: int


def _family(address: str) -> int:
    return ipaddress.ip_address(address).version


def _elements(rules: set[Allow]) -> dict[str, set[str]]:
    sets: dict[str, set[str]] = {"allow4": set(), "allow6": set(), "ping4": set(), "ping6": set()}
    for rule in rules:
        version = _family(rule.source)
        if version != _family(rule.destination):
            continue
        sets[f"allow{version}"].add(f"{rule.source} . {rule.destination} . {rule.transport} . {rule.port}")
        sets[f"ping{version}"].add(f"{rule.source} . {rule.destination}")
    return sets


def _script(verb: str, sets: dict[str, set[str]]) -> str:
    lines = []
    for name, elements in sets.items():
        if elements:
            lines.append(f"{verb} element inet {TABLE} {name} {{ {', '.join(sorted(elements))} }}")
    return "\n".join(lines)


class RouterPolicy:
    """The policy of one router namespace, with what it last applied (to send only changes)."""

    def __init__(self, nft: Nft) -> None:
        self.nft = nft
        self.applied: dict[str, set[str]] | None = None

    def sync(self, rules: set[Allow]) -> tuple[int, int]:
        wanted = _elements(rules)
        if self.applied is None:
            # First sync (or after an agent restart): rebuild the table in one transaction.
            script = f"table inet {TABLE}\ndelete table inet {TABLE}\n{SKELETON}\n{_script('add', wanted)}"
            self.nft.run(script)
            self.applied = wanted
            return sum(len(v) for v in wanted.values()), 0
        add = {name: wanted[name] - self.applied[name] for name in wanted}
        drop = {name: self.applied[name] - wanted[name] for name in wanted}
        script = "\n".join(s for s in (_script("delete", drop), _script("add", add)) if s)
        if script:
            self.nft.run(script)
        self.applied = wanted
        return sum(len(v) for v in add.values()), sum(len(v) for v in drop.values())
