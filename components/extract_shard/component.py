"""One shard of feature extraction, run under dsl.ParallelFor (bgmrec.steps.extract_shard_step)."""

from kfp import dsl

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def extract_shard(dataset_dir: str, shard: int, n_shards: int, params_path: str) -> int:
    """Extract every n_shards-th music and video into the dataset's content-hash feature cache; returns how
    many items failed (they are reported again by assemble_features, which decides)."""
    from bgmrec.config import load_config
    from bgmrec.steps import extract_shard_step

    result = extract_shard_step(dataset_dir, shard, n_shards, load_config(params_path).extract)
    for failure in result["failures"]:
        print(f"shard {shard}: {failure}")
    print(f"shard {shard}/{n_shards}: {result['music']} music, {result['videos']} videos "
          f"{result.get('skipped', '')}")
    return len(result["failures"])
