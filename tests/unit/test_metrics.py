"""Metric limits, golden values and the random ranker's expectations (both protocols)."""

import numpy as np
import pytest

from bgmrec.metrics import diversity, gini, ips_recall_at_k, ips_weights, recall_at_k, weighted_hit_ratio

pytestmark = pytest.mark.unit


def test_perfect_ranker_scores_one_and_reversed_zero():
    n = 50
    true = np.arange(n)
    perfect = np.eye(n)
    assert all(v == 1.0 for v in recall_at_k(perfect, true).values())
    reversed_scores = -np.eye(n)
    assert all(v == 0.0 for v in recall_at_k(reversed_scores, true, ks=(1, 5, 10, 20)).values())
    cand = np.zeros((n, 101))
    cand[:, 0] = 1
    pop = np.arange(1, n + 1)
    assert all(v == 1.0 for v in ips_recall_at_k(cand, pop).values())
    assert all(v == 0.0 for v in ips_recall_at_k(-cand, pop).values())


def test_full_gallery_golden_value():
    # 3 videos, gallery of 4: true ranks 1, 3 and 2 → Recall@1 = 1/3, Recall@2 = 2/3, Recall@3 = 1.
    scores = np.array([[0.9, 0.1, 0.2, 0.3], [0.5, 0.4, 0.1, 0.6], [0.2, 0.8, 0.3, 0.1]])
    true = np.array([0, 1, 2])
    r = recall_at_k(scores, true, ks=(1, 2, 3))
    assert r == {"recall@1": pytest.approx(1 / 3), "recall@2": pytest.approx(2 / 3), "recall@3": pytest.approx(1.0)}


def test_ips_golden_value():
    # two videos; video 0's true music has popularity 1 (weight 2/3), video 1's popularity 2 (weight 1/3).
    # video 0's true item ranks 1st, video 1's ranks 3rd: IPS Recall@1 = 2/3, @2 = 2/3, @3 = 1.
    cand = np.array([[0.9, 0.1, 0.2], [0.1, 0.5, 0.4]])
    r = ips_recall_at_k(cand, np.array([1, 2]), ks=(1, 2, 3))
    assert r["ips_recall@1"] == pytest.approx(2 / 3)
    assert r["ips_recall@2"] == pytest.approx(2 / 3)
    assert r["ips_recall@3"] == pytest.approx(1.0)
    assert ips_weights(np.array([1, 2])).sum() == pytest.approx(1.0)


# popularity vectors whose normalised inverse weights, summed the plain floating-point way, exceed 1
ADVERSARIAL_POPULARITY = [
    [7] * 7,
    [111, 133, 213, 160, 139, 120, 123, 205, 61, 179, 147],
]


@pytest.mark.parametrize("popularity", ADVERSARIAL_POPULARITY)
def test_perfect_ranker_ips_recall_is_exactly_one_on_adversarial_popularity(popularity):
    popularity = np.array(popularity)
    inverse = 1.0 / popularity
    assert (inverse / inverse.sum()).sum() > 1.0  # the vector does break the plain weighted sum
    cand = np.zeros((len(popularity), 101))
    cand[:, 0] = 1.0
    for value in ips_recall_at_k(cand, popularity).values():
        assert value == 1.0  # exact, no clamp and no approx
    assert weighted_hit_ratio(np.ones(len(popularity)), ips_weights(popularity)) == 1.0


def test_weighted_hit_ratio_never_exceeds_one_and_rejects_bad_popularity():
    rng = np.random.default_rng(7)
    for _ in range(200):
        pop = rng.integers(1, 300, rng.integers(2, 60))
        assert weighted_hit_ratio(np.ones(len(pop)), ips_weights(pop)) == 1.0
        hits = rng.random(len(pop))
        assert 0.0 <= weighted_hit_ratio(hits, ips_weights(pop)) <= 1.0
    with pytest.raises(ValueError, match="popularity of row 1 is 0"):
        ips_weights(np.array([3, 0, 2]))


