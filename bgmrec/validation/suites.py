"""The suites: manifests before extraction, feature tables after it, run with GX and reported by row."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bgmrec.data.contract import (
    MUSIC_FEATURES_FILE,
    MUSIC_FILE,
    MUSIC_VECTOR_COLUMNS,
    VIDEO_FEATURES_FILE,
    VIDEO_VECTOR_COLUMNS,
    VIDEOS_FILE,
)
from bgmrec.validation.expectations import describe_vector, embedding_expectation, import_gx, modal_length
from bgmrec.validation.report import (
    DESCRIBED_ROWS,
    DOCS_DIR,
    REPORTED_IDS,
    RESULT_FILE,
    STORED_IDS,
    SUMMARY_FILE,
    Failure,
    ValidationReport,
)

DEFAULT_MAX_DESCRIPTION_CHARS = (
    2200  # TikTok's caption limit: longer text is a broken manifest, not a caption
)


DEFAULT_MIN_NORM = 1e-3  # an all-zero vector is an extractor that silently failed


DEFAULT_MAX_NORM = 1e4


# GX copies an expectation's configuration hundreds of times per run: ExpectColumnValuesToBeInSet with 150k ids
# takes ~30 s and writes every id into the Data Docs. Larger key sets are checked through a derived flag column.
VALUE_SET_LIMIT = 10_000


@dataclass
class _Table:
    """A table to validate: its frame (with derived columns), key column and expectations."""

    name: str
    frame: pd.DataFrame
    key: str
    expectations: list[Any]
    problems: list[Failure] = field(default_factory=list)


def _read(path: Path, failures: list[Failure]) -> pd.DataFrame | None:
    if not path.exists():
        failures.append(Failure(path.name, "file exists", None, f"{path} not found", 1))
        return None
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a validation failure, reported by name
        failures.append(Failure(path.name, "file is readable parquet", None, str(exc), 1))
        return None


def _require_columns(
    frame: pd.DataFrame, name: str, columns: tuple[str, ...], failures: list[Failure]
) -> bool:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        failures.append(Failure(name, "columns exist", None, f"missing column(s) {', '.join(missing)}", 1))
    return not missing


def _key_expectations(gxe, key: str) -> list[Any]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=key), gxe.ExpectColumnValuesToBeUnique(column=key)]


def _in_keys(gxe, frame: pd.DataFrame, column: str, keys: pd.Series, source: str) -> Any:
    """Expect every value of `column` to be one of `keys` (the key column of `source`)."""
    known = pd.unique(keys.dropna())
    meaning = f"{column} is in {source}"
    if len(known) <= VALUE_SET_LIMIT:
        return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=known.tolist(), meta={"checks": meaning})
    flag = f"{column}_in_{Path(source).stem}"
    frame[flag] = frame[column].isin(set(known))
    return _flag(gxe, flag, meaning)


def _manifest_tables(
    gxe, music: pd.DataFrame | None, videos: pd.DataFrame | None, failures: list[Failure]
) -> dict[str, _Table]:
    """music.parquet and videos.parquet (by file name) with what both suites rely on: keys present and unique,
    every video's music_id in music.parquet."""
    tables: dict[str, _Table] = {}
    if music is not None and _require_columns(music, MUSIC_FILE, ("music_id",), failures):
        tables[MUSIC_FILE] = _Table(MUSIC_FILE, music, "music_id", _key_expectations(gxe, "music_id"))
    if videos is not None and _require_columns(videos, VIDEOS_FILE, ("video_id", "music_id"), failures):
        expectations = _key_expectations(gxe, "video_id")
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column="music_id"))
        if MUSIC_FILE in tables:
            expectations.append(_in_keys(gxe, videos, "music_id", music["music_id"], MUSIC_FILE))
        tables[VIDEOS_FILE] = _Table(VIDEOS_FILE, videos, "video_id", expectations)
    return tables


def _flag(gxe, column: str, meaning: str) -> Any:
    """Expect a derived boolean column to be True everywhere (its name says what it checks)."""
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True], meta={"checks": meaning})


