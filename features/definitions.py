"""The bgmrec Feast feature repo: the one definitions file (Feast's local template layout).

Offline data lives in data/ next to this file, copied there from a dataset by `bgmrec feast-apply` (the
contract's feature tables plus music_statistics.parquet). Paths are absolute from this file, because the
duckdb offline store reads a FileSource path as given (relative paths would follow the working directory).
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Int64

DATA = Path(__file__).resolve().parent / "data"

# A short video, keyed by the manifest's video_id.
video = Entity(name="video", join_keys=["video_id"], value_type=ValueType.STRING, description="A short video")

# A background music clip, keyed by the manifest's music_id.
music = Entity(name="music", join_keys=["music_id"], value_type=ValueType.STRING, description="A music clip")

# Offline table of video vectors (video_features.parquet of the contract).
video_features_source = FileSource(
    name="video_features_source",
    path=str(DATA / "video_features.parquet"),
    timestamp_field="event_timestamp",
)

# Offline table of music vectors (music_features.parquet of the contract).
music_features_source = FileSource(
    name="music_features_source",
    path=str(DATA / "music_features.parquet"),
    timestamp_field="event_timestamp",
)

# Offline table of music statistics (videos per music, written by `bgmrec feast-apply`).
music_statistics_source = FileSource(
    name="music_statistics_source",
    path=str(DATA / "music_statistics.parquet"),
    timestamp_field="event_timestamp",
)

# New videos pushed by serving or a batch job, landing in the video features table.
video_push = PushSource(name="video_push", batch_source=video_features_source)

# New music batches pushed by the new-music pipeline, landing in the music features table.
music_push = PushSource(name="music_push", batch_source=music_features_source)

# The video's visual vector (frame features pooled over the clip).
video_visual = FeatureView(
    name="video_visual",
    entities=[video],
    ttl=timedelta(0),
    schema=[Field(name="visual", dtype=Array(Float32))],
    source=video_push,
    online=True,
)

# The video's description vector; null when the video has no description.
video_text = FeatureView(
    name="video_text",
    entities=[video],
    ttl=timedelta(0),
    schema=[Field(name="text", dtype=Array(Float32))],
    source=video_push,
    online=True,
)

# The music vectors: pretrained-network embedding and openSMILE low-level descriptors.
music_vectors = FeatureView(
    name="music_vectors",
    entities=[music],
    ttl=timedelta(0),
    schema=[
        Field(name="audio_embedding", dtype=Array(Float32)),
        Field(name="audio_lld", dtype=Array(Float32)),
    ],
    source=music_push,
    online=True,
)

# Music statistics: popularity = number of videos using the music (the papers' usage amount).
music_statistics = FeatureView(
    name="music_statistics",
    entities=[music],
    ttl=timedelta(0),
    schema=[Field(name="popularity", dtype=Int64)],
    source=music_statistics_source,
    online=True,
)

# Everything CMVAE reads: both video modalities (PoE drops a missing text) and both music parts.
cmvae_features = FeatureService(
    name="cmvae_features",
    features=[video_visual, video_text, music_vectors, music_statistics],
    description="CMVAE training and serving inputs",
)

# Everything VMCML reads: the same vectors; popularity for its popularity-aware negatives and IPS evaluation.
vmcml_features = FeatureService(
    name="vmcml_features",
    features=[video_visual, video_text, music_vectors, music_statistics],
    description="VMCML training and serving inputs",
)
