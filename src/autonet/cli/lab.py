"""Labs: several simulated hosts on one machine, each a namespace running a real agent.

    anl<lab>u   the underlay switch: bridge br0
    anl<lab>c   the control namespace: the controller (API on a Unix socket and on TCP)
    anl<lab>h1  host 1: underlay address on eth0, the agent, and under it the host's
    ...         router and instance namespaces (named with the host's tag)

Underlay addresses: 100.64.0.0/24 (IPv4) or fd00:64::/64 (IPv6), the controller at .1
and host N at .(10+N); each lab has its own switch namespace, so labs side by side do
not see each other. Nothing in the root namespace is touched. `lab down` ends the lab's
processes by PID (checked against their start time) and removes every namespace it made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autonet.agent.supervisor import process_start_time
from autonet.cli import paths
from autonet.cli.client import Client, CliError
from autonet.dataplane import netns, topology
from autonet.dataplane.netlink import Netlink, call, link_index
from autonet.dataplane.nsexec import launcher_argv
from autonet.model import naming
from autonet.model.kinds import check_name

AGENT_PORT = 7070
API_PORT = 7080
BRIDGE = "br0"
MAX_HOSTS = 200


@dataclass
class LabProcess:
    role: str
    pid: int
    start: int


@dataclass
class LabInfo:
    name: str
    hosts: int
    underlay: str
    overwatch: list[str] = field(default_factory=list)
    processes: list[LabProcess] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return paths.lab_dir(self.name)

    @property
    def api(self) -> str:
        return "unix:" + str(self.dir / "api.sock")

    def host_names(self) -> list[str]:
        return [f"h{i}" for i in range(1, self.hosts + 1)]

    def address(self, index: int) -> str:
        """Underlay address of the controller (0) or host N."""
        return f"100.64.0.{index}" if self.underlay == "ipv4" else f"fd00:64::{index:x}"

    def cidr(self, index: int) -> str:
        return self.address(index) + ("/24" if self.underlay == "ipv4" else "/64")

    def netns_names(self) -> list[str]:
        return [naming.lab_netns(self.name, role) for role in ["u", "c", *self.host_names()]]

    def host_tags(self) -> list[str]:
        return [naming.host_tag(self.name, host) for host in self.host_names()]

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "lab.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, name: str) -> LabInfo | None:
        path = paths.lab_dir(name) / "lab.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["processes"] = [LabProcess(**p) for p in data.get("processes", [])]
        return cls(**data)


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _spawn(info: LabInfo, role: str, namespace: str, argv: list[str]) -> LabProcess:
    logs = info.dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{role}.log", "ab") as log:
        proc = subprocess.Popen(
            launcher_argv(namespace, argv, user="root"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    proc.returncode = 0  # detached: lab down ends it by PID
    return LabProcess(role, proc.pid, process_start_time(proc.pid))


def controller_argv(info: LabInfo) -> list[str]:
    return [
        sys.executable,
        "-m",
        "autonet.cli.main",
        "controller",
        "--store",
        f"sqlite:///{info.dir / 'store.db'}",
        "--listen",
        info.api,
        "--listen",
        f"tcp:{_bracket(info.address(1))}:{API_PORT}",
        *[arg for spec in info.overwatch for arg in ("--overwatch", spec)],
    ]


def agent_argv(info: LabInfo, host: str, index: int) -> list[str]:
    address = info.address(10 + index)
    return [
        sys.executable,
        "-m",
        "autonet.cli.main",
        "agent",
        "--name",
        host,
        "--cluster",
        info.name,
        "--underlay",
        address,
        "--listen",
        f"{_bracket(address)}:{AGENT_PORT}",
        "--controller",
        f"http://{_bracket(info.address(1))}:{API_PORT}",
        "--state-dir",
        str(info.dir / "hosts" / host),
    ]


async def _build_network(info: LabInfo) -> None:
    nl = Netlink()
    try:
        switch = naming.lab_netns(info.name, "u")
        await topology.ensure_bridge(nl, switch, BRIDGE)
        await topology.plug(
            nl, switch, BRIDGE, "pc", naming.lab_netns(info.name, "c"), "eth0", [info.cidr(1)]
        )
        for index, host in enumerate(info.host_names(), start=1):
            await topology.plug(
                nl,
                switch,
                BRIDGE,
                f"p{host}",
                naming.lab_netns(info.name, host),
                "eth0",
                [info.cidr(10 + index)],
            )
    finally:
        nl.close()


def up(
    name: str, hosts: int, underlay: str, timeout: float = 60.0, overwatch: list[str] | None = None
) -> LabInfo:
    check_name("Lab", name)
    if not 1 <= hosts <= MAX_HOSTS:
        raise CliError(f"--hosts: must be between 1 and {MAX_HOSTS}")
    if underlay not in ("ipv4", "ipv6"):
        raise CliError("--underlay: must be ipv4 or ipv6")
    existing = LabInfo.load(name)
    if existing is not None:
        if any(process_start_time(p.pid) == p.start for p in existing.processes):
            raise CliError(f'lab "{name}" is already up (autonet lab down --name {name})')
        down(name)
    info = LabInfo(name=name, hosts=hosts, underlay=underlay, overwatch=list(overwatch or []))
    info.save()
    try:
        asyncio.run(_build_network(info))
        info.processes.append(_spawn(info, "controller", naming.lab_netns(name, "c"), controller_argv(info)))
        info.save()
        for index, host in enumerate(info.host_names(), start=1):
            info.processes.append(
                _spawn(info, host, naming.lab_netns(name, host), agent_argv(info, host, index))
            )
        info.save()
        wait_ready(info, timeout)
    except BaseException:
        if not os.environ.get("AUTONET_LAB_KEEP_FAILED"):
            down(name)
        raise
    return info


def wait_ready(info: LabInfo, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "the controller has not started"
    while time.monotonic() < deadline:
        for proc in info.processes:
            if process_start_time(proc.pid) != proc.start:
                log = info.dir / "logs" / f"{proc.role}.log"
                tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
                raise CliError(f"lab {info.name}: {proc.role} exited: {' '.join(tail) or 'no output'}")
        if (info.dir / "api.sock").exists():
            try:
                hosts = Client(info.api, timeout=2.0).objects("hosts")
                ready = [h for h in hosts if h["status"].get("state") == "Ready"]
                if len(ready) == info.hosts:
                    return
                last = f"{len(ready)} of {info.hosts} hosts Ready"
            except CliError as exc:
                last = str(exc)
        time.sleep(0.1)
    raise CliError(f"lab {info.name} did not come up within {timeout:.0f}s: {last}{_log_tails(info)}")


def _log_tails(info: LabInfo) -> str:
    tails = []
    for proc in info.processes:
        log = info.dir / "logs" / f"{proc.role}.log"
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        if lines:
            tails.append(f"{proc.role}: {lines[-1][:200]}")
    return f" (last log lines: {'; '.join(tails)})" if tails else ""


def _loaded(name: str) -> LabInfo:
    info = LabInfo.load(name)
    if info is None:
        raise CliError(f'lab "{name}" is not up')
    return info


def _check_role(info: LabInfo, role: str, hosts_only: bool = False) -> None:
    hosts = info.host_names()
    if role in hosts or (role == "controller" and not hosts_only):
        return
    expected = f"one of {', '.join(hosts)}" if hosts_only else f"controller or one of {', '.join(hosts)}"
    raise CliError(f"unknown {'host' if hosts_only else 'role'} {role!r}: {expected}")


def _alive(proc: LabProcess | None) -> bool:
    return proc is not None and process_start_time(proc.pid) == proc.start


def respawn(name: str, role: str) -> LabProcess:
    """Start a lab daemon again (after a crash or a kill): `controller` or a host name."""
    info = _loaded(name)
    hosts = info.host_names()
    _check_role(info, role)
    old = next((p for p in info.processes if p.role == role), None)
    if old is not None:
        _stop(old)
        info.processes.remove(old)
    if role == "controller":
        argv, namespace = controller_argv(info), naming.lab_netns(name, "c")
    else:
        argv, namespace = agent_argv(info, role, hosts.index(role) + 1), naming.lab_netns(name, role)
    proc = _spawn(info, role, namespace, argv)
    info.processes.append(proc)
    info.save()
    if role == "controller":
        _wait_api(info, proc)
    return proc


def _wait_api(info: LabInfo, proc: LabProcess, timeout: float = 30.0) -> None:
    """A restarted controller is back when its API answers (the next command works)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(proc):
            raise CliError(f"lab {info.name}: the controller exited{_log_tails(info)}")
        try:
            Client(info.api, timeout=2.0).objects("hosts")
            return
        except CliError:
            time.sleep(0.1)
    raise CliError(f"lab {info.name}: the controller's API did not answer within {timeout:.0f}s")


