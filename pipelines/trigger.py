"""`bgmrec trigger` (registered by pipelines.commands): run the new-music-batch pipeline on a batch directory.

Without a host the pipeline runs here through kfp.local (each task a subprocess of this Python environment);
with a host the pipeline is built from the configuration and submitted to a Kubeflow Pipelines API with the
batch location as a parameter, and the run's URL is returned. `submit_inbox` is what the
k8s CronJob runs: one submission per batch folder that has no `.submitted.json` marker yet.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bgmrec.config import Config

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
    params_path: str | Path | None,
    pipeline_root: str | Path,
) -> BatchRun:
    """Run the new-music-batch pipeline through kfp.local; a failing task raises (raise_on_error=True).
    The tasks read the configuration in `params_path` (None: the defaults)."""
    from kfp import local

    from bgmrec.config import load_config
    from pipelines.new_music_batch import REFUSED_TITLE, build_new_music_batch_pipeline

    config = load_config(params_path)
    if params_path is None:  # the tasks read a file: hand them the defaults as one
        params_path = Path(pipeline_root) / "params.yaml"
        params_path.parent.mkdir(parents=True, exist_ok=True)
        params_path.write_text(config.to_yaml())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(Path(pipeline_root).resolve()),
               raise_on_error=True)
    pipeline = build_new_music_batch_pipeline(config)
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
    host: str, batch_dir: str, config: Config | None = None, arguments: dict[str, str] | None = None,
    experiment: str = EXPERIMENT,
) -> str:
    """Build the new-music-batch pipeline from `config` (None: the defaults), submit it with batch_dir (a path on
    the cluster's data volume) and return the run URL. Other pipeline parameters keep the `kubeflow:` defaults
    unless given in `arguments`.

    In the trigger's pod, $KF_PIPELINES_SA_TOKEN_PATH is the projected token (audience pipelines.kubeflow.org) that
    multi-user Kubeflow Pipelines authenticates, and $BGMREC_KFP_NAMESPACE the profile namespace the run goes to."""
    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    from pipelines.new_music_batch import build_new_music_batch_pipeline

    # kfp.Client picks the projected token up by itself only without a host and with the Kubernetes API token
    # mounted (its in-cluster check), neither of which holds here: hand it the credentials, which read the file
    # named by $KF_PIPELINES_SA_TOKEN_PATH before every request (the kubelet renews the token).
    credentials = ServiceAccountTokenVolumeCredentials() if os.environ.get("KF_PIPELINES_SA_TOKEN_PATH") else None
    client = kfp.Client(host=host, credentials=credentials)
    # Multi-user Kubeflow Pipelines files every experiment under a namespace; single-user refuses one.
    namespace = os.environ.get("BGMREC_KFP_NAMESPACE") or None
    if namespace is not None and not client.get_kfp_healthz().multi_user:
        namespace = None
    run = client.create_run_from_pipeline_func(
        build_new_music_batch_pipeline(config), arguments={"batch_dir": batch_dir, **(arguments or {})},
        run_name=f"music-batch-{Path(batch_dir).name}", experiment_name=experiment, namespace=namespace,
    )
    return f"{host.rstrip('/')}/#/runs/details/{run.run_id}"


def pending_batches(inbox: str | Path) -> list[Path]:
    """Batch folders in the inbox that were not submitted yet (no marker), oldest name first."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        raise FileNotFoundError(f"{inbox}: inbox directory not found")
    return sorted(p for p in inbox.iterdir() if p.is_dir() and not (p / SUBMITTED_MARKER).exists())


def submit_inbox(host: str, inbox: str | Path, config: Config | None = None) -> list[tuple[Path, str]]:
    """Submit every pending batch of the inbox and mark it with its run URL; returns (batch, url) pairs."""
    submitted = []
    for batch in pending_batches(inbox):
        url = submit_batch(host, str(batch), config)
        marker = {"run_url": url, "submitted_at": datetime.now(UTC).isoformat(timespec="seconds")}
        (batch / SUBMITTED_MARKER).write_text(json.dumps(marker, indent=2))
        submitted.append((batch, url))
    return submitted
