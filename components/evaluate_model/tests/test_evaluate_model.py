import json

import pytest

from components.evaluate_model.component import evaluate_model


@pytest.mark.integration
def test_both_protocols_on_both_splits(tiny_cmvae, tiny_dataset, fast_params_path, artifact):
    metrics = artifact("Metrics", "metrics.json")
    evaluate_model.python_func(str(tiny_dataset), tiny_cmvae["weak"], tiny_cmvae["strong"],
                               str(fast_params_path), metrics)
    nested = json.loads(open(metrics.path).read())
    assert set(nested) == {"weak", "strong"}
    for kind in ("weak", "strong"):
        assert 0.0 <= nested[kind]["recall@10"] <= 1.0
        assert 0.0 <= nested[kind]["ips_recall@10"] <= 1.0
        assert metrics.metadata[f"{kind}.recall@10"] == pytest.approx(nested[kind]["recall@10"])
