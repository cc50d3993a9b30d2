"""The public extension API: kinds, operators, pipeline stages, validators.

Operators are module-level functions, collected by a module's `OperatorSet` as the
module is imported (the way kopf collects its handlers), and taken in by a plugin's
`setup`:

    # my_plugin/operators.py
    from autonet.control.registry import OperatorSet

    operators = OperatorSet()

    @operators.handles("L2Agent", "Init")
    async def start_ovs(obj: Object, ctx: Context) -> Outcome: ...

    # my_plugin/__init__.py
    def setup(api: PluginAPI) -> None:
        api.add_kind(KindInfo("L2Agent", "l2agents", L2AgentSpec, [Stage("Init"), ...]))
        api.add_operators(operators)
        api.insert_stage("Instance", "L2AgentReady", after="Wired", when=on_ovs_network)

`@api.operator(kind, state)` registers one handler directly (for a handler that needs
state of the plugin's `setup`). A plugin is an entry point in the group
`autonet.plugins` naming such a `setup`. The built-in kinds and operators are
registered by `autonet.control.builtin` through this very API. One state has one
owner: registering a second handler for the same (kind, state), in one set or across
plugins, is an error, so two plugins cannot silently fight over an object.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from autonet.model.kinds import KindInfo, KindRegistry
from autonet.model.manifest import Check
from autonet.model.objects import Object

if TYPE_CHECKING:
    from autonet.control.context import Context
    from autonet.control.outcomes import Outcome

log = logging.getLogger(__name__)

GROUP = "autonet.plugins"

Handler = Callable[[Object, "Context"], Awaitable["Outcome"]]


@dataclass
class Operator:
    kind: str
    state: str
    handler: Handler
    name: str

    @classmethod
    def of(cls, kind: str, state: str, handler: Handler) -> Operator:
        """The operator `handler`, named after its module and function."""
        return cls(kind, state, handler, f"{handler.__module__}.{handler.__qualname__}")

    async def __call__(self, obj: Object, ctx: Context) -> Outcome:
        return await self.handler(obj, ctx)


def claim(owners: dict[tuple[str, str], Operator], operator: Operator) -> None:
    """Record `operator` as the owner of its (kind, state); a second owner is an error."""
    key = (operator.kind, operator.state)
    if key in owners:
        raise ValueError(f"state {operator.kind}/{operator.state} already has an owner: {owners[key].name}")
    owners[key] = operator


@dataclass
class OperatorSet:
    """The operators of one module, collected by its decorators at import time."""

    owners: dict[tuple[str, str], Operator] = field(default_factory=dict)

    def handles(self, kind: str, state: str) -> Callable[[Handler], Handler]:
        """Decorator: the module-level `handler(obj, ctx)` owns objects of `kind` in `state`."""

        def collect(handler: Handler) -> Handler:
            claim(self.owners, Operator.of(kind, state, handler))
            return handler

        return collect

    def __iter__(self) -> Iterator[Operator]:
        return iter(list(self.owners.values()))


@dataclass
class PluginAPI:
    kinds: KindRegistry = field(default_factory=KindRegistry)
    operators: dict[tuple[str, str], Operator] = field(default_factory=dict)
    validators: list[Check] = field(default_factory=list)
    background: list[Callable[[Context], Coroutine[Any, Any, None]]] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)

    def add_kind(self, kind: KindInfo) -> None:
        self.kinds.add(kind)

    def operator(self, kind: str, state: str) -> Callable[[Handler], Handler]:
        """Decorator: `handler(obj, ctx)` owns objects of `kind` in `state`."""
        return OperatorSet(self.operators).handles(kind, state)  # claims in this API's owners

    def add_operators(self, operators: Iterable[Operator]) -> None:
        """Take in operators collected elsewhere (a module's `OperatorSet`): all of them,
        or, if one of their states already has an owner, none."""
        owners = dict(self.operators)
        for operator in operators:
            claim(owners, operator)
        self.operators.update(owners)

    def insert_stage(
        self, kind: str, state: str, after: str, when: Callable[[Object], bool] | None = None
    ) -> None:
        """Add `state` to `kind`'s pipeline right after `after` (for objects `when` accepts)."""
        self.kinds[kind].insert_stage(state, after, when)

    def extend_spec(self, kind: str, name: str, annotation: Any, default: Any = None) -> None:
        """Add a field to a kind's spec (e.g. `l2` on Network); unknown to the core."""
        self.kinds[kind].extend_spec(name, annotation, default)

    def extend_status(self, kind: str, name: str, annotation: Any) -> None:
        """Declare a key a plugin writes in a kind's status (e.g. `l2_port` on Instance):
        writes of undeclared keys are refused (model/status.py)."""
        self.kinds[kind].extend_status(name, annotation)

    def validator(self, check: Check) -> Check:
        """Decorator: an extra apply-time check `check(obj, view)` raising ValidationError."""
        self.validators.append(check)
        return check

    def run_in_background(self, loop: Callable[[Context], Coroutine[Any, Any, None]]) -> None:
        """A coroutine the controller runs for its lifetime (e.g. a periodic resync)."""
        self.background.append(loop)

    def owner(self, kind: str, state: str) -> Operator | None:
        return self.operators.get((kind, state))


def load_plugins(api: PluginAPI, only: list[str] | None = None) -> PluginAPI:
    """Run the `setup` of every installed plugin (the built-in one first)."""
    found = sorted(entry_points(group=GROUP), key=lambda e: (e.name != "builtin", e.name))
    for entry in found:
        if only is not None and entry.name not in only:
            continue
        setup: Any = entry.load()
        setup(api)
        api.plugins.append(entry.name)
        log.info("plugin %s loaded", entry.name)
    return api
