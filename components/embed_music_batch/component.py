"""Embed the batch's music with the production music encoder (bgmrec.steps.embed_music_batch_step)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def embed_music_batch(features: Input[Dataset], registry_dir: str, embeddings: Output[Dataset]) -> str:
    """New music becomes recommendable without retraining (the papers' unseen music); returns the model
    version whose encoder made the embeddings."""
    from bgmrec.steps import embed_music_batch_step

    result = embed_music_batch_step(features.path, registry_dir, embeddings.path)
    embeddings.metadata.update(result)
    return result["model_version"]
