"""The pipeline runner and the plugin API, on a real SQLite store."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path

import pytest
from pydantic import BaseModel

from autonet.control.context import Context
from autonet.control.outcomes import Advance, Fail, Outcome, Remove, Retry
from autonet.control.registry import PluginAPI, load_plugins
from autonet.control.runner import BACKOFF_MAX, BACKOFF_START, HANDLER_TIMEOUT, Runner, backoff_delay
from autonet.model.kinds import KindInfo, Stage
from autonet.model.objects import Object
from autonet.store import Compacted, Event, Put, Store, StoreError
from autonet.store.sqlite import SqliteStore


class WidgetSpec(BaseModel):
    size: int = 1


def widget_kind() -> KindInfo:
    return KindInfo(
        "Widget", "widgets", WidgetSpec, [Stage(s) for s in ("Init", "Cut", "Painted", "Provisioned")]
    )


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


async def run(
    store: Store, api: PluginAPI, handler_timeout: float = HANDLER_TIMEOUT
) -> tuple[Runner, asyncio.Task[None]]:
    runner = Runner(Context(store=store, kinds=api.kinds), api, handler_timeout=handler_timeout)
    return runner, asyncio.create_task(runner.run())


def widget_pipeline() -> PluginAPI:
    """Widgets whose every stage simply advances, up to Provisioned."""
    api = PluginAPI()
    api.add_kind(widget_kind())
    for state in ("Init", "Cut", "Painted"):

        @api.operator("Widget", state)
        async def step(obj: Object, ctx: Context) -> Outcome:
            return Advance()

    return api


def reaches(store: Store, name: str, state: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        record = await store.get("Widget", name)
        return record is not None and record.data["status"]["state"] == state

    return check


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
    assert owned == {
        "Init", "Scheduled", "Addressed", "Wired", "Routed", "Running", "Provisioned", "Terminating"
    }  # fmt: skip
    assert {state for (kind, state) in api.operators if kind == "Host"} == {
        "Init", "Connected", "Ready", "Lost", "Terminating"
    }  # fmt: skip


async def test_commit_of_outcome_is_all_or_nothing(store: Store) -> None:
    api = PluginAPI()
    api.add_kind(widget_kind())

    calls = 0

    @api.operator("Widget", "Init")
    async def lease(obj: Object, ctx: Context) -> Outcome:
        nonlocal calls
        calls += 1
        # The lease already exists (held by someone else): the transition must not happen.
        return Advance(status={"lease": "x"}, also=[Put("Lease", "x", {"owner": obj.name}, 0)])

    await store.put("Lease", "x", {"owner": "other"}, 0)
    await put_widget(store, "w")
    runner, task = await run(store, api)

    async def committed_and_lost() -> bool:
        # A second run happens only once the first outcome's commit has been tried and
        # refused (a lost compare-and-swap is re-read and run again).
        return calls >= 2

    await until(committed_and_lost)
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


async def test_a_hanging_handler_times_out_shows_why_and_is_retried_until_it_completes(store: Store) -> None:
    api = PluginAPI()
    api.add_kind(widget_kind())
    hanging = True
    calls = 0

    @api.operator("Widget", "Init")
    async def cut(obj: Object, ctx: Context) -> Outcome:
        nonlocal calls
        calls += 1
        if hanging:
            await asyncio.Event().wait()  # like an agent call that never answers
        return Advance()

    await put_widget(store, "w")
    runner, task = await run(store, api, handler_timeout=0.1)

    async def timed_out() -> bool:
        return "timed out" in (await state_of(store, "w"))[1]

    await until(timed_out)
    operator = api.owner("Widget", "Init")
    assert operator is not None
    assert await state_of(store, "w") == ("Init", f"{operator.name}: timed out after 0.1 s (retrying)")

    async def retried() -> bool:
        return calls >= 3

    await until(retried)  # the object is not held by the call that hangs
    hanging = False
    await until(reaches(store, "w", "Cut"))
    await stop(runner, task)
    assert await state_of(store, "w") == ("Cut", "")


def test_backoff_grows_to_its_cap_and_each_delay_is_jittered_within_its_step() -> None:
    rng = random.Random(11)
    for attempt in (*range(12), 100, 10_000):
        step = min(BACKOFF_START * 2 ** min(attempt, 32), BACKOFF_MAX)
        delays = [backoff_delay(attempt, rng) for _ in range(100)]
        assert all(step / 2 <= delay <= step <= BACKOFF_MAX for delay in delays), attempt
        assert len(set(delays)) > 50, attempt
    assert BACKOFF_MAX / 2 <= backoff_delay(10_000, rng) <= BACKOFF_MAX


async def test_objects_failing_together_do_not_retry_in_lockstep(store: Store) -> None:
    api = widget_pipeline()
    runner = Runner(Context(store=store, kinds=api.kinds), api)
    first = [runner._backoff(("Widget", f"w{i}")) for i in range(100)]
    assert all(BACKOFF_START / 2 <= delay <= BACKOFF_START for delay in first)
    assert len(set(first)) > 50
    again = [runner._backoff(("Widget", f"w{i}")) for i in range(100)]
    assert all(BACKOFF_START <= delay <= 2 * BACKOFF_START for delay in again)  # attempt 1 of each


class SabotagedStore(SqliteStore):
    """A real SQLite store that records how its watches end, and can break the next ones."""

    def __init__(self, path: Path, history: int = 100_000) -> None:
        super().__init__(path, history=history)
        self.watches = 0
        self.broken: list[StoreError] = []
        self.sabotage: list[StoreError | None] = []  # per next watch: raise this, or (None) end

    async def watch(self, from_revision: int, kinds: Collection[str] | None = None) -> AsyncIterator[Event]:
        self.watches += 1
        if self.sabotage:
            failure = self.sabotage.pop(0)
            if failure is not None:
                raise failure
            return
        try:
            async for event in super().watch(from_revision, kinds):
                yield event
        except StoreError as exc:
            self.broken.append(exc)
            raise


async def test_a_compacted_watch_is_resumed_by_listing_again(tmp_path: Path) -> None:
    store = SabotagedStore(tmp_path / "store.db", history=5)
    try:
        api = widget_pipeline()
        await put_widget(store, "before")
        runner, task = await run(store, api)
        await until(reaches(store, "before", "Provisioned"))
        assert store.watches == 1 and not store.broken  # 4 revisions fit in the history
        # Writes of a kind the runner does not watch, several times the history, while it
        # waits: a commit never yields to the loop, so it cannot read them in between.
        for i in range(20):
            await store.put("Other", f"o{i}", {"n": i})

        async def resumed() -> bool:
            return store.watches >= 2

        await until(resumed)
        assert isinstance(store.broken[0], Compacted)
        await put_widget(store, "after")
        await until(reaches(store, "after", "Provisioned"))
        assert not task.done()
        await stop(runner, task)
    finally:
        await store.close()


@pytest.mark.parametrize("failure", [StoreError("connection reset by peer"), None], ids=["fails", "ends"])
async def test_a_broken_or_ended_watch_is_resumed_by_listing_again(
    tmp_path: Path, failure: StoreError | None
) -> None:
    store = SabotagedStore(tmp_path / "store.db")
    try:
        store.sabotage = [failure, failure]
        runner, task = await run(store, widget_pipeline())

        def watched(count: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return store.watches >= count

            return check

        await until(watched(1))  # the first list is done and its watch broke
        # Written behind the controller's back (not through its context): only a relist
        # after a broken watch, or the working third watch, can bring it.
        await put_widget(store, "w")
        await until(reaches(store, "w", "Provisioned"))
        await until(watched(3))
        assert store.watches == 3 and not task.done()
        await stop(runner, task)
    finally:
        await store.close()


def test_the_controller_flag_defaults_to_the_runners_handler_timeout() -> None:
    import inspect

    from autonet.cli.main import controller

    assert inspect.signature(controller).parameters["handler_timeout"].default == HANDLER_TIMEOUT
