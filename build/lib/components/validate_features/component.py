"""Great Expectations on the feature tables (bgmrec.steps.validate_features_step)."""

from kfp import dsl
from kfp.dsl import HTML, Output

from pipelines.settings import pipeline_image


@dsl.component(base_image=pipeline_image())
def validate_features(dataset_dir: str, params_path: str, report: Output[HTML]) -> str:
    """Vector lengths, finiteness, norms, keys and row counts; fails the run naming the offending rows.
    Returns the dataset dir."""
    from bgmrec.steps import read_params, validate_features_step

    validation = read_params(params_path).get("validation", {})
    result = validate_features_step(dataset_dir, report.path, validation.get("min_norm"), validation.get("max_norm"))
    report.metadata.update({"tables": result["tables"]})
    return dataset_dir
