"""Labs: several simulated hosts on one machine, each a namespace running a real agent.

    anl<lab>u   the underlay switch: bridge br0
    anl<lab>c   the control namespace of controller c1 (its API on a Unix socket and on TCP)
    anl<lab>c2  controller c2 ... (with --controllers N)
    anl<lab>e1  etcd member e1 ... e3 (with --store etcd, which N > 1 implies)
    anl<lab>h1  host 1: underlay address on eth0, the agent, and under it the host's
    ...         router and instance namespaces (named with the host's tag)

Each host's agent leases its instances' uids from a block of its own (naming.lab_uid_range).
Underlay addresses: 100.64.0.0/24 (IPv4) or fd00:64::/64 (IPv6): controller N at .N,
host N at .(10+N), etcd member N at .(250+N); each lab has its own switch namespace, so
labs side by side do not see each other. Nothing in the root namespace is touched.
`lab down` ends the lab's processes by PID (checked against their start time), removes
every namespace it made, its hosts' cgroups (`autonet/<host tag>`) and its files (the
lab directory, etcd's data on tmpfs).

Roles: `controller` (also `c1`), `c2`..`cN`, `e1`..`e3`, `h1`..`hN`. The first controller
keeps the files of a one-controller lab (`api.sock`, `logs/controller.log`); the others
have `api-cN.sock` and `logs/cN.log`. `pki/` holds the lab's CA and the certificates of
its controllers (`cN`), agents (`hN`, CN = host name), etcd members and admin
(cli/labetcd.py); with etcd every controller runs on the etcd cluster. The agents' gRPC
is mutual TLS with these certificates (agent/rpc/tls.py): agents and controllers get
`--tls-cert/--tls-key/--ca`, and `autonet pki issue --dir <lab>/pki` rotates one live.
The controllers serve their API over HTTPS on TCP with their certificates, the agents
report to them with theirs, and `admin.token` is the lab's admin API token (0600,
minted at `lab up`).
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
from autonet.cli import labetcd, paths
from autonet.cli.client import Client, CliError
from autonet.dataplane import cgroups, containers, netns, topology
from autonet.dataplane.netlink import Netlink, call, link_index
from autonet.dataplane.nsexec import launcher_argv
from autonet.model import naming, pki
from autonet.model.kinds import check_name

AGENT_PORT = 7070
API_PORT = 7080
BRIDGE = "br0"
MAX_HOSTS = 200
ETCD_INDEX = 250  # etcd member N at underlay .(250+N)
STORES = ("sqlite", "etcd")
FIRST_CONTROLLER = "controller"  # c1's role in lab.json and the name of its log
ALIASES = {"c1": FIRST_CONTROLLER}


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
    controllers: int = 1
    store: str = "sqlite"
    scratch: str = ""  # etcd's data dir on tmpfs, outside the lab dir: removed by `lab down`
    membership: bool = False  # controllers take --id/--advertise (controller membership)

    @property
    def dir(self) -> Path:
        return paths.lab_dir(self.name)

    @property
    def api(self) -> str:
        """Every controller's API socket, comma-separated (c1's first): the CLI fails over."""
        return ",".join(self.controller_api(i) for i in range(1, self.controllers + 1))

    def controller_api(self, index: int) -> str:
        return "unix:" + str(paths.api_socket(self.name, index))

    def host_names(self) -> list[str]:
        return [f"h{i}" for i in range(1, self.hosts + 1)]

    def controller_names(self) -> list[str]:
        return [f"c{i}" for i in range(1, self.controllers + 1)]

    def etcd_names(self) -> list[str]:
        return labetcd.member_names() if self.store == "etcd" else []

    def address(self, index: int) -> str:
        """Underlay address number `index`: controller N is N, host N is 10+N."""
        return f"100.64.0.{index}" if self.underlay == "ipv4" else f"fd00:64::{index:x}"

    def cidr(self, index: int) -> str:
        return self.address(index) + ("/24" if self.underlay == "ipv4" else "/64")

    def index(self, role: str) -> int:
        """The underlay address number of a lab daemon's role (controller, cN, eN, hN)."""
        role = ALIASES.get(role, role)
        if role == FIRST_CONTROLLER:
            return 1
        number = int(role[1:])
        return {"c": 0, "h": 10, "e": ETCD_INDEX}[role[0]] + number

    def netns(self, role: str) -> str:
        """The namespace of a role: `anl<lab>c` for c1, as in a one-controller lab."""
        role = ALIASES.get(role, role)
        return naming.lab_netns(self.name, "c" if role == FIRST_CONTROLLER else role)

    def etcd_members(self) -> dict[str, str]:
        return {name: self.address(self.index(name)) for name in self.etcd_names()}

    def pki(self) -> pki.PkiDir:
        return pki.PkiDir(self.dir / "pki")

    def netns_names(self) -> list[str]:
        roles = [FIRST_CONTROLLER, *self.controller_names()[1:], *self.etcd_names(), *self.host_names()]
        return [naming.lab_netns(self.name, "u"), *(self.netns(role) for role in roles)]

    def host_tags(self) -> list[str]:
        return [naming.host_tag(self.name, host) for host in self.host_names()]

    def process(self, role: str) -> LabProcess | None:
        role = ALIASES.get(role, role)
        return next((p for p in self.processes if p.role == role), None)

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / paths.LAB_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, name: str) -> LabInfo | None:
        path = paths.lab_dir(name) / paths.LAB_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["processes"] = [LabProcess(**p) for p in data.get("processes", [])]
        return cls(**data)


