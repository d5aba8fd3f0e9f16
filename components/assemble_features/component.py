"""Assemble the feature tables after the extraction shards (bgmrec.steps.assemble_features_step)."""

from kfp import dsl

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def assemble_features(dataset_dir: str, params_path: str, shard_failures: list[int]) -> str:
    """music_features.parquet / video_features.parquet from the shards' cache (audio_lld's PCA fitted on the
    whole catalog); fails the run when any item failed. Returns the dataset dir."""
    from bgmrec.config import load_config
    from bgmrec.steps import assemble_features_step

    print(f"shards reported {sum(shard_failures)} failure(s)")
    result = assemble_features_step(dataset_dir, load_config(params_path).extract)
    print(result.get("skipped") or f"extracted: {result['counts']}")
    return dataset_dir
