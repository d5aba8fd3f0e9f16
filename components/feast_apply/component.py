"""Features to Feast: stage, apply, materialize (bgmrec.steps.feast_apply_step)."""

from kfp import dsl

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def feast_apply(dataset_dir: str, feature_repo: str, params_path: str) -> str:
    """Training then reads its vectors point-in-time from the offline store, serving from the online store.
    Returns the feature repo; an empty feature_repo means no Feast (training reads the dataset files)."""
    from bgmrec.config import load_config
    from bgmrec.steps import feast_apply_step

    if not feature_repo:
        print("no feature repo given: training reads the dataset's feature files")
        return ""

    config = load_config(params_path).feast.config
    result = feast_apply_step(feature_repo, dataset_dir, config)
    print(f"feast apply {result['repo']}: {result['rows']}")
    return feature_repo
