"""Both Recall@K protocols on both splits (bgmrec.steps.evaluate_step)."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate_model(
    dataset_dir: str, weak_model: Input[Model], strong_model: Input[Model], params_path: str,
    metrics: Output[Metrics],
):
    """Full-gallery Recall@K and IPS Recall@K on the weak split (weak_model) and the strong split (strong_model,
    which never saw its test music). `metrics` holds the nested JSON the gate reads, and one logged metric per
    value for the Kubeflow UI."""
    from pathlib import Path

    from bgmrec.config import load_config
    from bgmrec.gate import flatten_metrics
    from bgmrec.registry import CHECKPOINT_FILE
    from bgmrec.steps import evaluate_step

    seed = load_config(params_path).data.seed
    checkpoints = {"weak": Path(weak_model.path) / CHECKPOINT_FILE, "strong": Path(strong_model.path) / CHECKPOINT_FILE}
    result = evaluate_step(dataset_dir, checkpoints, metrics.path, seed=seed)
    for name, value in flatten_metrics(result["metrics"]).items():
        metrics.log_metric(name, value)
