"""One training loop for every torch model: device-agnostic, CUDA + mixed precision when present, CPU otherwise.

The loop owns what is common: seeding, the per-epoch shuffle, mini-batches of training videos with their music,
the optimiser, AMP, early stopping on a validation metric (full-gallery Recall@10 by default, CMVAE section 5.2 selects
on the validation set), a wall-clock budget and the training history. A model only says how to build its module,
what its loss is (`module.training_loss(batch, bank)`) and its training settings (`model.training_config`).

A batch holds, for B training videos: `visual` (B, Dv), `text` (B, Dt; zeros without description), `has_text`
(B,), `label` (B,) the index of the video's music among the training music. `bank` holds the training music's
`audio_embedding` and `audio_lld` (rows indexed by label), so a model can embed the batch's music, sample
negative music or use all prototypes.

`fit_torch` strings small pieces together: `prepare_run`, `train_one_epoch`, `validate`, `EarlyStopping` and
`WallClockBudget`. Whatever shows or records the run watches it from outside the loop (`TrainingObserver`): the
terminal progress bar and the DVCLive experiment log.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bgmrec.evaluate import evaluate
from bgmrec.models.base import Recommender, TorchRecommender, TrainingData, pick_device
from bgmrec.models.training_config import TrainingConfig

EpochRecord = dict[str, float]
# the DVCLive log's folder inside a training run's output directory
LIVE_DIR = "dvclive"
# keys of an epoch record that describe the epoch rather than measure it
RECORD_BOOKKEEPING = ("epoch", "videos", "videos_per_s")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def training_tensors(
    data: TrainingData, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The training videos' tensors and the training music bank, on the device."""
    ds = data.dataset
    assert ds.video_vectors is not None and ds.music_vectors is not None
    train = data.train_index
    train_music = data.train_music
    label_of_music = np.full(len(ds.music), -1, dtype=np.int64)
    label_of_music[train_music] = np.arange(len(train_music))
    vv = ds.video_vectors
    videos = {
        "visual": torch.from_numpy(vv.visual[train]),
        "text": torch.from_numpy(vv.text[train]),
        "has_text": torch.from_numpy(vv.has_text[train]),
        "label": torch.from_numpy(label_of_music[ds.video_music_index[train]]),
    }
    mv = ds.music_vectors
    bank = {
        "audio_embedding": torch.from_numpy(mv.audio_embedding[train_music]),
        "audio_lld": torch.from_numpy(mv.audio_lld[train_music]),
    }
    return {k: v.to(device) for k, v in videos.items()}, {k: v.to(device) for k, v in bank.items()}


@dataclass
class TrainingRun:
    """What the epochs of one fit work on: the module on its device, the training tensors and the optimiser."""

    name: str
    module: nn.Module
    device: torch.device
    videos: dict[str, torch.Tensor]
    bank: dict[str, torch.Tensor]
    optimiser: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    use_amp: bool
    # the per-epoch shuffle, seeded apart from torch's global generator (which the losses sample from)
    shuffle: torch.Generator


def prepare_run(rec: TorchRecommender, data: TrainingData, config: TrainingConfig) -> TrainingRun:
    """Build `rec`'s module for the dataset's feature dims on the configured device, with its optimiser."""
    ds = data.dataset
    if ds.video_vectors is None or ds.music_vectors is None:
        raise ValueError(f"dataset {ds.root} has no feature vectors; run `bgmrec extract` first")
    rec.dims = {**ds.music_vectors.dims, **ds.video_vectors.dims}
    device = pick_device(config.device)
    rec.device = device
    rec.extra["train_music_ids"] = ds.music["music_id"].to_numpy()[data.train_music].astype(str).tolist()
    module = rec.build(rec.dims, data).to(device)
    rec.module = module
    videos, bank = training_tensors(data, device)
    use_amp = config.amp and device.type == "cuda"
    # the fused Adam kernel (CPU and CUDA) updates every parameter in one pass: ~1 ms less per step than the
    # per-tensor loop on a 2-core CPU for VMCML (docs/decisions/fused-adam.md)
    optimiser = torch.optim.Adam(
        module.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=device.type in ("cpu", "cuda")
    )
    return TrainingRun(
        name=rec.name,
        module=module,
        device=device,
        videos=videos,
        bank=bank,
        optimiser=optimiser,
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        use_amp=use_amp,
        shuffle=torch.Generator().manual_seed(config.seed),
    )


