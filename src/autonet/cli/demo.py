"""`autonet demo`: the whole job end to end on a fresh 3-host lab, narrated, in under 2 minutes.

1. a lab: 3 hosts (namespaces, each running a real agent) and a controller;
2. apply a shop: web (3 replicas, spread over the hosts), a bulk sink, a client linked
   to both, and an intruder linked to nothing;
3. services by DNS name: the client calls `web` and the answers spread over instances
   and hosts (Maglev in nftables, no proxy);
4. composition security: the intruder is refused, and `policy check` says why;
5. flows and top: the client's connections with peers and counters, load per automaton;
6. a live QoS change: a transfer to the sink, then the sink's ingress capped at
   20 Mbit/s while it runs, and the same transfer again;
7. a host failure survived: the host of a web instance crashes; it is Lost within
   seconds, its instances are replaced on the others, and `web` answers throughout;
8. the composition graph written to a file (Graphviz SVG);
9. everything deleted, the kernel checked clean, the lab down (unless --keep, which
   leaves it up and prints how to open the dashboard).
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import typer

from autonet.cli import graph as graphs
from autonet.cli import lab as labs
from autonet.cli import output
from autonet.cli.client import Client, CliError
from autonet.dataplane import netns
from autonet.model import manifest

LAB = "demo"
HOSTS = 3
GRAPH_FILE = Path("autonet-demo.svg")
CALLS = 60
QOS_MBPS = 20
TRANSFER_MB = 10

# The shop of examples/shop.yaml (VPC blue, network blue-a, web x3), with a bulk sink, a
# client linked to both, and an intruder linked to nothing.
DEMO_ADDITIONS = """
kind: Automaton
name: sink
spec:
  network: blue-a
  command: [python3, -m, autonet.examples.bulk, serve, --port, "9000"]
  provides: [{protocol: bulk, transport: tcp, port: 9000}]
---
kind: Automaton
name: client
spec: {network: blue-a, command: [sleep, infinity], consumes: [http, bulk]}
---
kind: Automaton
name: intruder
spec: {network: blue-a, command: [sleep, infinity], consumes: [http]}
---
kind: Composition
name: shop
spec:
  links: [{from: client, to: web, protocol: http}, {from: client, to: sink, protocol: bulk}]
