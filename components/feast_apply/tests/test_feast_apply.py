import numpy as np
import pytest

from components.feast_apply.component import feast_apply


@pytest.mark.integration
def test_online_vectors_equal_the_feature_files(world_feature_repo, music_world):
    from bgmrec.data.contract import load_dataset
    from bgmrec.feature_store import online_music_vectors, open_store

    dataset = load_dataset(music_world.dataset_dir)
    online, missing = online_music_vectors(open_store(world_feature_repo), dataset.music_vectors.ids)
    assert missing == []
    np.testing.assert_allclose(online.audio_embedding, dataset.music_vectors.audio_embedding, rtol=1e-6)


@pytest.mark.unit
def test_no_repo_means_no_feast(tiny_dataset, params_path):
    assert feast_apply.python_func(str(tiny_dataset), "", str(params_path)) == ""
