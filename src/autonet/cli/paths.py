"""Where labs keep their files: $AUTONET_RUN_DIR (default /run/autonet)/labs/<name>."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_LAB = "default"


def run_dir() -> Path:
    return Path(os.environ.get("AUTONET_RUN_DIR", "/run/autonet"))


def lab_dir(name: str) -> Path:
    return run_dir() / "labs" / name
