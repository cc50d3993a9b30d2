"""Hollow hosts: the real agent protocol with a no-op data plane, many per process.

A hollow host is what the controller cannot tell from a real host: a gRPC server
implementing service `Agent` (agent.proto) on its own port on 127.0.0.1, that
registers with the controller's API and heartbeats every second like `autonet agent`
(agent/server.py). Its data plane only records what it was asked: the instances it
holds (endpoint, process), its VPC routers and the last `SyncVpc` of each with its
element counts. No namespace, link, route or process is made, so hundreds of hosts and
tens of thousands of instances fit on one machine: `autonet bench scale` uses them to
measure the control plane at fleet size without kernels.

Conventions (documented in docs/performance.md):

- a hollow process "runs" at once; it listens on the ports its command names as
  `--port N` (tcp) or `--listen tcp/N` / `--listen udp/N`, so that the controller's
  readiness check (`Running`: every provided port listening) passes for commands like
  `[hollow-service, --port, "8080"]`;
- its pid is a made-up number above the kernel's pid_max (4,194,304): never a process;
- underlays are made up from 100.127.0.0/16 (IPv4) or fd00:ff::/64 (IPv6), never
  routed to: the controller only records them (and sends them back in `SyncVpc`);
- `SyncVpc` answers `present=false` for a VPC the host has no router for (no instance
  of it), as the real agent does; `added`/`removed` are the changes in element counts;
  `SyncVpcDelta` applies on top of the sync it names as its base, and otherwise asks
  for a snapshot, as the real agent does (it keeps each element's key to do so); both
  refuse a sync of a lower epoch than the router has seen (FAILED_PRECONDITION, "stale
  epoch E < F"), as the real agent does;
- each instance gets a uid as the real agent leases it (the lowest freed one first, from
  the default range), reported in `process_uid`; `resources` are only recorded;
- `Exec` is not implemented (there is nothing to run a command in); `Logs` and
  `FollowLogs` answer an empty log, `Flows` no flows; no load samples are posted.
- its gRPC is plaintext on loopback, which a real agent serves only without TLS flags
  (agent/rpc/tls.py), and the bench's controller runs without `--tls-cert`: the bench
  measures the control plane, not TLS handshakes.

`python -m autonet.cli.main hollow --hosts N --controller URL` runs a fleet of N hosts
until SIGTERM; `--status FILE` keeps what every host holds in a JSON file (rewritten
0.2 s after a change, and every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf.json_format import MessageToDict

from autonet.agent.rpc import agent_pb2 as pb
from autonet.agent.rpc import agent_pb2_grpc as pb_grpc
from autonet.agent.state import DEFAULT_UID_RANGE
from autonet.agent.vpcdelta import StaleEpoch, check_epoch
from autonet.model.naming import host_tag

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
STATUS_SECONDS = 1.0  # how often the status file is rewritten, if anything changed
STATUS_EVERY = 1.0  # ... and at least this often
FAKE_PID_BASE = 5_000_000  # above the kernel's largest pid_max (2**22): never a real process
SYNC_HISTORY = 16  # times of the last SyncVpc calls kept per router (bench: first after a restart)

_pids = itertools.count(FAKE_PID_BASE)


def listening_ports(command: list[str]) -> list[str]:
    """The ports a hollow process listens on: `--port N` (tcp), `--listen tcp/N`."""
    found: set[str] = set()
    for flag, value in itertools.pairwise(command):
        if flag == "--port" and value.isdigit():
            found.add(f"tcp/{int(value)}")
        elif flag == "--listen" and "/" in value:
            transport, _, port = value.partition("/")
            if transport in ("tcp", "udp") and port.isdigit():
                found.add(f"{transport}/{int(port)}")
    return sorted(found)


def underlay_address(index: int, family: str = "ipv4") -> str:
    """A made-up underlay for hollow host `index` (0-based); never routed to."""
    if family == "ipv6":
        return f"fd00:ff::{index + 1:x}"
    if index >= 250 * 256:
        raise ValueError(f"hollow host index {index}: at most {250 * 256} IPv4 underlays")
    return f"100.127.{index // 250}.{index % 250 + 1}"


@dataclass
class HollowInstance:
    uid: str
    name: str
    endpoint: dict[str, Any]
    process: dict[str, Any] | None = None
    pid: int = 0
    listening: list[str] = field(default_factory=list)
    process_uid: int = 0


@dataclass
class RouterRecord:
    """What the syncs asked of one VPC router: the keys of its elements, not their values."""

    vpc: str = ""
    vni: int = 0
    seq: int = 0  # the number of the last sync applied (deltas apply only on top of it)
    epoch: int = 0  # the highest controller epoch applied (lower ones are refused)
    syncs: int = 0
    synced_at: list[float] = field(default_factory=list)  # wall-clock times, newest last
    peers: dict[str, int] = field(default_factory=dict)  # host -> its instance addresses
    members: set[str] = field(default_factory=set)
    rules: set[tuple[int, int, str, int]] = field(default_factory=set)
    services: dict[str, int] = field(default_factory=dict)  # name -> backends over its ports
    held: dict[str, int] = field(default_factory=dict)  # `counts` as of the last sync applied

    @property
    def counts(self) -> dict[str, int]:
        """Element counts: what a real router would hold."""
        return {
            "peers": len(self.peers),
            "remote_addresses": sum(self.peers.values()),
            "rules": len(self.rules),
            "services": len(self.services),
            "backends": sum(self.services.values()),
            "members": len(self.members),
        }

    def take(
        self, peers: Iterable[pb.Peer], services: Iterable[pb.Service], members: Iterable[pb.Member]
    ) -> None:
        self.peers.update((p.host, len(p.addresses)) for p in peers)
        self.services.update((s.name, sum(len(port.backends) for port in s.ports)) for s in services)
        self.members.update(m.address for m in members)


def rule_keys(rules: Iterable[pb.Rule]) -> set[tuple[int, int, str, int]]:
    return {(r.source_identity, r.destination_identity, r.transport, r.port) for r in rules}


class HollowHost:
    """One hollow host's state: what the controller asked of it, nothing more."""

    def __init__(self, name: str, tag: str, underlay: str, mtu: int = 1500) -> None:
        self.name = name
        self.tag = tag
        self.underlay = underlay
        self.mtu = mtu
        self.boot_id = uuid.uuid4().hex
        self.index: int | None = None
        self.rpc = ""
        self.instances: dict[str, HollowInstance] = {}
        self.routers: dict[str, set[str]] = {}  # router netns -> instance uids
        self.syncs: dict[str, RouterRecord] = {}  # router netns -> its last SyncVpc
        self.calls: Counter[str] = Counter()
        self.registered_at: list[float] = []  # wall-clock times of (re)registrations
        self.changed = True  # since the status file was last written
        self.beat_at = 0.0  # wall-clock time of the last heartbeat the controller took
        self.next_uid = DEFAULT_UID_RANGE[0]  # uids leased as the real agent does: freed ones first
        self.freed_uids: list[int] = []

    def vpc_syncs(self) -> list[tuple[str, int]]:
        """Per router: its VPC and the number of the sync it holds, as heartbeats carry it."""
        return [(record.vpc, record.seq) for record in self.syncs.values()]

    def count(self, call: str) -> None:
        self.calls[call] += 1
        self.changed = True

    def row(self, inst: HollowInstance) -> pb.InstanceReport:
        return pb.InstanceReport(
            instance_uid=inst.uid,
            instance_name=inst.name,
            netns=inst.endpoint.get("netns", ""),
            wired=True,
            process="running" if inst.process is not None else "none",
            pid=inst.pid,
            listening=inst.listening,
            process_uid=0 if (inst.process or {}).get("user") == "root" else inst.process_uid,
        )

    def lease_uid(self) -> int:
        if self.freed_uids:
            return heapq.heappop(self.freed_uids)
        self.next_uid += 1
        return self.next_uid - 1

    def report(self, only: str = "") -> pb.HostReport:
        chosen = [self.instances[only]] if only in self.instances else [] if only else self.instances.values()
        return pb.HostReport(
            host=self.name,
            boot_id=self.boot_id,
            instances=[self.row(inst) for inst in chosen],
            routers=sorted(self.routers),
        )

    def processes_down(self) -> list[dict[str, Any]]:
        """Every process not running, as a heartbeat carries it: a hollow process never
        stops, so none."""
        return []

    def status(self) -> dict[str, Any]:
        return {
            "rpc": self.rpc,
            "underlay": self.underlay,
            "boot_id": self.boot_id,
            "index": self.index,
            "instances": len(self.instances),
            "processes": sum(1 for i in self.instances.values() if i.process is not None),
            "registrations": len(self.registered_at),
            "registered_at": self.registered_at[-SYNC_HISTORY:],
            "beat_at": self.beat_at,
            "calls": dict(self.calls),
            "routers": {
                netns: {
                    "vpc": record.vpc,
                    "vni": record.vni,
                    "epoch": record.epoch,
                    "instances": len(self.routers.get(netns, ())),
                    "syncs": record.syncs,
                    "synced_at": record.synced_at,
                    **record.held,
                }
                for netns, record in sorted(self.syncs.items())
            },
        }


