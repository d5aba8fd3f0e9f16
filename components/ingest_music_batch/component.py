"""Check a new music batch before anything else touches it (bgmrec.steps.ingest_music_batch_step)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest_music_batch(
    batch_dir: str, registry_dir: str, params_path: str, batch: Output[Dataset]
) -> NamedTuple("IngestResult", [("passed", bool), ("accepted", int), ("has_videos", bool), ("summary", str)]):
    """Corrupt files, duplicate ids and ids already in the catalog are reported per item; `passed` says whether
    the accepted part may go on under params `batch:`. `batch` holds music.parquet and batch_report.json."""
    from collections import namedtuple

    from bgmrec.config import load_config
    from bgmrec.steps import ingest_music_batch_step

    result = ingest_music_batch_step(batch_dir, registry_dir, batch.path, load_config(params_path))
    print(result["summary"])
    batch.metadata.update({k: result[k] for k in ("passed", "accepted", "rejected", "has_videos")})
    outputs = namedtuple("IngestResult", ["passed", "accepted", "has_videos", "summary"])
    return outputs(result["passed"], result["accepted"], result["has_videos"], result["summary"])
