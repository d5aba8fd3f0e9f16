"""Ranking and diversity metrics.

- Full-gallery Recall@K (VMCML eq. 7): the share of test videos whose true music is among the top K of the
  whole evaluated gallery. K in {1, 5, 10, 20}.
- IPS Recall@K (CMVAE eqs. 14-15): the true music is ranked among 100 sampled negatives (101 candidates); each
  video is weighted by λ_v = (1/P(v→m)) / Σ_i 1/P(i→m), the inverse popularity of its true music normalised to
  sum 1. K in {10, 15, 20, 25}. A random ranker scores ≈ K/101.

  The candidate set is inferred, not stated: CMVAE section 5.2 defines eqs. 14-15 but not what the true music is
  ranked against. Its Table 2 Random row fits 1 + 100 candidates and rules out the full gallery of 3,003 music
  (which would give 10/3003 ≈ 0.003): Random IPS Recall@10 is 0.0959 (weak) and 0.0978 (strong) against
  10/101 ≈ 0.099; K divided by the reported Random values gives 104, 107, 112, 114 candidates (weak, K = 10..25)
  and 102, 104, 107, 110 (strong): near 101 at every K, far from 3,003 (the paper does not say why the values
  sit slightly below K/101).

The weighted hit ratio is computed as Σ w·hit / Σ w with exactly rounded sums (math.fsum), so a perfect ranker
scores exactly 1.0 and no weighting can push a recall above 1, whatever the popularity vector.

Ties are broken at random in expectation: a true item tied with t others, below g strictly better ones, is a hit
at K with probability clip((K - g) / (t + 1), 0, 1). A constant scorer therefore gets the random ranker's recall.
"""

from __future__ import annotations

import math

import numpy as np

FULL_KS = (1, 5, 10, 20)
IPS_KS = (10, 15, 20, 25)


def hit_probability(greater: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """Probability that the true item lands in the top k, given how many score above it and how many tie."""
    return np.clip((k - greater) / (ties + 1.0), 0.0, 1.0)


def rank_counts(scores: np.ndarray, true_column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, how many candidates score strictly above the true one and how many tie with it."""
    rows = np.arange(scores.shape[0])
    true_score = scores[rows, true_column][:, None]
    greater = (scores > true_score).sum(axis=1)
    ties = (scores == true_score).sum(axis=1) - 1
    return greater, ties


def recall_at_k(scores: np.ndarray, true_column: np.ndarray, ks=FULL_KS) -> dict[str, float]:
    """Full-gallery Recall@K (VMCML eq. 7): scores is (videos, gallery), true_column the true music's column."""
    greater, ties = rank_counts(scores, true_column)
    return recall_from_counts(greater, ties, ks)


def weighted_hit_ratio(hits: np.ndarray, weights: np.ndarray) -> float:
    """Σ w·hit / Σ w (CMVAE eq. 14 with eq. 15's normalisation done here), both sums exactly rounded.

    Each w·hit ≤ w (hit ≤ 1), so the numerator never exceeds the denominator and the ratio never exceeds 1; all
    hits 1 gives the same sum twice, exactly 1.0. Weights need not sum to 1.
    """
    weights = np.asarray(weights, dtype=np.float64)
    total = math.fsum(weights)
    if not total > 0:
        raise ValueError(f"IPS weights sum to {total}; every weight must be a positive inverse popularity")
    return math.fsum(weights * hits) / total


def recall_from_counts(greater: np.ndarray, ties: np.ndarray, ks=FULL_KS, weights: np.ndarray | None = None):
    """Recall@K from rank counts; with weights it is the weighted hit ratio of eq. 14 (`weighted_hit_ratio`)."""
    out = {}
    for k in ks:
        hits = hit_probability(greater, ties, k)
        out[f"recall@{k}"] = float(hits.mean() if weights is None else weighted_hit_ratio(hits, weights))
    return out


def ips_weights(true_popularity: np.ndarray) -> np.ndarray:
    """λ_v of CMVAE eq. 15: inverse popularity of each video's true music, normalised to sum 1 (fsum)."""
    popularity = np.asarray(true_popularity, dtype=np.float64)
    if (popularity <= 0).any():
        row = int(np.flatnonzero(popularity <= 0)[0])
        raise ValueError(f"popularity of row {row} is {popularity[row]:g}; IPS weights need popularity ≥ 1")
    inverse = 1.0 / popularity
    return inverse / math.fsum(inverse)


def ips_recall_at_k(candidate_scores: np.ndarray, true_popularity: np.ndarray, ks=IPS_KS) -> dict[str, float]:
    """IPS Recall@K (CMVAE eqs. 14-15). candidate_scores is (videos, 1 + negatives), column 0 the true music."""
    greater, ties = rank_counts(candidate_scores, np.zeros(len(candidate_scores), dtype=np.int64))
    values = recall_from_counts(greater, ties, ks, ips_weights(true_popularity))
    return {f"ips_{key}": value for key, value in values.items()}


def gini(counts: np.ndarray, n_items: int | None = None) -> float:
    """Gini coefficient of exposure counts (0 = every item shown equally, → 1 = one item takes all).

    `n_items` > len(counts) means the other n_items - len(counts) items have count 0 (pass only the shown items'
    counts: the cost is then that of the shown items, not of the whole catalog).
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x) if n_items is None else int(n_items)
    if n < len(x):
        raise ValueError(f"gini: {len(x)} counts for n_items={n}")
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)  # the implicit zeros sort first and add 0 to every cumulative share
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)


def diversity(
    lists: np.ndarray,
    catalog_size: int,
    popularity: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    is_new: np.ndarray | None = None,
) -> dict[str, float]:
    """Diversity of a set of recommendation lists (rows of catalog indices).

    coverage: share of the catalog shown at least once; gini: of exposure over the catalog; entropy: of the
    exposure distribution, in nats, normalised by log(catalog size); intra_list_diversity: mean over lists of
    1 - mean pairwise cosine of the listed music's embeddings; new_share: share of slots given to new music;
    mean_popularity: mean popularity of the recommended music.
    """
    lists = np.asarray(lists, dtype=np.int64)
    if lists.ndim != 2 or lists.size == 0:
        raise ValueError("diversity needs a non-empty 2-d array of catalog indices (lists x slots)")
    # exposure of the shown items only: O(slots), not O(catalog) (a 1M catalog is gauged every second in serving)
    shown, counts = np.unique(lists.reshape(-1), return_counts=True)
    if shown[0] < 0 or shown[-1] >= catalog_size:
        raise ValueError(f"diversity: catalog index {shown[0] if shown[0] < 0 else shown[-1]} is outside "
                         f"a catalog of {catalog_size}")
    p = counts / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    out = {
        "coverage": len(shown) / catalog_size,
        "gini": gini(counts, catalog_size),
        "entropy": entropy / np.log(catalog_size) if catalog_size > 1 else 0.0,
    }
    if embeddings is not None and lists.shape[1] > 1:
        e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        listed = e[lists]
        sims = np.einsum("nid,njd->nij", listed, listed)
        k = lists.shape[1]
        off_diagonal = (sims.sum(axis=(1, 2)) - np.trace(sims, axis1=1, axis2=2)) / (k * (k - 1))
        out["intra_list_diversity"] = float((1.0 - off_diagonal).mean())
    if is_new is not None:
        out["new_share"] = float(np.asarray(is_new, dtype=bool)[lists].mean())
    if popularity is not None:
        out["mean_popularity"] = float(np.asarray(popularity, dtype=np.float64)[lists].mean())
    return out
