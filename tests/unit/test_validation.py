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
    describe_vector,
    embedding_rows_ok,
    validate_features,
    validate_manifests,
)
from bgmrec.validation import report as validation_report
from bgmrec.validation import suites as validation_suites
from bgmrec.validation.expectations import modal_length

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
    assert [describe_vector(v) for v in column] == [
        "4 values, L2 norm 2",
        "4 values, NaN or infinite",
        "3 values, L2 norm 1.732",
        "4 values, L2 norm 0",
        "4 values, L2 norm 2e+06",
        "not a vector (str)",
    ]


def test_clean_dataset_passes_both_suites_and_writes_reports(tiny_dataset, tmp_path):
    manifests = validate_manifests(tiny_dataset, tmp_path / "manifests")
    features = validate_features(tiny_dataset, tmp_path / "features")
    assert manifests.success and features.success, manifests.summary() + features.summary()
    n_videos = len(pd.read_parquet(tiny_dataset / "videos.parquet"))
    assert manifests.tables == {"music.parquet": 40, "videos.parquet": n_videos}
    assert features.tables == {
        "music.parquet": 40,
        "videos.parquet": n_videos,
        "music_features.parquet": 40,
        "video_features.parquet": n_videos,
    }
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
    assert f"{ids[6]}: {dim} values, L2 norm 0" in summary
    assert f"{ids[3]}: {dim} values, NaN or infinite" in summary
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
    assert failures[("music_id", "expect_column_values_to_be_in_set")] == [ids[1]]
    assert failures[("description", "expect_column_value_lengths_to_be_between")] == [ids[2]]
    assert failures[("video_path_inside_data_root", "expect_column_values_to_be_in_set")] == [ids[4]]
    assert sorted(failures[("video_path_exists", "expect_column_values_to_be_in_set")]) == sorted([ids[4], ids[7]])
    assert failures[("video_id", "expect_column_values_to_be_unique")] == [ids[10]]
    summary = (tmp_path / "report" / "summary.txt").read_text()
    for vid in (ids[1], ids[2], ids[4], ids[7], ids[10]):
        assert vid in summary
    assert "unknown music_id: no-such-music" in summary


def test_missing_manifest_is_reported_not_crashed(tmp_path):
    report = validate_manifests(tmp_path, tmp_path / "report")
    assert not report.success
    assert {f.table for f in report.failures} == {"music.parquet", "videos.parquet"}
    assert "not found" in report.summary()


def _raised(step, dataset: Path, report_dir: Path) -> str:
    """Run a validation step that must fail; return its ValidationFailed message (the summary)."""
    with pytest.raises(ValidationFailed) as caught:
        step(dataset, report_dir)
    assert caught.value.report.summary() == (report_dir / "summary.txt").read_text()
    return str(caught.value)


def test_unknown_music_reference_fails_both_suites_naming_video_and_music(tiny_dataset, tmp_path):
    dataset = _copy(tiny_dataset, tmp_path)
    videos = pd.read_parquet(dataset / "videos.parquet")
    videos.loc[3, "music_id"] = "m99999"
    videos.to_parquet(dataset / "videos.parquet")
    vid = videos.at[3, "video_id"]
    expected = (
        "videos.parquet column 'music_id': expect_column_values_to_be_in_set failed (1 row(s) unexpected; expected "
        f"music_id is in music.parquet; unknown music_id: m99999); offending rows: {vid}"
    )
    assert expected in _raised(validate_manifests_step, dataset, tmp_path / "manifests")
    assert expected in _raised(validate_features_step, dataset, tmp_path / "features")


def test_feature_rows_of_unknown_ids_fail_naming_them(tiny_dataset, tmp_path):
    dataset = _copy(tiny_dataset, tmp_path)
    for file in ("music_features.parquet", "video_features.parquet"):
        frame = pd.read_parquet(dataset / file)
        frame.iat[2, 0] = f"ghost-{file}"
        frame.to_parquet(dataset / file)
    message = _raised(validate_features_step, dataset, tmp_path / "report")
    assert "music_features.parquet column 'music_id': expect_column_values_to_be_in_set failed" in message
    assert "offending rows: ghost-music_features.parquet" in message
    assert "video_features.parquet column 'video_id': expect_column_values_to_be_in_set failed" in message
    assert "offending rows: ghost-video_features.parquet" in message