class WallClockBudget:
    """The run's time limit (0 = none). Checked after every step, so one epoch of a big dataset on a slow machine
    cannot overrun it."""

    def __init__(self, max_seconds: float):
        self.max_seconds = max_seconds
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def exceeded(self) -> bool:
        return bool(self.max_seconds) and self.elapsed > self.max_seconds


def optimisation_step(run: TrainingRun, batch: dict[str, torch.Tensor], epoch: int) -> dict[str, float]:
    """One gradient step on a batch; the loss and the model's loss terms."""
    with torch.autocast(device_type=run.device.type, dtype=torch.float16, enabled=run.use_amp):
        loss, logs = run.module.training_loss(batch, run.bank)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{run.name}: loss became {loss.item()} at epoch {epoch}; lower lr")
    run.optimiser.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimiser)
    run.scaler.update()
    return {"loss": float(loss.detach()), **logs}


def train_one_epoch(run: TrainingRun, epoch: int, batch_size: int, budget: WallClockBudget) -> EpochRecord:
    """One pass over the shuffled training videos (a last batch of one video is skipped); the epoch's mean loss
    terms, time and videos seen. Stops early when the budget runs out."""
    run.module.train()
    started = time.perf_counter()
    n = len(run.videos["label"])
    order = torch.randperm(n, generator=run.shuffle).to(run.device)
    totals: dict[str, float] = {}
    steps = seen = 0
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        if len(index) < 2:
            continue
        logs = optimisation_step(run, {k: v[index] for k, v in run.videos.items()}, epoch)
        steps += 1
        for key, value in logs.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        seen += len(index)
        if budget.exceeded():
            break
    seconds = time.perf_counter() - started
    record: EpochRecord = {k: v / max(steps, 1) for k, v in totals.items()}
    record.update(epoch=epoch, seconds=seconds, videos=seen, videos_per_s=seen / max(seconds, 1e-9))
    return record


def validate(rec: Recommender, data: TrainingData) -> EpochRecord:
    """Both protocols on the split's val part, as `val_<metric>`."""
    result = evaluate(rec, data.dataset, data.split, "val")
    return {f"val_{k}": v for k, v in result.items() if isinstance(v, float)}


class EarlyStopping:
    """Keeps the weights of the epoch with the best validation value; stops after `patience` epochs without one."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_value = -np.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0

    def update(self, epoch: int, value: float, module: nn.Module) -> bool:
        """Record an epoch's value; True if it is the best so far (its weights are then kept)."""
        if value > self.best_value:
            self.best_value, self.best_epoch, self.stale = value, epoch, 0
            self.best_state = copy.deepcopy(module.state_dict())
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience

    def restore_best(self, module: nn.Module) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


class TrainingObserver:
    """Watches a fit from outside the loop: entered before the first epoch, told every epoch's record and the final
    report, exited after the run (also when it fails)."""

    def __enter__(self) -> TrainingObserver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def epoch_ended(self, record: EpochRecord) -> None:
        """Called after each epoch (and its validation) with its record."""

    def finished(self, report: dict[str, Any]) -> None:
        """Called once the best weights are restored, with the report `fit_torch` returns."""


