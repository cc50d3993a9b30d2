"""autonet-cni on a lab: a podman container attached as a runtime attaches it.

The test plays the container runtime the way the CNI reference tooling does (cnitool,
libcni): it makes the container's network namespace, runs the plugin with CNI_COMMAND,
CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and the network config on stdin, and then runs a
podman container (the test image, `make image`) in that namespace. Checked as a user
would: the container reaches a service by DNS name where a link allows it and is refused
where none does (the positive control: the linked container, same URL), ADD and DEL can
be repeated, CHECK reports drift, and DEL leaves nothing behind (no instance, no veth,
the runtime's namespace is still the runtime's, untouched).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autonet.dataplane import netns
from autonet.model import naming
from tests.e2e.lab import Lab, wait_for

pytestmark = pytest.mark.lab

IMAGE = "localhost/autonet-busybox:latest"
# This machine: cgroup v1 with a v2 mount crun refuses, and a low RLIMIT_NOFILE/NPROC.
PODMAN_RUN = [
    "podman", "run", "--rm", "--runtime", "runc", "--cgroup-manager", "cgroupfs",
    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
]  # fmt: skip

MANIFEST = """
kind: Vpc
name: blue
spec: {cidrs: [100.80.0.0/16, "fd00:80::/48"]}
---
kind: Network
name: blue-a
spec: {vpc: blue, cidrs: [100.80.1.0/24, "fd00:80:0:1::/64"]}
---
kind: Automaton
name: web
spec:
  network: blue-a
  command: [python3, -m, autonet.examples.http_echo, --port, "8080"]
  provides: [{protocol: http, transport: tcp, port: 8080}]
  replicas: 2
---
kind: Automaton
name: edge
spec: {network: blue-a, external: true, consumes: [http]}
---
kind: Automaton
name: stranger
spec: {network: blue-a, external: true, consumes: [http]}
---
kind: Composition
name: front
spec:
  links: [{from: edge, to: web, protocol: http}]
"""


# Resolve by name with busybox's own resolver (a static glibc's getaddrinfo cannot load
# NSS modules in an image without them), then one HTTP request with nc.
FETCH_WEB = (
    "addr=$(nslookup web | awk '/^Name:/ {found=1} found && /^Address:/ && $2 !~ /:/ {print $2; exit}'); "
    'echo "$addr"; [ -n "$addr" ] || exit 3; '
    'reply=$(printf "GET / HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n" | nc -w 3 "$addr" 8080) || exit 4; '
    'echo "$reply" | tail -1'
)


def web_vip(lab: Lab) -> str:
    return str(lab.json("get", "automaton", "web")["status"]["vip4"])


def plugin() -> str:
    found = shutil.which("autonet-cni", path=str(Path(sys.executable).parent))
    assert found, "autonet-cni is not installed next to the interpreter (make venv)"
    return found


class Runtime:
    """What a container runtime does with a CNI plugin, for one lab."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.namespaces: list[str] = []
        self.attached: dict[str, tuple[str, dict[str, Any]]] = {}  # container -> (namespace, config)

    def config(self, automaton: str, host: str = "h1") -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "name": "blue", "type": "autonet-cni", "automaton": automaton,
                "host": host, "lab": self.lab.name, "timeout": 60}  # fmt: skip

    def sandbox(self) -> str:
        name = "anct" + uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.namespaces.append(name)
        return name

    def cni(
        self, command: str, container: str, namespace: str, config: dict[str, Any], path: str = ""
    ) -> tuple[int, Any]:
        """Run the plugin for the container in `namespace` (or at the namespace `path`)."""
        env = {
            **os.environ,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container,
            "CNI_NETNS": path or (netns.netns_path(namespace) if namespace else ""),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(Path(plugin()).parent),
        }
        done = subprocess.run(
            [plugin()], input=json.dumps(config), capture_output=True, text=True, env=env, timeout=120
        )
        if command == "ADD" and done.returncode == 0:
            self.attached[container] = (namespace, config)
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None

    def run(self, namespace: str, *command: str) -> subprocess.CompletedProcess[str]:
        argv = [*PODMAN_RUN, "--network", f"ns:{netns.netns_path(namespace)}", "--dns", "169.254.1.1",
                "--dns-search", "blue.autonet", IMAGE, *command]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def close(self) -> None:
        """What a runtime does when its containers go: DEL each, then drop the namespaces."""
        for container, (namespace, config) in self.attached.items():
            self.cni("DEL", container, namespace, config)
        for name in self.namespaces:
            netns.delete(name)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    image = subprocess.run(["podman", "image", "exists", IMAGE], check=False)
    assert image.returncode == 0, f"the test image {IMAGE} is missing: make image"
    with Lab(hosts=2) as lab:
        lab.apply(MANIFEST)
        yield lab


