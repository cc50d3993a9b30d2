"""The pipeline runner: moves every object through its kind's states.

The runner follows the controller's object cache, which lists the store and then
watches it (control/cache.py). Whenever an object changes the runner looks up
the owner of the object's (kind, state) and runs it; the outcome is written back with
compare-and-swap on the object's revision, together with any other operations the
handler asked for, in one transaction. Because every transition is in the store, a
restarted controller simply resumes: its first list finds each object where it was.

Per object, handlers run one at a time; across objects they run concurrently (bounded).
A write that loses a race (Conflict) re-reads and runs the handler again; handlers are
idempotent. Temporary errors retry with exponential backoff; permanent ones put the
object in `Failed` with the reason.

Faults. A handler that runs longer than ``handler_timeout`` (a hung agent call, say) is
cancelled and retried like any temporary error, with the timeout as the object's
reason, so no object is held forever. Backoff has jitter (each delay is drawn between
half and all of the exponential step, capped at ``BACKOFF_MAX``), so objects that fail
together do not all retry in the same instant. If the watch breaks — its history was
compacted (``Compacted``), the store failed, or it simply ended — the cache lists
everything again (announcing every object to the runner) and watches from the revision
it read before that list, after a short backoff; only cancellation stops it. Nothing
is missed: a change made meanwhile is either in the list or after its revision.

Several controllers (control/shards.py). The runner handles only objects of the shards
its controller owns and may act on (`ctx.shards`): a change of another's object is not
even queued, and an object whose shard went away meanwhile is dropped when its turn
comes. Each handler runs between `shards.enter` and `shards.leave` (a handover waits for
the handlers in flight, and cancels them after a grace period), with its shard's guards
in `ACTING_GUARDS`, so every write it makes is fenced. When the controller gains a shard
(or acts again after a pause), every object of it is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

from autonet.control.cache import ACTING_GUARDS
from autonet.control.context import Context
from autonet.control.outcomes import Advance, Fail, Outcome, Remove, Retry, Stay
from autonet.control.registry import Operator, PluginAPI
from autonet.model.kinds import FAILED
from autonet.model.objects import Object
from autonet.store import Conflict, Delete, Put, StoreError

log = logging.getLogger(__name__)

Key = tuple[str, str]

BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
# Longer than one agent RPC (30 s, control/agents.py) so that a handler may make a call
# that times out by itself and still report that error rather than this one.
HANDLER_TIMEOUT = 60.0


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """The delay before retry number ``attempt`` (from 0): exponential, capped at
    BACKOFF_MAX, drawn uniformly from the upper half of that step ("equal jitter").

    The lower half is left out so that a retry still waits at least half its step: full
    jitter would sometimes retry a failing agent at once, hammering it."""
    # (The exponent is capped: an object retried for days would overflow the float.)
    step = min(BACKOFF_START * 2 ** min(attempt, 32), BACKOFF_MAX)
    return rng.uniform(step / 2, step)


class Runner:
    def __init__(
        self,
        ctx: Context,
        api: PluginAPI,
        concurrency: int = 64,
        handler_timeout: float = HANDLER_TIMEOUT,
    ) -> None:
        if handler_timeout <= 0:
            raise ValueError(f"handler timeout must be > 0 s, not {handler_timeout}")
        self.ctx = ctx
        self.api = api
        self.handler_timeout = handler_timeout
        self._rng = random.Random()
        self._limit = asyncio.Semaphore(concurrency)
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._attempts: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._task_of: dict[Key, asyncio.Task[None]] = {}
        self._shard_of_running: dict[Key, str] = {}  # keys whose handler runs -> its shard
        self.transitions = 0
        self._stopped = False
        self.timings = ctx.timings  # per-handler durations, for GET /api/v1/stats
        # Objects being handled or waiting for a slot: 0 when the controller is idle.
        self.timings.gauge("runner.active", lambda: len(self._active))

    async def run(self) -> None:
        """Follow the object cache (cancel to stop): it announces every object when it
        loads or reloads the store and every change after that (control/cache.py)."""
        kinds = {kind.name for kind in self.api.kinds.all()}
        cache, shards = self.ctx.cache, self.ctx.shards

        def changed(kind: str, name: str) -> None:
            if kind not in kinds:
                return
            if shards is not None:
                obj = cache.get(kind, name)
                if obj is not None and not shards.may_handle(obj):
                    return  # another controller's (or not now: queued again when it is)
            self.enqueue((kind, name))

        def gained(gained_shards: set[str], keys: set[Key]) -> None:
            assert shards is not None
            for key in keys:
                if key[0] in kinds:
                    self.enqueue(key)
            if not gained_shards:
                return
            for kind in kinds:
                for obj in cache.list(kind):
                    if shards.acting_shard(obj) in gained_shards:
                        self.enqueue((kind, obj.name))

        def cancel(shard: str) -> None:
            for key, running in list(self._shard_of_running.items()):
                task = self._task_of.get(key)
                if running == shard and task is not None:
                    task.cancel()

        if shards is not None:
            shards.subscribe_gained(gained)
            shards.subscribe_cancel(cancel)
        cache.subscribe(changed)
        await cache.run()

    def enqueue(self, key: Key, delay: float = 0.0) -> None:
        if self._stopped:
            return
        if delay > 0:
            if key not in self._timers:
                loop = asyncio.get_running_loop()
                self._timers[key] = loop.call_later(delay, self._fire, key)
            return
        if key in self._active:
            self._dirty.add(key)
            return
        self._active.add(key)
        task = asyncio.get_running_loop().create_task(self._process(key))
        self._tasks.add(task)
        self._task_of[key] = task
        task.add_done_callback(self._tasks.discard)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    async def _process(self, key: Key) -> None:
        try:
            while True:
                self._dirty.discard(key)
                async with self._limit:
                    await self._step(key)
                if key not in self._dirty:
                    break
        finally:
            self._active.discard(key)
            self._task_of.pop(key, None)

    async def _step(self, key: Key) -> None:
        kind, name = key
        try:
            obj = await self.ctx.get(kind, name)
        except StoreError as exc:
            log.warning("%s/%s: cannot read it: %s (retrying)", kind, name, exc)
            self.enqueue(key, self._backoff(key))
            return
        if obj is None:
            self._attempts.pop(key, None)
            return
        operator = self.api.owner(kind, obj.state)
        if operator is None:
            self._attempts.pop(key, None)
            return
        shards = self.ctx.shards
        if shards is None:
            await self._handle(key, obj, operator)
            return
        entry = shards.enter(obj)
        if entry is None:  # not this controller's (now): whoever owns it handles it
            self._attempts.pop(key, None)
            return
        shard, guards = entry
        token = ACTING_GUARDS.set(guards)
        self._shard_of_running[key] = shard
        try:
            await self._handle(key, obj, operator)
        finally:
            self._shard_of_running.pop(key, None)
            ACTING_GUARDS.reset(token)
            shards.leave(shard)

    async def _handle(self, key: Key, obj: Object, operator: Operator) -> None:
        """Run the object's handler and write its outcome; schedule what comes next."""
        deadline = asyncio.timeout(self.handler_timeout)
        try:
            async with deadline:
                with self.timings.timed(f"handler {obj.kind}/{obj.state}"):
                    outcome = await operator(obj, self.ctx)
            await self._apply(obj, outcome)
            self._attempts.pop(key, None)
        except Conflict:
            # Lost a race: re-read and run again at once; if it keeps losing (e.g. a
            # lease someone else holds), back off instead of spinning.
            if key in self._attempts:
                self.enqueue(key, self._backoff(key))
            else:
                self._attempts[key] = 0
                self._dirty.add(key)
        except Retry as retry:
            self.enqueue(key, retry.delay if retry.delay is not None else self._backoff(key))
            await self._note_reason(obj, retry.reason)
        except Fail as failure:
            log.info("%s failed: %s", obj.ref, failure.reason)
            with contextlib.suppress(Conflict):
                await self._write(obj.with_status(state=FAILED, reason=failure.reason), [])
        except TimeoutError as exc:
            self.enqueue(key, self._backoff(key))
            if deadline.expired():
                reason = f"{operator.name}: timed out after {self.handler_timeout:g} s (retrying)"
                log.warning("%s: handler %s", obj.ref, reason)
                await self._note_reason(obj, reason)
            else:  # the handler's own timeout (a socket's, say): temporary, like any OSError
                log.warning("%s: %s (retrying)", obj.ref, exc or "timed out")
        except (StoreError, OSError) as exc:
            log.warning("%s: %s (retrying)", obj.ref, exc)
            self.enqueue(key, self._backoff(key))
        except Exception as exc:
            log.exception("%s: handler %s crashed", obj.ref, operator.name)
            self.enqueue(key, self._backoff(key))
            await self._note_reason(obj, f"{operator.name}: {type(exc).__name__}: {exc}")

    def _backoff(self, key: Key) -> float:
        attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        return backoff_delay(attempt, self._rng)

    async def _note_reason(self, obj: Object, reason: str) -> None:
        """Show why the object waits; best effort, as its retry is scheduled already."""
        if obj.status.get("reason") != reason:
            try:
                await self._write(obj.with_status(reason=reason), [])
            except Conflict:
                pass  # it changed meanwhile: the retry reads the new one
            except StoreError as exc:
                log.warning("%s: cannot record the reason %r: %s", obj.ref, reason, exc)

    async def _write(self, obj: Object, also: Sequence[Any]) -> None:
        ops = [Put(obj.kind, obj.name, obj.to_data(), obj.metadata.revision), *also]
        await self.ctx.store.commit(ops)

    async def _apply(self, obj: Object, outcome: Outcome) -> None:
        info = self.api.kinds[obj.kind]
        if isinstance(outcome, Remove):
            await self.ctx.store.commit([Delete(obj.kind, obj.name, obj.metadata.revision), *outcome.also])
            self.transitions += 1
            await self._after(obj, outcome.after)
            return
        if isinstance(outcome, Stay):
            if any(obj.status.get(k) != v for k, v in outcome.status.items()):
                await self._write(obj.with_status(**outcome.status), [])
            if outcome.recheck_after is not None:
                self.enqueue((obj.kind, obj.name), outcome.recheck_after)
            return
        state = info.next_state(obj) if isinstance(outcome, Advance) else outcome.state
        status = {"reason": "", **outcome.status, "state": state}
        await self._write(obj.with_status(**status), outcome.also)
        self.transitions += 1
        await self._after(obj, outcome.after)

    async def _after(self, obj: Object, hook: Any) -> None:
        if hook is None:
            return
        try:
            await hook()
        except Exception as exc:
            log.warning("%s: after-commit step failed: %s (the periodic resync repairs it)", obj.ref, exc)

    async def stop(self) -> None:
        self._stopped = True
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
