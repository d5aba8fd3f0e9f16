"""`bgmrec benchmark`: train and evaluate models on the same split and the same IPS negatives, in one run.

A model name may end in `@notext` to evaluate the same trained model with every description removed at test
time (CMVAE Table 5); the model is trained once per run. On simulated data the latent oracle is added and each
model's recall is also given as a fraction of the oracle's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bgmrec.data.contract import load_dataset
from bgmrec.data.splits import load_or_make_split
from bgmrec.evaluate import evaluate
from bgmrec.metrics import FULL_KS, IPS_KS
from bgmrec.models import create_model, resolve_params
from bgmrec.models.base import Recommender, TrainingData
from bgmrec.models.baselines import LatentOracle

METRIC_KEYS = [f"recall@{k}" for k in FULL_KS] + [f"ips_recall@{k}" for k in IPS_KS]
NO_TEXT_SUFFIX = "@notext"


def run_benchmark(
    dataset_dir: str | Path,
    split_kind: str,
    models: list[str],
    seed: int = 0,
    params: dict[str, dict[str, Any]] | None = None,
    log=print,
) -> dict[str, Any]:
    """Results per model name: Recall@K, IPS Recall@K, fit/eval seconds, fraction of the oracle."""
    dataset = load_dataset(dataset_dir)
    split = load_or_make_split(dataset, split_kind, seed)
    data = TrainingData(dataset, split, seed)
    names = list(models)
    if LatentOracle.available(dataset.root) and "oracle" not in names:
        names.append("oracle")
    trained: dict[str, tuple[Recommender, dict[str, Any], float]] = {}
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        base, _, variant = name.partition("@")
        if base not in trained:
            model = create_model(base, resolve_params(base, params))
            applicable = getattr(model, "applicable_splits", None)
            if applicable is not None and split_kind not in applicable:
                results[name] = {"not_applicable": f"{base} needs training popularity of the test music"}
                log(f"{name}: not applicable to the {split_kind} split")
                continue
            started = time.perf_counter()
            report = model.fit(data) or {}
            trained[base] = (model, report, time.perf_counter() - started)
        model, report, fit_seconds = trained[base]
        started = time.perf_counter()
        metrics = evaluate(model, dataset, split, "test", drop_text=(variant == NO_TEXT_SUFFIX[1:]))
        eval_seconds = time.perf_counter() - started
        row = {**metrics, "fit_seconds": round(fit_seconds, 2), "eval_seconds": round(eval_seconds, 2)}
        for key in ("epochs", "best_epoch", "device"):
            if key in report:
                row[key] = report[key]
        results[name] = row
        log(f"{name}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in METRIC_KEYS) + f" (fit {fit_seconds:.1f}s)")
    if "oracle" in results:
        oracle = results["oracle"]
        for row in results.values():
            if "recall@10" in row:
                row["fraction_of_oracle"] = {
                    k: (row[k] / oracle[k] if oracle[k] > 0 else None) for k in ("recall@10", "ips_recall@10")
                }
    return {
        "dataset": str(dataset.root),
        "split": split_kind,
        "seed": seed,
        "n_music": len(dataset.music),
        "n_videos": len(dataset.videos),
        "results": results,
    }


def markdown_table(benchmark: dict[str, Any]) -> str:
    """One markdown table of a benchmark result (rows: models; columns: both protocols, fit time)."""
    header = ["model", *METRIC_KEYS, "of oracle (R@10)", "fit s"]
    lines = [
        f"Split `{benchmark['split']}`, {benchmark['n_music']} music, {benchmark['n_videos']} videos, "
        f"seed {benchmark['seed']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, row in benchmark["results"].items():
        if "not_applicable" in row:
            lines.append(f"| {name} | " + " | ".join(["–"] * (len(header) - 1)) + " |")
            continue
        frac = row.get("fraction_of_oracle", {}).get("recall@10")
        cells = [f"{row[k]:.4f}" for k in METRIC_KEYS]
        cells += [f"{frac:.2f}" if frac is not None else "", f"{row['fit_seconds']:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = {row["note"] for row in benchmark["results"].values() if "note" in row}
    lines += [""] + [f"Note: {n}" for n in sorted(notes)]
    return "\n".join(lines) + "\n"


def write_benchmark(benchmark: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(benchmark, indent=2, default=float))
    table = out.with_suffix(".md")
    table.write_text(markdown_table(benchmark))
    return out, table
