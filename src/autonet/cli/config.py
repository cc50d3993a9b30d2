"""`--config FILE.toml` for the daemons: their options in a file instead of a long command line.

A key is an option's long flag without its dashes (`store`, `host-timeout`, `id`),
`_` and `-` alike; a
value has the option's type (a list for a repeatable option). The file sets the
defaults; a flag given on the command line still wins, so a unit file can name the
config and an operator can override one value by hand. A key that is no option of the
command, or a file that is not TOML, is one clear error line and the daemon does not
start. Implemented with click's `default_map`, filled by an eager option that is
processed before every other (typer's own click, which it vendors).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from autonet.cli.client import CliError

CONFIG_PARAM = "config"


def option_names(command: Any) -> dict[str, str]:
    """Every key a config file may use -> the parameter it sets: the long flag without
    its dashes (`id`, `host-timeout`) and the parameter's own name (`member-id`)."""
    names: dict[str, str] = {}
    for param in command.params:
        if not param.name or param.name == CONFIG_PARAM or param.param_type_name != "option":
            continue
        names[param.name.replace("_", "-")] = param.name
        for flag in param.opts:
            if flag.startswith("--"):
                names[flag.removeprefix("--")] = param.name
    return names


def read(path: Path, command: Any) -> dict[str, Any]:
    """The file's settings as the command's parameter names -> values (`command`: the
    click command, as typer hands it over in its context)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise CliError(f"--config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"--config {path}: not valid TOML: {exc}") from None
    names = option_names(command)
    settings: dict[str, Any] = {}
    for key, value in data.items():
        name = names.get(key.replace("_", "-"))
        if name is None:
            options = ", ".join(sorted({flag for flag in names if flag.replace("-", "_") != CONFIG_PARAM}))
            raise CliError(
                f'--config {path}: "{key}" is no option of `autonet {command.name}` (options: {options})'
            )
        if isinstance(value, dict):
            raise CliError(f'--config {path}: "{key}" must be a value or a list, not a table')
        settings[name] = value
    return settings


def _load(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    if value is not None:
        ctx.default_map = {**(ctx.default_map or {}), **read(value, ctx.command)}
    return value


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        is_eager=True,
        callback=_load,
        help="A TOML file of this command's options (keys: option names); flags given here win",
    ),
]
