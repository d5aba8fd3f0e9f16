import pytest

from components.assemble_features.component import assemble_features


@pytest.mark.unit
def test_precomputed_features_pass_through(tiny_dataset, params_path):
    assert assemble_features.python_func(str(tiny_dataset), str(params_path), [0, 0]) == str(tiny_dataset)


@pytest.mark.unit
def test_manifests_without_media_or_features_fail(tiny_dataset, params_path, tmp_path):
    import shutil

    for name in ("music.parquet", "videos.parquet"):
        shutil.copy(tiny_dataset / name, tmp_path / name)
    with pytest.raises(ValueError, match="nothing to train on"):
        assemble_features.python_func(str(tmp_path), str(params_path), [0])
