"""`autonet controller --store etcd://...`: the controller runs its pipeline on etcd, and a
restarted controller resumes from what etcd holds (no hosts needed: VPCs and networks);
two controllers share the VPCs, list each other, and one takes over when the other is
killed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .etcd_server import EtcdServer, needs_etcd

pytestmark = needs_etcd

SRC = Path(__file__).resolve().parents[2] / "src"
MANIFEST = [
    {"kind": "Vpc", "name": "blue", "spec": {"cidrs": ["100.80.0.0/16", "fd00:80::/48"]}},
    {"kind": "Network", "name": "blue-a", "spec": {"vpc": "blue", "cidrs": ["100.80.1.0/24"]}},
]


class Controller:
    def __init__(self, store: str, sock: Path, log: Path, options: list[str] | None = None) -> None:
        argv = [sys.executable, "-m", "autonet.cli.main", "controller", "--store", store]
        argv += ["--listen", f"unix:{sock}", "--log-level", "warning", *(options or [])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://controller")
        self.log = log
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if sock.exists() and self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the controller did not start:\n{log.read_text()[-3000:]}")

    def get(self, kind: str, name: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/objects/{kind}/{name}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def wait_state(self, kind: str, name: str, state: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(kind, name)
            if obj["status"].get("state") == state or time.monotonic() > deadline:
                assert obj["status"].get("state") == state, (obj, self.log.read_text()[-3000:])
                return obj
            time.sleep(0.05)

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def controllers() -> Iterator[list[Controller]]:
    started: list[Controller] = []
    yield started
    for controller in started:
        controller.stop()


def test_controller_runs_and_resumes_on_etcd(
    etcd: EtcdServer, tmp_path: Path, controllers: list[Controller]
) -> None:
    store = f"etcd://{etcd.endpoint}/controller"
    first = Controller(store, tmp_path / "api.sock", tmp_path / "controller.log")
    controllers.append(first)
    applied = first.http.post("/api/v1/apply", json={"documents": MANIFEST})
    assert applied.status_code == 200, applied.text
    vpc = first.wait_state("Vpc", "blue", "Provisioned")
    network = first.wait_state("Network", "blue-a", "Provisioned")
    first.stop()
    (tmp_path / "api.sock").unlink(missing_ok=True)

    second = Controller(store, tmp_path / "api.sock", tmp_path / "controller.log")
    controllers.append(second)
    assert second.get("Vpc", "blue") == vpc
    assert second.get("Network", "blue-a") == network
    assert second.http.get("/healthz").json()["revision"] >= 4


def test_two_controllers_share_the_vpcs_and_one_takes_over_when_the_other_is_killed(
    etcd: EtcdServer, tmp_path: Path, controllers: list[Controller]
) -> None:
    store = f"etcd://{etcd.endpoint}/two-controllers"
    ttl = ["--member-ttl", "2"]
    c1 = Controller(store, tmp_path / "c1.sock", tmp_path / "c1.log", ["--id", "c1", *ttl])
    controllers.append(c1)
    c2_options = ["--id", "c2", "--advertise", "http://c2.test:8080", *ttl]
    c2 = Controller(store, tmp_path / "c2.sock", tmp_path / "c2.log", c2_options)
    controllers.append(c2)
    manifest = [
        *MANIFEST,
        {"kind": "Vpc", "name": "green", "spec": {"cidrs": ["100.81.0.0/16"]}},
        {"kind": "Network", "name": "green-a", "spec": {"vpc": "green", "cidrs": ["100.81.1.0/24"]}},
    ]
    applied = c2.http.post("/api/v1/apply", json={"documents": manifest})  # any controller takes it
    assert applied.status_code == 200, applied.text
    for kind, name in [("Vpc", "blue"), ("Vpc", "green"), ("Network", "blue-a"), ("Network", "green-a")]:
        c1.wait_state(kind, name, "Provisioned")

    def listed(controller: Controller) -> dict[str, dict[str, Any]]:
        rows: list[dict[str, Any]] = controller.http.get("/api/v1/controllers").json()
        return {row["id"]: row for row in rows}

    deadline = time.monotonic() + 10
    while set(listed(c1)) != {"c1", "c2"} and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = listed(c1)
    assert set(rows) == {"c1", "c2"}, rows
    assert rows["c1"]["self"] and not rows["c2"]["self"]
    assert rows["c2"]["endpoints"] == ["http://c2.test:8080"]
    assert rows["c1"]["endpoints"] == [f"unix:{tmp_path / 'c1.sock'}"]
    assert {row["state"] for row in rows.values()} == {"acting"}
    shards = [s["shard"] for row in rows.values() for s in row["shards"]]
    assert sorted(shards) == ["hosts", "vpc/blue", "vpc/green"]  # each owned once
    assert all(s["epoch"] > 0 for row in rows.values() for s in row["shards"])
    assert 0 < rows["c1"]["lease_left_s"] <= 2

    c1.proc.kill()  # kill -9: its lease runs out, c2 takes everything
    c1.proc.wait()
    killed = time.monotonic()
    while time.monotonic() - killed < 8:
        rows = listed(c2)
        if set(rows) == {"c2"} and sorted(rows["c2"]["vpcs"]) == ["blue", "green"]:
            break
        time.sleep(0.1)
    assert set(rows) == {"c2"} and sorted(rows["c2"]["vpcs"]) == ["blue", "green"], rows
    assert time.monotonic() - killed < 2 + 3  # the TTL, etcd's reaping, a claim
