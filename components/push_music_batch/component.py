"""Push the batch's music vectors to Feast (bgmrec.steps.push_music_batch_step)."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def push_music_batch(features: Input[Dataset], feature_repo: str) -> int:
    """Online and offline at once, so serving and the next training run both see the new music. An empty
    feature_repo means no Feast (the embedded quick path); returns how many rows were pushed."""
    from bgmrec.steps import push_music_batch_step

    if not feature_repo:
        print("no feature repo given: nothing pushed to Feast")
        return 0

    return push_music_batch_step(features.path, feature_repo)["pushed"]
