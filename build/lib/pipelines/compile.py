"""Compile both pipelines to IR YAML (pipelines/compiled/), the files `bgmrec trigger --host` submits.

`bgmrec compile-pipelines` (or `python -m pipelines.compile`) is the one command; tests/test_pipelines.py fails
when the committed files are out of date.
"""

from pathlib import Path
from typing import Any

from kfp import compiler

from pipelines.new_music_batch import build_new_music_batch_pipeline
from pipelines.settings import PROJECT_ROOT, load_settings, read_params
from pipelines.training import build_training_pipeline

COMPILED_DIR = PROJECT_ROOT / "pipelines" / "compiled"
TRAINING_FILE = "training.yaml"
NEW_MUSIC_BATCH_FILE = "new_music_batch.yaml"


def compile_pipelines(out_dir: str | Path = COMPILED_DIR, params: dict[str, Any] | None = None) -> list[Path]:
    """Write training.yaml and new_music_batch.yaml into out_dir; returns their paths."""
    params = read_params() if params is None else params
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = [
        (build_training_pipeline(params), out / TRAINING_FILE),
        (build_new_music_batch_pipeline(load_settings(params)), out / NEW_MUSIC_BATCH_FILE),
    ]
    for pipeline, path in targets:
        compiler.Compiler().compile(pipeline, str(path))
    return [path for _, path in targets]


if __name__ == "__main__":
    for written in compile_pipelines():
        print(f"wrote {written}")
