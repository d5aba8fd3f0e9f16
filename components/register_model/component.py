"""Register and promote the gated model (bgmrec.steps.register_model_step)."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def register_model(model: Input[Model], metrics: Input[Metrics], registry_dir: str, model_name: str) -> str:
    """Only reached when the gate passed. Returns a one-line summary naming the new production version."""
    from pathlib import Path

    from bgmrec.registry import CHECKPOINT_FILE
    from bgmrec.steps import register_model_step

    result = register_model_step(metrics.path, registry_dir, model_name, Path(model.path) / CHECKPOINT_FILE)
    summary = f"registered {result['version']} and promoted it to production in {registry_dir}"
    print(summary)
    return summary