@pytest.fixture
def runtime(lab: Lab) -> Iterator[Runtime]:
    runtime = Runtime(lab)
    try:
        yield runtime
    finally:
        runtime.close()


def test_version_names_the_spec_versions(runtime: Runtime) -> None:
    code, reply = runtime.cni("VERSION", "", "", {})
    assert code == 0 and "1.0.0" in reply["supportedVersions"]


def test_an_attached_container_reaches_a_linked_service_by_name_and_no_other(
    lab: Lab, runtime: Runtime
) -> None:
    edge_ns, stranger_ns = runtime.sandbox(), runtime.sandbox()
    code, result = runtime.cni("ADD", "c-edge-1", edge_ns, runtime.config("edge"))
    assert code == 0, result
    assert result["cniVersion"] == "1.0.0"
    assert result["interfaces"] == [
        {"name": "eth0", "mac": result["interfaces"][0]["mac"], "sandbox": netns.netns_path(edge_ns)}
    ]
    addresses = sorted(ip["address"] for ip in result["ips"])
    assert addresses[0].startswith("100.80.1.") and addresses[0].endswith("/32")
    assert addresses[1].startswith("fd00:80:0:1::") and addresses[1].endswith("/128")
    assert result["dns"] == {"nameservers": ["169.254.1.1"], "search": ["blue.autonet"]}
    again = runtime.cni("ADD", "c-edge-1", edge_ns, runtime.config("edge"))
    assert again == (0, result)  # ADD repeated: the same attachment

    edge = next(i for i in lab.instances("edge"))
    assert edge["status"]["state"] == "Provisioned" and edge["status"]["host"] == "h1"
    assert edge["spec"]["attachment"]["container_id"] == "c-edge-1"
    assert f"{edge['status']['ipv4']}/32" in addresses

    code, result = runtime.cni("ADD", "c-stranger-1", stranger_ns, runtime.config("stranger", host="h2"))
    assert code == 0, result

    allowed = runtime.run(edge_ns, "sh", "-c", FETCH_WEB)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.splitlines()[0] == web_vip(lab)  # the name resolved in the container
    assert allowed.stdout.splitlines()[-1] in {i["name"] for i in lab.instances("web")}
    refused = runtime.run(stranger_ns, "sh", "-c", FETCH_WEB)
    assert refused.returncode != 0, refused.stdout
    assert refused.stdout.splitlines() == [web_vip(lab)]  # it resolved the name too ...
    assert "Connection refused" in refused.stderr, refused.stderr  # ... and the policy refused it (RST)

    code, _ = runtime.cni("CHECK", "c-edge-1", edge_ns, runtime.config("edge"))
    assert code == 0
    subprocess.run(["ip", "-n", edge_ns, "addr", "flush", "dev", "eth0", "scope", "global"], check=True)
    code, drift = runtime.cni("CHECK", "c-edge-1", edge_ns, runtime.config("edge"))
    assert code == 1 and drift["code"] == 101 and "eth0 lacks" in drift["msg"]


