"""`bgmrec reproduce`: one paper table, several seeds, our numbers beside the paper's, the paper's claims checked.

A table (bgmrec.paper_tables) names its models, its protocol (CMVAE: IPS Recall@K on the weak and strong splits;
VMCML: full-gallery Recall@K on seen and unseen music) and the simulator preset it is reproduced on. Every model is
trained by the one training loop with the epoch chosen on validation Recall@10 (full gallery, which does not
saturate the way IPS Recall@25 among 101 candidates does) and a patience rule, no wall-clock budget. Each seed
draws its own split and IPS negatives on the same data set; a model's initialisation follows its own `seed`
parameter (params.yaml, 0 by default), so the interval covers the split, not the initialisation. Tables give
the mean and a 95 % t-interval over seeds; a claim "A beats B" holds when the interval of the paired (same
seed) difference at K = 10 lies above 0, is reversed when it lies below 0, and is undecided otherwise. Rows with
the paper's own optimiser settings (`paper_settings`) run once (seed 0) and are reported whatever they give.

A model fitted for one table is fitted once per split and seed under OUT: its rows are kept in OUT/runs, keyed by
the data set, split, seed and the model's resolved parameters, and every later table (or a second process on the
same OUT) reads them instead of training again. CMVAE, a row of all four CMVAE tables, trains once per seed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bgmrec.benchmark import PART_SUFFIX, run_benchmark
from bgmrec.data.seen_unseen import UNSEEN_PART
from bgmrec.paper_tables import CLAIM_K, TABLES, PaperTable
from bgmrec.previews import write_atomically

SELECTION_METRIC = "recall@10"
PAPER_SETTINGS_SUFFIX = " (paper's settings)"
SIMULATION_RECORD = "simulation.json"
RUNS_DIR = "runs"


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval (half-width 0 for one value)."""
    from scipy import stats

    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    sd = float(np.std(values, ddof=1))
    return mean, float(stats.t.ppf(0.975, len(values) - 1)) * sd / math.sqrt(len(values))


def simulated_dataset(table: PaperTable, out_dir: Path, scale: float, log: Callable[[str], None]) -> Path:
    """The table's preset simulated at `scale` (videos) once under OUT/data, reused by later tables and runs."""
    from bgmrec.data.simulate import simulate

    path = out_dir / "data" / f"{table.preset}-x{scale:g}"
    record = path / SIMULATION_RECORD
    wanted = {"preset": table.preset, "scale": scale, "seed": 0}
    if record.is_file() and json.loads(record.read_text()).get("settings") == wanted:
        return path
    log(f"simulating preset {table.preset} at scale {scale:g} into {path}")
    sizes = simulate(table.preset, 0, path, scale=scale)
    record.write_text(json.dumps({"settings": wanted, "sizes": sizes}, indent=2, default=str))
    return path


def training_params(models: list[str], base: dict[str, dict[str, Any]] | None,
                    max_epochs: int | None) -> dict[str, dict[str, Any]]:
    """Each trained model's `models:` block with epoch selection on validation Recall@10 (and an epoch cap)."""
    from bgmrec.models import create_model, resolve_params
    from bgmrec.models.base import TorchRecommender

    params = {name: dict(block) for name, block in (base or {}).items()}
    for name in {m.partition("@")[0] for m in models}:
        if not isinstance(create_model(name, resolve_params(name, base)), TorchRecommender):
            continue
        block = params.setdefault(name, {})
        block["early_stop_metric"] = SELECTION_METRIC
        if max_epochs is not None:
            block["epochs"] = max_epochs
    return params


