"""Fixtures shared by the component tests (components/*/tests) and the tests in tests/ (unit, model, integration,
reliability, deployment):
kfp.local in this Python environment, tiny data made in tmp dirs, and a small catalog of REAL music (FFmpeg-made
tones) extracted with the real extractors, with a production model trained on it and the serving catalog built
from it, so the new-music-batch pipeline can be exercised end to end on audio files.

It lives at the repository root, outside every installed package: none of it ships in the wheel.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# BentoML's in-process /metrics reads prometheus_client's multiprocess files: the folder must exist before
# prometheus_client is first imported (tests/integration/test_serving.py).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bgmrec-prometheus-"))

PROJECT_ROOT = Path(__file__).resolve().parent

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
    from bgmrec.train import fit

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
    fit(recommender, TrainingData(dataset, make_split(dataset, "weak", seed=0)))
    checkpoint = recommender.save(root / "model.pt")
    registry = ModelRegistry(registry_dir)
    registry.promote(registry.register(checkpoint, {"weak": {"test": {"recall@10": 0.0}}}, model))
    build_catalog_step(dataset_dir, registry_dir)
    return MusicWorld(dataset_dir, registry_dir, music_ids)


@pytest.fixture(scope="session")
def local_pipeline_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kfp-local")


@pytest.fixture
def local_runner(local_pipeline_root) -> Path:
    """kfp.local with the subprocess runner in the current environment (no venv, no pip), failing loudly;
    task outputs are cached (gate and register opt out), so a second run with new thresholds reruns only them.
    Initialised per test: `bgmrec trigger` re-initialises kfp.local with its own settings."""
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(local_pipeline_root),
               raise_on_error=True, enable_caching=True)
    return local_pipeline_root


@pytest.fixture(scope="session")
def params_path() -> Path:
    """The project's params.yaml: components read every knob from it."""
    return PROJECT_ROOT / "params.yaml"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A tiny simulated dataset in the contract (40 music, ~480 videos, small vectors); treat as read-only."""
    from bgmrec.data.simulate import simulate

    out = tmp_path_factory.mktemp("tiny")
    simulate("tiny", seed=0, out=out)
    return out


@pytest.fixture
def artifact(tmp_path):
    """Factory of real KFP artifacts (Dataset, Model, Metrics, Markdown) with local URIs in tmp_path, for calling
    a component's python_func directly."""
    from kfp import dsl

    def make(kind: str, name: str):
        return getattr(dsl, kind)(name=name, uri=str(tmp_path / name))

    return make


@pytest.fixture(scope="session")
def music_world(tmp_path_factory):
    """A catalog of real tones, a production model and the serving catalog (`make_music_world`); treat the
    directories as read-only — tests that write copy the registry first."""
    return make_music_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def registry_copy(music_world, tmp_path) -> Path:
    """A private copy of the world's registry (production model + catalog) for tests that change it."""
    import shutil

    return Path(shutil.copytree(music_world.registry_dir, tmp_path / "registry"))


@pytest.fixture(scope="session")
def new_music_batch(tmp_path_factory) -> Path:
    """A clean batch of two new tones with a manifest giving their titles."""
    batch = tmp_path_factory.mktemp("batch")
    write_tone(batch / "fresh-a.wav", 300.0)
    write_tone(batch / "fresh-b.wav", 610.0)
    (batch / "manifest.csv").write_text("music_id,title\nfresh-a,Fresh A\nfresh-b,Fresh B\n")
    return batch


@pytest.fixture(scope="session")
def world_feature_repo(music_world, tmp_path_factory) -> Path:
    """A Feast repo (the project's definitions) applied and materialized with the world's features by the
    feast_apply component itself (components/feast_apply/tests checks the result)."""
    import shutil

    from components.feast_apply.component import feast_apply

    repo = tmp_path_factory.mktemp("feast")
    for name in ("definitions.py", "feature_store.yaml"):
        shutil.copy(PROJECT_ROOT / "features" / name, repo / name)
    params = str(PROJECT_ROOT / "params.yaml")
    assert feast_apply.python_func(str(music_world.dataset_dir), str(repo), params) == str(repo)
    return repo


@pytest.fixture(scope="session")
def fast_params_path(tmp_path_factory) -> Path:
    """params.yaml with every model trained for one epoch (tests check behaviour, not quality)."""
    import yaml

    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for model_params in params.get("models", {}).values():
        model_params.update(epochs=1, patience=1)
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="session")
def tiny_cmvae(tiny_dataset, fast_params_path, tmp_path_factory) -> dict:
    """CMVAE trained for one epoch on the tiny dataset's weak and strong splits by the train_model component."""
    from kfp import dsl

    from components.train_model.component import train_model

    models = {}
    for split_kind in ("weak", "strong"):
        model = dsl.Model(name=split_kind, uri=str(tmp_path_factory.mktemp("cmvae") / split_kind))
        train_model.python_func(str(tiny_dataset), "cmvae", split_kind, "", str(fast_params_path), model)
        models[split_kind] = model
    return models


@pytest.fixture(scope="session")
def extracted_batch(new_music_batch, music_world, params_path, tmp_path_factory):
    """The clean batch, ingested and extracted by the components (shared by the later batch steps' tests)."""
    from kfp import dsl

    from components.extract_music_batch.component import extract_music_batch
    from components.ingest_music_batch.component import ingest_music_batch

    root = tmp_path_factory.mktemp("extracted")
    batch = dsl.Dataset(name="batch", uri=str(root / "batch"))
    assert ingest_music_batch.python_func(str(new_music_batch), str(music_world.registry_dir), str(params_path),
                                          batch).passed
    features = dsl.Dataset(name="features", uri=str(root / "features"))
    extracted = extract_music_batch.python_func(batch, str(music_world.dataset_dir), str(params_path), features)
    return {"batch": batch, "features": features, "extracted": extracted}


@pytest.fixture(scope="session")
def tone_writer():
    """`write_tone(path, frequency, seconds=2.0)`: a real audio file made by FFmpeg."""
    return write_tone


@pytest.fixture(scope="session")
def clip_writer():
    """`write_clip(path, hue, seconds=1.0)`: a real video file made by FFmpeg."""
    return write_clip


@dataclass
class ServerProcess:
    """A server started the way a user starts it (`bgmrec serve ...`, `bentoml serve ...`): its own process group,
    a free port, its output in a log file."""

    process: subprocess.Popen
    url: str
    log_path: Path

    @classmethod
    def start(cls, command: Sequence[str], env: dict[str, str], log_path: Path,
              cwd: Path | None = None) -> ServerProcess:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with log_path.open("w") as log:
            process = subprocess.Popen([*command, "--port", str(port)], cwd=cwd, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return cls(process, f"http://127.0.0.1:{port}", log_path)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]

    def wait_ready(self, timeout_s: float = 180.0) -> str:
        """The base URL once /readyz answers 200; fails at once, with the log, if the server exits."""
        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server was not ready after {timeout_s:g} s: {self.log_tail()}")
            time.sleep(0.5)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the whole process group (BentoML's workers included), SIGKILL if it outlives `timeout_s`."""
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def start_server():
    """`start_server(command, env, log_path, cwd=None)`: a `ServerProcess` on a free port (`--port` is appended);
    call `.wait_ready()` for its URL and `.stop()` when done."""
    return ServerProcess.start
