"""Progress of a long wait (`apply --wait`, `scale --wait`, `delete --wait`) on stderr.

A user waiting on many objects wants to know how far it got and what holds it up: the
count of objects converged out of the total, and the slowest one (the pending object
whose state has not changed for the longest) with its state and reason. On a terminal
this is one live line (rich); otherwise a plain line whenever it changes, at most every
`PLAIN_EVERY` seconds, so logs and CI output stay short. stdout keeps only the results.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.text import Text

PLAIN_EVERY = 5.0


class WaitProgress:
    """Fed each round with every target's description ("" when converged)."""

    def __init__(self, what: str, stream: IO[str] | None = None) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.since: dict[str, tuple[str, float]] = {}  # target -> (description, when it last changed)
        self.live: Live | None = None
        self.last_plain = ("", self.started)  # plain lines only for waits longer than PLAIN_EVERY
        if self.stream.isatty():
            self.live = Live(console=Console(file=self.stream), transient=True, auto_refresh=False)
            self.live.start()

    def line(self, pending: dict[str, str], total: int) -> tuple[str, str]:
        """`what: N/M converged, slowest: TARGET (STATE: REASON)`, and ` for Ts` (how long
        the slowest has been so) apart, for this round."""
        now = time.monotonic()
        for target, description in pending.items():
            seen = self.since.get(target)
            if seen is None or seen[0] != description:
                self.since[target] = (description, now)
        for gone in set(self.since) - set(pending):
            del self.since[gone]
        text = f"{self.what}: {total - len(pending)}/{total} converged"
        if not pending:
            return text, ""
        slowest = min(pending, key=lambda target: self.since[target][1])
        return f"{text}, slowest: {pending[slowest]}", f" for {now - self.since[slowest][1]:.0f}s"

    def update(self, pending: dict[str, str], total: int) -> None:
        text, age = self.line(pending, total)
        if self.live is not None:
            self.live.update(Text(text + age), refresh=True)
            return
        now = time.monotonic()
        quiet = now - self.last_plain[1]
        if (text != self.last_plain[0] and quiet >= PLAIN_EVERY) or quiet >= 2 * PLAIN_EVERY:
            print(text + age, file=self.stream, flush=True)
            self.last_plain = (text, now)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
