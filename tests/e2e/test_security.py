"""Composition security: protocol compatibility at apply, default deny in the kernel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.lab import Lab, Result

pytestmark = pytest.mark.lab

APP = """
kind: Vpc
name: corp
spec: {cidrs: [100.82.0.0/16, "fd00:82::/48"]}
---
kind: Network
name: corp-a
spec: {vpc: corp, cidrs: [100.82.1.0/24, "fd00:82:0:1::/64"]}
---
kind: Automaton
name: front
spec:
  network: corp-a
  command: [python3, -m, autonet.examples.echo, --port, "7000", --tcp-only]
  consumes: [http, echo]
---
kind: Automaton
name: web
spec:
  network: corp-a
  command: [python3, -m, autonet.examples.http_echo, --port, "8080"]
  provides: [{protocol: http, transport: tcp, port: 8080}]
  replicas: 2
---
kind: Automaton
name: store
spec:
  network: corp-a
  command: [python3, -m, autonet.examples.echo, --port, "7000", --port, "7001"]
  provides: [{protocol: echo, transport: tcp, port: 7000}]
  consumes: [echo]
  replicas: 2
---
kind: Automaton
name: other
spec:
  network: corp-a
  command: [python3, -m, autonet.examples.http_echo, --port, "8080"]
  provides: [{protocol: http, transport: tcp, port: 8080}]
---
kind: Composition
name: corp-app
spec:
  links: [{from: front, to: web, protocol: http}, {from: front, to: store, protocol: echo}]
"""

ELSEWHERE = """
kind: Vpc
name: elsewhere
spec: {cidrs: [100.83.0.0/16]}
---
kind: Network
name: elsewhere-a
spec: {vpc: elsewhere, cidrs: [100.83.1.0/24]}
---
kind: Automaton
name: stranger
spec: {network: elsewhere-a, command: [sleep, infinity], consumes: [echo]}
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=3) as lab:
        lab.apply(APP)
        lab.apply(ELSEWHERE)
        yield lab


def inst(lab: Lab, name: str) -> dict[str, Any]:
    return next(i for i in lab.instances() if i["name"] == name)


def tcp(lab: Lab, source: str, address: str, port: int, udp: bool = False) -> Result:
    args = ["python3", "-m", "autonet.examples.echo_client", address, str(port), "--timeout", "2"]
    return lab.exec_in(source, *args, *(["--udp"] if udp else []))


def seen(lab: Lab, instance: str) -> int:
    return lab.ok("logs", instance).count(" from ")


def test_placement_spans_three_hosts(lab: Lab) -> None:
    assert len({i["status"]["host"] for i in lab.instances()}) == 3


def test_linked_pairs_connect_on_the_declared_port(lab: Lab) -> None:
    for web in ("web-0", "web-1"):
        for address in (inst(lab, web)["status"]["ipv4"], f"[{inst(lab, web)['status']['ipv6']}]"):
            result = lab.http_get("front-0", f"http://{address}:8080/")
            assert result.out.strip() == web, result.err
    for store in ("store-0", "store-1"):
        for address in (inst(lab, store)["status"]["ipv4"], inst(lab, store)["status"]["ipv6"]):
            assert tcp(lab, "front-0", address, 7000).out.strip() == "ping"


@pytest.mark.parametrize(
    ("source", "target", "port", "udp", "why"),
    [
        ("front-0", "other-0", 8080, False, "unlinked pair"),
        ("front-0", "store-0", 7001, False, "a port the provider did not declare"),
        ("front-0", "store-0", 7000, True, "the wrong transport"),
        ("store-0", "front-0", 7000, False, "the reverse direction"),
        ("store-1", "store-0", 7000, False, "instances of one automaton, not linked to itself"),
    ],
)
def test_everything_else_is_refused_and_the_listener_sees_nothing(
    lab: Lab, source: str, target: str, port: int, udp: bool, why: str
) -> None:
    before = seen(lab, target)
    for family in ("ipv4", "ipv6"):
        address = inst(lab, target)["status"][family]
        result = (
            tcp(lab, source, address, port, udp=udp)
            if port != 8080
            else lab.http_get(source, f"http://{address if family == 'ipv4' else '[' + address + ']'}:8080/")
        )
        assert result.code != 0, f"{why}: {source} reached {target} on {port}: {result.out!r}"
    assert seen(lab, target) == before, f"{why}: the listener saw traffic"


def test_other_vpcs_cannot_reach_in(lab: Lab) -> None:
    before = seen(lab, "store-0")
    assert tcp(lab, "stranger-0", inst(lab, "store-0")["status"]["ipv4"], 7000).code != 0
    assert seen(lab, "store-0") == before


def test_a_link_opens_and_closes_while_running(lab: Lab) -> None:
    other = inst(lab, "other-0")["status"]["ipv4"]
    url = f"http://{other}:8080/"
    lab.assert_no_connection("front-0", url)
    opened = APP.split("kind: Composition")[1].replace(
        "{from: front, to: store, protocol: echo}]",
        "{from: front, to: store, protocol: echo}, {from: front, to: other, protocol: http}]",
    )
    lab.apply("kind: Composition" + opened)  # --wait: returns once every host enforces it
    assert lab.http_get("front-0", url).out.strip() == "other-0"
    lab.apply("kind: Composition" + APP.split("kind: Composition")[1])
    lab.assert_no_connection("front-0", url)


def test_scaled_up_instances_are_reachable_by_linked_clients_only(lab: Lab) -> None:
    lab.ok("scale", "web", "4", "--wait")
    for web in ("web-2", "web-3"):
        address = inst(lab, web)["status"]["ipv4"]
        assert lab.http_get("front-0", f"http://{address}:8080/").out.strip() == web
        lab.assert_no_connection("store-0", f"http://{address}:8080/")
    lab.ok("scale", "web", "2", "--wait")


def test_policy_check_and_describe_say_why(lab: Lab) -> None:
    ok = lab.cli("policy", "check", "front", "web", "--port", "8080")
    assert ok.code == 0 and ok.out.startswith("allowed: front -> web: http (tcp/8080) by corp-app")
    reverse = lab.cli("policy", "check", "web", "front")
    assert reverse.code == 1 and "no composition links web -> front" in reverse.out
    port = lab.cli("policy", "check", "front", "store", "--port", "7001")
    assert port.code == 1 and "linked only on tcp/7000" in port.out
    matrix = lab.ok("describe", "composition", "corp-app")
    assert "front -> web  tcp/8080  (http)" in matrix and "front -> store  tcp/7000  (echo)" in matrix


def test_incompatible_link_is_rejected_naming_both_and_the_protocol(lab: Lab) -> None:
    bad = "kind: Composition\nname: bad\nspec:\n  links: [{from: web, to: store, protocol: echo}]\n"
    result = lab.cli("apply", "-f", "-", stdin=bad)
    assert result.code != 0
    assert (
        result.err.strip()
        == 'error: Composition "bad": spec.links[0]: "web" does not consume protocol "echo" that "store" provides'
    )
    assert lab.cli("get", "composition", "bad").code != 0
