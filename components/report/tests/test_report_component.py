import json
from pathlib import Path

import pytest
from kfp import dsl

from components.report.component import recommendations_report


@pytest.fixture(scope="module")
def tiny_metrics(tiny_cmvae, tiny_dataset, fast_params_path, tmp_path_factory):
    """The tiny CMVAE's metrics, written by the evaluate_model component the pipeline runs before the report."""
    from components.evaluate_model.component import evaluate_model

    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path_factory.mktemp("metrics") / "metrics.json"))
    evaluate_model.python_func(str(tiny_dataset), tiny_cmvae["weak"], tiny_cmvae["strong"],
                               str(fast_params_path), metrics)
    return metrics


@pytest.mark.integration
def test_writes_the_html_report_of_the_checkpoint(tiny_cmvae, tiny_metrics, tiny_dataset, fast_params_path,
                                                  artifact):
    report = artifact("HTML", "report.html")
    summary = recommendations_report.python_func(str(tiny_dataset), tiny_cmvae["weak"], tiny_metrics, "cmvae",
                                                 str(fast_params_path), report)
    html = Path(report.path).read_text()
    assert summary.startswith("cmvae: 6 test videos, 0 previews, chosen music ranked [")
    assert html.startswith("<!DOCTYPE html>") and html.count('<section class="video">') == 6
    # the simulated dataset has no media files: the report says so instead of showing players
    assert "no audio file in the dataset" in html and "<audio" not in html
    weak = json.loads(Path(tiny_metrics.path).read_text())["weak"]
    assert f"{weak['recall@10']:.3f}" in html and html.count("<svg") == 2
    assert report.metadata["videos"] == 6 and report.metadata["model"] == "cmvae"


@pytest.mark.integration
@pytest.mark.slow
def test_runs_in_kfp_local(local_runner, tiny_cmvae, tiny_metrics, tiny_dataset, fast_params_path):
    @dsl.pipeline
    def one_report() -> str:
        model = dsl.importer(artifact_uri=tiny_cmvae["weak"].uri, artifact_class=dsl.Model)
        metrics = dsl.importer(artifact_uri=tiny_metrics.uri, artifact_class=dsl.Metrics)
        return recommendations_report(dataset_dir=str(tiny_dataset), model=model.output,
                                      metrics=metrics.output, model_name="cmvae",
                                      params_path=str(fast_params_path)).outputs["Output"]

    assert one_report().output.startswith("cmvae: 6 test videos")
