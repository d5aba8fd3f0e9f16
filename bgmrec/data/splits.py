"""Weak and strong generalization splits (CMVAE section 3.3) and the IPS negatives of each split.

- weak: each music's videos are split 8:1:1 into train/val/test; every music keeps at least one training video
  (a music with a single video trains on it), so every val/test music is seen in training.
- strong: music split 8:1:1 inside each popularity stratum, with all their videos; test music is never seen.
- seen-unseen: VMCML's protocol (bgmrec.data.seen_unseen): seen music's videos 20:1:4, unseen music's videos in
  the part `unseen`, evaluated against the seen and the unseen music respectively.

Both are deterministic by seed and saved, with the 100 sampled IPS negatives of each val/test video, so every
model is evaluated on the same videos and the same candidates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bgmrec.data.contract import Dataset
from bgmrec.data.seen_unseen import MUSIC_SET_COLUMN, UNSEEN_PART, seen_unseen_labels, unseen_music
from bgmrec.data.split_kinds import SEEN_UNSEEN, SPLIT_KINDS

PARTS = ("train", "val", "test", UNSEEN_PART)
RATIOS = (0.8, 0.1, 0.1)
N_NEGATIVES = 100
N_STRATA = 5


@dataclass
class Split:
    """A split of a dataset's videos. `part[i]` is 'train'/'val'/'test' for `video_ids[i]`.

    `negatives[i]` holds the music row indices (into the dataset's music table) sampled as IPS negatives for
    val/test video i, or is empty for train videos.
    """

    kind: str
    seed: int
    video_ids: np.ndarray
    part: np.ndarray
    negatives: list[np.ndarray]
    n_negatives_requested: int = N_NEGATIVES

    def index(self, part: str) -> np.ndarray:
        """Row indices (into the dataset's videos) of one part."""
        return np.flatnonzero(self.part == part)

    def music_of(self, dataset: Dataset, part: str) -> np.ndarray:
        """Music row indices used by the videos of one part, sorted."""
        return np.unique(dataset.video_music_index[self.index(part)])

    def music_without_training_video(self, dataset: Dataset) -> np.ndarray:
        """Music rows with videos in the dataset but none in the training part (empty for a weak split)."""
        used = np.unique(dataset.video_music_index)
        return np.setdiff1d(used, self.music_of(dataset, "train"))

    def gallery(self, dataset: Dataset, part: str) -> np.ndarray:
        """The music ranked for a part ("every music of the evaluated set").

        weak: the whole catalog (all music has training videos). strong: the music of that part only, so test
        music is unseen (VMCML's unseen set, CMVAE's new music).
        """
        if self.kind == "weak":
            return np.arange(len(dataset.music))
        if self.kind == SEEN_UNSEEN and part != UNSEEN_PART:
            return self.music_of(dataset, "train")
        return self.music_of(dataset, part)


def _fractional_assign(n: int, rng: np.random.Generator) -> np.ndarray:
    """Assign n shuffled items to train/val/test in the ratio 8:1:1, exactly in expectation.

    Item at shuffled position i gets u = (i + offset) / n with a random offset; u < .8 → train, < .9 → val, else
    test. Small groups still get a test item with the right probability, and position 0 is always train (n ≥ 2).
    """
    order = rng.permutation(n)
    u = (np.arange(n) + rng.random()) / n
    labels = np.where(u < RATIOS[0], 0, np.where(u < RATIOS[0] + RATIOS[1], 1, 2))
    out = np.empty(n, dtype=np.int64)
    out[order] = labels
    return out


def popularity_strata(popularity: np.ndarray, n_strata: int = N_STRATA) -> np.ndarray:
    """Stratum (0 = least popular) of each music by popularity quantile."""
    ranks = pd.Series(popularity).rank(method="first").to_numpy()
    return np.minimum((ranks - 1) * n_strata // len(popularity), n_strata - 1).astype(np.int64)


def make_split(dataset: Dataset, kind: str, seed: int = 0, n_negatives: int = N_NEGATIVES) -> Split:
    """Build the weak or strong split and sample the IPS negatives of its val and test videos."""
    if kind not in SPLIT_KINDS:
        raise ValueError(f"unknown split kind '{kind}', expected one of {', '.join(SPLIT_KINDS)}")
    rng = np.random.default_rng(seed)
    music_index = dataset.video_music_index
    labels = np.zeros(len(music_index), dtype=np.int64)
    if kind == "weak":
        order = np.argsort(music_index, kind="stable")
        bounds = np.flatnonzero(np.diff(music_index[order])) + 1
        for group in np.split(order, bounds):
            # a group of n ≥ 2 always has a training video (`_fractional_assign`); a music with one video gets
            # it as training. The draw is still made so every other music's assignment is unchanged by the rule.
            assigned = _fractional_assign(len(group), rng)
            labels[group] = assigned if len(group) > 1 else PARTS.index("train")
    elif kind == "strong":
        strata = popularity_strata(dataset.popularity)
        music_label = np.zeros(len(dataset.music), dtype=np.int64)
        for s in np.unique(strata):
            members = np.flatnonzero(strata == s)
            music_label[members] = _fractional_assign(len(members), rng)
        labels = music_label[music_index]
    elif kind == SEEN_UNSEEN:
        music_set = dataset.music[MUSIC_SET_COLUMN].to_numpy() if MUSIC_SET_COLUMN in dataset.music else None
        unseen = unseen_music(music_set, popularity_strata(dataset.popularity), rng)
        labels = seen_unseen_labels(music_index, unseen, rng, PARTS)
    part = np.array(PARTS, dtype=object)[labels]
    split = Split(kind, seed, dataset.videos["video_id"].to_numpy().astype(object), part, [], n_negatives)
    neg_rng = np.random.default_rng(seed + 1)
    negatives: list[np.ndarray] = [np.zeros(0, np.int64)] * len(part)
    for name in ("val", "test", UNSEEN_PART):
        gallery = split.gallery(dataset, name)
        for i in split.index(name):
            pool = gallery[gallery != music_index[i]]
            take = min(n_negatives, len(pool))
            negatives[i] = np.sort(neg_rng.choice(pool, size=take, replace=False))
    split.negatives = negatives
    return split


def save_split(split: Split, dataset: Dataset, path: str | Path) -> Path:
    """Save a split as parquet (video_id, part, negatives as music ids) with its seed and kind as metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    music_ids = dataset.music["music_id"].to_numpy().astype(str)
    table = pa.table(
        {
            "video_id": pa.array(split.video_ids.astype(str)),
            "part": pa.array(split.part.astype(str)),
            "negatives": pa.array([music_ids[n].tolist() for n in split.negatives], type=pa.list_(pa.string())),
        }
    )
    meta = {"kind": split.kind, "seed": split.seed, "n_negatives": split.n_negatives_requested}
    table = table.replace_schema_metadata({b"bgmrec_split": json.dumps(meta).encode()})
    pq.write_table(table, path)
    return path


def load_split(path: str | Path, dataset: Dataset) -> Split:
    """Load a saved split and map it onto the dataset's row order. Fails if the split does not fit the dataset."""
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"bgmrec_split"])
    frame = table.to_pandas()
    video_pos = pd.Index(frame["video_id"]).get_indexer(dataset.videos["video_id"])
    if (video_pos < 0).any() or len(frame) != len(dataset.videos):
        raise ValueError(f"split {path} does not match dataset {dataset.root}: video ids differ; re-run `bgmrec split`")
    frame = frame.iloc[video_pos].reset_index(drop=True)
    music_pos = pd.Index(dataset.music["music_id"])
    negatives = [
        music_pos.get_indexer(n).astype(np.int64) if n is not None and len(n) else np.zeros(0, np.int64)
        for n in frame["negatives"]
    ]
    return Split(
        meta["kind"],
        int(meta["seed"]),
        frame["video_id"].to_numpy().astype(object),
        frame["part"].to_numpy().astype(object),
        negatives,
        int(meta["n_negatives"]),
    )


def split_path(dataset_root: str | Path, kind: str) -> Path:
    """Where a dataset's split of a kind lives by default."""
    return Path(dataset_root) / "splits" / f"{kind}.parquet"


def load_or_make_split(dataset: Dataset, kind: str, seed: int = 0) -> Split:
    """The saved split of the dataset if it exists (so every model sees the same one), else a new saved one.

    A saved weak split in which a music has no training video breaks the weak rule and is replaced by a new one,
    as a saved split of another seed is.
    """
    path = split_path(dataset.root, kind)
    if path.exists():
        split = load_split(path, dataset)
        stale = split.kind == "weak" and len(split.music_without_training_video(dataset)) > 0
        if split.seed == seed and not stale:
            return split
    split = make_split(dataset, kind, seed)
    save_split(split, dataset, path)
    return split
