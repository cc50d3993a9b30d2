"""`autonet bench scale`: the control plane at fleet size, on hollow hosts (no kernels).

One run starts a real controller process (its own SQLite store and API socket in a
temporary directory) and N hollow hosts (agent/hollow.py, 50 per child process) that
register with it over HTTP, then grows the fleet's instances in three stages (M/10,
M/3, M) across V VPCs. Each VPC is a network, a server automaton providing tcp/8080,
a client automaton consuming it and a composition linking them; replicas are split
evenly over the VPCs, and within a VPC half servers, half clients. Measured:

- per stage, and in all: seconds from the apply until every instance is Provisioned,
  and instances per second (the probes below are not counted in these times);
- controller resident memory (VmRSS) after the last stage minus before the first apply,
  per instance, in KiB;
- placement decision time p50/p99 per stage: the scheduler's timings
  (`GET /api/v1/stats`, `placement.decision` = reading its inputs + `choose_host`);
- per event at each stage's size: `scale` of a server automaton by one until the new
  instance is Provisioned, and a new Composition (a link from a fresh client) until it
  is Provisioned;
- resync after a controller restart: the controller is killed (SIGKILL) and started
  again on the same store; seconds from the start of the new process until its API
  answers (`api_s`); until every Host is Ready and every hollow host's heartbeat was
  taken by the new controller (`hosts_ready_s`); until every VPC router of every
  hollow host has received a `SyncVpc` from the new controller (`routers_synced_s`,
  from the hosts' own clocks); and until an instance added (in a VPC of its own) as
  soon as the API answered is Provisioned (`instance_s`). A host whose heartbeat fell
  into the outage registers again and is resynced at once (`hosts_reregistered`
  counts them); the others are resynced by the controller's periodic resync (30 s).

Every wait is bounded; the whole section ends within `--timeout` seconds and reports
what it reached (a stage that did not converge in time says so, and the phases after
it are skipped). Processes are ended by PID and the temporary directory is removed,
also on failure or SIGTERM.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from autonet.cli.client import Client, CliError, wait_until

HOSTS_PER_PROCESS = 50
EVENT_SAMPLES = 3
PORT = 8080
HOST_TIMEOUT = 10.0  # the bench's --host-timeout (AUTONET_HOST_TIMEOUT overrides it)


@dataclass
class ScaleOptions:
    hosts: int | None = None
    instances: int | None = None
    vpcs: int | None = None
    budget: float = 840.0
    logs: Path | None = None  # where the daemons' logs are kept if something fails

    def resolved(self, quick: bool) -> tuple[int, int, int]:
        hosts = self.hosts or (10 if quick else 50)
        instances = self.instances or (300 if quick else 2000)
        vpcs = self.vpcs or max(1, instances // 500)
        return hosts, instances, min(vpcs, max(1, instances // 2))


class Interrupted(CliError):
    """SIGTERM (e.g. from `timeout`): stop waiting, clean up, report what was reached."""


class OutOfTime(CliError):
    """The section's budget is spent."""


# --- processes ---------------------------------------------------------------------------------
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child makes one call only


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it if the bench dies (even by SIGKILL)."""
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Processes:
    """Children started by the bench, ended by their PID (never by name)."""

    def __init__(self) -> None:
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        self.running[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash."""
        proc = self.running.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.running.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.running.clear()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise CliError(f"no VmRSS for process {pid}")


