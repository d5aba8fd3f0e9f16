"""Feast glue: one FeatureStore per repo, apply + materialize, online lookups, pushes, training data.

The repo (features/) holds one definitions file and feature_store.yaml; its offline tables live in REPO/data/,
staged from a dataset by `stage_repo_data` (the contract's feature tables plus music_statistics.parquet).
Training reads vectors with `get_historical_features` (point in time), serving reads video vectors online, and
new music arrives with `push_music` (online and offline at once, so no materialization window can miss it).
Importing feast costs seconds: `open_store` caches one FeatureStore per repo and config.
"""

from __future__ import annotations

import fcntl
import importlib.util
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from bgmrec.data.contract import (
    MUSIC_FEATURES_FILE,
    VIDEO_FEATURES_FILE,
    Dataset,
    DatasetError,
    MusicVectors,
    VideoVectors,
    load_manifests,
    music_features_table,
)

if TYPE_CHECKING:
    from feast import FeatureStore

DEFINITIONS_FILE = "definitions.py"
DEFAULT_CONFIG = "feature_store.yaml"
DATA_DIR = "data"
MUSIC_STATISTICS_FILE = "music_statistics.parquet"
VIDEO_VIEWS = {"visual": "video_visual", "text": "video_text"}
MUSIC_VIEWS = {"audio_embedding": "music_vectors", "audio_lld": "music_vectors"}
MUSIC_PUSH_SOURCE = "music_push"
_STORES: dict[tuple[str, str], FeatureStore] = {}


def open_store(repo_dir: str | Path, config: str = DEFAULT_CONFIG) -> FeatureStore:
    """The FeatureStore of a repo directory (cached: one per repo and config file for the process's life)."""
    repo = Path(repo_dir).resolve()
    key = (str(repo), config)
    if key not in _STORES:
        if not (repo / config).exists():
            raise FileNotFoundError(f"{repo / config} not found: is {repo} a Feast feature repo?")
        from feast import FeatureStore

        _STORES[key] = FeatureStore(repo_path=str(repo), fs_yaml_file=repo / config)
    return _STORES[key]


def close_store(repo_dir: str | Path, config: str = DEFAULT_CONFIG) -> None:
    """Forget a cached store (after its repo was deleted or re-created)."""
    _STORES.pop((str(Path(repo_dir).resolve()), config), None)


