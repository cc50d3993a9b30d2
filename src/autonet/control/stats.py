"""Timing samples kept in the controller's memory, summarised for `GET /api/v1/stats`.

Operators record how long their steps take (`ctx.timings.add("placement.decision",
seconds)`); the runner records every handler run under `handler <Kind>/<State>`. Only
the newest `KEEP` samples per name are kept, so the memory is bounded however long the
controller runs. Like the load table, these are measurements, not desired state: they
live in memory only and start empty when a controller (re)starts. `autonet bench scale`
reads them to report placement decision times at fleet size.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

KEEP = 100_000  # samples per name: about 1 MB of floats per name at most


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Timings:
    """Named duration samples (seconds), newest `KEEP` per name."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.started = time.time()
        self._samples: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}  # every sample ever added, also those dropped
        self._gauges: dict[str, Callable[[], float]] = {}

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """A value read when the summary is asked for (e.g. the runner's objects in work)."""
        self._gauges[name] = read

    def add(self, name: str, seconds: float) -> None:
        samples = self._samples.get(name)
        if samples is None:
            samples = self._samples[name] = deque(maxlen=self.keep)
        samples.append(seconds)
        self._counts[name] = self._counts.get(name, 0) + 1

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record how long the block takes (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def summary(self) -> dict[str, Any]:
        """Per name: count, p50, p99, mean and max in milliseconds (over the kept samples)."""
        out: dict[str, Any] = {}
        for name, samples in sorted(self._samples.items()):
            if not samples:
                continue
            ordered = sorted(samples)
            out[name] = {
                "n": self._counts[name],
                "kept": len(ordered),
                "p50_ms": round(_percentile(ordered, 50) * 1000, 3),
                "p99_ms": round(_percentile(ordered, 99) * 1000, 3),
                "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
                "max_ms": round(ordered[-1] * 1000, 3),
                "total_s": round(sum(ordered), 3),
            }
        gauges = {name: read() for name, read in sorted(self._gauges.items())}
        return {"since": self.started, "timings": out, "gauges": gauges}

    def reset(self) -> None:
        self.started = time.time()
        self._samples.clear()
        self._counts.clear()