# --- following the instances -------------------------------------------------------------------
class Tracker(threading.Thread):
    """The state of every Host, Instance and Composition: one list each, then the API's
    watch stream.

    Polling lists of tens of thousands of instances (or of hosts, which the API decorates
    with their instance counts) would load the controller that we measure; the watch
    costs it one serialised line per change. After the controller restarts, the tracker
    lists and watches again."""

    KINDS = ("Host", "Instance", "Composition")

    def __init__(self, socket_path: str) -> None:
        super().__init__(name="object-tracker", daemon=True)
        self.socket_path = socket_path
        self.lock = threading.Lock()
        self.states: dict[tuple[str, str], str] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self.totals: Counter[str] = Counter()
        self.seen_lost = 0
        self.revision = 0  # the last store revision reflected here
        self.synced = threading.Event()  # listed, and following the watch
        self.stopping = threading.Event()
        self._client: httpx.Client | None = None

    def _set(self, kind: str, name: str, state: str | None) -> None:
        old = self.states.pop((kind, name), None)
        if old is not None:
            self.counts[kind, old] -= 1
            self.totals[kind] -= 1
        if state is not None:
            self.states[kind, name] = state
            self.counts[kind, state] += 1
            self.totals[kind] += 1
            if kind == "Instance" and state == "Lost" and old != "Lost":
                self.seen_lost += 1

    def state(self, name: str, kind: str = "Instance") -> str | None:
        with self.lock:
            return self.states.get((kind, name))

    def count(self, state: str, kind: str = "Instance") -> int:
        with self.lock:
            return self.counts[kind, state]

    def total(self, kind: str = "Instance") -> int:
        with self.lock:
            return self.totals[kind]

    def run(self) -> None:
        failures = 0  # reconnections in a row that brought no event
        while not self.stopping.is_set():
            seen = self.revision
            with contextlib.suppress(Exception):  # controller down or restarting: again
                self._follow(relist=failures >= 3 or not self.revision)
            failures = 0 if self.revision != seen else failures + 1
            self.synced.clear()
            self.stopping.wait(0.1)

    def _follow(self, relist: bool) -> None:
        transport = httpx.HTTPTransport(uds=self.socket_path)
        timeout = httpx.Timeout(60.0, read=None)
        with httpx.Client(base_url="http://autonet", transport=transport, timeout=timeout) as client:
            self._client = client
            head = client.get("/healthz").raise_for_status().json()["revision"]
            if relist:
                listed = {k: client.get(f"/api/v1/objects/{k}").raise_for_status().json() for k in self.KINDS}
                with self.lock:
                    self.states.clear()
                    self.counts.clear()
                    self.totals.clear()
                    for kind, objs in listed.items():
                        for obj in objs:
                            self._set(kind, obj["name"], obj["status"].get("state"))
                self.revision = head
            # After a controller restart the watch resumes from the last revision seen
            # (the store keeps its history): listing everything again would load the new
            # controller in the middle of what we measure. If that keeps failing, relist.
            self.synced.set()
            with client.stream("GET", f"/api/v1/watch?revision={self.revision}") as reply:
                reply.raise_for_status()
                for line in reply.iter_lines():
                    if self.stopping.is_set():
                        return
                    if not line:
                        continue
                    event = json.loads(line)
                    self.revision = max(self.revision, int(event["revision"]))
                    obj = event["object"]
                    if obj.get("kind") not in self.KINDS:
                        continue
                    with self.lock:
                        if event["type"] == "delete":
                            self._set(obj["kind"], obj["name"], None)
                        else:
                            self._set(obj["kind"], obj["name"], obj.get("status", {}).get("state"))

    def stop(self) -> None:
        self.stopping.set()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self.join(5)


# --- the manifests -----------------------------------------------------------------------------
def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if n < total % parts else 0) for n in range(parts)]


PROBE_VPC = "probe"


