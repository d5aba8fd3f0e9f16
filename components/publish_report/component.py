"""Publish a run's verdict as a Markdown artifact (the gate's refusal, a refused music batch)."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def publish_report(title: str, text: str, report: Output[Markdown]) -> str:
    """Shown in the Kubeflow UI as the run's report; returns `title: text` as the pipeline's result."""
    from pathlib import Path

    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    Path(report.path).write_text(f"# {title}\n\n```\n{text}\n```\n")
    print(f"{title}\n{text}")
    return f"{title}: {text}"
