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

from bgmrec.validation.expectations import describe_vector, embedding_rows_ok
from bgmrec.validation.report import Failure, ValidationFailed, ValidationReport, raise_on_failure
from bgmrec.validation.suites import (
    DEFAULT_MAX_DESCRIPTION_CHARS,
    DEFAULT_MAX_NORM,
    DEFAULT_MIN_NORM,
    validate_features,
    validate_manifests,
)

__all__ = [
    "DEFAULT_MAX_DESCRIPTION_CHARS",
    "DEFAULT_MAX_NORM",
    "DEFAULT_MIN_NORM",
    "Failure",
    "ValidationFailed",
    "ValidationReport",
    "describe_vector",
    "embedding_rows_ok",
    "raise_on_failure",
    "validate_features",
    "validate_manifests",
]
