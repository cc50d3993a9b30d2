"""Names and service addresses: DNS per VPC, Maglev in nftables, on 3 hosts."""

from __future__ import annotations

import html
import ipaddress
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.lab import Lab, shop_with

pytestmark = pytest.mark.lab

SHOP = shop_with("""
kind: Automaton
name: outsider
spec: {network: blue-a, command: [sleep, infinity], consumes: [http]}
""")

SPREAD = """
import collections, sys, urllib.request
counts = collections.Counter()
for _ in range(int(sys.argv[2])):
    with urllib.request.urlopen(sys.argv[1], timeout=3) as reply:
        counts[reply.read().decode().strip()] += 1
print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
"""

# One keep-alive connection: a request, a pause (while the test scales), more requests.
LONG = """
import http.client, sys, time
conn = http.client.HTTPConnection(sys.argv[1], 8080, timeout=5)
names = []
for i in range(6):
    conn.request("GET", "/")
    names.append(conn.getresponse().read().decode().strip())
    print(names[-1], flush=True)
    time.sleep(1.5)
print("same" if len(set(names)) == 1 else "moved", flush=True)
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=3) as lab:
        lab.apply(SHOP)
        yield lab


def spread(lab: Lab, url: str, count: int = 300) -> Counter[str]:
    result = lab.cli(
        "exec", "-i", "client-0", "--", "python3", "-", url, str(count), stdin=SPREAD, timeout=120
    )
    assert result.code == 0, result.err
    return Counter({k: int(v) for k, v in (pair.split("=") for pair in result.out.split())})


def automaton(lab: Lab, name: str) -> dict[str, Any]:
    return lab.json("get", "automaton", name)


def test_every_automaton_has_service_addresses_from_the_vpc_service_range(lab: Lab) -> None:
    web = automaton(lab, "web")["status"]
    assert ipaddress.ip_address(web["vip4"]) in ipaddress.ip_network("100.80.255.0/24")
    assert ipaddress.ip_address(web["vip6"]) in ipaddress.ip_network("fd00:80:0:ffff::/64")
    assert automaton(lab, "client")["status"]["vip4"] != web["vip4"]


def test_graph_shows_every_automaton_its_instances_per_host_and_the_link(lab: Lab, tmp_path: Path) -> None:
    dot = lab.cli("graph")
    assert dot.code == 0, dot.err
    assert '"automaton/client" -> "automaton/web" [label="http tcp/8080"];' in dot.out
    assert '"automaton/outsider" ->' not in dot.out  # no link: no edge
    hosts = Counter(
        i["status"]["host"] for i in lab.json("get", "instances") if i["spec"]["automaton"] == "web"
    )
    per_host = "\\n".join(f"{host}: {count}" for host, count in sorted(hosts.items()))
    assert f'"web\\n3/3 provisioned\\n{per_host}"' in dot.out
    svg = tmp_path / "shop.svg"
    written = lab.cli("graph", "-o", str(svg))
    assert written.code == 0, written.err
    text = html.unescape(svg.read_text())  # dot writes "-" as &#45;
    assert "<svg" in text
    for label in ("web", "client", "outsider", "http tcp/8080", "VPC blue", "network blue-a"):
        assert label in text
    wrong = lab.cli("graph", "-o", str(tmp_path / "shop.pdf"))
    assert wrong.code != 0 and "must end in .svg, .png or .dot" in wrong.err
    assert not (tmp_path / "shop.pdf").exists()


def test_names_resolve_to_the_service_addresses_and_unknown_names_do_not(lab: Lab) -> None:
    web = automaton(lab, "web")["status"]
    for name in ("web", "web.blue.autonet"):
        assert lab.exec_in(
            "client-0", "python3", "-m", "autonet.examples.dns_query", name, "A"
        ).out.split() == [web["vip4"]]
        assert lab.exec_in(
            "client-0", "python3", "-m", "autonet.examples.dns_query", name, "AAAA"
        ).out.split() == [web["vip6"]]
    assert (
        lab.exec_in(
            "client-0", "python3", "-m", "autonet.examples.dns_query", "nope.blue.autonet"
        ).out.strip()
        == "NXDOMAIN"
    )
    assert (
        lab.exec_in("client-0", "python3", "-m", "autonet.examples.dns_query", "web.red.autonet").out.strip()
        == "NXDOMAIN"
    )
    lookup = "import socket; print(socket.gethostbyname('web'))"  # the libc resolver, through resolv.conf
    assert lab.exec_in("client-0", "python3", "-c", lookup).out.strip() == web["vip4"]


def test_connections_spread_evenly_over_instances_on_three_hosts(lab: Lab) -> None:
    hosts = {i["status"]["host"] for i in lab.instances("web")}
    assert len(hosts) == 3
    for url in ("http://web:8080/", f"http://[{automaton(lab, 'web')['status']['vip6']}]:8080/"):
        counts = spread(lab, url)
        assert set(counts) == {"web-0", "web-1", "web-2"}
        assert all(70 <= n <= 130 for n in counts.values()), counts


def test_service_traffic_obeys_composition_security(lab: Lab) -> None:
    # Same name, same port: the linked client gets through, the others are refused.
    lab.assert_no_connection("outsider-0", "http://web:8080/", allowed_from="client-0")
    lab.assert_no_connection("web-0", "http://web:8080/", allowed_from="client-0")  # no web -> web link


def test_a_long_connection_keeps_its_instance_while_one_is_added(lab: Lab) -> None:
    env = {**os.environ, "AUTONET_LAB": lab.name}
    vip = automaton(lab, "web")["status"]["vip4"]
    long = subprocess.Popen(
        [sys.executable, "-m", "autonet.cli.main", "exec", "-i", "client-0", "--", "python3", "-", vip],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert long.stdin is not None
    long.stdin.write(LONG)
    long.stdin.close()
    long.stdin = None  # written in full: communicate() only reads
    assert long.stdout is not None
    first = long.stdout.readline()  # the connection is up and has its backend
    lab.ok("scale", "web", "4", "--wait")
    rest, err = long.communicate(timeout=60)
    out = first + rest
    assert long.returncode == 0, err
    assert out.split()[-1] == "same", out
    counts = spread(lab, "http://web:8080/", 200)
    assert "web-3" in counts  # new connections do reach the new instance
    lab.ok("scale", "web", "3", "--wait")


def test_deleted_or_dead_instances_leave_the_table_at_once(lab: Lab) -> None:
    lab.ok("scale", "web", "2", "--wait")
    counts = spread(lab, "http://web:8080/", 60)  # every connection succeeds
    assert set(counts) == {"web-0", "web-1"}
    web1 = next(i for i in lab.instances("web") if i["name"] == "web-1")
    os.kill(web1["status"]["pid"], signal.SIGKILL)
    counts = spread(lab, "http://web:8080/", 60)  # no connection is sent to the dead one
    assert sum(counts.values()) == 60
    lab.ok("scale", "web", "3", "--wait")