def benchmark_rows(data_dir: Path, split: str, models: list[str], seed: int, params: dict[str, dict[str, Any]],
                   runs_dir: Path, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """`run_benchmark`'s rows for MODELS, one fit per model (with its `@` evaluation variants) kept in RUNS_DIR.

    The key is the data set's files, the split, the seed, the variants asked for and the model's resolved
    parameters; a process computing a key holds its lock, so a second process on the same OUT waits and reads."""
    from bgmrec.models import resolve_params

    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = {f.name: f.stat().st_mtime_ns for f in sorted(Path(data_dir).glob("*.parquet"))}
    families: dict[str, list[str]] = {}
    for name in models:
        families.setdefault(name.partition("@")[0], []).append(name)
    rows: dict[str, dict[str, Any]] = {}
    for base, names in families.items():
        key = {"dataset": str(Path(data_dir).resolve()), "files": stamp, "split": split, "seed": seed,
               "models": sorted(names), "params": resolve_params(base, params)}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = runs_dir / f"{split}-seed{seed}-{base}-{digest}.json"
        with open(path.with_suffix(".lock"), "a+b") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)
            if path.is_file():
                log(f"{base}: split {split}, seed {seed}: fitted before ({path.name})")
                rows.update(json.loads(path.read_text())["results"])
                continue
            result = run_benchmark(data_dir, split, names, seed, params, log=log)["results"]
            write_atomically(path, json.dumps({"key": key, "results": result}, indent=2, default=str).encode())
            rows.update(result)
    return rows


def _columns(table: PaperTable, split: str) -> list[tuple[str, str]]:
    """(paper column, our row suffix) pairs a split contributes."""
    if table.splits == ("seen-unseen",):
        return [(table.columns[0], PART_SUFFIX["test"]), (table.columns[1], PART_SUFFIX[UNSEEN_PART])]
    return [(table.columns[table.splits.index(split)], "")]


