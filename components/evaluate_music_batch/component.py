"""Strong-generalization Recall@K of a batch that comes with videos (bgmrec.steps.evaluate_music_batch_step)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate_music_batch(
    batch_dir: str, features: Input[Dataset], registry_dir: str, params_path: str, metrics: Output[Metrics]
):
    """The batch's videos rank its new music with the production model (unseen music: the papers' strong
    generalization); `metrics` holds the JSON and one logged Recall@K per K."""
    from bgmrec.config import load_config
    from bgmrec.steps import evaluate_music_batch_step

    result = evaluate_music_batch_step(batch_dir, features.path, registry_dir, metrics.path, load_config(params_path))
    for failure in result["failures"]:
        print(f"not evaluated: {failure}")
    for name, value in result["metrics"].items():
        metrics.log_metric(f"batch.{name}", value)
