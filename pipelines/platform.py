"""Cluster placement of pipeline tasks, in one place: resources, retries, the data volume, and GPU nodes.

The local runner ignores all of this (it warns); tests assert on the compiled IR and platform spec instead.
"""

from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import PipelineTask

from bgmrec.config import KubeflowSettings, TaskResources

FEAST_CLIENT_LABEL = "bgmrec.io/feast-client"


def _apply_resources(task: PipelineTask, resources: TaskResources) -> PipelineTask:
    task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
    task.set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit)
    if resources.retries:
        # Exponential backoff: a preempted node or a flaky volume mount usually clears within minutes.
        task.set_retry(num_retries=resources.retries, backoff_duration="60s", backoff_factor=2.0)
    return task


def mount_data_volume(task: PipelineTask, settings: KubeflowSettings) -> PipelineTask:
    """The configured image, the shared data volume (registry, catalog, Feast repo, batches) and the params
    ConfigMap."""
    task.set_container_image(settings.image)
    kubernetes.mount_pvc(task, pvc_name=settings.data_volume.claim, mount_path=settings.data_volume.mount_path)
    return kubernetes.use_config_map_as_volume(task, config_map_name=settings.params_config_map.name,
                                               mount_path=settings.params_config_map.mount_path)


def on_cluster(task: PipelineTask, settings: KubeflowSettings) -> PipelineTask:
    """A CPU task: default resources and retries, the data volume."""
    _apply_resources(task, settings.default)
    return mount_data_volume(task, settings)


def with_feast_online_store(task: PipelineTask, settings: KubeflowSettings) -> PipelineTask:
    """A task that writes to Feast's online store (Redis on the cluster): the pod label the Redis NetworkPolicy
    admits (k8s/base/feast/networkpolicy.yaml) and the Redis password from its Secret, which
    feature_store.redis.yaml reads as ${BGMREC_REDIS_PASSWORD}."""
    kubernetes.add_pod_label(task, label_key=FEAST_CLIENT_LABEL, label_value="true")
    return kubernetes.use_secret_as_env(task, secret_name=settings.redis_secret,
                                        secret_key_to_env={"password": "BGMREC_REDIS_PASSWORD"})


def on_gpu_node(task: PipelineTask, settings: KubeflowSettings) -> PipelineTask:
    """A training task: one accelerator, GPU-node selector and toleration, training resources and retries."""
    resources = settings.training
    if not resources.accelerator or resources.accelerator_count < 1:
        raise ValueError("params.yaml kubeflow.training needs an accelerator and accelerator_count >= 1")
    task.set_accelerator_type(resources.accelerator).set_accelerator_limit(resources.accelerator_count)
    _apply_resources(task, resources)
    for key, value in resources.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=str(value))
    if resources.toleration:
        kubernetes.add_toleration(task, **resources.toleration)
    return mount_data_volume(task, settings)
