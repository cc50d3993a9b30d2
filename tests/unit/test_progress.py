"""Progress of long waits: converged / total and the slowest object, on stderr."""

from __future__ import annotations

import io

import pytest

from autonet.cli import progress
from autonet.cli.progress import WaitProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    return clock


def test_the_slowest_is_the_one_unchanged_for_longest(clock: Clock) -> None:
    wait = WaitProgress("waiting", io.StringIO())
    pending = {"Automaton web": "Automaton web (0/3 instances provisioned)", "Vpc blue": "Vpc blue (Init)"}
    wait.line(pending, 4)
    clock.now += 3
    pending["Automaton web"] = "Automaton web (1/3 instances provisioned)"  # web moved on, blue did not
    text, age = wait.line(pending, 4)
    assert text == "waiting: 2/4 converged, slowest: Vpc blue (Init)"
    assert age == " for 3s"
    del pending["Vpc blue"]
    assert (
        wait.line(pending, 4)[0]
        == "waiting: 3/4 converged, slowest: Automaton web (1/3 instances provisioned)"
    )


def test_off_a_terminal_a_short_wait_prints_nothing_and_a_long_one_a_line_per_change(clock: Clock) -> None:
    out = io.StringIO()
    wait = WaitProgress("waiting", out)
    pending = {"Instance web-0": "Instance web-0 (Wired)"}
    for _ in range(10):  # 1 s of rounds
        wait.update(pending, 2)
        clock.now += 0.1
    assert out.getvalue() == ""
    clock.now += progress.PLAIN_EVERY
    wait.update(pending, 2)
    assert out.getvalue() == "waiting: 1/2 converged, slowest: Instance web-0 (Wired) for 6s\n"
    clock.now += 1
    wait.update(pending, 2)  # unchanged and soon after: nothing more
    assert out.getvalue().count("\n") == 1
    clock.now += progress.PLAIN_EVERY
    wait.update({"Instance web-0": "Instance web-0 (Started)"}, 2)
    assert (
        out.getvalue().splitlines()[-1] == "waiting: 1/2 converged, slowest: Instance web-0 (Started) for 0s"
    )
    wait.close()


def test_on_a_terminal_the_line_is_live_and_leaves_nothing_behind(clock: Clock) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    wait = WaitProgress("waiting", out)
    wait.update({"Vpc blue": "Vpc blue (Init)"}, 3)
    assert "waiting: 2/3 converged, slowest: Vpc blue (Init)" in out.getvalue()
    wait.close()
    assert wait.live is None
