"""Operator registration: module-level handlers collected by an OperatorSet, one owner per state."""

from __future__ import annotations

import importlib

import pytest

from autonet.control import builtin
from autonet.control.context import Context
from autonet.control.outcomes import Advance, Outcome
from autonet.control.registry import OperatorSet, PluginAPI, load_plugins
from autonet.model.objects import Object

operators = OperatorSet()


@operators.handles("Widget", "Init")
async def paint(obj: Object, ctx: Context) -> Outcome:
    return Advance()


@operators.handles("Widget", "Painted")
async def dry(obj: Object, ctx: Context) -> Outcome:
    return Advance()


def test_a_module_level_handler_is_collected_under_its_own_name() -> None:
    api = PluginAPI()
    api.add_operators(operators)
    owner = api.owner("Widget", "Init")
    assert owner is not None and owner.handler is paint
    assert owner.name == f"{__name__}.paint"  # what a timed-out handler's reason names
    assert [o.name for o in operators] == [f"{__name__}.paint", f"{__name__}.dry"]


def test_every_builtin_operator_is_a_module_level_function() -> None:
    """A reader (and a tool) can follow a state to its handler: `module.function`."""
    api = load_plugins(PluginAPI(), only=["builtin"])
    assert api.operators, "the built-in plugin registers operators"
    modules = {module.__name__ for module in builtin.OPERATOR_MODULES}
    for (kind, state), operator in api.operators.items():
        module = importlib.import_module(operator.handler.__module__)
        assert getattr(module, operator.handler.__qualname__) is operator.handler, (kind, state)
        assert operator.handler.__module__ in modules
    owner = api.owner("Instance", "Init")
    assert owner is not None and owner.name == "autonet.control.operators.instances.schedule"


def test_a_second_owner_in_one_set_is_refused() -> None:
    found = OperatorSet()

    @found.handles("Widget", "Init")
    async def first(obj: Object, ctx: Context) -> Outcome:
        return Advance()

    with pytest.raises(ValueError, match=r"state Widget/Init already has an owner: .*first"):

        @found.handles("Widget", "Init")
        async def second(obj: Object, ctx: Context) -> Outcome:
            return Advance()


def test_a_second_owner_across_plugins_is_refused_and_none_of_its_set_is_taken() -> None:
    api = PluginAPI()

    @api.operator("Widget", "Painted")  # another plugin owns this state already
    async def varnish(obj: Object, ctx: Context) -> Outcome:
        return Advance()

    with pytest.raises(ValueError, match=r"state Widget/Painted already has an owner: .*varnish"):
        api.add_operators(operators)
    assert api.owner("Widget", "Init") is None  # all or nothing
    owner = api.owner("Widget", "Painted")
    assert owner is not None and owner.handler is varnish


def test_the_decorator_refuses_a_state_a_set_already_owns() -> None:
    api = PluginAPI()
    api.add_operators(operators)
    with pytest.raises(ValueError, match="already has an owner"):

        @api.operator("Widget", "Init")
        async def again(obj: Object, ctx: Context) -> Outcome:
            return Advance()

    with pytest.raises(ValueError, match="already has an owner"):
        api.add_operators(operators)  # the same set twice