class HollowServicer(pb_grpc.AgentServicer):
    """Service `Agent` over a HollowHost: every call answered as agent/server.py would."""

    def __init__(self, host: HollowHost) -> None:
        self.host = host

    async def Bootstrap(self, request: pb.BootstrapRequest, context: Any) -> pb.HostReport:
        self.host.count("Bootstrap")
        self.host.index = request.index
        return self.host.report()

    async def Report(self, request: pb.ReportRequest, context: Any) -> pb.HostReport:
        self.host.count("Report")
        return self.host.report(request.instance_uid)

    async def EnsureEndpoint(self, request: pb.Endpoint, context: Any) -> pb.InstanceReport:
        self.host.count("EnsureEndpoint")
        if not request.instance_uid or not request.router_netns:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "instance_uid and router_netns are required"
            )
        endpoint = MessageToDict(request, preserving_proto_field_name=True)
        inst = self.host.instances.get(request.instance_uid)
        if inst is None:
            inst = HollowInstance(request.instance_uid, request.instance_name, endpoint)
            inst.process_uid = self.host.lease_uid()
            self.host.instances[inst.uid] = inst
        else:  # idempotent: a repeat (or a repair) replaces what was asked
            self._leave_router(inst)
            inst.name, inst.endpoint = request.instance_name, endpoint
        self.host.routers.setdefault(request.router_netns, set()).add(inst.uid)
        return self.host.row(inst)

    async def EnsureProcess(self, request: pb.Process, context: Any) -> pb.InstanceReport:
        self.host.count("EnsureProcess")
        inst = self.host.instances.get(request.instance_uid)
        if inst is None:  # as the real agent: no endpoint, no process
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"unknown instance {request.instance_uid}"
            )
            raise AssertionError  # abort raises; for the type checker
        command = list(request.command)
        process: dict[str, Any] = {"command": command, "user": request.user, "env": dict(request.env)}
        if request.image:
            process["image"] = request.image
        if request.HasField("resources"):
            process["resources"] = MessageToDict(request.resources, preserving_proto_field_name=True)
        if inst.process != process or not inst.pid:
            inst.process = process
            inst.pid = next(_pids)  # "started"
            inst.listening = listening_ports(command)
        return self.host.row(inst)

    async def DeleteInstance(self, request: pb.InstanceRef, context: Any) -> pb.InstanceReport:
        self.host.count("DeleteInstance")
        inst = self.host.instances.pop(request.instance_uid, None)
        if inst is not None:
            self._leave_router(inst)
            heapq.heappush(self.host.freed_uids, inst.process_uid)
        return pb.InstanceReport(instance_uid=request.instance_uid, deleted=True)

    def _leave_router(self, inst: HollowInstance) -> None:
        """The router goes with its last instance (and what it was synced with)."""
        router = inst.endpoint.get("router_netns", "")
        members = self.host.routers.get(router)
        if members is not None:
            members.discard(inst.uid)
            if not members:
                del self.host.routers[router]
                self.host.syncs.pop(router, None)

    async def _check_epoch(self, router: str, epoch: int, context: Any) -> None:
        record = self.host.syncs.get(router)
        try:
            check_epoch(record.epoch if record is not None else 0, epoch)
        except StaleEpoch as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    def _synced(
        self, router: str, record: RouterRecord, before: dict[str, int], seq: int, epoch: int
    ) -> pb.SyncReport:
        after = record.held = record.counts
        record.seq = seq
        record.epoch = max(record.epoch, epoch)
        record.syncs += 1
        record.synced_at = [*record.synced_at[-(SYNC_HISTORY - 1) :], time.time()]
        added = sum(max(0, n - before.get(k, 0)) for k, n in after.items())
        removed = sum(max(0, before.get(k, 0) - n) for k, n in after.items())
        return pb.SyncReport(present=True, added=added, removed=removed, seq=seq)

    async def SyncVpc(self, request: pb.VpcState, context: Any) -> pb.SyncReport:
        self.host.count("SyncVpc")
        if request.router_netns not in self.host.routers:
            return pb.SyncReport(present=False)
        await self._check_epoch(request.router_netns, request.epoch, context)
        old = self.host.syncs.get(request.router_netns)
        record = RouterRecord(request.vpc_name, request.vni, syncs=old.syncs if old else 0)
        record.synced_at = old.synced_at if old else []
        record.take(request.peers, request.services, request.members)
        record.rules = rule_keys(request.rules)
        self.host.syncs[request.router_netns] = record
        return self._synced(request.router_netns, record, old.held if old else {}, request.seq, request.epoch)

    async def SyncVpcDelta(self, request: pb.VpcDelta, context: Any) -> pb.SyncReport:
        self.host.count("SyncVpcDelta")
        if request.router_netns not in self.host.routers:
            return pb.SyncReport(present=False)
        await self._check_epoch(request.router_netns, request.epoch, context)
        record = self.host.syncs.get(request.router_netns)
        if record is None or record.seq != request.base_seq:
            return pb.SyncReport(present=True, snapshot_needed=True)
        before = record.held
        for host in request.removed_peers:
            record.peers.pop(host, None)
        for name in request.removed_services:
            record.services.pop(name, None)
        record.members.difference_update(request.removed_members)
        record.rules -= rule_keys(request.removed_rules)
        record.rules |= rule_keys(request.added_rules)
        record.take(request.peers, request.services, request.members)
        return self._synced(request.router_netns, record, before, request.seq, request.epoch)

    async def SetQos(self, request: pb.QosRequest, context: Any) -> pb.InstanceReport:
        self.host.count("SetQos")
        inst = self.host.instances.get(request.instance_uid)
        if inst is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown instance {request.instance_uid}")
            raise AssertionError
        inst.endpoint["qos"] = MessageToDict(request.qos, preserving_proto_field_name=True)
        return self.host.row(inst)

    async def Flows(self, request: pb.InstanceRef, context: Any) -> pb.FlowsReply:
        return pb.FlowsReply()

    async def Logs(self, request: pb.LogsRequest, context: Any) -> pb.LogsReply:
        return pb.LogsReply(data=b"")

    async def FollowLogs(self, request: pb.LogsRequest, context: Any) -> Any:
        yield pb.LogsReply(data=b"")

    async def Exec(self, request: pb.ExecRequest, context: Any) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "a hollow host has no namespace to run commands in"
        )
        yield pb.ExecChunk()  # never reached: makes this a stream handler


