"""Training throughput of the torch models in the model table: seconds per epoch, videos/s and FLOP utilisation.

    flock /tmp/bgmrec-cpu.lock .venv/bin/python bench/bench_training.py --dataset /tmp/tt150k --threads 2

For each model: train `--epochs` epochs with the shared loop (`bgmrec.train.fit_torch`, no validation so only
training is timed) on the weak split's training part; count one training step's forward+backward FLOPs with
torch.utils.flop_counter on real batches and scale to the epoch; compare the achieved FLOP/s with a float32 matmul
measured in the same run, in the same process, just before and after the model (the machine is shared, so the
reference moves; both are reported). Targets on 2 CPU cores at the TT-150k scale (117,121 training videos):
CMVAE <= 60 s per epoch at >= 40 % of the matmul rate, VMCML <= 30 s per epoch. Never fails on timing: it writes
what it measured (bench/results/training.json by default).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from torch.utils.flop_counter import FlopCounterMode

from bgmrec.data.contract import load_dataset
from bgmrec.data.splits import Split, load_or_make_split
from bgmrec.models import create_model
from bgmrec.models.base import TorchRecommender, TrainingData
from bgmrec.train import fit, seed_everything, training_tensors

ROOT = Path(__file__).resolve().parents[1]
app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None, pretty_exceptions_enable=False)


def matmul_gflops(n: int = 1024, k: int = 2048, m: int = 1024, repeats: int = 20) -> float:
    """Best-of-three float32 matmul rate (GFLOP/s) on the CPU with torch's current thread count."""
    a, b = torch.randn(n, k), torch.randn(k, m)
    a @ b
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2.0 * n * k * m * repeats / (time.perf_counter() - started) / 1e9)
    return best


def step_flops(model: TorchRecommender, data: TrainingData, batch_size: int, n_batches: int, seed: int) -> float:
    """Mean forward+backward FLOPs of one training step over `n_batches` random training batches."""
    module = model._require_module().train()
    videos, bank = training_tensors(data, model.device)
    generator = torch.Generator().manual_seed(seed)
    counts = []
    for _ in range(n_batches):
        index = torch.randperm(len(videos["label"]), generator=generator)[:batch_size]
        batch = {k: v[index] for k, v in videos.items()}
        with FlopCounterMode(display=False) as counter:
            loss, _ = module.training_loss(batch, bank)
            loss.backward()
        module.zero_grad(set_to_none=True)
        counts.append(counter.get_total_flops())
    return float(np.mean(counts))


def without_validation(split: Split) -> Split:
    """The same split with an empty val part, so fit_torch times training epochs only."""
    part = split.part.copy()
    part[part == "val"] = "unused"
    return replace(split, part=part)


def bench_model(name: str, data: TrainingData, epochs: int, seed: int) -> dict[str, Any]:
    model = create_model(name, {"epochs": epochs, "progress": False, "seed": seed, "device": "cpu", "max_seconds": 0.0})
    if not isinstance(model, TorchRecommender):
        raise ValueError(f"{name} is not a torch model; bench_training measures TorchRecommender models only")
    reference_before = matmul_gflops()
    seed_everything(seed)
    report = fit(model, data)
    reference_after = matmul_gflops()
    batch_size = model.training_config.batch_size
    n = len(data.train_index)
    flops_per_step = step_flops(model, data, batch_size, n_batches=3, seed=seed)
    flops_per_epoch = flops_per_step * n / batch_size
    epoch_seconds = [h["seconds"] for h in report["history"]]
    best = min(epoch_seconds)
    achieved = flops_per_epoch / best / 1e9
    reference = max(reference_before, reference_after)
    return {
        "train_videos": n,
        "batch_size": batch_size,
        "epoch_seconds": [round(s, 2) for s in epoch_seconds],
        "best_epoch_seconds": round(best, 2),
        "videos_per_s": round(n / best, 1),
        "gflop_per_epoch": round(flops_per_epoch / 1e9, 1),
        "achieved_gflops": round(achieved, 2),
        "matmul_gflops_before": round(reference_before, 2),
        "matmul_gflops_after": round(reference_after, 2),
        "flop_utilisation": round(achieved / reference, 3),
        "loss_per_epoch": [round(h["loss"], 4) for h in report["history"]],
    }


@app.command()
def main(
    dataset_dir: Annotated[Path, typer.Option("--dataset", help="dataset directory (TT-150k scale for the reported "
                                                                  "figures: bgmrec simulate --preset tt150k)")],
    models: Annotated[str, typer.Option(help="comma-separated TorchRecommender names from the model table")] =
        "cmvae,vmcml,cevar",
    out: Annotated[Path, typer.Option(help="the JSON results file")] = ROOT / "bench" / "results" / "training.json",
    epochs: Annotated[int, typer.Option(min=1, help="epochs per model (the fastest one is reported)")] = 2,
    split_kind: Annotated[str, typer.Option("--split", help="weak or strong")] = "weak",
    seed: Annotated[int, typer.Option(help="split, batch order and FLOP-count batches")] = 0,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: torch's default)")] = 0,
) -> None:
    """Train each model for EPOCHS epochs, time them, count their FLOPs and write the figures to OUT."""
    if threads:
        torch.set_num_threads(threads)

    started = time.perf_counter()
    dataset = load_dataset(dataset_dir)
    split = load_or_make_split(dataset, split_kind, seed)
    data = TrainingData(dataset, without_validation(split), seed)
    load_seconds = time.perf_counter() - started
    results: dict[str, Any] = {
        "dataset": str(dataset.root),
        "split": split_kind,
        "n_videos": len(dataset.videos),
        "load_seconds": round(load_seconds, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "models": {},
    }
    for name in [m.strip() for m in models.split(",") if m.strip()]:
        row = bench_model(name, data, epochs, seed)
        results["models"][name] = row
        print(
            f"{name}: {row['best_epoch_seconds']} s/epoch, {row['videos_per_s']} videos/s, "
            f"{row['achieved_gflops']} GFLOP/s = {row['flop_utilisation']:.0%} of matmul"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    app()
