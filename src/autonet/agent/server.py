"""The agent daemon: gRPC server, registration and heartbeats to the controller.

`autonet agent` runs `serve()`: it reconciles the host from its instance table, starts
the gRPC server on the host's underlay address, and registers the host with the
controller's API, then heartbeats; every second it rotates the instance logs grown
past the cap. With several controllers (`--controller URL,URL,...`) it registers with and
heartbeats to each of them, sends its load samples to each, and its process events to
one that answers. The agent works without the controller (its instances keep running and
are repaired); the controller drives it through RPC.

With `tls` (agent/rpc/tls.py) the gRPC port is mutual TLS and only controller
certificates may call any method of any service on it, plugins' included; the files
are loaded again at the first handshake after they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf.json_format import MessageToDict

from autonet.agent import logs, vpcdelta
from autonet.agent.host import HostAgent
from autonet.agent.plugins import AgentPluginAPI
from autonet.agent.plugins import load as load_plugins
from autonet.agent.routers import OVERLAY_REREAD
from autonet.agent.rpc import agent_pb2 as pb
from autonet.agent.rpc import agent_pb2_grpc as pb_grpc
from autonet.agent.rpc.tls import TlsFiles, secure_server
from autonet.agent.state import DEFAULT_UID_RANGE, InstanceRecord, UidsExhausted
from autonet.agent.supervisor import agent_path_env
from autonet.agent.warmpool import DEFAULT_SIZE as DEFAULT_POOL
from autonet.dataplane import containers
from autonet.dataplane.cgroups import CgroupError
from autonet.dataplane.nsexec import launcher_argv
from autonet.model.kinds import valid_image

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
EXEC_CHUNK = 64 * 1024
LOGS_CHUNK = 64 * 1024
LOGS_REPLY_LIMIT = 3 * 1024 * 1024  # a Logs reply stays under gRPC's default 4 MiB per message
FOLLOW_POLL = 0.2  # seconds between looks at a followed log
LOG_ROTATE_SECONDS = 1.0


def _report(row: dict[str, Any]) -> pb.InstanceReport:
    return pb.InstanceReport(**row)


async def abort_sync(context: Any, exc: Exception) -> None:
    """A VPC sync refused: from an older owner (stale epoch), or malformed."""
    stale = isinstance(exc, vpcdelta.StaleEpoch)
    code = grpc.StatusCode.FAILED_PRECONDITION if stale else grpc.StatusCode.INVALID_ARGUMENT
    await context.abort(code, str(exc))


class AgentServicer(pb_grpc.AgentServicer):
    def __init__(self, agent: HostAgent) -> None:
        self.agent = agent

    def _row(self, uid: str) -> pb.InstanceReport:
        for row in self.agent.report(uid):
            return _report(row)
        return pb.InstanceReport(instance_uid=uid, deleted=True)

    def _host_report(self, only: str = "") -> pb.HostReport:
        return pb.HostReport(
            host=self.agent.host,
            boot_id=self.agent.boot_id,
            instances=[_report(row) for row in self.agent.report(only)],
            routers=sorted(self.agent.table.routers()),
        )

    async def Bootstrap(self, request: pb.BootstrapRequest, context: Any) -> pb.HostReport:
        self.agent.flow_ids.reset(request.index)
        return self._host_report()

    async def SetQos(self, request: pb.QosRequest, context: Any) -> pb.InstanceReport:
        qos = MessageToDict(request.qos, preserving_proto_field_name=True)
        try:
            await self.agent.set_qos(request.instance_uid, qos)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        return self._row(request.instance_uid)

    async def Flows(self, request: pb.InstanceRef, context: Any) -> pb.FlowsReply:
        try:
            rows = await self.agent.flows(request.instance_uid)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
            raise
        return pb.FlowsReply(flows=[pb.Flow(**row) for row in rows])

    async def Report(self, request: pb.ReportRequest, context: Any) -> pb.HostReport:
        return self._host_report(request.instance_uid)

    async def EnsureEndpoint(self, request: pb.Endpoint, context: Any) -> pb.InstanceReport:
        endpoint: dict[str, Any] = {
            field: getattr(request, field)
            for field in (
                "vpc_uid",
                "netns",
                "router_netns",
                "router_ifname",
                "mac",
                "router_mac",
                "ipv4",
                "ipv6",
                "mtu",
                "resolv_conf",
                "adopt_netns",
            )
        }
        endpoint["qos"] = MessageToDict(request.qos, preserving_proto_field_name=True)
        try:
            await self.agent.ensure_endpoint(request.instance_uid, request.instance_name, endpoint)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return self._row(request.instance_uid)

    async def EnsureProcess(self, request: pb.Process, context: Any) -> pb.InstanceReport:
        process: dict[str, Any] = {
            "command": list(request.command),
            # Root only when asked by name; anything else is the instance's own uid.
            "user": "root" if request.user == "root" else "",
            "env": dict(request.env),
        }
        if request.image:
            if not valid_image(request.image):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"image {request.image!r} is not a local image reference",
                )
            process["image"] = request.image
        if request.HasField("resources"):
            process["resources"] = MessageToDict(request.resources, preserving_proto_field_name=True)
        try:
            await self.agent.ensure_process(request.instance_uid, process)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc.args[0]))
        except CgroupError as exc:  # a limit this host cannot enforce: the caller must change it
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"resources: {exc}")
        return self._row(request.instance_uid)

    async def SyncVpc(self, request: pb.VpcState, context: Any) -> pb.SyncReport:
        desired = MessageToDict(request, preserving_proto_field_name=True)
        desired.setdefault("peers", [])
        desired.setdefault("rules", [])
        desired.setdefault("members", [])
        try:
            present, added, removed = await self.agent.sync_vpc(request.router_netns, desired)
        except (vpcdelta.StaleEpoch, ValueError) as exc:
            await abort_sync(context, exc)
            raise
        return pb.SyncReport(present=present, added=added, removed=removed, seq=request.seq)

    async def SyncVpcDelta(self, request: pb.VpcDelta, context: Any) -> pb.SyncReport:
        delta = MessageToDict(request, preserving_proto_field_name=True)
        try:
            present, added, removed, seq = await self.agent.sync_vpc_delta(request.router_netns, delta)
        except (vpcdelta.StaleEpoch, ValueError) as exc:
            await abort_sync(context, exc)
            raise
        if seq < 0:
            return pb.SyncReport(present=present, snapshot_needed=True)
        return pb.SyncReport(present=present, added=added, removed=removed, seq=seq)

    async def DeleteInstance(self, request: pb.InstanceRef, context: Any) -> pb.InstanceReport:
        await self.agent.delete_instance(request.instance_uid)
        return pb.InstanceReport(instance_uid=request.instance_uid, deleted=True)

    async def _record(self, uid: str, context: Any) -> InstanceRecord:
        record = self.agent.table.get(uid)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such instance on this host")
        assert record is not None
        return record

    async def Logs(self, request: pb.LogsRequest, context: Any) -> pb.LogsReply:
        record = await self._record(request.instance_uid, context)
        path = self.agent.log_path(record.name)
        return pb.LogsReply(data=logs.tail(path, request.tail_lines, LOGS_REPLY_LIMIT))

    async def FollowLogs(self, request: pb.LogsRequest, context: Any) -> Any:
        record = await self._record(request.instance_uid, context)
        path = self.agent.log_path(record.name)
        follower = logs.Follower(path)
        try:
            backlog = logs.tail(path, request.tail_lines, end=follower.offset)
            # At least one reply, even empty: the caller learns that the instance is there.
            yield pb.LogsReply(data=backlog[:LOGS_CHUNK])
            for start in range(LOGS_CHUNK, len(backlog), LOGS_CHUNK):
                yield pb.LogsReply(data=backlog[start : start + LOGS_CHUNK])
            del backlog
            while request.follow and self.agent.table.get(record.uid) is not None:
                data = follower.read(LOGS_CHUNK)
                if data:
                    yield pb.LogsReply(data=data)
                if len(data) < LOGS_CHUNK:
                    await asyncio.sleep(FOLLOW_POLL)
        finally:
            follower.close()

    async def Exec(self, request: pb.ExecRequest, context: Any) -> Any:
        if request.user:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "exec runs as the instance's own user: `user` is refused"
            )
        record = await self._record(request.instance_uid, context)
        try:  # as the instance's own user, inside its cgroup: what its process can do, no more
            user = self.agent.run_as(record)
            cgroups = self.agent.instance_cgroup(record)
        except (CgroupError, UidsExhausted) as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise
        env = dict((record.process or {}).get("env") or {})
        env.update(request.env)
        if (record.process or {}).get("image"):  # into its container, which has the rest of env
            argv = containers.exec_argv(
                containers.container_name(record.uid), list(request.command), user, dict(request.env)
            )
            env = {}
        else:
            argv = launcher_argv(
                record.netns, list(request.command), user, str(self.agent.resolv_path(record.uid)), cgroups
            )
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=agent_path_env(env),
            start_new_session=True,
        )
        queue: asyncio.Queue[pb.ExecChunk | None] = asyncio.Queue()

        async def pump(stream: asyncio.StreamReader | None, field: str) -> None:
            assert stream is not None
            while chunk := await stream.read(EXEC_CHUNK):
                await queue.put(
                    pb.ExecChunk(stdout=chunk) if field == "stdout" else pb.ExecChunk(stderr=chunk)
                )
            await queue.put(None)

        async def feed() -> None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if request.stdin:
                    proc.stdin.write(request.stdin)
                    await proc.stdin.drain()
                proc.stdin.close()

        tasks = [
            asyncio.create_task(pump(proc.stdout, "stdout")),
            asyncio.create_task(pump(proc.stderr, "stderr")),
            asyncio.create_task(feed()),
        ]
        try:
            open_streams = 2
            while open_streams:
                item = await queue.get()
                if item is None:
                    open_streams -= 1
                else:
                    yield item
            code = await asyncio.wait_for(proc.wait(), request.timeout or None)
            yield pb.ExecChunk(exit_code=code if code >= 0 else 128 - code)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            for task in tasks:
                task.cancel()


async def underlay_mtu(agent: HostAgent, address: str) -> int:
    """MTU of the interface holding our underlay address (1500 if it cannot be told)."""
    ipr = await agent.nl.host()
    async for msg in await ipr.get_addr():
        if msg.get_attr("IFA_ADDRESS") == address:
            async for link in await ipr.get_links(msg["index"]):
                return int(link.get_attr("IFLA_MTU"))
    return 1500


def tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """The agent's certificate (CN = its host name) and key, and the cluster CA: over
    https the agent proves with them which host it is, and checks the controller's."""
    context = ssl.create_default_context(cafile=str(tls.ca))
    context.load_cert_chain(str(tls.cert), str(tls.key))
    return context


