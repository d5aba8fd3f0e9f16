"""Simulated datasets with planted, learnable-but-not-trivial structure and a latent oracle.

Neither paper's data is public, so models are measured on data whose ceiling is known. A preset
(`bgmrec.data.presets`) fixes the shape (music, videos per music, seen/unseen music, feature widths) and five
difficulty knobs; the generative story, per music m and video v of m:

- Audible style s_m ~ N(0, I_d). The music features see only s_m: audio_embedding through factors [0, 3/4·d) plus
  music-specific nuisance, audio_lld through factors [1/4·d, d), each through its own random nonlinear map.
- Asymmetry (knob `asymmetry` = a): the videos do not respond to s_m itself but to A(s_m) = √(1-a)·s_m +
  √a·G(s_m), where G is a random smooth nonlinear function of a projection of s_m onto half of its dimensions: a
  lossy, different function, so music that differ only in the discarded directions look alike to videos, and a
  video → music mapping must be learnt, not copied.
- Usage (knob `usage_share` = ρ): a music's videos also follow its usage u_m ~ N(0, I_d) (the trends and memes it
  is used for), which its audio does not reveal. The music's video-side centre is c_m = √(1-ρ)·A(s_m) + √ρ·u_m
  (columns standardised). Usage is learnable from a music's training videos (seen music, weak split) and
  unknowable for new music (strong split, VMCML's unseen set): it sets the seen/unseen gap.
- Signal-to-noise (knob `video_noise` = σ): a video's latent is z_v = c_m + σ·ε, the uploader's own take.
- Visual (knob `visual_signal_share` = λ): z_v and a nuisance latent n_v (scene, lighting, people: content
  unrelated to music) enter one random tanh network, z_v with a share λ of the input variance. The nuisance is
  entangled with the signal in every output, so no linear projection removes it.
- Text (knob `text_noise`): a description embeds z_v blurred by a per-video latent noise, log-uniform over a
  decade around `text_noise` (descriptions differ in how much they say about the music), and a share of videos
  have none (text null): fusion that weights modalities by reliability (CMVAE's PoE) can pay off.
- The oracle ranks music by -||z_v - c_m||², the Bayes ranking given the true latents (oracle.npz).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

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
from bgmrec.data.oracle import write_oracle
from bgmrec.data.presets import KNOBS, PRESETS, SimulationConfig
from bgmrec.data.seen_unseen import MUSIC_SET_COLUMN
from bgmrec.data.splits import SPLIT_KINDS, split_path

CHUNK = 16384  # rows of video features generated at a time (bounds the temporaries at the tt150k scale)
LOSSY_LENGTHSCALE = 1.5  # of the asymmetry's random function G, in units of the style's standard deviation


def popularity_counts(config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Videos per (seen) music.

    Fixed when `videos_per_music` is set (MSVD: 500 per seen music). Otherwise clipped Gamma(k, θ) quantiles of
    fixed uniforms, k from mean/std and θ solved so the total hits `target_videos` (CMVAE Table 1: 49 ± 57).
    """
    if config.videos_per_music:
        return np.full(config.n_music, config.videos_per_music, dtype=np.int64)
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