def _bracket(address: str) -> str:
    return labetcd.bracket(address)


def _log(info: LabInfo, role: str) -> Path:
    return info.dir / "logs" / f"{role}.log"


def _spawn(info: LabInfo, role: str, argv: list[str]) -> LabProcess:
    _log(info, role).parent.mkdir(parents=True, exist_ok=True)
    with open(_log(info, role), "ab") as log:
        proc = subprocess.Popen(
            launcher_argv(info.netns(role), argv, user="root"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    proc.returncode = 0  # detached: lab down ends it by PID
    return LabProcess(role, proc.pid, process_start_time(proc.pid))


def api_url(info: LabInfo, index: int) -> str:
    """Controller number `index`'s API over the underlay (HTTPS)."""
    return f"https://{_bracket(info.address(index))}:{API_PORT}"


def tls_args(info: LabInfo, name: str) -> list[str]:
    """`--tls-cert/--tls-key/--ca` of a lab daemon (cN or hN): its certificate from the
    lab's PKI, for the agents' mutual-TLS gRPC and the controllers' https API."""
    certs = info.pki()
    return [
        "--tls-cert",
        str(certs.cert(name)),
        "--tls-key",
        str(certs.key(name)),
        "--ca",
        str(certs.ca_cert),
    ]


def store_args(info: LabInfo, index: int) -> list[str]:
    """`--store` (and etcd's TLS flags) of controller number `index`."""
    if info.store == "sqlite":
        return ["--store", f"sqlite:///{info.dir / 'store.db'}"]
    endpoints = ",".join(
        f"{_bracket(address)}:{labetcd.CLIENT_PORT}" for address in info.etcd_members().values()
    )
    certs, name = info.pki(), f"c{index}"
    return [
        "--store", f"etcd://{endpoints}",
        "--etcd-cacert", str(certs.ca_cert),
        "--etcd-cert", str(certs.cert(name)),
        "--etcd-key", str(certs.key(name)),
    ]  # fmt: skip


def controller_argv(info: LabInfo, index: int = 1) -> list[str]:
    member = ["--id", f"c{index}", "--advertise", api_url(info, index)] if info.membership else []
    return [
        sys.executable,
        "-m",
        "autonet.cli.main",
        "controller",
        *store_args(info, index),
        "--listen",
        info.controller_api(index),
        "--listen",
        f"tcp:{_bracket(info.address(index))}:{API_PORT}",
        *member,
        *[arg for spec in info.overwatch for arg in ("--overwatch", spec)],
        *tls_args(info, f"c{index}"),
    ]


def agent_argv(info: LabInfo, host: str, index: int) -> list[str]:
    address = info.address(10 + index)
    first, last = naming.lab_uid_range(naming.host_tag(info.name, host))
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
        ",".join(api_url(info, i) for i in range(1, info.controllers + 1)),
        "--state-dir",
        str(info.dir / "hosts" / host),
        "--uid-range",  # lab hosts share a kernel: each leases its own block of uids
        f"{first}-{last}",
        *tls_args(info, host),
    ]


def etcd_argv(info: LabInfo, member: str) -> list[str]:
    return labetcd.member_argv(
        member, info.etcd_members(), Path(info.scratch), info.pki(), f"autonet-lab-{info.name}"
    )


def argv_of(info: LabInfo, role: str) -> list[str]:
    """The command line of a lab daemon."""
    role = ALIASES.get(role, role)
    if role == FIRST_CONTROLLER or role.startswith("c"):
        return controller_argv(info, info.index(role))
    if role.startswith("e"):
        return etcd_argv(info, role)
    return agent_argv(info, role, info.index(role) - 10)


async def _build_network(info: LabInfo) -> None:
    nl = Netlink()
    try:
        switch = naming.lab_netns(info.name, "u")
        await topology.ensure_bridge(nl, switch, BRIDGE)
        roles = [FIRST_CONTROLLER, *info.controller_names()[1:], *info.etcd_names(), *info.host_names()]
        for role in roles:
            port = "pc" if role == FIRST_CONTROLLER else f"p{role}"
            await topology.plug(
                nl, switch, BRIDGE, port, info.netns(role), "eth0", [info.cidr(info.index(role))]
            )
    finally:
        nl.close()


def up(
    name: str,
    hosts: int,
    underlay: str,
    timeout: float = 60.0,
    overwatch: list[str] | None = None,
    controllers: int = 1,
    store: str | None = None,
    membership: bool = False,
) -> LabInfo:
    """Build a lab and wait until every daemon serves and every host is Ready.

    `controllers` > 1 implies `store` etcd (a 3-member cluster over mTLS); SQLite serves
    one controller only. `membership`: the controllers take `--id`/`--advertise`."""
    check_name("Lab", name)
    if not 1 <= hosts <= MAX_HOSTS:
        raise CliError(f"--hosts: must be between 1 and {MAX_HOSTS}")
    if underlay not in ("ipv4", "ipv6"):
        raise CliError("--underlay: must be ipv4 or ipv6")
    if not 1 <= controllers <= paths.MAX_LAB_CONTROLLERS:
        raise CliError(f"--controllers: must be between 1 and {paths.MAX_LAB_CONTROLLERS}")
    store = store or ("etcd" if controllers > 1 else "sqlite")
    if store not in STORES:
        raise CliError("--store: must be sqlite or etcd")
    if store == "sqlite" and controllers > 1:
        raise CliError("--store sqlite serves one controller: several need --store etcd")
    if store == "etcd" and not labetcd.ETCD.exists():
        raise CliError(f"--store etcd: {labetcd.ETCD} is missing (Debian package etcd-server; make deps)")
    existing = LabInfo.load(name)
    if existing is not None:
        if any(process_start_time(p.pid) == p.start for p in existing.processes):
            raise CliError(f'lab "{name}" is already up (autonet lab down --name {name})')
        down(name)
    info = LabInfo(
        name=name,
        hosts=hosts,
        underlay=underlay,
        overwatch=list(overwatch or []),
        controllers=controllers,
        store=store,
        membership=membership,
    )
    info.save()
    try:
        if store == "etcd":
            info.scratch = str(labetcd.scratch_dir(name))
            info.save()
            (info.dir / "etcd").symlink_to(info.scratch)
        controllers_at = {f"c{i}": info.address(i) for i in range(1, controllers + 1)}
        agents_at = {host: info.address(info.index(host)) for host in info.host_names()}
        labetcd.mint_pki(info.pki().path, info.etcd_members(), controllers_at, agents_at)
        asyncio.run(_build_network(info))
        for member in info.etcd_names():
            info.processes.append(_spawn(info, member, etcd_argv(info, member)))
        info.save()
        _wait_etcd(info, info.etcd_names(), timeout)
        roles = [FIRST_CONTROLLER, *info.controller_names()[1:], *info.host_names()]
        for role in roles:
            info.processes.append(_spawn(info, role, argv_of(info, role)))
            info.save()
        wait_ready(info, timeout)
        mint_admin_token(info)
    except BaseException:
        if not os.environ.get("AUTONET_LAB_KEEP_FAILED"):
            down(name)
        raise
    return info


def _last_words(info: LabInfo, role: str) -> str:
    """What a daemon that exited said last: its last line that names an error, else its last."""
    log = _log(info, role)
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    errors = [line for line in lines if any(w in line.lower() for w in ("error", "fatal", "not defined"))]
    return (errors or lines or ["no output"])[-1].strip()[:300]


def _check_alive(info: LabInfo, procs: list[LabProcess]) -> None:
    for proc in procs:
        if not _alive(proc):
            raise CliError(f"lab {info.name}: {proc.role} exited: {_last_words(info, proc.role)}")


def _wait_etcd(info: LabInfo, members: list[str], timeout: float) -> None:
    """Until each of `members` answers its health check (the cluster has a leader)."""
    if not members:
        return
    admin = labetcd.AdminClient.of(info.pki())
    addresses = info.etcd_members()
    deadline = time.monotonic() + timeout
    waiting = list(members)
    while waiting:
        _check_alive(info, [p for p in info.processes if p.role in members])
        waiting = [m for m in waiting if not admin.healthy(info.netns(m), addresses[m])]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise CliError(
                f"lab {info.name}: etcd {', '.join(waiting)} not healthy within {timeout:.0f}s{_log_tails(info)}"
            )
        time.sleep(0.1)


def mint_admin_token(info: LabInfo) -> None:
    """The lab's admin API token, made through c1's socket (root's) and kept in the lab
    directory (0600): the CLI uses it for this lab's https endpoints (cli/client.py)."""
    made = Client(info.controller_api(1)).request("POST", "/tokens", json={"role": "admin"})
    pki.write_file(paths.lab_token(info.name), made["token"].encode() + b"\n", pki.KEY_MODE)


def wait_ready(info: LabInfo, timeout: float) -> None:
    """Until every controller's API answers and every host is Ready."""
    deadline = time.monotonic() + timeout
    last = "the controllers have not started"
    while time.monotonic() < deadline:
        _check_alive(info, info.processes)
        try:
            for index in range(2, info.controllers + 1):
                Client(info.controller_api(index), timeout=2.0).objects("hosts")
            hosts = Client(info.controller_api(1), timeout=2.0).objects("hosts")
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
        log = _log(info, proc.role)
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        if lines:
            tails.append(f"{proc.role}: {lines[-1][:200]}")
    return f" (last log lines: {'; '.join(tails)})" if tails else ""


def _loaded(name: str) -> LabInfo:
    info = LabInfo.load(name)
    if info is None:
        raise CliError(f'lab "{name}" is not up')
    return info


def roles(info: LabInfo) -> list[str]:
    """The roles `lab kill`/`lab restart` take, as the user names them."""
    return [*info.controller_names(), *info.etcd_names(), *info.host_names()]


def _check_role(info: LabInfo, role: str, hosts_only: bool = False) -> str:
    """The role as lab.json records it (`c1` is `controller`); unknown ones fail in one line."""
    hosts = info.host_names()
    if role in hosts or (not hosts_only and (role == FIRST_CONTROLLER or role in roles(info))):
        return ALIASES.get(role, role)
    if hosts_only:
        raise CliError(f"unknown host {role!r}: one of {', '.join(hosts)}")
    raise CliError(f"unknown role {role!r}: controller or one of {', '.join(roles(info))}")


def _alive(proc: LabProcess | None) -> bool:
    """Whether the daemon runs. A daemon this process started and that has exited is
    reaped here: a zombie keeps its start time and would look alive."""
    if proc is None:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)
    return process_start_time(proc.pid) == proc.start