@pytest.mark.parametrize(
    "file,column",
    [
        ("video_features.parquet", "visual"),
        ("video_features.parquet", "text"),
        ("music_features.parquet", "audio_embedding"),
        ("music_features.parquet", "audio_lld"),
    ],
)
def test_zero_norm_vector_fails_feature_suite_naming_the_row(tiny_dataset, tmp_path, file, column):
    dataset = _copy(tiny_dataset, tmp_path)
    frame = pd.read_parquet(dataset / file)
    row = int(frame[column].notna().to_numpy().argmax())
    dim = len(frame.at[row, column])
    frame.at[row, column] = np.zeros(dim, np.float32)
    frame.to_parquet(dataset / file)
    bad_id = frame.iat[row, 0]
    message = _raised(validate_features_step, dataset, tmp_path / "report")
    assert f"{file} column '{column}': expect_column_values_to_be_embeddings failed (1 row(s) unexpected" in message
    assert f"{bad_id}: {dim} values, L2 norm 0); offending rows: {bad_id}" in message


@pytest.mark.parametrize(
    "file,suites",
    [
        ("music.parquet", ("manifests", "features")),
        ("videos.parquet", ("manifests", "features")),
        ("music_features.parquet", ("features",)),
        ("video_features.parquet", ("features",)),
    ],
)
def test_duplicate_id_fails_naming_the_id_in_each_suite(tiny_dataset, tmp_path, file, suites):
    dataset = _copy(tiny_dataset, tmp_path)
    frame = pd.read_parquet(dataset / file)
    key = frame.columns[0]
    dup = frame.iat[5, 0]
    pd.concat([frame, frame.iloc[[5]]], ignore_index=True).to_parquet(dataset / file)
    steps = {"manifests": validate_manifests_step, "features": validate_features_step}
    expected = (
        f"{file} column '{key}': expect_column_values_to_be_unique failed (1 duplicated {key} value(s) on 2 rows); "
        f"offending rows: {dup}"
    )
    for suite in suites:
        assert expected in _raised(steps[suite], dataset, tmp_path / suite)


def test_many_duplicates_say_how_many_and_name_the_first(tiny_dataset, tmp_path):
    dataset = _copy(tiny_dataset, tmp_path)
    videos = pd.read_parquet(dataset / "videos.parquet")
    ids = videos["video_id"].tolist()
    videos.loc[100:130, "video_id"] = ids[:31]  # 31 ids on two rows each
    videos.to_parquet(dataset / "videos.parquet")
    report = validate_manifests(dataset, tmp_path / "report")
    (unique,) = [f for f in report.failures if f.expectation == "expect_column_values_to_be_unique"]
    assert unique.offending_ids == ids[:31] and unique.unexpected_count == 62
    line = unique.line()
    assert "31 duplicated video_id value(s) on 62 rows" in line
    assert ", ".join(ids[: validation_report.REPORTED_IDS]) + f" and {31 - validation_report.REPORTED_IDS} more" in line


def test_large_key_sets_are_checked_through_flag_columns(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(validation_suites, "VALUE_SET_LIMIT", 10)  # below the tiny dataset's 40 music
    dataset = _copy(tiny_dataset, tmp_path)
    videos = pd.read_parquet(dataset / "videos.parquet")
    videos.loc[3, "music_id"] = "m99999"
    videos.to_parquet(dataset / "videos.parquet")
    features = pd.read_parquet(dataset / "video_features.parquet")
    features.loc[4, "video_id"] = "v-ghost"
    features.to_parquet(dataset / "video_features.parquet")
    report = validate_features(dataset, tmp_path / "report")
    failures = {(f.table, f.column): f.offending_ids for f in report.failures}
    assert failures[("videos.parquet", "music_id_in_music")] == [videos.at[3, "video_id"]]
    assert failures[("video_features.parquet", "video_id_in_videos")] == ["v-ghost"]
    assert "expected music_id is in music.parquet" in report.summary()
