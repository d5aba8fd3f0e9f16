"""New-music batch steps: check and ingest a batch, extract and push its features, embed and evaluate it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from bgmrec.config import Config


class IngestResult(TypedDict):
    """A batch's verdict: accepted and rejected counts, whether it brings videos, a readable summary."""

    passed: bool
    accepted: int
    rejected: int
    has_videos: bool
    summary: str


class BatchExtractResult(TypedDict):
    extracted: int
    failed: int
    failures: list[str]


class PushResult(TypedDict):
    pushed: int
    feature_repo: str


class EmbedResult(TypedDict):
    embedded: int
    dim: int
    model_version: str


class BatchEvaluation(TypedDict):
    """Recall@K of the batch's own videos against the batch's new music (strong generalisation)."""

    protocol: str
    videos: int
    music: int
    metrics: dict[str, float]
    failures: list[str]


def catalog_ids(registry_dir: str | Path) -> list[str]:
    """Music ids of the serving catalog (only that column is read), [] when there is no catalog yet."""
    from bgmrec.catalog import CATALOG_FILE, read_music_ids

    return read_music_ids(Path(registry_dir) / CATALOG_FILE)


def read_batch_music_vectors(features_dir: str | Path):
    from bgmrec.data.contract import MUSIC_FEATURES_FILE, DatasetError, read_music_vectors

    problems: list[str] = []
    read = read_music_vectors(Path(features_dir) / MUSIC_FEATURES_FILE, problems)
    if read is None or problems:
        raise DatasetError(problems)
    return read[0]


def ingest_music_batch_step(
    batch_dir: str | Path, registry_dir: str | Path, out_dir: str | Path, config: Config
) -> IngestResult:
    """Check a new music batch (bgmrec.batch: corrupt files, duplicate ids, ids already in the catalog) against
    the `batch:` rules; write OUT/music.parquet (the accepted part, empty when the batch is refused) and
    OUT/batch_report.json. Returns the verdict and a readable summary.
    """
    from bgmrec.batch import check_music_batch, write_batch

    extraction = config.extraction
    report = check_music_batch(batch_dir, catalog_ids(registry_dir), config.batch_rules,
                               extraction.sample_rate, extraction.max_audio_seconds)
    write_batch(report, out_dir)
    return {"passed": report.passed, "accepted": len(report.accepted) if report.passed else 0,
            "rejected": len(report.rejected), "has_videos": report.has_videos, "summary": report.summary()}


def extract_music_batch_step(
    batch_out_dir: str | Path, dataset_dir: str | Path, out_dir: str | Path, config: Config
) -> BatchExtractResult:
    """Features of the accepted batch music, transformed with the catalog dataset's SAVED audio_lld scaler + PCA;
    writes OUT/music_features.parquet, OUT/music.parquet (music that extracted) and OUT/extraction_report.json.
    """
    import pandas as pd

    from bgmrec.batch import ACCEPTED_FILE
    from bgmrec.data.contract import write_music_features
    from bgmrec.media.extract import extract_music_files

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    music = pd.read_parquet(Path(batch_out_dir) / ACCEPTED_FILE)
    if music.empty:
        raise ValueError(f"{batch_out_dir}: the batch has no accepted music to extract; see its batch_report.json")
    extraction = dict(config.extract, progress=False)
    vectors, report = extract_music_files(music["audio_path"].tolist(), extraction, ids=music["music_id"].tolist(),
                                          catalog_dir=dataset_dir)
    report.write(out_dir / "extraction_report.json")
    if len(vectors) == 0:
        raise ValueError(f"{batch_out_dir}: no music of the batch could be extracted; see "
                         f"{out_dir / 'extraction_report.json'}")
    write_music_features(out_dir, vectors)
    music[music["music_id"].isin(set(vectors.ids))].to_parquet(out_dir / ACCEPTED_FILE, index=False)
    return {"extracted": len(vectors), "failed": len(report.failures),
            "failures": [f"{f.item_id} ({f.path}): {f.reason}" for f in report.failures]}


