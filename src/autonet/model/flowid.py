"""Flow IDs unique across hosts without coordination (snowflake layout).

    | 41 bits: milliseconds since 2025-01-01 | 12 bits: host index | 10 bits: sequence |

The host index is leased per host by the controller; the sequence orders IDs minted
in the same millisecond, and the generator waits for the next millisecond when it wraps.
"""

from __future__ import annotations

import threading
import time

EPOCH_MS = 1_735_689_600_000
HOST_BITS = 12
SEQ_BITS = 10
MAX_HOSTS = 1 << HOST_BITS


class FlowIdGenerator:
    def __init__(self, host_index: int, clock: object = time.time) -> None:
        if not 0 <= host_index < MAX_HOSTS:
            raise ValueError(f"host index {host_index} outside 0..{MAX_HOSTS - 1}")
        self.host_index = host_index
        self._clock = clock
        self._last_ms = -1
        self._seq = 0
        self._lock = threading.Lock()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000) - EPOCH_MS  # type: ignore[operator]

    def next(self) -> int:
        with self._lock:
            now = max(self._now_ms(), self._last_ms)
            if now == self._last_ms:
                self._seq = (self._seq + 1) & ((1 << SEQ_BITS) - 1)
                if self._seq == 0:
                    now = self._last_ms + 1  # borrow the next millisecond
            else:
                self._seq = 0
            self._last_ms = now
            return (now << (HOST_BITS + SEQ_BITS)) | (self.host_index << SEQ_BITS) | self._seq


def host_of(flow_id: int) -> int:
    return (flow_id >> SEQ_BITS) & (MAX_HOSTS - 1)