def repo_objects(repo_dir: str | Path) -> list[Any]:
    """Every Feast object (entities, sources, views, services) declared in the repo's definitions file."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    path = Path(repo_dir).resolve() / DEFINITIONS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the feature repo needs its {DEFINITIONS_FILE}")
    name = f"bgmrec_feature_repo_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    kinds = (Entity, FeatureView, FeatureService, DataSource)
    return [value for value in vars(module).values() if isinstance(value, kinds)]


def music_statistics_frame(dataset_dir: str | Path, event_timestamp: datetime | None = None) -> pd.DataFrame:
    """music_id, event_timestamp, popularity (videos per music over the dataset's manifests)."""
    music, videos = load_manifests(dataset_dir)
    counts = videos["music_id"].value_counts()
    popularity = music["music_id"].map(counts).fillna(0).astype("int64")
    ts = event_timestamp or _feature_timestamp(Path(dataset_dir) / MUSIC_FEATURES_FILE)
    return pd.DataFrame(
        {
            "music_id": music["music_id"].astype(str),
            "event_timestamp": pd.Series([ts] * len(music), dtype="datetime64[us, UTC]"),
            "popularity": popularity.to_numpy(),
        }
    )


def _feature_timestamp(path: Path) -> pd.Timestamp:
    """The latest event timestamp of a feature table (statistics are as of the features they describe)."""
    if path.exists():
        column = pq.read_table(path, columns=["event_timestamp"]).column("event_timestamp").to_pandas()
        if len(column):
            return (
                pd.Timestamp(column.max()).tz_convert("UTC")
                if column.max().tzinfo
                else pd.Timestamp(column.max(), tz="UTC")
            )
    return pd.Timestamp("2026-01-01", tz="UTC")


def stage_repo_data(repo_dir: str | Path, dataset_dir: str | Path) -> dict[str, int]:
    """Copy a dataset's feature tables into REPO/data/ and write music statistics; returns row counts."""
    data = Path(repo_dir) / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    dataset_dir = Path(dataset_dir)
    counts: dict[str, int] = {}
    for file in (MUSIC_FEATURES_FILE, VIDEO_FEATURES_FILE):
        source = dataset_dir / file
        if not source.exists():
            raise FileNotFoundError(f"{source} not found; run `bgmrec extract --dataset {dataset_dir}` first")
        shutil.copyfile(source, data / file)
        counts[file] = pq.read_metadata(source).num_rows
    stats = music_statistics_frame(dataset_dir)
    stats.to_parquet(data / MUSIC_STATISTICS_FILE, index=False)
    counts[MUSIC_STATISTICS_FILE] = len(stats)
    return counts


def init_repo(repo_dir: str | Path) -> list[str]:
    """Set up a feature repo directory from the definitions and configs that ship with bgmrec (the `features`
    package): every file missing from REPO is copied in, nothing is overwritten. Returns the names copied."""
    from importlib import resources

    repo = Path(repo_dir)
    repo.mkdir(parents=True, exist_ok=True)
    copied = []
    for entry in resources.files("features").iterdir():
        if entry.name == DEFINITIONS_FILE or entry.name.endswith(".yaml"):
            target = repo / entry.name
            if not target.exists():
                target.write_bytes(entry.read_bytes())
                copied.append(entry.name)
    return sorted(copied)


def apply_repo(store: FeatureStore, repo_dir: str | Path) -> list[str]:
    """Register the repo's definitions (like `feast apply`); returns the names applied."""
    objects = repo_objects(repo_dir)
    store.apply(objects)
    return sorted(getattr(o, "name", str(o)) for o in objects)


def materialize_all(store: FeatureStore, end: datetime | None = None) -> None:
    """Load every feature view's offline rows up to `end` (default: now) into the online store."""
    end = end or datetime.now(UTC)
    store.materialize(start_date=datetime(1970, 1, 2, tzinfo=UTC), end_date=end + timedelta(seconds=1))


def _vectors(values: list[Any], column: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack a list of vectors (None for missing) into a float32 matrix and a presence mask."""
    present = np.array([v is not None for v in values], dtype=bool)
    dims = {len(v) for v in values if v is not None}
    if len(dims) > 1:
        raise DatasetError(
            [f"feature store: '{column}' vectors have lengths {sorted(dims)}, expected one length"]
        )
    dim = dims.pop() if dims else 0
    matrix = np.zeros((len(values), dim), np.float32)
    for i in np.flatnonzero(present):
        matrix[i] = np.asarray(values[i], dtype=np.float32)
    return matrix, present


def online_video_vectors(
    store: FeatureStore, video_ids: list[str] | np.ndarray
) -> tuple[VideoVectors, list[str]]:
    """Video vectors from the online store, in the order asked; ids without a visual vector are set apart.

    The VideoVectors hold only the known videos; the list names the unknown ones (serving answers 404).
    """
    ids = [str(v) for v in video_ids]
    if not ids:
        empty = np.zeros((0, 0), np.float32)
        return VideoVectors(np.array([], dtype=object), empty, empty, np.zeros(0, bool)), []
    refs = [f"{view}:{column}" for column, view in VIDEO_VIEWS.items()]
    response = store.get_online_features(features=refs, entity_rows=[{"video_id": i} for i in ids]).to_dict()
    visual, known = _vectors(response["visual"], "visual")
    text, has_text = _vectors(response["text"], "text")
    unknown = [i for i, k in zip(ids, known, strict=True) if not k]
    index = np.flatnonzero(known)
    if text.shape[1] == 0:
        text = np.zeros((len(ids), 0), np.float32)
    vectors = VideoVectors(np.array(ids, dtype=object)[index], visual[index], text[index], has_text[index])
    return vectors, unknown


def online_music_vectors(
    store: FeatureStore, music_ids: list[str] | np.ndarray
) -> tuple[MusicVectors, list[str]]:
    """Music vectors from the online store, in the order asked, plus the ids it does not know."""
    ids = [str(v) for v in music_ids]
    refs = [f"{MUSIC_VIEWS[c]}:{c}" for c in ("audio_embedding", "audio_lld")]
    response = store.get_online_features(features=refs, entity_rows=[{"music_id": i} for i in ids]).to_dict()
    emb, known = _vectors(response["audio_embedding"], "audio_embedding")
    lld, _ = _vectors(response["audio_lld"], "audio_lld")
    index = np.flatnonzero(known)
    unknown = [i for i, k in zip(ids, known, strict=True) if not k]
    return MusicVectors(np.array(ids, dtype=object)[index], emb[index], lld[index]), unknown


def push_music(store: FeatureStore, vectors: MusicVectors, event_timestamp: datetime | None = None) -> int:
    """Push music rows to the online store (readable at once) and to the offline store, idempotently: a row whose
    music is already in the offline table is not appended again, so a re-run of a batch that was pushed before
    (a run killed after its push) leaves no duplicate offline rows. Returns the rows new to the offline store."""
    from feast.data_source import PushMode

    ts = pd.Timestamp(event_timestamp or datetime.now(UTC))
    frame = music_features_table(vectors.ids, vectors.audio_embedding, vectors.audio_lld, ts).to_pandas()
    frame["audio_embedding"] = [np.asarray(v, dtype=np.float32) for v in frame["audio_embedding"]]
    frame["audio_lld"] = [np.asarray(v, dtype=np.float32) for v in frame["audio_lld"]]
    store.push(MUSIC_PUSH_SOURCE, frame, to=PushMode.ONLINE)
    offline = Path(store.repo_path) / DATA_DIR / MUSIC_FEATURES_FILE
    # Feast appends by rewriting the whole table: batches pushed at once would each drop the other's rows
    with open(offline.parent / ".music_push.lock", "a+b") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        known = (set(pq.read_table(offline, columns=["music_id"]).column("music_id").to_pylist())
                 if offline.exists() else set())
        fresh = frame[~frame["music_id"].isin(known)]
        if len(fresh):
            store.push(MUSIC_PUSH_SOURCE, fresh, to=PushMode.OFFLINE)
    return len(fresh)


def _service_columns(store: FeatureStore, service_name: str) -> dict[str, str]:
    """Feature name -> view name for every feature the service exposes."""
    service = store.get_feature_service(service_name)
    return {f.name: p.name for p in service.feature_view_projections for f in p.features}


def _historical(
    store: FeatureStore, key: str, ids: pd.Series, refs: list[str], at: pd.Timestamp
) -> pd.DataFrame:
    entity_df = pd.DataFrame(
        {
            key: ids.astype(str).to_numpy(),
            "event_timestamp": pd.Series([at] * len(ids), dtype="datetime64[us, UTC]"),
        }
    )
    frame = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    return frame.drop_duplicates(subset=[key], keep="last").set_index(key)


def training_dataset(
    store: FeatureStore, dataset_dir: str | Path, service_name: str, as_of: datetime | None = None
) -> Dataset:
    """The dataset's manifests with vectors read through Feast (point in time `as_of`, default now).

    Raises DatasetError naming every video or music the store has no vector for.
    """
    music, videos = load_manifests(dataset_dir)
    at = pd.Timestamp(as_of or datetime.now(UTC))
    columns = _service_columns(store, service_name)
    needed = ("visual", "text", "audio_embedding", "audio_lld")
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"feature service '{service_name}' lacks feature(s) {', '.join(missing)}")
    video_frame = _historical(
        store, "video_id", videos["video_id"], [f"{columns[c]}:{c}" for c in VIDEO_VIEWS], at
    )
    music_frame = _historical(
        store, "music_id", music["music_id"], [f"{columns[c]}:{c}" for c in MUSIC_VIEWS], at
    )
    video_frame = video_frame.reindex(videos["video_id"].astype(str))
    music_frame = music_frame.reindex(music["music_id"].astype(str))
    problems: list[str] = []
    visual, has_visual = _vectors(_cells(video_frame["visual"]), "visual")
    text, has_text = _vectors(_cells(video_frame["text"]), "text")
    emb, has_emb = _vectors(_cells(music_frame["audio_embedding"]), "audio_embedding")
    lld, has_lld = _vectors(_cells(music_frame["audio_lld"]), "audio_lld")
    for vid in video_frame.index[~has_visual][:20]:
        problems.append(f"feature store ({service_name}): video {vid}: no visual vector as of {at}")
    for mid in music_frame.index[~(has_emb & has_lld)][:20]:
        problems.append(f"feature store ({service_name}): music {mid}: no music vectors as of {at}")
    if problems:
        raise DatasetError(problems)
    if text.shape[1] == 0:
        text = np.zeros((len(videos), 0), np.float32)
    video_music_index = pd.Index(music["music_id"]).get_indexer(videos["music_id"]).astype(np.int64)
    return Dataset(
        root=Path(dataset_dir),
        music=music,
        videos=videos,
        music_vectors=MusicVectors(music["music_id"].to_numpy().astype(object), emb, lld),
        video_vectors=VideoVectors(videos["video_id"].to_numpy().astype(object), visual, text, has_text),
        video_music_index=video_music_index,
    )


def _cells(column: pd.Series) -> list[Any]:
    """Feature cells as vectors or None (pandas may hold NaN or None for a missing vector)."""
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in column.tolist()]