def push_music_batch_step(features_dir: str | Path, feature_repo: str | Path) -> PushResult:
    """Push the batch's music vectors to Feast, online and offline at once (readable online immediately)."""
    from bgmrec.feature_store import open_store, push_music

    pushed = push_music(open_store(feature_repo), read_batch_music_vectors(features_dir))
    return {"pushed": pushed, "feature_repo": str(feature_repo)}


def embed_music_batch_step(features_dir: str | Path, registry_dir: str | Path, out_dir: str | Path) -> EmbedResult:
    """Embed the batch's music with the production model's music encoder (the papers' unseen-music path:
    no retraining); writes OUT/embeddings.parquet (music_id, embedding) tagged with the model version.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_dir)
    record = registry.production()
    if record is None:
        raise FileNotFoundError(f"no production model in {registry.root}: train and promote one before adding music")
    vectors = read_batch_music_vectors(features_dir)
    embeddings = registry.load_production().embed_music(vectors.audio_embedding, vectors.audio_lld, vectors.ids)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "music_id": pa.array([str(i) for i in vectors.ids]),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), pa.float32()),
                                                       embeddings.shape[1]),
    }).replace_schema_metadata({"model_version": record["version"]})
    pq.write_table(table, out / "embeddings.parquet")
    return {"embedded": len(vectors), "dim": int(embeddings.shape[1]), "model_version": record["version"]}


def evaluate_music_batch_step(
    batch_dir: str | Path, features_dir: str | Path, registry_dir: str | Path, out_json: str | Path,
    config: Config,
) -> BatchEvaluation:
    """Strong-generalization Recall@K of a batch that comes with videos (batch videos.csv/.parquet): each video
    ranks the batch's new music — never seen in training, the papers' unseen music — with the production model;
    full-gallery Recall@K (VMCML eq. 7) over the batch's music. Videos that fail to decode are reported and left
    out. Writes OUT_JSON and returns the metrics.
    """
    import json

    import numpy as np
    import pandas as pd

    from bgmrec.batch import read_batch_videos
    from bgmrec.media.extract import embed_video_file, resolve_media_path
    from bgmrec.metrics import FULL_KS, recall_at_k
    from bgmrec.registry import ModelRegistry

    videos = read_batch_videos(batch_dir)
    if videos is None:
        raise FileNotFoundError(f"{batch_dir}: no videos.csv or videos.parquet: nothing to evaluate")
    music = read_batch_music_vectors(features_dir)
    column = {str(music_id): i for i, music_id in enumerate(music.ids)}
    extraction = dict(config.extract, progress=False)
    visual, text, kept, failures = [], [], [], []
    for row in videos.to_dict("records"):
        if str(row["music_id"]) not in column:
            failures.append(f"{row['video_id']}: music {row['music_id']} is not among the batch's extracted music")
            continue
        try:
            path = resolve_media_path(Path(batch_dir), row.get("video_path"))
            described = row.get("description")
            vector, description = embed_video_file(path, None if pd.isna(described) else described, extraction)
        except Exception as exc:  # noqa: BLE001 - one bad video is reported, the rest is evaluated
            failures.append(f"{row['video_id']}: {exc}")
            continue
        visual.append(vector)
        text.append(description)
        kept.append(column[str(row["music_id"])])
    if not kept:
        raise ValueError(f"{batch_dir}: no video of the batch could be evaluated: {'; '.join(failures)}")
    model = ModelRegistry(registry_dir).load_production()
    has_text = np.array([t is not None for t in text])
    text_matrix = None
    if has_text.any():
        dim = len(next(t for t in text if t is not None))
        text_matrix = np.stack([t if t is not None else np.zeros(dim, np.float32) for t in text])
    video_embeddings = model.embed_videos(np.stack(visual), text_matrix, has_text if has_text.any() else None)
    music_embeddings = model.embed_music(music.audio_embedding, music.audio_lld, music.ids)
    ks = tuple(k for k in FULL_KS if k < len(music)) or (1,)
    metrics = recall_at_k(video_embeddings @ music_embeddings.T, np.asarray(kept), ks)
    result = {"protocol": "strong generalization, full gallery = the batch's new music", "videos": len(kept),
              "music": len(music), "metrics": metrics, "failures": failures}
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    return result
