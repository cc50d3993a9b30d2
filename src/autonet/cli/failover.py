"""`autonet bench failover`: what a host failure, a partition and daemon crashes cost a user.

On a 3-host lab of its own (it breaks hosts), per run:

- a client requests a 6-replica service by name every 0.2 s (1 s timeout each) while a
  host holding backends (not the client's) fails; measured: the failed-request window
  (first failed request's start to the last one's end), the time until the host is
  `Lost`, until 6 replicas are Provisioned on the surviving hosts, and, after `heal`,
  until the host is Ready again;
- the same with a partition (held 5 s);
- 80 instances applied without waiting, the agent of a host killed after 1 s and
  restarted 2 s later: seconds from the restart until all 80 are Provisioned;
- the controller killed during a scale to 150 and restarted 2 s later: the same.

With `--controllers N` (N > 1) it measures instead what the death of a controller costs
on a lab of 3 hosts, N controllers and 3 etcd members, 4 VPCs (cli/takeover.py): per run,
a VPC's automaton is scaled from 10 to 30 and its owner killed (kill -9) as soon as the
scale is accepted; reported: kill -> a live controller owns the VPC (claim), kill -> the
first transition by that new owner (takeover), kill -> all 30 Provisioned, as p50/p95/max;
then the killed controller is restarted and rejoins before the next run.

The client's probe (`PROBE`) and the window it yields (`failed_window`) are shared with
the end-to-end tests, which assert the bounds; the benchmark only reports figures.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from autonet.cli import lab as labs
from autonet.cli import takeover
from autonet.cli.client import Client, CliError, wait_until
from autonet.model import manifest

SERVICE = """
kind: Vpc
name: f
spec: {cidrs: [100.96.0.0/16, "fd00:96::/48"]}
---
kind: Network
name: f-a
spec: {vpc: f, cidrs: [100.96.0.0/22, "fd00:96:0:1::/64"]}
---
kind: Automaton
name: client
spec: {network: f-a, command: [sleep, infinity], consumes: [http]}
---
kind: Automaton
name: web
spec:
  network: f-a
  command: [python3, -m, autonet.examples.http_echo, --port, "8080"]
  provides: [{protocol: http, transport: tcp, port: 8080}]
  replicas: 6
---
kind: Composition
name: f
spec: {links: [{from: client, to: web, protocol: http}]}
"""

WORKERS = """
kind: Automaton
name: worker
spec: {network: f-a, command: [sleep, infinity], replicas: REPLICAS}
"""

# Requests by name every 0.2 s, 1 s timeout each; prints "start end ok NAME" or "start end
# fail ERROR". The name is resolved to its IPv4 service address on every request: urllib
# would fall back to the other family's address after a timeout and hide the failure.
PROBE = """
import http.client, socket, sys, time
begin = time.monotonic()
while time.monotonic() - begin < float(sys.argv[1]):
    start = time.monotonic() - begin
    try:
        conn = http.client.HTTPConnection(socket.gethostbyname("web"), 8080, timeout=1)
        conn.request("GET", "/")
        outcome = "ok " + conn.getresponse().read().decode().strip()
        conn.close()
    except OSError as exc:
        outcome = f"fail {exc}"
    print(f"{start:.2f} {time.monotonic() - begin:.2f} {outcome}", flush=True)
    time.sleep(0.2)
