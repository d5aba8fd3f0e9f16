"""Fixtures for the component tests: kfp.local in this Python environment, and tiny data made in tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def local_runner(tmp_path_factory) -> Path:
    """kfp.local with the subprocess runner in the current environment (no venv, no pip), failing loudly."""
    from kfp import local

    root = tmp_path_factory.mktemp("kfp-local")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    return root


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
