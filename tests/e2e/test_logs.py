"""Instance logs through the CLI on a one-host lab: tail by lines, size cap, follow, removal."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.lab import Lab, interruptible

pytestmark = pytest.mark.lab

CAP = 8192
COUNTER = """
kind: Vpc
name: tally
spec: {cidrs: [100.95.0.0/16, "fd00:95::/48"]}
---
kind: Network
name: tally-a
spec: {vpc: tally, cidrs: [100.95.1.0/24, "fd00:95:0:1::/64"]}
---
kind: Automaton
name: counter
spec:
  network: tally-a
  command:
    - python3
    - -c
    - "import itertools,time; [print(i, flush=True) or time.sleep(0.002) for i in itertools.count()]"
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=1, env={"AUTONET_LOG_MAX_BYTES": str(CAP)}) as lab:
        lab.apply(COUNTER)
        yield lab


def numbers(text: str) -> list[int]:
    return [int(line) for line in text.splitlines() if line.isdigit()]


def assert_in_order(got: list[int]) -> None:
    """Nothing repeated or out of order; a rotation may drop what is written during its
    last microseconds (copytruncate), a line at most at this rate."""
    assert got == sorted(set(got)), got
    assert got[-1] - got[0] + 1 - len(got) <= 2, f"lines missing from {got}"


def log_dir(lab: Lab) -> Path:
    return lab.info.dir / "hosts" / "h1" / "logs"


def test_tail_gives_the_last_lines(lab: Lab) -> None:
    time.sleep(1)
    out = lab.ok("logs", "counter-0", "--tail", "5")
    lines = out.splitlines()
    assert len(lines) == 5, out
    got = numbers(out)
    assert got == list(range(got[0], got[0] + 5)), out


def test_the_log_stays_under_the_cap(lab: Lab) -> None:
    log = log_dir(lab) / "counter-0.log"
    first = numbers(lab.ok("logs", "counter-0", "--tail", "1"))[0]
    deadline = time.monotonic() + 30
    while not (log.with_name(log.name + ".1")).exists() and time.monotonic() < deadline:
        assert log.stat().st_size < 2 * CAP
        time.sleep(0.5)
    for _ in range(6):  # several rotations' worth
        time.sleep(1)
        assert log.stat().st_size < 2 * CAP
        assert log.with_name(log.name + ".1").stat().st_size < 2 * CAP
    # The newest output is there, and --tail reaches into the rotated file when asked.
    current = len(log.read_text().splitlines())
    got = numbers(lab.ok("logs", "counter-0", "--tail", str(current + 20)))
    assert len(got) == current + 20 and got[0] > first
    assert_in_order(got)


def test_follow_streams_new_output_and_ctrl_c_ends_it_quietly(lab: Lab) -> None:
    last = numbers(lab.ok("logs", "counter-0", "--tail", "1"))[-1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "autonet.cli.main", "logs", "counter-0", "-f", "--tail", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AUTONET_LAB": lab.name},
        preexec_fn=interruptible,
    )
    try:
        # Interrupt it once it follows (its first line is out), however slowly it started.
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "logs -f printed nothing within 60 s"
        first = proc.stdout.readline()
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=15)
        out = first + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err == ""
    got = numbers(out.rsplit("\n", 1)[0])  # the last line may have been cut by the interrupt
    assert got[-1] > last + 100, out[-200:]
    assert_in_order(got)


def test_delete_removes_the_logs(lab: Lab) -> None:
    assert (log_dir(lab) / "counter-0.log").exists()
    lab.ok("delete", "-f", "-", "--wait", stdin=COUNTER)
    assert not [p.name for p in log_dir(lab).iterdir() if p.name.startswith("counter-0")]
