"""The music catalog: exact top-K, exclusions, MMR, popularity debiasing, add, save/load, build from a model,
and search through the persisted vector index from `index_min_size` music on."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bgmrec.catalog import CatalogError, MusicCatalog, VectorIndex, build_catalog, index_files, load_catalog
from bgmrec.config import CatalogSettings
from bgmrec.metrics import diversity

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def catalog() -> MusicCatalog:
    rng = np.random.default_rng(0)
    n, d = 500, 16
    ids = np.array([f"m{i:04d}" for i in range(n)], dtype=object)
    return MusicCatalog(
        ids=ids,
        titles=np.array([f"track {i}" for i in range(n)], dtype=object),
        embeddings=rng.standard_normal((n, d)).astype(np.float32),
        popularity=rng.zipf(1.5, n).astype(float),
        is_new=rng.random(n) < 0.1,
    )


def _query(seed: int, d: int = 16) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    return q / np.linalg.norm(q)


def test_embeddings_are_unit_norm(catalog):
    assert np.allclose(np.linalg.norm(catalog.embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("k", [1, 10, 500])
def test_top_k_is_the_exact_ranking(catalog, k):
    q = _query(1)
    got = catalog.top_k(q, k)
    cosine = catalog.embeddings @ q
    expected = np.argsort(-cosine, kind="stable")[:k]
    assert np.array_equal(got.index, expected)
    assert np.allclose(got.scores, cosine[expected])
    assert np.all(np.diff(got.scores) <= 0)


def test_exclusions_never_appear_and_k_is_kept(catalog):
    q = _query(2)
    top = catalog.top_k(q, 10)
    excluded = [str(catalog.ids[i]) for i in top.index[:5]] + ["not-in-catalog"]
    got = catalog.top_k(q, 10, exclude=excluded)
    assert len(got.index) == 10
    assert not set(catalog.ids[got.index]) & set(excluded)
    assert np.array_equal(got.index[:5], top.index[5:])


def test_k_larger_than_what_is_left_returns_everything_left(catalog):
    got = catalog.top_k(_query(3), 10, exclude=list(catalog.ids[:495]))
    assert sorted(catalog.ids[got.index]) == sorted(catalog.ids[495:])


def test_mmr_lambda_one_is_plain_ranking_and_lower_lambda_diversifies(catalog):
    lists_plain, lists_mmr = [], []
    for seed in range(20):
        q = _query(100 + seed)
        plain = catalog.top_k(q, 10)
        assert np.array_equal(catalog.top_k(q, 10, mmr_lambda=1.0).index, plain.index)
        lists_plain.append(plain.index)
        lists_mmr.append(catalog.top_k(q, 10, mmr_lambda=0.3).index)
    ild = [diversity(np.stack(x), len(catalog), embeddings=catalog.embeddings)["intra_list_diversity"]
           for x in (lists_plain, lists_mmr)]
    assert ild[1] > ild[0]


def test_popularity_debias_lowers_the_popularity_of_recommendations(catalog):
    queries = [_query(200 + s) for s in range(30)]
    mean_pop = []
    for beta in (0.0, 1.0):
        lists = np.stack([catalog.top_k(q, 10, popularity_debias=beta).index for q in queries])
        mean_pop.append(diversity(lists, len(catalog), popularity=catalog.popularity)["mean_popularity"])
    assert mean_pop[1] < mean_pop[0]


def test_out_of_range_options_are_rejected(catalog):
    with pytest.raises(CatalogError, match="mmr_lambda"):
        catalog.top_k(_query(4), 5, mmr_lambda=1.5)
    with pytest.raises(CatalogError, match="popularity_debias"):
        catalog.top_k(_query(4), 5, popularity_debias=-1)


def test_add_appends_new_music_and_leaves_the_old_catalog_unchanged(catalog):
    q = _query(5)
    bigger = catalog.add(["fresh"], q[None, :] * 3.0, titles=["Fresh track"])
    assert len(bigger) == len(catalog) + 1 and len(catalog) == 500
    assert bigger.version == catalog.version + 1
    assert bool(bigger.is_new[-1]) and bigger.titles[-1] == "Fresh track"
    top = bigger.top_k(q, 1)
    assert bigger.ids[top.index[0]] == "fresh" and top.scores[0] == pytest.approx(1.0, abs=1e-5)


def test_add_rejects_duplicates_and_wrong_widths(catalog):
    with pytest.raises(CatalogError, match="m0003 is already in the catalog"):
        catalog.add(["m0003"], np.ones((1, 16), np.float32))
    with pytest.raises(CatalogError, match="expected \\(1, 16\\)"):
        catalog.add(["x"], np.ones((1, 8), np.float32))
    with pytest.raises(CatalogError, match="appears more than once"):
        catalog.add(["x", "x"], np.ones((2, 16), np.float32))


def test_save_and_load_round_trip(catalog, tmp_path):
    path = catalog.add(["fresh"], np.ones((1, 16), np.float32)).save(tmp_path / "catalog.parquet")
    loaded = load_catalog(path)
    assert loaded.version == 1 and len(loaded) == 501
    assert np.array_equal(loaded.ids, np.append(catalog.ids, "fresh"))
    assert np.allclose(loaded.embeddings[:500], catalog.embeddings)
    assert np.array_equal(loaded.is_new[:500], catalog.is_new)
    with pytest.raises(CatalogError, match="no catalog file"):
        load_catalog(tmp_path / "missing.parquet")


def test_build_catalog_embeds_music_with_the_model(tiny_dataset):
    from bgmrec.data.contract import load_dataset
    from bgmrec.data.splits import make_split
    from bgmrec.models import create_model
    from bgmrec.models.base import TrainingData

    ds = load_dataset(tiny_dataset)
    model = create_model("cca")
    model.fit(TrainingData(ds, make_split(ds, "weak", 0)))
    built = build_catalog(model, ds.music_vectors, titles=ds.music["title"].tolist(), popularity=ds.popularity)
    assert len(built) == len(ds.music) and list(built.ids) == ds.music["music_id"].tolist()
    video = model.embed_videos(ds.video_vectors.visual[:1], ds.video_vectors.text[:1], ds.video_vectors.has_text[:1])
    scores = model.score(ds.video_vectors.subset(np.arange(1)), ds.music_vectors)[0]
    assert np.array_equal(built.top_k(video[0], 5).index, np.argsort(-scores, kind="stable")[:5])


# A small threshold so that a catalog of 2,000 music is indexed, as 200k+ are in production.
SMALL = CatalogSettings(index_min_size=1000)


def _clustered_catalog(n: int = 2000, d: int = 32, clusters: int = 40, model_version: str = "v1",
                       seed: int = 7) -> MusicCatalog:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d))
    ids = np.array([f"c{i}" for i in range(n)], dtype=object)
    return MusicCatalog(ids, ids, x.astype(np.float32), rng.zipf(1.5, n).astype(float), np.zeros(n, bool),
                        model_version=model_version)


@pytest.fixture(scope="module")
def exact_clustered() -> MusicCatalog:
    return _clustered_catalog()


@pytest.fixture(scope="module")
def indexed(exact_clustered) -> MusicCatalog:
    return exact_clustered.with_index(SMALL)


def _near(catalog: MusicCatalog, row: int, seed: int) -> np.ndarray:
    """A query close to one music (a video whose best match is that music's neighbourhood)."""
    q = catalog.embeddings[row] + 0.3 * _query(seed, catalog.dim)
    return q / np.linalg.norm(q)


def test_catalogs_below_the_threshold_are_searched_exactly(exact_clustered, indexed):
    assert exact_clustered.with_index(CatalogSettings()).index is None  # 2,000 < the default 200,000
    assert indexed.with_index(CatalogSettings()).index is None
    q = _near(exact_clustered, 0, 1)
    cosine = exact_clustered.embeddings @ q
    assert np.array_equal(exact_clustered.top_k(q, 10).index, np.argsort(-cosine, kind="stable")[:10])


def test_index_finds_the_exact_top_k_on_clustered_music(exact_clustered, indexed):
    assert indexed.index is not None and indexed.index.rows == len(indexed) and indexed.index.path is None
    assert indexed.with_index(SMALL) is indexed  # already covers every row: nothing rebuilt
    hits = 0
    for seed in range(40):
        q = _near(exact_clustered, seed * 50, seed)
        truth = exact_clustered.top_k(q, 10).index
        got = indexed.top_k(q, 10)
        np.testing.assert_allclose(got.scores, indexed.embeddings[got.index] @ q, rtol=1e-5)  # exact cosines
        assert np.all(np.diff(got.scores) <= 0)
        hits += len(np.intersect1d(truth, got.index))
    assert hits / 400 >= 0.95


def test_saved_index_is_loaded_not_rebuilt_and_answers_the_same(indexed, tmp_path, monkeypatch):
    path = indexed.save(tmp_path / "catalog.parquet")
    (index_path,) = index_files(path)
    assert index_path.name == "vector.index" and index_path.exists()
    assert index_path.parent.parent == tmp_path / "catalog.parts"

    def no_build(*args, **kwargs):
        raise AssertionError("the saved index should have been loaded")

    monkeypatch.setattr("bgmrec.catalog.build_vector_index", no_build)
    monkeypatch.setattr("bgmrec.catalog_segments.build_vector_index", no_build)
    loaded = load_catalog(path, SMALL)
    assert loaded.index is not None and loaded.index.path == index_path
    assert loaded.with_index(SMALL).index.faiss_index is loaded.index.faiss_index
    for seed in range(10):
        q = _near(indexed, seed * 100, seed)
        want, got = indexed.top_k(q, 10), loaded.top_k(q, 10)
        assert np.array_equal(got.index, want.index)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)


