"""Foundation, end to end through the CLI on a one-host lab (issue: foundation)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autonet.agent.supervisor import process_start_time
from autonet.dataplane import netns
from autonet.model import naming
from tests.e2e.lab import EXAMPLE_SHOP, TCP_CONNECT, Lab, failure_kind

pytestmark = pytest.mark.lab

SHOP = EXAMPLE_SHOP


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # This module restarts an agent to test the agent's own reconcile. On a loaded
    # machine the restart can take longer than the default 3 s host timeout, and a host
    # declared Lost has its instances replaced (test_faults covers that path), so the
    # controller here waits longer before judging a host.
    with Lab(hosts=1, env={"AUTONET_HOST_TIMEOUT": "20"}) as lab:
        yield lab


def test_apply_gives_distinct_addresses_and_every_instance_answers(lab: Lab) -> None:
    out = lab.apply(SHOP)
    assert "all provisioned" in out
    web = lab.instances("web")
    client = lab.instances("client")[0]
    assert len(web) == 3
    v4 = ipaddress.ip_network("100.80.1.0/24")
    v6 = ipaddress.ip_network("fd00:80:0:1::/64")
    everyone = [*web, client]
    assert len({i["status"]["ipv4"] for i in everyone}) == 4
    assert len({i["status"]["ipv6"] for i in everyone}) == 4
    for inst in everyone:
        st = inst["status"]
        assert st["state"] == "Provisioned"
        assert ipaddress.ip_address(st["ipv4"]) in v4
        assert ipaddress.ip_address(st["ipv6"]) in v6
        assert st["ipv4"] not in ("100.80.1.0", "100.80.1.255")
        assert st["netns"].startswith("an") and len(st["netns"]) <= 15
        assert netns.exists(st["netns"])
    for inst in web:
        st = inst["status"]
        for url in (f"http://{st['ipv4']}:8080/", f"http://[{st['ipv6']}]:8080/"):
            result = lab.http_get(client["name"], url)
            assert result.code == 0, result.err
            assert result.out.strip() == inst["name"]


def test_exec_passes_exit_code_and_runs_as_the_instances_own_user(lab: Lab) -> None:
    assert lab.exec_in("client-0", "sh", "-c", "exit 7").code == 7
    uid = lab.json("get", "instance", "client-0")["status"]["process_uid"]
    assert uid >= 1000
    assert lab.exec_in("client-0", "sh", "-c", "id -u; id -g").out.split() == [str(uid), str(uid)]
    assert "nameserver 169.254.1.1" in lab.exec_in("client-0", "cat", "/etc/resolv.conf").out


# argv: address [host cert key ca]: with a certificate, mutual TLS as the controller dials.
GRPC_READY = (
    "import grpc, sys\n"
    "address, *tls = sys.argv[1:]\n"
    "if tls:\n"
    "    host, cert, key, ca = tls[0], *(open(p, 'rb').read() for p in tls[1:])\n"
    "    creds = grpc.ssl_channel_credentials(ca, key, cert)\n"
    "    options = [('grpc.ssl_target_name_override', host)]\n"
    "    channel = grpc.secure_channel(address, creds, options=options)\n"
    "else:\n"
    "    channel = grpc.insecure_channel(address)\n"
    "grpc.channel_ready_future(channel).result(timeout=3)\n"
    "print('ready')\n"
)


def in_control_netns(lab: Lab, *argv: str) -> subprocess.CompletedProcess[str]:
    control = naming.lab_netns(lab.name, "c")
    return subprocess.run(["ip", "netns", "exec", control, *argv], capture_output=True, text=True, timeout=30)


def test_instances_cannot_reach_the_underlay(lab: Lab) -> None:
    agent, api = lab.info.address(11), lab.info.address(1)
    for host, port in ((agent, 7070), (api, 7080)):
        # Positive control: from the controller's namespace the same connect succeeds.
        control = in_control_netns(lab, sys.executable, "-c", TCP_CONNECT, host, str(port))
        assert control.returncode == 0, control.stderr
        result = lab.connect("client-0", host, port)
        assert result.code != 0, f"client-0 connected to {host}:{port}"
        assert failure_kind(result.err) == "unreachable", result.err
    # And a gRPC call to the agent: ready from the control namespace, never from an instance.
    certs = lab.info.pki()
    tls = ["h1", str(certs.cert("c1")), str(certs.key("c1")), str(certs.ca_cert)]
    assert in_control_netns(lab, sys.executable, "-c", GRPC_READY, f"{agent}:7070", *tls).returncode == 0
    result = lab.exec_in("client-0", "python3", "-c", GRPC_READY, f"{agent}:7070")
    assert result.code != 0 and "ready" not in result.out
    assert "FutureTimeoutError" in result.err, result.err


def test_logs_show_the_process_output(lab: Lab) -> None:
    assert "http_echo listening on port 8080" in lab.ok("logs", "web-0")


def test_scale_up_down_and_delete_leave_nothing_in_the_kernel(lab: Lab) -> None:
    lab.ok("scale", "web", "5", "--wait")
    assert len(lab.instances("web")) == 5
    pids = [i["status"]["pid"] for i in lab.instances()]
    assert all(pid > 0 for pid in pids)
    lab.ok("scale", "web", "1", "--wait")
    web = lab.instances("web")
    assert [i["name"] for i in web] == ["web-0"]
    assert len(lab.kernel_netns()) == 2 + 1  # web-0, client-0 and their VPC router
    lab.ok("delete", "-f", "-", "--wait", stdin=SHOP)
    assert lab.json("get", "instances") == []
    assert lab.kernel_netns() == [], "instance or router namespaces left behind"
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    assert not [p for p in alive if "autonet" in Path(f"/proc/{p}/cmdline").read_text()], "processes left"
    host = lab.info.netns_names()[2]
    links = subprocess.run(
        ["ip", "-n", host, "-o", "link"], capture_output=True, text=True, check=True
    ).stdout
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    assert names == ["eth0", "lo"], names


BAD_INPUTS = [
    ("kind: Vpc\nname: v\nspec: {cidrs: [100.80.0.0/33]}\n", "spec.cidrs"),
    ("kind: Vpc\nname: v\nspec: {cidrs: [100.80.0.1/16]}\n", "spec.cidrs"),
    (
        "kind: Vpc\nname: v\nspec: {cidrs: [100.80.0.0/16]}\n---\n"
        "kind: Network\nname: n\nspec: {vpc: v, cidrs: [100.81.0.0/24]}\n",
        "outside Vpc",
    ),
    (
        "kind: Vpc\nname: v\nspec: {cidrs: [100.80.0.0/16]}\n---\n"
        "kind: Network\nname: n1\nspec: {vpc: v, cidrs: [100.80.0.0/24]}\n---\n"
        "kind: Network\nname: n2\nspec: {vpc: v, cidrs: [100.80.0.128/25]}\n",
        "overlaps",
    ),
    ("kind: Network\nname: n\nspec: {vpc: nowhere, cidrs: [100.80.0.0/24]}\n", 'unknown vpc "nowhere"'),
    (
        "kind: Vpc\nname: v\nspec: {cidrs: [100.80.0.0/16]}\n---\nkind: Vpc\nname: v\nspec: {cidrs: [100.81.0.0/16]}\n",
        "duplicate name",
    ),
    ("kind: Vpc\nname: " + "x" * 60 + "\nspec: {cidrs: [100.80.0.0/16]}\n", "too long"),
    ("kind: Vpc\nname: 'a;rm -rf'\nspec: {cidrs: [100.80.0.0/16]}\n", "name"),
    (
        "kind: Vpc\nname: v\nspec: {cidrs: [100.80.0.0/16]}\n---\n"
        "kind: Network\nname: n\nspec: {vpc: v, cidrs: [100.80.0.0/24]}\n---\n"
        "kind: Automaton\nname: a\nspec: {network: n, command: [sleep, '1'], replicas: -1}\n",
        "spec.replicas",
    ),
]


@pytest.mark.parametrize(("manifest", "expected"), BAD_INPUTS)
def test_bad_input_is_one_clear_line_and_changes_nothing(lab: Lab, manifest: str, expected: str) -> None:
    before = {kind: lab.json("get", kind) for kind in ("vpcs", "networks", "automatons")}
    result = lab.cli("apply", "-f", "-", stdin=manifest)
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert expected in lines[0], lines[0]
    after = {kind: lab.json("get", kind) for kind in ("vpcs", "networks", "automatons")}
    assert after == before


EXHAUSTED = """
kind: Vpc
name: tiny
spec: {cidrs: [100.90.0.0/24]}
---
kind: Network
name: tiny-a
spec: {vpc: tiny, cidrs: [100.90.0.0/29]}
---
kind: Automaton
name: many
spec: {network: tiny-a, command: [sleep, infinity], replicas: 8}
"""


def test_exhausted_pool_fails_the_extra_instances_with_a_reason(lab: Lab) -> None:
    result = lab.cli("apply", "-f", "-", "--wait", "--timeout", "60", stdin=EXHAUSTED)
    assert result.code != 0
    assert "exhausted" in result.err
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = sorted(i["status"]["state"] for i in lab.instances("many"))
        if states.count("Provisioned") == 6 and states.count("Failed") == 2:
            break
        time.sleep(0.2)
    failed = [i for i in lab.instances("many") if i["status"]["state"] == "Failed"]
    assert len(failed) == 2, states
    assert all("100.90.0.0/29 is exhausted" in i["status"]["reason"] for i in failed)
    addresses = [i["status"]["ipv4"] for i in lab.instances("many") if i["status"]["state"] == "Provisioned"]
    assert sorted(addresses) == [f"100.90.0.{n}" for n in range(1, 7)]  # never .0 nor .7
    lab.ok("delete", "-f", "-", "--wait", stdin=EXHAUSTED)


NEVER_READY = """
kind: Vpc
name: slow
spec: {cidrs: [100.91.0.0/24]}
---
kind: Network
name: slow-a
spec: {vpc: slow, cidrs: [100.91.0.0/28]}
---
kind: Automaton
name: sleeper
spec:
  network: slow-a
  command: [sleep, infinity]
  provides: [{protocol: http, transport: tcp, port: 8080}]   # never listens: never ready
