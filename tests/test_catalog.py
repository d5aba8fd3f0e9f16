"""The music catalog: exact top-K, exclusions, MMR, popularity debiasing, add, save/load, build from a model."""

from __future__ import annotations

import numpy as np
import pytest

from bgmrec.catalog import CatalogError, MusicCatalog, build_catalog, load_catalog
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


def _clustered_catalog(n: int = 4000, d: int = 16, clusters: int = 40) -> MusicCatalog:
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d))
    ids = np.array([f"c{i}" for i in range(n)], dtype=object)
    return MusicCatalog(ids, ids, x.astype(np.float32), rng.zipf(1.5, n).astype(float), np.zeros(n, bool))


def test_coarse_index_keeps_the_music_and_finds_the_exact_top_k_mostly():
    exact = _clustered_catalog()
    indexed = exact.with_index()
    assert indexed.index is not None and sorted(indexed.ids) == sorted(exact.ids)
    hits = 0
    for seed in range(30):
        q = exact.embeddings[seed * 100] + 0.05 * _query(seed)
        q = q / np.linalg.norm(q)
        truth = set(exact.ids[exact.top_k(q, 10).index])
        got = indexed.top_k(q, 10)
        assert np.all(np.diff(got.scores) <= 0)
        assert set(indexed.ids[indexed.top_k(q, 10, exact=True).index]) == truth
        hits += len(truth & set(indexed.ids[got.index]))
    assert hits / 300 >= 0.9


def test_coarse_index_serves_added_music_exclusions_and_mmr():
    indexed = _clustered_catalog().with_index()
    q = _query(11)
    bigger = indexed.add(["fresh"], q[None, :])
    assert bigger.ids[bigger.top_k(q, 1).index[0]] == "fresh"
    top = bigger.top_k(q, 5)
    excluded = list(bigger.ids[top.index[:2]])
    got = bigger.top_k(q, 5, exclude=excluded, mmr_lambda=0.5, popularity_debias=0.5)
    assert len(got.index) == 5 and not set(bigger.ids[got.index]) & set(excluded)


def test_n_probe_per_query_trades_recall_for_work():
    """Probing every list is exact search; probing one list scores only that list's music."""
    exact = _clustered_catalog()
    indexed = exact.with_index()
    n_lists = len(indexed.index.centroids)
    for seed in range(5):
        q = _query(seed)
        truth = exact.ids[exact.top_k(q, 10).index]
        assert list(indexed.ids[indexed.top_k(q, 10, n_probe=n_lists).index]) == list(truth)
        one = indexed.top_k(q, 10, n_probe=1)
        (start, stop), = indexed.index.candidate_slices(q, len(indexed), n_probe=1)
        assert np.all((one.index >= start) & (one.index < stop))


def test_top_k_many_equals_top_k_row_by_row_and_a_bad_row_fails_alone(catalog):
    queries = np.stack([_query(seed) for seed in range(6)])
    k = [1, 5, 10, 3, 7, 4]
    exclude = [[], list(catalog.ids[:50]), [], ["unknown-id"], [], []]
    mmr_lambda = [1.0, 1.0, 0.5, 1.0, 0.0, 1.5]  # the last row is invalid
    debias = [0.0, 0.0, 0.0, 2.0, 0.0, 0.0]
    for served in (catalog, _clustered_catalog(d=16).with_index()):  # one matrix product, and per-query probing
        if served is not catalog:
            queries = queries + 0.01  # any unit queries will do for the indexed catalog
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        got = served.top_k_many(queries, k, exclude, mmr_lambda, debias)
        assert len(got) == len(queries)
        for row in range(5):
            one = served.top_k(queries[row], k[row], exclude[row], mmr_lambda[row], debias[row])
            assert np.array_equal(got[row].index, one.index)
            np.testing.assert_allclose(got[row].scores, one.scores, rtol=1e-5, atol=1e-6)
        assert isinstance(got[5], CatalogError) and "mmr_lambda=1.5" in str(got[5])
    single = catalog.top_k_many(queries[:1], [5], [[]], [1.0], [0.0])[0]
    assert np.array_equal(single.index, catalog.top_k(queries[0], 5).index)
