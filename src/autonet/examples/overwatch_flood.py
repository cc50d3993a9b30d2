"""An example Overwatch plugin: cap an automaton that floods.

Enable it in the controller: `autonet controller --overwatch flood-cap:threshold_mbps=200,cap_mbps=50`
(or `autonet lab up --overwatch ...`). When an automaton's instances together send more
than `threshold_mbps` for `samples` load samples in a row, it gets an egress cap of
`cap_mbps` per instance; automatons already capped at or below that are left alone.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from autonet.control.overwatch import QosChange


class FloodCap:
    def __init__(self, threshold_mbps: float = 200.0, cap_mbps: float = 50.0, samples: float = 2) -> None:
        self.threshold_bps = threshold_mbps * 1e6
        self.cap_mbps = cap_mbps
        self.samples = int(samples)
        self._over: dict[str, int] = defaultdict(int)
        self._capped: set[str] = set()

    def observe(self, snapshot: dict[str, Any]) -> list[QosChange]:
        changes = []
        for row in snapshot["automatons"]:
            name = row["automaton"]
            if row["tx_bps"] > self.threshold_bps:
                self._over[name] += 1
            else:
                self._over[name] = 0
            if self._over[name] >= self.samples and name not in self._capped:
                self._capped.add(name)
                reason = f"sent {row['tx_bps'] / 1e6:.0f} Mbit/s > {self.threshold_bps / 1e6:.0f} for {self.samples} samples"
                changes.append(QosChange(automaton=name, egress_mbps=self.cap_mbps, reason=reason))
        return changes
