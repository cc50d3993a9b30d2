"""autonet-cni's protocol handling and the attachments API, without a lab."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from autonet.cli import cni
from autonet.dataplane import netns
from tests.unit.test_api import HOST, client  # noqa: F401  (the app fixture)

API = "/api/v1"
NET = [
    {"kind": "Vpc", "name": "blue", "spec": {"cidrs": ["100.80.0.0/16"]}},
    {"kind": "Network", "name": "blue-a", "spec": {"vpc": "blue", "cidrs": ["100.80.1.0/24"]}},
    {"kind": "Automaton", "name": "edge", "spec": {"network": "blue-a", "external": True}},
    {"kind": "Automaton", "name": "web", "spec": {"network": "blue-a", "command": ["sleep", "1"]}},
]


def run(env: dict[str, str], config: dict[str, Any] | str) -> tuple[int, Any]:
    out = io.StringIO()
    stdin = io.StringIO(config if isinstance(config, str) else json.dumps(config))
    code = cni.run(env, stdin, out)
    return code, json.loads(out.getvalue()) if out.getvalue() else None


ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/anx", "CNI_IFNAME": "eth0"}
CONF = {"cniVersion": "1.0.0", "name": "n", "type": "autonet-cni", "automaton": "edge"}


def test_version_needs_no_config() -> None:
    assert run({"CNI_COMMAND": "VERSION"}, "") == (
        0,
        {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]},
    )


@pytest.mark.parametrize(
    ("env", "config", "code", "words"),
    [
        ({**ENV, "CNI_COMMAND": "BOGUS"}, CONF, 4, "CNI_COMMAND 'BOGUS'"),
        ({**ENV, "CNI_NETNS": ""}, CONF, 4, "CNI_NETNS is required"),
        ({**ENV, "CNI_IFNAME": "net1"}, CONF, 4, "eth0 only"),
        ({**ENV, "CNI_CONTAINERID": ""}, CONF, 4, "CNI_CONTAINERID is required"),
        (ENV, "{not json", 6, "not JSON"),
        (ENV, {**CONF, "cniVersion": "0.3.1"}, 1, "speaks 0.4.0, 1.0.0"),
        (ENV, {**CONF, "automaton": ""}, 7, '"automaton"'),
    ],
)
def test_bad_requests_are_cni_errors(env: dict[str, str], config: Any, code: int, words: str) -> None:
    exit_code, error = run(env, config)
    assert exit_code == 1 and error["code"] == code and words in error["msg"], error


def test_the_result_has_the_interface_addresses_routes_and_dns() -> None:
    request = cni.read_request(ENV, io.StringIO(json.dumps(CONF)))
    inst = {
        "status": {"ipv4": "100.80.1.5", "ipv6": "fd00:80:0:1::5", "mac": "02:00:00:00:00:05", "vpc": "blue"}
    }
    assert cni.result(request, inst) == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:05", "sandbox": "/run/netns/anx"}],
        "ips": [
            {"address": "100.80.1.5/32", "gateway": "169.254.1.1", "interface": 0},
            {"address": "fd00:80:0:1::5/128", "gateway": "fe80::1", "interface": 0},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}],
        "dns": {"nameservers": ["169.254.1.1"], "search": ["blue.autonet"]},
    }


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"network": "blue-a"}, "command: required (or image: to run a container image, or external"),
        ({"network": "blue-a", "external": True, "replicas": 2}, "has no replicas"),
        ({"network": "blue-a", "external": True, "command": ["x"]}, "has no command or image"),
        ({"network": "blue-a", "external": True, "image": "x"}, "has no command or image"),
    ],
)
async def test_external_automatons_have_no_command_and_no_replicas(
    client: httpx.AsyncClient,  # noqa: F811
    spec: dict[str, Any],
    words: str,
) -> None:
    docs = [*NET[:2], {"kind": "Automaton", "name": "a", "spec": spec}]
    reply = await client.post(f"{API}/apply", json={"documents": docs})
    assert reply.status_code == 422 and words in reply.json()["error"], reply.text
    assert (await client.get(f"{API}/objects/vpcs")).json() == []  # all or nothing


async def test_attach_is_idempotent_and_detach_too(client: httpx.AsyncClient) -> None:  # noqa: F811
    assert (await client.post(f"{API}/apply", json={"documents": NET})).status_code == 200
    assert (await client.post(f"{API}/hosts/register", json=HOST)).status_code == 200
    body = {"container_id": "c1", "netns": "/run/netns/anx", "host": "h1"}
    first = await client.post(f"{API}/automatons/edge/attachments", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["name"] == "edge-0" and first.json()["spec"]["attachment"]["container_id"] == "c1"
    again = await client.post(f"{API}/automatons/edge/attachments", json=body)
    assert again.json()["name"] == "edge-0"
    other = await client.post(f"{API}/automatons/edge/attachments", json={**body, "container_id": "c2"})
    assert other.json()["name"] == "edge-1"
    moved = await client.post(f"{API}/automatons/edge/attachments", json={**body, "netns": "/run/netns/any"})
    assert moved.status_code == 409 and "attached already, as edge-0" in moved.json()["error"]
    not_external = await client.post(f"{API}/automatons/web/attachments", json=body)
    assert not_external.status_code == 422 and "is not external" in not_external.json()["error"]
    nowhere = await client.post(f"{API}/automatons/edge/attachments", json={**body, "host": "h9"})
    assert nowhere.status_code == 422 and 'host "h9"' in nowhere.json()["error"]
    gone = await client.delete(f"{API}/automatons/edge/attachments/c1")
    assert gone.json() == {"instance": "edge-0", "action": "deleting"}
    never = await client.delete(f"{API}/automatons/edge/attachments/c9")
    assert never.json() == {"instance": None, "action": "none"}


def test_credentials_for_https_come_from_files_the_config_names(tmp_path: Path) -> None:
    token = tmp_path / "cni.token"
    token.write_text("ant.abc.def\n")
    config = {**CONF, "api": "https://ctl:7080", "token_file": str(token),
              "ca": "/etc/autonet/ca.pem", "cert": "/c.pem", "key": "/k.pem"}  # fmt: skip
    request = cni.read_request(ENV, io.StringIO(json.dumps(config)))
    api = cni.client_for(request)
    assert api.endpoints == ["https://ctl:7080"]
    assert (api.creds.token, api.creds.ca, api.creds.cert, api.creds.key) == (
        "ant.abc.def", "/etc/autonet/ca.pem", "/c.pem", "/k.pem",
    )  # fmt: skip
    for bad, words in ((str(tmp_path / "missing"), "token_file"), ("relative.token", "an absolute path")):
        code, error = run(ENV, {**CONF, "api": "https://ctl:7080", "token_file": bad})
        assert code == 1 and error["code"] == 7 and words in error["msg"], error


def test_the_machines_and_the_callers_own_namespaces_are_not_adoptable(tmp_path: Path) -> None:
    managed = ("ani", "anr", "anl")
    assert "not a network namespace" in netns.not_adoptable(str(tmp_path), managed)
    assert "the host's own network namespace" in netns.not_adoptable(f"/proc/{os.getpid()}/ns/net", managed)
    # PID 1's: refused as the machine's initial one, or (in a sandbox that hides it) as unreadable.
    assert netns.not_adoptable("/proc/1/ns/net", managed).startswith("/proc/1/ns/net: ")
    # This process runs in the initial namespace too: a child in a namespace of its own
    # (what a runtime makes for a container) is the control that may be adopted.
    child = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        path = f"/proc/{child.pid}/ns/net"
        while os.readlink(path) == os.readlink("/proc/self/ns/net"):  # until unshare ran
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert netns.not_adoptable(path, managed) == ""
    finally:
        child.kill()
        child.wait()