def test_ties_are_broken_at_random_in_expectation():
    scores = np.zeros((4, 10))
    r = recall_at_k(scores, np.zeros(4, dtype=int), ks=(1, 5))
    assert r["recall@1"] == pytest.approx(0.1)
    assert r["recall@5"] == pytest.approx(0.5)


@pytest.mark.parametrize("n_music,k,paper", [(265, 10, 0.0377), (1024, 10, 0.0098)])
def test_random_full_gallery_matches_k_over_n_and_vmcml_random_rows(n_music, k, paper):
    rng = np.random.default_rng(0)
    n = 4000
    r = recall_at_k(rng.random((n, n_music)), rng.integers(0, n_music, n), ks=(k,))
    assert r[f"recall@{k}"] == pytest.approx(k / n_music, abs=3 * np.sqrt(k / n_music / n))
    assert k / n_music == pytest.approx(paper, abs=5e-4)


def test_random_ips_recall_is_k_over_101():
    rng = np.random.default_rng(1)
    n = 20000
    pop = rng.integers(3, 220, n)
    r = ips_recall_at_k(rng.random((n, 101)), pop)
    for k in (10, 15, 20, 25):
        assert r[f"ips_recall@{k}"] == pytest.approx(k / 101, abs=0.02)
    assert r["ips_recall@10"] == pytest.approx(0.0959, abs=0.02)  # CMVAE Table 2, Random R@10


def test_gini_limits():
    assert gini(np.ones(10)) == pytest.approx(0.0)
    one_takes_all = np.zeros(1000)
    one_takes_all[0] = 5
    assert gini(one_takes_all) == pytest.approx(1.0, abs=1e-2)


def test_gini_of_the_shown_items_with_implicit_zeros_equals_the_dense_gini():
    rng = np.random.default_rng(3)
    dense = np.zeros(5000)
    shown = rng.choice(5000, 300, replace=False)
    dense[shown] = rng.zipf(1.7, 300)
    assert gini(dense[shown], n_items=5000) == pytest.approx(gini(dense), rel=1e-12)
    assert gini(np.ones(10), n_items=20) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="n_items=3"):
        gini(np.ones(5), n_items=3)


def test_diversity_exposure_metrics_match_their_dense_definitions():
    rng = np.random.default_rng(4)
    lists = rng.zipf(1.5, (400, 10)) % 20000
    counts = np.bincount(lists.reshape(-1), minlength=20000)
    p = counts[counts > 0] / counts.sum()
    d = diversity(lists, 20000)
    assert d["coverage"] == pytest.approx((counts > 0).mean())
    assert d["gini"] == pytest.approx(gini(counts), rel=1e-12)
    assert d["entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(20000))
    with pytest.raises(ValueError, match="outside a catalog of 20"):
        diversity(np.array([[3, 25]]), 20)


def test_diversity_of_identical_and_spread_lists():
    emb = np.eye(20)
    same = np.tile(np.arange(5), (10, 1))
    spread = np.arange(20).reshape(4, 5)
    d_same = diversity(same, 20, popularity=np.arange(20), embeddings=emb, is_new=np.arange(20) >= 15)
    d_spread = diversity(spread, 20, popularity=np.arange(20), embeddings=emb, is_new=np.arange(20) >= 15)
    assert d_same["coverage"] == 0.25 and d_spread["coverage"] == 1.0
    assert d_spread["gini"] == pytest.approx(0.0) and d_same["gini"] > 0.7
    assert d_spread["entropy"] == pytest.approx(1.0) and d_same["entropy"] < d_spread["entropy"]
    assert d_same["intra_list_diversity"] == pytest.approx(1.0)
    assert d_same["new_share"] == 0.0 and d_spread["new_share"] == 0.25
    assert d_same["mean_popularity"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        diversity(np.zeros((0,)), 20)
