"""Model registry on a directory: versions, production and its history (the gate that decides is bgmrec.gate).

Layout of ROOT:
  versions/<version>/model.pt       the checkpoint (a copy; the registry owns it)
  versions/<version>/metrics.json   {"version", "model_name", "metrics", "sha256", "registered_at", "gate"}
  production.json                   {"version", "model_name", "checkpoint", "metrics", "promoted_at",
                                     "promoted_by", "history": [earlier production records, oldest first]}
  promotions.jsonl                  every change of production, one JSON line each (who or what, when, from what)
  catalog.parquet                   the serving music catalog (written by bgmrec.catalog, not here)

Every path a record holds is relative to ROOT, so a registry copied elsewhere, restored from a backup or
mounted at another path (/data/registry in a pod) works as it is. A version directory is written once; only
production.json changes, always atomically, and it carries its own history so `rollback` is one atomic write too.

A version id is `v<NNNN>-<model_name>`: ordered, readable, unique within one registry.

Inside a DVC experiment (`dvc exp run` sets $DVC_EXP_NAME) the registry is read-only: experiments compare
candidates, they never change what is served. Its relative root is then the main workspace's ($DVC_ROOT), so an
experiment run in a temporary copy (`--temp`, `--queue`) is still compared against the real production model.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from bgmrec.catalog import CATALOG_FILE

VERSIONS_DIR = "versions"
PRODUCTION_FILE = "production.json"
PROMOTIONS_FILE = "promotions.jsonl"
CHECKPOINT_FILE = "model.pt"
METRICS_FILE = "metrics.json"
# Set by DVC for every stage of `dvc exp run` (workspace, --temp and --queue runs), never by `dvc repro`.
EXPERIMENT_ENV = "DVC_EXP_NAME"
EXPERIMENT_ROOT_ENV = "DVC_ROOT"
_VERSION_RE = re.compile(r"^v(\d{4,})-")


class RegistryError(ValueError):
    """A registry that cannot be used as it is (a damaged record or file); the message names it."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def running_experiment() -> str | None:
    """The name of the DVC experiment this process runs in (`dvc exp run`), None outside one."""
    return os.environ.get(EXPERIMENT_ENV) or None


class ExperimentSkip(TypedDict):
    """What a step returns instead of writing, inside a DVC experiment."""

    experiment: str
    skipped: str


def experiment_skip(what: str) -> ExperimentSkip | None:
    """Inside a DVC experiment, what a step that would change `what` (the serving catalog, the Bento store)
    returns instead of doing it; None outside an experiment, where the step runs."""
    name = running_experiment()
    if name is None:
        return None
    return {"experiment": name, "skipped": f"inside DVC experiment {name}: {what} left as it is (experiments never "
                                          "change what is served; `dvc repro` does)"}


