"""A TT-150k-shaped simulator with planted, learnable-but-not-trivial structure and a latent oracle.

Neither paper's data is public, so models are measured on data whose ceiling is known:

- Popularity: videos per music from a Gamma fitted to CMVAE Table 1 (49 ± 57 per music, clipped to [3, 219]).
  Counts are drawn as Gamma quantiles of fixed uniforms, with the scale solved so the total hits the target
  (3,003 music → ≈146,351 videos at the tt150k scale).
- Style: each music has latent style factors z_m ~ N(0, I); a video that uses it has z_v = z_m + σ_v·ε (the
  uploader's own take on the style). This Gaussian is the whole music↔video link.
- Music features see z_m through their own random nonlinear maps: audio_embedding through factors [0, 3/4·d)
  plus music-specific nuisance, audio_lld through factors [1/4·d, d) (so dropping either part loses signal).
- Visual features see z_v through a nonlinear map, drowned in nuisance (scene, lighting, ... unrelated to music)
  that carries most of the variance.
- Text (a description embedding) sees z_v through its own map plus noise whose level varies per video
  (log-uniform), and a share of videos have no description at all (text null): fusion that weights modalities
  by reliability (CMVAE's PoE) can pay off.
- The oracle ranks music by -||z_v - z_m||², the Bayes ranking given the true latents; oracle.npz holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bgmrec.data.contract import (
    MusicVectors,
    VideoVectors,
    write_manifests,
    write_music_features,
    write_video_features,
)
from bgmrec.models.baselines import ORACLE_FILE


@dataclass(frozen=True)
class SimulationConfig:
    n_music: int
    target_videos: int
    popularity_mean: float = 49.0
    popularity_std: float = 57.0
    min_videos: int = 3
    max_videos: int = 219
    dims: dict[str, int] = field(
        default_factory=lambda: {"visual": 2048, "text": 768, "audio_embedding": 128, "audio_lld": 128}
    )
    latent_dim: int = 12
    video_spread: float = 0.9
    visual_nuisance_dim: int = 64
    visual_signal_share: float = 0.25
    music_nuisance_dim: int = 8
    text_missing_share: float = 0.3
    text_noise_range: tuple[float, float] = (1.0, 30.0)
    feature_noise: float = 0.1
    hidden: int = 256


SCALES: dict[str, SimulationConfig] = {
    "tiny": SimulationConfig(
        n_music=40,
        target_videos=480,
        popularity_mean=12,
        popularity_std=10,
        max_videos=40,
        dims={"visual": 64, "text": 32, "audio_embedding": 16, "audio_lld": 16},
        hidden=64,
    ),
    "sample": SimulationConfig(n_music=300, target_videos=6000, popularity_mean=20, popularity_std=22, max_videos=100),
    "tt150k": SimulationConfig(n_music=3003, target_videos=146351),
}


def popularity_counts(config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Videos per music: clipped Gamma(k, θ) quantiles with k from mean/std and θ solved for the target total."""
    shape = (config.popularity_mean / config.popularity_std) ** 2
    u = rng.random(config.n_music)

    def counts(scale: float) -> np.ndarray:
        raw = stats.gamma.ppf(u, shape, scale=scale)
        return np.clip(np.rint(raw), config.min_videos, config.max_videos).astype(np.int64)

    lo, hi = 1e-3, config.popularity_std**2 / config.popularity_mean * 20
    for _ in range(60):
        mid = (lo + hi) / 2
        if counts(mid).sum() < config.target_videos:
            lo = mid
        else:
            hi = mid
    return counts(hi)


class _RandomMap:
    """A fixed random 2-layer tanh network from latent factors to a feature vector (one per modality)."""

    def __init__(self, rng: np.random.Generator, n_in: int, n_out: int, hidden: int):
        self.w1 = (rng.standard_normal((n_in, hidden)) * (3.0 / np.sqrt(n_in))).astype(np.float32)
        self.b1 = (rng.standard_normal(hidden) * 0.5).astype(np.float32)
        self.w2 = (rng.standard_normal((hidden, n_out)) / np.sqrt(hidden)).astype(np.float32)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        out = np.tanh(z.astype(np.float32) @ self.w1 + self.b1) @ self.w2
        return out / (out.std() + 1e-8)