def _other_rows(indexed):
    return indexed.add(["late"], _query(3, indexed.dim)[None, :]).with_index(SMALL)


def _foreign_embeddings(indexed):
    shuffled = indexed.embeddings[np.random.default_rng(0).permutation(len(indexed))]
    return dataclasses.replace(indexed, embeddings=shuffled, index=None).with_index(SMALL)


@pytest.mark.parametrize(("other", "problem"), [
    (_other_rows, "holds 2001 rows of 32 dims, the catalog part it belongs to 2000 of 32"),
    (_foreign_embeddings, "does not find the catalog's music by their own embeddings"),
])
def test_a_stale_or_foreign_index_is_not_used(indexed, tmp_path, caplog, other, problem):
    """An index file of another catalog (more music, other embeddings) put in this one's base is refused with a
    warning naming the mismatch; the catalog is searched exactly."""
    path = indexed.save(tmp_path / "catalog.parquet")
    (target,) = index_files(path)
    (source,) = index_files(other(indexed).save(tmp_path / "other" / "catalog.parquet"))
    shutil.copy(source, target)
    # The manifest records the index's size: make it agree, so the deeper checks are the ones that refuse it.
    table = pq.read_table(path)
    sizes = table.column("index_bytes").to_pylist()
    sizes[0] = target.stat().st_size
    pq.write_table(table.set_column(3, "index_bytes", pa.array(sizes, pa.int64())), path)
    with caplog.at_level(logging.WARNING, logger="bgmrec.catalog"):
        loaded = load_catalog(path, SMALL)
    assert loaded.index is None
    assert problem in caplog.text and "searching the catalog exactly" in caplog.text, caplog.text
    q = _near(loaded, 5, 5)
    assert np.array_equal(loaded.top_k(q, 10).index, np.argsort(-(loaded.embeddings @ q), kind="stable")[:10])