"""


def test_a_long_wait_shows_progress_and_names_what_holds_it_up(lab: Lab) -> None:
    result = lab.cli("apply", "-f", "-", "--wait", "--timeout", "12", stdin=NEVER_READY, timeout=60)
    assert result.code != 0
    assert "timed out after 12s waiting for: Automaton sleeper (0/1 instances provisioned)" in result.err
    assert "waiting: 2/3 converged, slowest: Automaton sleeper (0/1 instances provisioned) for " in result.err
    assert result.out.splitlines() == [
        "vpc/slow created",
        "network/slow-a created",
        "automaton/sleeper created",
    ]
    lab.ok("delete", "-f", "-", "--wait", stdin=NEVER_READY)


def _lab_pid(lab: Lab, role: str) -> int:
    return next(p.pid for p in lab.info.processes if p.role == role)


BULK = """
kind: Vpc
name: bulk
spec: {cidrs: [100.91.0.0/16, "fd00:91::/48"]}
---
kind: Network
name: bulk-a
spec: {vpc: bulk, cidrs: [100.91.0.0/24, "fd00:91:0:1::/64"]}
---
kind: Automaton
name: worker
spec: {network: bulk-a, command: [sleep, infinity], replicas: 20}
"""


def test_controller_killed_mid_apply_converges_without_double_addresses(lab: Lab) -> None:
    lab.apply(BULK, wait=False)
    time.sleep(0.3)
    os.kill(_lab_pid(lab, "controller"), signal.SIGKILL)
    lab.ok("lab", "restart", "controller", "--name", lab.name)
    deadline = time.monotonic() + 30
    while not os.path.exists(lab.info.dir / "api.sock") or lab.cli("get", "hosts").code != 0:
        assert time.monotonic() < deadline, "controller did not come back"
        time.sleep(0.1)
    lab.ok("apply", "-f", "-", "--wait", "--timeout", "90", stdin=BULK)
    workers = lab.instances("worker")
    assert len(workers) == 20
    assert all(w["status"]["state"] == "Provisioned" for w in workers)
    assert len({w["status"]["ipv4"] for w in workers}) == 20
    assert len({w["status"]["ipv6"] for w in workers}) == 20
    assert len(lab.kernel_netns()) == 20 + 1
    lab.ok("delete", "-f", "-", "--wait", stdin=BULK)
    assert lab.kernel_netns() == []


def test_agent_killed_then_restarted_reconciles_kernel_and_processes(lab: Lab) -> None:
    lab.apply(SHOP)
    web0 = next(i for i in lab.instances("web") if i["name"] == "web-0")
    pid_before = web0["status"]["pid"]
    os.kill(_lab_pid(lab, "h1"), signal.SIGKILL)
    # While the agent is down: a process dies and a stray namespace appears.
    os.kill(pid_before, signal.SIGKILL)
    tag = lab.host_tags()[0]
    stray = f"ani{tag}zzzzzzzz"
    netns.create(stray).close()
    lab.ok("lab", "restart", "h1", "--name", lab.name)
    deadline = time.monotonic() + 30
    while True:
        result = lab.http_get("client-0", f"http://{web0['status']['ipv4']}:8080/")
        if result.code == 0 and not netns.exists(stray):
            break
        assert time.monotonic() < deadline, f"not reconciled: {result.err}"
        time.sleep(0.3)
    assert result.out.strip() == "web-0"
    # Processes that survived the agent were adopted, not duplicated.
    state = json.loads(
        (lab.info.dir / "hosts" / "h1" / "instances" / f"{web0['metadata']['uid']}.json").read_text()
    )
    assert state["pid"] != pid_before and process_start_time(state["pid"]) > 0
    lab.ok("delete", "-f", "-", "--wait", stdin=SHOP)
    assert lab.kernel_netns() == []