async def start_host(host: HollowHost, address: str = "127.0.0.1") -> grpc.aio.Server:
    """The host's gRPC server on its own port of `address` (chosen by the kernel)."""
    server = grpc.aio.server()
    pb_grpc.add_AgentServicer_to_server(HollowServicer(host), server)
    port = server.add_insecure_port(f"{address}:0")
    await server.start()
    host.rpc = f"{address}:{port}"
    return server


async def heartbeat_loop(host: HollowHost, client: httpx.AsyncClient) -> None:
    """Register, then heartbeat every second: the same protocol as agent/server.py, also in
    what it does after an outage (register again, which makes the controller bootstrap
    and resync the host)."""
    registered = False
    registration = {
        "name": host.name,
        "underlay": host.underlay,
        "rpc": host.rpc,
        "tag": host.tag,
        "boot_id": host.boot_id,
        "mtu": host.mtu,
        "hostname": f"hollow/{os.getpid()}",
    }
    while True:
        try:
            if not registered:
                reply = await client.post("/api/v1/hosts/register", json=registration)
                reply.raise_for_status()
                registered = True
                host.registered_at.append(time.time())
                host.changed = True
            reply = await client.post(
                f"/api/v1/hosts/{host.name}/heartbeat",
                json={
                    "boot_id": host.boot_id,
                    "instances": len(host.instances),
                    "processes": host.processes_down(),
                    "vpc_syncs": host.vpc_syncs(),
                },
            )
            if reply.status_code == 404:
                registered = False
                continue
            reply.raise_for_status()
            host.beat_at = time.time()
        except httpx.HTTPError as exc:
            if registered:
                log.info("%s: controller unreachable: %s", host.name, exc)
            registered = False
        await asyncio.sleep(HEARTBEAT_SECONDS if registered else 0.2)


