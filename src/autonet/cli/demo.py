"""`autonet demo`: the main job end to end on a fresh lab, narrated.

It builds a lab, applies examples/shop.yaml (a client composed to a 3-replica web
service over HTTP), calls every web instance from the client over IPv4 and IPv6,
scales, deletes, checks the kernel is clean, and takes the lab down (unless --keep).
"""

from __future__ import annotations

import time
from importlib.resources import files
from typing import Any

import typer

from autonet.cli import lab as labs
from autonet.cli import output
from autonet.cli.client import Client, CliError
from autonet.dataplane import netns
from autonet.model import manifest

LAB = "demo"
HOSTS = 1


def say(text: str) -> None:
    typer.secho(f"==> {text}", bold=True)


def wait_provisioned(c: Client, automatons: dict[str, int], timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        instances = c.objects("instances")
        ready = all(
            sum(
                1
                for i in instances
                if i["spec"]["automaton"] == a and i["status"].get("state") == "Provisioned"
            )
            == n
            and sum(1 for i in instances if i["spec"]["automaton"] == a) == n
            for a, n in automatons.items()
        )
        if ready:
            return instances
        time.sleep(0.1)
    raise CliError(f"demo: instances not provisioned within {timeout}s")


def run(keep: bool) -> None:
    text = files("autonet.examples").joinpath("shop.yaml").read_text()
    docs = manifest.parse(text)
    if labs.LabInfo.load(LAB) is not None:
        say("an old demo lab is up: taking it down first")
        labs.down(LAB)
    say(f"lab up: {HOSTS} host(s), each a network namespace running a real agent; a controller")
    started = time.monotonic()
    info = labs.up(LAB, HOSTS, "ipv4")
    print(f"    up in {time.monotonic() - started:.1f}s; API on {info.api}")
    c = Client(info.api)
    try:
        say("apply examples/shop.yaml: VPC blue, network blue-a, automatons web (3 replicas) and client")
        started = time.monotonic()
        for result in c.request("POST", "/apply", json={"documents": docs})["results"]:
            print(f"    {result['kind'].lower()}/{result['name']} {result['action']}")
        instances = wait_provisioned(c, {"web": 3, "client": 1})
        print(f"    all 4 instances Provisioned in {time.monotonic() - started:.2f}s")
        print("\n".join("    " + line for line in output.table("Instance", instances).splitlines()))

        say("from client-0, HTTP to every web instance over IPv4 and IPv6 (each answers with its name)")
        for inst in sorted(
            (i for i in instances if i["spec"]["automaton"] == "web"), key=lambda i: i["name"]
        ):
            for address in (inst["status"]["ipv4"], f"[{inst['status']['ipv6']}]"):
                url = f"http://{address}:8080/"
                code, out = c.run("client-0", ["python3", "-m", "autonet.examples.http_get", url], timeout=10)
                body = out.strip()
                print(f"    GET {url:<32} -> {body if code == 0 else 'FAILED'}")
                if code != 0 or body != inst["name"]:
                    raise CliError(f"demo: {url} answered {body!r} instead of {inst['name']!r}")

        say("scale web to 5, then back to 1")
        for replicas in (5, 1):
            started = time.monotonic()
            c.request("POST", "/automatons/web/scale", json={"replicas": replicas})
            wait_provisioned(c, {"web": replicas, "client": 1})
            print(f"    web has {replicas} instance(s) ({time.monotonic() - started:.2f}s)")

        say("delete everything; then look at the kernel, not the store")
        c.request(
            "POST", "/delete", json={"documents": [{"kind": d["kind"], "name": d["name"]} for d in docs]}
        )
        deadline = time.monotonic() + 60
        while c.objects("instances") or c.objects("vpcs"):
            if time.monotonic() > deadline:
                raise CliError("demo: objects were not deleted within 60s")
            time.sleep(0.1)
        tags = info.host_tags()
        left = [n for n in netns.list_names("an") if n[3:7] in tags and n[:3] in ("ani", "anr")]
        print(f"    instance/router namespaces left on the hosts: {len(left)}")
        if left:
            raise CliError(f"demo: namespaces left behind: {', '.join(left)}")
    finally:
        if keep:
            say(
                f"lab {LAB} kept: try `autonet --lab {LAB} get hosts`; `autonet lab down --name {LAB}` ends it"
            )
        else:
            say("lab down")
            labs.down(LAB)
    say("demo done")
