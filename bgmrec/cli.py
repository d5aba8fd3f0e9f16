"""`bgmrec`: one Typer CLI over the pipeline steps. Every command has --help."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="bgmrec: background music recommendation for short videos.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


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


GATE_REFUSED_EXIT = 3


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


# ---------------------------------------------------------------- data layer (dvc.yaml stages)

ParamsOption = Annotated[
    Path | None,
    typer.Option("--params", help="params.yaml (default: $BGMREC_PARAMS, else the params.yaml of the project "
                                  "the working directory is in, else the built-in defaults)."),
]


def _config_path(params: Path | None) -> Path | None:
    import os

    from bgmrec.config import PARAMS_ENV, find_params

    if params is not None:
        return params
    if os.environ.get(PARAMS_ENV):
        return Path(os.environ[PARAMS_ENV])
    return find_params()


def _config(params: Path | None):
    """The typed configuration the command runs with (exit 1 naming the key when the file is bad)."""
    from bgmrec.config import ConfigError, load_config

    try:
        return load_config(_config_path(params))
    except ConfigError as exc:
        _fail(str(exc))


def _validation_exit(exc: Exception) -> None:
    console.print(str(exc))
    raise typer.Exit(code=1)


@app.command("sample-media")
def sample_media_command(
    out: Annotated[Path, typer.Option(help="Directory to write the sample media data set to.")],
    params: ParamsOption = None,
) -> None:
    """Generate the bundled sample: synthetic music and short videos with a planted audio-visual link."""
    from bgmrec.steps import sample_media_step

    config = _config(params)
    with console.status(f"generating sample media in {out}"):
        result = sample_media_step(out, config.sample)
    console.print(f"wrote {out}: {result}")


@app.command()
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
        result = extract_step(dataset, _config(params).extract, console=console)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    for kind, counts in result["counts"].items():
        console.print(f"{kind}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    console.print(f"dims {result['dims']}, seconds {result['seconds']}")
    for failure in result["failures"]:
        console.print(Text("FAILED ", style="bold red") + Text(failure))
    if not result["ok"]:
        _fail(f"{len(result['failures'])} item(s) failed; see {result['outputs']['report']}")
    console.print(f"wrote {result['outputs']['music_features']} and {result['outputs']['video_features']}")


@app.command("validate-manifests")
def validate_manifests_command(
    dataset: Annotated[Path, typer.Option(help="Dataset directory (music.parquet, videos.parquet).")],
    report_dir: Annotated[Path, typer.Option(help="Where summary.txt, result.json and Data Docs go.")],
    params: ParamsOption = None,
) -> None:
    """Validate the manifests with Great Expectations; non-zero exit naming the offending rows on failure."""
    from bgmrec.steps import validate_manifests_step
    from bgmrec.validation import ValidationFailed

    knobs = _config(params).validation
    try:
        result = validate_manifests_step(dataset, report_dir, knobs.max_description_chars)
    except ValidationFailed as exc:
        _validation_exit(exc)
    console.print(f"manifests valid: {result['tables']}; report {result['summary']}")


@app.command("validate-features")
def validate_features_command(
    dataset: Annotated[Path, typer.Option(help="Dataset directory with its feature tables.")],
    report_dir: Annotated[Path, typer.Option(help="Where summary.txt, result.json and Data Docs go.")],
    params: ParamsOption = None,
) -> None:
    """Validate the feature tables with Great Expectations; non-zero exit naming the offending rows."""
    from bgmrec.steps import validate_features_step
    from bgmrec.validation import ValidationFailed

    knobs = _config(params).validation
    try:
        result = validate_features_step(dataset, report_dir, knobs.min_norm, knobs.max_norm)
    except ValidationFailed as exc:
        _validation_exit(exc)
    console.print(f"features valid: {result['tables']}; report {result['summary']}")


@app.command("feast-apply")
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


@app.command()
def train(
    dataset: Annotated[Path, typer.Option(help="Dataset directory (manifests; vectors too without Feast).")],
    model: Annotated[str, typer.Option(help="Registered torch model name (see list-models).")],
    out: Annotated[Path, typer.Option(help="Output directory: model.pt, train.json, history.csv, PNG.")],
    split: Annotated[str, typer.Option("--split", help="weak or strong.")] = "weak",
    feature_repo: Annotated[
        Path | None, typer.Option(help="Feast repo: read vectors with get_historical_features.")
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Train one model on one split (params: `models.<name>`, then `train.overrides`; split seed `data.seed`)."""
    from bgmrec.data.contract import DatasetError
    from bgmrec.steps import train_step

    config = _config(params)
    try:
        result = train_step(dataset, split, model, config, out, feature_repo)
    except (DatasetError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"{model} ({split}): {result['epochs']} epochs, checkpoint {result['checkpoint']}")


