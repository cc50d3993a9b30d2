"""Maglev consistent hashing (Eisenbud et al., NSDI 2016): the lookup table.

Each backend has a preference list over the M slots, a permutation given by
`offset + j * skip (mod M)` with offset and skip hashed from the backend's name (M is
prime, so every skip in 1..M-1 gives a permutation). Backends take turns claiming their
next preferred free slot until the table is full. The result is near-perfectly even
(every backend gets floor or ceil of M/N slots) and a change of the backend set moves
few slots: removing 1 of N backends remaps about 1/N of them.

The permutation is never materialised (that is what makes naive implementations take
seconds: N x M entries); each backend keeps a cursor and computes its next candidate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

# Primes for the table size: M >= 100 * N keeps the imbalance under about 1 %.
PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65537)


def table_size(backends: int) -> int:
    for prime in PRIMES:
        if prime >= 100 * backends:
            return prime
    return PRIMES[-1]


def _offset_skip(name: str, size: int) -> tuple[int, int]:
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little") % size, int.from_bytes(digest[8:], "little") % (size - 1) + 1


def build(backends: Sequence[str], size: int | None = None) -> list[int]:
    """The table: slot -> index into `backends` (empty list when there is no backend)."""
    count = len(backends)
    if count == 0:
        return []
    size = size or table_size(count)
    if len(set(backends)) != count:
        raise ValueError("backend names must be unique")
    params = [_offset_skip(name, size) for name in backends]
    position = [offset for offset, _ in params]  # current candidate slot of each backend
    skips = [skip for _, skip in params]
    table = [-1] * size
    filled = 0
    while True:
        for index in range(count):
            slot = position[index]
            skip = skips[index]
            while table[slot] >= 0:
                slot += skip
                if slot >= size:
                    slot -= size
            table[slot] = index
            position[index] = slot + skip - size if slot + skip >= size else slot + skip
            filled += 1
            if filled == size:
                return table
