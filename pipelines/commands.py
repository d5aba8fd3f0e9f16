"""Kubeflow commands: trigger the new-music-batch pipeline, compile the pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bgmrec.commands.common import (
    ParamsOption,
    command_config,
    config_path,
    console,
    fail,
    project_path,
)


def trigger(
    music_batch: Annotated[
        Path | None, typer.Option(help="Batch directory: audio files, optional manifest.csv (music_id, title).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Kubeflow Pipelines API URL: submit the pipeline there instead.")
    ] = None,
    inbox: Annotated[
        Path | None, typer.Option(help="With --host: submit every batch folder of this inbox not submitted yet.")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="Catalog dataset (its saved audio_lld transform); default `data.dataset`.")
    ] = None,
    registry: Annotated[
        Path | None, typer.Option(help="Model registry holding production and the catalog; default `gate.registry`.")
    ] = None,
    feature_repo: Annotated[
        str | None, typer.Option(help="Feast repo to push the batch to ('' to skip Feast); default `feast.repo`.")
    ] = None,
    params: ParamsOption = None,
    pipeline_root: Annotated[Path, typer.Option(help="kfp.local output folder (local runs).")] = Path(
        "runs/kfp-local"
    ),
) -> None:
    """Add a batch of new music: validate → extract → Feast → embed (production encoder) → catalog refresh.

    Without --host the new-music-batch pipeline runs here through kfp.local; with --host it is built from the
    configuration and submitted to Kubeflow Pipelines (paths are then locations on the cluster's data volume,
    defaults from `kubeflow:`) and the run URL is printed.
    """
    from pipelines.trigger import run_batch_locally, submit_batch, submit_inbox

    if (music_batch is None) == (inbox is None):
        fail("give exactly one of --music-batch DIR or --inbox DIR")
    config = command_config(params)
    if host is not None:
        if inbox is not None:
            for batch, url in submit_inbox(host, inbox, config):
                print(f"{batch}: {url}")
            return
        overrides = {name: str(value) for name, value in
                     (("dataset_dir", dataset), ("registry_dir", registry), ("feature_repo", feature_repo))
                     if value is not None}
        print(submit_batch(host, str(music_batch), config, overrides))
        return
    if inbox is not None:
        fail("--inbox needs --host (the cluster's trigger); run local batches with --music-batch")
    dataset = dataset or project_path(config.data.dataset, params)
    registry = registry or project_path(config.gate.registry, params)
    repo = (str(project_path(config.feast.repo, params)) if config.feast.repo else "") if feature_repo is None \
        else feature_repo
    console.print(f"running the new-music-batch pipeline on {music_batch} (kfp.local, outputs in {pipeline_root})")
    result = run_batch_locally(music_batch, dataset, registry, repo, config_path(params), pipeline_root)
    print(result.message)
    if not result.accepted:
        raise typer.Exit(code=1)


def compile_pipelines_command(
    out: Annotated[Path, typer.Option(help="Folder to write training.yaml and new_music_batch.yaml to.")],
    params: ParamsOption = None,
) -> None:
    """Compile the training and new-music-batch pipelines to Kubeflow IR YAML (images, volumes, resources and
    gate defaults from the configuration's `kubeflow:` and `gate:`; $BGMREC_PIPELINE_IMAGE overrides the image)."""
    from pipelines.compile import compile_pipelines

    for path in compile_pipelines(out, command_config(params)):
        console.print(f"wrote {path}")



def register(app: typer.Typer) -> None:
    """Add this module's commands to the `bgmrec` app."""
    app.command("trigger")(trigger)
    app.command("compile-pipelines")(compile_pipelines_command)
