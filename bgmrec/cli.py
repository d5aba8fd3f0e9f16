"""`bgmrec`: one Typer CLI over the pipeline steps. Every command has --help."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="bgmrec: background music recommendation for short videos.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Directory to write the dataset to.")],
    scale: Annotated[str, typer.Option(help="tiny, sample or tt150k (CMVAE Table 1 shape).")] = "sample",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a simulated dataset in the contract, with planted structure and a latent oracle."""
    import time

    from bgmrec.data.simulate import simulate as run

    started = time.perf_counter()
    with console.status(f"simulating {scale}"):
        sizes = run(scale, seed, out)
    console.print(f"wrote {out}: {sizes} in {time.perf_counter() - started:.1f}s")


@app.command("check-dataset")
def check_dataset(
    dataset: Annotated[Path, typer.Option(help="Dataset directory (the contract's four parquet files).")],
    manifests_only: Annotated[bool, typer.Option(help="Only check music.parquet and videos.parquet.")] = False,
) -> None:
    """Check a dataset against the contract; non-zero exit naming file, id and problem if it breaks it."""
    from bgmrec.data.contract import DatasetError, load_dataset

    try:
        ds = load_dataset(dataset, require_features=not manifests_only)
    except DatasetError as exc:
        _fail(str(exc))
    console.print(f"ok: {len(ds.music)} music, {len(ds.videos)} videos, dims {ds.dims}")


@app.command()
def split(
    dataset: Annotated[Path, typer.Option(help="Dataset directory.")],
    kind: Annotated[str, typer.Option(help="weak or strong.")] = "weak",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Make and save a weak or strong split with its IPS negatives (dataset/splits/KIND.parquet)."""
    from bgmrec.data.contract import DatasetError, load_dataset
    from bgmrec.data.splits import make_split, save_split, split_path

    try:
        ds = load_dataset(dataset, require_features=False)
    except DatasetError as exc:
        _fail(str(exc))
    s = make_split(ds, kind, seed)
    path = save_split(s, ds, split_path(dataset, kind))
    counts = {p: int((s.part == p).sum()) for p in ("train", "val", "test")}
    console.print(f"wrote {path}: {counts}")


@app.command()
def benchmark(
    dataset: Annotated[Path, typer.Option(help="Dataset directory.")],
    out: Annotated[Path, typer.Option(help="JSON file for the results (a .md table is written beside it).")],
    split: Annotated[str, typer.Option("--split", help="weak or strong.")] = "weak",
    models: Annotated[str, typer.Option(help="Comma-separated model names; NAME@notext drops text at test.")] = (
        "random,popular,cca"
    ),
    seed: Annotated[int, typer.Option(help="Split and model seed.")] = 0,
    params: Annotated[
        Path | None, typer.Option(help="YAML file with a `models:` mapping of per-model parameters.")
    ] = None,
) -> None:
    """Train and evaluate models on one split with both Recall@K protocols; writes JSON and a markdown table."""
    import yaml

    from bgmrec.benchmark import markdown_table, run_benchmark, write_benchmark
    from bgmrec.data.contract import DatasetError

    model_params = (yaml.safe_load(params.read_text()) or {}).get("models", {}) if params else {}
    try:
        result = run_benchmark(dataset, split, [m.strip() for m in models.split(",") if m.strip()], seed,
                               model_params, log=console.print)
    except (DatasetError, ValueError) as exc:
        _fail(str(exc))
    json_path, md_path = write_benchmark(result, out)
    console.print(markdown_table(result))
    console.print(f"wrote {json_path} and {md_path}")


@app.command("list-models")
def list_models() -> None:
    """Print every model name the benchmark and the pipeline accept."""
    from bgmrec.models import available_models

    print(json.dumps(available_models()))


if __name__ == "__main__":
    app()
