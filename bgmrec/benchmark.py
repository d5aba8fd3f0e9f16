"""`bgmrec benchmark`: train and evaluate models on the same split and the same IPS negatives, in one run.

A model name may end in `@notext` to evaluate the same trained model with every description removed at test
time (CMVAE Table 5); the model is trained once per run. On the seen-unseen split (VMCML Table 2) each model has
a second row, NAME:unseen, for the unseen music's videos ranked against the unseen music. On simulated data the
latent oracle is added and each model's recall is also given as a fraction of the oracle's (of the same part).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from bgmrec.data.contract import load_dataset
from bgmrec.data.seen_unseen import UNSEEN_PART
from bgmrec.data.splits import load_or_make_split
from bgmrec.evaluate import evaluate
from bgmrec.metrics import FULL_KS, IPS_KS
from bgmrec.models import create_model, resolve_params
from bgmrec.models.base import Recommender, TorchRecommender, TrainingData
from bgmrec.models.baselines import LatentOracle
from bgmrec.train import EpochRecord, TrainingObserver, fit

METRIC_KEYS = [f"recall@{k}" for k in FULL_KS] + [f"ips_recall@{k}" for k in IPS_KS]
NO_TEXT_SUFFIX = "@notext"
PART_SUFFIX = {"test": "", UNSEEN_PART: f":{UNSEEN_PART}"}
# A benchmark shorter than this prints only its result lines; a longer one also shows its progress.
PROGRESS_DELAY_S = 3.0


class BenchmarkProgress:
    """A benchmark's progress on a rich console: one bar over its steps (each model's fit, each evaluation) and,
    while a torch model trains, one over its epochs with the last loss. It appears once the run has lasted
    `delay` seconds (default `PROGRESS_DELAY_S`) and is cleared when the run ends; without a console it does
    nothing."""

    def __init__(self, console: Console | None, steps: int, delay: float | None = None):
        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.steps = self.progress.add_task("benchmark", total=steps)
        self.epochs = self.progress.add_task("", total=None, visible=False)
        self._lock = threading.Lock()
        self._closed = False
        self._timer = threading.Timer(PROGRESS_DELAY_S if delay is None else delay, self._show)
        self._timer.daemon = True

    def __enter__(self) -> BenchmarkProgress:
        if self.console is not None:
            self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._closed = True
            self._timer.cancel()
            self.progress.stop()

    def _show(self) -> None:
        with self._lock:
            if not self._closed:
                self.progress.start()

    def now(self, description: str) -> None:
        """Name the step under way, drawn at once: rich's own refresh, 10 times a second, would never show a step
        shorter than that (an evaluation on small data)."""
        self.progress.update(self.steps, description=description, refresh=True)

    def done(self, steps: int = 1) -> None:
        self.progress.advance(self.steps, steps)

    def observers(self, model: Recommender) -> list[TrainingObserver]:
        """What `bgmrec.train.fit` reports a torch model's epochs to (nothing without a console)."""
        if self.console is None or not isinstance(model, TorchRecommender):
            return []
        return [EpochProgress(self.progress, self.epochs, model.training_config.epochs)]


class EpochProgress(TrainingObserver):
    """The epochs of one torch model's fit, on a task of a benchmark's progress."""

    def __init__(self, progress: Progress, task: TaskID, epochs: int):
        self.progress, self.task, self.epochs = progress, task, epochs

    def __enter__(self) -> EpochProgress:
        self.progress.reset(self.task, total=self.epochs, visible=True, description="  epochs")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.update(self.task, visible=False)

    def epoch_ended(self, record: EpochRecord) -> None:
        loss = record.get("loss", float("nan"))
        self.progress.update(self.task, advance=1, description=f"  epochs (loss {loss:.4f})", refresh=True)


def run_benchmark(
    dataset_dir: str | Path,
    split_kind: str,
    models: list[str],
    seed: int = 0,
    params: dict[str, dict[str, Any]] | None = None,
    log=print,
    console: Console | None = None,
) -> dict[str, Any]:
    """Results per model name: Recall@K, IPS Recall@K, fit/eval seconds, fraction of the oracle. With a
    `console`, a run that lasts longer than `PROGRESS_DELAY_S` shows its progress there (`BenchmarkProgress`);
    pass that console's `print` as `log` so result lines appear above the bars."""
    dataset = load_dataset(dataset_dir)
    split = load_or_make_split(dataset, split_kind, seed)
    data = TrainingData(dataset, split, seed)
    names = list(models)
    if LatentOracle.available(dataset.root) and "oracle" not in names:
        names.append("oracle")
    # the seen-unseen split is evaluated on its seen test videos and on the unseen music's videos, one row each
    parts = ["test"] + ([UNSEEN_PART] if len(split.index(UNSEEN_PART)) else [])
    trained: dict[str, tuple[Recommender, dict[str, Any], float]] = {}
    results: dict[str, dict[str, Any]] = {}
    part_of: dict[str, str] = {}
    fits = len({name.partition("@")[0] for name in names})
    with BenchmarkProgress(console, fits + len(names) * len(parts)) as progress:
        for name in names:
            base, _, variant = name.partition("@")
            if base not in trained:
                progress.now(f"fitting {base}")
                model = create_model(base, resolve_params(base, params))
                applicable = getattr(model, "applicable_splits", None)
                if applicable is not None and split_kind not in applicable:
                    results[name] = {"not_applicable": f"{base} needs training popularity of the test music"}
                    log(f"{name}: not applicable to the {split_kind} split")
                    progress.done(1 + len(parts))
                    continue
                if console is not None and isinstance(model, TorchRecommender):
                    # the benchmark's progress shows the epochs: the training loop's own bar would compete with it
                    model = create_model(base, resolve_params(base, params, {"progress": False}))
                started = time.perf_counter()
                report = fit(model, data, progress.observers(model))
                trained[base] = (model, report, time.perf_counter() - started)
                progress.done()
            model, report, fit_seconds = trained[base]
            for part in parts:
                progress.now(f"evaluating {name}" + (f" on {part}" if part != "test" else ""))
                started = time.perf_counter()
                metrics = evaluate(model, dataset, split, part, drop_text=(variant == NO_TEXT_SUFFIX[1:]))
                eval_seconds = time.perf_counter() - started
                row = {**metrics, "fit_seconds": round(fit_seconds, 2), "eval_seconds": round(eval_seconds, 2)}
                for key in ("epochs", "best_epoch", "device"):
                    if key in report:
                        row[key] = report[key]
                row_name = name + PART_SUFFIX[part]
                results[row_name], part_of[row_name] = row, part
                scores = ", ".join(f"{k} {metrics[k]:.4f}" for k in METRIC_KEYS)
                log(f"{row_name}: {scores} (fit {fit_seconds:.1f}s)")
                progress.done()
    for row_name, part in part_of.items():
        oracle = results.get("oracle" + PART_SUFFIX[part])
        row = results[row_name]
        if oracle is not None:
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