def _noise(rng: np.random.Generator, shape: tuple[int, int], scale: float | np.ndarray) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.asarray(scale, dtype=np.float32)


def simulate(scale: str, seed: int, out: str | Path, dims: dict[str, int] | None = None) -> dict[str, int]:
    """Write a simulated dataset in the contract (plus oracle.npz) to `out`; returns its sizes."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale '{scale}', expected one of {', '.join(SCALES)}")
    config = SCALES[scale]
    if dims:
        config = replace(config, dims={**config.dims, **dims})
    rng = np.random.default_rng(seed)
    out = Path(out)
    d = config.latent_dim
    counts = popularity_counts(config, rng)
    n_music, n_videos = len(counts), int(counts.sum())
    music_ids = np.array([f"m{i:05d}" for i in range(n_music)])
    video_ids = np.array([f"v{i:07d}" for i in range(n_videos)])
    video_music = np.repeat(np.arange(n_music), counts)
    rng.shuffle(video_music)

    z_music = rng.standard_normal((n_music, d)).astype(np.float32)
    z_video = z_music[video_music] + _noise(rng, (n_videos, d), config.video_spread)

    audio_factors = slice(0, (3 * d) // 4)
    lld_factors = slice(d // 4, d)
    audio_map = _RandomMap(
        rng,
        audio_factors.stop - audio_factors.start + config.music_nuisance_dim,
        config.dims["audio_embedding"],
        config.hidden,
    )
    lld_map = _RandomMap(rng, lld_factors.stop - lld_factors.start, config.dims["audio_lld"], config.hidden)
    music_nuisance = rng.standard_normal((n_music, config.music_nuisance_dim)).astype(np.float32)
    audio = audio_map(np.concatenate([z_music[:, audio_factors], music_nuisance], 1))
    audio += _noise(rng, audio.shape, config.feature_noise)
    lld = lld_map(z_music[:, lld_factors]) + _noise(rng, (n_music, config.dims["audio_lld"]), config.feature_noise)

    visual_map = _RandomMap(rng, d, config.dims["visual"], config.hidden)
    nuisance_basis = (
        rng.standard_normal((config.visual_nuisance_dim, config.dims["visual"])) / np.sqrt(config.visual_nuisance_dim)
    ).astype(np.float32)
    share = config.visual_signal_share
    visual = np.sqrt(share) * visual_map(z_video)
    visual += np.sqrt(1 - share) * (
        rng.standard_normal((n_videos, config.visual_nuisance_dim), dtype=np.float32) @ nuisance_basis
    )
    visual += _noise(rng, visual.shape, config.feature_noise)

    text_map = _RandomMap(rng, d, config.dims["text"], config.hidden)
    low, high = np.log(config.text_noise_range[0]), np.log(config.text_noise_range[1])
    text_noise = np.exp(rng.uniform(low, high, n_videos)).astype(np.float32)[:, None]
    text = text_map(z_video) + _noise(rng, (n_videos, config.dims["text"]), text_noise)
    has_text = rng.random(n_videos) >= config.text_missing_share
    text[~has_text] = 0.0

    languages = np.array(["en", "es", "pt", "ja", "ko", "id", "fr", "de"])
    lang = languages[rng.integers(0, len(languages), n_videos)]
    descriptions = pd.Series([f"[{lg}] clip {vid}" for lg, vid in zip(lang, video_ids, strict=True)], dtype=object)
    descriptions[~has_text] = None
    music = pd.DataFrame({"music_id": music_ids, "title": [f"Simulated track {i}" for i in range(n_music)]})
    videos = pd.DataFrame({"video_id": video_ids, "music_id": music_ids[video_music], "description": descriptions})
    write_manifests(out, music, videos)
    write_music_features(out, MusicVectors(music_ids, audio.astype(np.float32), lld.astype(np.float32)))
    write_video_features(out, VideoVectors(video_ids, visual.astype(np.float32), text.astype(np.float32), has_text))
    np.savez(out / ORACLE_FILE, music_ids=music_ids, music_latent=z_music, video_ids=video_ids, video_latent=z_video)
    return {"music": n_music, "videos": n_videos, **config.dims}
