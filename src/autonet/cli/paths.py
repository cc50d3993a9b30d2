"""Where labs keep their files: $AUTONET_RUN_DIR (default /run/autonet)/labs/<name>.

Each controller of a lab serves its API on a socket there: `api.sock` (c1, the lab's
first controller), `api-c2.sock`, `api-c3.sock` ... `admin.token` is the lab's admin API
token (mode 0600), minted at `lab up`; `pki/ca.pem` its CA.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_LAB = "default"
LAB_FILE = "lab.json"


def run_dir() -> Path:
    return Path(os.environ.get("AUTONET_RUN_DIR", "/run/autonet"))


def lab_dir(name: str) -> Path:
    return run_dir() / "labs" / name


def api_socket(lab: str, controller: int = 1) -> Path:
    """The API socket of the lab's controller number `controller` (c1: `api.sock`)."""
    return lab_dir(lab) / ("api.sock" if controller == 1 else f"api-c{controller}.sock")


def lab_api_sockets(lab: str) -> list[Path]:
    """Every controller's API socket of a lab, c1's first (one if the lab is not up)."""
    try:
        count = int(json.loads((lab_dir(lab) / LAB_FILE).read_text()).get("controllers", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        count = 1
    return [api_socket(lab, index) for index in range(1, max(count, 1) + 1)]


def lab_token(lab: str) -> Path:
    """The lab's admin API token (minted at `lab up`)."""
    return lab_dir(lab) / "admin.token"


def lab_ca(lab: str) -> Path:
    """The lab's CA certificate: it signs the controllers' HTTPS certificates."""
    return lab_dir(lab) / "pki" / "ca.pem"


MAX_LAB_CONTROLLERS = 9  # a lab's controllers sit at underlay .1 to .9