def music_plan(config: SimulationConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Videos per music and which music are unseen (the seen music first, then the unseen ones)."""
    seen = popularity_counts(config, rng)
    unseen = np.full(config.n_unseen_music, config.unseen_videos_per_music, dtype=np.int64)
    counts = np.concatenate([seen, unseen])
    return counts, np.arange(len(counts)) >= len(seen)


class _RandomMap:
    """A fixed random 2-layer tanh network from latent factors to a feature vector (one per modality)."""

    def __init__(self, rng: np.random.Generator, n_in: int, n_out: int, hidden: int):
        self.w1 = (rng.standard_normal((n_in, hidden)) * (3.0 / np.sqrt(n_in))).astype(np.float32)
        self.b1 = (rng.standard_normal(hidden) * 0.5).astype(np.float32)
        self.w2 = (rng.standard_normal((hidden, n_out)) / np.sqrt(hidden)).astype(np.float32)
        self.out_std: float | None = None

    def __call__(self, z: np.ndarray) -> np.ndarray:
        out = np.tanh(z.astype(np.float32) @ self.w1 + self.b1) @ self.w2
        if self.out_std is None:  # fixed on the first call, so chunks of one modality share one scale
            self.out_std = float(out.std()) + 1e-8
        return out / self.out_std


def _standardise(x: np.ndarray) -> np.ndarray:
    """Each column to mean 0, variance 1."""
    return ((x - x.mean(0)) / (x.std(0) + 1e-8)).astype(np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, int], scale: float | np.ndarray) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.asarray(scale, dtype=np.float32)


def preset_config(
    preset: str, scale: float = 1.0, dims: dict[str, int] | None = None, knobs: dict[str, float] | None = None
) -> SimulationConfig:
    """A preset's configuration with the number of videos scaled and feature widths or knobs overridden."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}', expected one of {', '.join(PRESETS)}")
    unknown = set(knobs or {}) - set(KNOBS)
    if unknown:
        raise ValueError(f"unknown knob(s) {', '.join(sorted(unknown))}; the knobs are {', '.join(KNOBS)}")
    config = PRESETS[preset].scaled(scale)
    if dims:
        config = replace(config, dims={**config.dims, **dims})
    return replace(config, **(knobs or {}))


def music_centres(config: SimulationConfig, style: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """c_m = √(1-ρ)·A(s_m) + √ρ·u_m with A(s) = √(1-a)·s + √a·G(s) and G lossy (module docstring)."""
    d = config.latent_dim
    kept = max(1, d // 2)
    projection = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :kept].astype(np.float32)
    # G: a draw from a Gaussian process with a squared-exponential kernel (random Fourier features) of the kept
    # directions; at lengthscale 1.5 a linear map explains about a quarter of its variance
    frequencies = rng.standard_normal((kept, config.hidden)) / LOSSY_LENGTHSCALE
    phases = rng.uniform(0, 2 * np.pi, config.hidden)
    weights = rng.standard_normal((config.hidden, d))
    lossy = _standardise(np.cos(style @ projection @ frequencies + phases) @ weights)
    a, rho = config.asymmetry, config.usage_share
    responded = _standardise(np.sqrt(1 - a) * style + np.sqrt(a) * lossy)
    usage = rng.standard_normal(style.shape).astype(np.float32)
    return _standardise(np.sqrt(1 - rho) * responded + np.sqrt(rho) * usage)


def simulate(
    preset: str,
    seed: int,
    out: str | Path,
    dims: dict[str, int] | None = None,
    scale: float = 1.0,
    knobs: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Write a simulated dataset in the contract (plus oracle.npz) to `out`; returns its sizes and knobs.

    `scale` multiplies the number of videos (same music, same knobs): a reduced copy of a preset.
    """
    config = preset_config(preset, scale, dims, knobs)
    rng = np.random.default_rng(seed)
    out = Path(out)
    d = config.latent_dim
    counts, unseen = music_plan(config, rng)
    n_music, n_videos = len(counts), int(counts.sum())
    music_ids = np.array([f"m{i:05d}" for i in range(n_music)])
    video_ids = np.array([f"v{i:07d}" for i in range(n_videos)])
    video_music = np.repeat(np.arange(n_music), counts)
    rng.shuffle(video_music)

    style = rng.standard_normal((n_music, d)).astype(np.float32)
    centre = music_centres(config, style, rng)
    z_video = centre[video_music] + _noise(rng, (n_videos, d), config.video_noise)

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
    audio = audio_map(np.concatenate([style[:, audio_factors], music_nuisance], 1))
    audio += _noise(rng, audio.shape, config.feature_noise)
    lld = lld_map(style[:, lld_factors]) + _noise(rng, (n_music, config.dims["audio_lld"]), config.feature_noise)

    k = config.visual_nuisance_dim
    share = config.visual_signal_share
    # each block scaled so the signal carries the share λ of the visual map's input variance (z_v has variance
    # 1 + σ² per dimension, the nuisance 1)
    signal_gain = np.sqrt(share * (d + k) / d / (1 + config.video_noise**2))
    nuisance_gain = np.sqrt((1 - share) * (d + k) / k)
    visual_map = _RandomMap(rng, d + k, config.dims["visual"], config.hidden)
    text_map = _RandomMap(rng, d, config.dims["text"], config.hidden)
    low, high = np.log(config.text_noise / np.sqrt(10)), np.log(config.text_noise * np.sqrt(10))
    text_blur = np.exp(rng.uniform(low, high, n_videos)).astype(np.float32)[:, None]
    has_text = rng.random(n_videos) >= config.text_missing_share
    visual = np.empty((n_videos, config.dims["visual"]), np.float32)
    text = np.empty((n_videos, config.dims["text"]), np.float32)
    for start in range(0, n_videos, CHUNK):
        rows = slice(start, start + CHUNK)
        n = len(z_video[rows])
        nuisance = rng.standard_normal((n, k), dtype=np.float32)
        visual[rows] = visual_map(np.concatenate([signal_gain * z_video[rows], nuisance_gain * nuisance], 1))
        visual[rows] += _noise(rng, (n, config.dims["visual"]), config.feature_noise)
        blurred = (z_video[rows] + _noise(rng, (n, d), text_blur[rows])) / np.sqrt(1 + config.video_noise**2)
        text[rows] = text_map(blurred) + _noise(rng, (n, config.dims["text"]), config.feature_noise)
    text[~has_text] = 0.0

    languages = np.array(["en", "es", "pt", "ja", "ko", "id", "fr", "de"])
    lang = languages[rng.integers(0, len(languages), n_videos)]
    descriptions = pd.Series([f"[{lg}] clip {vid}" for lg, vid in zip(lang, video_ids, strict=True)], dtype=object)
    descriptions[~has_text] = None
    music = pd.DataFrame({"music_id": music_ids, "title": [f"Simulated track {i}" for i in range(n_music)]})
    if config.n_unseen_music:
        music[MUSIC_SET_COLUMN] = np.where(unseen, "unseen", "seen")
    videos = pd.DataFrame({"video_id": video_ids, "music_id": music_ids[video_music], "description": descriptions})
    # splits saved beside an earlier dataset in this directory do not belong to the new one
    for kind in SPLIT_KINDS:
        split_path(out, kind).unlink(missing_ok=True)
    write_manifests(out, music, videos)
    write_music_features(out, MusicVectors(music_ids, audio.astype(np.float32), lld.astype(np.float32)))
    write_video_features(out, VideoVectors(video_ids, visual, text, has_text))
    write_oracle(out, music_ids, centre, style, video_ids, z_video)
    return {
        "music": n_music,
        "unseen_music": int(unseen.sum()),
        "videos": n_videos,
        **config.dims,
        "knobs": {name: getattr(config, name) for name in KNOBS},
    }
