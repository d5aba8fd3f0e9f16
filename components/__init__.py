"""Kubeflow Pipelines components: each a thin wrapper that calls one bgmrec step.

Components run in the pipeline image, which already has kfp and bgmrec installed (components/Dockerfile), so
nothing is pip-installed when a task starts. The image given here is the default; the pipelines set the
configured one (`kubeflow.base_image`, or $BGMREC_PIPELINE_IMAGE) on every task when they are built.
"""

from bgmrec.config import KubeflowSettings

PIPELINE_IMAGE = KubeflowSettings().image
