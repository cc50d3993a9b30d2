"""`autonet bench scale` end to end on a few hollow hosts: what it writes (figures not asserted).

It needs no root (hollow hosts make no kernel objects), but starts a controller twice and
a hollow fleet and takes 10-15 s (up to 45 s when a hollow host did not notice the
controller's restart and waits for the periodic resync), so it runs with the lab tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


def test_bench_scale_on_three_hollow_hosts_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    before = set(Path(tempfile.gettempdir()).glob("autonet-scale-*"))
    argv = [sys.executable, "-m", "autonet.cli.main", "bench", "scale", "--hosts", "3", "--instances", "30"]
    result = subprocess.run(
        [*argv, "--timeout", "60", "-o", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    scale = json.loads(out.read_text())["sections"]["scale"]
    assert "error" not in scale, scale["error"]
    assert scale["converged"] and scale["converge_s"] > 0 and scale["instances_per_s"] > 0
    assert [s["size"] for s in scale["stages"]] == [3, 10, 30]
    for stage in scale["stages"]:
        assert len(stage["instance_event_s"]) == len(stage["link_event_s"]) == 3
        assert stage["placement"]["placement.decision"]["n"] >= stage["size"] // 3
    assert scale["placement_p99_ms"] >= scale["placement_p50_ms"] > 0
    assert "rss_kib_per_instance" in scale
    # What the hollow hosts hold is what the store says.
    assert scale["dataplane"]["consistent"] and scale["dataplane"]["hosts"] == 3
    assert set(scale["restart"]) >= {"api_s", "hosts_ready_s", "routers_synced_s", "instance_s"}
    assert scale["restart"]["routers_synced_s"] < 45  # at worst the periodic resync (30 s)
    assert scale["lost_instances_seen"] == 0
    assert (tmp_path / "results-scale.png").read_bytes()[:4] == b"\x89PNG"
    # Nothing left behind: its temporary directory (store, socket, logs) is gone.
    assert set(Path(tempfile.gettempdir()).glob("autonet-scale-*")) <= before
