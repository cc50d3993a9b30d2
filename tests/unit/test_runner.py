"""The pipeline runner and the plugin API, on a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from autonet.control.context import Context
from autonet.control.outcomes import Advance, Fail, Outcome, Remove, Retry
from autonet.control.registry import PluginAPI, load_plugins
from autonet.control.runner import Runner
from autonet.model.kinds import KindInfo, Stage
from autonet.model.objects import Object
from autonet.store import Put, Store, open_store


class WidgetSpec(BaseModel):
    size: int = 1


def widget_kind() -> KindInfo:
    return KindInfo(
        "Widget", "widgets", WidgetSpec, [Stage(s) for s in ("Init", "Cut", "Painted", "Provisioned")]
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    await s.close()


async def put_widget(store: Store, name: str, state: str = "Init") -> None:
    obj = Object(kind="Widget", name=name, spec={"size": 1}, status={"state": state})
    await store.put("Widget", name, obj.to_data(), 0)


async def state_of(store: Store, name: str) -> tuple[str, str]:
    record = await store.get("Widget", name)
    assert record is not None
    return record.data["status"]["state"], record.data["status"].get("reason", "")


async def until(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def run(store: Store, api: PluginAPI) -> tuple[Runner, asyncio.Task[None]]:
    runner = Runner(Context(store=store, kinds=api.kinds), api)
    return runner, asyncio.create_task(runner.run())


async def stop(runner: Runner, task: asyncio.Task[None]) -> None:
    await runner.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_objects_walk_the_pipeline_and_every_transition_is_stored(store: Store) -> None:
    api = PluginAPI()
    api.add_kind(widget_kind())
    for state in ("Init", "Cut", "Painted"):

        @api.operator("Widget", state)
        async def step(obj: Object, ctx: Context) -> Outcome:
            return Advance(status={"seen_" + obj.state.lower(): True})

    start = await store.revision()
    await put_widget(store, "w1")
    runner, task = await run(store, api)

    async def provisioned() -> bool:
        return (await state_of(store, "w1"))[0] == "Provisioned"

    await until(provisioned)
    await stop(runner, task)
    states = []
    async for event in store.watch(start):
        states.append(event.record.data["status"]["state"])
        if states[-1] == "Provisioned":
            break
    assert states == ["Init", "Cut", "Painted", "Provisioned"]
    record = await store.get("Widget", "w1")
    assert record is not None
    assert {"seen_init", "seen_cut", "seen_painted"} <= set(record.data["status"])


async def test_retry_shows_the_reason_then_succeeds_and_fail_records_it(store: Store) -> None:
    api = PluginAPI()
    api.add_kind(widget_kind())
    attempts: dict[str, int] = {}

    @api.operator("Widget", "Init")
    async def flaky(obj: Object, ctx: Context) -> Outcome:
        attempts[obj.name] = attempts.get(obj.name, 0) + 1
        if obj.name == "doomed":
            raise Fail("the saw is broken")
        if attempts[obj.name] < 3:
            raise Retry("waiting for wood", delay=0.05)
        return Advance()

    await put_widget(store, "ok")
    await put_widget(store, "doomed")
    runner, task = await run(store, api)

    async def settled() -> bool:
        return (await state_of(store, "ok"))[0] == "Cut" and (await state_of(store, "doomed"))[0] == "Failed"

    await until(settled)
    await stop(runner, task)
    assert attempts["ok"] == 3
    assert await state_of(store, "doomed") == ("Failed", "the saw is broken")


async def test_a_restarted_runner_resumes_where_the_store_says(store: Store) -> None:
    api = PluginAPI()
    api.add_kind(widget_kind())
    calls: list[str] = []
    gate = asyncio.Event()

    @api.operator("Widget", "Init")
    async def cut(obj: Object, ctx: Context) -> Outcome:
        calls.append("cut")
        return Advance()

    @api.operator("Widget", "Cut")
    async def paint(obj: Object, ctx: Context) -> Outcome:
        calls.append("paint")
        await gate.wait()  # the first controller "dies" here
        return Advance()

    await put_widget(store, "w")
    runner, task = await run(store, api)

    async def painting() -> bool:
        return "paint" in calls

    await until(painting)
    await stop(runner, task)
    assert await state_of(store, "w") == ("Cut", "")
    gate.set()
    calls.clear()
    runner, task = await run(store, api)

    async def painted() -> bool:
        return (await state_of(store, "w"))[0] == "Painted"

    await until(painted)
    await stop(runner, task)
    assert calls == ["paint"]  # the cut was not redone


async def test_lost_race_rereads_and_retries(store: Store) -> None:
    api = PluginAPI()
    api.add_kind(widget_kind())
    runs = 0

    @api.operator("Widget", "Init")
    async def racy(obj: Object, ctx: Context) -> Outcome:
        nonlocal runs
        runs += 1
        if runs == 1:  # someone else writes the object meanwhile
            other = obj.with_status(note="touched")
            await ctx.store.put("Widget", obj.name, other.to_data(), obj.metadata.revision)
        return Advance(status={"runs": runs})

    await put_widget(store, "w")
    runner, task = await run(store, api)

    async def cut() -> bool:
        return (await state_of(store, "w"))[0] == "Cut"

    await until(cut)
    await stop(runner, task)
    record = await store.get("Widget", "w")
    assert record is not None
    assert record.data["status"]["note"] == "touched" and record.data["status"]["runs"] == 2


async def test_remove_deletes_atomically_with_other_operations(store: Store) -> None:
    api = PluginAPI()
    api.add_kind(widget_kind())

    @api.operator("Widget", "Terminating")
    async def scrap(obj: Object, ctx: Context) -> Outcome:
        from autonet.store import Delete

        return Remove(also=[Delete("Lease", f"for/{obj.name}")])

    await store.put("Lease", "for/w", {"kind": "Lease", "name": "for/w"}, 0)
    await put_widget(store, "w", state="Terminating")
    runner, task = await run(store, api)

    async def gone() -> bool:
        return await store.get("Widget", "w") is None

    await until(gone)
    await stop(runner, task)
    assert await store.get("Lease", "for/w") is None


def test_one_state_has_one_owner() -> None:
    api = PluginAPI()
    api.add_kind(widget_kind())

    @api.operator("Widget", "Init")
    async def first(obj: Object, ctx: Context) -> Outcome:
        return Advance()

    with pytest.raises(ValueError, match="already has an owner"):

        @api.operator("Widget", "Init")
        async def second(obj: Object, ctx: Context) -> Outcome:
            return Advance()


def test_builtin_operators_register_through_the_plugin_entry_point() -> None:
    api = load_plugins(PluginAPI(), only=["builtin"])
    assert api.plugins[0] == "builtin"
    assert {k.name for k in api.kinds.all()} >= {
        "Host",
        "Vpc",
        "Network",
        "Automaton",
        "Composition",
        "Instance",
    }
    owned = {state for (kind, state) in api.operators if kind == "Instance"}
    assert owned == {"Init", "Scheduled", "Addressed", "Wired", "Routed", "Running", "Terminating"}


async def test_commit_of_outcome_is_all_or_nothing(store: Store) -> None:
    api = PluginAPI()
    api.add_kind(widget_kind())

    @api.operator("Widget", "Init")
    async def lease(obj: Object, ctx: Context) -> Outcome:
        # The lease already exists (held by someone else): the transition must not happen.
        return Advance(status={"lease": "x"}, also=[Put("Lease", "x", {"owner": obj.name}, 0)])

    await store.put("Lease", "x", {"owner": "other"}, 0)
    await put_widget(store, "w")
    runner, task = await run(store, api)
    await asyncio.sleep(0.3)
    await stop(runner, task)
    assert (await state_of(store, "w"))[0] == "Init"
    lease_record = await store.get("Lease", "x")
    assert lease_record is not None and lease_record.data["owner"] == "other"


def test_without_the_l2_plugin_the_core_knows_nothing_of_it() -> None:
    from autonet.model.errors import ValidationError

    core = load_plugins(PluginAPI(), only=["builtin"])
    assert "L2Agent" not in core.kinds
    assert "L2AgentReady" not in [s.state for s in core.kinds["Instance"].pipeline]
    with pytest.raises(ValidationError, match=r"spec\.l2: unknown field"):
        core.kinds["Network"].validate_spec("n", {"vpc": "v", "cidrs": ["100.64.1.0/24"], "l2": "ovs"})
    full = load_plugins(PluginAPI())
    if "l2ovs" in full.plugins:  # installed by `make`: it extends the same kinds, from outside
        assert (
            full.kinds["Network"].validate_spec("n", {"vpc": "v", "cidrs": ["100.64.1.0/24"], "l2": "ovs"})[
                "l2"
            ]
            == "ovs"
        )
