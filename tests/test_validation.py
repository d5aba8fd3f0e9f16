"""Great Expectations validation: clean data passes; each corruption fails and the report names the rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bgmrec.steps import validate_features_step, validate_manifests_step
from bgmrec.validation import (
    ValidationFailed,
    embedding_rows_ok,
    modal_length,
    validate_features,
    validate_manifests,
)

pytestmark = pytest.mark.integration


def _copy(dataset: Path, tmp_path: Path) -> Path:
    out = tmp_path / "dataset"
    shutil.copytree(dataset, out, ignore=shutil.ignore_patterns("splits", "oracle.npz"))
    return out


@pytest.mark.unit
def test_embedding_rows_ok_checks_length_finiteness_and_norm():
    column = pd.Series(
        [
            np.ones(4, np.float32),
            np.array([1, np.nan, 1, 1], np.float32),
            np.ones(3, np.float32),
            np.zeros(4, np.float32),
            np.full(4, 1e6, np.float32),
            "not a vector",
        ]
    )
    assert embedding_rows_ok(column, 4, 1e-3, 1e4).tolist() == [True, False, False, False, False, False]
    assert modal_length(column) == 4


def test_clean_dataset_passes_both_suites_and_writes_reports(tiny_dataset, tmp_path):
    manifests = validate_manifests(tiny_dataset, tmp_path / "manifests")
    features = validate_features(tiny_dataset, tmp_path / "features")
    assert manifests.success and features.success, manifests.summary() + features.summary()
    assert features.tables == {"music_features.parquet": 40, "video_features.parquet": len(pd.read_parquet(
        tiny_dataset / "videos.parquet"))}
    for report_dir in (tmp_path / "manifests", tmp_path / "features"):
        assert "PASSED" in (report_dir / "summary.txt").read_text()
        assert (report_dir / "data_docs" / "index.html").exists()
        assert json.loads((report_dir / "result.json").read_text())["success"] is True


def test_corrupted_feature_table_fails_naming_the_rows(tiny_dataset, tmp_path):
    dataset = _copy(tiny_dataset, tmp_path)
    videos = pd.read_parquet(dataset / "video_features.parquet")
    ids = videos["video_id"].tolist()
    dim = len(videos.at[0, "visual"])
    videos.at[3, "visual"] = np.full(dim, np.nan, np.float32)  # NaN
    videos.at[5, "visual"] = np.ones(dim + 1, np.float32)  # wrong length
    videos.at[6, "visual"] = np.zeros(dim, np.float32)  # zero norm: a silent extractor failure
    videos = pd.concat([videos, videos.iloc[[8]]], ignore_index=True)  # duplicate key
    videos.to_parquet(dataset / "video_features.parquet")
    music = pd.read_parquet(dataset / "music_features.parquet").iloc[1:]  # a music without features
    music.to_parquet(dataset / "music_features.parquet")

    with pytest.raises(ValidationFailed) as caught:
        validate_features_step(dataset, tmp_path / "report")
    report = caught.value.report
    summary = (tmp_path / "report" / "summary.txt").read_text()
    assert not report.success and "FAILED" in summary
    by_column = {(f.table, f.column, f.expectation): f.offending_ids for f in report.failures}
    embedding = by_column[("video_features.parquet", "visual", "expect_column_values_to_be_embeddings")]
    assert sorted(embedding) == sorted([ids[3], ids[5], ids[6]])
    assert by_column[("video_features.parquet", "video_id", "expect_column_values_to_be_unique")] == [ids[8]]
    missing_music = str(pd.read_parquet(dataset / "music.parquet")["music_id"].iloc[0])
    assert any(missing_music in ids_ for ids_ in by_column.values())
    for vid in (ids[3], ids[5], ids[6], ids[8], missing_music):
        assert vid in summary
    assert any(f.expectation == "expect_table_row_count_to_equal" for f in report.failures)
    stored = json.loads((tmp_path / "report" / "result.json").read_text())
    assert stored["success"] is False and len(stored["failures"]) == len(report.failures)


def test_broken_manifests_fail_naming_the_rows(tiny_dataset, tmp_path):
    dataset = _copy(tiny_dataset, tmp_path)
    (dataset / "media").mkdir()
    (dataset / "media" / "ok.mp4").write_bytes(b"x")
    videos = pd.read_parquet(dataset / "videos.parquet")
    ids = videos["video_id"].tolist()
    videos["video_path"] = "media/ok.mp4"
    videos.loc[1, "music_id"] = "no-such-music"  # foreign key
    videos.loc[2, "description"] = "x" * 50  # too long for the limit below
    videos.loc[4, "video_path"] = "../outside.mp4"  # escapes the data root
    videos.loc[7, "video_path"] = "media/missing.mp4"  # inside, but not on disk
    videos.loc[9, "video_id"] = ids[10]  # duplicate id
    videos.to_parquet(dataset / "videos.parquet")

    with pytest.raises(ValidationFailed) as caught:
        validate_manifests_step(dataset, tmp_path / "report", max_description_chars=40)
    failures = {(f.column, f.expectation): f.offending_ids for f in caught.value.report.failures}
    assert failures[("music_id_in_music", "expect_column_values_to_be_in_set")] == [ids[1]]
    assert failures[("description", "expect_column_value_lengths_to_be_between")] == [ids[2]]
    assert failures[("video_path_inside_data_root", "expect_column_values_to_be_in_set")] == [ids[4]]
    assert sorted(failures[("video_path_exists", "expect_column_values_to_be_in_set")]) == sorted([ids[4], ids[7]])
    assert failures[("video_id", "expect_column_values_to_be_unique")] == [ids[10]]
    summary = (tmp_path / "report" / "summary.txt").read_text()
    for vid in (ids[1], ids[2], ids[4], ids[7], ids[10]):
        assert vid in summary


def test_missing_manifest_is_reported_not_crashed(tmp_path):
    report = validate_manifests(tmp_path, tmp_path / "report")
    assert not report.success
    assert {f.table for f in report.failures} == {"music.parquet", "videos.parquet"}
    assert "not found" in report.summary()
