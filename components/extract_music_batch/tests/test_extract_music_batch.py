from pathlib import Path

import pytest

from bgmrec.data.contract import load_dataset


@pytest.mark.integration
def test_features_have_the_catalog_dims(extracted_batch, music_world):
    from bgmrec.steps import read_batch_music_vectors

    assert extracted_batch["extracted"] == 2
    vectors = read_batch_music_vectors(extracted_batch["features"].path)
    catalog_dims = load_dataset(music_world.dataset_dir).music_vectors.dims
    assert sorted(vectors.ids) == ["fresh-a", "fresh-b"]
    assert vectors.dims == catalog_dims
    assert (Path(extracted_batch["features"].path) / "extraction_report.json").exists()


@pytest.mark.integration
def test_empty_accepted_batch_is_an_error(music_world, params_path, artifact, tmp_path):
    import pandas as pd

    from components.extract_music_batch.component import extract_music_batch

    batch = artifact("Dataset", "batch")
    Path(batch.path).mkdir(parents=True)
    pd.DataFrame({"music_id": [], "title": [], "audio_path": []}).to_parquet(Path(batch.path) / "music.parquet")
    with pytest.raises(ValueError, match="no accepted music"):
        extract_music_batch.python_func(batch, str(music_world.dataset_dir), str(params_path),
                                        artifact("Dataset", "features"))