def test_del_leaves_nothing_behind_and_can_be_repeated(lab: Lab, runtime: Runtime) -> None:
    sandbox = runtime.sandbox()
    code, result = runtime.cni("ADD", "c-gone-1", sandbox, runtime.config("edge", host="h2"))
    assert code == 0, result
    inst = next(i for i in lab.instances("edge") if i["spec"]["attachment"]["container_id"] == "c-gone-1")
    veth = inst["status"]["router_ifname"]
    router = inst["status"]["router_netns"]
    assert subprocess.run(["ip", "-n", router, "link", "show", veth], capture_output=True).returncode == 0

    code, reply = runtime.cni("DEL", "c-gone-1", sandbox, runtime.config("edge", host="h2"))
    assert (code, reply) == (0, None)
    assert inst["name"] not in {i["name"] for i in lab.instances("edge")}
    assert subprocess.run(["ip", "-n", router, "link", "show", veth], capture_output=True).returncode != 0
    links = subprocess.run(
        ["ip", "-n", sandbox, "-o", "link"], capture_output=True, text=True, check=True
    ).stdout
    assert "eth0" not in links  # the veth went with its router end
    assert netns.exists(sandbox)  # the runtime's namespace is its own
    assert inst["status"]["netns"] not in netns.list_names("an")  # the agent's name for it is gone
    assert runtime.cni("DEL", "c-gone-1", sandbox, runtime.config("edge", host="h2")) == (0, None)
    # The same namespace can be attached again (as a new container) after the DEL.
    code, result = runtime.cni("ADD", "c-gone-2", sandbox, runtime.config("edge", host="h2"))
    assert code == 0, result
    assert runtime.cni("DEL", "c-gone-2", sandbox, runtime.config("edge", host="h2")) == (0, None)
    assert "c-gone-2" not in {i["spec"]["attachment"]["container_id"] for i in lab.instances("edge")}
    assert runtime.cni("DEL", "c-never", "", runtime.config("edge")) == (0, None)


def test_bad_requests_get_cni_errors_and_change_nothing(lab: Lab, runtime: Runtime) -> None:
    sandbox = runtime.sandbox()
    before = {i["name"] for i in lab.instances()}
    code, error = runtime.cni("ADD", "c-x", sandbox, runtime.config("web"))
    assert code == 1 and error["code"] == 100 and "is not external" in error["msg"]
    code, error = runtime.cni("ADD", "c-x", sandbox, {**runtime.config("edge"), "cniVersion": "0.1.0"})
    assert code == 1 and error["code"] == 1
    code, error = runtime.cni("ADD", "c-x", sandbox, runtime.config("edge", host="h9"))
    assert code == 1 and 'host "h9" is not a host of this cluster' in error["msg"]
    code, error = runtime.cni("CHECK", "c-unknown", sandbox, runtime.config("edge"))
    assert code == 1 and error["code"] == 3
    assert {i["name"] for i in lab.instances()} == before


def test_the_hosts_own_namespaces_are_never_attached(lab: Lab, runtime: Runtime) -> None:
    """A caller that may attach names namespaces that are not a container's: the agent's
    own (the host's network) and an instance's. Both are refused, and neither changes."""
    agent = next(p.pid for p in lab.info.processes if p.role == "h1")
    web = next(i for i in lab.instances("web") if i["status"]["host"] == "h1")
    targets = [
        (f"/proc/{agent}/ns/net", "the host's own network namespace", naming.lab_netns(lab.name, "h1")),
        (netns.netns_path(web["status"]["netns"]), "a namespace autonet manages", web["status"]["netns"]),
    ]
    for index, (path, words, name) in enumerate(targets):
        links = interfaces(name) if netns.exists(name) else None
        container = f"c-evil-{index}"
        code, error = runtime.cni("ADD", container, "", runtime.config("edge"), path=path)
        assert code == 1 and words in error["msg"], error
        assert runtime.cni("DEL", container, "", runtime.config("edge"), path=path) == (0, None)
        if links is not None:
            assert interfaces(name) == links  # no eth0 moved in, nothing renamed
    probe = runtime.sandbox()  # the control: an ordinary namespace attaches and is answered
    code, result = runtime.cni("ADD", "c-fine", probe, runtime.config("edge"))
    assert code == 0, result
    fetched = runtime.run(probe, "sh", "-c", FETCH_WEB)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.splitlines()[-1] in {i["name"] for i in lab.instances("web")}


