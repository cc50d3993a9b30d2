"""`autonet bench`: autonet next to the raw kernel and the CNI reference plugins, one run.

Sections (each reports ratios to baselines measured in the same run):

- provision: apply -> Provisioned for one instance (p50/p99) on a warm 3-host lab, and the
  bulk rate for 200 (and 1,000) instances; baselines: netns + veth + IPv4/IPv6 addresses +
  route through pyroute2 in a loop (the raw kernel cost), and /usr/lib/cni/bridge with
  host-local invoked per namespace as the CNI spec says.
- throughput: iperf3 TCP and ping between instances on the same host and across hosts,
  next to a plain veth pair between two namespaces.
- policy: update latency with 1,000 instances and 10,000 allowed pairs, next to the same
  update into an empty policy; and how long a new link takes to open end to end.
- failover: the failed-request window when a host fails or is partitioned, the time to
  replace its instances and to converge after an agent or controller crash (cli/failover.py);
  with `--controllers N` (N > 1) instead: the takeover of a VPC whose controller is killed
  during a scale, on N controllers and etcd (claim, first transition, scale done).
- scale: the control plane at fleet size on hollow hosts (no kernels, no root): convergence,
  controller memory per instance, placement time, resync after a controller restart and
  per-event cost as the fleet grows (cli/scale.py; `--hosts`, `--instances`, `--vpcs`).
- maglev: table build time for 10, 100 and 1,000 backends next to a textbook
  implementation that materialises the permutations; disruption when a backend goes.

Results go to a JSON file and a PNG chart next to it. Everything runs in `an`-prefixed
namespaces that are removed at the end; load is bounded in time.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import Progress

from autonet.cli import lab as labs
from autonet.cli.client import Client, CliError, wait_until
from autonet.cli.failover import failover
from autonet.cli.scale import ScaleOptions, scale
from autonet.cli.scale import chart as scale_chart
from autonet.dataplane import netns
from autonet.dataplane.nsexec import launcher_argv
from autonet.model import maglev, manifest

SECTIONS = ("provision", "throughput", "policy", "maglev", "failover", "scale")
CNI_BIN = Path("/usr/lib/cni")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 50) * 1000, 2),
        "p99_ms": round(percentile(samples, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(samples) * 1000, 2),
        "n": len(samples),
    }


def _unique(prefix: str) -> str:
    return f"an{prefix}{uuid.uuid4().hex[:8]}"


@contextmanager
def scratch_namespaces() -> Iterator[list[str]]:
    """Namespaces a baseline makes are listed here and removed afterwards."""
    made: list[str] = []
    try:
        yield made
    finally:
        for name in made:
            for pid in netns.pids_in(name):
                os.kill(pid, 9)
            netns.delete(name)


# --- provisioning baselines ------------------------------------------------------------------
def raw_pyroute2(count: int) -> list[float]:
    """netns + veth + IPv4/IPv6 addresses + route, the plain pyroute2 way, per endpoint."""
    from pyroute2 import IPRoute
    from pyroute2 import netns as pr_netns

    samples = []
    with scratch_namespaces() as made:
        host = _unique("bh")
        pr_netns.create(host)
        made.append(host)
        with IPRoute(netns=host) as hipr:
            hipr.link("set", index=1, state="up")
            for i in range(count):
                started = time.perf_counter()
                name = _unique("br")
                pr_netns.create(name)
                made.append(name)
                hipr.link("add", ifname=f"v{i}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
                hipr.link("set", index=hipr.link_lookup(ifname=f"v{i}")[0], state="up")
                with IPRoute(netns=name) as ipr:
                    index = ipr.link_lookup(ifname="eth0")[0]
                    ipr.addr("add", index=index, address=f"100.65.{i // 250}.{i % 250 + 1}", prefixlen=32)
                    ipr.addr("add", index=index, address=f"fd00:65::{i + 1:x}", prefixlen=128)
                    ipr.link("set", index=index, state="up")
                    ipr.route("add", dst="0.0.0.0/0", oif=index, scope=253)
                samples.append(time.perf_counter() - started)
    return samples


def cni_bridge(count: int) -> list[float]:
    """The CNI reference chain: bridge + host-local, one plugin process per namespace."""
    if not (CNI_BIN / "bridge").exists():
        raise CliError("the CNI plugins are missing: apt-get install containernetworking-plugins")
    samples = []
    with scratch_namespaces() as made, tempfile.TemporaryDirectory() as data:
        host = _unique("bc")
        netns.create(host).close()
        made.append(host)
        config = {
            "cniVersion": "1.0.0",
            "name": "anbench",
            "type": "bridge",
            "bridge": "anbr0",
            "isGateway": True,
            "ipam": {
                "type": "host-local",
                "dataDir": data,
                "ranges": [[{"subnet": "100.66.0.0/16"}], [{"subnet": "fd00:66::/64"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }
        for _ in range(count):
            name = _unique("bn")
            started = time.perf_counter()
            netns.create(name).close()
            made.append(name)
            env = {
                "CNI_COMMAND": "ADD",
                "CNI_CONTAINERID": name,
                "CNI_NETNS": netns.netns_path(name),
                "CNI_IFNAME": "eth0",
                "CNI_PATH": str(CNI_BIN),
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            }
            result = subprocess.run(
                ["nsenter", f"--net={netns.netns_path(host)}", str(CNI_BIN / "bridge")],
                input=json.dumps(config), capture_output=True, text=True, env=env,
            )  # fmt: skip
            if result.returncode != 0:
                raise CliError(f"CNI bridge failed: {result.stdout.strip() or result.stderr.strip()}")
            samples.append(time.perf_counter() - started)
    return samples


# --- autonet on a lab ---------------------------------------------------------------------------
BENCH_VPC = """
kind: Vpc
name: bench
spec: {cidrs: [100.84.0.0/16, "fd00:84::/48"]}
---
kind: Network
name: bench-a
spec: {vpc: bench, cidrs: [100.84.0.0/20, "fd00:84:0:1::/64"]}
"""


def _automaton(
    name: str, replicas: int, command: list[str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "kind": "Automaton",
        "name": name,
        "spec": {"network": "bench-a", "command": command, "replicas": replicas, **(extra or {})},
    }


def provisioned(client: Client, automaton: str) -> int:
    return sum(
        1
        for i in client.objects("instances")
        if i["spec"]["automaton"] == automaton and i["status"].get("state") == "Provisioned"
    )


def autonet_single(client: Client, samples: int, progress: Callable[[], None]) -> list[float]:
    client.request("POST", "/apply", json={"documents": [_automaton("single", 0, ["sleep", "infinity"])]})
    results = []
    for n in range(1, samples + 1):
        started = time.perf_counter()
        client.request("POST", "/automatons/single/scale", json={"replicas": n})

        def ready(name: str = f"single-{n - 1}") -> bool:
            inst = client.get("instance", name)
            return inst is not None and inst["status"].get("state") == "Provisioned"

        wait_until(ready, 30, "one instance", every=0.002)
        results.append(time.perf_counter() - started)
        progress()
    client.request("DELETE", "/objects/automaton/single")
    wait_until(lambda: client.get("automaton", "single") is None, 120, "cleanup", every=0.05)
    return results


def autonet_bulk(client: Client, count: int) -> float:
    name = f"bulk{count}"
    started = time.perf_counter()
    client.request("POST", "/apply", json={"documents": [_automaton(name, count, ["sleep", "infinity"])]})
    wait_until(lambda: provisioned(client, name) == count, 600, f"{count} instances", every=0.05)
    elapsed = time.perf_counter() - started
    client.request("DELETE", f"/objects/automaton/{name}")
    wait_until(lambda: client.get("automaton", name) is None, 600, "cleanup", every=0.1)
    return elapsed


def provision(client: Client, quick: bool, progress: Progress) -> dict[str, Any]:
    n_raw = 30 if quick else 100
    n_single = 15 if quick else 50
    bulks = (200,) if quick else (200, 1000)
    task = progress.add_task("provision", total=3 + n_single + len(bulks))
    raw = raw_pyroute2(n_raw)
    progress.advance(task)
    cni = cni_bridge(n_raw)
    progress.advance(task)
    single = autonet_single(client, n_single, lambda: progress.advance(task))
    bulk = {}
    for count in bulks:
        seconds = autonet_bulk(client, count)
        bulk[str(count)] = {"seconds": round(seconds, 2), "per_second": round(count / seconds, 1)}
        progress.advance(task)
    raw_rate = 1 / statistics.fmean(raw)
    cni_rate = 1 / statistics.fmean(cni)
    progress.advance(task)
    return {
        "raw_pyroute2": {**summary(raw), "per_second": round(raw_rate, 1)},
        "cni_bridge_host_local": {**summary(cni), "per_second": round(cni_rate, 1)},
        "autonet_single_instance": summary(single),
        "autonet_bulk": bulk,
        "ratios": {
            "single_p50_vs_raw_p50": round(percentile(single, 50) / percentile(raw, 50), 2),
            "single_p50_vs_cni_p50": round(percentile(single, 50) / percentile(cni, 50), 2),
            **{f"bulk{c}_rate_vs_raw_rate": round(b["per_second"] / raw_rate, 2) for c, b in bulk.items()},
            **{f"bulk{c}_rate_vs_cni_rate": round(b["per_second"] / cni_rate, 2) for c, b in bulk.items()},
        },
    }


# --- throughput ------------------------------------------------------------------------------------
def _iperf_gbps(output: str) -> float:
    data = json.loads(output)
    return round(data["end"]["sum_received"]["bits_per_second"] / 1e9, 2)


def _ping_ms(output: str) -> float:
    for line in output.splitlines():
        if "min/avg/max" in line:
            return float(line.split("=")[1].split("/")[1])
    raise CliError(f"bench: no ping summary in {output!r}")


def _exec(client: Client, instance: str, command: list[str]) -> str:
    code, out = client.run(instance, command, timeout=60)
    if code != 0:
        raise CliError(f"bench: {' '.join(command)} in {instance} failed ({code}): {out[-300:]}")
    return out


def _ping_from(instance: dict[str, Any], address: str) -> str:
    """ping as root in an instance's namespace: ping needs a capability (a file
    capability), which no instance has; the bench runs on the lab's machine, as root."""
    run = subprocess.run(
        launcher_argv(instance["status"]["netns"], ["ping", "-c", "20", "-i", "0.01", "-q", address], "root"),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if run.returncode != 0:
        raise CliError(f"bench: ping {address} from {instance['name']} failed: {run.stdout[-300:]}")
    return run.stdout


def veth_baseline(seconds: int) -> tuple[float, float]:
    with scratch_namespaces() as made:
        a, b = _unique("ta"), _unique("tb")
        netns.create(a).close()
        netns.create(b).close()
        made += [a, b]
        script = (
            f"ip -n {a} link add eth0 type veth peer name eth0 netns {b} && "
            f"ip -n {a} addr add 100.67.0.1/24 dev eth0 && ip -n {b} addr add 100.67.0.2/24 dev eth0 && "
            f"ip -n {a} link set eth0 up && ip -n {b} link set eth0 up && ip -n {a} link set lo up"
        )
        subprocess.run(script, shell=True, check=True)
        server = subprocess.Popen(launcher_argv(b, ["iperf3", "-s", "-1"], "root"), stdout=subprocess.DEVNULL)
        time.sleep(0.3)
        try:
            run = subprocess.run(
                launcher_argv(a, ["iperf3", "-c", "100.67.0.2", "-t", str(seconds), "-J"], "root"),
                capture_output=True, text=True, timeout=seconds + 30,
            )  # fmt: skip
            gbps = _iperf_gbps(run.stdout)
            ping = subprocess.run(
                launcher_argv(a, ["ping", "-c", "20", "-i", "0.01", "-q", "100.67.0.2"], "root"),
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        finally:
            server.kill()
            server.wait()
        return gbps, _ping_ms(ping.stdout)


def throughput(client: Client, quick: bool, progress: Progress) -> dict[str, Any]:
    seconds = 2 if quick else 5
    task = progress.add_task("throughput", total=4)
    docs = [
        _automaton(
            "perf", 5, ["iperf3", "-s", "-p", "5201"],
            {"provides": [{"protocol": "iperf", "transport": "tcp", "port": 5201}]},
        ),
        _automaton("load", 1, ["sleep", "infinity"], {"consumes": ["iperf"]}),
        {"kind": "Composition", "name": "bench-perf", "spec": {"links": [{"from": "load", "to": "perf", "protocol": "iperf"}]}},
    ]  # fmt: skip
    client.request("POST", "/apply", json={"documents": docs})
    wait_until(
        lambda: provisioned(client, "perf") == 5 and provisioned(client, "load") == 1,
        60,
        "perf",
        0.05,
    )
    instances = client.objects("instances")
    load = next(i for i in instances if i["spec"]["automaton"] == "load")
    perf = [i for i in instances if i["spec"]["automaton"] == "perf"]
    same = next(i for i in perf if i["status"]["host"] == load["status"]["host"])
    cross = next(i for i in perf if i["status"]["host"] != load["status"]["host"])
    results: dict[str, Any] = {"seconds": seconds}
    veth_gbps, veth_ms = veth_baseline(seconds)
    results["veth_pair"] = {"gbps": veth_gbps, "ping_ms": veth_ms}
    progress.advance(task)
    for label, target in (("same_host", same), ("cross_host", cross)):
        address = target["status"]["ipv4"]
        out = _exec(client, load["name"], ["iperf3", "-c", address, "-p", "5201", "-t", str(seconds), "-J"])
        ping = _ping_from(load, address)
        results[label] = {"gbps": _iperf_gbps(out), "ping_ms": _ping_ms(ping)}
        progress.advance(task)
    results["ratios"] = {
        "same_host_vs_veth": round(results["same_host"]["gbps"] / veth_gbps, 2),
        "cross_host_vs_veth": round(results["cross_host"]["gbps"] / veth_gbps, 2),
    }
    client.request(
        "POST", "/delete", json={"documents": [{"kind": d["kind"], "name": d["name"]} for d in docs]}
    )
    wait_until(lambda: client.get("automaton", "perf") is None, 60, "cleanup", every=0.1)
    progress.advance(task)
    return results


# --- policy ----------------------------------------------------------------------------------------
def policy(client: Client | None, quick: bool, progress: Progress) -> dict[str, Any]:
    from autonet.dataplane.nftables import Nft
    from autonet.dataplane.policy import Allow, RouterPolicy

    task = progress.add_task("policy", total=4)
    sources = [f"100.85.{i // 250}.{i % 250 + 1}" for i in range(100)]
    targets = [f"100.86.{i // 250}.{i % 250 + 1}" for i in range(900)]
    # 1,000 instances: 100 clients (identity 1) linked to 100 servers (identity 2), which
    # is 10,000 allowed pairs; the other 800 belong to 8 unlinked automatons (3 to 10).
    # Every instance is in the identity map; the link is one allow element.
    client_id, server_id = 1, 2
    identities = {a: client_id for a in sources} | {a: server_id for a in targets[:100]}
    identities |= {a: 3 + n // 100 for n, a in enumerate(targets[100:])}
    rules = {Allow(client_id, server_id, "tcp", 8080)}
    updates = 10 if quick else 30
    results: dict[str, Any] = {
        "instances": len(sources) + len(targets),
        "allowed_pairs": len(sources) * 100,
        "elements": len(identities) + 2 * len(rules),  # map, allow and ping elements
    }
    with scratch_namespaces() as made:
        full_ns, empty_ns = _unique("pf"), _unique("pe")
        for name in (full_ns, empty_ns):
            netns.create(name).close()
            made.append(name)
        full, empty = RouterPolicy(Nft(full_ns)), RouterPolicy(Nft(empty_ns))
        started = time.perf_counter()
        full.sync(identities, rules)
        results["initial_load_s"] = round(time.perf_counter() - started, 3)
        empty.sync({}, rules)
        progress.advance(task)
        loaded, baseline = [], []
        current_full = dict(identities)
        for n in range(updates):
            # A new server instance linked from all 100 clients: 100 new allowed pairs, one
            # new map element.
            new = {f"100.87.{n // 250}.{n % 250 + 1}": server_id}
            current_full |= new
            started = time.perf_counter()
            full.sync(current_full, rules)
            loaded.append(time.perf_counter() - started)
            started = time.perf_counter()
            empty.sync(new, rules)
            baseline.append(time.perf_counter() - started)
        progress.advance(task)
    results["update_with_10k_pairs"] = summary(loaded)
    results["update_into_empty_policy"] = summary(baseline)
    results["pairs_per_second"] = round(100 / statistics.fmean(loaded))
    results["ratios"] = {
        "update_p50_vs_empty_policy": round(percentile(loaded, 50) / percentile(baseline, 50), 2)
    }
    if client is not None:
        results["link_open_ms"] = link_open_latency(client, 3 if quick else 10)
    progress.advance(task, 2)
    return results


OPEN_PROBE = """
import socket, sys, time
deadline = time.time() + 20
while time.time() < deadline:
    try:
        socket.create_connection((sys.argv[1], 8080), timeout=0.2).close()
        print(time.time()); break
    except OSError:
        time.sleep(0.005)
"""


def link_open_latency(client: Client, samples: int) -> dict[str, float]:
    """Apply a link; how long until a connection gets through, seen from inside the client."""
    import threading

    docs = [
        _automaton("lweb", 1, ["python3", "-m", "autonet.examples.http_echo", "--port", "8080"],
                   {"provides": [{"protocol": "http", "transport": "tcp", "port": 8080}]}),
        _automaton("lcli", 1, ["sleep", "infinity"], {"consumes": ["http"]}),
    ]  # fmt: skip
    client.request("POST", "/apply", json={"documents": docs})
    wait_until(
        lambda: provisioned(client, "lweb") == 1 and provisioned(client, "lcli") == 1,
        60,
        "link",
        0.05,
    )
    web = next(i for i in client.objects("instances") if i["spec"]["automaton"] == "lweb")
    latencies = []
    link = {
        "kind": "Composition",
        "name": "bench-link",
        "spec": {"links": [{"from": "lcli", "to": "lweb", "protocol": "http"}]},
    }
    for _ in range(samples):
        box: dict[str, float] = {}

        def probe(box: dict[str, float] = box) -> None:
            _, out = client.run("lcli-0", ["python3", "-c", OPEN_PROBE, web["status"]["ipv4"]], timeout=30)
            if out.strip():
                box["opened"] = float(out)

        thread = threading.Thread(target=probe)
        thread.start()
        time.sleep(0.5)
        applied = time.time()
        client.request("POST", "/apply", json={"documents": [link]})
        thread.join(30)
        if "opened" in box:
            latencies.append(box["opened"] - applied)
        client.request("DELETE", "/objects/composition/bench-link")
        wait_until(lambda: client.get("composition", "bench-link") is None, 30, "unlink", every=0.02)
    client.request(
        "POST", "/delete", json={"documents": [{"kind": d["kind"], "name": d["name"]} for d in docs]}
    )
    wait_until(lambda: client.get("automaton", "lweb") is None, 60, "cleanup", every=0.1)
    return summary(latencies) if latencies else {"n": 0}


# --- maglev ------------------------------------------------------------------------------------------
def textbook_maglev(backends: list[str], size: int) -> list[int]:
    """The algorithm as usually written: the full N x M permutation table first."""
    permutation = []
    for name in backends:
        digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
        offset = int.from_bytes(digest[:8], "little") % size
        skip = int.from_bytes(digest[8:], "little") % (size - 1) + 1
        permutation.append([(offset + j * skip) % size for j in range(size)])
    following = [0] * len(backends)
    entry = [-1] * size
    filled = 0
    while True:
        for i in range(len(backends)):
            candidate = permutation[i][following[i]]
            while entry[candidate] >= 0:
                following[i] += 1
                candidate = permutation[i][following[i]]
            entry[candidate] = i
            following[i] += 1
            filled += 1
            if filled == size:
                return entry


def maglev_section(quick: bool, progress: Progress) -> dict[str, Any]:
    sizes = ((10, 1021), (100, 10007), (1000, 65537))
    task = progress.add_task("maglev", total=len(sizes))
    results: dict[str, Any] = {}
    for count, size in sizes:
        backends = [f"100.87.{i // 250}.{i % 250 + 1}" for i in range(count)]
        started = time.perf_counter()
        table = maglev.build(backends, size)
        ours = time.perf_counter() - started
        row: dict[str, Any] = {"slots": size, "build_ms": round(ours * 1000, 2)}
        if not (quick and count == 1000):
            started = time.perf_counter()
            textbook_maglev(backends, size)
            row["textbook_ms"] = round((time.perf_counter() - started) * 1000, 1)
            row["speedup_vs_textbook"] = round(row["textbook_ms"] / row["build_ms"], 1)
        removed = backends[: count // 2] + backends[count // 2 + 1 :]
        after = maglev.build(removed, size)
        moved = sum(1 for s in range(size) if backends[table[s]] != removed[after[s]])
        row["remove_one_moves"] = round(moved / size, 4)
        row["ideal_move"] = round(1 / count, 4)
        results[str(count)] = row
        progress.advance(task)
    results["ratios"] = {
        f"build_{n}_vs_textbook": round(1 / results[n]["speedup_vs_textbook"], 3)
        for n in results
        if "speedup_vs_textbook" in results[n]
    }
    return results


# --- the run ---------------------------------------------------------------------------------------
def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = {
        f"{section}: {name}": value
        for section, data in results["sections"].items()
        if isinstance(data, dict)
        for name, value in data.get("ratios", {}).items()
    }
    figure, axis = plt.subplots(figsize=(10, 0.45 * len(ratios) + 1.5))
    names = list(ratios)
    axis.barh(names, [ratios[n] for n in names], color="#4c72b0")
    axis.set_xscale("log")
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.set_xlabel("ratio to the baseline measured in the same run")
    axis.set_title(f"autonet bench, {results['machine']['date']}")
    for index, name in enumerate(names):
        axis.text(ratios[name], index, f" {ratios[name]}", va="center")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(
    which: list[str],
    quick: bool,
    output: Path,
    scale_options: ScaleOptions | None = None,
    controllers: int = 1,
) -> dict[str, Any]:
    unknown = set(which) - set(SECTIONS)
    if unknown:
        raise CliError(
            f"unknown bench section(s) {', '.join(sorted(unknown))}: choose from {', '.join(SECTIONS)}, all"
        )
    results: dict[str, Any] = {
        "machine": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "quick": quick,
        "sections": {},
    }
    needs_lab = any(s in which for s in ("provision", "throughput", "policy"))
    name = "bench" + uuid.uuid4().hex[:5]
    with Progress() as progress:
        info = labs.up(name, 3, "ipv4") if needs_lab else None
        try:
            client = Client(info.api) if info else None
            if client is not None:
                client.request("POST", "/apply", json={"documents": manifest.parse(BENCH_VPC)})
            for section in which:
                started = time.perf_counter()
                if section == "provision":
                    assert client is not None
                    data = provision(client, quick, progress)
                elif section == "throughput":
                    assert client is not None
                    data = throughput(client, quick, progress)
                elif section == "policy":
                    data = policy(client, quick, progress)
                elif section == "failover":  # on a lab of its own: it breaks hosts (or controllers)
                    data = failover(
                        quick, lambda step: progress.console.print(f"failover: {step}"), controllers
                    )
                elif section == "scale":  # its own controller and hollow hosts
                    options = scale_options or ScaleOptions()
                    options.logs = options.logs or output.with_name(output.stem + "-scale-logs")
                    data = scale(
                        options,
                        quick,
                        lambda step: progress.console.print(f"scale: {step}"),
                    )
                else:
                    data = maglev_section(quick, progress)
                data["section_seconds"] = round(time.perf_counter() - started, 1)
                results["sections"][section] = data
        finally:
            if info is not None:
                labs.down(name)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    chart(results, output.with_suffix(".png"))
    if "scale" in results["sections"]:
        scale_chart(results["sections"]["scale"], scale_chart_path(output))
    return results


def scale_chart_path(output: Path) -> Path:
    return output.with_name(output.stem + "-scale.png")
