"""Training commands: benchmark, train, evaluate and the promotion gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bgmrec.commands.common import (
    GATE_REFUSED_EXIT,
    ParamsOption,
    command_config,
    console,
    fail,
)
from bgmrec.data.split_kinds import SPLIT_KINDS


def benchmark(
    dataset: Annotated[Path, typer.Option(help="Dataset directory.")],
    out: Annotated[Path, typer.Option(help="JSON file for the results (a .md table is written beside it).")],
    split: Annotated[str, typer.Option("--split", help=f"Split kind: {', '.join(SPLIT_KINDS)}.")] = "weak",
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
                               model_params, log=console.print, console=console)
    except (DatasetError, ValueError) as exc:
        fail(str(exc))
    json_path, md_path = write_benchmark(result, out)
    console.print(markdown_table(result))
    console.print(f"wrote {json_path} and {md_path}")


def list_models() -> None:
    """Print every model name the benchmark and the pipeline accept."""
    from bgmrec.models import available_models

    print(json.dumps(available_models()))


def train(
    dataset: Annotated[Path, typer.Option(help="Dataset directory (manifests; vectors too without Feast).")],
    model: Annotated[str, typer.Option(help="Torch model name from the model table (see list-models).")],
    out: Annotated[Path, typer.Option(help="Output directory: model.pt, train.json, the DVCLive log dvclive/.")],
    split: Annotated[str, typer.Option("--split", help=f"Split kind: {', '.join(SPLIT_KINDS)}.")] = "weak",
    feature_repo: Annotated[
        Path | None, typer.Option(help="Feast repo: read vectors with get_historical_features.")
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Train one model on one split (params: `models.<name>`, then `train.overrides`; split seed `data.seed`)."""
    from bgmrec.data.contract import DatasetError
    from bgmrec.steps import train_step

    config = command_config(params)
    try:
        result = train_step(dataset, split, model, config, out, feature_repo)
    except (DatasetError, ValueError) as exc:
        fail(str(exc))
    console.print(f"{model} ({split}): {result['epochs']} epochs, checkpoint {result['checkpoint']}")


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

    seed = command_config(params).data.seed
    pairs = [c.split("=", 1) for c in checkpoint]
    if all(len(p) == 2 for p in pairs):
        checkpoints: dict[str, str] | str = {kind: path for kind, path in pairs}
    elif len(pairs) == 1:
        checkpoints = checkpoint[0]
    else:
        fail(f"--checkpoint: give KIND=PATH for each split kind or a single PATH, got {checkpoint}")
    result = evaluate_step(dataset, checkpoints, out, seed=seed, plots_dir=plots_dir)
    for kind, metrics in result["metrics"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "recall" in k)
        console.print(f"{result['model_name']} {kind}: {shown}")


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
    1 an error (a missing or unreadable file). Inside a DVC experiment nothing is registered or promoted: the
    decision the gate would take is printed and written to --out, exit 0.
    """
    from bgmrec.steps import gate_step

    knobs = command_config(params).gate
    try:
        result = gate_step(metrics, registry, knobs.thresholds, knobs.tolerance, model, checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    if result["experiment"]:
        verdict = "would promote" if result["passed"] else "would refuse (" + "; ".join(result["reasons"]) + ")"
        console.print(f"DVC experiment {result['experiment']}: the gate {verdict} {model}; nothing registered, "
                      f"production unchanged ({result['production']}): experiments never promote")
        return
    if result["passed"]:
        console.print(f"gate passed: {model} promoted as {result['version']}")
        return
    console.print("gate refused; production unchanged (" + str(result["production"]) + "):\n  - "
                  + "\n  - ".join(result["reasons"]))
    raise typer.Exit(code=GATE_REFUSED_EXIT)



def reproduce(
    table: Annotated[list[str], typer.Option(help="Paper table(s): cmvae-2..cmvae-5, vmcml-2, vmcml-5, vmcml-6, "
                                                  "or all.")],
    out: Annotated[Path, typer.Option(help="Folder for TABLE.json, TABLE.md, TABLE.png and the simulated data.")],
    seeds: Annotated[int, typer.Option(help="Seeds per model: each draws its own split and IPS negatives.")] = 3,
    scale: Annotated[float, typer.Option(help="Share of the preset's videos to simulate (1 = the paper's size; "
                                              "0.05 for a quick run).")] = 1.0,
    dataset: Annotated[
        Path | None, typer.Option(help="A contract data set to use instead of the simulated preset.")
    ] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Cap on the epochs of every trained model.")] = None,
    params: ParamsOption = None,
) -> None:
    """Reproduce paper tables: our mean and 95 % interval over seeds beside the paper's numbers, and whether each
    of the paper's claims holds (models' parameters from the configuration's `models:`)."""
    from bgmrec.data.contract import DatasetError
    from bgmrec.paper_tables import TABLES
    from bgmrec.reproduce import reproduce_table

    names = list(TABLES) if table == ["all"] else table
    unknown = [name for name in names if name not in TABLES]
    if unknown:
        fail(f"unknown table(s) {', '.join(unknown)}; expected {', '.join(TABLES)} or all")
    models = command_config(params).models
    for name in names:
        try:
            report = reproduce_table(name, out, seeds, scale, dataset, models, max_epochs, log=console.print)
        except (DatasetError, ValueError) as exc:
            fail(str(exc))
        console.print((out / f"{name}.md").read_text())
        held = sum(c["verdict"] == "holds" for c in report["claims"])
        console.print(f"{name}: {held} of {len(report['claims'])} claims hold; wrote {out / name}.json/.md/.png")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `bgmrec` app."""
    app.command("benchmark")(benchmark)
    app.command("list-models")(list_models)
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("gate")(gate)
    app.command("reproduce")(reproduce)