def interfaces(name: str) -> list[str]:
    listed = subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True, text=True, check=True)
    return sorted(line.split(":")[1].strip() for line in listed.stdout.splitlines())


class PodmanCni:
    """podman with its CNI backend, configured for this test alone (CONTAINERS_CONF:
    `network_backend = "cni"`, autonet-cni on the plugin path, a config directory of
    its own): the runtime runs the plugin, as it would for any CNI network."""

    def __init__(self, lab: Lab, directory: Path) -> None:
        self.directory = directory
        (directory / "net.d").mkdir()
        (directory / "containers.conf").write_text(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{Path(plugin()).parent}", "/usr/lib/cni"]\n'
            f'network_config_dir = "{directory / "net.d"}"\n'
        )
        for automaton in ("edge", "stranger"):
            plugin_config = {"type": "autonet-cni", "automaton": automaton, "host": "h1", "lab": lab.name}
            conflist = {"cniVersion": "1.0.0", "name": f"an{automaton}", "plugins": [plugin_config]}
            (directory / "net.d" / f"an{automaton}.conflist").write_text(json.dumps(conflist))
        self.env = {**os.environ, "CONTAINERS_CONF": str(directory / "containers.conf")}
        self.containers: list[tuple[str, str]] = []

    def podman(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args]
        return subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=120)

    def start(self, network: str) -> str:
        name = f"an-cni-{uuid.uuid4().hex[:8]}"
        self.containers.append((name, network))
        started = self.podman("run", "--detach", "--name", name, "--network", network,
                              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                              IMAGE, "sleep", "120")  # fmt: skip
        assert started.returncode == 0, started.stderr
        return name

    def disconnect(self, name: str, network: str) -> None:
        """podman runs DEL here, in this process's environment. (When a container stops,
        podman's cleanup process runs DEL too, but from a mount namespace of its own in
        which the lab's API socket under /run is not always there: a test cannot rely on it.)"""
        done = self.podman("network", "disconnect", network, name)
        assert done.returncode == 0, done.stderr

    def close(self) -> None:
        for name, network in self.containers:
            self.podman("network", "disconnect", network, name)
            self.podman("rm", "--force", "--time", "0", name)


def test_podman_with_its_cni_backend_attaches_and_detaches_through_the_plugin(
    lab: Lab, tmp_path: Path
) -> None:
    runtime = PodmanCni(lab, tmp_path)
    ids: dict[str, str] = {}
    try:
        edge = runtime.start("anedge")
        stranger = runtime.start("anstranger")
        attached = {
            i["spec"]["attachment"]["container_id"]: i for i in lab.instances() if i["spec"].get("attachment")
        }
        ids = {
            name: runtime.podman("inspect", "--format", "{{.Id}}", name).stdout.strip()
            for name in (edge, stranger)
        }
        assert ids[edge] in attached and ids[stranger] in attached  # podman ran ADD for each
        assert attached[ids[edge]]["status"]["state"] == "Provisioned"
        allowed = runtime.podman("exec", edge, "sh", "-c", FETCH_WEB)
        assert allowed.returncode == 0, allowed.stderr
        assert allowed.stdout.splitlines()[-1] in {i["name"] for i in lab.instances("web")}
        refused = runtime.podman("exec", stranger, "sh", "-c", FETCH_WEB)
        assert refused.returncode != 0 and "Connection refused" in refused.stderr, refused.stderr
        runtime.disconnect(edge, "anedge")  # podman runs DEL: the instance goes

        def attached_ids() -> set[str]:
            return {
                i["spec"]["attachment"]["container_id"]
                for i in lab.instances()
                if i["spec"].get("attachment")
            }

        wait_for(lambda: ids[edge] not in attached_ids(), 30, "the removed container's instance gone")
        assert ids[stranger] in attached_ids()  # the control: the other container stays attached
    finally:
        runtime.close()
    left = {i["spec"]["attachment"]["container_id"] for i in lab.instances() if i["spec"].get("attachment")}
    assert not left & set(ids.values())
