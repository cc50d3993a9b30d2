"""A TCP and UDP echo server (dual-stack): sends back whatever it receives.

Every TCP connection and UDP datagram is logged (`tcp from ADDR`), so a test can tell
whether a listener saw anything.

python3 -m autonet.examples.echo --port 7000 [--port 7001 ...] [--tcp-only | --udp-only]
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import threading


def peer(address: str) -> str:
    """IPv4 peers of a dual-stack socket show as ::ffff:a.b.c.d; print them plainly."""
    return address.removeprefix("::ffff:")


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


def _dual_stack(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)


class TcpServer(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True

    def server_bind(self) -> None:
        _dual_stack(self.socket)
        super().server_bind()


class UdpServer(socketserver.ThreadingUDPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True

    def server_bind(self) -> None:
        _dual_stack(self.socket)
        super().server_bind()


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
