"""Test support for the pipeline tests: a small catalog of REAL music (FFmpeg-made tones) extracted with the
real extractors, a production model trained on it, and the serving catalog built from it — so the
new-music-batch pipeline can be exercised end to end on audio files.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TONE_SECONDS = 2.0


def _ffmpeg(*args: str) -> None:
    from bgmrec.media.decode import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=60)


def write_clip(path: Path, hue: int, seconds: float = 1.0) -> Path:
    """A short synthetic video (FFmpeg's testsrc2, hue-shifted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=96x96:rate=6:duration={seconds}", "-vf", f"hue=h={hue}",
            "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", str(path))
    return path


def write_tone(path: Path, frequency: float, seconds: float = TONE_SECONDS) -> Path:
    """A mono sine tone with a little tremolo (so openSMILE's functionals are not degenerate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", f"sine=frequency={frequency}:duration={seconds}:sample_rate=16000",
            "-af", f"tremolo=f={2 + frequency / 200:.2f}:d=0.5", "-ac", "1", str(path))
    return path


@dataclass(frozen=True)
class MusicWorld:
    dataset_dir: Path
    registry_dir: Path
    music_ids: list[str]


def make_music_world(root: Path, n_music: int = 6, videos_per_music: int = 4, model: str = "vmcml") -> MusicWorld:
    """Real tones → music features with the real extractors (and the saved audio_lld scaler + PCA, fitted here
    on the catalog as `extract_dataset` does) + simulated video vectors (the batch pipeline never looks at
    videos' content here, and a CNN pass would triple the time) → a 1-epoch model promoted to production → the serving
    catalog (bgmrec.steps.build_catalog_step)."""
    from bgmrec.data.contract import (
        MusicVectors,
        VideoVectors,
        load_dataset,
        write_manifests,
        write_music_features,
        write_video_features,
    )
    from bgmrec.data.splits import make_split
    from bgmrec.media.audio import LLDTransform
    from bgmrec.media.config import ExtractionConfig
    from bgmrec.media.decode import decode_audio
    from bgmrec.media.extract import get_extractor
    from bgmrec.models import create_model
    from bgmrec.models.base import TrainingData
    from bgmrec.registry import ModelRegistry
    from bgmrec.steps import build_catalog_step

    dataset_dir, registry_dir = root / "dataset", root / "registry"
    music_ids = [f"m{i:02d}" for i in range(n_music)]
    paths = [write_tone(dataset_dir / "audio" / f"{m}.wav", 220.0 * 1.25**i) for i, m in enumerate(music_ids)]
    config = ExtractionConfig(progress=False)
    embedder, lld = get_extractor("audio_embedding", config), get_extractor("audio_lld", config)
    signals = [decode_audio(p, config.sample_rate, config.max_audio_seconds) for p in paths]
    audio_embedding = np.stack([embedder.embed_audio(x, config.sample_rate) for x in signals])
    raw = np.stack([lld.embed_audio(x, config.sample_rate) for x in signals])
    transform = LLDTransform.fit(raw, config.lld_components, lld.signature())
    transform.save(config.lld_transform_file(dataset_dir))
    write_music_features(dataset_dir, MusicVectors(np.array(music_ids, object), audio_embedding,
                                                   transform.apply(raw)))

    rng = np.random.default_rng(0)
    video_music = np.repeat(np.arange(n_music), videos_per_music)
    video_ids = np.array([f"v{i:03d}" for i in range(len(video_music))], object)
    style = rng.normal(size=(n_music, 8))
    # Visual vectors as long as the real visual extractor's, so batch videos can be scored by the model.
    visual_dim = get_extractor("visual", config).dim
    noise = 0.3 * rng.normal(size=(len(video_music), visual_dim))
    visual = style[video_music] @ rng.normal(size=(8, visual_dim)) + noise
    text = np.zeros((len(video_music), 8), np.float32)
    write_video_features(dataset_dir, VideoVectors(video_ids, visual.astype(np.float32), text,
                                                   np.zeros(len(video_music), bool)))
    music = pd.DataFrame({"music_id": music_ids, "title": [f"Tone {i}" for i in range(n_music)],
                          "audio_path": [f"audio/{m}.wav" for m in music_ids]})
    videos = pd.DataFrame({"video_id": video_ids, "music_id": [music_ids[i] for i in video_music],
                           "description": [None] * len(video_music)})
    write_manifests(dataset_dir, music, videos)

    dataset = load_dataset(dataset_dir)
    recommender = create_model(model, {"epochs": 1, "progress": False, "batch_size": 8})
    recommender.fit(TrainingData(dataset, make_split(dataset, "weak", seed=0)))
    checkpoint = recommender.save(root / "model.pt")
    registry = ModelRegistry(registry_dir)
    registry.promote(registry.register(checkpoint, {"weak": {"test": {"recall@10": 0.0}}}, model))
    build_catalog_step(dataset_dir, registry_dir)
    return MusicWorld(dataset_dir, registry_dir, music_ids)
