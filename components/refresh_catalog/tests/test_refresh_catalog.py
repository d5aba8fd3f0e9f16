from pathlib import Path

import pytest
import yaml

from bgmrec.catalog import index_files, load_catalog
from bgmrec.config import load_config
from components.embed_music_batch.component import embed_music_batch
from components.refresh_catalog.component import refresh_catalog


@pytest.fixture
def batch_embeddings(extracted_batch, registry_copy, artifact):
    embeddings = artifact("Dataset", "embeddings")
    embed_music_batch.python_func(extracted_batch["features"], str(registry_copy), embeddings)
    return embeddings


@pytest.mark.integration
def test_new_music_enters_the_catalog_flagged_new(extracted_batch, batch_embeddings, registry_copy, music_world,
                                                  params_path):
    summary = refresh_catalog.python_func(extracted_batch["features"], batch_embeddings, str(registry_copy),
                                          str(params_path))
    catalog = load_catalog(registry_copy / "catalog.parquet")
    assert len(catalog) == len(music_world.music_ids) + 2
    new = catalog.indices_of(["fresh-a", "fresh-b"])
    assert (new >= 0).all() and catalog.is_new[new].all()
    assert list(catalog.titles[new]) == ["Fresh A", "Fresh B"]
    assert "added 2 music" in summary
    assert not index_files(registry_copy / "catalog.parquet")[0].exists()  # a small catalog is searched exactly
    # A re-run of the same batch (a pipeline killed after this step) adds nothing twice; the ledger keeps one copy.
    again = refresh_catalog.python_func(extracted_batch["features"], batch_embeddings, str(registry_copy),
                                        str(params_path))
    assert "added 0 music" in again
    assert len(load_catalog(registry_copy / "catalog.parquet")) == len(music_world.music_ids) + 2
    assert len(list((registry_copy / "batches").iterdir())) == 1


@pytest.mark.integration
def test_the_vector_index_grows_with_the_catalog(extracted_batch, batch_embeddings, registry_copy, params_path,
                                                 tmp_path):
    """With `catalog.index_min_size` below the catalog's size the refreshed catalog is saved with an index over
    every row, the new music included, and a replica loading it searches that file."""
    params = yaml.safe_load(params_path.read_text())
    params["catalog"] = {"index_min_size": 1}
    small_threshold = tmp_path / "params.yaml"
    small_threshold.write_text(yaml.safe_dump(params))
    refresh_catalog.python_func(extracted_batch["features"], batch_embeddings, str(registry_copy),
                                str(small_threshold))
    catalog = load_catalog(registry_copy / "catalog.parquet", load_config(small_threshold).catalog)
    assert catalog.index is not None and catalog.index.path == index_files(registry_copy / "catalog.parquet")[0]
    assert catalog.index.rows == len(catalog)
    fresh = catalog.indices_of(["fresh-a"])[0]
    assert fresh in catalog.index.search(catalog.embeddings[fresh][None, :], 10)[0]  # the index itself finds it
    assert catalog.top_k(catalog.embeddings[fresh], 1).index[0] == fresh


@pytest.mark.integration
def test_embeddings_of_another_model_are_refused(extracted_batch, batch_embeddings, registry_copy, tmp_path,
                                                 params_path):
    import torch

    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_copy)
    current = registry.production()
    # Another model: the same checkpoint with one more entry (the registry returns the known version for the
    # very same bytes).
    checkpoint = torch.load(registry_copy / current["checkpoint"], map_location="cpu", weights_only=False)
    torch.save({**checkpoint, "retrained": True}, tmp_path / "other.pt")
    registry.promote(registry.register(Path(tmp_path / "other.pt"), current["metrics"], current["model_name"]))
    with pytest.raises(ValueError, match="re-run the embed step"):
        refresh_catalog.python_func(extracted_batch["features"], batch_embeddings, str(registry_copy),
                                    str(params_path))
