"""Feast feature repo on a real store (duckdb offline, SQLite online) built in tmp_path from features/."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bgmrec import feature_store as fs
from bgmrec.data.contract import MusicVectors, load_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURES = Path(__file__).resolve().parents[2] / "features"


@pytest.fixture(scope="module")
def repo(tiny_dataset, tmp_path_factory) -> Path:
    """The project's feature repo copied to a temp dir, applied and materialized from the tiny dataset."""
    repo = tmp_path_factory.mktemp("feature_repo")
    for name in ("definitions.py", "feature_store.yaml"):
        shutil.copy(FEATURES / name, repo / name)
    from bgmrec.steps import feast_apply_step

    result = feast_apply_step(repo, tiny_dataset)
    assert {"video", "music", "cmvae_features", "vmcml_features", "music_push"} <= set(result["applied"])
    yield repo
    fs.close_store(repo)


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return load_dataset(tiny_dataset)


def test_online_video_vectors_equal_the_offline_table(repo, dataset):
    store = fs.open_store(repo)
    ids = dataset.videos["video_id"].tolist()
    asked = [ids[0], "no-such-video", *ids[1:30]]
    vectors, unknown = fs.online_video_vectors(store, asked)
    assert unknown == ["no-such-video"]
    expected = dataset.video_vectors.subset(np.arange(30))
    assert vectors.ids.tolist() == ids[:30]
    np.testing.assert_array_equal(vectors.visual, expected.visual)
    np.testing.assert_array_equal(vectors.has_text, expected.has_text)
    assert not expected.has_text.all(), "the fixture should include videos without a description"
    np.testing.assert_array_equal(vectors.text[vectors.has_text], expected.text[expected.has_text])


def test_training_data_through_get_historical_features_equals_the_files(repo, dataset, tiny_dataset):
    store = fs.open_store(repo)
    for service in ("cmvae_features", "vmcml_features"):
        through_feast = fs.training_dataset(store, tiny_dataset, service)
        np.testing.assert_array_equal(through_feast.video_vectors.visual, dataset.video_vectors.visual)
        np.testing.assert_array_equal(through_feast.video_vectors.has_text, dataset.video_vectors.has_text)
        np.testing.assert_array_equal(through_feast.video_vectors.text, dataset.video_vectors.text)
        music, expected = through_feast.music_vectors, dataset.music_vectors
        np.testing.assert_array_equal(music.audio_embedding, expected.audio_embedding)
        np.testing.assert_array_equal(music.audio_lld, expected.audio_lld)
        np.testing.assert_array_equal(through_feast.video_music_index, dataset.video_music_index)


def test_music_statistics_hold_the_popularity(repo, dataset):
    store = fs.open_store(repo)
    ids = dataset.music["music_id"].tolist()
    online = store.get_online_features(
        features=["music_statistics:popularity"], entity_rows=[{"music_id": i} for i in ids]
    ).to_dict()
    assert online["popularity"] == dataset.popularity.tolist()


def test_pushed_music_is_readable_online_and_offline(repo, dataset):
    store = fs.open_store(repo)
    dims = dataset.music_vectors.dims
    rng = np.random.default_rng(0)
    new = MusicVectors(
        np.array(["pushed-1", "pushed-2"], dtype=object),
        rng.standard_normal((2, dims["audio_embedding"])).astype(np.float32),
        rng.standard_normal((2, dims["audio_lld"])).astype(np.float32),
    )
    assert fs.push_music(store, new) == 2
    online, unknown = fs.online_music_vectors(store, ["pushed-2", "pushed-1", "never-pushed"])
    assert unknown == ["never-pushed"]
    np.testing.assert_allclose(online.audio_embedding, new.audio_embedding[::-1])
    np.testing.assert_allclose(online.audio_lld, new.audio_lld[::-1])
    entity_df = pd.DataFrame(
        {"music_id": ["pushed-1"], "event_timestamp": pd.Series([datetime.now(UTC)], dtype="datetime64[us, UTC]")}
    )
    offline = store.get_historical_features(entity_df=entity_df, features=["music_vectors:audio_lld"]).to_df()
    np.testing.assert_allclose(np.asarray(offline["audio_lld"].iloc[0], np.float32), new.audio_lld[0])

    # A re-run of the same batch (a run killed after its push) adds no duplicate offline rows.
    table = repo / fs.DATA_DIR / "music_features.parquet"
    rows = pd.read_parquet(table, columns=["music_id"])["music_id"].tolist()
    assert fs.push_music(store, new) == 0
    assert pd.read_parquet(table, columns=["music_id"])["music_id"].tolist() == rows
    assert rows.count("pushed-1") == 1


def test_missing_vectors_are_named(repo, tiny_dataset, tmp_path):
    store = fs.open_store(repo)
    ahead = tmp_path / "ahead"
    shutil.copytree(tiny_dataset, ahead, ignore=shutil.ignore_patterns("splits"))
    videos = pd.read_parquet(ahead / "videos.parquet")
    extra = videos.iloc[[0]].assign(video_id="not-in-feast")
    pd.concat([videos, extra]).to_parquet(ahead / "videos.parquet", index=False)
    with pytest.raises(ValueError, match="video not-in-feast: no visual vector"):
        fs.training_dataset(store, ahead, "cmvae_features")
