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
    result = run(str(BIN / "ruff"), "check", "src", "tests", "plugins")
    assert result.returncode == 0, result.stdout


def test_mypy_is_clean() -> None:
    result = run(str(BIN / "mypy"), "src", "plugins/l2ovs/src")
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("root", "package", "proto"),
    [("src", "autonet/agent/rpc", "agent"), ("plugins/l2ovs/src", "autonet_l2ovs", "l2")],
)
def test_generated_grpc_code_matches_the_proto(tmp_path: Path, root: str, package: str, proto: str) -> None:
    pytest.importorskip("grpc_tools")
    shutil.copytree(ROOT / root / package, tmp_path / package)
    result = run(
        sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}", f"--python_out={tmp_path}",
        f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", str(tmp_path / package / f"{proto}.proto"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in (f"{proto}_pb2.py", f"{proto}_pb2_grpc.py", f"{proto}_pb2.pyi"):
        fresh = (tmp_path / package / name).read_text()
        assert fresh == (ROOT / root / package / name).read_text(), f"{name}: run make proto"
