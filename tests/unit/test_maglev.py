"""Maglev: balance, minimal disruption, determinism; and the DNS answers built on top."""

from __future__ import annotations

import struct
from collections import Counter

import pytest

from autonet.agent.dns import answer
from autonet.model.maglev import build, table_size

BACKENDS = [f"100.80.1.{i}" for i in range(1, 6)]


def test_table_is_balanced_within_a_few_percent() -> None:
    for count, size in ((5, 65537), (100, 10007), (7, table_size(7))):
        table = build([f"b{i}" for i in range(count)], size)
        loads = Counter(table)
        assert len(table) == size and len(loads) == count
        assert max(loads.values()) / (size / count) < 1.03
        assert min(loads.values()) / (size / count) > 0.97


def test_removing_one_of_five_backends_remaps_at_most_a_fifth_plus_five_percent() -> None:
    size = 65537
    before = build(BACKENDS, size)
    remaining = BACKENDS[:2] + BACKENDS[3:]  # remove the middle one
    after = build(remaining, size)
    moved = sum(1 for slot in range(size) if BACKENDS[before[slot]] != remaining[after[slot]])
    assert moved / size <= 1 / 5 + 0.05
    # Slots of the removed backend must move; others mostly stay.
    kept = sum(
        1
        for slot in range(size)
        if BACKENDS[before[slot]] != BACKENDS[2] and BACKENDS[before[slot]] != remaining[after[slot]]
    )
    assert kept / size < 0.05


def test_adding_a_backend_moves_about_one_over_n() -> None:
    size = 65537
    before = build(BACKENDS, size)
    grown = [*BACKENDS, "100.80.1.6"]
    after = build(grown, size)
    moved = sum(1 for slot in range(size) if BACKENDS[before[slot]] != grown[after[slot]])
    assert moved / size <= 1 / 6 + 0.05


def test_table_is_deterministic_and_order_independent_per_name() -> None:
    assert build(BACKENDS, 1021) == build(list(BACKENDS), 1021)
    with pytest.raises(ValueError, match="unique"):
        build(["a", "a"], 251)
    assert build([], 251) == []


def test_table_sizes_are_prime_and_grow_with_the_backends() -> None:
    sizes = [table_size(n) for n in (1, 3, 10, 100, 1000)]
    assert sizes == sorted(sizes)
    for size in sizes:
        assert all(size % d for d in range(2, int(size**0.5) + 1))


def query(name: str, qtype: int = 1) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


RECORDS = {
    "web": ["100.80.255.1", "fd00:80:0:ffff::1"],
    "web.blue.autonet": ["100.80.255.1", "fd00:80:0:ffff::1"],
}


def test_dns_answers_a_and_aaaa_and_nxdomain() -> None:
    reply = answer(query("web.blue.autonet"), RECORDS)
    ident, flags, _, ancount, _, _ = struct.unpack_from("!HHHHHH", reply)
    assert ident == 0x1234 and flags & 0xF == 0 and ancount == 1
    assert reply.endswith(bytes([100, 80, 255, 1]))
    aaaa = answer(query("WEB", 28), RECORDS)
    assert struct.unpack_from("!HHHHHH", aaaa)[3] == 1 and aaaa.endswith(
        bytes.fromhex("fd0000800000ffff0000000000000001")
    )
    missing = answer(query("nope.blue.autonet"), RECORDS)
    assert struct.unpack_from("!HHHHHH", missing)[1] & 0xF == 3
    assert answer(b"\x12", RECORDS) is None  # not even a header: dropped, no crash (tests/unit/test_dns.py)