"""


def start_probe(api: str, seconds: float) -> tuple[subprocess.Popen[str], str]:
    """The probe running in client-0, once its first request was answered."""
    argv = [sys.executable, "-m", "autonet.cli.main", "exec", "-i", "client-0", "--", "python3", "-"]
    probe = subprocess.Popen(
        [*argv, str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "AUTONET_API": api},
    )  # fmt: skip
    assert probe.stdin is not None and probe.stdout is not None
    probe.stdin.write(PROBE)
    probe.stdin.close()
    probe.stdin = None  # written in full: communicate() only reads
    first = probe.stdout.readline()
    if " ok " not in first:
        probe.kill()
        raise CliError(f"bench failover: the client cannot reach the service: {first.strip()}")
    return probe, first


def probe_rows(probe: subprocess.Popen[str], first: str) -> list[tuple[float, float, str, str]]:
    """The probe's requests once it has ended: (start, end, ok|fail, name or error)."""
    out, err = probe.communicate(timeout=120)
    if probe.returncode != 0:
        raise CliError(f"bench failover: the probe failed: {err.strip()[-300:]}")
    rows = [line.split(maxsplit=3) for line in (first + out).splitlines()]
    return [(float(r[0]), float(r[1]), r[2], r[3] if len(r) > 3 else "") for r in rows]


def failed_window(rows: list[tuple[float, float, str, str]]) -> float:
    """Seconds from the first failed request's start to the last one's end."""
    failed = [(start, end) for start, end, outcome, _ in rows if outcome == "fail"]
    return max(end for _, end in failed) - min(start for start, _ in failed) if failed else 0.0


def victim_host(client: Client) -> str:
    """A host that holds web backends but not the client."""
    instances = client.objects("instances")
    client_host = next(i["status"]["host"] for i in instances if i["spec"]["automaton"] == "client")
    webs = collections.Counter(
        i["status"]["host"]
        for i in instances
        if i["spec"]["automaton"] == "web" and i["status"].get("host") not in (None, client_host)
    )
    return webs.most_common(1)[0][0]


def host_state(client: Client, host: str) -> str:
    found = client.get("host", host)
    return str(found["status"].get("state")) if found else ""


def provisioned_elsewhere(client: Client, automaton: str, count: int, lost_host: str = "") -> bool:
    ready = [
        i
        for i in client.objects("instances")
        if i["spec"]["automaton"] == automaton
        and i["status"].get("state") == "Provisioned"
        and i["status"].get("host") != lost_host
    ]
    return len(ready) == count


def host_fault(lab: str, client: Client, fault: str, hold: float) -> dict[str, Any]:
    """One failure (or partition) of a backend host, measured from the client."""
    host = victim_host(client)
    probe, first = start_probe(client.address, hold + 12)
    began = time.monotonic()
    (labs.fail if fault == "fail" else labs.partition)(lab, host)
    wait_until(lambda: host_state(client, host) == "Lost", 15, f"{host} Lost", every=0.05)
    lost = time.monotonic() - began
    wait_until(lambda: provisioned_elsewhere(client, "web", 6, host), 30, "6 replicas elsewhere", 0.05)
    replaced = time.monotonic() - began
    time.sleep(max(0.0, hold - (time.monotonic() - began)))
    labs.heal(lab, host)
    healed = time.monotonic()
    wait_until(lambda: host_state(client, host) == "Ready", 60, f"{host} Ready again", every=0.05)
    back = time.monotonic() - healed
    rows = probe_rows(probe, first)
    failed = [(start, error) for start, _, outcome, error in rows if outcome == "fail"]
    return {
        "failed_window_s": round(failed_window(rows), 2),
        "failed_requests": len(failed),
        "ok_requests": sum(1 for row in rows if row[2] == "ok"),
        "failed_at": [round(start, 2) for start, _ in failed],  # seconds since the fault, about
        "heal_at": round(healed - began, 2),
        "lost_after_s": round(lost, 2),
        "replaced_after_s": round(replaced, 2),
        "ready_after_heal_s": round(back, 2),
    }


def workers(client: Client, replicas: int) -> None:
    docs = manifest.parse(WORKERS.replace("REPLICAS", str(replicas)))
    client.request("POST", "/apply", json={"documents": docs})


def crash_during(lab: str, client: Client, role: str, replicas: int) -> float:
    """Seconds from the restart of a daemon killed mid-work until `replicas` workers run."""
    workers(client, replicas)
    time.sleep(1)
    labs.kill(lab, role)
    time.sleep(2)
    labs.respawn(lab, role)
    restarted = time.monotonic()
    wait_until(lambda: provisioned_elsewhere(client, "worker", replicas), 300, f"{replicas} workers", 0.2)
    return round(time.monotonic() - restarted, 2)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": ordered[len(ordered) // 2], "p95": p95, "max": ordered[-1], "n": len(ordered)}