"""


def demo_manifest() -> list[dict[str, Any]]:
    """The example shop's documents, with the demo's versions of those it changes."""
    shop = manifest.parse((resources.files("autonet.examples") / "shop.yaml").read_text())
    return manifest.overlay(shop, manifest.parse(DEMO_ADDITIONS))


# Many requests from one process: the answers (instance names) counted.
SPREAD = (
    "import collections, sys, urllib.request\n"
    "names = collections.Counter()\n"
    "for _ in range(int(sys.argv[1])):\n"
    "    with urllib.request.urlopen('http://web:8080/', timeout=3) as reply:\n"
    "        names[reply.read().decode().strip()] += 1\n"
    "print(' '.join(f'{k}={v}' for k, v in sorted(names.items())))\n"
)


def say(text: str) -> None:
    typer.secho(f"==> {text}", bold=True)


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"    {line}")


def wait_provisioned(c: Client, automatons: dict[str, int], timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        instances = c.objects("instances")
        by = Counter(i["spec"]["automaton"] for i in instances if i["status"].get("state") != "Lost")
        ready = Counter(
            i["spec"]["automaton"] for i in instances if i["status"].get("state") == "Provisioned"
        )
        if all(by[a] == n and ready[a] == n for a, n in automatons.items()):
            return instances
        time.sleep(0.1)
    raise CliError(f"demo: instances not provisioned within {timeout}s")


def run_for_errors(c: Client, instance: str, argv: list[str]) -> tuple[int, str]:
    """Run a command in an instance: (exit code, what it wrote to stderr)."""
    err, code = b"", 1
    for key, data in c.exec(instance, argv, timeout=15):
        if key == "stderr":
            err += data  # type: ignore[operator]
        elif key == "exit":
            code = int(data)
    return code, err.decode()


def spread(c: Client, hosts: dict[str, str]) -> Counter[str]:
    code, out = c.run("client-0", ["python3", "-c", SPREAD, str(CALLS)], timeout=60)
    if code != 0:
        raise CliError(f"demo: calls to http://web:8080/ failed: {out.strip()}")
    per_instance = Counter({k: int(v) for k, v in (pair.split("=") for pair in out.split())})
    per_host: Counter[str] = Counter()
    for name, count in per_instance.items():
        per_host[hosts.get(name, "?")] += count
    show(", ".join(f"{name} ({hosts.get(name, '?')}): {n}" for name, n in sorted(per_instance.items())))
    show("per host: " + ", ".join(f"{h}: {n}" for h, n in sorted(per_host.items())))
    return per_instance


def transfer(c: Client) -> float:
    """Seconds to send TRANSFER_MB to the sink (which checks every byte's digest)."""
    started = time.monotonic()
    code, out = c.run(
        "client-0",
        ["python3", "-m", "autonet.examples.bulk", "send", "sink", "9000", "--megabytes", str(TRANSFER_MB)],
        timeout=60,
    )
    if code != 0:
        raise CliError(f"demo: transfer to the sink failed: {out.strip()}")
    return time.monotonic() - started


def step_services(c: Client) -> None:
    say(f"services by DNS name: {CALLS} calls from client-0 to http://web:8080/")
    instances = c.objects("instances")
    hosts = {i["name"]: i["status"].get("host", "?") for i in instances}
    web = c.get("automaton", "web") or {}
    show(f"web resolves to its service address {web.get('status', {}).get('vip4')} (and its IPv6 one)")
    per_instance = spread(c, hosts)
    if len(per_instance) < 3:
        raise CliError(f"demo: the calls reached only {sorted(per_instance)}")


def step_denied(c: Client) -> None:
    say("composition security: intruder-0 is linked to nothing")
    probe = ["python3", "-m", "autonet.examples.http_get", "http://web:8080/"]
    code, err = run_for_errors(c, "intruder-0", probe)
    show(
        f"intruder-0 -> http://web:8080/: {'REACHED IT' if code == 0 else (err.strip().splitlines() or ['?'])[-1]}"
    )
    if code == 0:
        raise CliError("demo: the intruder reached web")
    for source in ("intruder", "client"):
        verdict = c.request("GET", "/policy/check", params={"source": source, "target": "web", "port": 8080})
        show(f"policy check {source} web --port 8080: {verdict['reason']}")


def step_flows(c: Client) -> None:
    say("flows: client-0's connections, with peers and counters (from conntrack)")
    rows = c.request("GET", "/instances/client-0/flows")
    tcp = [r for r in rows if r["protocol"] == "tcp"][:5]
    for r in tcp:
        show(
            f"{r['protocol']} {r['state'] or '-':<11} {r['local_address']}:{r['local_port']} -> "
            f"{r['peer_address']}:{r['peer_port']} ({r['peer_instance'] or '-'}) "
            f"tx {r['tx_bytes']} B rx {r['rx_bytes']} B"
        )
    show(f"({len(rows)} flows in all)")


def step_qos(c: Client) -> None:
    say(f"a live QoS change: {TRANSFER_MB} MB to the sink, then its ingress capped at {QOS_MBPS} Mbit/s")
    free = transfer(c)
    show(f"uncapped: {TRANSFER_MB} MB in {free:.2f}s ({TRANSFER_MB * 8 / free:.0f} Mbit/s)")
    c.request("PUT", "/automatons/sink/qos", json={"ingress_mbps": QOS_MBPS})
    deadline = time.monotonic() + 15
    while ((c.get("instance", "sink-0") or {}).get("status", {}).get("qos") or {}).get(
        "ingress_mbps"
    ) != QOS_MBPS:
        if time.monotonic() > deadline:
            raise CliError("demo: the QoS change did not reach sink-0")
        time.sleep(0.1)
    with ThreadPoolExecutor(1) as pool:  # `top` while it runs: the sink's load, live
        running = pool.submit(transfer, c)
        peak: dict[str, float] = {}
        while not running.done():
            time.sleep(0.5)
            for row in c.request("GET", "/load")["automatons"]:
                if row["rx_bps"] > peak.get(row["automaton"], -1):
                    peak[row["automaton"]] = row["rx_bps"]
        capped = running.result()
    top = ", ".join(f"{name} {bps / 1e6:.1f}" for name, bps in sorted(peak.items()))
    show(f"top during it, peak receive Mbit/s per automaton: {top}")
    show(
        f"capped:   {TRANSFER_MB} MB in {capped:.2f}s ({TRANSFER_MB * 8 / capped:.0f} Mbit/s), the process untouched"
    )
    c.request("PUT", "/automatons/sink/qos", json={})


def step_host_failure(c: Client) -> None:
    web = {i["name"]: i["status"]["host"] for i in c.objects("instances") if i["spec"]["automaton"] == "web"}
    busy = {
        i["status"].get("host")
        for i in c.objects("instances")
        if i["spec"]["automaton"] in ("client", "sink")
    }
    victim = next((h for h in sorted(set(web.values())) if h not in busy), sorted(set(web.values()))[0])
    say(
        f"a host fails: {victim} (web instances {', '.join(n for n, h in sorted(web.items()) if h == victim)}) crashes"
    )
    started = time.monotonic()
    labs.fail(LAB, victim)
    deadline = started + 30
    while (c.get("host", victim) or {}).get("status", {}).get("state") != "Lost":
        if time.monotonic() > deadline:
            raise CliError(f"demo: {victim} was not found Lost within 30s")
        time.sleep(0.1)
    show(f"{victim} Lost after {time.monotonic() - started:.1f}s")
    instances = wait_provisioned(c, {"web": 3})
    moved = {
        i["name"]: i["status"]["host"]
        for i in instances
        if i["spec"]["automaton"] == "web" and i["status"].get("state") != "Lost"
    }
    show(f"web back to 3 Provisioned after {time.monotonic() - started:.1f}s: {moved}")
    hosts = {i["name"]: i["status"].get("host", "?") for i in instances}
    spread(c, hosts)
    labs.heal(LAB, victim)
    deadline = time.monotonic() + 30
    while (c.get("host", victim) or {}).get("status", {}).get("state") != "Ready":
        if time.monotonic() > deadline:
            raise CliError(f"demo: {victim} was not Ready again within 30s")
        time.sleep(0.1)
    show(f"{victim} healed: Ready again, with what was replaced removed from it")


def step_graph(c: Client) -> None:
    say(f"the composition graph: {GRAPH_FILE}")
    GRAPH_FILE.write_bytes(graphs.render(graphs.build_dot(graphs.fetch(c)), "svg"))
    show(
        f"{GRAPH_FILE.resolve()} ({GRAPH_FILE.stat().st_size} bytes; `autonet graph -o FILE` draws it any time)"
    )


def step_delete(c: Client, info: labs.LabInfo, docs: list[dict[str, Any]]) -> None:
    say("delete everything; then look at the kernel, not the store")
    c.request("POST", "/delete", json={"documents": [{"kind": d["kind"], "name": d["name"]} for d in docs]})
    deadline = time.monotonic() + 60
    while c.objects("instances") or c.objects("vpcs"):
        if time.monotonic() > deadline:
            raise CliError("demo: objects were not deleted within 60s")
        time.sleep(0.1)
    tags = info.host_tags()
    left = [n for n in netns.list_names("an") if n[3:7] in tags and n[:3] in ("ani", "anr")]
    show(f"instance/router namespaces left on the hosts: {len(left)}")
    if left:
        raise CliError(f"demo: namespaces left behind: {', '.join(left)}")


def run(keep: bool) -> None:
    began = time.monotonic()
    docs = demo_manifest()
    if labs.LabInfo.load(LAB) is not None:
        say("an old demo lab is up: taking it down first")
        labs.down(LAB)
    say(f"lab up: {HOSTS} hosts, each a network namespace running a real agent; a controller")
    started = time.monotonic()
    info = labs.up(LAB, HOSTS, "ipv4")
    show(f"up in {time.monotonic() - started:.1f}s; API on {info.api}")
    c = Client(info.api)
    try:
        say(
            "apply: VPC blue, network blue-a, web x3, sink, client (linked to both), intruder (linked to none)"
        )
        started = time.monotonic()
        for result in c.request("POST", "/apply", json={"documents": docs})["results"]:
            show(f"{result['kind'].lower()}/{result['name']} {result['action']}")
        instances = wait_provisioned(c, {"web": 3, "sink": 1, "client": 1, "intruder": 1})
        show(f"all 6 instances Provisioned in {time.monotonic() - started:.2f}s")
        show(output.table("Instance", sorted(instances, key=lambda i: i["name"])))
        step_services(c)
        step_denied(c)
        step_qos(c)
        step_flows(c)
        step_host_failure(c)
        step_graph(c)
        if not keep:
            step_delete(c, info, docs)
    finally:
        if keep:
            say(
                f"lab {LAB} kept: `autonet --lab {LAB} ui` opens the dashboard; `autonet lab down --name {LAB}` ends it"
            )
        else:
            say("lab down")
            labs.down(LAB)
    say(f"demo done in {time.monotonic() - began:.0f}s")