def test_an_index_of_another_size_than_recorded_is_not_used(indexed, tmp_path, caplog):
    path = indexed.save(tmp_path / "catalog.parquet")
    (index_path,) = index_files(path)
    index_path.write_bytes(index_path.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING, logger="bgmrec.catalog"):
        assert load_catalog(path, SMALL).index is None
    assert "the manifest recorded" in caplog.text


def test_add_covers_new_music_and_leaves_the_old_catalog_unchanged(indexed, tmp_path):
    q = _query(11, indexed.dim)
    before = indexed.top_k(q, 10)
    bigger = indexed.add(["fresh"], q[None, :])
    assert bigger.index is indexed.index and indexed.index.rows == len(indexed)  # shared, never modified
    assert bigger.ids[bigger.top_k(q, 1).index[0]] == "fresh"
    again = indexed.top_k(q, 10)
    assert np.array_equal(again.index, before.index) and np.array_equal(again.scores, before.scores)
    assert "fresh" not in set(indexed.ids[again.index])
    # Saved, the index grows to the new music (a copy: the old catalog's index still has its own rows).
    loaded = load_catalog(bigger.save(tmp_path / "catalog.parquet"), SMALL)
    assert loaded.index.rows == len(bigger) and indexed.index.rows == len(indexed)
    assert loaded.ids[loaded.top_k(q, 1).index[0]] == "fresh"
    assert bigger.with_index(SMALL).index.rows == len(bigger)


