"""Automatons that run a container image (`image:`), end to end on a one-host lab.

The test image is `make image`'s busybox (localhost/autonet-busybox, local storage only).
Checked as a user would: the image's instances serve traffic by DNS name, as their own
uid; `autonet exec` enters the container (its own filesystem); a container whose process
dies is started again and serves again; `autonet logs` shows its output; a live QoS cap
holds for a container as for a process; an image not in local storage fails the
instance with podman's own reason; a restarted agent removes a container no instance
owns and keeps its instances'; deleting the automaton, and `lab down`, leave no container
behind.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from autonet.dataplane import containers, netns
from tests.e2e.lab import Lab

pytestmark = pytest.mark.lab

IMAGE = "localhost/autonet-busybox:latest"

MANIFEST = f"""
kind: Vpc
name: blue
spec: {{cidrs: [100.80.0.0/16]}}
---
kind: Network
name: blue-a
spec: {{vpc: blue, cidrs: [100.80.1.0/24]}}
---
kind: Automaton
name: site
spec:
  network: blue-a
  image: {IMAGE}
  command:
  - sh
  - -c
  - >-
    mkdir -p /tmp/www && echo "$AUTONET_INSTANCE" > /tmp/www/index.html &&
    echo "serving $AUTONET_INSTANCE" && exec httpd -f -p 8080 -h /tmp/www
  provides: [{{protocol: http, transport: tcp, port: 8080}}]
  replicas: 2
---
kind: Automaton
name: sink
spec:
  network: blue-a
  image: {IMAGE}
  # Each connection: read everything, then say so (the sender times delivery, not buffering).
  command:
  - sh
  - -c
  - >-
    printf '#!/bin/sh\\ncat > /dev/null\\necho received\\n' > /tmp/sink && chmod +x /tmp/sink &&
    exec nc -ll -p 9000 -e /tmp/sink
  provides: [{{protocol: bulk, transport: tcp, port: 9000}}]
---
kind: Automaton
name: client
spec:
  network: blue-a
  command: [sleep, infinity]
  consumes: [http, bulk]
---
kind: Composition
name: front
spec:
  links: [{{from: client, to: site, protocol: http}}, {{from: client, to: sink, protocol: bulk}}]
"""

# Seconds to send N bytes to HOST:9000 until the receiver says it read them all.
SEND = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 9000), timeout=30)
start = time.monotonic()
s.sendall(b"x" * int(sys.argv[2]))
s.shutdown(socket.SHUT_WR)
reply = s.makefile().read()
assert reply.strip() == "received", reply
print(time.monotonic() - start)
"""
TRANSFER_BYTES = 2_000_000
CAP_MBPS = 8.0


