"""Dual-stack servers for the examples: one [::] socket takes IPv4 and IPv6 clients."""

from __future__ import annotations

import socket
import socketserver
from http.server import ThreadingHTTPServer


class DualStack:
    """Mixin for socketserver servers: bind [::] with IPV6_V6ONLY off."""

    address_family: int = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True
    socket: socket.socket

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()  # type: ignore[misc]


class TcpServer(DualStack, socketserver.ThreadingTCPServer):
    pass


class UdpServer(DualStack, socketserver.ThreadingUDPServer):
    pass


class HttpServer(DualStack, ThreadingHTTPServer):
    pass


def peer(address: str) -> str:
    """IPv4 peers of a dual-stack socket show as ::ffff:a.b.c.d; give them plainly."""
    return address.removeprefix("::ffff:")
