import shutil
from pathlib import Path

import pytest

from bgmrec.catalog import load_catalog
from components.embed_music_batch.component import embed_music_batch
from components.refresh_catalog.component import refresh_catalog


@pytest.fixture
def batch_embeddings(extracted_batch, registry_copy, artifact):
    embeddings = artifact("Dataset", "embeddings")
    embed_music_batch.python_func(extracted_batch["features"], str(registry_copy), embeddings)
    return embeddings


@pytest.mark.integration
def test_new_music_enters_the_catalog_flagged_new(extracted_batch, batch_embeddings, registry_copy, music_world):
    summary = refresh_catalog.python_func(extracted_batch["features"], batch_embeddings, str(registry_copy))
    catalog = load_catalog(registry_copy / "catalog.parquet")
    assert len(catalog) == len(music_world.music_ids) + 2
    new = catalog.indices_of(["fresh-a", "fresh-b"])
    assert (new >= 0).all() and catalog.is_new[new].all()
    assert list(catalog.titles[new]) == ["Fresh A", "Fresh B"]
    assert "added 2 music" in summary
    with pytest.raises(ValueError, match="already in the catalog"):
        refresh_catalog.python_func(extracted_batch["features"], batch_embeddings, str(registry_copy))


@pytest.mark.integration
def test_embeddings_of_another_model_are_refused(extracted_batch, batch_embeddings, registry_copy, tmp_path):
    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_copy)
    current = registry.production()
    shutil.copy(registry_copy / current["checkpoint"], tmp_path / "other.pt")
    registry.promote(registry.register(Path(tmp_path / "other.pt"), current["metrics"], current["model_name"]))
    with pytest.raises(ValueError, match="re-run the embed step"):
        refresh_catalog.python_func(extracted_batch["features"], batch_embeddings, str(registry_copy))