def _inside(root: Path, base: Path, value: Any) -> tuple[bool, bool]:
    """(inside the data root, exists) for a media path relative to `base` (or absolute)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return True, True
    path = Path(str(value))
    resolved = (path if path.is_absolute() else base / path).resolve()
    inside = resolved.is_relative_to(root)
    return inside, inside and resolved.exists()


def _add_path_checks(frame: pd.DataFrame, column: str, root: Path, base: Path, gxe, out: list[Any]) -> None:
    if column not in frame.columns:
        return
    checks = [_inside(root, base, v) for v in frame[column]]
    frame[f"{column}_inside_data_root"] = [c[0] for c in checks]
    frame[f"{column}_exists"] = [c[1] for c in checks]
    out.append(_flag(gxe, f"{column}_inside_data_root", f"{column} resolves inside {root}"))
    out.append(_flag(gxe, f"{column}_exists", f"{column} exists on disk"))


def _run(
    suite_name: str, dataset_dir: Path, report_dir: Path, tables: list[_Table], failures: list[Failure]
) -> ValidationReport:
    """Run each table's expectations with GX, collect failures by row id; write summary, JSON, Data Docs."""
    gx = import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    report_dir = report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    docs_dir = report_dir / DOCS_DIR
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.add_data_docs_site(
        site_name="bgmrec",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = context.data_sources.add_pandas(suite_name)
    for table in tables:
        failures.extend(table.problems)
        asset = source.add_dataframe_asset(table.name)
        batch = asset.add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{suite_name}.{table.name}"))
        for expectation in table.expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}.{table.name}", data=batch, suite=suite)
        )
        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": [table.key]}
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite_name}.{table.name}",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["bgmrec"])],
                result_format=result_format,
            )
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": table.frame})
        for run_result in outcome.run_results.values():
            for result in run_result.results:
                if not result.success:
                    failures.append(_failure(table, result))
    index = docs_dir / "index.html"
    report = ValidationReport(
        suite=suite_name,
        dataset=str(dataset_dir),
        success=not failures,
        tables={t.name: len(t.frame) for t in tables},
        failures=failures,
        report_dir=str(report_dir),
        data_docs=str(index) if index.exists() else None,
    )
    (report_dir / SUMMARY_FILE).write_text(report.summary())
    (report_dir / RESULT_FILE).write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return report


def _failure(table: _Table, result: Any) -> Failure:
    """A failed expectation as a Failure naming the offending rows by key; duplicated ids, unknown references and
    bad vectors are named from the result's unexpected values."""
    config = result.expectation_config
    column = config.kwargs.get("column")
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("column", "batch_id", "value_set")}
    meaning = (config.meta or {}).get("checks")
    res = result.result or {}
    ids = [str(row.get(table.key) if isinstance(row, dict) else row) for row in res.get("unexpected_index_list") or []]
    values = res.get("unexpected_list") or res.get("partial_unexpected_list") or []
    if not ids and column == table.key:
        ids = [str(v) for v in values]
    count = res.get("unexpected_count")
    if count is None:
        detail = f"observed {res.get('observed_value')!r}, expected {meaning or kwargs}"
        count = 1
    elif config.type == "expect_column_values_to_be_unique":
        ids = [str(v) for v in values]  # every row of a duplicated value is unexpected: name the values
        detail = f"{len(set(ids))} duplicated {column} value(s) on {count} rows"
    else:
        detail = meaning or (", ".join(f"{k}={v}" for k, v in kwargs.items()) or "every row")
        detail = f"{count} row(s) unexpected; expected {detail}"
        is_reference = config.type == "expect_column_values_to_be_in_set" and config.kwargs["value_set"] != [True]
        if is_reference and column != table.key:
            unknown = list(dict.fromkeys(str(v) for v in values))
            more = f" and {len(unknown) - REPORTED_IDS} more" if len(unknown) > REPORTED_IDS else ""
            detail += f"; unknown {column}: {', '.join(unknown[:REPORTED_IDS])}{more}"
        elif config.type == "expect_column_values_to_be_embeddings":
            rows = zip(ids[:DESCRIBED_ROWS], values[:DESCRIBED_ROWS], strict=False)
            detail += "; " + "; ".join(f"{row_id}: {describe_vector(value)}" for row_id, value in rows)
    ids = list(dict.fromkeys(ids))[:STORED_IDS]
    return Failure(table.name, config.type, column, detail, int(count), ids)


