"""Training steps: train one model, evaluate checkpoints, gate and register a candidate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from bgmrec.config import Config


class TrainResult(TypedDict, total=False):
    """train.json's content (model, split, checkpoint, resolved parameters, epochs, plots) plus the history."""

    model_name: str
    split: str
    checkpoint: str
    params: dict[str, Any]
    epochs: int
    history: list[dict[str, float]]


class EvaluateResult(TypedDict, total=False):
    model_name: str
    metrics: dict[str, dict[str, float]]
    metrics_json: str


class GateResult(TypedDict, total=False):
    """The gate's decision: passed or not, why, the version registered and promoted (None when refused) and
    the production version after it."""

    passed: bool
    reasons: list[str]
    version: str | None
    production: str | None
    model_name: str
    experiment: Any


class RegisterResult(TypedDict):
    version: str
    model_name: str


def train_step(
    dataset_dir: str | Path, split_kind: str, model_name: str, config: Config,
    out_dir: str | Path, feature_repo: str | Path | None = None, feature_service: str | None = None,
) -> TrainResult:
    """Train a torch model of the model table on one split, with the parameters `config.model_params` resolves
    and the split seed `data.seed`; vectors come from Feast (`get_historical_features`, service `<model>_features`
    unless named) when a feature repo is given, else from the dataset's files.
    Writes OUT/model.pt, OUT/train.json (with the resolved parameters) and the DVCLive log OUT/dvclive.
    """
    import json

    from bgmrec.data.contract import load_dataset
    from bgmrec.data.splits import load_or_make_split
    from bgmrec.models import create_model
    from bgmrec.models.base import TorchRecommender, TrainingData
    from bgmrec.registry import CHECKPOINT_FILE
    from bgmrec.train import LIVE_DIR, DVCLiveLog, fit

    params = config.model_params(model_name)
    seed = config.data.seed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if feature_repo is not None:
        from bgmrec.feature_store import open_store, training_dataset

        service = feature_service or f"{model_name.split('-')[0]}_features"
        dataset = training_dataset(open_store(feature_repo), dataset_dir, service)
    else:
        dataset = load_dataset(dataset_dir)
    split = load_or_make_split(dataset, split_kind, seed)
    model = create_model(model_name, params)
    if not isinstance(model, TorchRecommender):
        raise ValueError(f"model '{model_name}' is not a torch model: it has no checkpoint to register")
    report = fit(model, TrainingData(dataset, split, seed), [DVCLiveLog(out / LIVE_DIR, model.params)])
    checkpoint = model.save(out / CHECKPOINT_FILE)
    history = report.pop("history")
    plots = {"dvclive": str(out / LIVE_DIR)}
    summary = {"model_name": model_name, "split": split_kind, "checkpoint": str(checkpoint), "params": params,
               "seed": seed, "features_from": "feast" if feature_repo is not None else "files", **report, **plots}
    (out / "train.json").write_text(json.dumps(summary, indent=2, default=float))
    return {**summary, "history": history}


def evaluate_step(
    dataset_dir: str | Path, checkpoint: str | Path | dict[str, str | Path], out_metrics_json: str | Path,
    split_kinds: tuple[str, ...] = ("weak", "strong"), seed: int = 0, plots_dir: str | Path | None = None,
) -> EvaluateResult:
    """Both protocols (Recall@K full gallery, IPS Recall@K) on the test part of each split kind.

    `checkpoint` is one checkpoint for every split, or {split_kind: checkpoint} so the strong split is scored
    by a model that never saw its test music. Writes {split_kind: metrics} to OUT, Recall@K curves to plots_dir.
    """
    import json

    from bgmrec.data.contract import load_dataset
    from bgmrec.data.splits import load_or_make_split
    from bgmrec.evaluate import evaluate
    from bgmrec.models import load_model
    from bgmrec.plots import write_recall_curves

    checkpoints = checkpoint if isinstance(checkpoint, dict) else {kind: checkpoint for kind in split_kinds}
    dataset = load_dataset(dataset_dir)
    metrics: dict[str, Any] = {}
    name = ""
    for kind, path in checkpoints.items():
        model = load_model(path)
        name = model.name
        result = evaluate(model, dataset, load_or_make_split(dataset, kind, seed), "test")
        metrics[kind] = {k: v for k, v in result.items() if isinstance(v, int | float)}
    out = Path(out_metrics_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, default=float))
    plots = write_recall_curves(metrics, Path(plots_dir), name) if plots_dir is not None else {}
    return {"model_name": name, "metrics": metrics, "metrics_json": str(out), **plots}


def gate_step(
    metrics_json: str | Path, registry_dir: str | Path, thresholds: dict[str, float], tolerance: float,
    model_name: str, checkpoint: str | Path,
) -> GateResult:
    """Register and promote the checkpoint only if every threshold is met and no gated metric is worse than
    production's minus the tolerance; production is untouched otherwise. Returns the decision and its reasons.
    Inside a DVC experiment nothing is registered: `experiment` names it and `passed` is what the gate would do.
    """
    from bgmrec.registry import running_experiment

    decision = gate_decision_step(metrics_json, registry_dir, thresholds, tolerance)
    version, experiment = None, running_experiment()
    if decision["passed"] and experiment is None:
        record = {"thresholds": thresholds, "tolerance": tolerance, **decision}
        version = register_model_step(metrics_json, registry_dir, model_name, checkpoint, record)["version"]
    return {"passed": decision["passed"], "reasons": decision["reasons"], "version": version,
            "production": version or decision["production"], "model_name": model_name, "experiment": experiment}


def gate_decision_step(
    metrics_json: str | Path, registry_dir: str | Path, thresholds: dict[str, float], tolerance: float
) -> GateResult:
    """The gate's verdict alone (nothing is written): thresholds met AND not worse than production's metrics
    minus the tolerance. The KFP pipeline branches on `passed` (dsl.If) before registering.
    """
    import json

    from bgmrec.gate import gate
    from bgmrec.registry import ModelRegistry

    metrics = json.loads(Path(metrics_json).read_text())
    production = ModelRegistry(registry_dir).production()
    decision = gate(metrics, thresholds, production["metrics"] if production else None, tolerance)
    return {"passed": decision.passed, "reasons": decision.reasons,
            "production": (production or {}).get("version")}


def register_model_step(
    metrics_json: str | Path, registry_dir: str | Path, model_name: str, checkpoint: str | Path,
    gate: dict[str, Any] | None = None,
) -> RegisterResult:
    """Register a checkpoint with its metrics and the gate's record, and promote it to production (call only
    after the gate passed)."""
    import json

    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_dir)
    version = registry.register(checkpoint, json.loads(Path(metrics_json).read_text()), model_name, gate)
    registry.promote(version)
    return {"version": version, "model_name": model_name}
