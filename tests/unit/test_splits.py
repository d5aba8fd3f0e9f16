"""Weak split on a long-tailed catalog: every music keeps a training video, whatever its number of videos."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bgmrec.data.contract import Dataset
from bgmrec.data.splits import load_or_make_split, make_split, save_split, split_path

pytestmark = pytest.mark.unit


def long_tailed_dataset(root=None, seed: int = 0) -> Dataset:
    """400 music: a quarter with 1 video, a quarter with 2, the rest with 3-60 (Zipf-like head)."""
    rng = np.random.default_rng(seed)
    counts = np.concatenate([np.ones(100), np.full(100, 2), np.minimum(rng.zipf(1.6, 200) + 2, 60)]).astype(int)
    rng.shuffle(counts)
    music = pd.DataFrame({"music_id": [f"m{i}" for i in range(len(counts))]})
    index = np.repeat(np.arange(len(counts)), counts)
    videos = pd.DataFrame({"video_id": [f"v{i}" for i in range(len(index))], "music_id": music.music_id[index].values})
    return Dataset(root=root, music=music, videos=videos, video_music_index=index)


@pytest.mark.parametrize("seed", range(5))
def test_every_weak_music_keeps_a_training_video(seed):
    ds = long_tailed_dataset(seed=seed)
    split = make_split(ds, "weak", seed=seed, n_negatives=10)
    assert len(split.music_without_training_video(ds)) == 0
    train_music = set(split.music_of(ds, "train"))
    assert set(split.music_of(ds, "val")) <= train_music
    assert set(split.music_of(ds, "test")) <= train_music
    popularity = ds.popularity
    train_counts = np.bincount(ds.video_music_index[split.index("train")], minlength=len(popularity))
    assert (train_counts[popularity == 1] == 1).all()
    assert (train_counts[popularity == 2] >= 1).all()
    # music with two videos still give some of their second videos to val/test
    assert (train_counts[popularity == 2] == 1).any()
    # the split stays near 8:1:1 overall
    shares = {part: (split.part == part).mean() for part in ("train", "val", "test")}
    assert shares["train"] == pytest.approx(0.8, abs=0.05)
    assert shares["test"] == pytest.approx(0.1, abs=0.03)


def test_strong_split_still_holds_out_whole_music_of_one_video():
    ds = long_tailed_dataset()
    split = make_split(ds, "strong", seed=0, n_negatives=0)
    held_out = split.music_without_training_video(ds)
    assert len(held_out) > 0
    assert (ds.popularity[held_out] == 1).any()


def test_saved_weak_split_without_training_video_for_a_music_is_replaced(tmp_path):
    ds = long_tailed_dataset(root=tmp_path)
    broken = make_split(ds, "weak", seed=0, n_negatives=5)
    single = np.flatnonzero(ds.popularity == 1)[0]
    broken.part[ds.video_music_index == single] = "test"
    save_split(broken, ds, split_path(tmp_path, "weak"))
    assert len(broken.music_without_training_video(ds)) == 1
    loaded = load_or_make_split(ds, "weak", seed=0)
    assert len(loaded.music_without_training_video(ds)) == 0
    assert np.array_equal(loaded.part, make_split(ds, "weak", seed=0).part)


@pytest.mark.parametrize("seed", range(3))
def test_every_seen_music_keeps_a_training_video_in_a_seen_unseen_split(seed):
    # a seen music with one video used to land in val or test with a probability of 1/5: its video was then
    # ranked against a seen gallery that could not hold its music
    ds = long_tailed_dataset(seed=seed)
    split = make_split(ds, "seen-unseen", seed=seed, n_negatives=10)
    train_music = set(split.music_of(ds, "train"))
    assert set(split.music_of(ds, "val")) <= train_music
    assert set(split.music_of(ds, "test")) <= train_music
    assert not train_music & set(split.music_of(ds, "unseen"))
