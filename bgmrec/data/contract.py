"""The dataset contract (ARCHITECTURE.md): a dataset is a directory of four parquet files.

| file | columns |
| music.parquet | music_id (str, unique), title (str, optional), audio_path (str, optional) |
| videos.parquet | video_id (str, unique), music_id (str, in music), description (str|null), video_path (optional) |
| music_features.parquet | music_id, event_timestamp (UTC, us), audio_embedding, audio_lld (list<float32>) |
| video_features.parquet | video_id, event_timestamp, visual (list<float32>), text (list<float32> or null) |

Vector lengths are read from the data, never hard-coded. `load_dataset` checks everything and raises a
`DatasetError` whose message names the file, the row id and the problem, so a bad dataset never trains:
ids present and unique, every video's music_id in music.parquet, one feature row per manifest id, every vector
of the column's length, finite and not all zeros (a zero vector is an extraction that failed silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

MUSIC_FILE = "music.parquet"
VIDEOS_FILE = "videos.parquet"
MUSIC_FEATURES_FILE = "music_features.parquet"
VIDEO_FEATURES_FILE = "video_features.parquet"

MUSIC_VECTOR_COLUMNS = ("audio_embedding", "audio_lld")
VIDEO_VECTOR_COLUMNS = ("visual", "text")
MAX_REPORTED_PROBLEMS = 20
MAX_NAMED_ROWS = 10  # rows named per check; a line with the total leads when there are more


class DatasetError(ValueError):
    """A dataset that breaks the contract. `problems` lists every problem found, each naming file and id."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        text = "\n".join(f"  - {p}" for p in shown)
        if more:
            text += f"\n  - ... and {more} more problem(s)"
        super().__init__(f"dataset rejected ({len(problems)} problem(s)):\n{text}")


@dataclass
class MusicVectors:
    """Music feature vectors, row i belongs to `ids[i]`."""

    ids: np.ndarray
    audio_embedding: np.ndarray
    audio_lld: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> MusicVectors:
        return MusicVectors(self.ids[index], self.audio_embedding[index], self.audio_lld[index])

    @property
    def dims(self) -> dict[str, int]:
        return {"audio_embedding": self.audio_embedding.shape[1], "audio_lld": self.audio_lld.shape[1]}


@dataclass
class VideoVectors:
    """Video feature vectors. `text` rows are zeros where `has_text` is False (no description)."""

    ids: np.ndarray
    visual: np.ndarray
    text: np.ndarray
    has_text: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> VideoVectors:
        return VideoVectors(self.ids[index], self.visual[index], self.text[index], self.has_text[index])

    def without_text(self) -> VideoVectors:
        """The same videos with every description removed (CMVAE Table 5, text missing at test time)."""
        return VideoVectors(self.ids, self.visual, np.zeros_like(self.text), np.zeros_like(self.has_text))

    @property
    def dims(self) -> dict[str, int]:
        return {"visual": self.visual.shape[1], "text": self.text.shape[1]}


@dataclass
class Dataset:
    """A loaded, checked dataset. Vectors are aligned with the manifests' row order."""

    root: Path
    music: pd.DataFrame
    videos: pd.DataFrame
    music_vectors: MusicVectors | None = None
    video_vectors: VideoVectors | None = None
    video_music_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def popularity(self) -> np.ndarray:
        """Videos per music over the whole dataset (the papers' usage amount), aligned with `music`."""
        return np.bincount(self.video_music_index, minlength=len(self.music)).astype(np.int64)

    @property
    def dims(self) -> dict[str, int]:
        dims: dict[str, int] = {}
        if self.music_vectors is not None:
            dims.update(self.music_vectors.dims)
        if self.video_vectors is not None:
            dims.update(self.video_vectors.dims)
        return dims