def controller_client(controller: str, tls: TlsFiles | None = None) -> httpx.AsyncClient:
    """One HTTP client to the controller's API (`unix:/path` or a URL), for every loop.
    Over TCP the controller takes a host's reports only from that host's certificate:
    `tls` (an https URL) presents it."""
    if controller.startswith("unix:"):
        transport = httpx.AsyncHTTPTransport(uds=controller.removeprefix("unix:"))
        return httpx.AsyncClient(base_url="http://controller", transport=transport, timeout=5.0)
    verify: ssl.SSLContext | bool = tls_context(tls) if tls is not None else True
    return httpx.AsyncClient(base_url=controller.rstrip("/"), timeout=5.0, verify=verify)


def controller_urls(controller: str | None) -> list[str]:
    """`--controller A,B,...`: every controller of the cluster (any of them takes any request)."""
    return [url.strip() for url in (controller or "").split(",") if url.strip()]


async def event_loop(agent: HostAgent, clients: list[httpx.AsyncClient]) -> None:
    """Forward process state changes to a controller as they happen: the one that took the
    last event, else the next one (any controller records them in the store)."""
    current = 0
    while True:
        event = await agent.events.get()
        for attempt in range(5):
            client = clients[current]
            try:
                reply = await client.post(f"/api/v1/hosts/{agent.host}/events", json=event)
                if reply.status_code < 500 and reply.status_code != 409:  # 409: lost a race, again
                    break
            except httpx.HTTPError as exc:
                log.warning(
                    "cannot report %s to the controller at %s: %s",
                    event,
                    client.base_url,
                    str(exc) or type(exc).__name__,  # httpx's timeouts have no message
                )
                current = (current + 1) % len(clients)
            await asyncio.sleep(0.2 * (attempt + 1))


