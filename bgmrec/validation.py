"""Great Expectations suites for a dataset: manifests before extraction, feature tables after it.

- Manifests (music.parquet, videos.parquet): ids present and unique, every video's music_id in music.parquet,
  description lengths bounded, media paths inside the data root and present on disk.
- Features: the manifests' keys and music references again (the feature tables are checked against them), then
  per feature table (music_features.parquet, video_features.parquet): keys present and unique, one row per
  manifest id (row count and membership), every vector column passes `ExpectColumnValuesToBeEmbeddings`
  (length, finite, L2 norm in a plausible range; a null `text` means "no description" and is allowed).

A run writes REPORT_DIR/summary.txt (short, names the offending rows: duplicated ids, unknown references, bad
vectors with their length and norm), REPORT_DIR/result.json and Data Docs HTML under REPORT_DIR/data_docs/
(index.html). Checks GX has no row-level expectation for (media paths, very large key sets) go through derived
boolean columns, so the offending rows are still reported by id.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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

DEFAULT_MAX_DESCRIPTION_CHARS = (
    2200  # TikTok's caption limit: longer text is a broken manifest, not a caption
)
DEFAULT_MIN_NORM = 1e-3  # an all-zero vector is an extractor that silently failed
DEFAULT_MAX_NORM = 1e4
REPORTED_IDS = 20  # ids per failure in summary.txt (result.json keeps up to STORED_IDS)
STORED_IDS = 1000
DESCRIBED_ROWS = 5  # bad vectors described (length, norm) in a failure's detail
# GX copies an expectation's configuration hundreds of times per run: ExpectColumnValuesToBeInSet with 150k ids
# takes ~30 s and writes every id into the Data Docs. Larger key sets are checked through a derived flag column.
VALUE_SET_LIMIT = 10_000
SUMMARY_FILE = "summary.txt"
RESULT_FILE = "result.json"
DOCS_DIR = "data_docs"


@dataclass
class Failure:
    """One failed expectation: which table and column, what was expected, and the offending row ids."""

    table: str
    expectation: str
    column: str | None
    detail: str
    unexpected_count: int
    offending_ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        where = f"{self.table}" + (f" column '{self.column}'" if self.column else "")
        text = f"{where}: {self.expectation} failed ({self.detail})"
        if self.offending_ids:
            shown = ", ".join(self.offending_ids[:REPORTED_IDS])
            more = len(self.offending_ids) - REPORTED_IDS
            text += f"; offending rows: {shown}" + (f" and {more} more" if more > 0 else "")
        return text


@dataclass
class ValidationReport:
    """The outcome of one suite over a dataset's tables, with where its readable report was written."""

    suite: str
    dataset: str
    success: bool
    tables: dict[str, int]
    failures: list[Failure]
    report_dir: str
    data_docs: str | None = None

    def summary(self) -> str:
        status = "PASSED" if self.success else f"FAILED ({len(self.failures)} expectation(s))"
        lines = [f"{self.suite} validation of {self.dataset}: {status}"]
        lines += [f"  {name}: {rows} rows" for name, rows in self.tables.items()]
        lines += [f"  - {failure.line()}" for failure in self.failures]
        if self.data_docs:
            lines.append(f"  Data Docs: {self.data_docs}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ValidationFailed(ValueError):
    """Validation found bad data. The message is the text summary; `report` has the details."""

    def __init__(self, report: ValidationReport):
        self.report = report
        super().__init__(report.summary())


def _gx():
    """Import GX with analytics and progress bars off (importing costs seconds, so only when validating)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def _embedding_expectation_class():
    """Define (once) the custom metric and expectation for embedding columns; returns the expectation."""
    global _EMBEDDING_EXPECTATION
    if _EMBEDDING_EXPECTATION is not None:
        return _EMBEDDING_EXPECTATION
    _gx()
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.expectation import ColumnMapExpectation
    from great_expectations.expectations.metrics.map_metric_provider import (
        ColumnMapMetricProvider,
        column_condition_partial,
    )

    class ColumnValuesAreEmbeddings(ColumnMapMetricProvider):
        """Row-wise: the cell is a vector of `dim` finite numbers whose L2 norm is in [min_norm, max_norm]."""

        condition_metric_name = "column_values.bgmrec_embedding"
        condition_value_keys = ("dim", "min_norm", "max_norm")

        @column_condition_partial(engine=PandasExecutionEngine)
        def _pandas(cls, column, dim, min_norm, max_norm, **kwargs):
            return pd.Series(embedding_rows_ok(column, dim, min_norm, max_norm), index=column.index)

    class ExpectColumnValuesToBeEmbeddings(ColumnMapExpectation):
        """Expect each non-null value to be `dim` finite numbers with an L2 norm in [min_norm, max_norm].

        GX's ExpectColumnValueLengthsToEqual marks every list cell unexpected, hence this expectation.
        """

        dim: int
        min_norm: float = 0.0
        max_norm: float = float("inf")
        map_metric = "column_values.bgmrec_embedding"
        success_keys = ("dim", "min_norm", "max_norm", "mostly")

    _ = ColumnValuesAreEmbeddings
    _EMBEDDING_EXPECTATION = ExpectColumnValuesToBeEmbeddings
    return ExpectColumnValuesToBeEmbeddings


_EMBEDDING_EXPECTATION: type | None = None
_NORM_CHUNK = 8192


def embedding_rows_ok(column: pd.Series, dim: int, min_norm: float, max_norm: float) -> np.ndarray:
    """Boolean per cell: a 1-d vector of length `dim`, all finite, L2 norm within [min_norm, max_norm]."""
    values = column.to_numpy()
    lengths = np.fromiter(
        (np.size(v) if _is_vector(v) else -1 for v in values), dtype=np.int64, count=len(values)
    )
    ok = lengths == dim
    rows = np.flatnonzero(ok)
    for start in range(0, len(rows), _NORM_CHUNK):
        chunk = rows[start : start + _NORM_CHUNK]
        matrix = np.stack([np.asarray(values[i], dtype=np.float64) for i in chunk]) if len(chunk) else None
        if matrix is None:
            continue
        finite = np.isfinite(matrix).all(axis=1)
        norms = np.linalg.norm(np.where(np.isfinite(matrix), matrix, 0.0), axis=1)
        ok[chunk] = finite & (norms >= min_norm) & (norms <= max_norm)
    return ok


def _is_vector(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray) and np.ndim(value) == 1


def describe_vector(value: Any) -> str:
    """What a vector cell holds, for a report: its length and L2 norm, or why it has no norm."""
    if not _is_vector(value):
        return f"not a vector ({type(value).__name__})"
    try:
        vector = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return f"{len(value)} values, not all numbers"
    if not np.isfinite(vector).all():
        return f"{vector.size} values, NaN or infinite"
    return f"{vector.size} values, L2 norm {np.linalg.norm(vector):.4g}"


def modal_length(column: pd.Series) -> int | None:
    """The most common vector length in a column (the dataset's dimension), None if it holds no vectors."""
    lengths = [np.size(v) for v in column.dropna() if _is_vector(v)]
    if not lengths:
        return None
    values, counts = np.unique(lengths, return_counts=True)
    return int(values[np.argmax(counts)])


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
    gx = _gx()
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
    gx = _gx()
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
    embedding = _embedding_expectation_class()
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
    gx = _gx()
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


def raise_on_failure(report: ValidationReport, log: Callable[[str], None] | None = None) -> ValidationReport:
    """Print the summary and raise ValidationFailed when the report has failures (stops the pipeline)."""
    if log is not None:
        log(report.summary())
    if not report.success:
        raise ValidationFailed(report)
    return report
