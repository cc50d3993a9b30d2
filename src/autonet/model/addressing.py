"""Address, MAC and VNI allocation rules (the pure part of IPAM).

Leases themselves live in the store (one object per leased address, created with
compare-and-swap), so an address is never handed out twice, also across a controller
restart; this module only decides *which* address is next.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
from collections.abc import Callable, Collection
from typing import Any

from autonet.model.errors import ExhaustedError

# Scanning a /64 for a free slot is pointless: we only look this far into a subnet.
_SCAN_LIMIT = 1 << 20


class AddressPool:
    """Lowest-free allocation over one CIDR in O(1) amortised, whatever the pool holds.

    A cursor walks the usable addresses once, upwards; released addresses go to a
    min-heap and are handed out again, lowest first, before the cursor moves on. Who
    holds what is not kept here: `taken(address)` is asked (the caller's view of the
    leases), so a fresh pool over a half-full network simply skips the held addresses
    on its first pass (that pass is the rebuild after a restart)."""

    def __init__(self, cidr: str) -> None:
        self.cidr = cidr
        network = ipaddress.ip_network(cidr)
        self.first = int(network.network_address) + 1
        last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
        self.size = max(0, min(last, self.first + _SCAN_LIMIT) - self.first + 1)
        self.version = network.version
        self.cursor = 0
        self._freed: list[int] = []

    def address(self, index: int) -> str:
        return str(ipaddress.ip_address(self.first + index))

    def index(self, address: str) -> int | None:
        value = ipaddress.ip_address(address)
        index = int(value) - self.first
        return index if value.version == self.version and 0 <= index < self.size else None

    def pick(self, taken: Callable[[str], bool]) -> str:
        """The lowest address that is not `taken`; ExhaustedError if there is none."""
        while self._freed:
            index = heapq.heappop(self._freed)
            if index < self.cursor and not taken(address := self.address(index)):
                return address
        while self.cursor < self.size:
            address = self.address(self.cursor)
            self.cursor += 1
            if not taken(address):
                return address
        # Before giving up, one full pass: addresses may have been freed unseen.
        for index in range(self.size):
            if not taken(address := self.address(index)):
                return address
        raise ExhaustedError(f"address pool {self.cidr} is exhausted ({self.size} addresses in use)")

    def release(self, address: str) -> None:
        index = self.index(address)
        if index is not None and index < self.cursor:
            heapq.heappush(self._freed, index)


def pick_address(cidr: str, taken: Collection[str]) -> str:
    """The lowest free address of `cidr`, or ExhaustedError saying which pool is full
    (a one-off `AddressPool`: callers that pick often keep theirs)."""
    return AddressPool(cidr).pick(taken.__contains__)


def family_cidr(cidrs: Collection[str], version: int) -> str | None:
    for cidr in cidrs:
        if ipaddress.ip_network(cidr).version == version:
            return cidr
    return None


def service_ranges(vpc_spec: dict[str, Any]) -> list[str]:
    """The VPC's service CIDRs: as given, or else the last /24 (IPv4) and /64 (IPv6) of
    each of its CIDRs (the last quarter of a smaller one)."""
    if vpc_spec.get("service_cidrs"):
        return [str(cidr) for cidr in vpc_spec["service_cidrs"]]
    ranges = []
    for cidr in vpc_spec["cidrs"]:
        network = ipaddress.ip_network(cidr)
        width = network.max_prefixlen
        prefix = min(max(24 if network.version == 4 else 64, network.prefixlen + 2), width - 2)
        start = int(network.broadcast_address) >> (width - prefix) << (width - prefix)
        ranges.append(str(ipaddress.ip_network((start, prefix))))
    return ranges


def mac_for(uid: str) -> str:
    """A locally administered, unicast MAC derived from an object UID."""
    raw = bytearray(hashlib.sha256(f"mac:{uid}".encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFC) | 0x02  # clear multicast bit, set locally-administered bit
    return ":".join(f"{byte:02x}" for byte in raw)


def vtep_addresses(host_index: int) -> tuple[str, str]:
    """The VXLAN-side addresses of a host's VPC routers (the same in every VPC).

    Routes to remote instances go `via` these, `onlink`; they never leave the overlay.
    """
    if not 0 <= host_index < 4096:
        raise ValueError(f"host index {host_index} outside 0..4095")
    return f"169.254.{16 + host_index // 256}.{host_index % 256}", f"fe80::a:{host_index:x}"


def vtep_mac(host_uid: str, vpc_uid: str) -> str:
    return mac_for(f"vtep:{host_uid}:{vpc_uid}")


VNI_MIN = 4096
VNI_MAX = 16_777_215


def pick_vni(taken: Collection[int], wanted: int | None = None) -> int:
    if wanted is not None:
        if wanted in taken:
            raise ExhaustedError(f"VNI {wanted} is already in use")
        return wanted
    for vni in range(VNI_MIN, VNI_MAX + 1):
        if vni not in taken:
            return vni
    raise ExhaustedError("no VNI left")
