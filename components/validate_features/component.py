"""Great Expectations on the feature tables (bgmrec.steps.validate_features_step)."""

from kfp import dsl
from kfp.dsl import HTML, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def validate_features(dataset_dir: str, params_path: str, report: Output[HTML]) -> str:
    """Vector lengths, finiteness, norms, keys and row counts; fails the run naming the offending rows.
    Returns the dataset dir."""
    from bgmrec.config import load_config
    from bgmrec.steps import validate_features_step

    validation = load_config(params_path).validation
    result = validate_features_step(dataset_dir, report.path, validation.min_norm, validation.max_norm)
    report.metadata.update({"tables": result["tables"]})
    return dataset_dir