def _vector_matrix(
    table: pa.Table, column: str, file: str, id_column: str, nullable: bool, problems: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a list<float> column into a dense float32 matrix and a presence mask, checking each vector.

    The vector length is the most common length in the column; rows of another length, with NaN or infinite
    values, or all zeros are problems.
    """
    ids = table.column(id_column).to_numpy(zero_copy_only=False)
    col = table.column(column).combine_chunks()
    if (
        not pa.types.is_list(col.type)
        and not pa.types.is_large_list(col.type)
        and not pa.types.is_fixed_size_list(col.type)
    ):
        problems.append(f"{file}: column '{column}' has type {col.type}, expected list<float32>")
        return np.zeros((len(ids), 0), np.float32), np.zeros(len(ids), bool)
    present = col.is_valid().to_numpy(zero_copy_only=False)
    if not nullable:
        null = np.flatnonzero(~present)
        lines = [f"{file}: {id_column} {ids[i]}: '{column}' is null" for i in null]
        _name_rows(problems, lines, f"{file}: {len(null)} rows have a null '{column}'")
    if pa.types.is_fixed_size_list(col.type):
        lengths = np.where(present, col.type.list_size, 0)
    else:
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
    if not present.any():
        return np.zeros((len(ids), 0), np.float32), present
    values, counts = np.unique(lengths[present], return_counts=True)
    dim = int(values[np.argmax(counts)])
    wrong = present & (lengths != dim)
    lines = [f"{file}: {id_column} {ids[i]}: '{column}' has {lengths[i]} values, expected {dim}"
             for i in np.flatnonzero(wrong)]
    _name_rows(problems, lines, f"{file}: {len(lines)} rows have a '{column}' of another length than {dim}")
    if dim == 0:
        problems.append(f"{file}: column '{column}' has empty vectors")
    matrix = np.zeros((len(ids), dim), np.float32)
    ok = present & ~wrong
    if ok.any() and dim:
        flat = pc.list_flatten(col.filter(pa.array(ok))).to_numpy(zero_copy_only=False)
        matrix[ok] = np.asarray(flat, dtype=np.float32).reshape(-1, dim)
    finite = np.isfinite(matrix).all(axis=1)
    lines = [f"{file}: {id_column} {ids[i]}: '{column}' contains NaN or infinite values"
             for i in np.flatnonzero(~finite)]
    _name_rows(problems, lines, f"{file}: {len(lines)} rows have NaN or infinite values in '{column}'")
    # Exactly zero, not a small norm: the plausible norm range is the feature suite's (validation.min_norm).
    zero = np.flatnonzero(ok & ~matrix.any(axis=1))
    lines = [f"{file}: {id_column} {ids[i]}: '{column}' has L2 norm 0 (all {dim} values are zero), a failed "
             "extraction: re-extract it" for i in zero]
    _name_rows(problems, lines, f"{file}: {len(zero)} rows have an all-zero '{column}' (L2 norm 0)")
    return matrix, ok & finite


def _name_rows(problems: list[str], lines: list[str], total: str) -> None:
    """Add the first MAX_NAMED_ROWS of `lines` (one per offending row); when there are more, `total` (the count)
    leads, so a truncated report still says how many rows are wrong."""
    if len(lines) > MAX_NAMED_ROWS:
        problems.append(f"{total}; the first {MAX_NAMED_ROWS} follow")
    problems.extend(lines[:MAX_NAMED_ROWS])


def _check_ids(frame: pd.DataFrame, file: str, id_column: str, problems: list[str]) -> None:
    """Ids present and unique; a duplicate names the id and how many rows carry it."""
    if id_column not in frame.columns:
        problems.append(f"{file}: missing column '{id_column}'")
        return
    ids = frame[id_column]
    null = [f"{file}: row {i}: {id_column} is null" for i in np.flatnonzero(ids.isna().to_numpy())]
    _name_rows(problems, null, f"{file}: {len(null)} rows have a null {id_column}")
    rows_per_id = ids.value_counts(sort=False)
    duplicated = ids[ids.duplicated(keep="first") & ids.notna()].unique()
    lines = [f"{file}: {id_column} {value}: duplicate id ({rows_per_id[value]} rows)" for value in duplicated]
    total = f"{file}: {len(duplicated)} {id_column} values are duplicated ({rows_per_id[duplicated].sum()} rows)"
    _name_rows(problems, lines, total)


def _read_manifest(path: Path, problems: list[str]) -> pd.DataFrame | None:
    if not path.exists():
        problems.append(f"{path.name}: file not found in {path.parent}")
        return None
    try:
        return pq.read_table(path).to_pandas()
    except Exception as exc:  # noqa: BLE001 - any parquet failure is reported as a contract problem
        problems.append(f"{path.name}: cannot be read as parquet ({exc})")
        return None


def _read_table(path: Path, problems: list[str]) -> pa.Table | None:
    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{path.name}: cannot be read as parquet ({exc})")
        return None


def load_manifests(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and check music.parquet and videos.parquet (ids unique, foreign keys). Raises DatasetError."""
    root = Path(root)
    problems: list[str] = []
    music = _read_manifest(root / MUSIC_FILE, problems)
    videos = _read_manifest(root / VIDEOS_FILE, problems)
    if music is not None:
        _check_ids(music, MUSIC_FILE, "music_id", problems)
    if videos is not None:
        _check_ids(videos, VIDEOS_FILE, "video_id", problems)
        if "music_id" not in videos.columns:
            problems.append(f"{VIDEOS_FILE}: missing column 'music_id'")
        elif music is not None and "music_id" in music.columns:
            known = set(music["music_id"].dropna())
            orphan = videos[~videos["music_id"].isin(known)]
            lines = [f"{VIDEOS_FILE}: video {vid}: music_id {mid} is not in {MUSIC_FILE}"
                     for vid, mid in zip(orphan["video_id"], orphan["music_id"], strict=True)]
            _name_rows(problems, lines, f"{VIDEOS_FILE}: {len(orphan)} videos have a music_id not in {MUSIC_FILE}")
        if "description" not in videos.columns:
            videos["description"] = None
    if problems:
        raise DatasetError(problems)
    assert music is not None and videos is not None
    return music.reset_index(drop=True), videos.reset_index(drop=True)


def _read_features(
    path: Path, id_column: str, vector_columns: tuple[str, ...], problems: list[str]
) -> tuple[pa.Table, np.ndarray] | None:
    """A features file with its id column checked and its ids (file order); None, the problem recorded, when it
    cannot be read or lacks a column."""
    table = _read_table(path, problems)
    if table is None:
        return None
    missing = [c for c in (id_column, "event_timestamp", *vector_columns) if c not in table.column_names]
    if missing:
        problems.append(f"{path.name}: missing column(s) {', '.join(missing)}")
        return None
    _check_ids(table.select([id_column]).to_pandas(), path.name, id_column, problems)
    return table, table.column(id_column).to_numpy(zero_copy_only=False).astype(object)


def read_music_vectors(path: Path, problems: list[str]) -> tuple[MusicVectors, np.ndarray] | None:
    """Read music_features.parquet into MusicVectors (file order) plus the event timestamps."""
    read = _read_features(path, "music_id", MUSIC_VECTOR_COLUMNS, problems)
    if read is None:
        return None
    table, ids = read
    emb, _ = _vector_matrix(table, "audio_embedding", path.name, "music_id", False, problems)
    lld, _ = _vector_matrix(table, "audio_lld", path.name, "music_id", False, problems)
    ts = table.column("event_timestamp").to_numpy(zero_copy_only=False)
    return MusicVectors(ids, emb, lld), ts


def read_video_vectors(path: Path, problems: list[str]) -> tuple[VideoVectors, np.ndarray] | None:
    """Read video_features.parquet into VideoVectors (file order); a null `text` means no description."""
    read = _read_features(path, "video_id", VIDEO_VECTOR_COLUMNS, problems)
    if read is None:
        return None
    table, ids = read
    visual, _ = _vector_matrix(table, "visual", path.name, "video_id", False, problems)
    text, has_text = _vector_matrix(table, "text", path.name, "video_id", True, problems)
    ts = table.column("event_timestamp").to_numpy(zero_copy_only=False)
    return VideoVectors(ids, visual, text, has_text), ts


def _align(
    order: np.ndarray, ids: np.ndarray, file: str, kind: str, manifest: str, problems: list[str]
) -> np.ndarray | None:
    """Row index into `ids` for each id of `order` (the manifest's); every id must have exactly one row."""
    position = pd.Index(ids)
    if not position.is_unique:
        return None
    index = position.get_indexer(order)
    missing = [f"{file}: {kind} {order[i]}: no feature row" for i in np.flatnonzero(index < 0)]
    _name_rows(problems, missing, f"{file}: {len(missing)} ids of {manifest} have no feature row")
    extra = [f"{file}: {kind} {value}: not in {manifest}" for value in np.setdiff1d(ids.astype(str), order.astype(str))]
    _name_rows(problems, extra, f"{file}: {len(extra)} ids are not in {manifest}")
    return index


def load_dataset(root: str | Path, require_features: bool = True) -> Dataset:
    """Load and check a dataset directory against the contract. Raises DatasetError naming every problem.

    With require_features=False the feature files may be absent (a dataset before extraction).
    """
    root = Path(root)
    music, videos = load_manifests(root)
    video_music_index = pd.Index(music["music_id"]).get_indexer(videos["music_id"]).astype(np.int64)
    dataset = Dataset(root=root, music=music, videos=videos, video_music_index=video_music_index)
    have = [(root / MUSIC_FEATURES_FILE).exists(), (root / VIDEO_FEATURES_FILE).exists()]
    if not any(have) and not require_features:
        return dataset
    problems: list[str] = []
    for present, name in zip(have, (MUSIC_FEATURES_FILE, VIDEO_FEATURES_FILE), strict=True):
        if not present:
            problems.append(f"{name}: file not found in {root}")
    if problems:
        raise DatasetError(problems)
    music_read = read_music_vectors(root / MUSIC_FEATURES_FILE, problems)
    video_read = read_video_vectors(root / VIDEO_FEATURES_FILE, problems)
    if music_read is not None:
        mv, _ = music_read
        index = _align(music["music_id"].to_numpy(), mv.ids, MUSIC_FEATURES_FILE, "music", MUSIC_FILE, problems)
        if index is not None and (index >= 0).all():
            dataset.music_vectors = mv.subset(index)
    if video_read is not None:
        vv, _ = video_read
        index = _align(videos["video_id"].to_numpy(), vv.ids, VIDEO_FEATURES_FILE, "video", VIDEOS_FILE, problems)
        if index is not None and (index >= 0).all():
            dataset.video_vectors = vv.subset(index)
    if problems:
        raise DatasetError(problems)
    return dataset


def _list_column(matrix: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, dim = matrix.shape
    offsets = np.arange(0, (n + 1) * dim, dim, dtype=np.int32)
    mask = None if present is None else pa.array(~np.asarray(present, dtype=bool))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.reshape(-1)), mask=mask)


