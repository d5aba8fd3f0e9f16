"""The promotion gate: a candidate's metrics against thresholds and against production's, refusing what it
cannot check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics ({"weak": {"recall@10": .3}}) as {"weak.recall@10": .3}; non-numbers are dropped."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


@dataclass
class GateDecision:
    """Whether a candidate may be promoted, and every reason it may not (empty when it passed)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)


def gate(
    candidate_metrics: dict[str, Any],
    thresholds: dict[str, float],
    production_metrics: dict[str, Any] | None,
    tolerance: float,
) -> GateDecision:
    """Pass only if every thresholded metric is met AND none is worse than production's minus `tolerance`.

    Metric names are flattened dotted paths (see `flatten_metrics`), e.g. `weak.recall@10`. A gate that cannot
    check must not pass: a threshold on a metric the candidate lacks, a threshold or tolerance that is not a finite
    number, and a candidate metric that is NaN or infinite are all refusals, each with its reason. A production
    metric that is not finite is not compared against.
    """
    if not thresholds:
        return GateDecision(False, ["no thresholds configured: the gate refuses to promote unchecked models"])
    reasons = [f"threshold {name}: {minimum!r} is not a finite number" for name, minimum in sorted(thresholds.items())
               if not finite_number(minimum)]
    if not finite_number(tolerance) or float(tolerance) < 0:
        reasons.append(f"tolerance: {tolerance!r} is not a finite number >= 0")
    if reasons:
        return GateDecision(False, reasons)
    candidate = flatten_metrics(candidate_metrics)
    production = {k: v for k, v in (flatten_metrics(production_metrics) if production_metrics else {}).items()
                  if math.isfinite(v)}
    for name, minimum in sorted(thresholds.items()):
        if name not in candidate:
            reasons.append(
                f"{name}: missing from the candidate's metrics (have: {', '.join(sorted(candidate))})"
            )
            continue
        value = candidate[name]
        if not math.isfinite(value):
            reasons.append(f"{name}: the candidate's value is {value}, not a finite number")
            continue
        if value < float(minimum):
            reasons.append(f"{name}: {value:.4f} is below the threshold {float(minimum):.4f}")
        if name in production and value < production[name] - float(tolerance):
            reasons.append(
                f"{name}: {value:.4f} is worse than production's {production[name]:.4f} "
                f"by more than the tolerance {float(tolerance):.4f}"
            )
    return GateDecision(not reasons, reasons)


def finite_number(value: Any) -> bool:
    """A real int or float (not a bool), finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
