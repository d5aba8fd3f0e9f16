"""Audio features of the accepted batch music (bgmrec.steps.extract_music_batch_step)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from pipelines.settings import pipeline_image


@dsl.component(base_image=pipeline_image())
def extract_music_batch(
    batch: Input[Dataset], dataset_dir: str, params_path: str, features: Output[Dataset]
) -> int:
    """Extract audio_embedding and audio_lld with the catalog dataset's saved scaler + PCA (the new music is
    transformed exactly like the catalog); returns how many music extracted."""
    from bgmrec.steps import extract_music_batch_step, read_params

    result = extract_music_batch_step(batch.path, dataset_dir, features.path, read_params(params_path))
    for failure in result["failures"]:
        print(f"extraction failed: {failure}")
    features.metadata.update({"extracted": result["extracted"], "failed": result["failed"]})
    return result["extracted"]
