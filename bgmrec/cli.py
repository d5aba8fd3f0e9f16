"""`bgmrec`: one Typer CLI over the pipeline steps. Every command has --help."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Annotated

import typer

from bgmrec.commands import COMMAND_MODULES
from bgmrec.commands.common import GATE_REFUSED_EXIT

__all__ = ["GATE_REFUSED_EXIT", "app"]

COMMAND_ENTRY_POINTS = "bgmrec.commands"

app = typer.Typer(help="bgmrec: background music recommendation for short videos.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"bgmrec {version('bgmrec')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """bgmrec: background music recommendation for short videos."""
    from bgmrec.lifecycle import die_with_dvc

    die_with_dvc()


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)
for _plugin in entry_points(group=COMMAND_ENTRY_POINTS):
    _plugin.load()(app)

if __name__ == "__main__":
    app()
