"""The network operator: each VPC's overlay routes, composition security and services, per host.

For a VPC, the desired state of host H is
- the overlay: every other host that has wired instances of the VPC, its VTEP, and
  those instances' addresses (H routes to them over VXLAN);
- the policy: the identity of every wired instance's automaton (so H maps each
  address of the VPC to it), and one rule (source identity, destination identity,
  transport, port) per link opening where either automaton has an instance on H
  (model/policy.py says which automatons are linked). The elements grow with instances
  plus links, not with instances times instances;
- the services: every automaton's VIPs and DNS name, and per provided port the ready
  (Provisioned) instances that connections to the VIP are balanced over.

`VpcSyncer.sync(vpc)` computes this from the object cache and brings each such host
to it. Hosts are told what changed, not everything: the syncer keeps the VPC's tables
(members, peers, services) as of its last sync, and what each host holds (the number
of its last sync, its rules). A host that holds the last sync gets a `SyncVpcDelta`
(entries added or changed, keys removed; nothing at all when the change does not
concern it); any other host (new to the VPC, reconnected, after a failed call, after a
controller restart) gets a `SyncVpc` snapshot. Every message is numbered in a sequence
per host, and a delta names the sync it applies on top of: an agent that holds
another one (a delta was lost on the wire, it lost its state) applies nothing and asks
for a snapshot, which the syncer sends at once. A gap needs no change to be found:
every agent heartbeat says which sync each of its routers holds (`held_by`), and a
router out of step gets a snapshot within seconds (`repair_forever`); while all
agree, no call is made at all.

Calls for the same VPC coalesce: many instances wired at once cause few syncs, and a
caller returns only after a sync that started after its call has finished, so when
`await sync(vpc)` returns, every host of the VPC routes to, and enforces the policy
of, every instance wired before the call.

Several controllers (control/shards.py): only the owner of a VPC's shard syncs it
(`sync` of another's VPC raises `Retry`; `sync_all` and the periodic resync skip them),
and every snapshot and delta carries the shard's **epoch**, which agents check: they
refuse a sync of a lower epoch than one they have seen. The epoch is part of the
snapshot header, so a new owner (whose per-host records start empty anyway) sends
snapshots first; on gaining a VPC it syncs it at once, so hosts learn the new epoch
without waiting for a change. Changes other controllers make that concern an owned
VPC — a host that (re)connected, instances lost with their host, a composition — are
followed from the object cache (`followed`). Alone (SQLite) the epoch is 0.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from autonet.agent.rpc import agent_pb2 as pb
from autonet.control.cache import ACTING_GUARDS
from autonet.control.outcomes import Retry
from autonet.control.shards import composition_vpcs, vpc_shard
from autonet.model import naming
from autonet.model.addressing import vtep_addresses, vtep_mac
from autonet.model.kinds import CONNECTED, LOST, PROVISIONED, READY, KindRegistry
from autonet.model.objects import Object
from autonet.model.policy import Opening, openings

if TYPE_CHECKING:
    from autonet.control.context import Context


def wired_states(kinds: KindRegistry) -> set[str]:
    """Instance states in which its endpoint exists on its host: `Wired` and every stage
    after it, including stages plugins inserted."""
    states = [stage.state for stage in kinds["Instance"].pipeline]
    return set(states[states.index("Wired") :])


VXLAN_OVERHEAD = {4: 50, 6: 70}


class Coalescer:
    """Run `work(key)` so that every call is served by a run that started after it."""

    def __init__(self, work: Callable[[str], Awaitable[None]]) -> None:
        self.work = work
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._running: set[str] = set()

    async def __call__(self, key: str) -> None:
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            if key not in self._running:
                self._running.add(key)
                asyncio.get_running_loop().create_task(self._drain(key))
        await asyncio.shield(future)

    async def _drain(self, key: str) -> None:
        try:
            while key in self._pending:
                future = self._pending.pop(key)
                try:
                    await self.work(key)
                except Exception as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(None)
        finally:
            self._running.discard(key)


def vtep(host: Object, vpc_uid: str) -> pb.Vtep:
    ipv4, ipv6 = vtep_addresses(int(host.status["index"]))
    return pb.Vtep(underlay=host.spec["underlay"], mac=vtep_mac(host.uid, vpc_uid), ipv4=ipv4, ipv6=ipv6)


def overlay_mtu(host: Object) -> int:
    version = 6 if ":" in host.spec["underlay"] else 4
    return int(host.status.get("mtu", 1500)) - VXLAN_OVERHEAD[version]


def addresses(inst: Object) -> list[str]:
    return [a for a in (inst.status.get("ipv4"), inst.status.get("ipv6")) if a]


def identities(automatons: Iterable[Object]) -> dict[str, int]:
    """Automaton name -> its identity, for the automatons that hold one (leased at Init)."""
    return {a.name: int(a.status["identity"]) for a in automatons if a.status.get("identity")}


def identity_rules(found: Iterable[Opening], identity: dict[str, int], local: set[str]) -> list[pb.Rule]:
    """One rule per opening whose source or target automaton has an instance in `local`
    (the automatons on the host): whatever the number of instances, a link costs one
    element per (transport, port) it opens."""
    rules = {
        (identity[o.source], identity[o.target], o.transport, o.port)
        for o in found
        if (o.source in local or o.target in local) and o.source in identity and o.target in identity
    }
    return [
        pb.Rule(source_identity=s, destination_identity=d, transport=t, port=p)
        for s, d, t, p in sorted(rules)
    ]


def member_list(wired: Iterable[Object], identity: dict[str, int]) -> list[pb.Member]:
    """Every address of the wired instances, with its instance, automaton and identity."""
    return [
        pb.Member(
            address=address,
            instance=inst.name,
            automaton=inst.spec["automaton"],
            identity=identity.get(inst.spec["automaton"], 0),
        )
        for inst in wired
        for address in addresses(inst)
    ]


def service_table(automatons: Iterable[Object], wired: dict[str, list[Object]]) -> list[pb.Service]:
    """Every automaton of the VPC with its VIPs; each provided port with its ready instances."""
    services = []
    for automaton in sorted(automatons, key=lambda a: a.name):
        if automaton.metadata.deleting:
            continue
        ready = [i for i in wired.get(automaton.name, []) if i.state == PROVISIONED]
        backends = sorted(a for i in ready for a in addresses(i))
        ports = [
            pb.ServicePort(transport=p["transport"], port=int(p["port"]), backends=backends)
            for p in automaton.spec.get("provides", [])
        ]
        services.append(
            pb.Service(
                name=automaton.name,
                vip4=automaton.status.get("vip4", ""),
                vip6=automaton.status.get("vip6", ""),
                ports=ports,
            )
        )
    return services


RuleKey = tuple[int, int, str, int]


def rule_key(rule: pb.Rule) -> RuleKey:
    return (rule.source_identity, rule.destination_identity, rule.transport, rule.port)


@dataclass
class HostSync:
    """What one host's router of a VPC holds, as the controller last told it."""

    seq: int  # the number of the sync it holds
    header: bytes  # the snapshot's fields a delta cannot change (serialised)
    rules: dict[RuleKey, pb.Rule]
    at: float = field(default_factory=time.monotonic)  # when the agent acknowledged it


