"""The benchmark command and the baselines' expected behaviour."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bgmrec.cli import app
from bgmrec.data.presets import PRESETS
from bgmrec.data.simulate import popularity_counts
from bgmrec.metrics import ips_recall_at_k

pytestmark = pytest.mark.model


@pytest.mark.unit
def test_popular_rank_ips_recall_is_below_random_on_gamma_popularity():
    """CMVAE Table 2: with inverse-popularity weights, ranking by popularity loses to random."""
    rng = np.random.default_rng(0)
    pop = popularity_counts(PRESETS["tt150k"], rng)
    true = np.repeat(np.arange(len(pop)), pop)
    test = rng.choice(len(true), 5000, replace=False)
    candidates = np.stack(
        [
            np.concatenate([[true[i]], rng.choice(np.delete(np.arange(len(pop)), true[i]), 100, replace=False)])
            for i in test
        ]
    )
    popular = ips_recall_at_k(pop[candidates].astype(float), pop[true[test]])
    random = ips_recall_at_k(rng.random(candidates.shape), pop[true[test]])
    for k in (10, 15, 20, 25):
        assert popular[f"ips_recall@{k}"] < random[f"ips_recall@{k}"]
        assert random[f"ips_recall@{k}"] == pytest.approx(k / 101, abs=0.03)


def _benchmark(dataset, split: str, models: str, out):
    """`bgmrec benchmark` as a user types it."""
    return CliRunner().invoke(app, ["benchmark", "--dataset", str(dataset), "--split", split, "--models", models,
                                    "--out", str(out)])


@pytest.mark.integration
def test_benchmark_cli_writes_every_protocol_key_per_model(tiny_dataset, tmp_path):
    out = tmp_path / "weak.json"
    result = _benchmark(tiny_dataset, "weak", "random,popular,cca", out)
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())
    keys = [f"recall@{k}" for k in (1, 5, 10, 20)] + [f"ips_recall@{k}" for k in (10, 15, 20, 25)]
    for name in ("random", "popular", "cca", "oracle"):
        assert all(0.0 <= bench["results"][name][k] <= 1.0 for k in keys), name
    assert bench["results"]["oracle"]["recall@10"] > bench["results"]["random"]["recall@10"]
    assert bench["results"]["cca"]["recall@10"] > bench["results"]["random"]["recall@10"]
    assert out.with_suffix(".md").read_text().count("| cca |") == 1
    # the tiny gallery has fewer than 100 music: said in the output
    assert "negatives available" in bench["results"]["random"]["note"]


@pytest.mark.integration
def test_popular_rank_not_applicable_to_strong_split(tiny_dataset, tmp_path):
    out = tmp_path / "strong.json"
    result = _benchmark(tiny_dataset, "strong", "random,popular", out)
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())
    assert "not_applicable" in bench["results"]["popular"]
    assert bench["results"]["random"]["gallery_size"] < 40


@pytest.mark.unit
def test_family_params_cannot_undo_an_ablation():
    from bgmrec.models import resolve_params

    config = {"vmcml": {"beta": 5.0, "lr": 0.1}, "vmcml-nosl": {"epochs": 2}}
    assert resolve_params("vmcml-nosl", config) == {"beta": 0.0, "lr": 0.1, "epochs": 2}
    assert resolve_params("vmcml", config, {"epochs": 1}) == {"beta": 5.0, "lr": 0.1, "epochs": 1}
    with pytest.raises(ValueError, match="unknown model"):
        resolve_params("nope", config)
