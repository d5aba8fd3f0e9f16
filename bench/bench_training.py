"""Training throughput of registered torch models: seconds per epoch, videos/s and FLOP utilisation.

    python bench/bench_training.py --dataset /tmp/tt150k --models cmvae,vmcml --out bench/results/training.json

For each model: train `--epochs` epochs with the shared loop (`bgmrec.train.fit_torch`, no validation so only
training is timed) on the weak split's training part; count one training step's forward+backward FLOPs with
torch.utils.flop_counter on real batches and scale to the epoch; compare the achieved FLOP/s with a float32 matmul
measured in the same run, in the same process, just before and after the model (the machine is shared, so the
reference moves; both are reported). Never fails on timing: it writes what it measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bgmrec.data.contract import load_dataset
from bgmrec.data.splits import Split, load_or_make_split
from bgmrec.models import create_model
from bgmrec.models.base import TorchRecommender, TrainingData
from bgmrec.train import TRAIN_DEFAULTS, seed_everything, training_tensors


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
    report = model.fit(data)
    reference_after = matmul_gflops()
    batch_size = int(model.params.get("batch_size", TRAIN_DEFAULTS["batch_size"]))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="dataset directory (tt150k scale for the reported figures)")
    parser.add_argument("--models", default="cmvae", help="comma-separated registered TorchRecommender names")
    parser.add_argument("--out", default="bench/results/training.json", help="JSON file for the figures")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per model (the fastest one is reported)")
    parser.add_argument("--split", default="weak", help="weak or strong")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    dataset = load_dataset(args.dataset)
    split = load_or_make_split(dataset, args.split, args.seed)
    data = TrainingData(dataset, without_validation(split), args.seed)
    load_seconds = time.perf_counter() - started
    results: dict[str, Any] = {
        "dataset": str(dataset.root),
        "split": args.split,
        "n_videos": len(dataset.videos),
        "load_seconds": round(load_seconds, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "models": {},
    }
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        row = bench_model(name, data, args.epochs, args.seed)
        results["models"][name] = row
        print(
            f"{name}: {row['best_epoch_seconds']} s/epoch, {row['videos_per_s']} videos/s, "
            f"{row['achieved_gflops']} GFLOP/s = {row['flop_utilisation']:.0%} of matmul"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