def base_documents(vpcs: int) -> list[dict[str, Any]]:
    """Per VPC: the VPC, its network and the composition. The VPCs overlap (they may):
    each has 100.96.0.0/12 and fd00:96::/48, so any count fits in the lab ranges.

    Plus a VPC of its own for the instance added after the controller's restart, so
    that its VPC sync does not reach (and count as a resync of) the fleet's routers."""
    docs: list[dict[str, Any]] = [
        {"kind": "Vpc", "name": PROBE_VPC, "spec": {"cidrs": ["100.96.0.0/12", "fd00:96::/48"]}},
        {
            "kind": "Network",
            "name": f"{PROBE_VPC}-n",
            "spec": {"vpc": PROBE_VPC, "cidrs": ["100.96.0.0/14", "fd00:96:0:1::/64"]},
        },
        server(PROBE_VPC, f"{PROBE_VPC}-n", 0),
    ]
    for v in range(vpcs):
        docs += [
            {"kind": "Vpc", "name": f"sv{v}", "spec": {"cidrs": ["100.96.0.0/12", "fd00:96::/48"]}},
            {
                "kind": "Network",
                "name": f"sv{v}-n",
                "spec": {"vpc": f"sv{v}", "cidrs": ["100.96.0.0/14", "fd00:96:0:1::/64"]},
            },
            {
                "kind": "Composition",
                "name": f"sv{v}",
                "spec": {"links": [{"from": f"sv{v}-cli", "to": f"sv{v}-srv", "protocol": "http"}]},
            },
        ]
    return docs


def server(name: str, network: str, replicas: int) -> dict[str, Any]:
    return {
        "kind": "Automaton",
        "name": name,
        "spec": {
            "network": network,
            "command": ["hollow-service", "--port", str(PORT)],
            "provides": [{"protocol": "http", "transport": "tcp", "port": PORT}],
            "replicas": replicas,
        },
    }


def client_automaton(name: str, network: str, replicas: int) -> dict[str, Any]:
    return {
        "kind": "Automaton",
        "name": name,
        "spec": {
            "network": network,
            "command": ["hollow-service"],
            "consumes": ["http"],
            "replicas": replicas,
        },
    }


def stage_automatons(size: int, vpcs: int) -> dict[str, dict[str, Any]]:
    """The fleet's automatons at `size` instances in all."""
    out = {}
    for v, share in enumerate(split(size, vpcs)):
        servers = math.ceil(share / 2)
        out[f"sv{v}-srv"] = server(f"sv{v}-srv", f"sv{v}-n", servers)
        out[f"sv{v}-cli"] = client_automaton(f"sv{v}-cli", f"sv{v}-n", share - servers)
    return out


def stage_sizes(instances: int) -> list[int]:
    return sorted({max(1, round(instances / 10)), max(1, round(instances / 3)), instances})


