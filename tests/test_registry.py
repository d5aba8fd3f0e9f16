"""Model registry and promotion gate: thresholds, not-worse-than-production, production untouched on refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bgmrec.config import parse_config
from bgmrec.registry import ModelRegistry, flatten_metrics, gate
from bgmrec.steps import gate_step

pytestmark = pytest.mark.unit

METRICS = {"weak": {"recall@10": 0.40, "ips_recall@10": 0.30, "n_videos": 50}, "strong": {"recall@10": 0.20}}


def test_flatten_metrics_keeps_numbers_under_dotted_names():
    flat = flatten_metrics({**METRICS, "note": "text"})
    assert flat == {"weak.recall@10": 0.40, "weak.ips_recall@10": 0.30, "weak.n_videos": 50.0, "strong.recall@10": 0.20}


def test_gate_passes_only_when_every_threshold_is_met():
    assert gate(METRICS, {"weak.recall@10": 0.35, "strong.recall@10": 0.2}, None, 0.0).passed
    refused = gate(METRICS, {"weak.recall@10": 0.35, "strong.recall@10": 0.25}, None, 0.0)
    assert not refused.passed
    assert refused.reasons == ["strong.recall@10: 0.2000 is below the threshold 0.2500"]


def test_gate_refuses_a_candidate_worse_than_production_beyond_the_tolerance():
    thresholds = {"weak.recall@10": 0.1}
    production = {"weak": {"recall@10": 0.45}}
    assert gate(METRICS, thresholds, production, tolerance=0.05).passed  # 0.40 >= 0.45 - 0.05
    refused = gate(METRICS, thresholds, production, tolerance=0.01)
    assert not refused.passed and "worse than production's 0.4500" in refused.reasons[0]


def test_gate_refuses_what_it_cannot_check():
    assert not gate(METRICS, {}, None, 0.0).passed
    missing = gate(METRICS, {"weak.recall@50": 0.1}, None, 0.0)
    assert not missing.passed and "missing from the candidate's metrics" in missing.reasons[0]


def test_register_promote_and_production(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.production() is None
    first = registry.register(checkpoint, METRICS, "cmvae")
    second = registry.register(checkpoint, METRICS, "vmcml")
    assert (first, second) == ("v0001-cmvae", "v0002-vmcml")
    assert registry.versions() == [first, second]
    assert (registry.versions_dir / first / "model.pt").read_bytes() == b"weights"
    registry.promote(second)
    record = registry.production()
    assert record["version"] == second and record["model_name"] == "vmcml" and record["metrics"] == METRICS
    assert json.loads((registry.root / "production.json").read_text())["checkpoint"].endswith("model.pt")
    with pytest.raises(KeyError, match="v0009-x"):
        registry.promote("v0009-x")


def test_gate_step_promotes_on_pass_and_leaves_production_on_refusal(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    registry_dir = tmp_path / "registry"
    metrics_json = tmp_path / "metrics.json"
    metrics_json.write_text(json.dumps(METRICS))
    passed = gate_step(metrics_json, registry_dir, {"weak.recall@10": 0.3}, 0.0, "cmvae", checkpoint)
    assert passed["passed"] and passed["version"] == "v0001-cmvae"
    worse = {"weak": {"recall@10": 0.31}}
    metrics_json.write_text(json.dumps(worse))
    refused = gate_step(metrics_json, registry_dir, {"weak.recall@10": 0.3}, 0.05, "cmvae", checkpoint)
    assert not refused["passed"] and refused["version"] is None
    assert refused["production"] == "v0001-cmvae"
    assert ModelRegistry(registry_dir).production()["version"] == "v0001-cmvae"
    assert ModelRegistry(registry_dir).versions() == ["v0001-cmvae"]


@pytest.mark.slow
def test_load_production_returns_the_promoted_model(tiny_dataset, tmp_path):
    import numpy as np

    from bgmrec.steps import train_step

    config = parse_config({"models": {"vmcml": {"epochs": 1, "progress": False}}, "gate": {"model": "vmcml"}})
    trained = train_step(tiny_dataset, "weak", "vmcml", config, tmp_path / "run")
    registry = ModelRegistry(tmp_path / "registry")
    registry.promote(registry.register(trained["checkpoint"], METRICS, "vmcml"))
    model = registry.load_production()
    x = np.ones((2, model.dims["visual"]), np.float32)
    assert model.embed_videos(x).shape[0] == 2

    # Relocatable: every path the registry records is relative to its root, so a copy (a backup restored, the
    # volume mounted at /data in a pod) serves and gates as before, with the original gone.
    record = json.loads((registry.root / "production.json").read_text())
    assert not Path(record["checkpoint"]).is_absolute()
    moved = ModelRegistry(shutil.move(str(registry.root), tmp_path / "elsewhere" / "registry"))
    again = moved.load_production()
    assert np.allclose(again.embed_videos(x), model.embed_videos(x))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(METRICS))
    decision = gate_step(metrics, moved.root, {"weak.recall@10": 0.1}, 0.0, "vmcml", trained["checkpoint"])
    # the same checkpoint again (a re-run): no second copy, the registered version is promoted
    assert decision["passed"] and decision["version"] == "v0001-vmcml" and moved.versions() == ["v0001-vmcml"]
    assert moved.production()["checkpoint"] == "versions/v0001-vmcml/model.pt"


@pytest.mark.parametrize(
    ("thresholds", "tolerance", "metrics", "reason"),
    [
        ({"weak.recall@10": float("nan")}, 0.0, METRICS, "threshold weak.recall@10: nan is not a finite number"),
        ({"weak.recall@10": float("inf")}, 0.0, METRICS, "threshold weak.recall@10: inf is not a finite number"),
        ({"weak.recall@10": "0.3"}, 0.0, METRICS, "threshold weak.recall@10: '0.3' is not a finite number"),
        ({"weak.recall@10": True}, 0.0, METRICS, "threshold weak.recall@10: True is not a finite number"),
        ({"weak.recall@10": 0.1}, float("nan"), METRICS, "tolerance: nan is not a finite number"),
        ({"weak.recall@10": 0.1}, 0.0, {"weak": {"recall@10": float("nan")}}, "the candidate's value is nan"),
    ],
)
def test_gate_refuses_what_is_not_a_finite_number(thresholds, tolerance, metrics, reason):
    decision = gate(metrics, thresholds, None, tolerance)
    assert not decision.passed and any(reason in r for r in decision.reasons), decision.reasons


def test_bgmrec_gate_refusal_has_its_own_exit_status_and_leaves_production(tmp_path):
    from typer.testing import CliRunner

    from bgmrec.cli import GATE_REFUSED_EXIT, app

    registry = ModelRegistry(tmp_path / "registry")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    registry.promote(registry.register(checkpoint, METRICS, "cmvae"))
    production = (registry.root / "production.json").read_bytes()
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"weak": {"recall@1": NaN, "recall@5": 0.9}}')
    args = ["gate", "--metrics", str(metrics), "--checkpoint", str(checkpoint), "--model", "cmvae",
            "--registry", str(registry.root), "--out", str(tmp_path / "gate.json")]
    refused = CliRunner().invoke(app, [*args, "--params", str(tmp_path / "none.yaml")])
    assert refused.exit_code == 1 and "configuration file not found" in refused.output
    params = tmp_path / "params.yaml"
    params.write_text("gate:\n  thresholds:\n    weak.recall@1: 0.3\n")
    refused = CliRunner().invoke(app, [*args, "--params", str(params)])
    assert refused.exit_code == GATE_REFUSED_EXIT, refused.output
    assert "weak.recall@1: the candidate's value is nan" in refused.output
    assert (registry.root / "production.json").read_bytes() == production
    assert json.loads((tmp_path / "gate.json").read_text())["passed"] is False
    params.write_text("gate:\n  thresholds:\n    weak.recall@1: .nan\n")
    bad = CliRunner().invoke(app, [*args, "--params", str(params)])
    assert bad.exit_code == 1 and "gate.thresholds" in bad.output
    assert (registry.root / "production.json").read_bytes() == production