LOAD_SECONDS = 2.0


class AgentMetrics:
    """Prometheus collector over the agent's latest load sample (served on --metrics)."""

    def __init__(self, agent: HostAgent) -> None:
        self.agent = agent
        self.latest: list[dict[str, Any]] = []

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        for field in ("rx_bps", "tx_bps", "rx_pps", "tx_pps", "flows"):
            family = GaugeMetricFamily(
                f"autonet_instance_{field}", f"instance {field}", labels=["instance", "host"]
            )
            for row in self.latest:
                family.add_metric([row["instance"], self.agent.host], row.get(field, 0))
            yield family
        instances = GaugeMetricFamily("autonet_host_instances", "instances on this host", labels=["host"])
        instances.add_metric([self.agent.host], len(self.agent.table.records))
        yield instances


def serve_metrics(metrics: AgentMetrics, address: str) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(metrics)
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]"), registry=registry)


async def load_loop(agent: HostAgent, clients: list[httpx.AsyncClient], metrics: AgentMetrics) -> None:
    """Sample the instances' counters, keep them for /metrics, post them to every controller
    (each keeps load in memory)."""
    while True:
        await asyncio.sleep(LOAD_SECONDS)
        try:
            metrics.latest = await agent.sample_load()
        except Exception as exc:  # a router going away mid-sample: try again next round
            log.debug("load sample failed: %s", exc)
            continue
        for client in clients:
            with contextlib.suppress(httpx.HTTPError):
                await client.post(f"/api/v1/hosts/{agent.host}/load", json={"instances": metrics.latest})


