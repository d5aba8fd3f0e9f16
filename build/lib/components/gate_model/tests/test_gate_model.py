import json

import pytest

from components.gate_model.component import gate_model


@pytest.fixture
def candidate_metrics(artifact):
    metrics = artifact("Metrics", "metrics.json")
    with open(metrics.path, "w") as f:
        json.dump({"weak": {"recall@10": 0.40}, "strong": {"ips_recall@10": 0.30}}, f)
    return metrics


def _production(registry, recall: float, tmp_path):
    from bgmrec.registry import ModelRegistry

    checkpoint = tmp_path / "prod.pt"
    checkpoint.write_bytes(b"checkpoint")
    registry = ModelRegistry(registry)
    registry.promote(registry.register(checkpoint, {"weak": {"recall@10": recall}}, "cmvae"))


@pytest.mark.unit
def test_passes_when_thresholds_met_and_no_production(candidate_metrics, tmp_path):
    verdict = gate_model.python_func(candidate_metrics, str(tmp_path / "registry"), {"weak.recall@10": 0.3}, 0.02,
                                     "cmvae")
    assert verdict.passed is True
    assert "PASSED" in verdict.report


@pytest.mark.unit
def test_refuses_below_threshold_and_names_the_metric(candidate_metrics, tmp_path):
    verdict = gate_model.python_func(candidate_metrics, str(tmp_path / "registry"), {"weak.recall@10": 0.9}, 0.02,
                                     "cmvae")
    assert verdict.passed is False
    assert "weak.recall@10: 0.4000 is below the threshold 0.9000" in verdict.report


@pytest.mark.unit
def test_refuses_when_worse_than_production_minus_tolerance(candidate_metrics, tmp_path):
    _production(tmp_path / "registry", 0.50, tmp_path)
    verdict = gate_model.python_func(candidate_metrics, str(tmp_path / "registry"), {"weak.recall@10": 0.1}, 0.02,
                                     "cmvae")
    assert verdict.passed is False
    assert "worse than production" in verdict.report
    within = gate_model.python_func(candidate_metrics, str(tmp_path / "registry"), {"weak.recall@10": 0.1}, 0.15,
                                    "cmvae")
    assert within.passed is True
