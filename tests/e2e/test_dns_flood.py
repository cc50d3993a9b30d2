"""The DNS responder under a flood, end to end: one instance floods its router's responder
for 3 s; another instance of the same VPC on the same host keeps resolving names, the
agent keeps serving (exec goes through it), and the flooder gets only its rate's worth
of answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from autonet.agent.dns import BURST, RATE
from tests.e2e.lab import Lab
from tests.e2e.test_services import SHOP

pytestmark = pytest.mark.lab

# As fast as one process can: queries for `web` to the gateway's responder, every reply
# drained; prints its window (wall clock) and what it sent and got back.
FLOOD = (
    "import socket, struct, sys, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.setblocking(False)\n"
    "q = lambda i: struct.pack('!HHHHHH', i & 0xFFFF, 0x0100, 1, 0, 0, 0) + b'\\x03web\\x00\\x00\\x01\\x00\\x01'\n"
    "start = time.time(); end = start + float(sys.argv[1]); sent = got = 0\n"
    "while time.time() < end:\n"
    "    try:\n"
    "        s.sendto(q(sent), ('169.254.1.1', 53)); sent += 1\n"
    "    except BlockingIOError:\n"
    "        pass\n"
    "    try:\n"
    "        while s.recv(512): got += 1\n"
    "    except BlockingIOError:\n"
    "        pass\n"
    "time.sleep(0.5)\n"
    "try:\n"
    "    while s.recv(512): got += 1\n"
    "except BlockingIOError:\n"
    "    pass\n"
    "print(start, time.time(), sent, got)\n"
)
LOOKUP = "import socket; print(socket.gethostbyname('web'))"  # the libc resolver, through resolv.conf
SECONDS = 3.0


def test_a_flood_from_one_instance_does_not_stop_another_resolving_nor_the_agent() -> None:
    with Lab(hosts=1) as lab:
        lab.apply(SHOP)
        vip = lab.json("get", "automaton", "web")["status"]["vip4"]
        started = time.monotonic()
        assert lab.exec_in("client-0", "python3", "-c", LOOKUP).out.strip() == vip
        baseline = time.monotonic() - started

        env = {**os.environ, **lab.env, "AUTONET_LAB": lab.name}
        argv = [sys.executable, "-m", "autonet.cli.main", "exec", "outsider-0", "--", "python3", "-c", FLOOD]
        flood = subprocess.Popen([*argv, str(SECONDS)], stdout=subprocess.PIPE, text=True, env=env)
        probes: list[tuple[float, float, str]] = []  # (start, took, answer)
        try:
            while flood.poll() is None:
                began, t0 = time.time(), time.monotonic()
                result = lab.exec_in("client-0", "python3", "-c", LOOKUP)
                probes.append((began, time.monotonic() - t0, result.out.strip() or result.err.strip()))
            out, _ = flood.communicate(timeout=30)
        finally:
            flood.kill()
        start, end, sent, got = out.split()
        print(f"flood {out.strip()}; baseline exec {baseline:.2f}s; probes {probes}")  # for the record
        during = [p for p in probes if float(start) <= p[0] <= float(end)]
        assert during, f"no lookup ran during the flood ({start}-{end}): {probes}"
        assert all(answer == vip for _, _, answer in probes), probes
        # The agent served every exec on time (baseline: the same exec before the flood).
        assert max(took for _, took, _ in during) < baseline + 3.0, (baseline, probes)
        # The flooder: far more sent than answered, and no more answered than its bucket.
        assert int(sent) > 10 * BURST, out
        assert int(got) <= BURST + RATE * (float(end) - float(start)) + 20, out
        hosts = lab.json("get", "hosts")
        assert all(h["status"]["state"] == "Ready" for h in hosts), hosts
