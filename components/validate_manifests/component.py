"""Great Expectations on the dataset's manifests (bgmrec.steps.validate_manifests_step)."""

from kfp import dsl
from kfp.dsl import HTML, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def validate_manifests(dataset_dir: str, params_path: str, report: Output[HTML]) -> str:
    """Fails the run (naming the offending rows) when music.parquet / videos.parquet break the rules, so no
    later task runs; `report` holds the text summary and the Data Docs. Returns the dataset dir."""
    from bgmrec.config import load_config
    from bgmrec.steps import validate_manifests_step

    validation = load_config(params_path).validation
    result = validate_manifests_step(dataset_dir, report.path, validation.max_description_chars)
    report.metadata.update({"tables": result["tables"]})
    return dataset_dir