@app.command()
def evaluate(
    dataset: Annotated[Path, typer.Option(help="Dataset directory with feature tables and splits.")],
    checkpoint: Annotated[
        list[str], typer.Option(help="KIND=PATH per split kind (weak=runs/x/weak/model.pt), or one PATH.")
    ],
    out: Annotated[Path, typer.Option(help="Metrics JSON: {split kind: Recall@K, IPS Recall@K, ...}.")],
    plots_dir: Annotated[Path | None, typer.Option(help="Where Recall@K curves (CSV + PNG) go.")] = None,
    params: ParamsOption = None,
) -> None:
    """Evaluate checkpoints with both protocols on the test part of each split kind."""
    from bgmrec.steps import evaluate_step

    seed = _config(params).data.seed
    pairs = [c.split("=", 1) for c in checkpoint]
    if all(len(p) == 2 for p in pairs):
        checkpoints: dict[str, str] | str = {kind: path for kind, path in pairs}
    elif len(pairs) == 1:
        checkpoints = checkpoint[0]
    else:
        _fail(f"--checkpoint: give KIND=PATH for each split kind or a single PATH, got {checkpoint}")
    result = evaluate_step(dataset, checkpoints, out, seed=seed, plots_dir=plots_dir)
    for kind, metrics in result["metrics"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "recall" in k)
        console.print(f"{result['model_name']} {kind}: {shown}")


