"""The `kubeflow:` section of params.yaml as typed settings: image, data volume, task resources, GPU placement.

Read when pipelines are compiled; components read only the image (they are decorated at import time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = PROJECT_ROOT / "params.yaml"
IMAGE_ENV = "BGMREC_PIPELINE_IMAGE"


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params.yaml as a mapping (default: the project's)."""
    from bgmrec.steps import read_params as read

    return read(path)


@dataclass(frozen=True)
class TaskResources:
    """CPU/memory requests and limits and the retry count of one kind of task; accelerator for GPU tasks."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    retries: int
    accelerator: str = ""
    accelerator_count: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    toleration: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KubeflowSettings:
    """Everything the compiled pipelines need to know about the cluster."""

    base_image: str
    data_claim: str
    data_mount_path: str
    params_config_map: str
    params_mount_path: str
    dataset_dir: str
    registry_dir: str
    feature_repo: str
    extract_shards: int
    training: TaskResources
    default: TaskResources


def _resources(section: dict[str, Any], name: str) -> TaskResources:
    try:
        return TaskResources(**section)
    except TypeError as exc:
        raise ValueError(f"params.yaml kubeflow.{name}: {exc}") from exc


def load_settings(params: dict[str, Any] | None = None) -> KubeflowSettings:
    """Settings from params (default: the project's params.yaml); the image may be overridden by the env."""
    params = read_params() if params is None else params
    if "kubeflow" not in params:
        raise ValueError("params.yaml has no `kubeflow:` section; see docs/kubeflow.md")
    section = params["kubeflow"]
    volume = section["data_volume"]
    shards = int(section["extract_shards"])
    if shards < 1:
        raise ValueError(f"params.yaml kubeflow.extract_shards is {shards}; it must be at least 1")
    return KubeflowSettings(
        base_image=os.environ.get(IMAGE_ENV) or section["base_image"],
        data_claim=volume["claim"],
        data_mount_path=volume["mount_path"],
        params_config_map=section["params_config_map"]["name"],
        params_mount_path=section["params_config_map"]["mount_path"],
        dataset_dir=section["dataset_dir"],
        registry_dir=section["registry_dir"],
        feature_repo=section["feature_repo"],
        extract_shards=shards,
        training=_resources(section["training"], "training"),
        default=_resources(section["default"], "default"),
    )


def cluster_params_path(settings: KubeflowSettings) -> str:
    """Where tasks on the cluster read params.yaml (the mounted ConfigMap)."""
    return f"{settings.params_mount_path.rstrip('/')}/params.yaml"


def pipeline_image() -> str:
    """The image components run in: $BGMREC_PIPELINE_IMAGE, else params.yaml kubeflow.base_image."""
    return os.environ.get(IMAGE_ENV) or read_params()["kubeflow"]["base_image"]