def scale_request(client: Client, automaton: str, replicas: int) -> None:
    client.request("POST", f"/automatons/{automaton}/scale", json={"replicas": replicas})


def scale_to(client: Client, automaton: str, replicas: int, timeout: float = 120.0) -> None:
    scale_request(client, automaton, replicas)
    wait_until(
        lambda: (
            takeover.provisioned(client, automaton, replicas)
            and len(takeover.states(client, automaton)) == replicas
        ),
        timeout,
        f"{automaton} at {replicas}",
        every=0.2,
    )


def takeovers(quick: bool, progress: Callable[[str], None], controllers: int) -> dict[str, Any]:
    """kill -9 of a VPC's owner during a scale from 10 to 30, `runs` times (the VPC
    changes each run), on a lab of 3 hosts and `controllers` controllers on etcd."""
    runs, vpcs = (2 if quick else 5), 4
    lab = "btake" + os.urandom(2).hex()
    info = labs.up(lab, 3, "ipv4", controllers=controllers, store="etcd", membership=True)
    try:
        client = Client(info.api)
        client.request("POST", "/apply", json={"documents": manifest.parse(takeover.vpcs_manifest(vpcs))})
        for n in range(vpcs):
            wait_until(partial(takeover.provisioned, client, f"tk{n}-w", 2), 90, f"tk{n}", every=0.2)
        samples = []
        for run in range(runs):
            vpc, automaton = f"tk{run % vpcs}", f"tk{run % vpcs}-w"
            wait_until(partial(takeover.owner_of, client, vpc), 30, f"an owner of {vpc}", every=0.1)
            scale_to(client, automaton, 10)
            progress(f"takeover {run + 1}/{runs}: {vpc}")
            scale = partial(scale_request, client, automaton, 30)
            sample = takeover.takeover(lab, client, vpc, automaton, 30, scale)
            samples.append(sample)
            labs.respawn(lab, sample["killed"])
            scale_to(client, automaton, 2)
        overlaps = takeover.owner_overlaps(takeover.owner_history(info, info.netns("h1")))
        figures = ("claim_s", "takeover_s", "complete_s")
        return {
            "runs": runs,
            "controllers": controllers,
            **{f: summary([s[f] for s in samples if s[f] is not None]) for f in figures},
            "owner_key_overlaps": overlaps,
            "samples": samples,
        }
    finally:
        labs.down(lab)


def failover(quick: bool, progress: Callable[[str], None], controllers: int = 1) -> dict[str, Any]:
    if controllers > 1:
        return takeovers(quick, progress, controllers)
    runs = 1 if quick else 5
    lab = "bfail" + os.urandom(2).hex()
    info = labs.up(lab, 3, "ipv4")
    try:
        client = Client(info.api)
        client.request("POST", "/apply", json={"documents": manifest.parse(SERVICE)})
        wait_until(lambda: provisioned_elsewhere(client, "web", 6), 60, "the service", every=0.1)
        results: dict[str, Any] = {"runs": runs}
        for fault, hold in (("fail", 0.0), ("partition", 5.0)):
            samples = []
            for n in range(runs):
                progress(f"{fault} {n + 1}/{runs}")
                samples.append(host_fault(lab, client, fault, hold))
            results[fault] = {
                field: summary([s[field] for s in samples]) for field in samples[0] if field.endswith("_s")
            }
            results[fault]["samples"] = samples
        progress("agent crash")
        results["agent_crash_converge_s"] = crash_during(lab, client, "h1", 80)
        progress("controller crash")
        results["controller_crash_converge_s"] = crash_during(lab, client, "controller", 150)
        return results
    finally:
        labs.down(lab)