@dataclass
class VpcTables:
    """A VPC's state as of its last sync, keyed the way deltas are: the base of the next
    sync's deltas for the hosts in `hosts` (every other host gets a snapshot)."""

    members: dict[str, pb.Member]  # by address
    peers: dict[str, pb.Peer]  # by host: every host with wired instances of the VPC
    services: dict[str, pb.Service]  # by automaton
    hosts: dict[str, HostSync] = field(default_factory=dict)


Entry = TypeVar("Entry", pb.Member, pb.Peer, pb.Service)


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> tuple[list[Entry], list[str]]:
    """The entries added or changed from `before` to `after`, and the keys removed."""
    changed = [entry for key, entry in after.items() if before.get(key) != entry]
    return changed, [key for key in before if key not in after]


@dataclass
class VpcChanges:
    """What changed in a VPC's tables between two syncs (the same for all its hosts)."""

    members: tuple[list[pb.Member], list[str]]
    peers: tuple[list[pb.Peer], list[str]]
    services: tuple[list[pb.Service], list[str]]

    @classmethod
    def between(cls, before: VpcTables, after: VpcTables) -> VpcChanges:
        return cls(
            changes(before.members, after.members),
            changes(before.peers, after.peers),
            changes(before.services, after.services),
        )

    def delta(self, host: str, base: HostSync, rules: dict[RuleKey, pb.Rule]) -> pb.VpcDelta:
        """The delta that brings `host` (holding `base`) to the new tables and `rules`."""
        changed_peers, removed_peers = self.peers
        return pb.VpcDelta(
            base_seq=base.seq,
            peers=[p for p in changed_peers if p.host != host],
            removed_peers=[h for h in removed_peers if h != host],
            members=self.members[0],
            removed_members=self.members[1],
            services=self.services[0],
            removed_services=self.services[1],
            added_rules=[rule for key, rule in rules.items() if key not in base.rules],
            removed_rules=[rule for key, rule in base.rules.items() if key not in rules],
        )


