import pytest
from kfp import dsl

from components.publish_report.component import publish_report


@pytest.mark.unit
def test_writes_markdown_and_returns_verdict(artifact):
    report = artifact("Markdown", "report.md")
    out = publish_report.python_func(title="gate refused", text="weak.recall@10: 0.1 < 0.5", report=report)
    assert out == "gate refused: weak.recall@10: 0.1 < 0.5"
    assert "weak.recall@10: 0.1 < 0.5" in open(report.path).read()


@pytest.mark.integration
def test_runs_in_kfp_local(local_runner):
    @dsl.pipeline
    def one_report() -> str:
        return publish_report(title="batch refused", text="m1: corrupt").outputs["Output"]

    assert one_report().output == "batch refused: m1: corrupt"
