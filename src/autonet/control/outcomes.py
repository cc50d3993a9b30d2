"""What a handler returns or raises, and what the runner does with it.

- return `Advance(status=..., also=[...])`: merge `status`, move to the kind's next
  stage, and commit `also` (store operations) in the same transaction;
- return `MoveTo(state, ...)`: the same, to a named state;
- a transition clears `status.reason` unless the outcome's `status` sets one;
- return `Remove(also=[...])`: delete the object (after Terminating), atomically with `also`;
- `Advance`, `MoveTo` and `Remove` may carry `after`: a coroutine function run once the transition
  is committed (e.g. to push the new state to the hosts); its failure is logged, and
  the periodic resync repairs what it missed;
- return `Stay(status=...)`: keep the state, record status (e.g. a periodic check);
- raise `Retry(reason, delay)`: a temporary condition; the reason is shown, retried later;
- raise `Fail(reason)`: a permanent error; the object goes to `Failed` with the reason.
Any other exception is treated as temporary and retried with backoff.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autonet.store import Op

AfterCommit = Callable[[], Awaitable[None]] | None


@dataclass
class Advance:
    status: dict[str, Any] = field(default_factory=dict)
    also: Sequence[Op] = field(default_factory=list)
    after: AfterCommit = None


@dataclass
class MoveTo:
    state: str
    status: dict[str, Any] = field(default_factory=dict)
    also: Sequence[Op] = field(default_factory=list)
    after: AfterCommit = None


@dataclass
class Stay:
    status: dict[str, Any] = field(default_factory=dict)
    recheck_after: float | None = None


@dataclass
class Remove:
    also: Sequence[Op] = field(default_factory=list)
    after: AfterCommit = None


Outcome = Advance | MoveTo | Stay | Remove


class Retry(Exception):
    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class Fail(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
