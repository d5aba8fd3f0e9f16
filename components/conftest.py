"""Fixtures for the component tests: kfp.local in this Python environment, and tiny data made in tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
def tiny_dataset_dir(tmp_path_factory) -> Path:
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
    """A catalog of real tones, a production model and the serving catalog (components/testing.py); treat the
    directories as read-only — tests that write copy the registry first."""
    from components.testing import make_music_world

    return make_music_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def registry_copy(music_world, tmp_path) -> Path:
    """A private copy of the world's registry (production model + catalog) for tests that change it."""
    import shutil

    return Path(shutil.copytree(music_world.registry_dir, tmp_path / "registry"))


@pytest.fixture(scope="session")
def new_music_batch(tmp_path_factory) -> Path:
    """A clean batch of two new tones with a manifest giving their titles."""
    from components.testing import write_tone

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
def tiny_cmvae(tiny_dataset_dir, fast_params_path, tmp_path_factory) -> dict:
    """CMVAE trained for one epoch on the tiny dataset's weak and strong splits by the train_model component."""
    from kfp import dsl

    from components.train_model.component import train_model

    models = {}
    for split_kind in ("weak", "strong"):
        model = dsl.Model(name=split_kind, uri=str(tmp_path_factory.mktemp("cmvae") / split_kind))
        train_model.python_func(str(tiny_dataset_dir), "cmvae", split_kind, "", str(fast_params_path), model)
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
