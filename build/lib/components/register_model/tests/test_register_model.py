import json
from pathlib import Path

import pytest

from bgmrec.registry import ModelRegistry
from components.register_model.component import register_model


@pytest.mark.integration
def test_registers_and_promotes(tiny_cmvae, artifact, tmp_path):
    metrics = artifact("Metrics", "metrics.json")
    Path(metrics.path).write_text(json.dumps({"weak": {"recall@10": 0.5}}))
    summary = register_model.python_func(tiny_cmvae["weak"], metrics, str(tmp_path / "registry"), "cmvae")
    production = ModelRegistry(tmp_path / "registry").production()
    assert production["version"] == "v0001-cmvae"
    assert production["metrics"] == {"weak": {"recall@10": 0.5}}
    assert "v0001-cmvae" in summary
    assert ModelRegistry(tmp_path / "registry").load_production().name == "cmvae"