# --- the run -----------------------------------------------------------------------------------
class Run:
    def __init__(
        self, hosts: int, instances: int, vpcs: int, budget: float, say: Callable[[str], None]
    ) -> None:
        self.hosts, self.instances, self.vpcs = hosts, instances, vpcs
        self.deadline = time.monotonic() + budget
        self.say = say
        self.tmp = Path(tempfile.mkdtemp(prefix="autonet-scale-"))
        self.procs = Processes()
        self.port = free_port()
        self.socket = str(self.tmp / "api.sock")
        self.client: Client | None = None
        self.tracker = Tracker(self.socket)
        self.replicas: dict[str, int] = {}  # every automaton applied, with its replicas
        self.added = 0  # instances added to sv0-srv one by one (events, restart)
        self.host_timeout = float(os.environ.get("AUTONET_HOST_TIMEOUT", HOST_TIMEOUT))
        self.statuses: list[Path] = []

    # -- helpers --
    def remaining(self, bound: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 1:
            raise OutOfTime("the section's --timeout is spent")
        return min(bound, left)

    @property
    def api(self) -> Client:
        assert self.client is not None
        return self.client

    def controller_pid(self) -> int:
        return self.procs.running["controller"].pid

    def start_controller(self) -> float:
        """Start it; seconds until its API answers."""
        argv = [
            sys.executable, "-m", "autonet.cli.main", "controller",
            "--store", f"sqlite:///{self.tmp}/store.db",
            "--listen", f"unix:{self.socket}", "--listen", f"tcp:127.0.0.1:{self.port}",
            "--host-timeout", str(self.host_timeout), "--log-level", "warning",
        ]  # fmt: skip
        started = time.monotonic()
        self.procs.start("controller", argv, self.tmp / "controller.log")

        def answers() -> bool:
            if self.procs.running["controller"].poll() is not None:
                raise CliError(f"the controller exited: {self.log_tail('controller.log')}")
            try:
                if self.client is None:
                    self.client = Client("unix:" + self.socket, timeout=120)
                self.api.http.get("/healthz").raise_for_status()
                return True
            except (CliError, httpx.HTTPError):
                return False

        wait_until(answers, self.remaining(60), "the controller's API", every=0.02)
        return time.monotonic() - started

    def log_tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.tmp / name).read_text()[-600:].strip()
        return ""

    def start_hollow(self) -> None:
        for n, count in enumerate(split(self.hosts, math.ceil(self.hosts / HOSTS_PER_PROCESS))):
            status = self.tmp / f"hollow-{n}.json"
            argv = [
                sys.executable, "-m", "autonet.cli.main", "hollow",
                "--hosts", str(count), "--first", str(n * HOSTS_PER_PROCESS),
                "--controller", f"unix:{self.socket}",
                "--cluster", self.tmp.name, "--status", str(status),
            ]  # fmt: skip
            self.procs.start(f"hollow-{n}", argv, self.tmp / f"hollow-{n}.log")
            self.statuses.append(status)

    def hollow_status(self) -> dict[str, dict[str, Any]]:
        hosts: dict[str, dict[str, Any]] = {}
        for path in self.statuses:
            with contextlib.suppress(OSError, ValueError):
                hosts.update(json.loads(path.read_text())["hosts"])
        return hosts

    def hosts_ready(self, after: float = 0.0) -> bool:
        """Every Host Ready (and, with `after`, every hollow host's heartbeat taken since)."""
        if not self.tracker.synced.is_set() or self.tracker.count("Ready", "Host") < self.hosts:
            return False
        if after:
            status = self.hollow_status()
            return len(status) == self.hosts and all(h["beat_at"] >= after for h in status.values())
        return True

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.api.request("POST", "/apply", json={"documents": docs})
        for doc in docs:
            if doc["kind"] == "Automaton":
                self.replicas[doc["name"]] = int(doc["spec"]["replicas"])

    def expected(self) -> int:
        return sum(self.replicas.values())

    def all_provisioned(self) -> bool:
        return (
            self.tracker.synced.is_set()
            and self.tracker.count("Provisioned") >= self.expected() == self.tracker.total()
        )

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by the controller and the hollow processes:
        on a small machine, who had the cores."""
        out = {}
        for name, proc in self.procs.running.items():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[name] = round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)
        return out

    def stats(self) -> dict[str, Any]:
        """The controller's timing summaries since the last call (then reset)."""
        data: dict[str, Any] = self.api.request("GET", "/stats")["timings"]
        self.api.request("DELETE", "/stats")
        return data

    def settle(self) -> float:
        """Wait (bounded) until the controller's runner has nothing in work, so that an
        event is measured on an idle controller, not behind the stage's backlog. Returns
        the seconds it took, or -1 if it did not settle within 120 s."""
        started = time.monotonic()

        def idle() -> bool:
            gauges = self.api.request("GET", "/stats").get("gauges", {})
            return bool(gauges.get("runner.active", 0) <= 1)

        try:
            wait_until(idle, self.remaining(120), "the controller idle", every=0.1)
        except OutOfTime:
            raise
        except CliError:
            return -1.0
        return round(time.monotonic() - started, 2)

    # -- phases --
    def converge(self, docs: list[dict[str, Any]], what: str) -> dict[str, Any]:
        before = self.tracker.count("Provisioned")
        started = time.monotonic()
        self.apply(docs)
        try:
            wait_until(self.all_provisioned, self.remaining(3600), what, every=0.05)
        except Interrupted:
            raise
        except CliError:  # out of time (the budget bounds the wait)
            reached = self.tracker.count("Provisioned")
            elapsed = time.monotonic() - started
            return {"converged": False, "seconds": round(elapsed, 2), "provisioned": reached,
                    "expected": self.expected(), "per_second": round((reached - before) / elapsed, 1)}  # fmt: skip
        elapsed = time.monotonic() - started
        added = self.tracker.count("Provisioned") - before
        return {"converged": True, "seconds": round(elapsed, 2), "added": added,
                "per_second": round(added / elapsed, 1)}  # fmt: skip

    def instance_event(self) -> float:
        name = "sv0-srv"
        self.replicas[name] += 1
        self.added += 1
        instance = f"{name}-{self.replicas[name] - 1}"
        started = time.monotonic()
        self.api.request("POST", f"/automatons/{name}/scale", json={"replicas": self.replicas[name]})
        try:
            wait_until(
                lambda: self.tracker.state(instance) == "Provisioned", self.remaining(300), instance, 0.005
            )
        except OutOfTime:
            raise
        except CliError as exc:  # say where it stands
            found = self.api.get("instance", instance)
            where = f"{found['status'].get('state')}: {found['status'].get('reason')}" if found else "absent"
            raise CliError(
                f"{exc}; {instance} is {where} (tracker: {self.tracker.state(instance)})"
            ) from None
        return time.monotonic() - started

    def link_event(self, probe: str) -> float:
        link = {"kind": "Composition", "name": probe,
                "spec": {"links": [{"from": probe, "to": "sv0-srv", "protocol": "http"}]}}  # fmt: skip
        started = time.monotonic()
        self.api.request("POST", "/apply", json={"documents": [link]})

        def provisioned() -> bool:
            return self.tracker.state(probe, "Composition") == "Provisioned"

        wait_until(provisioned, self.remaining(300), f"composition {probe}", every=0.005)
        return time.monotonic() - started

    def stage(self, index: int, size: int) -> dict[str, Any]:
        automatons = stage_automatons(size, self.vpcs)
        # Instance events scaled sv0-srv beyond its share: keep those (never scale down).
        automatons["sv0-srv"]["spec"]["replicas"] += self.added
        probes = [f"pr{index}-{j}" for j in range(EVENT_SAMPLES)]
        docs = (base_documents(self.vpcs) if index == 0 else []) + list(automatons.values())
        docs += [client_automaton(p, "sv0-n", 1) for p in probes]
        self.say(f"stage {index + 1}: {size} instances")
        row: dict[str, Any] = {"size": size, **self.converge(docs, f"{size} instances Provisioned")}
        row["rss_kib"] = rss_kib(self.controller_pid())
        row["cpu_s"] = self.cpu_seconds()
        row["placement"] = self.stats()
        if not row["converged"]:
            return row
        self.say(f"stage {index + 1}: per-event cost")
        row["settle_s"] = self.settle()
        try:
            row["instance_event_s"] = [round(self.instance_event(), 3) for _ in range(EVENT_SAMPLES)]
            row["link_event_s"] = [round(self.link_event(p), 3) for p in probes]
        except OutOfTime:
            raise
        except CliError as exc:  # an event that did not complete: reported, the run goes on
            row["event_error"] = str(exc)
        row["events_timings"] = self.stats()
        return row

    def restart(self) -> dict[str, Any]:
        """Kill -9 the controller, start it on the same store: how long until it is back."""
        self.say("controller restart")
        self.procs.kill("controller")
        killed_wall = time.time()
        started = time.monotonic()
        started_wall = time.time()
        self.client = None
        api_s = self.start_controller()
        api_wall = time.time()
        # One instance added as soon as the API answers: its path crosses the new
        # controller's scheduler, agents' channels and VPC syncs (in a VPC of its own).
        self.replicas[PROBE_VPC] = 1
        instance = f"{PROBE_VPC}-0"
        self.api.request("POST", f"/automatons/{PROBE_VPC}/scale", json={"replicas": 1})
        result: dict[str, Any] = {"api_s": round(api_s, 2)}
        waits: list[tuple[str, Callable[[], bool]]] = [
            ("hosts_ready_s", lambda: self.hosts_ready(after=api_wall)),
            ("routers_synced_s", lambda: self.routers_synced(killed_wall)),
            ("instance_s", lambda: self.tracker.state(instance) == "Provisioned"),
        ]
        pending = dict(waits)

        def progress() -> bool:
            for key, probe in list(pending.items()):
                if probe():
                    result[key] = round(time.monotonic() - started, 2)
                    del pending[key]
            return not pending

        try:
            wait_until(progress, self.remaining(600), "the restarted controller", every=0.1)
        except CliError as exc:  # out of time: say what was not reached
            result["not_reached"] = sorted(pending)
            result["error"] = str(exc)
        if "routers_synced_s" in result:  # exact, from the hollow hosts' own clocks
            firsts = [
                min(t for t in r["synced_at"] if t >= killed_wall)
                for h in self.hollow_status().values()
                for r in h["routers"].values()
                if r["vpc"] != PROBE_VPC
            ]
            result["routers_synced_s"] = round(max(firsts) - started_wall, 2)
        # Agents register again only if a heartbeat fell into the outage; the others
        # carry on, and their routers wait for the periodic resync (30 s).
        result["hosts_reregistered"] = sum(
            1 for h in self.hollow_status().values() if any(t >= killed_wall for t in h["registered_at"])
        )
        result["rss_kib_after_restart"] = rss_kib(self.controller_pid())
        return result

    def routers_synced(self, after: float) -> bool:
        """Every VPC router of every hollow host got a SyncVpc since `after` (wall clock)."""
        status = self.hollow_status()
        routers = [r for h in status.values() for r in h["routers"].values() if r["vpc"] != PROBE_VPC]
        return bool(routers) and all(any(t >= after for t in r["synced_at"]) for r in routers)

    def settled_status(self) -> dict[str, dict[str, Any]]:
        """The hollow hosts' status once it agrees with the store (bounded: 10 s)."""
        expected = self.tracker.total()

        def agrees() -> dict[str, dict[str, Any]] | None:
            status = self.hollow_status()
            held = sum(h["instances"] for h in status.values())
            running = sum(h["processes"] for h in status.values())
            return status if held == running == expected else None

        found: dict[str, dict[str, Any]] | None = None
        with contextlib.suppress(CliError):
            found = wait_until(agrees, 10, "the hollow hosts' status", every=0.2)
        return found or self.hollow_status()

    def dataplane(self) -> dict[str, Any]:
        """What the hollow hosts were asked, as a check against the store."""
        status = self.settled_status()
        routers = [r for h in status.values() for r in h["routers"].values()]
        calls: Counter[str] = Counter()
        for h in status.values():
            calls.update(h["calls"])
        held = sum(h["instances"] for h in status.values())
        return {
            "hosts": len(status),
            "instances_held": held,
            "instances_in_store": self.tracker.total(),
            "processes_running": sum(h["processes"] for h in status.values()),
            # Registrations after the first: a heartbeat failed (e.g. took over 5 s).
            "reregistrations": sum(max(0, h["registrations"] - 1) for h in status.values()),
            "consistent": held == self.tracker.total(),
            "routers": len(routers),
            "max_rules_per_router": max((r.get("rules", 0) for r in routers), default=0),
            "max_members_per_router": max((r.get("members", 0) for r in routers), default=0),
            "calls": dict(calls),
        }

    def execute(self, results: dict[str, Any]) -> None:
        self.say(f"controller and {self.hosts} hollow hosts")
        self.start_controller()
        self.tracker.start()
        self.start_hollow()
        wait_until(self.hosts_ready, self.remaining(60 + self.hosts), f"{self.hosts} Ready hosts", 0.1)
        time.sleep(1.0)  # the heartbeats' steady state, before the memory baseline
        rss_before = rss_kib(self.controller_pid())
        results["rss_kib_before"] = rss_before
        self.stats()  # registration's handler timings are not placements
        stages: list[dict[str, Any]] = []
        results["stages"] = stages
        for index, size in enumerate(stage_sizes(self.instances)):
            stages.append(self.stage(index, size))
            if not stages[-1]["converged"]:
                results["converged"] = False
                # What the instances that exist cost so far (not all of them are Provisioned).
                results["rss_kib_per_instance_partial"] = round(
                    (stages[-1]["rss_kib"] - rss_before) / max(1, self.tracker.total()), 2
                )
                results["instances_at_timeout"] = self.tracker.total()
                return
        converge = sum(s["seconds"] for s in stages)
        final = stages[-1]
        total = self.tracker.total()
        results.update(
            converged=True,
            converge_s=round(converge, 2),
            instances_per_s=round(sum(s["added"] for s in stages) / converge, 1),
            rss_kib_after=final["rss_kib"],
            rss_kib_per_instance=round((final["rss_kib"] - rss_before) / max(1, total), 2),
            placement_p50_ms=final["placement"].get("placement.decision", {}).get("p50_ms"),
            placement_p99_ms=final["placement"].get("placement.decision", {}).get("p99_ms"),
        )
        results["dataplane"] = self.dataplane()
        results["restart"] = self.restart()

    def close(self, keep_logs: Path | None = None) -> None:
        self.tracker.stop()
        self.procs.stop_all()
        if self.client is not None:
            self.client.http.close()
        if keep_logs is not None:  # the daemons' logs, to see what went wrong
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.tmp.glob("*.log"):
                shutil.copy(log, keep_logs / log.name)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _event_errors(results: dict[str, Any]) -> bool:
    return any("event_error" in stage for stage in results.get("stages", []))


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted("interrupted by SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def scale(options: ScaleOptions, quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    hosts, instances, vpcs = options.resolved(quick)
    results: dict[str, Any] = {"hosts": hosts, "instances": instances, "vpcs": vpcs}
    run = Run(hosts, instances, vpcs, options.budget, say)
    results["host_timeout_s"] = run.host_timeout
    try:
        with sigterm_interrupts():
            run.execute(results)
    except CliError as exc:  # out of time, interrupted, or a wait that failed: report it
        results["error"] = str(exc)
        results.setdefault("converged", False)
    finally:
        results["lost_instances_seen"] = run.tracker.seen_lost
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        keep = options.logs if options.logs and ("error" in results or _event_errors(results)) else None
        if keep is not None:
            results["logs"] = str(keep)
        try:
            run.close(keep)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return results


def chart(data: dict[str, Any], path: Path) -> None:
    """Four panels: convergence rate, per-event cost and placement time against the
    fleet's size; the restart timeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in data.get("stages", []) if s.get("converged")]
    sizes = [s["size"] for s in stages]
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    title = f"autonet bench scale: {data['hosts']} hollow hosts, {data['instances']} instances, {data['vpcs']} VPCs"
    figure.suptitle(title)
    rate, event, place, restart = axes.flat
    rate.plot(sizes, [s["per_second"] for s in stages], "o-")
    rate.set(xlabel="instances after the stage", ylabel="instances/s", title="convergence rate per stage")
    for key, label in (
        ("instance_event_s", "scale +1 -> Provisioned"),
        ("link_event_s", "new link -> Provisioned"),
    ):
        points = [(s["size"], sorted(s[key])[len(s[key]) // 2]) for s in stages if s.get(key)]
        event.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
    event.set(xlabel="instances", ylabel="seconds (median of 3)", title="per-event cost")
    event.legend()
    for key in ("p50_ms", "p99_ms"):
        values = [s["placement"].get("placement.decision", {}).get(key) for s in stages]
        place.plot(sizes, values, "o-", label=f"decision {key[:3]}")
    place.set(xlabel="instances after the stage", ylabel="ms", title="placement decision (per stage)")
    place.legend()
    steps = {k: v for k, v in data.get("restart", {}).items() if k.endswith("_s")}
    restart.barh(list(steps), list(steps.values()), color="#4c72b0")
    restart.set(xlabel="seconds after the new controller started", title="controller restart (kill -9)")
    for ax in (rate, event, place):
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
