"""Manifest parsing fuzzed with hypothesis: random YAML text, random documents and random
field values never raise anything but the one-line ValidationError, and an invalid
multi-document manifest changes nothing in the store (apply is all-or-nothing)."""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from autonet.api import auth
from autonet.api.app import create_app
from autonet.control.context import Context
from autonet.control.registry import PluginAPI, load_plugins
from autonet.model.errors import ValidationError
from autonet.model.kinds import KindRegistry, builtin_kinds
from autonet.model.manifest import parse, validate
from autonet.store import open_store
from tests.unit.test_api import API, SHOP

KINDS = KindRegistry(builtin_kinds())
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(
        ["100.80.0.0/16", "fd00::/8", "0.0.0.0/0", "::/0", "100.80.1.1/33", "tcp", "udp", "http"]
    ),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
KIND_NAMES = st.one_of(
    st.sampled_from(["Vpc", "Network", "Automaton", "Composition", "Host", "Instance"]), VALUES
)


def one_line(exc: ValidationError) -> None:
    text = str(exc)
    assert text and "\n" not in text, repr(text)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document a value could be replaced."""
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*path, index))
    return found


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc[path[0]] = _replace(doc[path[0]], path[1:], value)
    return doc


@st.composite
def mutated_shop(draw: st.DrawFn) -> list[Any]:
    """The shop manifest with a few of its values (anywhere, keys kept) made random."""
    docs = copy.deepcopy(SHOP)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(docs) - 1))
        path = draw(st.sampled_from(_paths(docs[index])))
        docs[index] = _replace(docs[index], path, draw(VALUES))
    return docs


def check_validate(docs: Any) -> None:
    try:
        validate(docs, KINDS, existing=[])
    except ValidationError as exc:
        one_line(exc)


def check_text(text: str) -> None:
    """A manifest's text through parse and validate, as `autonet apply -f` reads it."""
    try:
        check_validate(parse(text))
    except ValidationError as exc:
        one_line(exc)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_random_text_is_yaml_or_one_line_error(text: str) -> None:
    check_text(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUES, max_size=4))
def test_random_yaml_documents_are_valid_or_one_line_errors(docs: list[Any]) -> None:
    check_text(yaml.safe_dump_all(docs))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.fixed_dictionaries({"kind": KIND_NAMES, "name": VALUES, "spec": VALUES}), max_size=4))
def test_random_kinds_names_and_specs(docs: list[Any]) -> None:
    check_validate(docs)


@settings(max_examples=1500, deadline=None)
@given(mutated_shop())
def test_random_field_values_in_a_real_manifest(docs: list[Any]) -> None:
    check_validate(docs)
    try:
        text = yaml.safe_dump_all(docs)
    except yaml.YAMLError:
        return
    check_text(text)  # and the same through YAML text


async def _apply_twice(first: list[Any], second: list[Any]) -> tuple[list[Any], int, int, list[Any], Any]:
    """Apply `first` to an empty store, then `second`: (objects, revision) around it."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'store.db'}")
        try:
            plugins = load_plugins(PluginAPI(), only=["builtin"])
            app = create_app(Context(store=store, kinds=plugins.kinds), plugins)
            transport = httpx.ASGITransport(app=auth.local(app))  # as root on the Unix socket
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                ok = await client.post(f"{API}/apply", json={"documents": first})
                assert ok.status_code == 200, ok.text
                before, revision = await store.list(), await store.revision()
                reply = await client.post(f"{API}/apply", json={"documents": second})
                after, revision_after = await store.list(), await store.revision()
                return [r.data for r in before], revision, revision_after, [r.data for r in after], reply
        finally:
            await store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_shop())
def test_an_invalid_manifest_changes_nothing_through_the_api(docs: list[Any]) -> None:
    """Valid documents beside an invalid one are not applied either: 422, one line, and the
    store's objects and revision are what they were."""
    try:
        json.dumps(docs, allow_nan=False)
    except ValueError:
        assume(False)  # not JSON: cannot be sent to the API at all
    base = [SHOP[0]]  # the VPC exists already; the batch would add the rest and change it
    before, revision, revision_after, after, reply = asyncio.run(_apply_twice(base, docs))
    if reply.status_code == 200:
        return
    assert reply.status_code == 422, reply.text
    # (a document that is not even a mapping is refused by the request's schema first)
    error = reply.json().get("error")
    assert error is None or (error and "\n" not in error), error
    assert revision_after == revision and after == before


def test_a_bad_last_document_leaves_the_first_ones_unapplied() -> None:
    bad = {
        "kind": "Composition",
        "name": "bad",
        "spec": {"links": [{"from": "client", "to": "web", "protocol": "ftp"}]},
    }
    before, revision, revision_after, after, reply = asyncio.run(_apply_twice([SHOP[0]], [*SHOP[1:], bad]))
    assert reply.status_code == 422 and "does not provide" in reply.json()["error"]
    assert revision_after == revision and after == before and len(after) == 1
