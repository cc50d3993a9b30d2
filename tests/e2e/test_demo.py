"""`autonet demo` end to end, as `make demo` runs it: every step shown, a clean machine after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autonet.dataplane import netns
from autonet.model import naming

pytestmark = pytest.mark.lab

STEPS = (
    "lab up: 3 hosts",
    "services by DNS name",
    "per host: h1: ",
    "composition security: intruder-0 is linked to nothing",
    "Connection refused",
    "denied: no composition links intruder -> web",
    "allowed: client -> web: http (tcp/8080) by shop",
    "a live QoS change",
    "top during it, peak receive Mbit/s per automaton",
    "flows: client-0's connections",
    "(sink-0)",
    "a host fails",
    "web back to 3 Provisioned",
    "healed: Ready again",
    "the composition graph: autonet-demo.svg",
    "namespaces left on the hosts: 0",
    "demo done in",
)


def test_the_demo_shows_every_step_and_leaves_a_clean_machine(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "autonet.cli.main", "demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for step in STEPS:
        assert step in done.stdout, f"the demo did not show {step!r}:\n{done.stdout}"
    capped = next(line for line in done.stdout.splitlines() if "capped:" in line and "uncapped" not in line)
    assert 10 <= float(capped.split("(")[1].split()[0]) <= 22  # Mbit/s under the 20 Mbit/s cap
    assert "<svg" in (tmp_path / "autonet-demo.svg").read_text()
    assert not [n for n in netns.list_names("an") if n.startswith(naming.lab_prefix("demo"))]
