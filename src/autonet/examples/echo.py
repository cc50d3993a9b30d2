"""A TCP and UDP echo server (dual-stack): sends back whatever it receives.

Every TCP connection and UDP datagram is logged (`tcp from ADDR`), so a test can tell
whether a listener saw anything.

python3 -m autonet.examples.echo --port 7000 [--port 7001 ...] [--tcp-only | --udp-only]
"""

from __future__ import annotations

import argparse
import socketserver
import threading

from autonet.examples.dualstack import TcpServer, UdpServer, peer


class TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        print(f"tcp from {peer(self.client_address[0])}", flush=True)
        while data := self.request.recv(65536):
            self.request.sendall(data)


class UdpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        print(f"udp from {peer(self.client_address[0])}", flush=True)
        sock.sendto(data, self.client_address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, action="append", help="repeatable (default 7000)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tcp-only", action="store_true")
    group.add_argument("--udp-only", action="store_true")
    args = parser.parse_args()
    ports = args.port or [7000]
    servers: list[socketserver.BaseServer] = []
    for port in ports:
        if not args.udp_only:
            servers.append(TcpServer(("::", port), TcpEcho))
        if not args.tcp_only:
            servers.append(UdpServer(("::", port), UdpEcho))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    print(f"echo listening on port(s) {', '.join(map(str, ports))}", flush=True)
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