class ProgressBar(TrainingObserver):
    """A rich progress bar over the epochs, showing the last epoch's loss and validation metric."""

    def __init__(self, name: str, epochs: int, metric: str):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.metric = metric
        self.epochs = epochs
        self.progress = Progress(
            TextColumn(f"[bold]{name}[/]"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn()
        )

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        self.task = self.progress.add_task("", total=self.epochs)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def epoch_ended(self, record: EpochRecord) -> None:
        loss, value = record.get("loss", 0.0), record.get(f"val_{self.metric}", np.nan)
        self.progress.update(self.task, advance=1, description=f"loss {loss:.4f} val {self.metric} {value:.4f}")


def live_metrics(record: EpochRecord) -> dict[str, float]:
    """An epoch record under DVCLive metric names: `val/<metric>` for validation, `train/<name>` for the loss
    terms and the epoch's seconds."""
    return {
        f"val/{key.removeprefix('val_')}" if key.startswith("val_") else f"train/{key}": float(value)
        for key, value in record.items()
        if key not in RECORD_BOOKKEEPING
    }


def inside_dvc_project() -> bool:
    """Whether this process runs in a DVC project (a `dvc repro`/`dvc exp run` stage, or a folder of one)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    if os.environ.get("DVC_ROOT"):
        return True
    try:
        Repo.find_root()
    except NotDvcRepoError:
        return False
    return True


class DVCLiveLog(TrainingObserver):
    """The run as a DVCLive log in `directory`: params.yaml (the model's parameters), one history per metric
    (plots/metrics/train/*.tsv, plots/metrics/val/*.tsv, step = epoch), metrics.json, and report.md with PNG
    plots that open offline.

    metrics.json follows the run epoch by epoch; at the end it holds the kept model's epoch (the best by the
    early-stopping metric, else the last): its metrics, `best_epoch` and the number of `epochs` run. DVCLive
    writes no dvc.yaml (the project's dvc.yaml declares these files) and saves no experiment of its own: inside
    `dvc exp run` DVC records the experiment, `dvc repro` and `bgmrec train` only write the files.
    """

    def __init__(self, directory: str | Path, params: Mapping[str, Any]):
        self.directory = Path(directory)
        self.params = dict(params)
        self.records: list[EpochRecord] = []

    def __enter__(self) -> DVCLiveLog:
        try:
            from dvclive import Live
        except ImportError as exc:
            raise RuntimeError("bgmrec train logs through DVCLive: install bgmrec[train]") from exc

        # Outside a DVC project DVCLive runs `dvc init` in the enclosing git repository (dvclive.dvc.get_dvc_repo);
        # a training run must not change the user's repository, so there it is opened from a neutral folder.
        where = contextlib.nullcontext() if inside_dvc_project() else contextlib.chdir(tempfile.gettempdir())
        with where:
            self.live = Live(dir=str(self.directory.resolve()), save_dvc_exp=False, dvcyaml=None, report="md")
        self.live.log_params(self.params)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.live.end()

    def epoch_ended(self, record: EpochRecord) -> None:
        self.records.append(record)
        # steps are set, not advanced with next_step(), so the report's plots are drawn once, at the end
        self.live.step = int(record["epoch"])
        for name, value in live_metrics(record).items():
            self.live.log_metric(name, value)
        self.live.make_summary()

    def finished(self, report: dict[str, Any]) -> None:
        if not self.records:
            return
        kept = next((r for r in self.records if r["epoch"] == report["best_epoch"]), self.records[-1])
        summary: dict[str, Any] = {"best_epoch": int(kept["epoch"]), "epochs": int(report["epochs"])}
        for name, value in live_metrics(kept).items():
            group, _, metric = name.partition("/")
            summary.setdefault(group, {})[metric] = value
        self.live.summary = summary
        self.live.step = int(kept["epoch"])


def fit_torch(
    rec: TorchRecommender, data: TrainingData, observers: Sequence[TrainingObserver] = ()
) -> dict[str, Any]:
    """Train `rec` on the training part of `data.split`; keep the weights of the best validation epoch."""
    config = rec.training_config
    seed_everything(config.seed)
    run = prepare_run(rec, data, config)
    metric = config.early_stop_metric
    has_val = len(data.val_index) > 0
    stopping = EarlyStopping(config.patience)
    watchers = [*observers, ProgressBar(rec.name, config.epochs, metric)] if config.progress else list(observers)
    history: list[EpochRecord] = []
    budget = WallClockBudget(config.max_seconds)
    with ExitStack() as stack:
        for watcher in watchers:
            stack.enter_context(watcher)
        for epoch in range(config.epochs):
            record = train_one_epoch(run, epoch, config.batch_size, budget)
            if has_val:
                record.update(validate(rec, data))
                stopping.update(epoch, record[f"val_{metric}"], run.module)
            history.append(record)
            for watcher in watchers:
                watcher.epoch_ended(record)
            if (has_val and stopping.should_stop) or budget.exceeded():
                break
        stopping.restore_best(run.module)
        run.module.eval()
        report = {
            "epochs": len(history),
            "best_epoch": stopping.best_epoch,
            f"best_val_{metric}": float(stopping.best_value) if has_val else None,
            "seconds": budget.elapsed,
            "device": run.device.type,
            "amp": run.use_amp,
            "history": history,
        }
        for watcher in watchers:
            watcher.finished(report)
    return report


def fit(model: Recommender, data: TrainingData, observers: Sequence[TrainingObserver] = ()) -> dict[str, Any]:
    """Train any recommender on the training part of `data.split`: a torch model by the loop above (watched by
    `observers`), any other by its own `fit`. Returns the training report (epochs, seconds, history...)."""
    if isinstance(model, TorchRecommender):
        return fit_torch(model, data, observers)
    return model.fit(data) or {}
