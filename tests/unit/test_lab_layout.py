"""A lab's layout with several controllers on etcd, without building it (no root): roles,
addresses, namespaces, sockets, and the daemons' command lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from autonet.cli import lab as labs
from autonet.cli import labetcd
from autonet.cli.client import CliError
from autonet.cli.main import app, controller_takes_membership


@pytest.fixture
def info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> labs.LabInfo:
    monkeypatch.setenv("AUTONET_RUN_DIR", str(tmp_path))
    return labs.LabInfo(
        name="two", hosts=2, underlay="ipv4", controllers=3, store="etcd", scratch="/dev/shm/x"
    )


def value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_roles_addresses_namespaces_and_sockets(info: labs.LabInfo) -> None:
    assert labs.roles(info) == ["c1", "c2", "c3", "e1", "e2", "e3", "h1", "h2"]
    assert [info.address(info.index(r)) for r in ("controller", "c1", "c3", "e1", "e3", "h2")] == [
        "100.64.0.1",
        "100.64.0.1",
        "100.64.0.3",
        "100.64.0.251",
        "100.64.0.253",
        "100.64.0.12",
    ]
    assert info.netns("c1") == info.netns("controller") and info.netns("c1").endswith("c")
    assert info.netns("c2").endswith("c2") and info.netns("e1").endswith("e1")
    assert len(set(info.netns_names())) == 9  # switch, 3 controllers, 3 members, 2 hosts
    assert info.api.split(",") == [f"unix:{info.dir / s}" for s in ("api.sock", "api-c2.sock", "api-c3.sock")]
    ipv6 = labs.LabInfo(name="six", hosts=1, underlay="ipv6", controllers=2, store="etcd")
    assert ipv6.etcd_members() == {"e1": "fd00:64::fb", "e2": "fd00:64::fc", "e3": "fd00:64::fd"}


def test_roles_are_checked(info: labs.LabInfo) -> None:
    assert labs._check_role(info, "c1") == "controller"
    assert labs._check_role(info, "e2") == "e2"
    with pytest.raises(CliError, match="unknown role 'c4': controller or one of c1, c2, c3, e1"):
        labs._check_role(info, "c4")
    with pytest.raises(CliError, match="unknown host 'e1': one of h1, h2"):
        labs._check_role(info, "e1", hosts_only=True)


def test_controllers_run_on_etcd_with_their_own_certificate(info: labs.LabInfo) -> None:
    argv = labs.controller_argv(info, 2)
    assert value(argv, "--store") == "etcd://100.64.0.251:2379,100.64.0.252:2379,100.64.0.253:2379"
    assert value(argv, "--etcd-cert") == str(info.dir / "pki" / "c2.pem")
    assert value(argv, "--etcd-key") == str(info.dir / "pki" / "c2-key.pem")
    assert [a for a in argv if a.startswith(("unix:", "tcp:"))] == [
        f"unix:{info.dir / 'api-c2.sock'}",
        "tcp:100.64.0.2:7080",
    ]
    assert "--id" not in argv
    info.membership = True
    argv = labs.controller_argv(info, 2)
    assert (value(argv, "--id"), value(argv, "--advertise")) == ("c2", "https://100.64.0.2:7080")
    # Its HTTPS listener: its own certificate, and the lab's CA for client certificates.
    assert (value(argv, "--tls-cert"), value(argv, "--tls-key"), value(argv, "--ca")) == (
        str(info.dir / "pki" / "c2.pem"),
        str(info.dir / "pki" / "c2-key.pem"),
        str(info.dir / "pki" / "ca.pem"),
    )


def test_the_lab_passes_id_and_advertise_when_controller_help_shows_them() -> None:
    shown = CliRunner().invoke(app, ["controller", "--help"], terminal_width=200).stdout
    assert controller_takes_membership() == ("--id" in shown and "--advertise" in shown)


def test_agents_know_every_controller(info: labs.LabInfo) -> None:
    argv = labs.agent_argv(info, "h2", 2)
    assert (
        value(argv, "--controller")
        == "https://100.64.0.1:7080,https://100.64.0.2:7080,https://100.64.0.3:7080"
    )
    assert value(argv, "--underlay") == "100.64.0.12"
    # It reports with its own certificate (CN h2): the controllers take h2's reports from it only.
    assert (value(argv, "--tls-cert"), value(argv, "--tls-key"), value(argv, "--ca")) == (
        str(info.dir / "pki" / "h2.pem"),
        str(info.dir / "pki" / "h2-key.pem"),
        str(info.dir / "pki" / "ca.pem"),
    )


def test_agents_and_controllers_speak_mutual_tls_with_their_own_certificates(info: labs.LabInfo) -> None:
    pki = info.dir / "pki"
    agent = labs.agent_argv(info, "h2", 2)
    assert (value(agent, "--tls-cert"), value(agent, "--tls-key")) == (
        str(pki / "h2.pem"),
        str(pki / "h2-key.pem"),
    )
    controller = labs.controller_argv(info, 3)
    assert (value(controller, "--tls-cert"), value(controller, "--tls-key")) == (
        str(pki / "c3.pem"),
        str(pki / "c3-key.pem"),
    )
    assert value(agent, "--ca") == value(controller, "--ca") == str(pki / "ca.pem")
    assert "--insecure" not in agent


def test_etcd_members_use_mutual_tls_for_clients_and_peers(info: labs.LabInfo) -> None:
    argv = labs.argv_of(info, "e2")
    assert value(argv, "--listen-client-urls") == "https://100.64.0.252:2379"
    assert value(argv, "--initial-cluster") == ",".join(
        f"e{i}=https://100.64.0.{250 + i}:2380" for i in (1, 2, 3)
    )
    assert {"--client-cert-auth", "--peer-client-cert-auth"} <= set(argv)
    ca = str(info.dir / "pki" / "ca.pem")
    assert value(argv, "--trusted-ca-file") == ca and value(argv, "--peer-trusted-ca-file") == ca
    assert value(argv, "--data-dir") == "/dev/shm/x/e2"
    assert value(argv, "--max-txn-ops") == "10000"


def test_sqlite_serves_one_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTONET_RUN_DIR", str(tmp_path))
    with pytest.raises(CliError, match="several need --store etcd"):
        labs.up("x", 1, "ipv4", controllers=2, store="sqlite")
    with pytest.raises(CliError, match="--controllers: must be between 1 and 9"):
        labs.up("x", 1, "ipv4", controllers=10)
    assert not (tmp_path / "labs" / "x").exists()


def test_prefix_end() -> None:
    assert labetcd.prefix_end(b"/autonet/objects/") == b"/autonet/objects0"
    assert labetcd.prefix_end(b"a\xff") == b"b"
