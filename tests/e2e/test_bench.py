"""`autonet bench` runs end to end and writes what it promises (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


def test_bench_quick_writes_json_with_ratios_and_a_chart(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "autonet.cli.main", "bench", "maglev", "policy", "--quick", "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data["sections"]) == {"maglev", "policy"}
    assert data["sections"]["policy"]["allowed_pairs"] == 10000
    assert data["sections"]["policy"]["link_open_ms"]["n"] == 3  # every link opened
    assert data["sections"]["maglev"]["1000"]["slots"] == 65537
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_bench_rejects_an_unknown_section(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "autonet.cli.main", "bench", "speed", "-o", str(tmp_path / "r.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "error: unknown bench section(s) speed: choose from provision, throughput, policy, maglev, failover, scale, all"
    )
