"""Shared fixtures: small simulated datasets made once per session in a temp dir."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# BentoML's in-process /metrics reads prometheus_client's multiprocess files: the folder must exist before
# prometheus_client is first imported (tests/test_serving.py).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bgmrec-prometheus-"))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A tiny simulated dataset in the contract (40 music, ~480 videos, small vectors)."""
    from bgmrec.data.simulate import simulate

    out = tmp_path_factory.mktemp("tiny")
    simulate("tiny", seed=0, out=out)
    return out
