"""A lab for end-to-end tests, driven through the `autonet` command line.

Neutron-style helpers: `cli()` runs the real CLI in a subprocess, `exec_in()` runs a
command inside an instance, `assert_no_connection()` checks that a connection fails.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autonet.cli import lab as labs
from autonet.cli.client import wait_until as wait_for  # noqa: F401  (the tests' name for it)
from autonet.dataplane import netns
from autonet.model import manifest, naming

TCP_CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
    "except OSError as exc:\n"
    "    sys.exit(f'connect: {exc}')\n"
    "print('connected')\n"
)

FAILURE_KINDS = {
    "refused": ("Connection refused", "Connection reset"),
    "unreachable": ("No route to host", "Network is unreachable"),
    "timeout": ("timed out",),
}


EXAMPLE_SHOP = (Path(__file__).parents[2] / "examples" / "shop.yaml").read_text()


def shop_with(additions: str) -> str:
    """examples/shop.yaml (VPC blue, network blue-a, web x3, client, composition shop)
    with `additions`: more documents, or new versions of its own (same kind and name)."""
    docs = manifest.overlay(manifest.parse(EXAMPLE_SHOP), manifest.parse(additions))
    return yaml.safe_dump_all(docs, sort_keys=False)


def crafted_vxlan(
    vni: int, dst_mac: str, source: str, destination: str, port: int, src_mac: str = "02:00:00:00:00:01"
) -> bytes:
    """A VXLAN packet as an attacker on the underlay would make it: the VNI, an inner
    Ethernet frame to `dst_mac` carrying an IPv4 UDP datagram `source` -> `destination`:port."""
    payload = b"crafted"
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
        ipaddress.IPv4Address(source).packed, ipaddress.IPv4Address(destination).packed,
    )  # fmt: skip
    checksum = sum(struct.unpack("!10H", header))
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    checksum = ~((checksum & 0xFFFF) + (checksum >> 16)) & 0xFFFF
    header = header[:10] + struct.pack("!H", checksum) + header[12:]
    frame = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    return struct.pack("!II", 0x08000000, vni << 8) + frame + header + udp


SEND_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
for _ in range(3):
    s.sendto(bytes.fromhex(sys.argv[4]), (sys.argv[2], int(sys.argv[3])))
print('sent')
"""


def send_udp(namespace: str, source: str, destination: str, port: int, packet: bytes) -> None:
    """Three datagrams of `packet` from `source` in `namespace` to destination:port."""
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", SEND_UDP,
         source, destination, str(port), packet.hex()],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.stdout.strip() == "sent", result.stderr