def _timestamps(n: int, event_timestamp: pd.Timestamp | np.ndarray | None) -> pa.Array:
    if event_timestamp is None:
        event_timestamp = pd.Timestamp("2026-01-01", tz="UTC")
    if isinstance(event_timestamp, pd.Timestamp):
        values = np.full(n, event_timestamp.tz_convert("UTC").tz_localize(None).to_datetime64(), "datetime64[us]")
    else:
        values = pd.to_datetime(event_timestamp, utc=True).tz_localize(None).to_numpy().astype("datetime64[us]")
    return pa.array(values, type=pa.timestamp("us", tz="UTC"))


def music_features_table(
    ids: np.ndarray, audio_embedding: np.ndarray, audio_lld: np.ndarray, event_timestamp=None
) -> pa.Table:
    """Build a music_features table in the contract's schema."""
    return pa.table(
        {
            "music_id": pa.array(np.asarray(ids).astype(str)),
            "event_timestamp": _timestamps(len(ids), event_timestamp),
            "audio_embedding": _list_column(audio_embedding),
            "audio_lld": _list_column(audio_lld),
        }
    )


def video_features_table(
    ids: np.ndarray, visual: np.ndarray, text: np.ndarray, has_text: np.ndarray, event_timestamp=None
) -> pa.Table:
    """Build a video_features table in the contract's schema; rows without text get a null `text`."""
    return pa.table(
        {
            "video_id": pa.array(np.asarray(ids).astype(str)),
            "event_timestamp": _timestamps(len(ids), event_timestamp),
            "visual": _list_column(visual),
            "text": _list_column(text, present=has_text),
        }
    )


def write_music_features(root: str | Path, vectors: MusicVectors, event_timestamp=None) -> Path:
    path = Path(root) / MUSIC_FEATURES_FILE
    pq.write_table(music_features_table(vectors.ids, vectors.audio_embedding, vectors.audio_lld, event_timestamp), path)
    return path


def write_video_features(root: str | Path, vectors: VideoVectors, event_timestamp=None) -> Path:
    path = Path(root) / VIDEO_FEATURES_FILE
    table = video_features_table(vectors.ids, vectors.visual, vectors.text, vectors.has_text, event_timestamp)
    pq.write_table(table, path)
    return path


def write_manifests(root: str | Path, music: pd.DataFrame, videos: pd.DataFrame) -> None:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    music.to_parquet(root / MUSIC_FILE, index=False)
    videos.to_parquet(root / VIDEOS_FILE, index=False)
