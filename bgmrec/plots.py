"""Files behind the evaluation's plots: CSV tables DVC plots reads, and PNGs (matplotlib) that render offline.

`dvc plots show` writes HTML that loads vega from a CDN, so every plot also exists as a PNG. Training curves are
DVCLive's (`bgmrec.train.DVCLiveLog`: per-metric TSVs for DVC plots and a report.md with PNGs).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from bgmrec.metrics import FULL_KS, IPS_KS


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_recall_curves(metrics: dict[str, dict[str, Any]], out_dir: Path, title: str) -> dict[str, str]:
    """Recall@K curves of one model: OUT/recall_full.csv, OUT/recall_ips.csv (k, a column per split) + PNG.

    `metrics` maps split kind -> evaluate() result of its test part.
    """
    kinds = list(metrics)
    full = [[k, *[metrics[s].get(f"recall@{k}", math.nan) for s in kinds]] for k in FULL_KS]
    ips = [[k, *[metrics[s].get(f"ips_recall@{k}", math.nan) for s in kinds]] for k in IPS_KS]
    full_csv = _write_csv(out_dir / "recall_full.csv", ["k", *kinds], full)
    ips_csv = _write_csv(out_dir / "recall_ips.csv", ["k", *kinds], ips)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for i, kind in enumerate(kinds):
        left.plot([r[0] for r in full], [r[i + 1] for r in full], marker="o", label=kind)
        right.plot([r[0] for r in ips], [r[i + 1] for r in ips], marker="o", label=kind)
    left.set(xlabel="K", ylabel="Recall@K", title=f"{title}: full gallery", ylim=(0, 1))
    right.set(xlabel="K", ylabel="IPS Recall@K", title=f"{title}: IPS, 1 true + sampled negatives", ylim=(0, 1))
    left.legend()
    right.legend()
    fig.tight_layout()
    png = out_dir / "recall_at_k.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return {"full_csv": str(full_csv), "ips_csv": str(ips_csv), "png": str(png)}