async def log_loop(agent: HostAgent) -> None:
    """Keep every instance log under the cap (see agent/logs.py)."""
    while True:
        await asyncio.sleep(LOG_ROTATE_SECONDS)
        agent.rotate_logs()


async def repair_loop(agent: HostAgent) -> None:
    """Repair kernel drift in the overlays on our own, with no call from the controller."""
    while True:
        await asyncio.sleep(OVERLAY_REREAD)
        try:
            await agent.repair_overlays()
        except Exception as exc:  # a bad moment for one router must not end the loop
            log.warning("overlay repair failed: %s: %s", type(exc).__name__, exc)


async def heartbeat_loop(agent: HostAgent, client: httpx.AsyncClient, registration: dict[str, Any]) -> None:
    registered = False
    while True:
        try:
            if not registered:
                reply = await client.post("/api/v1/hosts/register", json=registration)
                reply.raise_for_status()
                registered = True
                log.info("registered with the controller at %s", client.base_url)
            reply = await client.post(
                f"/api/v1/hosts/{agent.host}/heartbeat",
                json={
                    "boot_id": agent.boot_id,
                    "instances": len(agent.table.records),
                    # Level-triggered: a lost process event is corrected by the next beat.
                    "processes": agent.processes_down(),
                    "vpc_syncs": agent.vpc_syncs(),
                },
            )
            if reply.status_code == 404:
                registered = False
                continue
            reply.raise_for_status()
        except httpx.HTTPError as exc:
            if registered:
                log.warning(
                    "controller unreachable at %s: %s", client.base_url, str(exc) or type(exc).__name__
                )
            registered = False
        # Until registered, knock often: the controller may be starting next to us.
        await asyncio.sleep(HEARTBEAT_SECONDS if registered else 0.2)


async def serve(
    host: str,
    cluster: str,
    listen: str,
    underlay: str,
    state_dir: Path,
    controller: str | None,
    capacity: int | None = None,
    metrics_address: str | None = None,
    log_max_bytes: int = logs.DEFAULT_MAX_BYTES,
    warm_pool: int = DEFAULT_POOL,
    uid_range: tuple[int, int] = DEFAULT_UID_RANGE,
    tls: TlsFiles | None = None,
) -> None:
    """`tls`: this host's agent certificate, its key and the CA (None: plaintext, which the
    CLI allows on loopback or with --insecure only). The same files are the agent's client
    identity towards the controller's API."""
    from autonet.model.naming import host_tag

    tag = host_tag(cluster, host)
    agent = HostAgent(host, tag, state_dir, log_max_bytes, warm_pool, uid_range)
    done = await agent.reconcile()
    log.info("agent %s (tag %s) reconciled: %s", host, tag, done)
    agent.pool.start()

    plugin_api = AgentPluginAPI(host=host, state_dir=str(state_dir), host_agent=agent)
    plugins = load_plugins(plugin_api)

    server, credentials = secure_server(tls)
    pb_grpc.add_AgentServicer_to_server(AgentServicer(agent), server)
    for register in plugin_api.services:
        register(server)
    if credentials is None:
        server.add_insecure_port(listen)
    else:
        server.add_secure_port(listen, credentials.credentials)
    await server.start()
    for hook in plugin_api.start_hooks:
        await hook()
    log.info(
        "agent %s serving gRPC on %s (%s; plugins: %s)",
        host,
        listen,
        "plaintext"
        if credentials is None
        else f"mutual TLS, controllers only, serial {credentials.serial:x}",
        plugins or "none",
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = AgentMetrics(agent)
    if metrics_address:
        serve_metrics(metrics, metrics_address)
    # Several controllers: each one hears the registration and every heartbeat (liveness is
    # kept in each controller's memory, and any of them may judge a host).
    clients = [controller_client(url, tls) for url in controller_urls(controller)]
    tasks = [
        asyncio.create_task(load_loop(agent, clients, metrics)),
        asyncio.create_task(log_loop(agent)),
        asyncio.create_task(repair_loop(agent)),
    ]
    if clients:
        registration = {
            "name": host,
            "underlay": underlay,
            "rpc": listen,
            "tag": tag,
            "capacity": capacity,
            "boot_id": agent.boot_id,
            "mtu": await underlay_mtu(agent, underlay),
            "hostname": socket.gethostname(),
        }
        tasks += [asyncio.create_task(heartbeat_loop(agent, c, registration)) for c in clients]
        tasks.append(asyncio.create_task(event_loop(agent, clients)))
    await stop.wait()
    for task in tasks:
        task.cancel()
    for client in clients:
        await client.aclose()
    for hook in plugin_api.stop_hooks:
        await hook()
    await server.stop(1.0)
    await agent.close()
