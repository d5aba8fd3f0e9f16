"""Baselines of CMVAE Table 2 (Random, PopularRank, CCA) and the simulator's latent oracle (the ceiling)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bgmrec.data.contract import MusicVectors, VideoVectors
from bgmrec.data.oracle import ORACLE_FILE
from bgmrec.models.base import EmbeddingRecommender, Recommender, TrainingData, check_vectors, l2_normalise


class RandomRecommender(Recommender):
    """Random scores: full-gallery Recall@K ≈ K/N, IPS Recall@K ≈ K/101."""

    name = "random"
    default_params = {"seed": 0}

    def __init__(self, params: dict[str, Any] | None = None):
        super().__init__(params)
        self._rng = np.random.default_rng(int(self.params["seed"]))

    def score(self, videos: VideoVectors, music: MusicVectors) -> np.ndarray:
        return self._rng.random((len(videos), len(music)))


class PopularRank(Recommender):
    """Every video gets the music most used in training (CMVAE Table 2). Unseen music scores 0.

    Not applicable to the strong split (test music has no training popularity); the benchmark reports it so.
    """

    name = "popular"
    default_params: dict[str, Any] = {}
    applicable_splits = ("weak",)

    def __init__(self, params: dict[str, Any] | None = None):
        super().__init__(params)
        self.counts: pd.Series | None = None

    def fit(self, data: TrainingData) -> dict[str, Any]:
        ids = data.dataset.music["music_id"].to_numpy()
        self.counts = pd.Series(data.train_popularity, index=ids)
        return {}

    def score(self, videos: VideoVectors, music: MusicVectors) -> np.ndarray:
        if self.counts is None:
            raise RuntimeError("popular: fit before score")
        counts = self.counts.reindex(music.ids).fillna(0.0).to_numpy(dtype=np.float64)
        return np.broadcast_to(counts, (len(videos), len(music)))


def video_input(visual: np.ndarray, text: np.ndarray, has_text: np.ndarray) -> np.ndarray:
    """Visual ⊕ text ⊕ has-text flag: the single 'video modality' of methods built for two sources (CMVAE 5.1)."""
    return np.concatenate([visual, np.where(has_text[:, None], text, 0.0), has_text[:, None]], axis=1).astype(
        np.float32
    )


class CCARecommender(EmbeddingRecommender):
    """Regularised CCA between video features (visual ⊕ text) and music features (audio ⊕ lld), cosine in the
    canonical space (CMVAE section 5.1: "two canonical variates ... cosine similarity").

    Solved in closed form: whiten each side with (C + r·tr(C)/d·I)^-1/2, SVD of the whitened cross-covariance.
    """

    name = "cca"
    default_params = {"n_components": 64, "regularisation": 1e-3, "max_rows": 60000, "seed": 0}

    def __init__(self, params: dict[str, Any] | None = None):
        super().__init__(params)
        self.state: dict[str, np.ndarray] = {}

    @staticmethod
    def _inverse_sqrt(cov: np.ndarray, reg: float) -> np.ndarray:
        cov = cov + reg * np.trace(cov) / len(cov) * np.eye(len(cov))
        values, vectors = np.linalg.eigh(cov)
        return (vectors / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T

    def fit(self, data: TrainingData) -> dict[str, Any]:
        ds = data.dataset
        assert ds.video_vectors is not None and ds.music_vectors is not None
        rows = data.train_index
        rng = np.random.default_rng(int(self.params["seed"]))
        if len(rows) > int(self.params["max_rows"]):
            rows = np.sort(rng.choice(rows, int(self.params["max_rows"]), replace=False))
        vv, mv = ds.video_vectors, ds.music_vectors
        x = video_input(vv.visual[rows], vv.text[rows], vv.has_text[rows]).astype(np.float64)
        music_rows = ds.video_music_index[rows]
        y = np.concatenate([mv.audio_embedding, mv.audio_lld], axis=1).astype(np.float64)[music_rows]
        mx, my = x.mean(0), y.mean(0)
        sx, sy = x.std(0) + 1e-6, y.std(0) + 1e-6
        x, y = (x - mx) / sx, (y - my) / sy
        n = len(x)
        reg = float(self.params["regularisation"])
        wx = self._inverse_sqrt(x.T @ x / n, reg)
        wy = self._inverse_sqrt(y.T @ y / n, reg)
        u, s, vt = np.linalg.svd(wx @ (x.T @ y / n) @ wy, full_matrices=False)
        k = min(int(self.params["n_components"]), len(s))
        self.state = {
            "x_mean": mx,
            "x_std": sx,
            "y_mean": my,
            "y_std": sy,
            "a": wx @ u[:, :k],
            "b": wy @ vt.T[:, :k],
            "correlations": s[:k],
        }
        self.dims = {**mv.dims, **vv.dims}
        return {"canonical_correlations_top5": [float(c) for c in s[:5]], "rows": int(n)}

    def embed_videos(self, visual, text=None, has_text=None) -> np.ndarray:
        visual = check_vectors("visual", visual, self.dims["visual"])
        if text is None:
            text = np.zeros((len(visual), self.dims["text"]), np.float32)
            has_text = np.zeros(len(visual), bool)
        x = video_input(visual, np.nan_to_num(np.asarray(text, np.float32)), np.asarray(has_text, bool))
        return l2_normalise(((x - self.state["x_mean"]) / self.state["x_std"]) @ self.state["a"])

    def embed_music(self, audio_embedding, audio_lld, music_ids=None) -> np.ndarray:
        audio = check_vectors("audio_embedding", audio_embedding, self.dims["audio_embedding"])
        lld = check_vectors("audio_lld", audio_lld, self.dims["audio_lld"])
        y = np.concatenate([audio, lld], axis=1)
        return l2_normalise(((y - self.state["y_mean"]) / self.state["y_std"]) @ self.state["b"])


class LatentOracle(Recommender):
    """The ranking an ideal model would make from the simulator's true latent factors (oracle.npz).

    Score = -||z_video - z_music||², the log-likelihood of the simulator's video-given-music Gaussian, i.e. the
    Bayes ranking without a popularity prior. Only exists for simulated datasets.
    """

    name = "oracle"
    default_params: dict[str, Any] = {}

    def __init__(self, params: dict[str, Any] | None = None):
        super().__init__(params)
        self.video_latent: pd.DataFrame | None = None
        self.music_latent: pd.DataFrame | None = None

    @staticmethod
    def available(root: str | Path) -> bool:
        return (Path(root) / ORACLE_FILE).exists()

    def fit(self, data: TrainingData) -> dict[str, Any]:
        path = Path(data.dataset.root) / ORACLE_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: no latent oracle (only simulated datasets have one)")
        z = np.load(path, allow_pickle=False)
        self.video_latent = pd.DataFrame(z["video_latent"], index=z["video_ids"].astype(str))
        self.music_latent = pd.DataFrame(z["music_latent"], index=z["music_ids"].astype(str))
        return {}

    def score(self, videos: VideoVectors, music: MusicVectors) -> np.ndarray:
        if self.video_latent is None or self.music_latent is None:
            raise RuntimeError("oracle: fit before score")
        zv = self.video_latent.loc[videos.ids.astype(str)].to_numpy()
        zm = self.music_latent.loc[music.ids.astype(str)].to_numpy()
        return 2 * zv @ zm.T - (zm**2).sum(1)[None, :] - (zv**2).sum(1)[:, None]
