"""Manifests: YAML documents -> validated objects, all-or-nothing.

`parse` turns a file's text into documents; `validate` checks every document and then
the whole set against what the store already holds (references, containment,
overlaps, protocol compatibility, immutable fields). The first problem found is
raised as one ValidationError line; nothing is returned unless everything is valid,
which is what makes `apply` all-or-nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from autonet.model.addressing import service_ranges
from autonet.model.errors import ValidationError, shown
from autonet.model.kinds import KindRegistry, check_name
from autonet.model.objects import Object


def parse(text: str) -> list[dict[str, Any]]:
    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or exc
        raise ValidationError(f"manifest is not valid YAML{where}: {_one_line(problem)}") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # a scalar YAML could not build
        raise ValidationError(f"manifest is not valid YAML: {_one_line(exc)}") from None
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ValidationError(f"document {index + 1}: expected a mapping with kind, name, spec")
    return docs


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


@dataclass
class View:
    """The objects a batch is checked against: the store's, overlaid with the batch's."""

    objects: dict[tuple[str, str], Object] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> Object | None:
        return self.objects.get((kind, name))

    def of_kind(self, kind: str) -> list[Object]:
        return [obj for (k, _), obj in sorted(self.objects.items()) if k == kind]


Check = Callable[[Object, View], None]


def overlay(base: list[dict[str, Any]], changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`base` with `changes` laid over it: a change with a document's kind and name
    replaces it, the others are appended (e.g. an example manifest, extended)."""
    changed = {(doc.get("kind"), doc.get("name")) for doc in changes}
    return [doc for doc in base if (doc.get("kind"), doc.get("name")) not in changed] + changes


def validate(
    docs: Iterable[dict[str, Any]],
    kinds: KindRegistry,
    existing: Iterable[Object],
    extra_checks: Iterable[Check] = (),
) -> list[Object]:
    """Validated objects for `docs` (new ones, or updates of existing ones)."""
    current = {(obj.kind, obj.name): obj for obj in existing}
    batch: list[Object] = []
    seen: set[tuple[str, str]] = set()
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ValidationError(f"document {index + 1}: expected a mapping with kind, name, spec")
        unknown = set(doc) - {"kind", "name", "spec", "metadata", "status"}
        if unknown:
            raise ValidationError(
                f"document {index + 1}: unknown field(s) {', '.join(sorted(map(shown, unknown)))}"
            )
        if "kind" not in doc:
            raise ValidationError(f"document {index + 1}: kind: required")
        info = kinds.resolve(str(doc["kind"]))
        if not info.user_managed:
            raise ValidationError(f"{info.name} objects are managed by autonet and cannot be applied")
        name = check_name(info.name, doc.get("name"))
        if (info.name, name) in seen:
            raise ValidationError(f'{info.name} "{name}": duplicate name in this manifest')
        seen.add((info.name, name))
        spec = info.validate_spec(name, doc.get("spec"))
        old = current.get((info.name, name))
        if old is not None:
            if old.metadata.deleting:
                raise ValidationError(f'{info.name} "{name}": is being deleted; apply again when it is gone')
            for field_name in info.immutable:
                if old.spec.get(field_name) != spec.get(field_name):
                    raise ValidationError(
                        f'{info.name} "{name}": spec.{field_name}: cannot be changed '
                        f"(delete and re-create the {info.name.lower()})"
                    )
            obj = old.model_copy(update={"spec": spec}, deep=True)
        else:
            obj = Object(kind=info.name, name=name, spec=spec)
        batch.append(obj)

    view = View(dict(current))
    for obj in batch:
        view.objects[(obj.kind, obj.name)] = obj
    checks: list[Check] = [*BUILTIN_CHECKS, *extra_checks]
    for obj in batch:
        for check in checks:
            check(obj, view)
    return batch


def _require(view: View, obj: Object, kind: str, name: str, field_name: str) -> Object:
    target = view.get(kind, name)
    if target is None or target.metadata.deleting:
        raise ValidationError(f'{obj.kind} "{obj.name}": {field_name}: unknown {kind.lower()} "{name}"')
    return target


def _networks(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr) for cidr in cidrs]