@app.command()
def gate(
    metrics: Annotated[Path, typer.Option(help="Metrics JSON of the candidate (from `bgmrec evaluate`).")],
    checkpoint: Annotated[Path, typer.Option(help="The candidate checkpoint to register when it passes.")],
    model: Annotated[str, typer.Option(help="Model name recorded in the registry.")],
    registry: Annotated[Path, typer.Option(help="Model registry directory.")],
    out: Annotated[Path | None, typer.Option(help="JSON file for the decision and its reasons.")] = None,
    params: ParamsOption = None,
) -> None:
    """Promote the candidate only if it meets `gate.thresholds` and is not worse than production.

    Exit status: 0 promoted, 3 refused (production unchanged; the reasons are printed and written to --out),
    1 an error (a missing or unreadable file).
    """
    from bgmrec.steps import gate_step

    knobs = _config(params).gate
    try:
        result = gate_step(metrics, registry, knobs.thresholds, knobs.tolerance, model, checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    if result["passed"]:
        console.print(f"gate passed: {model} promoted as {result['version']}")
        return
    console.print("gate refused; production unchanged (" + str(result["production"]) + "):\n  - "
                  + "\n  - ".join(result["reasons"]))
    raise typer.Exit(code=GATE_REFUSED_EXIT)


SERVICE = "serving.service:BgmRecommender"


@app.command("build-catalog")
def build_catalog_command(
    dataset: Annotated[
        Path | None, typer.Option(help="Dataset directory whose music is embedded (default: `data.dataset`).")
    ] = None,
    registry: Annotated[
        Path | None, typer.Option(help="Model registry; writes REGISTRY/catalog.parquet (default: `gate.registry`).")
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Embed the dataset's music with the production model into the serving catalog (REGISTRY/catalog.parquet),
    with its vector index beside it from `catalog.index_min_size` music on."""
    from bgmrec.steps import build_catalog_step

    config = _config(params)
    try:
        result = build_catalog_step(dataset or Path(config.data.dataset), registry or Path(config.gate.registry),
                                    catalog_settings=config.catalog)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    print(json.dumps(result))


@app.command("build-bento")
def build_bento_command(
    registry: Annotated[Path, typer.Option(help="Model registry (production.json + catalog.parquet).")],
    version: Annotated[str | None, typer.Option(help="Bento version (default: generated by BentoML).")] = None,
    wheel: Annotated[
        Path | None, typer.Option(help="The bgmrec wheel to put in the Bento (default: built from this checkout).")
    ] = None,
) -> None:
    """Package the production model + catalog as a BentoML model and build the `bgmrec` Bento (serving/)."""
    from bgmrec.steps import build_bento_step

    try:
        result = build_bento_step(registry, version, wheel)
    except FileNotFoundError as exc:
        _fail(str(exc))
    print(json.dumps(result))


@app.command()
def serve(
    registry: Annotated[
        Path | None, typer.Option(help="Model registry (production.json + catalog.parquet); default `gate.registry`.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default `serving.port`).")] = None,
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (0.0.0.0 to accept remote clients; default `serving.host`).")
    ] = None,
    feast_repo: Annotated[
        Path | None, typer.Option(help="Feast repo for recommend_by_video (online video vectors).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Request threads of the BentoML worker.")] = None,
    max_k: Annotated[int | None, typer.Option(help="Largest k a request may ask for.")] = None,
    max_upload_mb: Annotated[float | None, typer.Option(help="Largest video upload accepted, in MB.")] = None,
    params: ParamsOption = None,
) -> None:
    """Serve the recommender with `bentoml serve serving.service:BgmRecommender`: the registry's production model
    and catalog, followed (a new production model or catalog version is swapped in without a restart).

    Settings come from the configuration's `serving:` section; the options here override it. Admin routes
    (/refresh_catalog) need `Authorization: Bearer $BGMREC_ADMIN_TOKEN`; without that variable they are off.
    """
    import os
    import sys

    from bgmrec.config import PARAMS_ENV
    from bgmrec.registry import ModelRegistry, RegistryError

    config = _config(params)
    registry = (registry or Path(config.gate.registry)).resolve()
    try:  # one clear line and exit 1, rather than a server whose worker fails to start again and again
        ModelRegistry(registry).check_servable()
    except RegistryError as exc:
        _fail(str(exc))
    env = {**os.environ, "BGMREC_REGISTRY": str(registry),
           "BENTOML_DO_NOT_TRACK": os.environ.get("BENTOML_DO_NOT_TRACK", "true")}
    config_path = _config_path(params)
    if config_path is not None:
        env[PARAMS_ENV] = str(config_path.resolve())
    overrides = {"BGMREC_THREADS": threads, "BGMREC_MAX_K": max_k, "BGMREC_MAX_UPLOAD_MB": max_upload_mb,
                 "BGMREC_FEATURE_REPO": feast_repo.resolve() if feast_repo is not None else None}
    env.update({name: str(value) for name, value in overrides.items() if value is not None})
    host = host or config.serving.host
    port = port or config.serving.port
    args = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]
    console.print(f"serving {registry} on http://{host}:{port} ({' '.join(args[2:])})")
    os.execve(sys.executable, args, env)


@app.command()
def recommend(
    url: Annotated[str, typer.Option(help="The recommender's address, e.g. http://localhost:3000.")],
    video: Annotated[Path | None, typer.Option(help="A video file to upload (decoded and embedded there).")] = None,
    video_id: Annotated[str | None, typer.Option(help="A video the feature store knows, by its id.")] = None,
    description: Annotated[
        str | None, typer.Option(help="The video's description, any language (with --video).")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="How many music to list.")] = 10,
) -> None:
    """Ask a running recommender for music for a video and print the ranked list (BentoML's HTTP client)."""
    import bentoml
    from rich.table import Table

    if (video is None) == (video_id is None):
        _fail("give exactly one of --video FILE or --video-id ID")
    if description is not None and video is None:
        _fail("--description goes with --video (a stored video's description is already in the feature store)")
    if video is not None and not video.is_file():
        _fail(f"{video}: no such file")
    try:
        with bentoml.SyncHTTPClient(url) as client:
            if video is not None:
                answer = client.recommend_by_upload(video=video, description=description, k=k)
            else:
                answer = client.recommend_by_video(video_id=video_id, k=k)
    except Exception as exc:  # noqa: BLE001 - connection errors and the server's 4xx, shown as they are
        _fail(f"{url}: {exc}")
    table = Table(title=f"music for {video or video_id} (model {answer['model_version']}, "
                        f"catalog version {answer['catalog_version']})")
    for column in ("rank", "music id", "title", "score"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for rank, item in enumerate(answer["items"], 1):
        table.add_row(str(rank), item["music_id"], item["title"], f"{item['score']:.4f}")
    Console().print(table)


@app.command()
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
    from bgmrec.trigger import run_batch_locally, submit_batch, submit_inbox

    if (music_batch is None) == (inbox is None):
        _fail("give exactly one of --music-batch DIR or --inbox DIR")
    config = _config(params)
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
        _fail("--inbox needs --host (the cluster's trigger); run local batches with --music-batch")
    dataset = dataset or Path(config.data.dataset)
    registry = registry or Path(config.gate.registry)
    repo = config.feast.repo if feature_repo is None else feature_repo
    console.print(f"running the new-music-batch pipeline on {music_batch} (kfp.local, outputs in {pipeline_root})")
    result = run_batch_locally(music_batch, dataset, registry, repo, _config_path(params), pipeline_root)
    print(result.message)
    if not result.accepted:
        raise typer.Exit(code=1)


@app.command("compile-pipelines")
def compile_pipelines_command(
    out: Annotated[Path, typer.Option(help="Folder to write training.yaml and new_music_batch.yaml to.")],
    params: ParamsOption = None,
) -> None:
    """Compile the training and new-music-batch pipelines to Kubeflow IR YAML (images, volumes, resources and
    gate defaults from the configuration's `kubeflow:` and `gate:`; $BGMREC_PIPELINE_IMAGE overrides the image)."""
    from pipelines.compile import compile_pipelines

    for path in compile_pipelines(out, _config(params)):
        console.print(f"wrote {path}")


if __name__ == "__main__":
    app()
