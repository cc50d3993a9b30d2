"""The host's VPC routers: one namespace per VPC with instances here, and the VPC sync.

A `Router` is what the agent keeps per router namespace: the nftables policy and
services (load balancing), the DNS responder, the conntrack reader, the members
(address -> instance) and the overlay as last applied. `VpcRouters` holds the host's
routers and serialises kernel work per router (instances of different VPCs are wired
concurrently); `sync_vpc` applies a VPC's state as SyncVpc sends it (identity policy,
services, DNS names, VXLAN overlay) and keeps it on disk (`<state dir>/overlay/`), so
that a router made again after a restart starts from the last state synced
(`saved_vpc`) rather than from nothing.

Trust: a sync is validated whole before anything is applied or saved (vpcdelta.validate);
each router's policy holds its local instances' ports (anti-spoofing, kept by wiring);
a sync that takes something away (a rule, a member, a backend) deletes the conntrack
entries of the flows that needed it, so they stop at once; and the host namespace's
VXLAN filter holds the underlay addresses of every router's peers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from typing import Any

from autonet.agent import vpcdelta
from autonet.agent.base import AgentBase
from autonet.agent.dns import DnsResponder
from autonet.agent.flows import Member
from autonet.agent.state import write_atomically
from autonet.dataplane import netns, overlay
from autonet.dataplane.conntrack import ConntrackReader
from autonet.dataplane.nftables import Nft
from autonet.dataplane.policy import Allow, RouterPolicy
from autonet.dataplane.services import RouterServices, ServicePort

log = logging.getLogger(__name__)

OVERLAY_REREAD = 30.0  # seconds between reading a router's overlay back from the kernel
OVERLAY_KEYS = ("vxlan_ifname", "vni", "local", "mtu")  # what _apply_overlay cannot do without


class Router:
    """What the agent keeps per VPC router namespace: nftables, policy, services, DNS."""

    def __init__(self, namespace: str) -> None:
        self.nft = Nft(namespace)
        self.policy = RouterPolicy(self.nft)
        self.services = RouterServices(self.nft)
        self.dns = DnsResponder(namespace)
        self.conntrack = ConntrackReader(namespace)
        self.members: dict[str, Member] = {}
        self.overlay: overlay.Entries | None = None
        self.overlay_read = 0.0
        self.state: vpcdelta.State | None = None  # the VPC state last applied (SyncVpc's JSON form)
        self.underlays: set[str] = set()  # its peers' underlay addresses, in the host's VXLAN filter

    def close(self) -> None:
        self.dns.close()
        self.conntrack.close()
        self.nft.close()


def instance_addresses(endpoint: dict[str, Any]) -> list[str]:
    """The addresses an instance may send from (its veth's anti-spoofing elements)."""
    return [a for a in (endpoint.get("ipv4"), endpoint.get("ipv6")) if a]


def service_ports(services: list[dict[str, Any]]) -> list[ServicePort]:
    """The (VIP, transport, port) entries of SyncVpc services, backends split by family."""
    ports = []
    for service in services:
        for vip in (service.get("vip4"), service.get("vip6")):
            if not vip:
                continue
            version = ipaddress.ip_address(vip).version
            for port in service.get("ports", []):
                backends = tuple(
                    b for b in port.get("backends", []) if ipaddress.ip_address(b).version == version
                )
                ports.append(ServicePort(vip, port["transport"], int(port["port"]), backends))
    return ports


class VpcRouters(AgentBase):
    """The part of HostAgent that holds the routers and syncs VPCs to them."""

    routers: dict[str, Router]
    _router_locks: dict[str, asyncio.Lock]
    _underlay_filter: overlay.UnderlayFilter | None = None

    def underlay_filter(self) -> overlay.UnderlayFilter:
        """The host namespace's VXLAN filter (made at first use: the agent's namespace)."""
        if self._underlay_filter is None:
            self._underlay_filter = overlay.UnderlayFilter(Nft(None))
        return self._underlay_filter

    def forget_router(self, router: Router) -> None:
        """A router is gone: its peers leave the VXLAN filter (unless another has them)."""
        if router.underlays:
            self.underlay_filter().update(router.underlays, set())
            router.underlays = set()

    # -- overlay ---------------------------------------------------------------------------
    def vpc_syncs(self) -> list[tuple[str, int]]:
        """Per router: its VPC's name and the number of the sync it holds (heartbeats
        carry it: the controller sends a snapshot to a router out of step)."""
        return [
            (router.state.get("vpc_name", ""), vpcdelta.sequence(router.state))
            for router in self.routers.values()
            if router.state is not None
        ]

    async def repair_overlays(self) -> None:
        """Apply every router's last VPC state again: the overlay is read back from the
        kernel when it was last read long enough ago, so drift there is repaired."""
        for name, router in list(self.routers.items()):
            if router.state is None:
                continue
            async with self._router_locks[name]:
                if router.state is not None and netns.exists(name):
                    await self._apply_overlay(name, router.state)

    async def sync_vpc(self, router_netns: str, desired: dict[str, Any]) -> tuple[bool, int, int]:
        """Apply a VPC's overlay and policy (`desired` as in SyncVpc); remembered on disk.
        `vpcdelta.StaleEpoch` (nothing applied) if its epoch is below the router's;
        ValueError (nothing applied) if a value is malformed."""
        vpcdelta.validate(desired)
        if not self.owns_netns(router_netns):
            raise ValueError(f"router {router_netns!r} does not carry this host's tag {self.tag!r}")
        async with self._router_locks[router_netns]:
            if router_netns not in self.table.routers() or not netns.exists(router_netns):
                return False, 0, 0
            vpcdelta.check_epoch(vpcdelta.epoch(await self._held(router_netns)), vpcdelta.epoch(desired))
            added, removed = await self._apply_and_keep(router_netns, desired)
            return True, added, removed

    async def sync_vpc_delta(self, router_netns: str, delta: dict[str, Any]) -> tuple[bool, int, int, int]:
        """Apply a VPC delta on top of the sync it is based on: (present, added, removed,
        seq); seq is -1 when the router holds another sync (nothing applied: the
        controller sends a snapshot). ValueError (nothing applied) if a value is malformed."""
        vpcdelta.validate(delta)
        if not self.owns_netns(router_netns):
            raise ValueError(f"router {router_netns!r} does not carry this host's tag {self.tag!r}")
        async with self._router_locks[router_netns]:
            if router_netns not in self.table.routers() or not netns.exists(router_netns):
                return False, 0, 0, 0
            current = await self._held(router_netns)
            vpcdelta.check_epoch(vpcdelta.epoch(current), vpcdelta.epoch(delta))
            base = int(delta.get("base_seq", 0))
            if current is None or vpcdelta.sequence(current) != base:
                log.info(
                    "VPC delta %s for %s is based on sync %d, the router holds %d: snapshot needed",
                    delta.get("seq"),
                    router_netns,
                    base,
                    vpcdelta.sequence(current),
                )
                return True, 0, 0, -1
            desired = vpcdelta.apply_delta(current, delta)
            added, removed = await self._apply_and_keep(router_netns, desired)
            return True, added, removed, vpcdelta.sequence(desired)

    async def _held(self, router_netns: str) -> vpcdelta.State | None:
        """The VPC state the router holds: as last applied, or as saved on disk."""
        router = await self._router(router_netns)
        return router.state if router.state is not None else self.saved_vpc(router_netns)

    async def _apply_and_keep(self, router_netns: str, desired: dict[str, Any]) -> tuple[int, int]:
        write_atomically(self.overlay_path(router_netns), json.dumps(desired).encode())
        added, removed = await self._apply_vpc(router_netns, desired)
        (await self._router(router_netns)).state = desired
        return added, removed

    def saved_vpc(self, router_netns: str) -> dict[str, Any] | None:
        """The VPC state last synced to this router, None if there is none or it is unusable.

        Unusable is as good as absent: the router denies everything until the controller
        syncs the VPC again, which it does when the host (re)connects.
        """
        path = self.overlay_path(router_netns)
        try:
            desired = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("overlay file %s is unreadable (%s): ignored", path, exc)
            return None
        missing = [k for k in OVERLAY_KEYS if not isinstance(desired, dict) or k not in desired]
        if missing:
            log.warning("overlay file %s lacks %s: ignored", path, ", ".join(missing))
            return None
        return dict(desired)

    async def _router(self, router_netns: str) -> Router:
        router = self.routers.get(router_netns)
        if router is None:
            router = self.routers[router_netns] = Router(router_netns)
            for record in self.table.records.values():  # the ports of its instances, if any
                if record.router_netns == router_netns:
                    router.policy.set_port(
                        record.endpoint["router_ifname"], instance_addresses(record.endpoint)
                    )
            await router.dns.start()
        return router

    async def _apply_vpc(self, router_netns: str, desired: dict[str, Any]) -> tuple[int, int]:
        router = await self._router(router_netns)
        members = desired.get("members", [])
        # Zero values are absent from the message's JSON form: a member without an
        # identity, or a rule saved before identities (addresses), is left out: denied.
        identities = {m["address"]: int(m["identity"]) for m in members if m.get("identity")}
        rules = {
            Allow(int(r["source_identity"]), int(r["destination_identity"]), r["transport"], int(r["port"]))
            for r in desired.get("rules", [])
            if r.get("source_identity") and r.get("destination_identity")
        }
        added, removed = router.policy.sync(identities, rules)
        services = desired.get("services", [])
        lb_added, lb_removed = router.services.sync(service_ports(services))
        if router.policy.revoked or router.services.dropped:
            await self._revoke(router_netns, router)
        router.dns.set_services(desired.get("vpc_name", ""), services)
        router.members = {m["address"]: Member(m["instance"], m["automaton"]) for m in members}
        overlay_added, overlay_removed = await self._apply_overlay(router_netns, desired)
        return added + lb_added + overlay_added, removed + lb_removed + overlay_removed

    async def _revoke(self, router_netns: str, router: Router) -> None:
        """Delete the conntrack entries of flows the sync just took away (a link, a
        member, a backend): "accept established" would keep them alive otherwise."""
        started = time.monotonic()
        policy, services = router.policy, router.services
        deleted = await router.conntrack.delete_where(lambda c: policy.revokes(c) or services.revokes(c))
        if deleted:
            log.info(
                "%s: revoked %d connection(s) in %.1f ms",
                router_netns,
                len(deleted),
                (time.monotonic() - started) * 1000,
            )

    async def _apply_overlay(self, router_netns: str, desired: dict[str, Any]) -> tuple[int, int]:
        def vtep(data: dict[str, Any]) -> overlay.Vtep:
            return overlay.Vtep(data["underlay"], data["mac"], data["ipv4"], data["ipv6"])

        spec = overlay.VxlanSpec(
            desired["vxlan_ifname"], int(desired["vni"]), vtep(desired["local"]), int(desired["mtu"])
        )
        peers = [
            overlay.Peer(vtep(p["vtep"]), list(p.get("addresses", []))) for p in desired.get("peers", [])
        ]
        router = await self._router(router_netns)
        # Read the kernel back now and then (drift repair); otherwise diff against memory.
        fresh = router.overlay is None or time.monotonic() - router.overlay_read > OVERLAY_REREAD
        added, removed, router.overlay = await overlay.sync_vpc(
            self.nl, router_netns, spec, peers, None if fresh else router.overlay
        )
        if fresh:
            router.overlay_read = time.monotonic()
        underlays = {peer.vtep.underlay for peer in peers}
        if underlays != router.underlays or self._underlay_filter is None:
            self.underlay_filter().update(router.underlays, underlays)
            router.underlays = underlays
        return added, removed
