"""`autonet graph`: the composition graph (model/graph.py) as DOT, SVG or PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autonet.cli.client import CliError
from autonet.model import graph
from autonet.model.graph import Objects, build_dot

FORMATS = ("dot", "svg", "png")

__all__ = ["Objects", "build_dot", "fetch", "output_format", "render"]


def fetch(client: Any) -> Objects:
    """Every object the graph shows, from the API."""
    return {kind: client.objects(kind) for kind in graph.KINDS}


def output_format(path: Path | None) -> str:
    """The format a file name asks for: .dot, .svg or .png (no file: DOT on stdout)."""
    if path is None:
        return "dot"
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise CliError(f"-o {path}: the file name must end in .svg, .png or .dot")
    return suffix


def render(dot_text: str, fmt: str) -> bytes:
    """DOT text as `fmt`: itself, or rendered by Graphviz (or use -o FILE.dot without it)."""
    try:
        return graph.render(dot_text, fmt)
    except graph.GraphError as exc:
        raise CliError(str(exc)) from None
