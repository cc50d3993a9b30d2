"""Service addresses in a VPC router: Maglev-balanced DNAT, looked up by the kernel.

    table inet autonet_lb
      map svc4/svc6     { vip . l4proto . port : jump <service chain> }
      chain prerouting  (nat, dstnat) daddr . l4proto . dport vmap @svc4/@svc6
      chain s<id>       meta mark set jhash(saddr . sport . daddr . dport) mod M seed S
                        dnat to meta mark map @s<id>m
      map s<id>m        { slot : backend }      the Maglev table, M slots (prime)

A connection's first packet picks its backend through the table; conntrack keeps the
choice for the connection's life, so later table changes never move it. A change of
the backend set rewrites only the slots Maglev moved (about 1/N of them), as element
updates in one transaction. A service with no ready backend has an empty table: the
lookup misses, nothing is translated, and the policy rejects the connection.

Clients are DNATed on their own host (prerouting of their router), so balanced traffic
takes no extra hop.

A backend taken out of a service is noted (`revokes`), so that the caller deletes the
conntrack entries still pointing at it (as kube-proxy does for UDP): its established
connections end at once instead of living on through conntrack. Every value in the
script text is checked when a `ServicePort` is made.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from autonet.dataplane import nftables as nf
from autonet.dataplane.conntrack import Connection
from autonet.model import maglev

TABLE = "autonet_lb"

SKELETON = f"""
table inet {TABLE} {{
  map svc4 {{ type ipv4_addr . inet_proto . inet_service : verdict; }}
  map svc6 {{ type ipv6_addr . inet_proto . inet_service : verdict; }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr . meta l4proto . th dport vmap @svc4
    ip6 daddr . meta l4proto . th dport vmap @svc6
  }}
}}
"""


@dataclass(frozen=True)
class ServicePort:
    vip: str
    transport: str
    port: int
    backends: tuple[str, ...]  # of the VIP's family

    def __post_init__(self) -> None:  # the values go into nft script text: checked, canonical
        object.__setattr__(self, "vip", nf.address(self.vip))
        nf.transport(self.transport)
        nf.port(self.port)
        object.__setattr__(self, "backends", tuple(nf.address(b) for b in self.backends))


@dataclass
class _Applied:
    chain: str
    size: int
    backends: tuple[str, ...]
    table: list[int]


def _chain_name(vip: str, transport: str, port: int) -> str:
    return "s" + hashlib.blake2b(f"{vip}/{transport}/{port}".encode(), digest_size=6).hexdigest()


def _seed(chain: str) -> str:
    return "0x" + hashlib.blake2b(chain.encode(), digest_size=4).hexdigest()


def _slots(table: list[int], backends: tuple[str, ...], slots: list[int]) -> str:
    return ", ".join(f"{slot} : {backends[table[slot]]}" for slot in slots)


class RouterServices:
    def __init__(self, nft: nf.Nft) -> None:
        self.nft = nft
        self.applied: dict[tuple[str, str, int], _Applied] | None = None
        self.dropped: dict[tuple[str, str, int], set[str]] = {}  # backends the last sync took out

    def revokes(self, connection: Connection) -> bool:
        """Whether `connection` was balanced to a backend the last sync took out."""
        if not self.dropped or connection.orig.dst == connection.reply.src:
            return False  # (not translated: no service connection)
        key = (connection.orig.dst, connection.protocol, connection.orig.dport)
        return connection.reply.src in self.dropped.get(key, ())

    def sync(self, ports: list[ServicePort]) -> tuple[int, int]:
        """Make the router's service table match `ports`; returns (slots written, removed)."""
        script: list[str] = []
        if self.applied is None:
            script += [f"table inet {TABLE}", f"delete table inet {TABLE}", SKELETON]
            self.applied = {}
        wanted = {(p.vip, p.transport, p.port): p for p in ports}
        written = removed = 0
        self.dropped = {}
        for key in [k for k in self.applied if k not in wanted]:
            old = self.applied.pop(key)
            self.dropped[key] = set(old.backends)
            family = ipaddress.ip_address(key[0]).version
            script += [
                f"delete element inet {TABLE} svc{family} {{ {key[0]} . {key[1]} . {key[2]} }}",
                f"delete chain inet {TABLE} {old.chain}",
                f"delete map inet {TABLE} {old.chain}m",
            ]
            removed += len(old.table)
        for key, port in wanted.items():
            family = ipaddress.ip_address(port.vip).version
            ip = "ip" if family == 4 else "ip6"
            current = self.applied.get(key)
            if current is None:
                chain = _chain_name(*key)
                script += [
                    f"add map inet {TABLE} {chain}m {{ type mark : ipv{family}_addr; }}",
                    f"add chain inet {TABLE} {chain}",
                    f"add element inet {TABLE} svc{family} {{ {port.vip} . {port.transport} . {port.port} : jump {chain} }}",
                ]
                current = self.applied[key] = _Applied(chain, 0, (), [])
            if current.backends == port.backends:
                continue
            if gone := set(current.backends) - set(port.backends):
                self.dropped[key] = gone
            size = maglev.table_size(len(port.backends)) if port.backends else 0
            table = maglev.build(port.backends, size) if port.backends else []
            chain = current.chain
            if size != current.size:
                # A new table size: a new hash rule, and every slot written afresh.
                script += [f"flush chain inet {TABLE} {chain}", f"flush map inet {TABLE} {chain}m"]
                if size:
                    script += [
                        f"add rule inet {TABLE} {chain} meta mark set jhash {ip} saddr . th sport . "
                        f"{ip} daddr . th dport mod {size} seed {_seed(chain)}",
                        f"add rule inet {TABLE} {chain} dnat {ip} to meta mark map @{chain}m",
                        f"add element inet {TABLE} {chain}m {{ {_slots(table, port.backends, list(range(size)))} }}",
                    ]
                written += size
                removed += current.size
            else:
                changed = [
                    s for s in range(size) if current.backends[current.table[s]] != port.backends[table[s]]
                ]
                if changed:
                    script += [
                        f"delete element inet {TABLE} {chain}m {{ {', '.join(map(str, changed))} }}",
                        f"add element inet {TABLE} {chain}m {{ {_slots(table, port.backends, changed)} }}",
                    ]
                written += len(changed)
            self.applied[key] = _Applied(chain, size, port.backends, table)
        if script:
            self.nft.run("\n".join(script))
        return written, removed
