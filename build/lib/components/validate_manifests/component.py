"""Great Expectations on the dataset's manifests (bgmrec.steps.validate_manifests_step)."""

from kfp import dsl
from kfp.dsl import HTML, Output

from pipelines.settings import pipeline_image


@dsl.component(base_image=pipeline_image())
def validate_manifests(dataset_dir: str, params_path: str, report: Output[HTML]) -> str:
    """Fails the run (naming the offending rows) when music.parquet / videos.parquet break the rules, so no
    later task runs; `report` holds the text summary and the Data Docs. Returns the dataset dir."""
    from bgmrec.steps import read_params, validate_manifests_step

    validation = read_params(params_path).get("validation", {})
    result = validate_manifests_step(dataset_dir, report.path, validation.get("max_description_chars"))
    report.metadata.update({"tables": result["tables"]})
    return dataset_dir
