"""The training loop's settings, typed: what `bgmrec.train` reads from a torch model's parameters.

A model's parameters are one flat mapping (params.yaml `models.<name>`, checkpoints, `dvc exp run -S`), so the
loop's settings live there beside the model's own. Each torch model starts its `default_params` with
`TrainingConfig(<its overrides>).as_params()`; the loop reads them back with `TrainingConfig.from_params`.
Models import this module, never the trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bgmrec.metrics import FULL_KS, IPS_KS

EARLY_STOP_METRICS = tuple([f"recall@{k}" for k in FULL_KS] + [f"ips_recall@{k}" for k in IPS_KS])


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of one training run. The defaults are the loop's; a model declares its own overrides."""

    epochs: int = 30
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    # epochs without a better validation value before training stops
    patience: int = 5
    seed: int = 0
    # "auto" = CUDA when present, else CPU; or any torch device string
    device: str = "auto"
    # mixed precision (float16 autocast + grad scaling), used on CUDA only
    amp: bool = True
    # wall-clock budget of the whole run, checked after every step; 0 = none
    max_seconds: float = 0.0
    # validation metric whose best epoch is kept (CMVAE section 5.2 selects on the validation set): full-gallery
    # Recall@10 ranks the whole validation gallery, so it still separates epochs where IPS Recall@25 (the true music
    # among 101 candidates) is near 1 for every trained model and would pick an epoch by noise
    early_stop_metric: str = "recall@10"
    # a progress bar on the terminal
    progress: bool = True

    def __post_init__(self) -> None:
        wrong_type = [
            f"{f.name}: {getattr(self, f.name)!r} is a {type(getattr(self, f.name)).__name__}, expected a {f.type}"
            for f in dataclasses.fields(self)
            if not _is_kind(getattr(self, f.name), str(f.type))
        ]
        if wrong_type:
            raise ValueError("; ".join(wrong_type))
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs is {self.epochs}, expected at least 1")
        if self.batch_size < 2:
            problems.append(f"batch_size is {self.batch_size}, expected at least 2")
        if not self.lr > 0:
            problems.append(f"lr is {self.lr}, expected a positive number")
        if not self.weight_decay >= 0:
            problems.append(f"weight_decay is {self.weight_decay}, expected 0 or more")
        if self.patience < 0:
            problems.append(f"patience is {self.patience}, expected 0 or more")
        if not self.max_seconds >= 0:
            problems.append(f"max_seconds is {self.max_seconds}, expected 0 (no budget) or more")
        if self.early_stop_metric not in EARLY_STOP_METRICS:
            problems.append(
                f"early_stop_metric '{self.early_stop_metric}' is not one of {', '.join(EARLY_STOP_METRICS)}"
            )
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainingConfig:
        """The training settings among a model's parameters (other keys are the model's own); numbers given as
        ints where floats are expected are converted."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in params:
                value = params[field.name]
                values[field.name] = float(value) if field.type == "float" and isinstance(value, int) else value
        return cls(**values)

    def as_params(self) -> dict[str, Any]:
        """These settings as entries of a model's parameter mapping."""
        return dataclasses.asdict(self)


def _is_kind(value: Any, kind: str) -> bool:
    """Whether a value fits a field annotated `kind` (int, float, str or bool; an int is a float, a bool is neither)."""
    if kind == "bool" or isinstance(value, bool):
        return kind == "bool" and isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float)
    return isinstance(value, {"int": int, "str": str}[kind])
