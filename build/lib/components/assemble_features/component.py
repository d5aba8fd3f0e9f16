"""Assemble the feature tables after the extraction shards (bgmrec.steps.assemble_features_step)."""

from kfp import dsl

from pipelines.settings import pipeline_image


@dsl.component(base_image=pipeline_image())
def assemble_features(dataset_dir: str, params_path: str, shard_failures: list[int]) -> str:
    """music_features.parquet / video_features.parquet from the shards' cache (audio_lld's PCA fitted on the
    whole catalog); fails the run when any item failed. Returns the dataset dir."""
    from bgmrec.steps import assemble_features_step, read_params

    print(f"shards reported {sum(shard_failures)} failure(s)")
    result = assemble_features_step(dataset_dir, read_params(params_path).get("extract"))
    print(result.get("skipped") or f"extracted: {result['counts']}")
    return dataset_dir
