"""Evaluate any recommender on one part of a split with both protocols in one pass over the scores.

The gallery is the music of the evaluated set (Split.gallery); full-gallery Recall@K ranks all of it, IPS
Recall@K ranks the true music among the split's saved negatives (gathered from the same score rows), each video
weighted by the inverse popularity of its true music (popularity = videos per music over the whole dataset).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bgmrec.data.contract import Dataset
from bgmrec.data.splits import Split
from bgmrec.metrics import FULL_KS, IPS_KS, ips_weights, rank_counts, recall_from_counts
from bgmrec.models.base import Recommender

SCORE_CHUNK = 2048


def evaluate(
    model: Recommender,
    dataset: Dataset,
    split: Split,
    part: str = "test",
    drop_text: bool = False,
    ks=FULL_KS,
    ips_ks=IPS_KS,
) -> dict[str, Any]:
    """Recall@K (full gallery) and IPS Recall@K of a model on a split part; drop_text removes descriptions."""
    if dataset.video_vectors is None or dataset.music_vectors is None:
        raise ValueError(f"dataset {dataset.root} has no feature vectors; run `bgmrec extract` first")
    rows = split.index(part)
    if len(rows) == 0:
        raise ValueError(f"split '{split.kind}' has no {part} videos")
    gallery = split.gallery(dataset, part)
    music = dataset.music_vectors.subset(gallery)
    true_music = dataset.video_music_index[rows]
    true_column = np.searchsorted(gallery, true_music)
    negatives = [split.negatives[i] for i in rows]
    n_neg = min(len(n) for n in negatives)
    if any(len(n) != n_neg for n in negatives):
        raise ValueError(f"split '{split.kind}' {part}: videos have different numbers of IPS negatives")
    neg_columns = np.searchsorted(gallery, np.stack(negatives)) if n_neg else np.zeros((len(rows), 0), np.int64)
    videos = dataset.video_vectors.subset(rows)
    if drop_text:
        videos = videos.without_text()
    greater = np.zeros(len(rows), np.int64)
    ties = np.zeros(len(rows), np.int64)
    ips_greater = np.zeros(len(rows), np.int64)
    ips_ties = np.zeros(len(rows), np.int64)
    for start in range(0, len(rows), SCORE_CHUNK):
        sl = slice(start, start + SCORE_CHUNK)
        scores = np.asarray(model.score(videos.subset(np.arange(len(rows))[sl]), music), dtype=np.float64)
        g, t = rank_counts(scores, true_column[sl])
        greater[sl], ties[sl] = g, t
        chunk_rows = np.arange(scores.shape[0])[:, None]
        candidates = np.concatenate(
            [scores[chunk_rows[:, 0], true_column[sl]][:, None], scores[chunk_rows, neg_columns[sl]]], 1
        )
        g, t = rank_counts(candidates, np.zeros(len(candidates), np.int64))
        ips_greater[sl], ips_ties[sl] = g, t
    weights = ips_weights(dataset.popularity[true_music])
    result: dict[str, Any] = recall_from_counts(greater, ties, ks)
    result.update({f"ips_{k}": v for k, v in recall_from_counts(ips_greater, ips_ties, ips_ks, weights).items()})
    result.update(
        {
            "n_videos": int(len(rows)),
            "gallery_size": int(len(gallery)),
            "n_negatives": int(n_neg),
        }
    )
    if n_neg < split.n_negatives_requested:
        result["note"] = (
            f"only {n_neg} negatives available in the {part} gallery (asked for {split.n_negatives_requested}); "
            f"IPS Recall@K ranks among {n_neg + 1} candidates"
        )
    return result
