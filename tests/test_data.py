"""Dataset contract, splits and the simulator."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bgmrec.cli import app
from bgmrec.data.contract import DatasetError, load_dataset
from bgmrec.data.simulate import SCALES, popularity_counts
from bgmrec.data.splits import load_split, make_split, popularity_strata, save_split

pytestmark = pytest.mark.unit


def _copy(src, dst):
    for f in src.glob("*.parquet"):
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_tiny_dataset_loads_with_dims_from_data(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    assert ds.dims == {"audio_embedding": 16, "audio_lld": 16, "visual": 64, "text": 32}
    assert len(ds.video_vectors) == len(ds.videos)
    assert (~ds.video_vectors.has_text).any() and ds.video_vectors.has_text.any()
    assert np.all(ds.video_vectors.text[~ds.video_vectors.has_text] == 0)


@pytest.mark.parametrize(
    "corrupt,expected",
    [
        ("duplicate", "video_id v0000001: duplicate id"),
        ("orphan", "music_id m99999 is not in music.parquet"),
        ("length", "'visual' has 63 values, expected 64"),
        ("nan", "'audio_lld' contains NaN"),
    ],
)
def test_bad_dataset_rejected_naming_file_id_problem(tiny_dataset, tmp_path, corrupt, expected):
    _copy(tiny_dataset, tmp_path)
    if corrupt == "duplicate":
        v = pd.read_parquet(tmp_path / "videos.parquet")
        v.loc[2, "video_id"] = "v0000001"
        v.to_parquet(tmp_path / "videos.parquet")
    elif corrupt == "orphan":
        v = pd.read_parquet(tmp_path / "videos.parquet")
        v.loc[3, "music_id"] = "m99999"
        v.to_parquet(tmp_path / "videos.parquet")
    elif corrupt == "length":
        f = pd.read_parquet(tmp_path / "video_features.parquet")
        f.at[5, "visual"] = f.at[5, "visual"][:63]
        f.to_parquet(tmp_path / "video_features.parquet")
    else:
        f = pq.read_table(tmp_path / "music_features.parquet").to_pandas()
        row = np.array(f.at[7, "audio_lld"], dtype=np.float32)
        row[3] = np.nan
        f.at[7, "audio_lld"] = row
        f.to_parquet(tmp_path / "music_features.parquet")
    with pytest.raises(DatasetError, match=expected):
        load_dataset(tmp_path)
    result = CliRunner().invoke(app, ["check-dataset", "--dataset", str(tmp_path)])
    assert result.exit_code != 0
    assert expected.split(":")[0] in result.output or expected in result.output


def test_splits_are_disjoint_deterministic_and_strong_music_unseen(tiny_dataset, tmp_path):
    ds = load_dataset(tiny_dataset)
    weak = make_split(ds, "weak", seed=3)
    assert np.array_equal(weak.part, make_split(ds, "weak", seed=3).part)
    assert set(weak.part) == {"train", "val", "test"}
    assert set(weak.music_of(ds, "test")) <= set(weak.music_of(ds, "train"))
    strong = make_split(ds, "strong", seed=3)
    train_music = set(strong.music_of(ds, "train"))
    assert not (set(strong.music_of(ds, "test")) & train_music)
    assert not (set(strong.music_of(ds, "val")) & train_music)
    # every video in exactly one part; negatives never contain the true music
    for s in (weak, strong):
        assert len(s.part) == len(ds.videos)
        for i in s.index("test"):
            assert ds.video_music_index[i] not in s.negatives[i]
    saved = load_split(save_split(strong, ds, tmp_path / "strong.parquet"), ds)
    assert np.array_equal(saved.part, strong.part)
    assert all(np.array_equal(a, b) for a, b in zip(saved.negatives, strong.negatives, strict=True))


def test_strong_split_preserves_popularity_strata():
    rng = np.random.default_rng(0)
    pop = popularity_counts(SCALES["tt150k"], rng)
    strata = popularity_strata(pop)
    from bgmrec.data.contract import Dataset

    music = pd.DataFrame({"music_id": [f"m{i}" for i in range(len(pop))]})
    index = np.repeat(np.arange(len(pop)), pop)
    videos = pd.DataFrame({"video_id": [f"v{i}" for i in range(len(index))], "music_id": music.music_id[index].values})
    ds = Dataset(root=None, music=music, videos=videos, video_music_index=index)
    s = make_split(ds, "strong", seed=0, n_negatives=0)
    for part, share in (("train", 0.8), ("test", 0.1)):
        music_in = s.music_of(ds, part)
        for stratum in range(strata.max() + 1):
            members = (strata == stratum).sum()
            got = (strata[music_in] == stratum).sum()
            assert got == pytest.approx(share * members, abs=2)


def test_tt150k_popularity_matches_cmvae_table_1():
    pop = popularity_counts(SCALES["tt150k"], np.random.default_rng(0))
    assert len(pop) == 3003
    assert pop.sum() == pytest.approx(146351, rel=0.002)
    assert pop.min() >= 3 and pop.max() <= 219
    assert pop.mean() == pytest.approx(49, abs=1)
