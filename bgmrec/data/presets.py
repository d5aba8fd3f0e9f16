"""The simulator's presets: the shape of each paper's dataset and the difficulty knobs calibrated against it.

- tt150k: CMVAE's TT-150k (Table 1: 3,003 music, 146,351 videos, 49 ± 57 videos per music). usage_share and
  asymmetry calibrated so that CMVAE's IPS Recall@10 matches its Table 2 row (0.2606 weak, 0.1610 strong; Random
  0.0959); video_noise 2.0 keeps the latent oracle's IPS Recall@10 near 0.64 (at most 0.7).
- msvd: VMCML's MSVD (section 4.1, Table 1: 390 music, 265 seen with 500 videos each split 20:1:4, 125 unseen
  with 140 videos each). video_noise and usage_share calibrated so that VMCML's (visual-only) Recall@10 matches
  its Table 2 row (0.4409 seen, 0.1329 unseen; Random 0.0377 / 0.0800) under the `seen-unseen` split.
- tiny (40 music), small (300 music): easy sets for tests and demos (symmetric latents, no usage component).

The calibration procedure and its figures: bench/calibrate_simulator.py, bench/results/calibration.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# The difficulty knobs (bgmrec.data.simulate describes what each one does).
KNOBS = ("video_noise", "visual_signal_share", "text_noise", "asymmetry", "usage_share")


@dataclass(frozen=True)
class SimulationConfig:
    """Shape and knobs of a simulated dataset. Seen music get `videos_per_music` videos each when it is set, else
    Gamma-distributed counts; `n_unseen_music` more music get `unseen_videos_per_music` each."""

    n_music: int
    target_videos: int
    popularity_mean: float = 49.0
    popularity_std: float = 57.0
    min_videos: int = 3
    max_videos: int = 219
    videos_per_music: int = 0
    n_unseen_music: int = 0
    unseen_videos_per_music: int = 0
    dims: dict[str, int] = field(
        default_factory=lambda: {"visual": 2048, "text": 768, "audio_embedding": 128, "audio_lld": 128}
    )
    latent_dim: int = 12
    video_noise: float = 0.9
    visual_signal_share: float = 0.25
    text_noise: float = 0.5
    asymmetry: float = 0.0
    usage_share: float = 0.0
    visual_nuisance_dim: int = 32
    music_nuisance_dim: int = 8
    text_missing_share: float = 0.3
    feature_noise: float = 0.1
    hidden: int = 256

    def scaled(self, factor: float) -> SimulationConfig:
        """The same music and knobs with `factor` times the videos (at least `min_videos` per music)."""
        if factor <= 0:
            raise ValueError(f"scale must be positive, got {factor}")
        if factor == 1:
            return self
        return replace(
            self,
            target_videos=max(round(self.target_videos * factor), self.n_music * self.min_videos),
            popularity_mean=self.popularity_mean * factor,
            popularity_std=self.popularity_std * factor,
            max_videos=max(round(self.max_videos * factor), self.min_videos),
            videos_per_music=_scaled_count(self.videos_per_music, factor, self.min_videos),
            unseen_videos_per_music=_scaled_count(self.unseen_videos_per_music, factor, 1),
        )


def _scaled_count(count: int, factor: float, minimum: int) -> int:
    """A fixed per-music video count times the scale factor, at least `minimum` (0 stays 0: not used)."""
    return max(round(count * factor), minimum) if count else 0


PRESETS: dict[str, SimulationConfig] = {
    "tiny": SimulationConfig(
        n_music=40,
        target_videos=480,
        popularity_mean=12,
        popularity_std=10,
        max_videos=40,
        dims={"visual": 64, "text": 32, "audio_embedding": 16, "audio_lld": 16},
        hidden=64,
    ),
    "small": SimulationConfig(n_music=300, target_videos=6000, popularity_mean=20, popularity_std=22, max_videos=100),
    "tt150k": SimulationConfig(
        n_music=3003,
        target_videos=146351,
        # calibrated: asymmetry, usage_share (bench/calibrate_simulator.py); set by hand: the rest
        video_noise=2.0,
        visual_signal_share=0.3,
        text_noise=1.0,
        asymmetry=0.69,
        usage_share=0.78,
    ),
    "msvd": SimulationConfig(
        n_music=265,
        target_videos=265 * 500,
        videos_per_music=500,
        n_unseen_music=125,
        unseen_videos_per_music=140,
        # R(2+1)D-18 and ResNet-18 (on mel spectrograms) pooled features are 512 wide (VMCML section 3.3)
        dims={"visual": 512, "text": 768, "audio_embedding": 512, "audio_lld": 128},
        # calibrated: video_noise, usage_share (bench/calibrate_simulator.py); set by hand: the rest
        video_noise=1.632,
        visual_signal_share=0.3,
        text_noise=1.0,
        asymmetry=0.5,
        usage_share=0.752,
    ),
}
