import numpy as np
import pytest

from components.push_music_batch.component import push_music_batch


@pytest.mark.integration
def test_pushed_music_is_readable_online(extracted_batch, world_feature_repo):
    from bgmrec.feature_store import online_music_vectors, open_store
    from bgmrec.steps import read_batch_music_vectors

    assert push_music_batch.python_func(extracted_batch["features"], str(world_feature_repo)) == 2
    pushed = read_batch_music_vectors(extracted_batch["features"].path)
    online, missing = online_music_vectors(open_store(world_feature_repo), pushed.ids)
    assert missing == []
    np.testing.assert_allclose(online.audio_lld, pushed.audio_lld, rtol=1e-6)


@pytest.mark.unit
def test_no_repo_pushes_nothing(extracted_batch):
    assert push_music_batch.python_func(extracted_batch["features"], "") == 0
