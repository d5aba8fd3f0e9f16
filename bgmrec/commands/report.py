"""Report commands: the recommendations report, and the catalog's audio previews the try-it page plays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bgmrec.commands.common import ParamsOption, command_config, console, fail

PreviewSecondsOption = Annotated[
    float, typer.Option(help="Length of each audio preview, taken from the middle of the track (seconds).")
]


def _named_metrics(metrics: list[str]) -> dict[str, Path]:
    """MODEL=FILE pairs, or bare files named after their stem (metrics/cmvae.json -> cmvae)."""
    named: dict[str, Path] = {}
    for entry in metrics:
        name, sep, path = entry.partition("=")
        model, file = (name, Path(path)) if sep else (Path(entry).stem, Path(entry))
        if not model or model in named:
            fail(f"--metrics {entry}: give each model once, as MODEL=FILE or a file named after the model")
        named[model] = file
    return named


def report_command(
    out: Annotated[Path, typer.Option(help="The HTML file to write (self-contained: frames, audio, charts).")],
    dataset: Annotated[
        Path | None, typer.Option(help="Dataset whose test videos are shown (default: `data.dataset`).")
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(help="Report the production model with the served catalog of this registry (default: "
                          "`gate.registry` unless --checkpoint is given)."),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Report this checkpoint instead, with the dataset's music as catalog.")
    ] = None,
    metrics: Annotated[
        list[str] | None,
        typer.Option(help="A model's metrics JSON from `bgmrec evaluate`, as MODEL=FILE or FILE (named after "
                          "its stem); repeat per model for its Recall@K curves."),
    ] = None,
    split: Annotated[str, typer.Option(help="The split whose test videos are shown: weak or strong.")] = "weak",
    videos: Annotated[int, typer.Option(help="How many test videos to show.")] = 6,
    k: Annotated[int, typer.Option("-k", "--k", help="How many music to list per video.")] = 10,
    preview_seconds: PreviewSecondsOption = 8.0,
    params: ParamsOption = None,
) -> None:
    """Write the recommendations report: a few test videos with their top-k music (playable), the rank of the
    music their creator chose, each model's Recall@K curves and the diversity of the lists."""
    from bgmrec.previews import PreviewSettings
    from bgmrec.report import report_step

    config = command_config(params)
    if registry is not None and checkpoint is not None:
        fail("give --registry or --checkpoint, not both")
    try:
        result = report_step(
            dataset or Path(config.data.dataset), out,
            registry_dir=None if checkpoint is not None else registry or Path(config.gate.registry),
            checkpoint=checkpoint, metrics=_named_metrics(metrics or []), split_kind=split, n_videos=videos,
            k=k, seed=config.data.seed, preview=PreviewSettings(seconds=preview_seconds),
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    console.print(f"wrote {result['report']} ({result['bytes'] / 2**20:.1f} MB): {result['videos']} videos of "
                  f"{result['model']}, {result['players']} previews, chosen music ranked {result['chosen_ranks']}")
    if result["without_preview"]:
        console.print(f"no preview for {len(result['without_preview'])} music: {result['without_preview'][:10]}")


def previews_command(
    dataset: Annotated[
        Path | None, typer.Option(help="Dataset whose music files are encoded (default: `data.dataset`).")
    ] = None,
    registry: Annotated[
        Path | None, typer.Option(help="Registry whose catalog gets the previews, in REGISTRY/previews "
                                       "(default: `gate.registry`).")
    ] = None,
    preview_seconds: PreviewSecondsOption = 8.0,
    params: ParamsOption = None,
) -> None:
    """Write an MP3 preview of every catalog music the dataset has an audio file for, beside the catalog
    (REGISTRY/previews), for the service's try-it page; previews newer than their audio file are kept."""
    from bgmrec.previews import PreviewSettings, catalog_previews_step

    config = command_config(params)
    try:
        result = catalog_previews_step(dataset or Path(config.data.dataset), registry or Path(config.gate.registry),
                                       PreviewSettings(seconds=preview_seconds), config.extraction.workers)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    print(json.dumps(result))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `bgmrec` app."""
    app.command("report")(report_command)
    app.command("previews")(previews_command)
