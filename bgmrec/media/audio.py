"""Audio extractors for music (16 kHz mono signals) and the fitted standardise + PCA step of `audio_lld`.

audio_embedding (the papers' pretrained audio network: VGGish in VMCML, ResNet-on-mel in CMVAE):
- `logmel-stats` (default, no download): VGGish's own front end (25 ms Hann window, 10 ms hop, 64 mel bands
  125–7,500 Hz, log(mel + 0.01)), summarised by the mean and the standard deviation of each band over time:
  128-d. Deterministic and learned from nothing: it keeps the spectral envelope (pitch register, timbre) and how
  much each band fluctuates (rhythm, onsets), which is what a content model can align with video.
- `vggish`: the VGGish network (Hershey et al. 2017) from a torchvggish-format state dict (`audio_embedding_weights`):
  0.96 s log-mel patches (96 × 64) → 128-d per patch, averaged over patches.

audio_lld (CMVAE section 5.1: openSMILE eGeMAPS + ComParE functionals, standardised, PCA to 128):
- `opensmile-egemaps-compare`: eGeMAPSv02 (88) ⊕ ComParE_2016 (6,373) functionals = 6,461 raw values; the
  `LLDTransform` fitted on the catalog maps them to `lld_components` values and is saved, so new music is
  transformed exactly like the catalog.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np

from bgmrec.media.config import ExtractionConfig
from bgmrec.media.extractors import Extractor, register_extractor

MEL_BANDS = 64
WINDOW_S, HOP_S = 0.025, 0.010
FMIN, FMAX = 125.0, 7500.0
LOG_OFFSET = 0.01
PATCH_FRAMES = 96  # VGGish: 0.96 s patches


def _hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, as VGGish's mel_features.py: 1127 · ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hertz, np.float64) / 700.0)


@cache
def mel_matrix(sample_rate: int, fft_length: int) -> np.ndarray:
    """VGGish's triangular mel weights (fft_length // 2 + 1, 64), no area normalisation, DC bin zeroed."""
    bins_mel = _hertz_to_mel(np.linspace(0.0, sample_rate / 2, fft_length // 2 + 1))
    edges = np.linspace(_hertz_to_mel(FMIN), _hertz_to_mel(FMAX), MEL_BANDS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(
        0.0, np.minimum((bins_mel[:, None] - lower) / (centre - lower), (upper - bins_mel[:, None]) / (upper - centre))
    )
    weights[0, :] = 0.0
    return weights.astype(np.float32)


def log_mel(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """VGGish's log-mel spectrogram (numpy, as its mel_features.py): periodic Hann window of 25 ms, hop 10 ms,
    magnitude STFT, 64 mel bands 125-7,500 Hz, log(mel + 0.01). Returns (frames, 64) float32."""
    window = int(round(WINDOW_S * sample_rate))
    hop = int(round(HOP_S * sample_rate))
    fft_length = 2 ** int(np.ceil(np.log2(window)))
    signal = np.asarray(signal, np.float32)
    n = 1 + (len(signal) - window) // hop
    frames = np.lib.stride_tricks.as_strided(signal, (n, window), (signal.strides[0] * hop, signal.strides[0]))
    hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)).astype(np.float32)
    magnitude = np.abs(np.fft.rfft(frames * hann, fft_length)).astype(np.float32)
    return np.log(magnitude @ mel_matrix(sample_rate, fft_length) + LOG_OFFSET).astype(np.float32)


def _pad_min(signal: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    need = int(seconds * sample_rate)
    return signal if len(signal) >= need else np.pad(signal, (0, need - len(signal)))


class AudioExtractor(Extractor):
    def __init__(self, config: ExtractionConfig):
        self.config = config

    def settings(self) -> dict[str, Any]:
        return {"sample_rate": self.config.sample_rate, "max_audio_seconds": self.config.max_audio_seconds}

    def embed_audio(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        raise NotImplementedError


@register_extractor("audio_embedding", "logmel-stats")
class LogMelStats(AudioExtractor):
    """Mean and standard deviation over time of each of VGGish's 64 log-mel bands: 128-d, no learned weights."""

    dim = 2 * MEL_BANDS

    def __init__(self, config: ExtractionConfig):
        super().__init__(config)
        self.version = "1 (numpy VGGish front end)"

    def embed_audio(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        mel = log_mel(_pad_min(signal, sample_rate, WINDOW_S + HOP_S), sample_rate)
        return np.concatenate([mel.mean(axis=0), mel.std(axis=0)]).astype(np.float32)


def _vggish():
    """VGGish with torchvggish's parameter names (features.N / embeddings.N), 128-d output per 0.96 s patch."""
    from torch import nn

    class VGGish(nn.Module):
        def __init__(self):
            super().__init__()
            layers: list[nn.Module] = []
            channels = 1
            for spec in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
                if spec == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(channels, spec, 3, padding=1), nn.ReLU(inplace=True)]
                    channels = spec
            self.features = nn.Sequential(*layers)
            self.embeddings = nn.Sequential(
                nn.Linear(512 * 4 * 6, 4096),
                nn.ReLU(True),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Linear(4096, 128),
                nn.ReLU(True),
            )

        def forward(self, x):
            x = self.features(x)
            x = x.transpose(1, 3).transpose(1, 2).contiguous()  # (N, 6, 4, 512) as in the TF original
            return self.embeddings(x.view(x.size(0), -1))

    return VGGish()


@register_extractor("audio_embedding", "vggish")
class VGGishEmbedding(AudioExtractor):
    """VGGish from a torchvggish-format state dict; mean of the 128-d patch embeddings."""

    dim = 128

    def __init__(self, config: ExtractionConfig):
        super().__init__(config)
        from bgmrec.media.visual import _load_state_dict, _set_threads

        if not config.audio_embedding_weights:
            raise ValueError(
                "audio_embedding extractor 'vggish' needs extract.audio_embedding_weights: a torchvggish state "
                "dict (e.g. vggish-10086976.pth); none can be downloaded here"
            )
        import torch

        _set_threads(config)
        self.version = f"torch {torch.__version__}, weights {Path(config.audio_embedding_weights).name}"
        self.model = _vggish()
        self.model.load_state_dict(_load_state_dict(config.audio_embedding_weights, "vggish"), strict=True)
        self.model.eval()

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "weights": self.config.audio_embedding_weights}

    def embed_audio(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        mel = log_mel(_pad_min(signal, sample_rate, PATCH_FRAMES * HOP_S + WINDOW_S), sample_rate)
        n = len(mel) // PATCH_FRAMES
        patches = mel[: n * PATCH_FRAMES].reshape(n, 1, PATCH_FRAMES, MEL_BANDS)
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(patches))).mean(0).numpy().astype(np.float32)


@register_extractor("audio_lld", "opensmile-egemaps-compare")
class OpenSmileFunctionals(AudioExtractor):
    """openSMILE eGeMAPSv02 ⊕ ComParE_2016 functionals: 6,461 raw values per clip (before the fitted PCA)."""

    FEATURE_SETS = ("eGeMAPSv02", "ComParE_2016")

    def __init__(self, config: ExtractionConfig):
        super().__init__(config)
        self.version = f"opensmile {package_version('opensmile')}"
        self._local = threading.local()
        # The two feature sets of a clip run at the same time in a pool of two threads: openSMILE runs in C++
        # behind ctypes, which releases the GIL, so one clip takes about as long as its slower set (eGeMAPS), not
        # the sum of both, and clips from several workers keep both cores busy. Each pool thread builds its own
        # extractor for each set when it starts (building one takes ~0.3 s), so no call pays for that later.
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        names = self._jobs().submit(lambda: [s.feature_names for s in self._thread_smiles().values()]).result()
        self.dim = sum(len(n) for n in names)

    def _jobs(self) -> ThreadPoolExecutor:
        """This process's feature-set pool. A forked child makes its own: the parent's pool threads do not exist
        there, and submitting to the inherited pool would wait forever."""
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(
                max_workers=len(self.FEATURE_SETS), thread_name_prefix="opensmile", initializer=self._thread_smiles
            )
            self._pool_pid = os.getpid()
        return self._pool

    def _thread_smiles(self) -> dict[str, Any]:
        """This thread's openSMILE extractors, one per feature set (built on first use in each thread)."""
        if not hasattr(self._local, "smiles"):
            import opensmile

            self._local.smiles = {
                name: opensmile.Smile(
                    feature_set=getattr(opensmile.FeatureSet, name), feature_level=opensmile.FeatureLevel.Functionals
                )
                for name in self.FEATURE_SETS
            }
        return self._local.smiles

    def _functionals(self, feature_set: str, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        smile = self._thread_smiles()[feature_set]
        return smile.process_signal(signal, sample_rate).to_numpy(np.float32).reshape(-1)

    def embed_audio(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        signal = _pad_min(signal, sample_rate, 0.5)
        jobs = [self._jobs().submit(self._functionals, name, signal, sample_rate) for name in self.FEATURE_SETS]
        values = [job.result() for job in jobs]
        return np.nan_to_num(np.concatenate(values), nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class LLDTransform:
    """Standardise then project on the top principal components (CMVAE: openSMILE features, PCA to 128).

    z = (x − mean) / scale;  lld = z @ componentsᵀ.  Fitted once on the catalog and saved; new music reuses it.
    """

    extractor: str
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, raw: np.ndarray, n_components: int, extractor: str) -> LLDTransform:
        """Fit on the catalog's raw functionals; the output length is min(n_components, rows − 1, columns)."""
        raw = np.asarray(raw, np.float64)
        if len(raw) < 2:
            raise ValueError(f"audio_lld: cannot fit the standardise + PCA step on {len(raw)} music clip(s); need 2+")
        mean = raw.mean(axis=0)
        scale = raw.std(axis=0)
        scale[scale < 1e-8] = 1.0  # constant features stay at zero instead of dividing by zero
        z = (raw - mean) / scale
        k = int(min(n_components, len(raw) - 1, raw.shape[1]))
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        return cls(extractor, mean, scale, vt[:k])

    def apply(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(self.mean):
            raise ValueError(
                f"audio_lld: raw features have shape {raw.shape}, the saved transform expects {len(self.mean)} columns"
            )
        return (((raw - self.mean) / self.scale) @ self.components.T).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, extractor=np.array(self.extractor), mean=self.mean, scale=self.scale, components=self.components)
        return path

    @classmethod
    def load(cls, path: str | Path, extractor: str) -> LLDTransform:
        """Load a saved transform; it must come from the same extractor signature as the current config."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"audio_lld transform {path} not found: extract the catalog first (bgmrec extract) or set "
                "extract.lld_transform_path to the catalog's features/audio_lld_transform.npz"
            )
        with np.load(path) as data:
            saved = str(data["extractor"])
            if saved != extractor:
                raise ValueError(
                    f"audio_lld transform {path} was fitted for extractor {saved}, the current config "
                    f"uses {extractor}: re-extract the catalog or use the matching settings"
                )
            return cls(saved, data["mean"], data["scale"], data["components"])
