"""Data steps: the sample media data set, validation, feature extraction (whole or sharded), Feast."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict


class ExtractResult(TypedDict, total=False):
    """What `extract_step` (and `assemble_features_step`) did: items per kind and outcome, widths, failures."""

    ok: bool
    counts: dict[str, dict[str, int]]
    seconds: dict[str, float]
    outputs: dict[str, str]
    dims: dict[str, int]
    failures: list[str]
    skipped: str


class ValidationResult(TypedDict):
    """A passed validation: the tables checked, the summary file and the Data Docs."""

    passed: bool
    tables: dict[str, int]
    summary: str
    data_docs: str | None


class FeastApplyResult(TypedDict):
    repo: str
    rows: dict[str, int]
    applied: list[str]


class ShardResult(TypedDict, total=False):
    shard: int
    music: int
    videos: int
    failures: list[str]
    skipped: str


def sample_media_step(out_dir: str | Path, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate the bundled sample media data set (params `sample_media:`) into OUT, manifests in the contract."""
    from bgmrec.media.sample import generate_sample_media

    return {"out": str(out_dir), **generate_sample_media(out_dir, params)}


def extract_step(dataset_dir: str | Path, params: dict[str, Any] | None = None, console: Any = None) -> ExtractResult:
    """Media → music_features.parquet / video_features.parquet (params `extract:`); bad items are reported in
    DATASET/extraction_report.json and skipped. `ok` is False when any item failed.
    """
    from bgmrec.media.extract import extract_dataset

    report = extract_dataset(dataset_dir, params, console=console)
    return {"ok": report.ok, "counts": report.counts, "seconds": report.seconds, "outputs": report.outputs,
            "dims": {kind: info["dim"] for kind, info in report.extractors.items()},
            "failures": [str(f) for f in report.failures]}


def validate_manifests_step(
    dataset_dir: str | Path, report_dir: str | Path, max_description_chars: int | None = None,
    data_root: str | Path | None = None,
) -> ValidationResult:
    """Great Expectations on music.parquet / videos.parquet; writes the report and raises ValidationFailed
    (naming the offending rows) when anything fails, so no later step runs.
    """
    from bgmrec.validation import DEFAULT_MAX_DESCRIPTION_CHARS, raise_on_failure, validate_manifests

    max_chars = max_description_chars or DEFAULT_MAX_DESCRIPTION_CHARS
    report = validate_manifests(dataset_dir, report_dir, max_chars, data_root)
    raise_on_failure(report)
    return {"passed": True, "tables": report.tables, "summary": str(Path(report.report_dir) / "summary.txt"),
            "data_docs": report.data_docs}


def validate_features_step(
    dataset_dir: str | Path, report_dir: str | Path, min_norm: float | None = None,
    max_norm: float | None = None,
) -> ValidationResult:
    """Great Expectations on the feature tables (keys, row counts, embedding length, finiteness, norm); writes
    the report and raises ValidationFailed naming the offending rows when anything fails.
    """
    from bgmrec.validation import DEFAULT_MAX_NORM, DEFAULT_MIN_NORM, raise_on_failure, validate_features

    report = validate_features(dataset_dir, report_dir,
                               DEFAULT_MIN_NORM if min_norm is None else min_norm,
                               DEFAULT_MAX_NORM if max_norm is None else max_norm)
    raise_on_failure(report)
    return {"passed": True, "tables": report.tables, "summary": str(Path(report.report_dir) / "summary.txt"),
            "data_docs": report.data_docs}


def feast_apply_step(
    repo_dir: str | Path, dataset_dir: str | Path, config: str = "feature_store.yaml"
) -> FeastApplyResult:
    """Stage the dataset's feature tables into the Feast repo, apply its definitions, materialize online."""
    from bgmrec.feature_store import apply_repo, init_repo, materialize_all, open_store, stage_repo_data

    init_repo(repo_dir)
    rows = stage_repo_data(repo_dir, dataset_dir)
    store = open_store(repo_dir, config)
    applied = apply_repo(store, repo_dir)
    materialize_all(store)
    return {"repo": str(repo_dir), "rows": rows, "applied": applied}


def media_to_extract(dataset_dir: str | Path) -> bool:
    """Whether the dataset's manifests point to media files. A dataset without media paths but with feature
    tables (e.g. `bgmrec simulate`) has its features precomputed: extraction has nothing to do."""
    from bgmrec.data.contract import MUSIC_FEATURES_FILE, VIDEO_FEATURES_FILE, load_manifests

    music, videos = load_manifests(dataset_dir)
    has_paths = "audio_path" in music.columns and "video_path" in videos.columns
    if has_paths:
        return True
    root = Path(dataset_dir)
    if not ((root / MUSIC_FEATURES_FILE).exists() and (root / VIDEO_FEATURES_FILE).exists()):
        raise ValueError(f"{root}: the manifests have no audio_path/video_path and there are no feature tables: "
                         "nothing to train on")
    return False


def extract_shard_step(
    dataset_dir: str | Path, shard: int, n_shards: int, params: dict[str, Any] | None = None
) -> ShardResult:
    """Extract every n_shards-th music and video into the dataset's content-hash feature cache (one ParallelFor
    shard); `extract_step` afterwards assembles the feature tables from the cache (and fits audio_lld's PCA on
    the whole catalog). Bad items are reported here and again, authoritatively, by `extract_step`.
    """
    from bgmrec.media.extract import extract_shard_to_cache

    if not media_to_extract(dataset_dir):
        return {"shard": shard, "music": 0, "videos": 0, "skipped": "features are precomputed", "failures": []}
    config = {**(params or {}), "progress": False}
    n_music, n_videos, report = extract_shard_to_cache(dataset_dir, shard, n_shards, config)
    return {"shard": shard, "music": n_music, "videos": n_videos, "failures": [str(f) for f in report.failures]}


def assemble_features_step(dataset_dir: str | Path, params: dict[str, Any] | None = None) -> ExtractResult:
    """After the shards: `extract_step` over the whole dataset (cache hits), or nothing when the features are
    precomputed. Raises when any item failed, naming them, so no model trains on a partial catalog."""
    if not media_to_extract(dataset_dir):
        return {"ok": True, "skipped": "features are precomputed", "failures": []}
    result = extract_step(dataset_dir, {**(params or {}), "progress": False})
    if not result["ok"]:
        raise ValueError(f"{dataset_dir}: extraction failed for {len(result['failures'])} item(s): "
                         + "; ".join(result["failures"][:20]))
    return result
