"""An HTTP server that answers every GET with its instance name (dual-stack).

    python3 -m autonet.examples.http_echo --port 8080

The body is `<instance name>\n`; the instance name comes from AUTONET_INSTANCE, set
by the agent. Listens on [::] with IPV6_V6ONLY off, so IPv4 and IPv6 both arrive.
"""

from __future__ import annotations

import argparse
import os
import socket
from http.server import BaseHTTPRequestHandler

from autonet.examples.dualstack import HttpServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection may carry many requests

    def do_GET(self) -> None:
        body = (os.environ.get("AUTONET_INSTANCE", socket.gethostname()) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.client_address[0]} {format % args}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    server = HttpServer(("::", args.port), Handler)
    print(f"http_echo listening on port {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
