"""`bgmrec trigger`: run the new-music-batch pipeline on a batch directory.

Without a host the pipeline runs here through kfp.local (each task a subprocess of this Python environment);
with a host the compiled pipeline (pipelines/compiled/new_music_batch.yaml) is submitted to a Kubeflow
Pipelines API with the batch location as a parameter, and the run's URL is returned. `submit_inbox` is what the
k8s CronJob runs: one submission per batch folder that has no `.submitted.json` marker yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SUBMITTED_MARKER = ".submitted.json"
EXPERIMENT = "bgmrec-music-batches"


@dataclass(frozen=True)
class BatchRun:
    """The outcome of one triggered batch: accepted (catalog refreshed) or refused, and what the run said."""

    accepted: bool
    message: str


def run_batch_locally(
    batch_dir: str | Path,
    dataset_dir: str | Path,
    registry_dir: str | Path,
    feature_repo: str | Path | None,
    params_path: str | Path,
    pipeline_root: str | Path,
) -> BatchRun:
    """Run the new-music-batch pipeline through kfp.local; a failing task raises (raise_on_error=True)."""
    from kfp import local

    from pipelines.new_music_batch import REFUSED_TITLE, build_new_music_batch_pipeline
    from pipelines.settings import load_settings, read_params

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(Path(pipeline_root).resolve()),
               raise_on_error=True)
    pipeline = build_new_music_batch_pipeline(load_settings(read_params(params_path)))
    task = pipeline(
        batch_dir=str(Path(batch_dir).resolve()),
        dataset_dir=str(Path(dataset_dir).resolve()),
        registry_dir=str(Path(registry_dir).resolve()),
        feature_repo=str(Path(feature_repo).resolve()) if feature_repo else "",
        params_path=str(Path(params_path).resolve()),
    )
    message = str(task.output)
    return BatchRun(not message.startswith(REFUSED_TITLE), message)


def submit_batch(
    host: str, batch_dir: str, package: str | Path, arguments: dict[str, str] | None = None,
    experiment: str = EXPERIMENT,
) -> str:
    """Submit the compiled pipeline with batch_dir (a path on the cluster's data volume) and return the run URL.
    Other pipeline parameters keep their compiled defaults unless given in `arguments`."""
    import kfp

    package = Path(package)
    if not package.is_file():
        raise FileNotFoundError(f"{package}: compiled pipeline not found; run `bgmrec compile-pipelines`")
    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_package(
        str(package), arguments={"batch_dir": batch_dir, **(arguments or {})},
        run_name=f"music-batch-{Path(batch_dir).name}", experiment_name=experiment,
    )
    return f"{host.rstrip('/')}/#/runs/details/{run.run_id}"


def pending_batches(inbox: str | Path) -> list[Path]:
    """Batch folders in the inbox that were not submitted yet (no marker), oldest name first."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        raise FileNotFoundError(f"{inbox}: inbox directory not found")
    return sorted(p for p in inbox.iterdir() if p.is_dir() and not (p / SUBMITTED_MARKER).exists())


def submit_inbox(host: str, inbox: str | Path, package: str | Path) -> list[tuple[Path, str]]:
    """Submit every pending batch of the inbox and mark it with its run URL; returns (batch, url) pairs."""
    submitted = []
    for batch in pending_batches(inbox):
        url = submit_batch(host, str(batch), package)
        marker = {"run_url": url, "submitted_at": datetime.now(UTC).isoformat(timespec="seconds")}
        (batch / SUBMITTED_MARKER).write_text(json.dumps(marker, indent=2))
        submitted.append((batch, url))
    return submitted
