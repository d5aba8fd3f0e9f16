"""The catalog is a ledger: batches added at the same time are all kept, and a rebuild keeps every batch."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

TRIALS = 20


def _write_batch(root: Path, ids: list[str], dims: dict[str, int], catalog_dim: int, model_version: str,
                 seed: int) -> tuple[Path, Path]:
    """A batch as the pipeline hands it to the refresh step: the extracted features (music.parquet +
    music_features.parquet) and the embeddings made by the production model."""
    from bgmrec.data.contract import MusicVectors, write_music_features

    rng = np.random.default_rng(seed)
    features, embeddings = root / "features", root / "embeddings"
    features.mkdir(parents=True)
    embeddings.mkdir(parents=True)
    write_music_features(features, MusicVectors(np.asarray(ids, dtype=object),
                                                rng.standard_normal((len(ids), dims["audio_embedding"]), np.float32),
                                                rng.standard_normal((len(ids), dims["audio_lld"]), np.float32)))
    pd.DataFrame({"music_id": ids, "title": [f"Title {i}" for i in ids]}).to_parquet(features / "music.parquet")
    vectors = rng.standard_normal((len(ids), catalog_dim)).astype(np.float32)
    table = pa.table({"music_id": ids, "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.reshape(-1), pa.float32()), catalog_dim)})
    pq.write_table(table.replace_schema_metadata({"model_version": model_version}), embeddings / "embeddings.parquet")
    return features, embeddings


def _refresh(barrier, features: str, embeddings: str, registry: str, errors) -> None:
    from bgmrec.steps import refresh_catalog_step

    barrier.wait()
    try:
        refresh_catalog_step(features, embeddings, registry)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        errors.put(repr(exc))


def test_concurrent_batches_lose_no_music(music_world, tmp_path):
    from bgmrec.catalog import load_catalog
    from bgmrec.data.contract import load_dataset
    from bgmrec.registry import ModelRegistry

    base = load_catalog(music_world.registry_dir / "catalog.parquet")
    dims = load_dataset(music_world.dataset_dir).music_vectors.dims
    version = ModelRegistry(music_world.registry_dir).production()["version"]
    batches = [_write_batch(tmp_path / f"batch-{b}", [f"b{b}-{i}" for i in range(3)], dims, base.dim, version, b)
               for b in range(2)]
    context = multiprocessing.get_context("fork")
    lost = []
    for trial in range(TRIALS):
        registry = Path(shutil.copytree(music_world.registry_dir, tmp_path / f"registry-{trial}"))
        barrier, errors = context.Barrier(2), context.Queue()
        workers = [context.Process(target=_refresh, args=(barrier, str(f), str(e), str(registry), errors))
                   for f, e in batches]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert errors.empty(), errors.get()
        catalog = load_catalog(registry / "catalog.parquet")
        expected = {*map(str, base.ids), *(f"b{b}-{i}" for b in range(2) for i in range(3))}
        lost.append(len(expected - set(map(str, catalog.ids))))
        assert len(catalog) == len(expected)
    assert sum(lost) == 0, f"music lost per trial: {lost}"


def test_a_rebuild_keeps_the_music_of_every_batch(music_world, tmp_path):
    """`dvc repro --force` after a trigger: build-catalog re-embeds the dataset's music and every recorded batch
    with the production model."""
    from bgmrec.catalog import load_catalog
    from bgmrec.data.contract import load_dataset
    from bgmrec.registry import ModelRegistry
    from bgmrec.steps import build_catalog_step, refresh_catalog_step

    registry = Path(shutil.copytree(music_world.registry_dir, tmp_path / "registry"))
    base = load_catalog(registry / "catalog.parquet")
    dims = load_dataset(music_world.dataset_dir).music_vectors.dims
    version = ModelRegistry(registry).production()["version"]
    features, embeddings = _write_batch(tmp_path / "batch", ["late-1", "late-2"], dims, base.dim, version, 7)
    refresh_catalog_step(features, embeddings, registry)
    result = build_catalog_step(music_world.dataset_dir, registry)
    rebuilt = load_catalog(registry / "catalog.parquet")
    assert result["from_batches"] == 2 and len(rebuilt) == len(base) + 2
    rows = rebuilt.indices_of(["late-1", "late-2"])
    assert (rows >= 0).all() and rebuilt.is_new[rows].all()
    assert list(rebuilt.titles[rows]) == ["Title late-1", "Title late-2"]
    assert rebuilt.version == base.version + 2 and rebuilt.model_version == version
    # the rebuild re-embedded the batch with the model: its rows are the music encoder's, not the batch file's
    model = ModelRegistry(registry).load_production()
    from bgmrec.ledger import recorded_batches

    (vectors, _), = recorded_batches(registry)
    expected = model.embed_music(vectors.audio_embedding, vectors.audio_lld, vectors.ids)
    np.testing.assert_allclose(rebuilt.embeddings[rows], expected / np.linalg.norm(expected, axis=1, keepdims=True),
                               atol=1e-5)
