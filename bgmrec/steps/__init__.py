"""The pipeline steps as plain functions: DVC stages (via `bgmrec` commands) and KFP components both call these.

Each step takes paths and plain parameters, writes its outputs to paths, and returns a small JSON-able dict.
One module per part of the flow; every step is importable from `bgmrec.steps`.
"""

from bgmrec.steps.bento import BENTO_MODEL_NAME, build_bento_step, build_wheel
from bgmrec.steps.catalog import build_catalog_step, refresh_catalog_step
from bgmrec.steps.data import (
    assemble_features_step,
    extract_shard_step,
    extract_step,
    feast_apply_step,
    media_to_extract,
    sample_media_step,
    validate_features_step,
    validate_manifests_step,
)
from bgmrec.steps.music_batch import (
    catalog_ids,
    embed_music_batch_step,
    evaluate_music_batch_step,
    extract_music_batch_step,
    ingest_music_batch_step,
    push_music_batch_step,
    read_batch_music_vectors,
)
from bgmrec.steps.promotion import promote_step, rollback_step
from bgmrec.steps.training import (
    evaluate_step,
    gate_decision_step,
    gate_step,
    register_model_step,
    train_step,
)

__all__ = [
    "BENTO_MODEL_NAME",
    "assemble_features_step",
    "build_bento_step",
    "build_catalog_step",
    "build_wheel",
    "catalog_ids",
    "embed_music_batch_step",
    "evaluate_music_batch_step",
    "evaluate_step",
    "extract_music_batch_step",
    "extract_shard_step",
    "extract_step",
    "feast_apply_step",
    "gate_decision_step",
    "gate_step",
    "ingest_music_batch_step",
    "media_to_extract",
    "promote_step",
    "push_music_batch_step",
    "read_batch_music_vectors",
    "refresh_catalog_step",
    "register_model_step",
    "rollback_step",
    "sample_media_step",
    "train_step",
    "validate_features_step",
    "validate_manifests_step",
]
