"""Image automatons: what the manifest accepts, and the podman command lines the agent runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from autonet.dataplane import containers
from autonet.model.errors import ValidationError
from autonet.model.kinds import KindRegistry, builtin_kinds
from autonet.model.manifest import parse, validate

NETWORK = """
kind: Vpc
name: blue
spec: {cidrs: [100.80.0.0/16]}
---
kind: Network
name: blue-a
spec: {vpc: blue, cidrs: [100.80.1.0/24]}
---
kind: Automaton
name: web
spec:
  network: blue-a
"""


def automaton(extra: str) -> dict[str, object]:
    objs = validate(parse(NETWORK + extra), KindRegistry(builtin_kinds()), [])
    return next(o for o in objs if o.kind == "Automaton").spec


def test_an_image_alone_or_with_a_command_is_an_automaton() -> None:
    assert (
        automaton("  image: localhost/autonet-busybox:latest\n")["image"]
        == "localhost/autonet-busybox:latest"
    )
    spec = automaton("  image: localhost/autonet-busybox\n  command: [httpd, -f]\n")
    assert spec["command"] == ["httpd", "-f"]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("  image: '-v /:/host busybox'\n", "image"),  # a flag smuggled in as an image
        ("  image: 'busybox; rm -rf /'\n", "image"),
        ("  image: ''\n", "image"),
        ("  image: busybox\n  external: true\n", "has no command or image"),
    ],
)
def test_a_bad_image_is_one_clear_error(line: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        automaton(line)
    assert words in str(caught.value) and "\n" not in str(caught.value).strip()


def test_the_container_runs_as_the_instances_uid_with_nothing_of_root() -> None:
    argv = containers.run_argv(
        name="an-x",
        image="localhost/img:1",
        command=["httpd", "-f", "-p", "8080"],
        netns="anih1aaaa",
        user="200123",
        env={"B": "2", "A": "1"},
        resolv_conf="/run/r.conf",
        host_tag="kcvn",
        resources={"memory_mb": 64, "pids": 20, "cpu": 0.5},
    )
    run = argv.index("run")
    image = argv.index("localhost/img:1")
    assert argv[0] == "podman" and run < image
    assert argv[image + 1 :] == ["httpd", "-f", "-p", "8080"]  # after the image: the command only
    flags = " ".join(argv[run:image])
    for expected in (
        "--rm --init --name an-x --pull never --label io.autonet.host=kcvn",
        "--network ns:/run/netns/anih1aaaa",
        "--user 200123:200123 --cap-drop all --security-opt no-new-privileges",
        "--volume /run/r.conf:/etc/resolv.conf:ro",
        "--env A=1 --env B=2",
        "--memory 64m --memory-swap 64m --pids-limit 20 --cpus 0.5",
    ):
        assert expected in flags


def test_root_keeps_podmans_defaults_and_a_name_is_refused() -> None:
    common = {
        "name": "an-x",
        "image": "img",
        "command": [],
        "netns": "n",
        "env": {},
        "resolv_conf": None,
        "host_tag": "t",
    }
    argv = containers.run_argv(user="root", **common)  # type: ignore[arg-type]
    assert "--user" in argv and "0:0" in argv and "--cap-drop" not in argv
    with pytest.raises(ValueError, match="root or as a leased uid"):
        containers.run_argv(user="nobody", **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a local image reference"):
        containers.run_argv(user="1", **{**common, "image": "--privileged"})  # type: ignore[arg-type]


def test_exec_enters_the_named_container_as_the_same_user() -> None:
    argv = containers.exec_argv("an-x", ["sh", "-c", "id"], "200123", {"K": "v"})
    assert argv[argv.index("exec") :] == [
        "exec", "--interactive", "--user", "200123:200123", "--env", "K=v", "an-x", "sh", "-c", "id",
    ]  # fmt: skip
    assert containers.remove_argv("an-x")[-6:] == ["rm", "--force", "--ignore", "--time", "2", "an-x"]


def test_the_example_runs_an_image_next_to_the_shop() -> None:
    root = Path(__file__).parents[2] / "examples"
    kinds = KindRegistry(builtin_kinds())
    shop = validate(parse((root / "shop.yaml").read_text()), kinds, [])
    added = validate(parse((root / "images.yaml").read_text()), kinds, shop)
    site = next(o for o in added if o.kind == "Automaton")
    assert site.spec["image"] == "localhost/autonet-busybox:latest" and site.spec["provides"]