def operator() -> str:
    """`user@host` of this process, recorded with every production change it makes."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class ModelRegistry:
    """Versions of trained checkpoints with their metrics and gate record, which one is in production, and the
    production models before it."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if running_experiment() and not root.is_absolute() and os.environ.get(EXPERIMENT_ROOT_ENV):
            root = Path(os.environ[EXPERIMENT_ROOT_ENV]) / root
        self.root = root

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS_DIR

    def versions(self) -> list[str]:
        """Registered version ids, oldest first."""
        if not self.versions_dir.exists():
            return []
        found = [p.name for p in self.versions_dir.iterdir()  # a folder without its metrics: a killed register
                 if p.is_dir() and _VERSION_RE.match(p.name) and (p / METRICS_FILE).is_file()]
        return sorted(found, key=lambda v: int(_VERSION_RE.match(v).group(1)))  # type: ignore[union-attr]

    def register(
        self, checkpoint: str | Path, metrics: dict[str, Any], model_name: str, gate: dict[str, Any] | None = None
    ) -> str:
        """Copy a checkpoint into the registry with its metrics and the gate's record (thresholds, tolerance,
        decision); returns the new version id. Registering a checkpoint the registry already holds (same bytes,
        same model name) returns that version instead: a re-run of a killed pipeline does not make a second copy
        of the same model."""
        self._check_writable("register a model")
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
        record: dict[str, Any] = {"version": version, "model_name": model_name, "metrics": metrics,
                                  "sha256": digest, "registered_at": _now()}
        if gate is not None:
            record["gate"] = gate
        _write_json(target / METRICS_FILE, record)
        return version

    def info(self, version: str) -> dict[str, Any]:
        """The metrics.json of a registered version (KeyError naming the registered ones if it is unknown)."""
        path = self.versions_dir / version / METRICS_FILE
        if not path.exists():
            known = ", ".join(self.versions()) or "none"
            raise KeyError(f"version '{version}' is not in the registry {self.root} (registered: {known})")
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{path} is damaged (not valid JSON: {exc})") from None

    def check_checkpoint(self, version: str, load: bool = False) -> Path:
        """The checkpoint of a registered version after checking it is there and holds the bytes that were
        registered (its sha256), and with `load` that torch can read it; RegistryError naming the file otherwise."""
        info = self.info(version)
        path = self.checkpoint(version)
        if not path.is_file():
            raise RegistryError(f"{path}: the checkpoint of {version} is missing")
        recorded = info.get("sha256")
        if recorded and _sha256(path) != recorded:
            raise RegistryError(f"{path}: the checkpoint of {version} is damaged (its sha256 is not the one "
                                f"registered, {recorded[:12]}…)")
        if load:
            import torch

            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails in many ways
                raise RegistryError(f"{path}: the checkpoint of {version} cannot be loaded ({exc})") from None
        return path

    def promote(self, version: str, by: str = "gate", load: bool = False, operator_decision: bool = False) -> bool:
        """Make a registered version the production model: one atomic rewrite of ROOT/production.json, which keeps
        the production models before it (for `rollback`), and a line in ROOT/promotions.jsonl. `by` says who or
        what promoted it. Refused (RegistryError) when the version's checkpoint is missing or damaged (with `load`,
        also when torch cannot read it), and, unless it is an `operator_decision`, when the version was in
        production and was replaced since (the gate re-deciding on an old candidate must not undo an operator's
        rollback or promotion). Returns False, writing nothing, when the version is already in production (a
        re-run of the gate)."""
        self._check_writable(f"promote {version}")
        info = self.info(version)
        self.check_checkpoint(version, load)
        current = self.production()
        if current is not None and current["version"] == version:
            return False
        replaced = None if operator_decision else self.replaced(version)
        if replaced is not None:
            raise RegistryError(f"{version} was in production until a {replaced.get('action')} by "
                                f"{replaced.get('by')} replaced it at {replaced.get('at')}; the gate does not put it "
                                f"back, an operator does (`bgmrec registry promote {version}`)")
        history = [*current.get("history", []), _earlier(current)] if current is not None else []
        self._set_production(info, history, by, "promote", current)
        return True

    def rollback(self, by: str, load: bool = False) -> str:
        """Put the production model before the current one back in production (the current one leaves the
        history); returns its version. Refused when there is none, or when its checkpoint is missing or damaged
        (with `load`, also when torch cannot read it)."""
        self._check_writable("roll back production")
        current = self.production()
        if current is None:
            raise RegistryError(f"{self.root}: nothing is in production, so there is nothing to roll back")
        history = list(current.get("history", []))
        if not history:
            raise RegistryError(f"{self.root}: {current['version']} is the first production model: there is no "
                                "earlier one to roll back to (promote another version instead)")
        previous = history.pop()["version"]
        try:
            self.check_checkpoint(previous, load)
        except (KeyError, RegistryError) as exc:
            raise RegistryError(f"cannot roll back to {previous}: {exc}; promote another version instead") from None
        self._set_production(self.info(previous), history, by, "rollback", current)
        return previous

    def restore_production(self, record: dict[str, Any] | None, by: str) -> None:
        """Put back a production record read before a change that could not be completed (None: there was no
        production model), atomically, with a line in ROOT/promotions.jsonl."""
        self._check_writable("restore production")
        path = self.root / PRODUCTION_FILE
        current = self.production()
        if record is None:
            path.unlink(missing_ok=True)
        else:
            _write_json(path, record)
        self._log("restore", record["version"] if record is not None else None, current, by, _now())

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
        if not isinstance(record.get("history", []), list):
            raise RegistryError(f"{path} is damaged: its history is not a list")
        return record

    def promotions(self) -> list[dict[str, Any]]:
        """Every change of production, oldest first (ROOT/promotions.jsonl; a line cut short by a crash is
        left out)."""
        path = self.root / PROMOTIONS_FILE
        if not path.exists():
            return []
        entries = []
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def replaced(self, version: str) -> dict[str, Any] | None:
        """The production change (promotion, rollback, restore) that took `version` out of production, unless it
        was put back since; None for a version never in production, or in production now."""
        found = None
        for entry in self.promotions():
            if entry.get("previous") == version and entry.get("version") != version:
                found = entry
            elif entry.get("version") == version:
                found = None
        return found

    def describe(self, version: str) -> dict[str, Any]:
        """Everything the registry knows about a version: its record (metrics, sha256, gate record), whether it
        is in production, and every production change that put it there or took it out."""
        info = self.info(version)
        current = self.production()
        return {
            "version": version,
            "model_name": info.get("model_name"),
            "registered_at": info.get("registered_at"),
            "sha256": info.get("sha256"),
            "checkpoint": f"{VERSIONS_DIR}/{version}/{CHECKPOINT_FILE}",
            "metrics": info.get("metrics", {}),
            "gate": info.get("gate"),
            "in_production": current is not None and current["version"] == version,
            "promotions": [entry for entry in self.promotions() if version in (entry.get("version"),
                                                                               entry.get("previous"))],
        }

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

    def require_production(self) -> dict[str, Any]:
        """The production record; FileNotFoundError when nothing was promoted yet."""
        record = self.production()
        if record is None:
            raise FileNotFoundError(f"no production model in {self.root}; run the gate step first")
        return record

    def load_production(self):
        """The production model, loaded from its checkpoint (a TorchRecommender)."""
        from bgmrec.models import load_model

        return load_model(self.checkpoint(self.require_production()["version"]))

    def _set_production(
        self, info: dict[str, Any], history: list[dict[str, Any]], by: str, action: str,
        current: dict[str, Any] | None,
    ) -> None:
        version = info["version"]
        now = _now()
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.root / PRODUCTION_FILE, {
            "version": version,
            "model_name": info["model_name"],
            "checkpoint": f"{VERSIONS_DIR}/{version}/{CHECKPOINT_FILE}",
            "metrics": info["metrics"],
            "promoted_at": now,
            "promoted_by": by,
            "history": history,
        })
        self._log(action, version, current, by, now)

    def _log(self, action: str, version: str | None, current: dict[str, Any] | None, by: str, at: str) -> None:
        entry = {"at": at, "action": action, "version": version,
                 "previous": current["version"] if current is not None else None, "by": by}
        with (self.root / PROMOTIONS_FILE).open("a") as log:  # one short append: whole lines, even when shared
            log.write(json.dumps(entry) + "\n")

    def _check_writable(self, what: str) -> None:
        name = running_experiment()
        if name is not None:
            raise RegistryError(f"{self.root}: cannot {what} inside DVC experiment {name} (${EXPERIMENT_ENV} is "
                                "set): experiments never change the registry; run `dvc repro` or the `bgmrec "
                                "registry` commands outside the experiment")


def _earlier(record: dict[str, Any]) -> dict[str, Any]:
    """A production record as the history keeps it: which version, since when, promoted by whom or what."""
    return {key: record.get(key) for key in ("version", "model_name", "promoted_at", "promoted_by")}
