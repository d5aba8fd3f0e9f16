"""Every knob of feature extraction (params.yaml `extract:`), in one dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


def section_params(cls: type, params: dict[str, Any] | None, section: str) -> dict[str, Any]:
    """A copy of the params.yaml section `section` for the dataclass `cls`; a ValueError names unknown keys."""
    params = dict(params or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{section} params: unknown key(s) {unknown}; known keys: {sorted(known)}")
    return params


@dataclass
class ExtractionConfig:
    """Extraction settings. Empty weights paths mean "use the extractor's bundled or built-in weights"."""

    # Video frames: the papers sample 3 frames per second; long videos get at most max_frames, spread evenly.
    fps: float = 3.0
    max_frames: int = 48
    frame_size: int = 224
    # Audio: 16 kHz mono (VGGish's rate); at most max_audio_seconds from the middle of each clip.
    sample_rate: int = 16000
    max_audio_seconds: float = 30.0
    # Extractor names (see bgmrec.media.extractors.available_extractors()).
    visual: str = "efficientnet-lite0"
    text: str = "use-multilingual"
    audio_embedding: str = "logmel-stats"
    audio_lld: str = "opensmile-egemaps-compare"
    # Optional weights files / model directories for extractors that need them (resnet50, vggish, hf-local).
    visual_weights: str = ""
    text_model_path: str = ""
    audio_embedding_weights: str = ""
    # audio_lld: standardise then PCA to this many components (CMVAE: 128), capped by the catalog size.
    lld_components: int = 128
    # Saved scaler + PCA for audio_lld; empty means DATASET/features/audio_lld_transform.npz.
    lld_transform_path: str = ""
    # Frames per CNN forward pass, decoding threads, torch threads (0 = torch's default). Small batches are faster
    # on CPU: 4 frames' activations stay in cache (EfficientNet-Lite0 at 224 px: 4 frames ≈ 2× faster than 16).
    batch_size: int = 4
    workers: int = 2
    torch_threads: int = 0
    # Content-hash cache of per-file features; empty means DATASET/features/cache.
    cache_dir: str = ""
    progress: bool = True

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> ExtractionConfig:
        """Build from a params mapping (the `extract:` section); unknown keys are an error, not silently ignored."""
        config = cls(**section_params(cls, params, "extract"))
        for name in (
            "fps",
            "max_frames",
            "frame_size",
            "sample_rate",
            "max_audio_seconds",
            "batch_size",
            "workers",
            "lld_components",
        ):
            if not float(getattr(config, name)) > 0:
                raise ValueError(f"extract params: '{name}' must be positive, got {getattr(config, name)!r}")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def feature_dir(self, dataset_dir: str | Path) -> Path:
        return Path(dataset_dir) / "features"

    def cache_root(self, dataset_dir: str | Path) -> Path:
        return Path(self.cache_dir) if self.cache_dir else self.feature_dir(dataset_dir) / "cache"

    def lld_transform_file(self, dataset_dir: str | Path | None) -> Path | None:
        if self.lld_transform_path:
            return Path(self.lld_transform_path)
        return None if dataset_dir is None else self.feature_dir(dataset_dir) / "audio_lld_transform.npz"
