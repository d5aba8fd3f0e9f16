"""Great Expectations pieces of our own: the embedding-column expectation and vector descriptions."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd


def import_gx():
    """Import GX with analytics and progress bars off (importing costs seconds, so only when validating)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def embedding_expectation():
    """Define (once) the custom metric and expectation for embedding columns; returns the expectation."""
    global _EMBEDDING_EXPECTATION
    if _EMBEDDING_EXPECTATION is not None:
        return _EMBEDDING_EXPECTATION
    import_gx()
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
        (np.size(v) if is_vector(v) else -1 for v in values), dtype=np.int64, count=len(values)
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


def is_vector(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray) and np.ndim(value) == 1


def describe_vector(value: Any) -> str:
    """What a vector cell holds, for a report: its length and L2 norm, or why it has no norm."""
    if not is_vector(value):
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
    lengths = [np.size(v) for v in column.dropna() if is_vector(v)]
    if not lengths:
        return None
    values, counts = np.unique(lengths, return_counts=True)
    return int(values[np.argmax(counts)])
