"""Push the batch's music vectors to Feast (bgmrec.steps.push_music_batch_step)."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from pipelines.settings import pipeline_image


@dsl.component(base_image=pipeline_image())
def push_music_batch(features: Input[Dataset], feature_repo: str) -> int:
    """Online and offline at once, so serving and the next training run both see the new music."""
    from bgmrec.steps import push_music_batch_step

    return push_music_batch_step(features.path, feature_repo)["pushed"]