def reproduce_table(
    name: str,
    out_dir: str | Path,
    seeds: int = 3,
    scale: float = 1.0,
    dataset: str | Path | None = None,
    models_params: dict[str, dict[str, Any]] | None = None,
    max_epochs: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run table NAME over `seeds` seeds; write OUT/NAME.json, NAME.md and NAME.png; return the JSON."""
    if name not in TABLES:
        raise ValueError(f"unknown table '{name}'; expected one of {', '.join(TABLES)}")
    if seeds < 1:
        raise ValueError(f"seeds is {seeds}, expected 1 or more")
    table, out = TABLES[name], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(dataset) if dataset is not None else simulated_dataset(table, out, scale, log)
    models = list(table.paper)
    params = training_params(models, models_params, max_epochs)
    # runs[column][row] = one metrics dict per seed
    runs: dict[str, dict[str, list[dict[str, float]]]] = {column: {} for column in table.columns}
    for split in table.splits:
        for seed in range(seeds):
            log(f"{name}: split {split}, seed {seed + 1}/{seeds}")
            rows = benchmark_rows(data_dir, split, models, seed, params, out / RUNS_DIR, log)
            for column, suffix in _columns(table, split):
                for row in models:
                    measured = rows.get(row + suffix)
                    if measured is not None and "not_applicable" not in measured:
                        runs[column].setdefault(row, []).append(measured)
        for row, by_split in table.paper_settings.items():
            if split not in by_split:
                continue
            own = {**params, row: {**params.get(row, {}), **by_split[split]}}
            log(f"{name}: {row} with the paper's settings {by_split[split]} (seed 0)")
            rows = benchmark_rows(data_dir, split, [row], 0, own, out / RUNS_DIR, log)
            for column, suffix in _columns(table, split):
                measured = rows.get(row + suffix)
                if measured is not None:
                    runs[column].setdefault(row + PAPER_SETTINGS_SUFFIX, []).append(measured)
    summary = _summarise(table, runs)
    report = {
        "table": name,
        "title": table.title,
        "dataset": str(data_dir),
        "seeds": seeds,
        "scale": scale,
        "max_epochs": max_epochs,
        "selection_metric": SELECTION_METRIC,
        "metric": table.metric,
        "ks": list(table.ks),
        "columns": list(table.columns),
        "rows": summary,
        "claims": _claims(table, runs),
        "paper": {row: {c: list(v) for c, v in cols.items()} for row, cols in table.paper.items()},
        "labels": table.labels,
    }
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    (out / f"{name}.md").write_text(markdown(report))
    _plot(report, out / f"{name}.png")
    return report


def _key(table: PaperTable, k: int) -> str:
    return f"{table.metric}@{k}"


def _summarise(table: PaperTable, runs: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for column, by_row in runs.items():
        for row, measured in by_row.items():
            cell = rows.setdefault(row, {}).setdefault(column, {})
            for k in table.ks:
                mean, half = interval([m[_key(table, k)] for m in measured])
                cell[f"@{k}"] = {"mean": mean, "ci95": half, "n": len(measured)}
            cell["epochs"] = [m.get("best_epoch") for m in measured]
    return rows


def _claims(table: PaperTable, runs: dict[str, dict[str, list[dict[str, float]]]]) -> list[dict[str, Any]]:
    key, checked = _key(table, CLAIM_K), []
    for better, worse in table.claims:
        for column, by_row in runs.items():
            if better not in by_row or worse not in by_row:
                continue
            a, b = by_row[better], by_row[worse]
            n = min(len(a), len(b))
            mean, half = interval([a[i][key] - b[i][key] for i in range(n)])
            verdict = "holds" if mean - half > 0 else "reversed" if mean + half < 0 else "undecided"
            if n < 2:
                verdict = "holds (one seed)" if mean > 0 else "reversed (one seed)" if mean < 0 else "undecided"
            checked.append({"claim": f"{table.labels[better]} beats {table.labels[worse]}", "column": column,
                            "metric": key, "difference": mean, "ci95": half, "verdict": verdict})
    return checked


def markdown(report: dict[str, Any]) -> str:
    """The table as Markdown: ours (mean ± 95 % interval) beside the paper's, then the claims."""
    ks = report["ks"]
    lines = [f"### {report['title']}", "",
             f"`{report['metric']}`, {report['seeds']} seeds, data set `{Path(report['dataset']).name}`, epoch "
             f"chosen on validation {report['selection_metric']}"
             + (f", at most {report['max_epochs']} epochs." if report.get("max_epochs") else "."), ""]
    for column in report["columns"]:
        lines += [f"**{column}**", "", "| model | " + " | ".join(f"R@{k} ours" for k in ks) + " | "
                  + " | ".join(f"R@{k} paper" for k in ks) + " |", "|" + "---|" * (1 + 2 * len(ks))]
        for row, cols in report["rows"].items():
            if column not in cols:
                continue
            base = row.removesuffix(PAPER_SETTINGS_SUFFIX)
            label = report["labels"].get(base, base) + (PAPER_SETTINGS_SUFFIX if row != base else "")
            ours = [f"{cols[column][f'@{k}']['mean']:.4f} ± {cols[column][f'@{k}']['ci95']:.4f}" for k in ks]
            paper = report["paper"].get(base, {}).get(column) if row == base else None
            theirs = [f"{v:.4f}" for v in paper] if paper else ["–"] * len(ks)
            lines.append(f"| {label} | " + " | ".join(ours + theirs) + " |")
        lines.append("")
    lines += ["| claim | column | difference at K=10 (95 % CI) | verdict |", "|---|---|---|---|"]
    for claim in report["claims"]:
        lines.append(f"| {claim['claim']} | {claim['column']} | {claim['difference']:+.4f} ± {claim['ci95']:.4f} "
                     f"| {claim['verdict']} |")
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    """Recall@K per model (mean with its interval), one panel per column, ours solid and the paper's dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = report["ks"]
    columns = report["columns"]
    fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 4.2), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        for index, (row, cols) in enumerate(report["rows"].items()):
            if column not in cols:
                continue
            colour = f"C{index % 10}"
            means = [cols[column][f"@{k}"]["mean"] for k in ks]
            halves = [cols[column][f"@{k}"]["ci95"] for k in ks]
            ax.errorbar(ks, means, yerr=halves, color=colour, marker="o", capsize=3, label=row)
            paper = report["paper"].get(row, {}).get(column)
            if paper:
                ax.plot(ks, paper, color=colour, linestyle="--", alpha=0.6)
        ax.set_title(f"{column} (dashed: paper)")
        ax.set_xlabel("K")
        ax.set_ylabel(report["metric"].replace("_", " ") + "@K")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.suptitle(report["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
