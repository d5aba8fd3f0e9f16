"""Model registry on a directory, and the promotion gate.

Layout of ROOT:
  versions/<version>/model.pt       the checkpoint (a copy; the registry owns it)
  versions/<version>/metrics.json   {"version", "model_name", "metrics", "registered_at"}
  production.json                   {"version", "model_name", "checkpoint", "metrics", "promoted_at"}
  catalog.parquet                   the serving music catalog (written by bgmrec.catalog, not here)

Every path a record holds is relative to ROOT, so a registry copied elsewhere, restored from a backup or
mounted at another path (/data/registry in a pod) works as it is.

A version id is `v<NNNN>-<model_name>`: ordered, readable, unique within one registry.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bgmrec.catalog import CATALOG_FILE

VERSIONS_DIR = "versions"
PRODUCTION_FILE = "production.json"
CHECKPOINT_FILE = "model.pt"
METRICS_FILE = "metrics.json"
_VERSION_RE = re.compile(r"^v(\d{4,})-")


class RegistryError(ValueError):
    """A registry that cannot be used as it is (a damaged record or file); the message names it."""


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
               if not _finite_number(minimum)]
    if not _finite_number(tolerance) or float(tolerance) < 0:
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (a temp file of its own + rename) so a reader never sees half a production.json."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(payload, indent=2, default=float))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelRegistry:
    """Versions of trained checkpoints with their metrics, and which one is in production."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS_DIR

    def versions(self) -> list[str]:
        """Registered version ids, oldest first."""
        if not self.versions_dir.exists():
            return []
        found = [p.name for p in self.versions_dir.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)]
        return sorted(found, key=lambda v: int(_VERSION_RE.match(v).group(1)))  # type: ignore[union-attr]

    def register(self, checkpoint: str | Path, metrics: dict[str, Any], model_name: str) -> str:
        """Copy a checkpoint into the registry with its metrics; returns the new version id. Registering a
        checkpoint the registry already holds (same bytes, same model name) returns that version instead: a
        re-run of a killed pipeline does not make a second copy of the same model."""
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} does not exist; train the model first")
        if not re.fullmatch(r"[A-Za-z0-9_.@-]+", model_name):
            raise ValueError(f"model name '{model_name}' may only hold letters, digits and _.@-")
        digest = _sha256(checkpoint)
        for known in reversed(self.versions()):
            info = self.info(known)
            if info.get("sha256") == digest and info.get("model_name") == model_name:
                return known
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        existing = self.versions()
        number = int(_VERSION_RE.match(existing[-1]).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
        while True:
            version = f"v{number:04d}-{model_name}"
            try:
                (self.versions_dir / version).mkdir()
                break
            except FileExistsError:  # another writer took this number
                number += 1
        target = self.versions_dir / version
        shutil.copy2(checkpoint, target / CHECKPOINT_FILE)
        _write_json(
            target / METRICS_FILE,
            {"version": version, "model_name": model_name, "metrics": metrics, "sha256": digest,
             "registered_at": _now()},
        )
        return version

    def info(self, version: str) -> dict[str, Any]:
        """The metrics.json of a registered version."""
        path = self.versions_dir / version / METRICS_FILE
        if not path.exists():
            known = ", ".join(self.versions()) or "none"
            raise KeyError(f"version '{version}' is not in the registry {self.root} (registered: {known})")
        return json.loads(path.read_text())

    def promote(self, version: str) -> None:
        """Make a registered version the production model (rewrites ROOT/production.json)."""
        info = self.info(version)
        _write_json(
            self.root / PRODUCTION_FILE,
            {
                "version": version,
                "model_name": info["model_name"],
                "checkpoint": f"{VERSIONS_DIR}/{version}/{CHECKPOINT_FILE}",
                "metrics": info["metrics"],
                "promoted_at": _now(),
            },
        )

    def production(self) -> dict[str, Any] | None:
        """The production record, or None when nothing was promoted yet (RegistryError if it is damaged)."""
        path = self.root / PRODUCTION_FILE
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{path} is damaged (not valid JSON: {exc}); restore it, or promote a version "
                                "again") from None
        if not isinstance(record, dict) or not isinstance(record.get("version"), str):
            raise RegistryError(f"{path} is damaged: it names no production version")
        return record

    def check_servable(self) -> str:
        """Check, cheaply, that the production model and the catalog can be served together; returns the
        production version, or raises RegistryError naming the file and the problem."""
        import pyarrow.parquet as pq
        import torch

        record = self.production()
        if record is None:
            raise RegistryError(f"{self.root}: no {PRODUCTION_FILE}; promote a model (bgmrec gate) first")
        version = record["version"]
        checkpoint = self.checkpoint(version)
        try:
            torch.load(checkpoint, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise RegistryError(f"{checkpoint}: the production checkpoint is missing") from None
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails in many ways
            raise RegistryError(f"{checkpoint}: the production checkpoint cannot be loaded ({exc})") from None
        catalog = self.root / CATALOG_FILE
        try:
            metadata = pq.read_schema(catalog).metadata or {}
        except FileNotFoundError:
            raise RegistryError(f"{catalog}: no catalog; run `bgmrec build-catalog` first") from None
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several error types for a damaged file
            raise RegistryError(f"{catalog} is damaged ({exc}); run `bgmrec build-catalog` again") from None
        made_by = metadata.get(b"bgmrec_model_version", b"").decode()
        if made_by and made_by != version:
            raise RegistryError(f"{catalog} was embedded by model {made_by} but production is {version}; run "
                                "`bgmrec build-catalog` again")
        return version

    def checkpoint(self, version: str) -> Path:
        """The checkpoint file of a registered version (under ROOT wherever ROOT is now)."""
        return self.versions_dir / version / CHECKPOINT_FILE

    def load_production(self):
        """The production model, loaded from its checkpoint (a TorchRecommender)."""
        from bgmrec.models import load_model

        record = self.production()
        if record is None:
            raise FileNotFoundError(f"no production model in {self.root}; run the gate step first")
        return load_model(self.checkpoint(record["version"]))
