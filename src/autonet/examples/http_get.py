"""A tiny HTTP client for use inside instances: prints the body, exits non-zero on failure.

python3 -m autonet.examples.http_get http://[fd00:80:0:1::2]:8080/ [--timeout 3]
"""

from __future__ import annotations

import argparse
import sys
import urllib.request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as reply:
            sys.stdout.write(reply.read().decode())
    except OSError as exc:
        sys.stderr.write(f"http_get: {args.url}: {exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
