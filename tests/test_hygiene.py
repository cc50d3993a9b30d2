"""Project hygiene as tests: the layer contract, lint, types, generated code up to date."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_layers_import_downwards_only() -> None:
    result = run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    result = run(str(BIN / "ruff"), "check", "src", "tests")
    assert result.returncode == 0, result.stdout


def test_mypy_is_clean() -> None:
    result = run(str(BIN / "mypy"), "src")
    assert result.returncode == 0, result.stdout


def test_generated_grpc_code_matches_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    shutil.copytree(ROOT / "src" / "autonet" / "agent" / "rpc", tmp_path / "autonet" / "agent" / "rpc")
    result = run(
        sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}", f"--python_out={tmp_path}",
        f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", str(tmp_path / "autonet/agent/rpc/agent.proto"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("agent_pb2.py", "agent_pb2_grpc.py", "agent_pb2.pyi"):
        fresh = (tmp_path / "autonet" / "agent" / "rpc" / name).read_text()
        assert fresh == (ROOT / "src" / "autonet" / "agent" / "rpc" / name).read_text(), (
            f"{name}: run make proto"
        )