def test_exclusions_debiasing_and_mmr_are_honoured_with_an_index(exact_clustered, indexed):
    queries = [_near(exact_clustered, seed * 37, seed) for seed in range(30)]
    same = 0
    for q in queries:
        top = indexed.top_k(q, 10)
        excluded = list(indexed.ids[top.index[:5]])
        got = indexed.top_k(q, 10, exclude=excluded)
        assert len(got.index) == 10 and not set(indexed.ids[got.index]) & set(excluded)
        options = {"exclude": excluded, "mmr_lambda": 0.5, "popularity_debias": 0.5}
        same += np.array_equal(indexed.top_k(q, 10, **options).index, exact_clustered.top_k(q, 10, **options).index)
    assert same >= 27  # the options act on the index's candidates as they do on the whole catalog
    mean_pop, ild = [], []
    for beta, lam in ((0.0, 1.0), (1.0, 1.0), (0.0, 0.3)):
        lists = np.stack([indexed.top_k(q, 10, popularity_debias=beta, mmr_lambda=lam).index for q in queries])
        measured = diversity(lists, len(indexed), popularity=indexed.popularity, embeddings=indexed.embeddings)
        mean_pop.append(measured["mean_popularity"])
        ild.append(measured["intra_list_diversity"])
    assert mean_pop[1] < mean_pop[0] and ild[2] > ild[0]


def test_top_k_many_equals_top_k_row_by_row_and_a_bad_row_fails_alone(catalog, indexed):
    k = [1, 5, 10, 3, 7, 4]
    mmr_lambda = [1.0, 1.0, 0.5, 1.0, 0.0, 1.5]  # the last row is invalid
    debias = [0.0, 0.0, 0.0, 2.0, 0.0, 0.0]
    for served in (catalog, indexed):  # one matrix product; one batched index search
        queries = np.stack([_near(served, seed * 70, seed) for seed in range(6)])
        # row 1 excludes 50 music of the catalog, so it asks the index for a larger pool than the others
        exclude = [[], list(served.ids[:50]), [], ["unknown-id"], [], []]
        got = served.top_k_many(queries, k, exclude, mmr_lambda, debias)
        assert len(got) == len(queries)
        for row in range(5):
            one = served.top_k(queries[row], k[row], exclude[row], mmr_lambda[row], debias[row])
            assert np.array_equal(got[row].index, one.index)
            np.testing.assert_allclose(got[row].scores, one.scores, rtol=1e-5, atol=1e-6)
        assert isinstance(got[5], CatalogError) and "mmr_lambda=1.5" in str(got[5])
    for served in (catalog, indexed):  # a batch of one is top_k itself
        q = _near(served, 1, 1)
        single = served.top_k_many(q[None, :], [5], [[]], [1.0], [0.0])[0]
        assert np.array_equal(single.index, served.top_k(q, 5).index)


def test_top_k_many_searches_the_index_once_for_the_whole_batch(indexed, monkeypatch):
    calls = []
    search = VectorIndex.search

    def counted(self, queries, ef):
        calls.append(len(queries))
        return search(self, queries, ef)

    monkeypatch.setattr(VectorIndex, "search", counted)
    queries = np.stack([_near(indexed, seed * 50, seed) for seed in range(8)])
    got = indexed.top_k_many(queries, [10] * 8, [["c1"]] * 8, [1.0] * 8, [0.5] * 8)
    assert calls == [8] and all(len(r.index) == 10 for r in got)


def test_a_loaded_index_grows_when_music_is_added_and_saved(indexed, tmp_path):
    """The new-music pipeline's path: load the saved catalog, add a batch, save; the saved index covers it."""
    path = indexed.save(tmp_path / "catalog.parquet")
    loaded = load_catalog(path, SMALL)
    batch = np.stack([_query(seed, indexed.dim) for seed in range(3)])
    grown = loaded.add(["new-0", "new-1", "new-2"], batch).with_index(SMALL)
    assert grown.index.rows == len(loaded) + 3 and loaded.index.rows == len(loaded)
    again = load_catalog(grown.save(path), SMALL)
    assert again.index.path == index_files(path)[0] and again.index.rows == len(indexed) + 3
    assert [again.ids[again.top_k(q, 1).index[0]] for q in batch] == ["new-0", "new-1", "new-2"]