def respawn(name: str, role: str) -> LabProcess:
    """Start a lab daemon again (after a crash or a kill): a controller, an etcd member
    or a host's agent. Returns once a controller's API answers, or a member is healthy."""
    info = _loaded(name)
    role = _check_role(info, role)
    old = info.process(role)
    if old is not None:
        _stop(old)
        info.processes.remove(old)
    proc = _spawn(info, role, argv_of(info, role))
    info.processes.append(proc)
    info.save()
    if role in info.etcd_names():
        _wait_etcd(info, [role], 30.0)
    elif role == FIRST_CONTROLLER or role in info.controller_names():
        _wait_api(info, proc, info.index(role))
    return proc


def _wait_api(info: LabInfo, proc: LabProcess, index: int, timeout: float = 30.0) -> None:
    """A restarted controller is back when its own API answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(proc):
            raise CliError(f"lab {info.name}: {proc.role} exited{_log_tails(info)}")
        try:
            Client(info.controller_api(index), timeout=2.0).objects("hosts")
            return
        except CliError:
            time.sleep(0.1)
    raise CliError(f"lab {info.name}: the API of {proc.role} did not answer within {timeout:.0f}s")


def kill(name: str, role: str) -> LabProcess:
    """kill -9 a lab daemon (a controller, an etcd member or a host's agent); it stays
    dead until restarted."""
    info = _loaded(name)
    proc = info.process(_check_role(info, role))
    if proc is None or not _alive(proc):
        raise CliError(f"lab {name}: {role} is not running")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    _reap(proc)
    return proc


def _reap(*procs: LabProcess, timeout: float = 5.0) -> None:
    """Wait (at most `timeout` seconds) until the processes are gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(proc) for proc in procs):
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
    agent = info.process(host)
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
    agent = info.process(host)
    return None if _alive(agent) else respawn(name, host)


