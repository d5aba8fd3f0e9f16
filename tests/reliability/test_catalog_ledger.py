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


@pytest.mark.slow
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


def _batch_rows(batch: int, dim: int) -> np.ndarray:
    return np.random.default_rng(1000 + batch).standard_normal((5, dim)).astype(np.float32)


def _write_versions(path: str, appends: int, dim: int) -> None:
    """A writer: batches appended one transaction at a time, with a rebuild (a new base, the old parts removed)
    after every second batch."""
    from bgmrec.catalog import append_batch, load_catalog
    from bgmrec.config import CatalogSettings
    from bgmrec.ledger import catalog_transaction

    for batch in range(appends):
        with catalog_transaction(Path(path).parent):
            append_batch(path, f"b{batch}", [f"b{batch}-{i}" for i in range(5)], _batch_rows(batch, dim),
                         [None] * 5, "v1", CatalogSettings())
        if batch % 2:
            with catalog_transaction(Path(path).parent):
                load_catalog(path).save(path)


def test_readers_see_one_version_or_the_other_never_a_mix(tmp_path):
    """A replica loading the catalog while batches are appended and rebuilds compact it reads one consistent
    version: the base's music and exactly the batches that version holds, each with its own embeddings."""
    from bgmrec.catalog import MusicCatalog, load_catalog

    n, dim, appends = 20_000, 32, 30
    rng = np.random.default_rng(0)
    ids = np.array([f"m{i}" for i in range(n)], dtype=object)
    path = MusicCatalog(ids, ids, rng.standard_normal((n, dim)).astype(np.float32), np.zeros(n), np.zeros(n, bool),
                        model_version="v1").save(tmp_path / "catalog.parquet")
    writer = multiprocessing.get_context("fork").Process(target=_write_versions, args=(str(path), appends, dim))
    writer.start()
    seen = set()
    while writer.is_alive() or not seen:
        catalog = load_catalog(path)
        batches = catalog.version  # each append is one version; a rebuild keeps the version
        expected = [*ids, *(f"b{b}-{i}" for b in range(batches) for i in range(5))]
        assert list(catalog.ids) == expected, f"version {catalog.version} holds other music"
        if batches:
            last = _batch_rows(batches - 1, dim)
            np.testing.assert_allclose(catalog.embeddings[-5:], last / np.linalg.norm(last, axis=1, keepdims=True),
                                       rtol=1e-6)
        seen.add(catalog.version)
    writer.join(60)
    assert writer.exitcode == 0
    assert load_catalog(path).version == appends and len(seen) > 3, sorted(seen)
