"""Dataset contract, splits and the simulator."""

import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bgmrec.cli import app
from bgmrec.data.contract import MAX_NAMED_ROWS, DatasetError, load_dataset
from bgmrec.data.presets import PRESETS
from bgmrec.data.simulate import popularity_counts
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


def _zero_vector(root, file, column, row):
    frame = pd.read_parquet(root / file)
    frame.at[row, column] = np.zeros(len(frame.at[row, column]), np.float32)
    frame.to_parquet(root / file)
    return frame.iat[row, 0]


def _duplicate_row(root, file, row):
    frame = pd.read_parquet(root / file)
    pd.concat([frame, frame.iloc[[row]]], ignore_index=True).to_parquet(root / file)
    return frame.iat[row, 0]


@pytest.mark.parametrize(
    "corrupt,expected",
    [
        ("duplicate", "video_id v0000001: duplicate id (2 rows)"),
        ("orphan", "videos.parquet: video v0000003: music_id m99999 is not in music.parquet"),
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
    with pytest.raises(DatasetError, match=re.escape(expected)):
        load_dataset(tmp_path)
    result = CliRunner().invoke(app, ["check-dataset", "--dataset", str(tmp_path)])
    assert result.exit_code == 1
    assert expected in result.output


@pytest.mark.parametrize(
    "file,column,id_column,row",
    [
        ("video_features.parquet", "visual", "video_id", 6),
        ("video_features.parquet", "text", "video_id", None),
        ("music_features.parquet", "audio_embedding", "music_id", 4),
        ("music_features.parquet", "audio_lld", "music_id", 9),
    ],
)
def test_zero_norm_vector_rejected_naming_file_id_column_and_norm(tiny_dataset, tmp_path, file, column, id_column, row):
    _copy(tiny_dataset, tmp_path)
    if row is None:  # a video with a description: a null text is allowed, an all-zero one is not
        row = int(pd.read_parquet(tmp_path / file)[column].notna().to_numpy().argmax())
    bad_id = _zero_vector(tmp_path, file, column, row)
    dim = len(pd.read_parquet(tmp_path / file).at[row, column])
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path)
    assert caught.value.problems == [
        f"{file}: {id_column} {bad_id}: '{column}' has L2 norm 0 (all {dim} values are zero), a failed extraction: "
        "re-extract it"
    ]
    result = CliRunner().invoke(app, ["check-dataset", "--dataset", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{file}: {id_column} {bad_id}: '{column}' has L2 norm 0" in result.output


@pytest.mark.parametrize(
    "file", ["music.parquet", "videos.parquet", "music_features.parquet", "video_features.parquet"]
)
def test_duplicate_id_rejected_naming_the_id_and_its_rows(tiny_dataset, tmp_path, file):
    _copy(tiny_dataset, tmp_path)
    dup = _duplicate_row(tmp_path, file, 5)
    id_column = "video_id" if "video" in file else "music_id"
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path)
    assert f"{file}: {id_column} {dup}: duplicate id (2 rows)" in caught.value.problems
    result = CliRunner().invoke(app, ["check-dataset", "--dataset", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{file}: {id_column} {dup}: duplicate id (2 rows)" in result.output


def test_many_duplicates_report_the_total_first_then_the_first_ids(tiny_dataset, tmp_path):
    _copy(tiny_dataset, tmp_path)
    videos = pd.read_parquet(tmp_path / "videos.parquet")
    ids = videos["video_id"].tolist()
    videos.loc[100:130, "video_id"] = ids[:31]  # 31 ids on two rows each
    videos.to_parquet(tmp_path / "videos.parquet")
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path, require_features=False)
    problems = caught.value.problems
    assert problems[0] == (
        f"videos.parquet: 31 video_id values are duplicated (62 rows); the first {MAX_NAMED_ROWS} follow"
    )
    assert problems[1:] == [f"videos.parquet: video_id {i}: duplicate id (2 rows)" for i in ids[:MAX_NAMED_ROWS]]
    assert "31 video_id values are duplicated" in str(caught.value)


@pytest.mark.parametrize(
    "file,kind,manifest",
    [("music_features.parquet", "music", "music.parquet"), ("video_features.parquet", "video", "videos.parquet")],
)
def test_feature_row_of_an_unknown_id_rejected(tiny_dataset, tmp_path, file, kind, manifest):
    _copy(tiny_dataset, tmp_path)
    frame = pd.read_parquet(tmp_path / file)
    replaced = frame.iat[2, 0]
    frame.iat[2, 0] = "ghost"
    frame.to_parquet(tmp_path / file)
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path)
    assert caught.value.problems == [
        f"{file}: {kind} {replaced}: no feature row",
        f"{file}: {kind} ghost: not in {manifest}",
    ]


def test_clean_dataset_passes_check_dataset(tiny_dataset):
    result = CliRunner().invoke(app, ["check-dataset", "--dataset", str(tiny_dataset)])
    assert result.exit_code == 0, result.output
    assert "ok:" in result.output


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
    pop = popularity_counts(PRESETS["tt150k"], rng)
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
    pop = popularity_counts(PRESETS["tt150k"], np.random.default_rng(0))
    assert len(pop) == 3003
    assert pop.sum() == pytest.approx(146351, rel=0.002)
    assert pop.min() >= 3 and pop.max() <= 219
    assert pop.mean() == pytest.approx(49, abs=1)