def containers_named(prefix: str = "an-") -> set[str]:
    listed = subprocess.run(
        ["podman", "ps", "--all", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    )
    return {name for name in listed.stdout.split() if name.startswith(prefix)}


def container_of(inst: dict[str, object]) -> str:
    return f"an-{inst['metadata']['uid']}"  # type: ignore[index]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    image = subprocess.run(["podman", "image", "exists", IMAGE], check=False)
    assert image.returncode == 0, f"the test image {IMAGE} is missing: make image"
    # An agent restart below must not be taken for a lost host (test_faults covers that).
    with Lab(hosts=1, env={"AUTONET_HOST_TIMEOUT": "20"}) as lab:
        lab.apply(MANIFEST)
        tag = lab.host_tags()[0]
        yield lab
    # `lab down` kills podman's monitors with the host: the lab's containers go too.
    assert containers.of_hosts([tag]) == []


def test_an_image_serves_by_name_as_the_instances_own_uid(lab: Lab) -> None:
    sites = lab.instances("site")
    assert {i["status"]["state"] for i in sites} == {"Provisioned"}
    assert {container_of(i) for i in sites} <= containers_named()
    answered = {lab.http_get("client-0", "http://site:8080/").out.strip() for _ in range(12)}
    assert answered == {"site-0", "site-1"}  # both containers, behind the service name
    for inst in sites:
        # exec enters the container: the file its command wrote exists only in there.
        inside = lab.exec_in(inst["name"], "sh", "-c", "id -u; cat /tmp/www/index.html")
        assert inside.code == 0, inside.err
        assert inside.out.split() == [str(inst["status"]["process_uid"]), inst["name"]]
        assert inst["status"]["process_uid"] >= 1000
    # The control: a bare process's instance has no such file (exec is not somewhere else).
    outside = lab.exec_in("client-0", "cat", "/tmp/www/index.html")
    assert outside.code != 0 and "No such file" in outside.err


def test_a_container_whose_process_dies_is_started_again(lab: Lab) -> None:
    site0 = next(i for i in lab.instances("site") if i["name"] == "site-0")
    before = site0["status"].get("restarts", 0)
    served = [pid for pid in netns.pids_in(site0["status"]["netns"]) if _comm(pid) == "httpd"]
    assert len(served) == 1, served
    subprocess.run(["kill", "-KILL", str(served[0])], check=True)
    deadline = time.monotonic() + 30
    while True:
        now = lab.json("get", "instance", "site-0")["status"]
        result = lab.http_get("client-0", f"http://{now['ipv4']}:8080/")
        if now.get("restarts", 0) > before and result.code == 0:
            break
        assert time.monotonic() < deadline, f"not restarted: {now.get('last_exit')} {result.err}"
        time.sleep(0.3)
    assert result.out.strip() == "site-0"
    again = [pid for pid in netns.pids_in(now["netns"]) if _comm(pid) == "httpd"]
    assert again and again != served  # a new process, in the same namespace
    log = lab.ok("logs", "site-0")
    assert log.count("serving site-0") >= 2 and log.count(f"start {IMAGE}") >= 2


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _send_seconds(lab: Lab, address: str) -> float:
    sent = lab.exec_in("client-0", "python3", "-c", SEND, address, str(TRANSFER_BYTES))
    assert sent.code == 0, sent.err
    return float(sent.out.strip())


def test_a_live_qos_cap_holds_for_a_container(lab: Lab) -> None:
    sink = lab.instances("sink")[0]
    address = sink["status"]["ipv4"]
    megabits = TRANSFER_BYTES * 8 / 1e6
    uncapped = _send_seconds(lab, address)
    assert megabits / uncapped > CAP_MBPS * 1.5, f"uncapped only {megabits / uncapped:.1f} Mbit/s"
    lab.ok("qos", "sink", "--ingress", str(CAP_MBPS))
    try:
        deadline = time.monotonic() + 20
        while not lab.json("get", "instance", "sink-0")["status"].get("qos"):
            assert time.monotonic() < deadline, "the QoS change did not reach sink-0"
            time.sleep(0.2)
        capped = _send_seconds(lab, address)
        # Allow the token bucket's burst: the rate stays near the cap, never far above it.
        assert megabits / capped < CAP_MBPS * 1.3, f"capped at {CAP_MBPS}, got {megabits / capped:.1f} Mbit/s"
    finally:
        lab.ok("qos", "sink")


def test_an_image_not_in_local_storage_fails_with_podmans_reason(lab: Lab) -> None:
    ghost = "kind: Automaton\nname: ghost\nspec: {network: blue-a, image: localhost/autonet-no-such-image}\n"
    lab.apply(ghost, wait=False)
    try:
        deadline = time.monotonic() + 30
        while (status := lab.json("get", "instance", "ghost-0")["status"]).get("state") != "Failed":
            assert time.monotonic() < deadline, f"ghost-0 never failed: {status}"
            time.sleep(0.3)
        assert "image not known" in status["reason"] and "exited with code 125" in status["reason"]
    finally:
        lab.ok("delete", "automaton", "ghost", "--wait")


def test_a_restarted_agent_removes_containers_no_instance_owns(lab: Lab) -> None:
    tag = lab.host_tags()[0]
    stray = f"an-stray{uuid.uuid4().hex[:8]}"  # as a crash would leave one behind
    subprocess.run(
        ["podman", *containers.HOST_FLAGS, "run", "--detach", "--rm", "--name", stray, "--network", "none",
         "--label", f"{containers.HOST_LABEL}={tag}", *containers.LIMITS, IMAGE, "sleep", "600"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        site0 = next(i for i in lab.instances("site") if i["name"] == "site-0")
        lab.ok("lab", "kill", "h1", "--name", lab.name)
        lab.ok("lab", "restart", "h1", "--name", lab.name)
        deadline = time.monotonic() + 30
        while stray in containers_named():
            assert time.monotonic() < deadline, f"{stray} is still there"
            time.sleep(0.3)
        # The control: the instances' own containers were adopted, not removed.
        assert {container_of(i) for i in lab.instances("site")} <= containers_named()
        result = lab.http_get("client-0", f"http://{site0['status']['ipv4']}:8080/")
        assert result.code == 0 and result.out.strip() == "site-0", result.err
    finally:
        subprocess.run(["podman", "rm", "--force", "--ignore", "--time", "0", stray], capture_output=True)


def test_deleting_the_automaton_leaves_no_container(lab: Lab) -> None:
    sites = lab.instances("site")
    names = {container_of(i) for i in sites}
    assert names <= containers_named()
    lab.ok("delete", "automaton", "site", "--wait")
    assert not names & containers_named()
    assert not {i["status"]["netns"] for i in sites} & set(lab.kernel_netns())
    # The control: the sink's container, not deleted, still runs (until `lab down`).
    assert container_of(lab.instances("sink")[0]) in containers_named()
