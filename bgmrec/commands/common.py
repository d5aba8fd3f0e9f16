"""What every `bgmrec` command shares: the console, the --params option and how a command finds its
configuration, and how it fails."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from bgmrec.config import Config

console = Console(stderr=True, soft_wrap=True)

# `bgmrec gate` exits with this when it refuses a candidate (production unchanged); 1 is an error.
GATE_REFUSED_EXIT = 3

ParamsOption = Annotated[
    Path | None,
    typer.Option("--params", help="params.yaml (default: $BGMREC_PARAMS, else the params.yaml of the project "
                                  "the working directory is in, else the built-in defaults)."),
]


def fail(message: str) -> NoReturn:
    """Print `error: MESSAGE` and exit 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def config_path(params: Path | None) -> Path | None:
    """The configuration file a command reads: --params, $BGMREC_PARAMS, the checkout's params.yaml, or None."""
    from bgmrec.config import PARAMS_ENV, find_params

    if params is not None:
        return params
    if os.environ.get(PARAMS_ENV):
        return Path(os.environ[PARAMS_ENV])
    return find_params()


def project_path(value: str | Path, params: Path | None) -> Path:
    """A path of the configuration as a command run anywhere inside the checkout means it: relative paths of the
    checkout's own params.yaml (found, not given) are relative to the checkout's root."""
    from bgmrec.config import PARAMS_ENV, find_params

    path = Path(value)
    if path.is_absolute() or params is not None or os.environ.get(PARAMS_ENV):
        return path
    found = find_params()
    if found is None:
        return path
    return Path(os.path.relpath(found.parent / path))


def command_config(params: Path | None) -> Config:
    """The typed configuration the command runs with (exit 1 naming the key when the file is bad)."""
    from bgmrec.config import ConfigError, load_config

    try:
        return load_config(config_path(params))
    except ConfigError as exc:
        fail(str(exc))


def validation_exit(exc: Exception) -> NoReturn:
    """A validation failure: the report's summary, exit 1."""
    console.print(str(exc))
    raise typer.Exit(code=1)
