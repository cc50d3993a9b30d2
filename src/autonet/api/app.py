"""The controller's REST API: apply (all-or-nothing), get, delete, watch, scale, exec, logs.

Every error is JSON `{"error": "<one line>"}` with a 4xx status, so that the CLI can
print it as is. Writes go through the store's compare-and-swap transactions: an apply
either commits every object of the manifest or none.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel, Field

from autonet.agent.rpc import agent_pb2 as pb
from autonet.control import overwatch
from autonet.control.context import Context
from autonet.control.liveness import HostLiveness
from autonet.control.load import LoadTable
from autonet.control.operators.instances import process_stopped
from autonet.control.outcomes import Fail, Retry
from autonet.control.registry import PluginAPI
from autonet.control.stats import Timings
from autonet.control.vpcsync import VpcSyncer
from autonet.model import manifest, policy
from autonet.model.errors import ValidationError
from autonet.model.kinds import FAILED, INIT, LOST, PROVISIONED, TERMINATING, KindInfo
from autonet.model.objects import Object
from autonet.store import Conflict, Put

API = "/api/v1"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Documents(BaseModel):
    documents: list[dict[str, Any]]


class ScaleRequest(BaseModel):
    replicas: int = Field(ge=0, le=10_000)


class ExecBody(BaseModel):
    command: list[str] = Field(min_length=1)
    stdin: str = ""  # base64
    user: str = ""
    timeout: float = 0.0


class Registration(BaseModel):
    name: str
    underlay: str
    rpc: str
    tag: str
    capacity: int | None = None
    boot_id: str
    mtu: int = 1500
    hostname: str = ""


class ProcessEvent(BaseModel):
    instance_uid: str
    instance: str = ""
    process: str
    pid: int = 0
    last_exit: str = ""


class LoadSample(BaseModel):
    instances: list[dict[str, Any]]


class QosBody(BaseModel):
    ingress_mbps: float | None = Field(default=None, gt=0)
    egress_mbps: float | None = Field(default=None, gt=0)
    priority: str = "normal"


class Heartbeat(BaseModel):
    boot_id: str
    instances: int = 0
    processes: list[ProcessEvent] = Field(default_factory=list)  # every instance's process, each beat


def create_app(ctx: Context, plugins: PluginAPI) -> FastAPI:
    app = FastAPI(
        title="autonet",
        version="0.1.0",
        description="The autonet controller API: objects, their pipeline states, instances.",
    )
    apply_lock = asyncio.Lock()
    kinds = plugins.kinds

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(ValidationError)
    async def validation_error(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    def resolve(word: str) -> KindInfo:
        try:
            return kinds.resolve(word)
        except ValidationError as exc:
            raise ApiError(404, str(exc)) from None

    async def user_objects() -> list[Object]:
        found: list[Object] = []
        for info in kinds.all():
            found.extend(await ctx.list(info.name))
        return found

    async def decorate(objs: list[Object]) -> list[dict[str, Any]]:
        """Derived, read-only figures that a user expects next to the stored status."""
        out = []
        for obj in objs:
            data = obj.view()
            if obj.kind == "Automaton":
                # Instances on a lost host are counted apart: they are being replaced.
                mine = await ctx.by("Instance", "automaton", obj.name)
                states = Counter(i.state for i in mine)
                data["status"]["ready"] = states[PROVISIONED]
                data["status"]["instances"] = len(mine) - states[LOST]
                data["status"]["lost"] = states[LOST]
                data["status"]["failed"] = states[FAILED]
            elif obj.kind == "Host":
                data["status"]["instances"] = len(await ctx.by("Instance", "placed", obj.name))
            out.append(data)
        return out

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "revision": await ctx.store.revision(), "plugins": plugins.plugins}

    @app.get(f"{API}/stats")
    async def stats() -> dict[str, Any]:
        """Timing summaries kept in this controller's memory (control/stats.py): the
        placement decision (`placement.*`) and every handler (`handler <Kind>/<State>`);
        and how VPC syncs went (snapshots, deltas, hosts skipped, gaps repaired)."""
        return {**Timings.of(ctx).summary(), "vpc_syncs": asdict(VpcSyncer.of(ctx).counts)}

    @app.delete(f"{API}/stats")
    async def reset_stats() -> dict[str, Any]:
        """Start the timing samples afresh (a benchmark measures one phase at a time)."""
        Timings.of(ctx).reset()
        return {"reset": True}

    @app.get(f"{API}/kinds")
    async def list_kinds() -> list[dict[str, Any]]:
        return [
            {
                "kind": k.name,
                "plural": k.plural,
                "states": [s.state for s in k.pipeline],
                "done": sorted(k.done),
                "user_managed": k.user_managed,
            }
            for k in kinds.all()
        ]

    @app.post(f"{API}/apply")
    async def apply(body: Documents) -> dict[str, Any]:
        async with apply_lock:
            existing = {(o.kind, o.name): o for o in await user_objects()}
            objs = manifest.validate(body.documents, kinds, existing.values(), plugins.validators)
            ops = []
            results = []
            for obj in objs:
                old = existing.get((obj.kind, obj.name))
                first = kinds[obj.kind].first_state()
                if old is None:
                    obj.status = {"state": first, "reason": ""}
                    ops.append(Put(obj.kind, obj.name, obj.to_data(), 0))
                    action = "created"
                elif old.spec != obj.spec:
                    obj = obj.with_status(state=first, reason="")
                    ops.append(Put(obj.kind, obj.name, obj.to_data(), old.metadata.revision))
                    action = "configured"
                else:
                    action = "unchanged"
                results.append({"kind": obj.kind, "name": obj.name, "action": action})
            try:
                await ctx.store.commit(ops)
            except Conflict:
                raise ApiError(409, "a concurrent change touched these objects; apply again") from None
            return {"results": results, "revision": await ctx.store.revision()}

    async def mark_deleting(obj: Object) -> None:
        if obj.metadata.deleting:
            return
        gone = obj.model_copy(deep=True)
        gone.metadata.deleting = True
        gone.status["state"] = TERMINATING
        gone.status["reason"] = ""
        await ctx.store.commit([Put(obj.kind, obj.name, gone.to_data(), obj.metadata.revision)])

    @app.post(f"{API}/delete")
    async def delete_many(body: Documents) -> dict[str, Any]:
        results = []
        targets = []
        for index, doc in enumerate(body.documents):
            if "kind" not in doc or "name" not in doc:
                raise ApiError(422, f"document {index + 1}: kind and name are required")
            info = resolve(str(doc["kind"]))
            targets.append((info, str(doc["name"])))
        for info, name in targets:
            obj = await ctx.get(info.name, name)
            if obj is None:
                results.append({"kind": info.name, "name": name, "action": "not found"})
                continue
            await mark_deleting(obj)
            results.append({"kind": info.name, "name": name, "action": "deleting"})
        return {"results": results}

    @app.delete(API + "/objects/{kind}/{name}")
    async def delete_one(kind: str, name: str) -> dict[str, Any]:
        info = resolve(kind)
        if not info.user_managed and info.name not in ("Instance", "Host"):
            raise ApiError(422, f"{info.name} objects are managed by autonet and cannot be deleted")
        obj = await ctx.get(info.name, name)
        if obj is None:
            raise ApiError(404, f'{info.name} "{name}" not found')
        await mark_deleting(obj)
        return {"results": [{"kind": info.name, "name": name, "action": "deleting"}]}

    @app.get(API + "/objects/{kind}")
    async def list_objects(kind: str, automaton: str | None = None) -> list[dict[str, Any]]:
        """All objects of a kind; instances may be narrowed to one automaton's."""
        info = resolve(kind)
        if automaton is not None and info.name == "Instance":
            return await decorate(await ctx.by("Instance", "automaton", automaton))
        return await decorate(await ctx.list(info.name))

    @app.get(API + "/objects/{kind}/{name}")
    async def get_object(kind: str, name: str) -> dict[str, Any]:
        info = resolve(kind)
        obj = await ctx.get(info.name, name)
        if obj is None:
            raise ApiError(404, f'{info.name} "{name}" not found')
        return (await decorate([obj]))[0]

    async def automaton_index() -> dict[str, Object]:
        return {a.name: a for a in await ctx.list("Automaton") if not a.metadata.deleting}

    @app.get(API + "/policy/check")
    async def policy_check(
        source: str, target: str, port: int | None = None, transport: str | None = None
    ) -> dict[str, Any]:
        allowed, reason = policy.check(
            source, target, await ctx.list("Composition"), await automaton_index(), port, transport
        )
        return {"from": source, "to": target, "port": port, "allowed": allowed, "reason": reason}

    @app.get(API + "/compositions/{name}/matrix")
    async def composition_matrix(name: str) -> list[dict[str, Any]]:
        composition = await ctx.get("Composition", name)
        if composition is None:
            raise ApiError(404, f'Composition "{name}" not found')
        return [vars(o) for o in policy.openings([composition], await automaton_index())]

    @app.get(f"{API}/watch")
    async def watch(revision: int = 0, kind: str | None = None) -> StreamingResponse:
        kind_names = [resolve(kind).name] if kind else None

        async def stream() -> AsyncIterator[bytes]:
            async for event in ctx.store.watch(revision, kind_names):
                line = {"type": event.type, "revision": event.record.revision, "object": event.record.data}
                yield (json.dumps(line) + "\n").encode()

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @app.post(API + "/automatons/{name}/scale")
    async def scale(name: str, body: ScaleRequest) -> dict[str, Any]:
        async with apply_lock:
            obj = await ctx.get("Automaton", name)
            if obj is None or obj.metadata.deleting:
                raise ApiError(404, f'Automaton "{name}" not found')
            if obj.spec.get("replicas") != body.replicas:
                obj = obj.with_status(state=INIT, reason="")  # a copy: cached objects are shared
                obj.spec["replicas"] = body.replicas
                await ctx.store.commit([Put(obj.kind, obj.name, obj.to_data(), obj.metadata.revision)])
            return {"automaton": name, "replicas": body.replicas}

    async def placed_instance(name: str) -> Object:
        inst = await ctx.get("Instance", name)
        if inst is None:
            raise ApiError(404, f'Instance "{name}" not found')
        if not inst.status.get("host") or inst.state in ("Init", "Scheduled", "Addressed"):
            raise ApiError(409, f'Instance "{name}" is not wired yet (state {inst.state})')
        return inst

    async def agent_of(inst: Object) -> Any:
        try:
            return await ctx.agent_for(inst.status["host"])
        except (Retry, Fail) as exc:
            raise ApiError(503, str(exc)) from None

    @app.post(API + "/instances/{name}/exec")
    async def exec_in(name: str, body: ExecBody) -> StreamingResponse:
        inst = await placed_instance(name)
        agent = await agent_of(inst)
        request = pb.ExecRequest(
            instance_uid=inst.uid,
            command=body.command,
            stdin=base64.b64decode(body.stdin),
            user=body.user,
            timeout=body.timeout,
        )

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for chunk in agent.exec(request):
                    which = chunk.WhichOneof("payload")
                    if which == "exit_code":
                        line: dict[str, Any] = {"exit": chunk.exit_code}
                    else:
                        line = {which: base64.b64encode(getattr(chunk, which)).decode()}
                    yield (json.dumps(line) + "\n").encode()
            except Exception as exc:  # the stream has started: report in-band
                yield (json.dumps({"error": f"exec failed: {exc}"}) + "\n").encode()

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @app.get(API + "/instances/{name}/logs")
    async def logs(name: str, tail: int = 0, follow: bool = False) -> Response:
        if tail < 0:
            raise ApiError(422, "tail: must be >= 0")
        inst = await placed_instance(name)
        agent = await agent_of(inst)
        request = pb.LogsRequest(instance_uid=inst.uid, tail_lines=tail, follow=follow)
        if not follow:
            try:
                reply = await agent.call("Logs", request)
            except (Retry, Fail) as exc:
                raise ApiError(503, str(exc)) from None
            return PlainTextResponse(reply.data.decode(errors="replace"))
        chunks = agent.follow_logs(request)
        try:
            # The first reply comes at once: an unknown instance is still an HTTP error.
            first = await anext(chunks, b"")
        except (Retry, Fail) as exc:
            raise ApiError(503, str(exc)) from None

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield first
                async for chunk in chunks:
                    yield chunk
            except Retry:
                return  # the agent went away: end the stream as `tail -f` ends on EOF
            finally:
                await chunks.aclose()

        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")

    @app.post(f"{API}/hosts/register")
    async def register_host(body: Registration) -> dict[str, Any]:
        spec: dict[str, Any] = {"underlay": body.underlay, "rpc": body.rpc, "tag": body.tag}
        if body.capacity is not None:
            spec["capacity"] = body.capacity
        spec = kinds["Host"].validate_spec(body.name, spec)
        HostLiveness.of(ctx).beat(body.name)
        for _ in range(10):
            old = await ctx.get("Host", body.name)
            # Facts only: what the agent says of itself. A new host starts in Init; for a
            # known one, the Host operators judge (a new boot ID sends it through Init).
            host = old.model_copy(deep=True) if old else Object(kind="Host", name=body.name)
            host.spec = spec
            host.status.update(boot_id=body.boot_id, mtu=body.mtu, hostname=body.hostname)
            if old is None:
                host.status.update(state=INIT, reason="")
            try:
                await ctx.store.commit(
                    [Put("Host", body.name, host.to_data(), old.metadata.revision if old else 0)]
                )
                return {"host": body.name, "state": host.state}
            except Conflict:
                continue
        raise ApiError(409, "host registration raced; try again")

    @app.post(API + "/hosts/{name}/heartbeat")
    async def heartbeat(name: str, body: Heartbeat) -> dict[str, Any]:
        """Liveness lives in memory; the Host is written only when its boot ID changes,
        and then only that fact: the Host operators decide what follows."""
        HostLiveness.of(ctx).beat(name)
        for _ in range(10):
            host = await ctx.get("Host", name)
            if host is None:
                raise ApiError(404, f'Host "{name}" is not registered')
            if host.status.get("boot_id") == body.boot_id:
                break
            rebooted = host.with_status(boot_id=body.boot_id)
            try:
                await ctx.store.commit([Put("Host", name, rebooted.to_data(), host.metadata.revision)])
                host = rebooted
                break
            except Conflict:
                continue
        else:
            raise ApiError(409, "heartbeat raced; try again")
        for row in body.processes:
            if row.process != "running":
                await stopped(name, row)
        return {"host": name, "state": host.state}

    @app.post(API + "/hosts/{name}/load")
    async def ingest_load(name: str, body: LoadSample) -> dict[str, Any]:
        await LoadTable.of(ctx).ingest(name, body.instances)
        return {"host": name, "instances": len(body.instances)}

    @app.get(f"{API}/load")
    async def load_snapshot() -> dict[str, Any]:
        """Overwatch: the load of every instance, automaton and host (latest samples)."""
        return await LoadTable.of(ctx).snapshot(ctx)

    @app.get(f"{API}/load/stream")
    async def load_stream() -> StreamingResponse:
        """Overwatch: one snapshot per line (NDJSON), each time new samples arrive."""
        table = LoadTable.of(ctx)

        async def stream() -> AsyncIterator[bytes]:
            while True:
                async with table.updated:
                    await table.updated.wait()
                yield (json.dumps(await table.snapshot(ctx)) + "\n").encode()

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @app.put(API + "/automatons/{name}/qos")
    async def put_qos(name: str, body: QosBody) -> dict[str, Any]:
        """Overwatch: set an automaton's rate limits; its running instances are reshaped."""
        qos = body.model_dump(exclude_none=True)
        try:
            obj = await overwatch.set_qos(ctx, name, qos if len(qos) > 1 else None)
        except KeyError as exc:
            raise ApiError(404, str(exc.args[0])) from None
        return {"automaton": name, "qos": obj.spec.get("qos")}

    @app.get(API + "/instances/{name}/flows")
    async def flows(name: str) -> list[dict[str, Any]]:
        inst = await placed_instance(name)
        agent = await agent_of(inst)
        try:
            reply = await agent.call("Flows", pb.InstanceRef(instance_uid=inst.uid))
        except (Retry, Fail) as exc:
            raise ApiError(503, str(exc)) from None
        rows = [
            MessageToDict(f, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            for f in reply.flows
        ]
        for row in rows:  # 64-bit counters come as strings in protobuf's JSON mapping
            for field in ("flow_id", "tx_bytes", "tx_packets", "rx_bytes", "rx_packets"):
                row[field] = int(row[field])
        return rows

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        """Prometheus: per instance, automaton and host rates and flows; objects per state."""
        snapshot = await LoadTable.of(ctx).snapshot(ctx)
        lines = []
        for scope, label in (("instance", "instance"), ("automaton", "automaton"), ("host", "host")):
            rows = snapshot[f"{scope}s"]
            for field in ("rx_bps", "tx_bps", "rx_pps", "tx_pps", "flows"):
                metric = f"autonet_{scope}_{field}"
                lines.append(f"# TYPE {metric} gauge")
                lines += [f'{metric}{{{label}="{row[label]}"}} {row.get(field, 0)}' for row in rows]
        lines.append("# TYPE autonet_objects gauge")
        for info in kinds.all():
            counts: dict[str, int] = {}
            for obj in await ctx.list(info.name):
                counts[obj.state] = counts.get(obj.state, 0) + 1
            lines += [
                f'autonet_objects{{kind="{info.name}",state="{st}"}} {n}' for st, n in sorted(counts.items())
            ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def stopped(host: str, event: ProcessEvent) -> bool:
        why = event.last_exit or event.process
        try:
            return await process_stopped(ctx, host, event.instance_uid, event.instance, why)
        except Retry as exc:
            raise ApiError(409, exc.reason) from None

    @app.post(API + "/hosts/{name}/events")
    async def process_event(name: str, body: ProcessEvent) -> dict[str, Any]:
        """A process stopped: its instance stops serving at once and waits to be ready again."""
        if body.process == "running" or not await stopped(name, body):
            return {"action": "none"}
        return {"action": "unready", "instance": body.instance}

    return app