def interruptible() -> None:
    """A `preexec_fn`: Ctrl-C (SIGINT) reaches the command as it would from a terminal.
    A suite run in the background (as CI runs it) has SIGINT ignored, which children
    inherit, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def failure_kind(stderr: str) -> str:
    """How a connection failed: refused (RST), unreachable (ICMP), timeout, or other
    (a typo, NXDOMAIN, an unwired instance ... which no negative test may count)."""
    for kind, texts in FAILURE_KINDS.items():
        if any(text in stderr for text in texts):
            return kind
    return "other"


@dataclass
class Result:
    code: int
    out: str
    err: str


class Lab:
    def __init__(
        self,
        hosts: int = 1,
        underlay: str = "ipv4",
        env: dict[str, str] | None = None,
        controllers: int = 1,
        store: str | None = None,
        up_args: tuple[str, ...] = (),
    ) -> None:
        self.name = "t" + uuid.uuid4().hex[:8]
        self.hosts = hosts
        self.underlay = underlay
        self.controllers = controllers
        self.store = store
        self.env = dict(env or {})  # for every command, so `lab up` hands it on to the daemons
        self.up_args = up_args  # more `lab up` flags (e.g. --overwatch)
        self.up_seconds = 0.0  # how long `lab up` took

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        args = ["--name", self.name, "--hosts", str(self.hosts), "--underlay", self.underlay]
        if self.controllers != 1:
            args += ["--controllers", str(self.controllers)]
        if self.store:
            args += ["--store", self.store]
        args += self.up_args
        started = time.monotonic()
        result = self.cli("lab", "up", *args)
        self.up_seconds = time.monotonic() - started
        assert result.code == 0, result.err

    def down(self) -> None:
        labs.down(self.name)

    @property
    def info(self) -> labs.LabInfo:
        info = labs.LabInfo.load(self.name)
        assert info is not None
        return info

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 180) -> Result:
        env = {**os.environ, **self.env, "AUTONET_LAB": self.name}
        proc = subprocess.run(
            [sys.executable, "-m", "autonet.cli.main", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def remote(
        self,
        *args: str,
        token: str | None = None,
        stdin: str | None = None,
        host: str = "h2",
        controller: int = 1,
    ) -> Result:
        """The CLI run in `host`'s namespace (a machine on the underlay) against controller
        number `controller` over HTTPS, with `token` only (AUTONET_LAB names no lab, so
        the lab's own admin token is not picked up)."""
        env = {**os.environ, **self.env, "AUTONET_LAB": "an-no-lab"}
        for name in ("AUTONET_TOKEN", "AUTONET_API", "AUTONET_CA"):
            env.pop(name, None)
        url = labs.api_url(self.info, controller)
        creds = ["--token", token] if token else []
        ca = str(self.info.pki().ca_cert)
        argv = [sys.executable, "-m", "autonet.cli.main", "--api", url, "--ca", ca, *creds, *args]
        proc = subprocess.run(
            ["ip", "netns", "exec", self.info.netns(host), *argv],
            input=stdin, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, stdin: str | None = None, timeout: float = 180) -> str:
        result = self.cli(*args, stdin=stdin, timeout=timeout)
        assert result.code == 0, f"autonet {' '.join(args)} failed ({result.code}): {result.err.strip()}"
        return result.out

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))

    def apply(self, manifest: str, wait: bool = True, timeout: float = 120) -> str:
        args = ["apply", "-f", "-"] + (["--wait", "--timeout", str(timeout)] if wait else [])
        return self.ok(*args, stdin=manifest, timeout=timeout + 30)

    def instances(self, automaton: str | None = None) -> list[dict[str, Any]]:
        found = self.json("get", "instances")
        return [i for i in found if automaton is None or i["spec"]["automaton"] == automaton]

    def exec_in(self, instance: str, *command: str) -> Result:
        """`autonet exec`: as the instance's own user, in its namespace and cgroup."""
        return self.cli("exec", instance, "--", *command, timeout=60)

    def root_in(self, instance: str, *command: str) -> subprocess.CompletedProcess[str]:
        """A command as root in the instance's network namespace (`ip netns exec`), as an
        attacker with root there, or a test that needs a raw socket, would run it."""
        netns = self.json("get", "instance", instance)["status"]["netns"]
        return subprocess.run(
            ["ip", "netns", "exec", netns, *command], capture_output=True, text=True, timeout=60
        )

    def http_get(self, instance: str, url: str) -> Result:
        return self.exec_in(instance, "python3", "-m", "autonet.examples.http_get", url, "--timeout", "3")

    def assert_no_connection(
        self, instance: str, url: str, kinds: tuple[str, ...] = ("refused",), allowed_from: str = ""
    ) -> None:
        """`instance` cannot fetch `url`, and fails the way promised (`kinds` of
        `failure_kind`); with `allowed_from`, the same probe from there succeeds (the
        positive control: the target exists and serves, so the failure is the policy's)."""
        if allowed_from:
            control = self.http_get(allowed_from, url)
            assert control.code == 0, f"positive control {allowed_from} -> {url} failed: {control.err}"
        result = self.http_get(instance, url)
        assert result.code != 0, f"{instance} reached {url}: {result.out!r}"
        kind = failure_kind(result.err)
        assert kind in kinds, f"{instance} -> {url} failed as {kind!r}, expected {kinds}: {result.err!r}"

    def connect(self, instance: str, host: str, port: int) -> Result:
        """A TCP connect from inside `instance` (stdout: `connected`, or stderr: the error)."""
        return self.exec_in(instance, "python3", "-c", TCP_CONNECT, host, str(port))

    # -- the kernel's view ----------------------------------------------------------------------
    def host_tags(self) -> list[str]:
        return [naming.host_tag(self.name, f"h{i}") for i in range(1, self.hosts + 1)]

    def kernel_netns(self) -> list[str]:
        """Instance and router namespaces of this lab's hosts that exist in the kernel."""
        prefixes = tuple(p for t in self.host_tags() for p in (f"ani{t}", f"anr{t}"))
        return [n for n in netns.list_names("an") if n.startswith(prefixes)]