def kill(name: str, role: str) -> LabProcess:
    """kill -9 a lab daemon (`controller` or a host's agent); it stays dead until restarted."""
    info = _loaded(name)
    _check_role(info, role)
    proc = next((p for p in info.processes if p.role == role), None)
    if proc is None or not _alive(proc):
        raise CliError(f"lab {name}: {role} is not running")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    _reap(proc)
    return proc


def _reap(proc: LabProcess) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and process_start_time(proc.pid) == proc.start:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)
        time.sleep(0.02)


def _host_namespaces(info: LabInfo, host: str) -> list[str]:
    """The host's own namespace and every router and instance namespace of its agent."""
    tag = naming.host_tag(info.name, host)
    prefixes = (naming.instance_netns_prefix(tag), naming.router_netns_prefix(tag))
    return [naming.lab_netns(info.name, host), *(n for n in netns.list_names("an") if n.startswith(prefixes))]


async def _set_underlay(info: LabInfo, host: str, up: bool) -> None:
    """Unplug (or plug back) the host's cable at the underlay switch."""
    nl = Netlink()
    try:
        switch = await nl.ns(naming.lab_netns(info.name, "u"))
        index = await link_index(switch, f"p{host}")
        if index is None:
            raise CliError(f"lab {info.name}: host {host} has no underlay port")
        await call(switch.link("set", index=index, state="up" if up else "down"))
    finally:
        nl.close()


