"""What every recommender implements, so the benchmark, the pipeline and serving treat models alike.

- `Recommender.fit(data)` trains on the training part of a split (early stopping may use the val part); torch
  models are trained by `bgmrec.train.fit(model, data)`, which trains any recommender.
- `Recommender.score(videos, music)` → (n_videos, n_music) scores, higher is better. Music is passed with its ids
  so a model may treat music it saw in training differently (VMCML's prototypes, PopularRank's counts).
- `EmbeddingRecommender` adds `embed_videos` / `embed_music` (L2-normalised, batched): the API serving uses,
  and scores are cosines of those embeddings.
- `TorchRecommender` adds input standardisation, device handling and checkpoints that carry config and feature
  dims; its `module` is trained by the one loop in `bgmrec.train` with the model's `training_config`. Models sit
  below the trainer: they declare their training settings (`TrainingConfig`) and never import it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bgmrec.data.contract import Dataset, MusicVectors, VideoVectors
from bgmrec.data.splits import Split
from bgmrec.models.training_config import TrainingConfig

EMBED_BATCH = 8192


@dataclass
class TrainingData:
    """The training view of a split: which videos train, which validate, and the music they use."""

    dataset: Dataset
    split: Split
    seed: int = 0

    @property
    def train_index(self) -> np.ndarray:
        return self.split.index("train")

    @property
    def val_index(self) -> np.ndarray:
        return self.split.index("val")

    @property
    def train_music(self) -> np.ndarray:
        """Music row indices that have at least one training video (the 'seen' music)."""
        return self.split.music_of(self.dataset, "train")

    @property
    def train_popularity(self) -> np.ndarray:
        """Training videos per music row (PopularRank's popularity)."""
        index = self.dataset.video_music_index[self.train_index]
        return np.bincount(index, minlength=len(self.dataset.music))


class Recommender(ABC):
    """A model that ranks music for videos."""

    name: str = "recommender"
    default_params: dict[str, Any] = {}

    def __init__(self, params: dict[str, Any] | None = None):
        unknown = set(params or {}) - set(self.default_params)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(self.default_params))}"
            )
        self.params: dict[str, Any] = {**self.default_params, **(params or {})}

    def fit(self, data: TrainingData) -> dict[str, Any]:
        """Train; returns a report (epochs, seconds, history...). Default: nothing to learn."""
        return {}

    @abstractmethod
    def score(self, videos: VideoVectors, music: MusicVectors) -> np.ndarray:
        """(n_videos, n_music) scores, higher is better."""


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_vectors(name: str, matrix: np.ndarray, dim: int) -> np.ndarray:
    """A 2-d finite float32 matrix of the expected width, or a ValueError that says what is wrong."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        got = matrix.shape[-1] if matrix.ndim else 0
        raise ValueError(f"{name} vector has {got} values, expected {dim}")
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} vector of row {int(np.flatnonzero(bad)[0])} contains NaN or infinite values")
    return matrix


class EmbeddingRecommender(Recommender):
    """A recommender that embeds videos and music in one space and scores by cosine."""

    @abstractmethod
    def embed_videos(
        self, visual: np.ndarray, text: np.ndarray | None = None, has_text: np.ndarray | None = None
    ) -> np.ndarray:
        """(n, d) L2-normalised video embeddings. text=None or has_text False means no description."""

    @abstractmethod
    def embed_music(
        self, audio_embedding: np.ndarray, audio_lld: np.ndarray, music_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """(m, d) L2-normalised music embeddings; music_ids lets a model use what it learned of seen music."""

    def score(self, videos: VideoVectors, music: MusicVectors) -> np.ndarray:
        v = self.embed_videos(videos.visual, videos.text, videos.has_text)
        m = self.embed_music(music.audio_embedding, music.audio_lld, music.ids)
        return v @ m.T


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class Standardiser(nn.Module):
    """z-scores one input with statistics of the training data, stored as buffers so they travel in checkpoints."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(x.mean(axis=0), dtype=torch.float32))
        self.std.copy_(torch.as_tensor(x.std(axis=0) + 1e-6, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TorchRecommender(EmbeddingRecommender):
    """An embedding recommender whose encoders are a torch module trained by the loop in `bgmrec.train`.

    Subclasses build `self.module` in `build(dims, data)`; the module implements
    `training_loss(batch, bank) -> (loss, {name: float})`, `encode_videos(visual, text, has_text) -> Tensor`
    and `encode_music(audio_embedding, audio_lld) -> Tensor` on standardised inputs. Their `default_params` start
    with the training settings, `{**TrainingConfig(<the model's overrides>).as_params(), <model parameters>}`.
    """

    default_params: dict[str, Any] = TrainingConfig().as_params()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name in TrainingConfig.field_names() if name not in cls.default_params]
        if missing:
            raise TypeError(
                f"{cls.__name__}.default_params lacks the training settings {', '.join(missing)}: start it with "
                "**TrainingConfig(<overrides>).as_params()"
            )

    def __init__(self, params: dict[str, Any] | None = None):
        super().__init__(params)
        self.module: nn.Module | None = None
        self.dims: dict[str, int] = {}
        self.extra: dict[str, Any] = {}
        self.device = torch.device("cpu")

    @property
    def training_config(self) -> TrainingConfig:
        """The training loop's settings among this model's parameters; a ValueError names the model and what is
        wrong (the loop reads them before it builds anything)."""
        try:
            return TrainingConfig.from_params(self.params)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None

    @abstractmethod
    def build(self, dims: dict[str, int], data: TrainingData | None) -> nn.Module:
        """Create the module for these feature dims (data is None when loading a checkpoint)."""

    def fit(self, data: TrainingData) -> dict[str, Any]:
        """Torch models do not train themselves: the one training loop does, `bgmrec.train.fit(model, data)`."""
        raise TypeError(f"{self.name}: a torch model is trained by the training loop, bgmrec.train.fit(model, data)")

    def _require_module(self) -> nn.Module:
        if self.module is None:
            raise RuntimeError(f"{self.name}: model is not trained or loaded")
        return self.module

    def _inference_module(self) -> nn.Module:
        """The module in eval mode. `eval()` walks every submodule (~0.1 ms for CMVAE, as much as the rest of a
        one-video forward pass in serving), so it runs only when the module is in training mode."""
        module = self._require_module()
        return module.eval() if module.training else module

    @torch.no_grad()
    def embed_videos(self, visual, text=None, has_text=None) -> np.ndarray:
        module = self._inference_module()
        visual = check_vectors("visual", visual, self.dims["visual"])
        n = len(visual)
        if text is None:
            text = np.zeros((n, self.dims["text"]), np.float32)
            has_text = np.zeros(n, bool)
        else:
            text = np.asarray(text, dtype=np.float32)
            if text.ndim == 1:
                text = text[None, :]
            if has_text is None:
                has_text = np.isfinite(text).all(axis=1)
            has_text = np.asarray(has_text, dtype=bool)
            text = np.where(has_text[:, None], text, 0.0).astype(np.float32)
            text = check_vectors("text", text, self.dims["text"])
        out = []
        for start in range(0, n, EMBED_BATCH):
            sl = slice(start, start + EMBED_BATCH)
            z = module.encode_videos(
                torch.from_numpy(visual[sl]).to(self.device),
                torch.from_numpy(text[sl]).to(self.device),
                torch.from_numpy(has_text[sl]).to(self.device),
            )
            out.append(z.float().cpu().numpy())
        return l2_normalise(np.concatenate(out) if out else np.zeros((0, 1), np.float32))

    @torch.no_grad()
    def embed_music(self, audio_embedding, audio_lld, music_ids=None) -> np.ndarray:
        module = self._inference_module()
        audio = check_vectors("audio_embedding", audio_embedding, self.dims["audio_embedding"])
        lld = check_vectors("audio_lld", audio_lld, self.dims["audio_lld"])
        if len(audio) != len(lld):
            raise ValueError(f"audio_embedding has {len(audio)} rows but audio_lld has {len(lld)}")
        out = []
        for start in range(0, len(audio), EMBED_BATCH):
            sl = slice(start, start + EMBED_BATCH)
            z = module.encode_music(
                torch.from_numpy(audio[sl]).to(self.device), torch.from_numpy(lld[sl]).to(self.device)
            )
            out.append(z.float().cpu().numpy())
        return l2_normalise(np.concatenate(out) if out else np.zeros((0, 1), np.float32))

    def save(self, path: str | Path) -> Path:
        """Checkpoint with name, params, feature dims, extra state and weights (loadable with weights_only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        module = self._require_module()
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        torch.save(
            {"name": self.name, "params": self.params, "dims": self.dims, "extra": self.extra, "state_dict": state},
            path,
        )
        return path

    def load_state(self, checkpoint: dict[str, Any]) -> None:
        self.dims = dict(checkpoint["dims"])
        self.extra = dict(checkpoint.get("extra", {}))
        self.module = self.build(self.dims, None)
        self.module.load_state_dict(checkpoint["state_dict"])
        self.module.eval()
