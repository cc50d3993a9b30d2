"""deploy/: the systemd units and the daemons' TOML config files, as an installer uses them."""

from __future__ import annotations

import configparser
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer.main

from autonet.cli import config
from autonet.cli.client import CliError
from autonet.cli.main import app

DEPLOY = Path(__file__).parents[2] / "deploy"
DAEMONS = ("controller", "agent")


def command(name: str) -> object:
    group = typer.main.get_command(app)
    return group.commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("daemon", DAEMONS)
def test_each_unit_runs_its_daemon_with_its_config_file(daemon: str) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / f"autonet-{daemon}.service")
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[1:] == [daemon, "--config", f"/etc/autonet/{daemon}.toml"]
    assert unit["Service"]["Restart"] == "always"
    if daemon == "agent":  # instances outlive an agent restart; it reconciles them
        assert unit["Service"]["KillMode"] == "process"


@pytest.mark.parametrize("daemon", DAEMONS)
def test_the_example_config_files_name_only_real_options(daemon: str) -> None:
    settings = config.read(DEPLOY / f"{daemon}.toml", command(daemon))
    assert settings  # and every key was an option of the command, or read() had refused


def test_an_unknown_key_or_broken_toml_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text('store = "sqlite:///x.db"\nlistne = ["unix:/x"]\n')
    with pytest.raises(
        CliError, match=r'"listne" is no option of `autonet controller` \(options: advertise, '
    ):
        config.read(bad, command("controller"))
    bad.write_text("store = [1\n")
    with pytest.raises(CliError, match="not valid TOML"):
        config.read(bad, command("controller"))
    bad.write_text("[store]\nx = 1\n")
    with pytest.raises(CliError, match='"store" must be a value or a list, not a table'):
        config.read(bad, command("controller"))


def test_a_controller_runs_from_its_config_file_and_flags_win(tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    toml = tmp_path / "controller.toml"
    toml.write_text(
        f'store = "sqlite:///{tmp_path / "store.db"}"\nlisten = ["unix:{sock}"]\nhost-timeout = 7.5\n'
        'log-level = "no-such-level"\n'  # the command line's --log-level must win, or it fails
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autonet.cli.main",
            "controller",
            "--config",
            str(toml),
            "--log-level",
            "info",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock.exists(), "the controller did not listen where its config said"
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://controller", timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert http.get("/healthz").json()["ok"] is True
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()


def test_a_daemon_with_a_bad_config_does_not_start(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text('underlay = "100.64.0.11"\ncontroler = "http://100.64.0.1:7080"\n')
    done = subprocess.run(
        [sys.executable, "-m", "autonet.cli.main", "agent", "--config", str(toml)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip().splitlines()[-1].startswith(f'error: --config {toml}: "controler" is no option')
    )
