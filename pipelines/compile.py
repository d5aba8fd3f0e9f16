"""Compile both pipelines to Kubeflow IR YAML: `bgmrec compile-pipelines --out DIR [--params FILE]`.

The compiled files are built from a configuration (images, volumes, resources, gate defaults), so they are
written where the user asks and never kept in the repository.
"""

from pathlib import Path

from kfp import compiler

from bgmrec.config import Config
from pipelines.new_music_batch import build_new_music_batch_pipeline
from pipelines.training import build_training_pipeline

TRAINING_FILE = "training.yaml"
NEW_MUSIC_BATCH_FILE = "new_music_batch.yaml"


def compile_pipelines(out_dir: str | Path, config: Config | None = None) -> list[Path]:
    """Write training.yaml and new_music_batch.yaml into out_dir; returns their paths."""
    config = config or Config()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = [
        (build_training_pipeline(config), out / TRAINING_FILE),
        (build_new_music_batch_pipeline(config), out / NEW_MUSIC_BATCH_FILE),
    ]
    for pipeline, path in targets:
        compiler.Compiler().compile(pipeline, str(path))
    return [path for _, path in targets]