def validate_manifests(
    dataset_dir: str | Path,
    report_dir: str | Path,
    max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS,
    data_root: str | Path | None = None,
) -> ValidationReport:
    """Validate music.parquet and videos.parquet; media paths are relative to the dataset, in data_root."""
    gx = import_gx()
    gxe = gx.expectations
    dataset_dir = Path(dataset_dir)
    root = Path(data_root or dataset_dir).resolve()
    failures: list[Failure] = []
    music = _read(dataset_dir / MUSIC_FILE, failures)
    videos = _read(dataset_dir / VIDEOS_FILE, failures)
    tables = _manifest_tables(gxe, music, videos, failures)
    if MUSIC_FILE in tables:
        _add_path_checks(music, "audio_path", root, dataset_dir, gxe, tables[MUSIC_FILE].expectations)
    if VIDEOS_FILE in tables:
        expectations = tables[VIDEOS_FILE].expectations
        if "description" in videos.columns:
            expectations.append(
                gxe.ExpectColumnValueLengthsToBeBetween(column="description", max_value=max_description_chars)
            )
        _add_path_checks(videos, "video_path", root, dataset_dir, gxe, expectations)
    return _run("manifests", dataset_dir, Path(report_dir), list(tables.values()), failures)


def _feature_table(
    gxe,
    frame: pd.DataFrame,
    name: str,
    key: str,
    vector_columns: tuple[str, ...],
    manifest_ids: pd.Series | None,
    manifest_name: str,
    expected_dims: dict[str, int],
    norm_range: tuple[float, float],
) -> _Table:
    embedding = embedding_expectation()
    expectations = _key_expectations(gxe, key)
    expectations.append(gxe.ExpectColumnValuesToNotBeNull(column="event_timestamp"))
    problems: list[Failure] = []
    if manifest_ids is not None:
        rows = int(manifest_ids.nunique())
        meaning = f"one row per id of {manifest_name}: {rows}"
        expectations.append(gxe.ExpectTableRowCountToEqual(value=rows, meta={"checks": meaning}))
        expectations.append(_in_keys(gxe, frame, key, manifest_ids, manifest_name))
        missing = sorted(set(manifest_ids.dropna().astype(str)) - set(frame[key].astype(str)))
        if missing:
            problems.append(
                Failure(
                    name,
                    "every manifest id has a feature row",
                    key,
                    f"{len(missing)} id(s) of {manifest_name} have no row",
                    len(missing),
                    missing[:STORED_IDS],
                )
            )
    for column in vector_columns:
        dim = expected_dims.get(column) or modal_length(frame[column])
        if dim is None:
            if column != "text":
                problems.append(
                    Failure(name, "vectors present", column, "the column holds no vectors", len(frame))
                )
            continue
        expectations.append(
            embedding(column=column, dim=int(dim), min_norm=norm_range[0], max_norm=norm_range[1])
        )
    if "text" in vector_columns:
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column="visual"))
    return _Table(name, frame, key, expectations, problems)


def validate_features(
    dataset_dir: str | Path,
    report_dir: str | Path,
    min_norm: float = DEFAULT_MIN_NORM,
    max_norm: float = DEFAULT_MAX_NORM,
    expected_dims: dict[str, int] | None = None,
) -> ValidationReport:
    """Validate music_features.parquet and video_features.parquet against each other and the manifests.

    Vector lengths come from `expected_dims` when given (e.g. from the extractors' declared sizes), else the
    most common length in the column: the data never hard-codes a dimension.
    """
    gx = import_gx()
    gxe = gx.expectations
    dataset_dir = Path(dataset_dir)
    failures: list[Failure] = []
    dims = dict(expected_dims or {})
    norms = (float(min_norm), float(max_norm))
    music = _read(dataset_dir / MUSIC_FILE, failures)
    videos = _read(dataset_dir / VIDEOS_FILE, failures)
    tables = list(_manifest_tables(gxe, music, videos, failures).values())
    specs: list[tuple[str, str, tuple[str, ...], pd.DataFrame | None, str]] = [
        (MUSIC_FEATURES_FILE, "music_id", MUSIC_VECTOR_COLUMNS, music, MUSIC_FILE),
        (VIDEO_FEATURES_FILE, "video_id", VIDEO_VECTOR_COLUMNS, videos, VIDEOS_FILE),
    ]
    for file, key, vectors, manifest, manifest_name in specs:
        frame = _read(dataset_dir / file, failures)
        if frame is None or not _require_columns(frame, file, (key, "event_timestamp", *vectors), failures):
            continue
        ids = manifest[key] if manifest is not None and key in manifest.columns else None
        tables.append(_feature_table(gxe, frame, file, key, vectors, ids, manifest_name, dims, norms))
    return _run("features", dataset_dir, Path(report_dir), tables, failures)