def make_snapshot(
    header: pb.VpcState, tables: VpcTables, host: str, rules: dict[RuleKey, pb.Rule]
) -> pb.VpcState:
    """The whole state of the VPC for `host`'s router: `header` (its own fields), the
    other hosts as peers, its rules, every member and service."""
    snapshot = pb.VpcState()
    snapshot.CopyFrom(header)
    snapshot.peers.extend(p for name, p in tables.peers.items() if name != host)
    snapshot.rules.extend(rules[k] for k in sorted(rules))
    snapshot.services.extend(tables.services.values())
    snapshot.members.extend(tables.members.values())
    return snapshot


def is_empty(delta: pb.VpcDelta) -> bool:
    return not (
        delta.peers
        or delta.removed_peers
        or delta.members
        or delta.removed_members
        or delta.services
        or delta.removed_services
        or delta.added_rules
        or delta.removed_rules
    )


@dataclass
class SyncCounts:
    """How the controller's VPC syncs went since it started (GET /api/v1/stats)."""

    snapshots: int = 0
    deltas: int = 0
    skipped: int = 0  # hosts a sync did not concern (their delta was empty)
    gaps: int = 0  # deltas an agent refused (not based on what it holds): snapshot sent
    dropped: int = 0  # deltas not sent by fault injection (AUTONET_DROP_DELTAS)