def fail(name: str, host: str) -> int:
    """The machine crashes: its agent and every process on it get SIGKILL and its underlay
    link goes down; its namespaces stay, as a crashed machine's disk would. Returns the
    number of processes killed."""
    info = _loaded(name)
    _check_role(info, host, hosts_only=True)
    asyncio.run(_set_underlay(info, host, up=False))
    killed = 0
    for namespace in _host_namespaces(info, host):
        for pid in netns.pids_in(namespace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    agent = next((p for p in info.processes if p.role == host), None)
    if agent is not None:
        _reap(agent)
    return killed


def partition(name: str, host: str) -> None:
    """Only the host's underlay link goes down; its agent and instances keep running."""
    info = _loaded(name)
    _check_role(info, host, hosts_only=True)
    asyncio.run(_set_underlay(info, host, up=False))


def heal(name: str, host: str) -> LabProcess | None:
    """The underlay link comes up again, and a dead agent is started again (returned)."""
    info = _loaded(name)
    _check_role(info, host, hosts_only=True)
    asyncio.run(_set_underlay(info, host, up=True))
    agent = next((p for p in info.processes if p.role == host), None)
    return None if _alive(agent) else respawn(name, host)


def _stop(proc: LabProcess) -> None:
    if process_start_time(proc.pid) != proc.start:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    _reap(proc)
    if process_start_time(proc.pid) == proc.start:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _kill_in(namespace: str) -> None:
    for pid in netns.pids_in(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def down(name: str) -> bool:
    """Stop the lab's daemons and processes and remove its namespaces and files."""
    info = LabInfo.load(name)
    if info is None:
        return False
    for proc in info.processes:
        _stop(proc)
    prefixes = tuple(
        p
        for tag in info.host_tags()
        for p in (
            naming.instance_netns_prefix(tag),
            naming.router_netns_prefix(tag),
            naming.pool_netns_prefix(tag),
        )
    )
    doomed = [n for n in netns.list_names("an") if n.startswith(prefixes)] + info.netns_names()
    for namespace in doomed:
        _kill_in(namespace)
    for namespace in doomed:
        netns.delete(namespace)
    shutil.rmtree(info.dir, ignore_errors=True)
    return True


def status(name: str) -> dict[str, Any]:
    info = LabInfo.load(name)
    if info is None:
        raise CliError(f'lab "{name}" is not up')
    alive = {p.role: process_start_time(p.pid) == p.start for p in info.processes}
    return {
        "name": info.name,
        "hosts": info.hosts,
        "underlay": info.underlay,
        "api": info.api,
        "processes": alive,
    }


def list_labs() -> list[str]:
    root = paths.run_dir() / "labs"
    return sorted(p.name for p in root.iterdir() if (p / "lab.json").exists()) if root.exists() else []
