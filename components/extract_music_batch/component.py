"""Audio features of the accepted batch music (bgmrec.steps.extract_music_batch_step)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def extract_music_batch(
    batch: Input[Dataset], dataset_dir: str, params_path: str, features: Output[Dataset]
) -> int:
    """Extract audio_embedding and audio_lld with the catalog dataset's saved scaler + PCA (the new music is
    transformed exactly like the catalog); returns how many music extracted."""
    from bgmrec.config import load_config
    from bgmrec.steps import extract_music_batch_step

    result = extract_music_batch_step(batch.path, dataset_dir, features.path, load_config(params_path))
    for failure in result["failures"]:
        print(f"extraction failed: {failure}")
    features.metadata.update({"extracted": result["extracted"], "failed": result["failed"]})
    return result["extracted"]
