"""Kernel object names: within IFNAMSIZ (15 bytes), `an`-prefixed, derived from IDs.

    ani<host tag:4><instance:8>   instance network namespace
    ane<host tag:4><instance:8>   an attached container's namespace (the runtime's,
                                  bind-mounted here by the agent: never emptied or killed)
    anr<host tag:4><vpc:8>        VPC router namespace on a host
    anv<instance:8>               router-side veth of an instance
    anx<vpc:8>                    the VPC's VXLAN device in a router namespace
    anl<lab:5><role>              lab namespaces (underlay, control, hosts)

The host tag makes every namespace name unique across the hosts of one machine (lab
hosts share a kernel) and lets an agent's garbage collector recognise its own objects;
the object part is a hash of the object's random UID, so names never collide across
VPCs or labs.
"""

from __future__ import annotations

import hashlib

IFNAMSIZ = 15
PREFIX = "an"
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def digest(text: str, length: int) -> str:
    """`length` base-32 characters of the SHA-256 of `text`."""
    number = int.from_bytes(hashlib.sha256(text.encode()).digest()[:10], "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, 32)
        chars.append(_ALPHABET[index])
    return "".join(chars)


def host_tag(cluster: str, host: str) -> str:
    return digest(f"host:{cluster}/{host}", 4)


LAB_UID_BASE = 1_000_000
LAB_UIDS_PER_HOST = 1000


def lab_uid_range(tag: str) -> tuple[int, int]:
    """The uids a lab host's agent leases (`--uid-range`): lab hosts share one kernel, so
    each gets its own block, numbered by its tag (unique across the hosts and labs of a
    machine, as its namespace names are): at most 1,001,000,000 + 999 < 2**31."""
    index = 0
    for char in reversed(tag):
        index = index * 32 + _ALPHABET.index(char)
    first = LAB_UID_BASE + index * LAB_UIDS_PER_HOST
    return first, first + LAB_UIDS_PER_HOST - 1


def instance_netns(tag: str, instance_uid: str) -> str:
    return _fit(f"{PREFIX}i{tag}{digest(instance_uid, 8)}")


def attached_netns(tag: str, instance_uid: str) -> str:
    """The agent's name for a namespace a container runtime made (autonet-cni)."""
    return _fit(f"{PREFIX}e{tag}{digest(instance_uid, 8)}")


# Namespaces autonet names itself: instances (i), routers (r), the warm pool (w),
# attached containers (e, its own name for them) and lab roles (l).
MANAGED_NETNS_PREFIXES = tuple(f"{PREFIX}{kind}" for kind in "irwel")


def attached_netns_prefix(tag: str) -> str:
    return f"{PREFIX}e{tag}"


def is_attached_netns(name: str) -> bool:
    return name.startswith(f"{PREFIX}e")


def router_netns(tag: str, vpc_uid: str) -> str:
    return _fit(f"{PREFIX}r{tag}{digest(vpc_uid, 8)}")


def router_ifname(instance_uid: str) -> str:
    return _fit(f"{PREFIX}v{digest(instance_uid, 8)}")


def vxlan_ifname(vpc_uid: str) -> str:
    """The VPC's VXLAN device (created from the host namespace, living in the router's)."""
    return _fit(f"{PREFIX}x{digest(vpc_uid, 8)}")


def instance_netns_prefix(tag: str) -> str:
    return f"{PREFIX}i{tag}"


def router_netns_prefix(tag: str) -> str:
    return f"{PREFIX}r{tag}"


def pool_netns_prefix(tag: str) -> str:
    """The agent's warm pool: namespaces made ahead, renamed to an instance's on use."""
    return f"{PREFIX}w{tag}"


def pool_netns(tag: str, serial: int) -> str:
    return _fit(f"{pool_netns_prefix(tag)}{serial % 10**8:08d}")


def lab_prefix(lab: str) -> str:
    return f"{PREFIX}l{digest('lab:' + lab, 5)}"


def lab_netns(lab: str, role: str) -> str:
    """role: 'u' (underlay switch), 'c' (control), 'h<N>' (host N)."""
    return _fit(lab_prefix(lab) + role)


def _fit(name: str) -> str:
    if len(name.encode()) > IFNAMSIZ:
        raise ValueError(f"kernel name {name!r} is longer than {IFNAMSIZ} bytes")
    return name
