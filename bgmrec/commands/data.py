"""Data commands: simulated and sample data sets, the contract check, splits, extraction, validation, Feast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bgmrec.commands.common import (
    ParamsOption,
    command_config,
    console,
    fail,
    validation_exit,
)
from bgmrec.data.split_kinds import SEEN_UNSEEN, SPLIT_KINDS


def simulate(
    out: Annotated[Path, typer.Option(help="Directory to write the dataset to.")],
    preset: Annotated[
        str, typer.Option(help="tiny, small, tt150k (CMVAE's TT-150k) or msvd (VMCML's MSVD, seen/unseen music).")
    ] = "small",
    scale: Annotated[
        float, typer.Option(help="Multiply the preset's number of videos (same music, same knobs): a reduced copy.")
    ] = 1.0,
    knob: Annotated[
        list[str] | None,
        typer.Option(help="Override a difficulty knob, NAME=VALUE (repeatable); see bgmrec/data/presets.py."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a simulated dataset in the contract, with planted structure and a latent oracle (oracle.npz)."""
    import time

    from bgmrec.data.simulate import simulate as run

    knobs: dict[str, float] = {}
    for item in knob or []:
        name, _, value = item.partition("=")
        try:
            knobs[name.strip()] = float(value)
        except ValueError:
            fail(f"--knob '{item}': expected NAME=VALUE with a number, e.g. video_noise=1.5")
    started = time.perf_counter()
    try:
        with console.status(f"simulating {preset} at scale {scale}"):
            sizes = run(preset, seed, out, scale=scale, knobs=knobs)
    except ValueError as exc:
        fail(str(exc))
    console.print(f"wrote {out}: {sizes} in {time.perf_counter() - started:.1f}s")


def check_dataset(
    dataset: Annotated[Path, typer.Option(help="Dataset directory (the contract's four parquet files).")],
    manifests_only: Annotated[bool, typer.Option(help="Only check music.parquet and videos.parquet.")] = False,
) -> None:
    """Check a dataset against the contract; non-zero exit naming file, id and problem if it breaks it."""
    from bgmrec.data.contract import DatasetError, load_dataset

    try:
        ds = load_dataset(dataset, require_features=not manifests_only)
    except DatasetError as exc:
        fail(str(exc))
    console.print(f"ok: {len(ds.music)} music, {len(ds.videos)} videos, dims {ds.dims}")


def split(
    dataset: Annotated[Path, typer.Option(help="Dataset directory.")],
    kind: Annotated[str, typer.Option(help=f"Split kind: {', '.join(SPLIT_KINDS)}.")] = "weak",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Make and save a split of one kind with its IPS negatives (dataset/splits/KIND.parquet)."""
    from bgmrec.data.contract import DatasetError, load_dataset
    from bgmrec.data.seen_unseen import UNSEEN_PART
    from bgmrec.data.splits import PARTS, make_split, save_split, split_path

    try:
        ds = load_dataset(dataset, require_features=False)
    except DatasetError as exc:
        fail(str(exc))
    try:
        s = make_split(ds, kind, seed)
    except ValueError as exc:
        fail(str(exc))
    path = save_split(s, ds, split_path(dataset, kind))
    # the `unseen` part only exists in a seen-unseen split
    counts = {p: int((s.part == p).sum()) for p in PARTS if p != UNSEEN_PART or kind == SEEN_UNSEEN}
    console.print(f"wrote {path}: {counts}")


def sample_media_command(
    out: Annotated[Path, typer.Option(help="Directory to write the sample media data set to.")],
    params: ParamsOption = None,
) -> None:
    """Generate the bundled sample: synthetic music and short videos with a planted audio-visual link."""
    from bgmrec.steps import sample_media_step

    config = command_config(params)
    with console.status(f"generating sample media in {out}"):
        result = sample_media_step(out, config.sample)
    console.print(f"wrote {out}: {result}")


def extract(
    dataset: Annotated[Path, typer.Option(help="Dataset directory; media paths in the manifests are relative to it.")],
    params: ParamsOption = None,
) -> None:
    """Decode the dataset's media and write music_features.parquet / video_features.parquet; bad items are
    reported (console and DATASET/extraction_report.json) and skipped; non-zero exit if any item failed.
    """
    from rich.text import Text

    from bgmrec.steps import extract_step

    try:
        result = extract_step(dataset, command_config(params).extract, console=console)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    for kind, counts in result["counts"].items():
        console.print(f"{kind}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    console.print(f"dims {result['dims']}, seconds {result['seconds']}")
    for failure in result["failures"]:
        console.print(Text("FAILED ", style="bold red") + Text(failure))
    if not result["ok"]:
        fail(f"{len(result['failures'])} item(s) failed; see {result['outputs']['report']}")
    console.print(f"wrote {result['outputs']['music_features']} and {result['outputs']['video_features']}")


def validate_manifests_command(
    dataset: Annotated[Path, typer.Option(help="Dataset directory (music.parquet, videos.parquet).")],
    report_dir: Annotated[Path, typer.Option(help="Where summary.txt, result.json and Data Docs go.")],
    params: ParamsOption = None,
) -> None:
    """Validate the manifests with Great Expectations; non-zero exit naming the offending rows on failure."""
    from bgmrec.steps import validate_manifests_step
    from bgmrec.validation import ValidationFailed

    knobs = command_config(params).validation
    try:
        result = validate_manifests_step(dataset, report_dir, knobs.max_description_chars)
    except ValidationFailed as exc:
        validation_exit(exc)
    console.print(f"manifests valid: {result['tables']}; report {result['summary']}")


def validate_features_command(
    dataset: Annotated[Path, typer.Option(help="Dataset directory with its feature tables.")],
    report_dir: Annotated[Path, typer.Option(help="Where summary.txt, result.json and Data Docs go.")],
    params: ParamsOption = None,
) -> None:
    """Validate the feature tables with Great Expectations; non-zero exit naming the offending rows."""
    from bgmrec.steps import validate_features_step
    from bgmrec.validation import ValidationFailed

    knobs = command_config(params).validation
    try:
        result = validate_features_step(dataset, report_dir, knobs.min_norm, knobs.max_norm)
    except ValidationFailed as exc:
        validation_exit(exc)
    console.print(f"features valid: {result['tables']}; report {result['summary']}")


def feast_apply_command(
    repo: Annotated[Path, typer.Option(help="Feast feature repo (definitions.py + feature_store.yaml).")],
    dataset: Annotated[Path, typer.Option(help="Dataset whose feature tables go into the repo.")],
    config: Annotated[str, typer.Option(help="Config file inside the repo.")] = "feature_store.yaml",
    out: Annotated[Path | None, typer.Option(help="JSON file to write the step's summary to.")] = None,
) -> None:
    """Stage the dataset's feature tables into the Feast repo, apply the definitions, materialize online."""
    from bgmrec.steps import feast_apply_step

    result = feast_apply_step(repo, dataset, config)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    console.print(f"feast: applied {len(result['applied'])} objects, rows {result['rows']}")



def register(app: typer.Typer) -> None:
    """Add this module's commands to the `bgmrec` app."""
    app.command("simulate")(simulate)
    app.command("check-dataset")(check_dataset)
    app.command("split")(split)
    app.command("sample-media")(sample_media_command)
    app.command("extract")(extract)
    app.command("validate-manifests")(validate_manifests_command)
    app.command("validate-features")(validate_features_command)
    app.command("feast-apply")(feast_apply_command)
