"""The recommendations report of a trained model as an HTML artifact (bgmrec.report.report_step)."""

from kfp import dsl
from kfp.dsl import HTML, Input, Metrics, Model, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def recommendations_report(
    dataset_dir: str, model: Input[Model], metrics: Input[Metrics], model_name: str, params_path: str,
    report: Output[HTML],
) -> str:
    """A few test videos of the weak split with the model's top-10 music (frames, playable previews, the rank of
    the creator's music), its Recall@K curves from `metrics` and the diversity of its lists; shown in the
    Kubeflow UI. Returns a one-line summary."""
    from pathlib import Path

    from bgmrec.config import load_config
    from bgmrec.registry import CHECKPOINT_FILE
    from bgmrec.report import report_step

    seed = load_config(params_path).data.seed
    result = report_step(dataset_dir, report.path, checkpoint=Path(model.path) / CHECKPOINT_FILE,
                         metrics={model_name: metrics.path}, seed=seed)
    report.metadata.update({"model": model_name, "videos": result["videos"], "players": result["players"],
                            "bytes": result["bytes"]})
    return (f"{model_name}: {result['videos']} test videos, {result['players']} previews, chosen music ranked "
            f"{result['chosen_ranks']} of {result['catalog_size']}")
