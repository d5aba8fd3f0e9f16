"""The promotion gate's verdict (bgmrec.steps.gate_decision_step); the pipeline branches on it with dsl.If."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Metrics

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def gate_model(
    metrics: Input[Metrics], registry_dir: str, thresholds: dict, tolerance: float, model_name: str
) -> NamedTuple("GateVerdict", [("passed", bool), ("report", str)]):
    """Passes only if every Recall@K threshold is met AND no gated metric is worse than production's minus the
    tolerance. Writes nothing: registering is the next task's job, in the dsl.If branch."""
    from collections import namedtuple

    from bgmrec.steps import gate_decision_step

    verdict = gate_decision_step(metrics.path, registry_dir, thresholds, tolerance)
    lines = [f"{model_name}: gate {'PASSED' if verdict['passed'] else 'REFUSED'} "
             f"(production: {verdict['production'] or 'none'})"]
    lines += [f"  {reason}" for reason in verdict["reasons"]]
    report = "\n".join(lines)
    print(report)
    return namedtuple("GateVerdict", ["passed", "report"])(verdict["passed"], report)