class VpcSyncer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sync = Coalescer(self._sync)
        # Per network, the hosts holding its wired instances, as of the last sync.
        self.network_hosts: dict[str, set[str]] = {}
        self.tables: dict[str, VpcTables] = {}  # per VPC, as of its last sync
        self.sequence: dict[str, int] = defaultdict(int)  # per host, the last sync number sent
        self.drifted: set[str] = set()  # VPCs a heartbeat showed a host out of step with
        self._syncing: set[str] = set()  # VPCs whose sync runs now (their tables are out)
        self.counts = SyncCounts()
        # Fault injection for tests: the next N deltas are lost on the wire (never sent,
        # believed delivered); the agents' gap check must repair what they carried.
        self.drop_deltas = int(os.environ.get("AUTONET_DROP_DELTAS", "0"))
        self._background: set[asyncio.Task[None]] = set()
        shards = ctx.shards
        if shards is not None:
            shards.subscribe_gained(self._gained)
            shards.subscribe_lost(self._lost)
            ctx.cache.subscribe(self.followed)
            ctx.cache.subscribe_deletes(self._deleted)

    # -- several controllers: which VPCs are this controller's --------------------------------

    def owns(self, vpc: str) -> bool:
        """Whether this controller may sync `vpc` now (always, alone)."""
        shards = self.ctx.shards
        return shards is None or shards.holds(vpc_shard(vpc)) is not None

    def _gained(self, shards: set[str], keys: set[tuple[str, str]]) -> None:
        vpcs = {shard.removeprefix("vpc/") for shard in shards if shard.startswith("vpc/")}
        for vpc in vpcs:
            self.tables.pop(vpc, None)  # a new owner's first sync to each host is a snapshot
        self._in_background(vpcs, "gained")

    def _lost(self, shard: str) -> None:
        if shard.startswith("vpc/"):
            self.tables.pop(shard.removeprefix("vpc/"), None)

    def followed(self, kind: str, name: str) -> None:
        """Another controller's change that concerns VPCs this one owns: sync them."""
        obj = self.ctx.cache.get(kind, name)
        if obj is None:
            return
        if kind == "Host" and obj.state == CONNECTED:
            self.forget_host(name)  # whatever its agent holds, snapshots set it right
            vpcs = {
                i.status["vpc"] for i in self.ctx.cache.by("Instance", "host", name) if i.status.get("vpc")
            }
            self._in_background(vpcs, f"host {name} connected")
        elif kind == "Instance" and obj.state == LOST and obj.status.get("vpc"):
            self._in_background({obj.status["vpc"]}, f"instance {name} lost")
        elif kind == "Composition":
            self._in_background(composition_vpcs(obj, self.ctx.cache), f"composition {name}")

    def _deleted(self, kind: str, name: str) -> None:
        if kind == "Composition":  # its VPCs cannot be told any more: resync every owned one
            self._in_background(
                {vpc.name for vpc in self.ctx.cache.list("Vpc")}, f"composition {name} deleted"
            )

    def _in_background(self, vpcs: Iterable[str], why: str) -> None:
        owned = sorted(vpc for vpc in vpcs if self.owns(vpc))
        if not owned:
            return

        async def sync() -> None:
            for vpc in owned:
                try:
                    await self.sync(vpc)
                except Exception as exc:
                    self.ctx.log.warning("sync of Vpc %s (%s) failed: %s", vpc, why, exc)

        task = asyncio.get_running_loop().create_task(sync())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @functools.cached_property
    def wired_states(self) -> set[str]:
        # On first use, not at construction: plugins may insert stages until then.
        return wired_states(self.ctx.kinds)

    def is_wired(self, inst: Object) -> bool:
        return (
            not inst.metadata.deleting and inst.state in self.wired_states and bool(inst.status.get("host"))
        )

    async def sync_all(self, vpcs: Iterable[str]) -> None:
        """Sync every VPC of `vpcs` this controller owns (their owners sync the others)."""
        await asyncio.gather(*(self.sync(vpc) for vpc in sorted(set(vpcs)) if self.owns(vpc)))

    def held_by(self, host: str, routers: Iterable[tuple[str, int]]) -> None:
        """A fact from the host's heartbeat: per VPC, the number of the sync its router
        holds. A VPC this controller has never synced, or whose router holds another
        sync than the one acknowledged (over `SETTLE` seconds ago, so a sync in flight
        is not mistaken for a loss), is marked for a sync; the host gets a snapshot."""
        now = time.monotonic()
        for vpc, seq in routers:
            if not self.owns(vpc):
                continue  # another controller's VPC: its owner hears the same heartbeats
            tables = self.tables.get(vpc)
            if tables is None:
                if vpc not in self._syncing:
                    self.drifted.add(vpc)
                continue
            held = tables.hosts.get(host)
            if held is not None and held.seq != seq and now - held.at > SETTLE:
                self.ctx.log.warning(
                    "host %s holds sync %d of Vpc %s, not %d (a delta was lost, or its state): "
                    "sending a snapshot",
                    host,
                    seq,
                    vpc,
                    held.seq,
                )
                self.counts.gaps += 1
                del tables.hosts[host]
                self.drifted.add(vpc)

    def forget_host(self, host: str) -> None:
        """The host's agent may hold anything (it reconnected): its next syncs are snapshots."""
        for tables in self.tables.values():
            tables.hosts.pop(host, None)

    async def _sync(self, vpc_name: str) -> None:
        epoch = 0
        if self.ctx.shards is not None:
            guard = self.ctx.shards.holds(vpc_shard(vpc_name))
            if guard is None:
                raise Retry(f"Vpc {vpc_name}: this controller does not own {vpc_shard(vpc_name)} now")
            epoch = guard.epoch
            ACTING_GUARDS.set((guard,))  # (this task's context only) its agent calls are gated on it
        # Taken out while the sync runs: if it breaks half-way, the next one sends snapshots.
        before = self.tables.pop(vpc_name, None)
        self._syncing.add(vpc_name)
        try:
            await self._sync_tables(vpc_name, before, epoch)
        finally:
            self._syncing.discard(vpc_name)

    async def _sync_tables(self, vpc_name: str, before: VpcTables | None, epoch: int) -> None:
        vpc = await self.ctx.get("Vpc", vpc_name)
        if vpc is None or not vpc.status.get("vni"):
            return
        hosts = {h.name: h for h in await self.ctx.list("Host")}
        wired = [i for i in await self.ctx.by("Instance", "vpc", vpc_name) if self.is_wired(i)]
        by_host: dict[str, list[str]] = defaultdict(list)
        by_automaton: dict[str, list[Object]] = defaultdict(list)
        network_hosts: dict[str, set[str]] = defaultdict(set)
        local: dict[str, set[str]] = defaultdict(set)  # per host, the automatons it runs
        for inst in wired:
            by_host[inst.status["host"]].extend(addresses(inst))
            local[inst.status["host"]].add(inst.spec["automaton"])
            by_automaton[inst.spec["automaton"]].append(inst)
            network_hosts[inst.status["network"]].add(inst.status["host"])
        self.network_hosts.update(network_hosts)
        all_automatons = await self.ctx.by("Automaton", "vpc", vpc_name)
        automatons = {a.name: a for a in all_automatons if a.name in by_automaton}
        identity = identities(automatons.values())
        found = openings(await self.ctx.list("Composition"), automatons)
        after = VpcTables(
            members={m.address: m for m in member_list(wired, identity)},
            peers={
                name: pb.Peer(host=name, vtep=vtep(hosts[name], vpc.uid), addresses=sorted(addrs))
                for name, addrs in sorted(by_host.items())
                if name in hosts and "index" in hosts[name].status
            },
            services={s.name: s for s in service_table(all_automatons, by_automaton)},
        )
        changed = VpcChanges.between(before, after) if before is not None else None
        calls = []
        for name in by_host:
            host = hosts.get(name)
            if host is None or host.state not in (READY, CONNECTED) or "index" not in host.status:
                continue  # a Lost host is told when it comes back (Host Connected resyncs)
            header = pb.VpcState(
                vpc_uid=vpc.uid,
                router_netns=naming.router_netns(host.spec["tag"], vpc.uid),
                vxlan_ifname=naming.vxlan_ifname(vpc.uid),
                vni=int(vpc.status["vni"]),
                local=vtep(host, vpc.uid),
                mtu=overlay_mtu(host),
                vpc_name=vpc_name,
                epoch=epoch,
            )
            rules = {rule_key(r): r for r in identity_rules(found, identity, local[name])}
            base = before.hosts.get(name) if before is not None else None
            calls.append(self._send(host, header, rules, after, changed, base))
        results: list[Any] = await asyncio.gather(*calls, return_exceptions=True)
        self.tables[vpc_name] = after
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _send(
        self,
        host: Object,
        header: pb.VpcState,
        rules: dict[RuleKey, pb.Rule],
        after: VpcTables,
        changed: VpcChanges | None,
        base: HostSync | None,
    ) -> None:
        """Bring one host's router to `after`: a delta on top of what it holds when the
        controller knows that, a snapshot otherwise (or when the agent finds a gap)."""
        agent = self.ctx.agents.get(host.name, host.spec["rpc"])
        key = header.SerializeToString(deterministic=True)
        if changed is not None and base is not None and base.header == key:
            delta = changed.delta(host.name, base, rules)
            if is_empty(delta):
                self.counts.skipped += 1
                after.hosts[host.name] = base
                return
            delta.vpc_uid, delta.router_netns, delta.epoch = header.vpc_uid, header.router_netns, header.epoch
            delta.seq = self._next(host.name)
            if self.drop_deltas > 0:  # fault injection: lost on the wire, believed delivered
                self.drop_deltas -= 1
                self.counts.dropped += 1
                self.ctx.log.warning("fault injection: sync %d to host %s dropped", delta.seq, host.name)
                after.hosts[host.name] = HostSync(delta.seq, key, rules)
                return
            reply = await agent.call("SyncVpcDelta", delta)
            self.counts.deltas += 1
            if not reply.present:
                return
            if not reply.snapshot_needed:
                after.hosts[host.name] = HostSync(delta.seq, key, rules)
                return
            self.counts.gaps += 1
            self.ctx.log.warning(
                "host %s does not hold sync %d of Vpc %s (a delta was lost, or its state): "
                "sending a snapshot",
                host.name,
                base.seq,
                header.vpc_name,
            )
        snapshot = make_snapshot(header, after, host.name, rules)
        snapshot.seq = self._next(host.name)
        reply = await agent.call("SyncVpc", snapshot)
        self.counts.snapshots += 1
        if reply.present:
            after.hosts[host.name] = HostSync(snapshot.seq, key, rules)

    def _next(self, host: str) -> int:
        self.sequence[host] += 1
        return self.sequence[host]


SETTLE = 2.0  # seconds after an acknowledged sync before a heartbeat may contradict it
REPAIR_EVERY = 1.0


async def repair_forever(ctx: Context) -> None:
    """Anti-entropy, driven by the agents' heartbeats: every `REPAIR_EVERY` seconds, the
    VPCs a heartbeat showed out of step (`VpcSyncer.held_by`) are synced, the hosts
    concerned by snapshot. No call is made while everything agrees, so this costs
    nothing that grows with the fleet; the agents repair kernel drift themselves."""
    network = ctx.network
    while True:
        await asyncio.sleep(REPAIR_EVERY)
        drifted, network.drifted = network.drifted, set()
        for vpc in sorted(drifted):
            if not network.owns(vpc):
                continue
            try:
                await network.sync(vpc)
            except Exception as exc:
                ctx.log.warning("repairing Vpc %s failed: %s", vpc, exc)
