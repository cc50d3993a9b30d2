"""`autonet graph`: the DOT text shows what a user looks for, and dot renders it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autonet.cli import graph
from autonet.cli.client import CliError
from autonet.model import graph as model_graph


def _obj(
    kind: str, name: str, spec: dict[str, Any], state: str = "Provisioned", **status: Any
) -> dict[str, Any]:
    return {"kind": kind, "name": name, "spec": spec, "status": {"state": state, **status}}


def shop(web_states: tuple[str, ...] = ("Provisioned", "Provisioned", "Provisioned")) -> graph.Objects:
    web = {
        "network": "blue-a",
        "replicas": 3,
        "provides": [{"protocol": "http", "transport": "tcp", "port": 8080}],
    }
    return {
        "vpcs": [_obj("Vpc", "blue", {"cidrs": ["100.80.0.0/16"]})],
        "networks": [_obj("Network", "blue-a", {"vpc": "blue", "cidrs": ["100.80.1.0/24"]})],
        "automatons": [
            _obj("Automaton", "web", web),
            _obj("Automaton", "client", {"network": "blue-a", "replicas": 1, "consumes": ["http"]}),
        ],
        "instances": [
            *(
                _obj("Instance", f"web-{i}", {"automaton": "web"}, state, host=f"h{1 + i % 2}")
                for i, state in enumerate(web_states)
            ),
            _obj("Instance", "client-0", {"automaton": "client"}, host="h1"),
        ],
        "compositions": [
            _obj("Composition", "shop", {"links": [{"from": "client", "to": "web", "protocol": "http"}]})
        ],
        "hosts": [_obj("Host", "h1", {}, "Ready"), _obj("Host", "h2", {}, "Ready")],
    }


def test_nodes_carry_instances_per_host_and_links_their_protocol_and_port() -> None:
    dot = graph.build_dot(shop())
    assert '"automaton/client" -> "automaton/web" [label="http tcp/8080"];' in dot
    assert '"web\\n3/3 provisioned\\nh1: 2\\nh2: 1"' in dot
    assert 'subgraph "cluster_vpc/blue"' in dot and 'label="VPC blue (100.80.0.0/16)"' in dot
    assert 'subgraph "cluster_network/blue-a"' in dot
    assert "color=black" in dot and "red" not in dot and "darkorange" not in dot


def test_an_image_or_an_attachment_says_what_runs() -> None:
    objects = shop()
    objects["automatons"][0]["spec"]["image"] = "localhost/site:1"
    objects["automatons"][1]["spec"] = {"network": "blue-a", "external": True, "consumes": ["http"]}
    dot = graph.build_dot(objects)
    assert '"web\\nimage localhost/site:1\\n3/3 provisioned' in dot
    assert '"client\\nattached (CNI)\\n' in dot


def test_failed_instances_and_lost_hosts_mark_the_automaton() -> None:
    dot = graph.build_dot(shop(("Provisioned", "Failed", "Provisioned")))
    web_line = next(line for line in dot.splitlines() if line.strip().startswith('"automaton/web" ['))
    assert "1 failed" in web_line and "color=darkorange" in web_line
    objects = shop()
    objects["hosts"][1]["status"]["state"] = "Lost"
    web_line = next(line for line in graph.build_dot(objects).splitlines() if '"automaton/web" [' in line)
    assert "h2: 1 (Lost)" in web_line and "darkorange" in web_line
    none_up = graph.build_dot(shop(("Failed", "Failed", "Failed")))
    assert "color=red, fontcolor=red];" in next(
        line for line in none_up.splitlines() if '"automaton/web" [' in line
    )


def test_a_link_to_a_missing_automaton_or_of_a_failed_composition_is_dashed_red() -> None:
    objects = shop()
    objects["compositions"][0]["spec"]["links"].append({"from": "client", "to": "db", "protocol": "sql"})
    dot = graph.build_dot(objects)
    assert '"automaton/client" -> "automaton/db"' in dot
    assert "(shop: missing db)" in dot and "style=dashed, color=red" in dot
    objects = shop()
    objects["compositions"][0]["status"]["state"] = "Failed"
    assert "(shop: failed)" in graph.build_dot(objects)


def test_names_cannot_break_out_of_their_dot_strings() -> None:
    assert model_graph.quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def test_output_format_follows_the_file_name() -> None:
    assert graph.output_format(None) == "dot"
    assert graph.output_format(Path("g.SVG")) == "svg"
    with pytest.raises(CliError, match=r"must end in \.svg, \.png or \.dot"):
        graph.output_format(Path("g.pdf"))


def test_dot_renders_svg_with_every_automaton_and_link_label() -> None:
    svg = graph.render(graph.build_dot(shop()), "svg").decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for text in ("web", "client", "http tcp/8080", "VPC blue"):
        assert text in svg
    png = graph.render(graph.build_dot(shop()), "png")
    assert png.startswith(b"\x89PNG")
