"""VMCML inference rule for seen music: its prototype row of W (paper section 3.3) or the music encoder f(m)?

    python bench/bench_vmcml_seen_music.py --dataset /tmp/tt150k --max-seconds 180 \
        --out bench/results/vmcml_seen_music.json

Trains one VMCML on the weak split (every test music is seen in training) with the shared loop, then evaluates
the same weights twice on the test part: seen music scored against prototypes, and against f(m). Writes both
metric sets; never fails on the values.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bgmrec.benchmark import METRIC_KEYS
from bgmrec.data.contract import load_dataset
from bgmrec.data.splits import load_or_make_split
from bgmrec.evaluate import evaluate
from bgmrec.models import create_model
from bgmrec.models.base import TrainingData


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="dataset directory")
    parser.add_argument("--model", default="vmcml", help="a registered VMCML name (vmcml, vmcml-nosl, ...)")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="training wall-clock budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/vmcml_seen_music.json", help="JSON file for the figures")
    args = parser.parse_args()

    dataset = load_dataset(args.dataset)
    split = load_or_make_split(dataset, "weak", args.seed)
    model = create_model(args.model, {"max_seconds": args.max_seconds, "progress": False, "seed": args.seed})
    started = time.perf_counter()
    report = model.fit(TrainingData(dataset, split, args.seed))
    results = {
        "dataset": str(dataset.root),
        "split": "weak",
        "model": args.model,
        "fit_seconds": round(time.perf_counter() - started, 1),
        "epochs": report["epochs"],
        "train_videos_seen": int(sum(h["videos"] for h in report["history"])),
    }
    for mode in ("prototype", "encoder"):
        model.params["seen_music"] = mode
        metrics = evaluate(model, dataset, split, "test")
        results[mode] = {k: round(metrics[k], 4) for k in METRIC_KEYS}
        print(mode, results[mode], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
