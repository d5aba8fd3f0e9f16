"""One training loop for every torch model: device-agnostic, CUDA + mixed precision when present, CPU otherwise.

The loop owns what is common: seeding, the per-epoch shuffle, mini-batches of training videos with their music,
the optimiser, AMP, early stopping on a validation metric (IPS Recall@25 by default, CMVAE section 5.2 selects
on the validation set), a wall-clock budget and the training history. A model only says how to build its module
and what its loss is (`module.training_loss(batch, bank)`).

A batch holds, for B training videos: `visual` (B, Dv), `text` (B, Dt; zeros without description), `has_text`
(B,), `label` (B,) the index of the video's music among the training music. `bank` holds the training music's
`audio_embedding` and `audio_lld` (rows indexed by label), so a model can embed the batch's music, sample
negative music or use all prototypes.
"""

from __future__ import annotations

import copy
import random
import time
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bgmrec.models.base import TorchRecommender, TrainingData, pick_device

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 1024,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "patience": 5,
    "seed": 0,
    "device": "auto",
    "amp": True,
    "max_seconds": 0.0,
    "early_stop_metric": "ips_recall@25",
    "progress": True,
}


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


def fit_torch(rec: TorchRecommender, data: TrainingData) -> dict[str, Any]:
    """Train `rec` on the training part of `data.split`; keep the weights of the best validation epoch."""
    from bgmrec.evaluate import evaluate

    p = {**TRAIN_DEFAULTS, **rec.params}
    seed_everything(int(p["seed"]))
    ds = data.dataset
    if ds.video_vectors is None or ds.music_vectors is None:
        raise ValueError(f"dataset {ds.root} has no feature vectors; run `bgmrec extract` first")
    rec.dims = {**ds.music_vectors.dims, **ds.video_vectors.dims}
    device = pick_device(str(p["device"]))
    rec.device = device
    rec.extra["train_music_ids"] = ds.music["music_id"].to_numpy()[data.train_music].astype(str).tolist()
    module = rec.build(rec.dims, data).to(device)
    rec.module = module
    videos, bank = training_tensors(data, device)
    n = len(videos["label"])
    use_amp = bool(p["amp"]) and device.type == "cuda"
    # the fused Adam kernel (CPU and CUDA) updates every parameter in one pass: ~1 ms less per step than the
    # per-tensor loop on a 2-core CPU for VMCML (docs/notes/issue-4.md)
    optimiser = torch.optim.Adam(
        module.parameters(),
        lr=float(p["lr"]),
        weight_decay=float(p["weight_decay"]),
        fused=device.type in ("cpu", "cuda"),
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    generator = torch.Generator().manual_seed(int(p["seed"]))
    batch_size = int(p["batch_size"])
    metric = str(p["early_stop_metric"])
    has_val = len(data.val_index) > 0
    best_value, best_state, best_epoch, stale = -np.inf, None, -1, 0
    history: list[dict[str, float]] = []
    started = time.perf_counter()

    def over_budget() -> bool:
        return bool(p["max_seconds"]) and time.perf_counter() - started > float(p["max_seconds"])

    progress = Progress(
        TextColumn(f"[bold]{rec.name}[/]"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        disable=not p["progress"],
    )
    with progress:
        task = progress.add_task("", total=int(p["epochs"]))
        for epoch in range(int(p["epochs"])):
            module.train()
            epoch_start = time.perf_counter()
            order = torch.randperm(n, generator=generator).to(device)
            totals: dict[str, float] = {}
            steps = seen = 0
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                if len(index) < 2:
                    continue
                batch = {k: v[index] for k, v in videos.items()}
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    loss, logs = module.training_loss(batch, bank)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{rec.name}: loss became {loss.item()} at epoch {epoch}; lower lr")
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
                steps += 1
                for key, value in {"loss": float(loss.detach()), **logs}.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
                seen += len(index)
                # the wall-clock budget is also checked inside the epoch, so one epoch of a big dataset on a slow
                # machine cannot overrun it; the partial epoch is still validated below
                if over_budget():
                    break
            record: dict[str, float] = {k: v / max(steps, 1) for k, v in totals.items()}
            record.update(
                epoch=epoch,
                seconds=time.perf_counter() - epoch_start,
                videos=seen,
                videos_per_s=seen / max(time.perf_counter() - epoch_start, 1e-9),
            )
            if has_val:
                val = evaluate(rec, ds, data.split, "val")
                record.update({f"val_{k}": v for k, v in val.items() if isinstance(v, float)})
                value = val[metric]
                if value > best_value:
                    best_value, best_epoch, stale = value, epoch, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    stale += 1
            history.append(record)
            progress.update(
                task,
                advance=1,
                description=f"loss {record.get('loss', 0):.4f} val {metric} {record.get('val_' + metric, np.nan):.4f}",
            )
            if has_val and stale >= int(p["patience"]):
                break
            if over_budget():
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    rec.history = history
    return {
        "epochs": len(history),
        "best_epoch": best_epoch,
        f"best_val_{metric}": float(best_value) if has_val else None,
        "seconds": time.perf_counter() - started,
        "device": device.type,
        "amp": use_amp,
        "history": history,
    }
