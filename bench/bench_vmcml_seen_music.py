"""VMCML inference rule for seen music: its prototype row of W (paper section 3.3) or the music encoder f(m)?

    flock /tmp/bgmrec-cpu.lock .venv/bin/python bench/bench_vmcml_seen_music.py --dataset /tmp/tt150k

Trains one VMCML on the weak split (every test music is seen in training) with the shared loop for a wall-clock
budget, then evaluates the same weights twice on the test part: seen music scored against prototypes, and against
f(m). Writes both metric sets (bench/results/vmcml_seen_music.json by default); never fails on the values. Why the
default stays the paper's rule: docs/decisions/vmcml-defaults.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from bgmrec.benchmark import METRIC_KEYS
from bgmrec.data.contract import load_dataset
from bgmrec.data.splits import load_or_make_split
from bgmrec.evaluate import evaluate
from bgmrec.models import create_model
from bgmrec.models.base import TrainingData
from bgmrec.train import fit

ROOT = Path(__file__).resolve().parents[1]
app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None, pretty_exceptions_enable=False)


@app.command()
def main(
    dataset_dir: Annotated[Path, typer.Option("--dataset", help="dataset directory (TT-150k scale for the reported "
                                                                  "figures: bgmrec simulate --preset tt150k)")],
    model_name: Annotated[str, typer.Option("--model", help="a VMCML name (model table: vmcml, vmcml-nosl, ...)")] =
        "vmcml",
    max_seconds: Annotated[float, typer.Option(min=1.0, help="training wall-clock budget in seconds")] = 600.0,
    seed: Annotated[int, typer.Option(help="split and training seed")] = 0,
    out: Annotated[Path, typer.Option(help="the JSON results file")] =
        ROOT / "bench" / "results" / "vmcml_seen_music.json",
) -> None:
    """Train one VMCML for MAX_SECONDS, evaluate it with both rules for seen music and write the figures to OUT."""
    dataset = load_dataset(dataset_dir)
    split = load_or_make_split(dataset, "weak", seed)
    model = create_model(model_name, {"max_seconds": max_seconds, "progress": False, "seed": seed})
    started = time.perf_counter()
    report = fit(model, TrainingData(dataset, split, seed))
    results = {
        "dataset": str(dataset.root),
        "split": "weak",
        "model": model_name,
        "fit_seconds": round(time.perf_counter() - started, 1),
        "epochs": report["epochs"],
        "train_videos_seen": int(sum(h["videos"] for h in report["history"])),
    }
    for mode in ("prototype", "encoder"):
        model.params["seen_music"] = mode
        metrics = evaluate(model, dataset, split, "test")
        results[mode] = {k: round(metrics[k], 4) for k in METRIC_KEYS}
        print(mode, results[mode], flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    app()
