"""Train one model on one split (bgmrec.steps.train_step); the pipeline puts it on a GPU node."""

from kfp import dsl
from kfp.dsl import Model, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train_model(
    dataset_dir: str, model_name: str, split_kind: str, feature_repo: str, params_path: str, model: Output[Model]
) -> int:
    """`model` holds model.pt, train.json and the training curves. Vectors come from Feast when feature_repo
    is set, else from the dataset files. Returns the epoch whose weights were kept (early stopping)."""
    from bgmrec.config import load_config
    from bgmrec.steps import train_step

    result = train_step(dataset_dir, split_kind, model_name, load_config(params_path), model.path,
                        feature_repo=feature_repo or None)
    model.metadata.update({"model_name": model_name, "split": split_kind, "features_from": result["features_from"]})
    return int(result["best_epoch"])