def _stop(*procs: LabProcess, sig: signal.Signals = signal.SIGTERM) -> None:
    """`sig` to the processes (their groups) at once; SIGKILL to those alive 5 s later."""
    running = [proc for proc in procs if _alive(proc)]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    _reap(*running)
    for proc in running:
        if _alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    _reap(*running, timeout=2.0)


def _kill_in(namespace: str) -> None:
    for pid in netns.pids_in(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def down(name: str) -> bool:
    """Stop the lab's daemons and processes and remove its namespaces and files."""
    info = LabInfo.load(name)
    if info is None:
        return False
    # etcd last: the controllers' shutdown may still write to it. Its data goes with the
    # lab, so no graceful stop (a leader stopping with its peers would first wait ~5 s
    # to hand over its leadership).
    _stop(*(p for p in info.processes if p.role not in info.etcd_names()))
    _stop(*(p for p in info.processes if p.role in info.etcd_names()), sig=signal.SIGKILL)
    # The hosts' containers, while podman's monitors (in the hosts' namespaces) still run
    # to see them out: killed mid-cleanup, a container can stay `Stopping` for a while.
    containers.remove(containers.of_hosts(info.host_tags()))
    prefixes = tuple(
        p
        for tag in info.host_tags()
        for p in (
            naming.instance_netns_prefix(tag),
            naming.router_netns_prefix(tag),
            naming.pool_netns_prefix(tag),
            naming.attached_netns_prefix(tag),  # only our name for them: their runtime's stay
        )
    )
    doomed = [n for n in netns.list_names("an") if n.startswith(prefixes)] + info.netns_names()
    for namespace in doomed:
        if not naming.is_attached_netns(namespace):
            _kill_in(namespace)
    for namespace in doomed:
        netns.delete(namespace)
    left = containers.remove_of_hosts(info.host_tags())  # any that outlived their monitors
    if left:
        print(f"lab {name}: containers not removed: {', '.join(left)}", file=sys.stderr)
    hierarchy = cgroups.detect()
    for tag in info.host_tags():
        with contextlib.suppress(cgroups.CgroupError):
            cgroups.remove_host(hierarchy, tag)
    if info.scratch:
        shutil.rmtree(info.scratch, ignore_errors=True)
    shutil.rmtree(info.dir, ignore_errors=True)
    return True


def status(name: str) -> dict[str, Any]:
    """The lab's shape and each daemon's role, kind, PID, whether it runs, where it serves."""
    info = _loaded(name)
    daemons = []
    for role in roles(info):
        proc = info.process(role)
        address = info.address(info.index(role))
        if role in info.etcd_names():
            kind, serves = "etcd", labetcd.client_url(address)
        elif role in info.controller_names():
            kind, serves = (
                "controller",
                f"{info.controller_api(info.index(role))} {api_url(info, info.index(role))}",
            )
        else:
            kind, serves = "agent", f"{_bracket(address)}:{AGENT_PORT}"
        daemons.append(
            {
                "role": role,
                "kind": kind,
                "pid": proc.pid if proc else None,
                "alive": _alive(proc),
                "serves": serves,
                "log": str(_log(info, proc.role if proc else ALIASES.get(role, role))),
            }
        )
    return {
        "name": info.name,
        "hosts": info.hosts,
        "controllers": info.controllers,
        "store": info.store,
        "underlay": info.underlay,
        "api": info.api,
        "pki": str(info.pki().path),
        "daemons": daemons,
    }


def list_labs() -> list[str]:
    root = paths.run_dir() / "labs"
    return sorted(p.name for p in root.iterdir() if (p / "lab.json").exists()) if root.exists() else []
