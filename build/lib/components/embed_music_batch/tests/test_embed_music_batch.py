import numpy as np
import pyarrow.parquet as pq
import pytest

from bgmrec.registry import ModelRegistry
from components.embed_music_batch.component import embed_music_batch


@pytest.mark.integration
def test_embeds_with_the_production_encoder(extracted_batch, music_world, artifact):
    embeddings = artifact("Dataset", "embeddings")
    version = embed_music_batch.python_func(extracted_batch["features"], str(music_world.registry_dir), embeddings)
    assert version == ModelRegistry(music_world.registry_dir).production()["version"]
    table = pq.read_table(f"{embeddings.path}/embeddings.parquet")
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert table.column("music_id").to_pylist() == ["fresh-a", "fresh-b"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.unit
def test_no_production_model_is_an_error(extracted_batch, artifact, tmp_path):
    with pytest.raises(FileNotFoundError, match="no production model"):
        embed_music_batch.python_func(extracted_batch["features"], str(tmp_path / "empty"),
                                      artifact("Dataset", "embeddings"))