def check_vpc(obj: Object, view: View) -> None:
    if obj.kind != "Vpc":
        return
    nets = _networks(obj.spec["cidrs"])
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            if a.version == b.version and a.overlaps(b):
                raise ValidationError(f'Vpc "{obj.name}": spec.cidrs: {a} overlaps {b}')
    for service in _networks(service_ranges(obj.spec)):
        if not any(service.version == n.version and service.subnet_of(n) for n in nets):  # type: ignore[arg-type]
            raise ValidationError(
                f'Vpc "{obj.name}": spec.service_cidrs: {service} is outside the VPC\'s cidrs'
            )
    vni = obj.spec.get("vni")
    if vni is not None:
        for other in view.of_kind("Vpc"):
            if other.name != obj.name and vni in (other.spec.get("vni"), other.status.get("vni")):
                raise ValidationError(
                    f'Vpc "{obj.name}": spec.vni: {vni} is already used by Vpc "{other.name}"'
                )


def check_network(obj: Object, view: View) -> None:
    if obj.kind != "Network":
        return
    vpc = _require(view, obj, "Vpc", obj.spec["vpc"], "spec.vpc")
    vpc_nets = _networks(vpc.spec["cidrs"])
    mine = _networks(obj.spec["cidrs"])
    families = [net.version for net in mine]
    if len(set(families)) != len(families):
        raise ValidationError(f'Network "{obj.name}": spec.cidrs: at most one IPv4 and one IPv6 CIDR')
    for net in mine:
        if not any(net.version == outer.version and net.subnet_of(outer) for outer in vpc_nets):  # type: ignore[arg-type]
            raise ValidationError(
                f'Network "{obj.name}": spec.cidrs: {net} is outside Vpc "{vpc.name}" '
                f"({', '.join(vpc.spec['cidrs'])})"
            )
    for service in _networks(service_ranges(vpc.spec)):
        for net in mine:
            if net.version == service.version and net.overlaps(service):
                raise ValidationError(
                    f'Network "{obj.name}": spec.cidrs: {net} overlaps the service range {service} '
                    f'of Vpc "{vpc.name}" (set spec.service_cidrs on the Vpc to move it)'
                )
    for other in view.of_kind("Network"):
        if other.name == obj.name or other.spec["vpc"] != obj.spec["vpc"]:
            continue
        for net in mine:
            for theirs in _networks(other.spec["cidrs"]):
                if net.version == theirs.version and net.overlaps(theirs):
                    raise ValidationError(
                        f'Network "{obj.name}": spec.cidrs: {net} overlaps {theirs} '
                        f'of Network "{other.name}" in Vpc "{vpc.name}"'
                    )


def check_automaton(obj: Object, view: View) -> None:
    if obj.kind != "Automaton":
        return
    _require(view, obj, "Network", obj.spec["network"], "spec.network")
    seen: set[tuple[str, int]] = set()
    for provide in obj.spec.get("provides", []):
        key = (provide["transport"], provide["port"])
        if key in seen:
            raise ValidationError(
                f'Automaton "{obj.name}": spec.provides: {provide["transport"]} port '
                f"{provide['port']} is declared twice"
            )
        seen.add(key)


def check_composition(obj: Object, view: View) -> None:
    if obj.kind != "Composition":
        return
    for index, link in enumerate(obj.spec.get("links", [])):
        where = f"spec.links[{index}]"
        source = _require(view, obj, "Automaton", link["from"], f"{where}.from")
        target = _require(view, obj, "Automaton", link["to"], f"{where}.to")
        protocol = link["protocol"]
        provided = {p["protocol"] for p in target.spec.get("provides", [])}
        if protocol not in provided:
            raise ValidationError(
                f'Composition "{obj.name}": {where}: "{target.name}" does not provide '
                f'protocol "{protocol}" that "{source.name}" would use'
            )
        if protocol not in source.spec.get("consumes", []):
            raise ValidationError(
                f'Composition "{obj.name}": {where}: "{source.name}" does not consume '
                f'protocol "{protocol}" that "{target.name}" provides'
            )
        source_vpc = _vpc_of(view, source)
        target_vpc = _vpc_of(view, target)
        if source_vpc != target_vpc:
            raise ValidationError(
                f'Composition "{obj.name}": {where}: "{source.name}" (Vpc "{source_vpc}") and '
                f'"{target.name}" (Vpc "{target_vpc}") are in different VPCs'
            )


def _vpc_of(view: View, automaton: Object) -> str | None:
    network = view.get("Network", automaton.spec["network"])
    return None if network is None else str(network.spec["vpc"])


BUILTIN_CHECKS: list[Check] = [check_vpc, check_network, check_automaton, check_composition]