def write_status(path: Path, hosts: list[HollowHost]) -> None:
    """Atomically: the bench may read it at any moment."""
    data = {"pid": os.getpid(), "written_at": time.time(), "hosts": {h.name: h.status() for h in hosts}}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


async def status_loop(path: Path, hosts: list[HollowHost]) -> None:
    """Rewrite the status when something changed, and every second anyway (heartbeat
    times: beats alone do not count as changes, or the file would be rewritten non-stop)."""
    written = 0.0
    while True:
        if any(host.changed for host in hosts) or time.monotonic() - written >= STATUS_EVERY:
            for host in hosts:
                host.changed = False
            write_status(path, hosts)
            written = time.monotonic()
        await asyncio.sleep(STATUS_SECONDS)


def make_hosts(count: int, first: int, cluster: str, prefix: str, family: str) -> list[HollowHost]:
    return [
        HollowHost(f"{prefix}{i:04d}", host_tag(cluster, f"{prefix}{i:04d}"), underlay_address(i, family))
        for i in range(first, first + count)
    ]


async def run_fleet(
    hosts: list[HollowHost],
    controller: str,
    status: Path | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve every host, register and heartbeat them, until `stop` is set (or SIGTERM)."""
    servers = [await start_host(host) for host in hosts]
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    # One connection pool for the whole fleet; sized so that every host's beat gets through.
    limits = httpx.Limits(max_connections=max(10, len(hosts)), max_keepalive_connections=max(10, len(hosts)))
    # The agent's own timeout (agent/server.py): a beat that takes longer fails and the
    # host registers again, as a real host would under a slow controller.
    # On the controller's Unix socket (root's, as the hollow fleet's own controller is its
    # user's): over TCP a host reports only with its certificate, which hollow hosts lack.
    if controller.startswith("unix:"):
        transport = httpx.AsyncHTTPTransport(uds=controller.removeprefix("unix:"), limits=limits)
        client = httpx.AsyncClient(base_url="http://controller", transport=transport, timeout=5.0)
    else:
        client = httpx.AsyncClient(base_url=controller.rstrip("/"), timeout=5.0, limits=limits)
    tasks = []
    for n, host in enumerate(hosts):
        tasks.append(asyncio.create_task(heartbeat_loop(host, client), name=f"beat-{host.name}"))
        if n % 20 == 19:  # spread the beats over the second instead of all at once
            await asyncio.sleep(0.02)
    if status is not None:
        tasks.append(asyncio.create_task(status_loop(status, hosts), name="status"))
    log.info("%d hollow host(s) serving, reporting to %s", len(hosts), controller)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
        await asyncio.gather(*(server.stop(0) for server in servers))
        if status is not None:
            with contextlib.suppress(OSError):
                write_status(status, hosts)
