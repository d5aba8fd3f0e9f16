"""The stored catalog: a base plus appended segments named by a manifest that is swapped atomically; a batch
costs what the batch costs, a rebuild compacts, a reader sees one version."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bgmrec.catalog import (
    CatalogError,
    MusicCatalog,
    append_batch,
    catalog_files,
    copy_catalog,
    index_files,
    load_catalog,
    read_music_ids,
)
from bgmrec.catalog_storage import EMBEDDINGS_FILE, parts_dir, read_manifest
from bgmrec.config import CatalogSettings

pytestmark = pytest.mark.unit

EXACT = CatalogSettings()
SMALL = CatalogSettings(index_min_size=1000)


def _catalog(n: int, d: int, seed: int = 0, model_version: str = "v1") -> MusicCatalog:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, d))
    ids = np.array([f"m{i}" for i in range(n)], dtype=object)
    return MusicCatalog(ids, np.array([f"track {i}" for i in range(n)], dtype=object), x.astype(np.float32),
                        rng.zipf(1.5, n).astype(float), np.zeros(n, bool), model_version=model_version)


def _batch(ids: list[str], d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((len(ids), d)).astype(np.float32) * 3.0


def _identities(folder) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}


def test_a_batch_is_appended_as_a_segment_without_rewriting_the_base(tmp_path):
    catalog = _catalog(500, 16)
    path = catalog.save(tmp_path / "catalog.parquet")
    base = _identities(parts_dir(path))
    new = _batch(["n1", "n2", "n3"], 16, 1)
    done = append_batch(path, "b1", ["n1", "n2", "n3"], new, ["New 1", None, "New 3"], "v1", EXACT)
    assert (done.added, done.rows_before, done.rows_after, done.version) == (3, 500, 503, catalog.version + 1)
    assert {k: v for k, v in _identities(parts_dir(path)).items() if k in base} == base  # untouched
    assert [p.name.split("-")[0] for p in read_manifest(path).parts] == ["base", "segment"]
    loaded = load_catalog(path)
    assert len(loaded) == 503 and loaded.version == catalog.version + 1 and loaded.model_version == "v1"
    rows = loaded.indices_of(["n1", "n2", "n3"])
    assert list(rows) == [500, 501, 502] and loaded.is_new[rows].all() and not loaded.is_new[:500].any()
    assert list(loaded.titles[rows]) == ["New 1", "n2", "New 3"]
    np.testing.assert_allclose(loaded.embeddings[rows], new / np.linalg.norm(new, axis=1, keepdims=True),
                               rtol=1e-6)
    np.testing.assert_array_equal(loaded.embeddings[:500], catalog.embeddings)
    assert loaded.top_k(loaded.embeddings[501], 1).index[0] == 501
    assert read_music_ids(path) == [*map(str, catalog.ids), "n1", "n2", "n3"]


def test_music_already_in_the_catalog_is_not_added_again(tmp_path):
    path = _catalog(500, 16).save(tmp_path / "catalog.parquet")
    append_batch(path, "b1", ["n1", "n2"], _batch(["n1", "n2"], 16, 1), [None, None], "v1", EXACT)
    again = append_batch(path, "b1", ["n1", "n2"], _batch(["n1", "n2"], 16, 1), [None, None], "v1", EXACT)
    assert again.added == 0 and again.rows_after == 502 and len(read_manifest(path).parts) == 2
    # another batch holding a base music, a music of the first batch and a new one: only the new one is added
    mixed = append_batch(path, "b2", ["m7", "n2", "n9"], _batch(["m7", "n2", "n9"], 16, 2), [None] * 3, "v1",
                         EXACT)
    assert mixed.added == 1 and mixed.rows_after == 503
    loaded = load_catalog(path)
    assert len(loaded) == 503 and loaded.ids[-1] == "n9"


def test_batches_are_refused_when_they_cannot_join_the_catalog(tmp_path):
    path = _catalog(50, 16).save(tmp_path / "catalog.parquet")
    with pytest.raises(CatalogError, match="embedded by model v1 but production is v2"):
        append_batch(path, "b1", ["n1"], _batch(["n1"], 16, 1), [None], "v2", EXACT)
    with pytest.raises(CatalogError, match=r"batch b1: embeddings have shape \(1, 8\), expected \(1, 16\)"):
        append_batch(path, "b1", ["n1"], _batch(["n1"], 8, 1), [None], "v1", EXACT)
    with pytest.raises(CatalogError, match="music n1: embedding contains NaN"):
        append_batch(path, "b1", ["n1"], np.full((1, 16), np.nan, np.float32), [None], "v1", EXACT)
    with pytest.raises(CatalogError, match="batch b1: music id n1 appears more than once"):
        append_batch(path, "b1", ["n1", "n1"], _batch(["n1", "n1"], 16, 1), [None] * 2, "v1", EXACT)
    with pytest.raises(CatalogError, match="no catalog file"):
        append_batch(tmp_path / "none.parquet", "b1", ["n1"], _batch(["n1"], 16, 1), [None], "v1", EXACT)
    assert len(load_catalog(path)) == 50 and len(read_manifest(path).parts) == 1


def test_segments_join_the_base_index_when_loaded(tmp_path):
    catalog = _catalog(2000, 32).with_index(SMALL)
    path = catalog.save(tmp_path / "catalog.parquet")
    (index_file,) = index_files(path)
    before = index_file.stat().st_mtime_ns
    new = _batch(["n1", "n2", "n3"], 32, 3)
    assert append_batch(path, "b1", ["n1", "n2", "n3"], new, [None] * 3, "v1", SMALL).indexed
    assert index_file.stat().st_mtime_ns == before  # the saved index is not rewritten for a batch
    loaded = load_catalog(path, SMALL)
    assert loaded.index.path == index_file and loaded.index.rows == len(loaded) == 2003
    for row in loaded.indices_of(["n1", "n2", "n3"]):
        assert row in loaded.index.search(loaded.embeddings[row][None, :], 10)[0]  # the index itself finds it
        assert loaded.top_k(loaded.embeddings[row], 1).index[0] == row


def test_a_small_catalog_reaching_the_index_size_is_rewritten_with_an_index(tmp_path):
    path = _catalog(998, 32).save(tmp_path / "catalog.parquet")
    assert not index_files(path)[0].exists()
    done = append_batch(path, "b1", ["n1", "n2"], _batch(["n1", "n2"], 32, 4), [None] * 2, "v1", SMALL)
    assert done.indexed and done.rows_after == 1000
    assert len(read_manifest(path).parts) == 1 and index_files(path)[0].exists()
    loaded = load_catalog(path, SMALL)
    assert loaded.index.rows == 1000 and loaded.ids[-1] == "n2" and loaded.is_new[-2:].all()


def test_a_rebuild_compacts_and_removes_the_old_parts(tmp_path):
    path = _catalog(500, 16).save(tmp_path / "catalog.parquet")
    append_batch(path, "b1", ["n1"], _batch(["n1"], 16, 1), [None], "v1", EXACT)
    old = {p.name for p in parts_dir(path).iterdir()}
    load_catalog(path).save(path)
    (part,) = read_manifest(path).parts
    assert [p.name for p in parts_dir(path).iterdir()] == [part.name] and part.name not in old
    assert len(load_catalog(path)) == 501


def test_damaged_or_foreign_files_are_refused_with_their_name(tmp_path):
    path = _catalog(50, 16).save(tmp_path / "catalog.parquet")
    embeddings = parts_dir(path) / read_manifest(path).parts[0].name / EMBEDDINGS_FILE
    data = bytearray(embeddings.read_bytes())
    data[-1] ^= 0xFF
    embeddings.write_bytes(bytes(data))
    with pytest.raises(CatalogError, match=f"{embeddings} is damaged"):
        load_catalog(path)
    pq.write_table(pa.table({"music_id": ["a"]}), path)  # a catalog file of another format
    with pytest.raises(CatalogError, match="not a catalog manifest of format 2"):
        load_catalog(path)
    path.write_bytes(b"PAR1 truncated")
    with pytest.raises(CatalogError, match="catalog.parquet is damaged"):
        load_catalog(path)


def test_a_manifest_changed_under_a_writer_is_not_replaced(tmp_path):
    """The compare-and-swap behind `append_batch`: the writer's view of the manifest must still be current."""
    from bgmrec.catalog_storage import manifest_identity, write_manifest

    path = _catalog(50, 16).save(tmp_path / "catalog.parquet")
    seen, manifest = manifest_identity(path), read_manifest(path)
    _catalog(60, 16).save(path)  # another writer, without the lock
    with pytest.raises(CatalogError, match="changed while this transaction held the catalog lock"):
        write_manifest(path, manifest, expected=seen, check=True)
    assert len(load_catalog(path)) == 60


def test_a_copied_catalog_is_the_same_catalog(tmp_path):
    path = _catalog(2000, 32).with_index(SMALL).save(tmp_path / "catalog.parquet")
    append_batch(path, "b1", ["n1"], _batch(["n1"], 32, 1), [None], "v1", SMALL)
    target = copy_catalog(path, tmp_path / "elsewhere" / "catalog.parquet")
    assert len(catalog_files(target)) == len(catalog_files(path)) == 1 + 4 + 3  # base with an index, a segment
    original, copied = load_catalog(path, SMALL), load_catalog(target.parent, SMALL)
    assert np.array_equal(original.ids, copied.ids) and np.array_equal(original.embeddings, copied.embeddings)
    assert copied.index is not None and copied.index.path == index_files(target)[0]


def test_an_empty_catalog_round_trips(tmp_path):
    empty = MusicCatalog(np.array([], dtype=object), np.array([], dtype=object), np.zeros((0, 16), np.float32),
                         np.zeros(0), np.zeros(0, bool), model_version="v1")
    loaded = load_catalog(empty.save(tmp_path / "catalog.parquet"))
    assert len(loaded) == 0 and loaded.dim == 16 and len(loaded.top_k(np.ones(16, np.float32), 5).index) == 0
