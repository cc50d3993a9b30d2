"""The composition graph as Graphviz DOT, and its rendering by Graphviz's `dot`.

Nodes are automatons, labelled with their instance count per host; edges are the links
of the compositions, labelled `protocol transport/port`; VPCs and their networks are
nested clusters. What needs a look is marked: an automaton with failed instances or
fewer provisioned than its replicas (orange, red when none is provisioned), a link that
is not open (dashed red: its composition failed, or one end is missing), a host that
is not Ready (its instance counts say so).

`build_dot` is pure: it reads the objects as the API shows them (kind plural -> list of
`{kind, name, spec, status}`), so `autonet graph` and the dashboard draw the same graph.
`render` runs `dot` (Debian package `graphviz`) for SVG and PNG.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from autonet.model.kinds import FAILED, PROVISIONED, READY

KIND_NAMES = (
    ("Vpc", "vpcs"),
    ("Network", "networks"),
    ("Automaton", "automatons"),
    ("Instance", "instances"),
    ("Composition", "compositions"),
    ("Host", "hosts"),
)
KINDS = tuple(plural for _, plural in KIND_NAMES)
DOT = "dot"
RENDER_TIMEOUT = 60.0


class GraphError(Exception):
    """The graph cannot be rendered; `str()` is one line for the user."""


OK_COLOUR = "black"
DEGRADED_COLOUR = "darkorange"
BROKEN_COLOUR = "red"

Objects = dict[str, list[dict[str, Any]]]


def quote(text: object) -> str:
    """A DOT string literal (every name and label goes through here)."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _state(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("state") or "")


def _automaton_label(
    automaton: dict[str, Any], instances: list[dict[str, Any]], host_states: dict[str, str]
) -> tuple[str, str]:
    """The automaton's label (name, its image if any, provisioned/replicas, count per
    host) and its colour."""
    name = automaton["name"]
    replicas = int((automaton.get("spec") or {}).get("replicas", 0) or 0)
    provisioned = [i for i in instances if _state(i) == PROVISIONED]
    failed = [i for i in instances if _state(i) == FAILED]
    per_host = Counter(str((i.get("status") or {}).get("host") or "?") for i in provisioned)
    spec = automaton.get("spec") or {}
    lines = [name, f"{len(provisioned)}/{replicas} provisioned"]
    if spec.get("image"):  # what runs: a container image, or containers a runtime attached
        lines.insert(1, f"image {spec['image']}")
    elif spec.get("external"):
        lines.insert(1, "attached (CNI)")
    for host, count in sorted(per_host.items()):
        down = "" if host_states.get(host, READY) == READY else f" ({host_states[host]})"
        lines.append(f"{host}: {count}{down}")
    if failed:
        lines.append(f"{len(failed)} failed")
    if replicas and not provisioned:
        colour = BROKEN_COLOUR
    elif failed or len(provisioned) < replicas or any(host_states.get(h, READY) != READY for h in per_host):
        colour = DEGRADED_COLOUR
    else:
        colour = OK_COLOUR
    return "\n".join(lines), colour


def _provided_ports(automaton: dict[str, Any] | None, protocol: str) -> list[str]:
    provides = ((automaton or {}).get("spec") or {}).get("provides") or []
    return [f"{p.get('transport', 'tcp')}/{p.get('port')}" for p in provides if p.get("protocol") == protocol]


def _node_id(automaton: str) -> str:
    return quote(f"automaton/{automaton}")


def _edges(objects: Objects, automatons: dict[str, dict[str, Any]]) -> Iterable[str]:
    for composition in sorted(objects.get("compositions", []), key=lambda c: c["name"]):
        failed = _state(composition) == FAILED
        for link in (composition.get("spec") or {}).get("links") or []:
            source, target, protocol = link.get("from"), link.get("to"), str(link.get("protocol", ""))
            ports = ", ".join(_provided_ports(automatons.get(target), protocol))
            label = f"{protocol} {ports}".strip()
            missing = [name for name in (source, target) if name not in automatons]
            style = ""
            if failed or missing:
                why = "failed" if failed else "missing " + ", ".join(map(str, missing))
                label += f"\n({composition['name']}: {why})"
                style = f", style=dashed, color={BROKEN_COLOUR}, fontcolor={BROKEN_COLOUR}"
            yield f"  {_node_id(str(source))} -> {_node_id(str(target))} [label={quote(label)}{style}];"


def build_dot(objects: Objects) -> str:
    """The composition graph of the API's objects (kind plural -> list) as DOT text."""
    automatons = {a["name"]: a for a in objects.get("automatons", [])}
    instances: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for instance in objects.get("instances", []):
        instances[str((instance.get("spec") or {}).get("automaton"))].append(instance)
    host_states = {h["name"]: _state(h) for h in objects.get("hosts", [])}
    networks = {n["name"]: n for n in objects.get("networks", [])}
    by_network: dict[str, list[str]] = defaultdict(list)
    for name, automaton in sorted(automatons.items()):
        by_network[str((automaton.get("spec") or {}).get("network"))].append(name)
    by_vpc: dict[str, list[str]] = defaultdict(list)
    for name, network_obj in sorted(networks.items()):
        by_vpc[str((network_obj.get("spec") or {}).get("vpc"))].append(name)
    vpcs = {v["name"]: v for v in objects.get("vpcs", [])}

    lines = [
        "digraph autonet {",
        '  graph [rankdir=LR, fontname="Helvetica", compound=true];',
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]

    def automaton_nodes(names: list[str], indent: str) -> None:
        for name in names:
            label, colour = _automaton_label(automatons[name], instances.get(name, []), host_states)
            lines.append(
                f"{indent}{_node_id(name)} [label={quote(label)}, color={colour}, fontcolor={colour}];"
            )

    for vpc in sorted(set(vpcs) | set(by_vpc)):
        cidrs = ", ".join((vpcs.get(vpc, {}).get("spec") or {}).get("cidrs") or [])
        lines.append(f"  subgraph {quote('cluster_vpc/' + vpc)} {{")
        lines.append(f"    label={quote(f'VPC {vpc}' + (f' ({cidrs})' if cidrs else ''))}; style=bold;")
        for network in by_vpc.get(vpc, []):
            net_cidrs = ", ".join((networks[network].get("spec") or {}).get("cidrs") or [])
            lines.append(f"    subgraph {quote('cluster_network/' + network)} {{")
            lines.append(
                f"      label={quote(f'network {network}' + (f' ({net_cidrs})' if net_cidrs else ''))};"
            )
            lines.append("      style=dashed;")
            automaton_nodes(by_network.get(network, []), "      ")
            lines.append("    }")
        lines.append("  }")
    placed = {name for network in networks for name in by_network.get(network, [])}
    automaton_nodes(sorted(set(automatons) - placed), "  ")
    lines.extend(_edges(objects, automatons))
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, fmt: str) -> bytes:
    """DOT text rendered by Graphviz's `dot` as `fmt` (svg or png)."""
    if fmt == "dot":
        return dot_text.encode()
    dot = shutil.which(DOT)
    if dot is None:
        raise GraphError("graph: Graphviz's `dot` is missing (Debian package graphviz; make deps)")
    done = subprocess.run(
        [dot, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=RENDER_TIMEOUT, check=False
    )
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise GraphError(f"graph: dot failed: {message[-1] if message else f'exit status {done.returncode}'}")
    return done.stdout
