"""params.yaml parsed once into typed settings: every driver (CLI, DVC stages, KFP components, pipelines, service)
reads its knobs from a `Config`.

Every key has a default here, so a configuration file holds only what differs (the repository's params.yaml
lists every key because DVC tracks parameters by key). Unknown keys and wrong types fail at once, naming the key:
`params.yaml: gate.tolerance: Input should be a valid number`. A model's training parameters come from one
resolver, `Config.model_params`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bgmrec.batch import BatchRules
from bgmrec.media.config import ExtractionConfig
from bgmrec.media.sample import SampleMediaConfig

PARAMS_ENV = "BGMREC_PARAMS"
IMAGE_ENV = "BGMREC_PIPELINE_IMAGE"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataSettings(_Section):
    """The dataset `dvc repro` builds and trains on, and the seed of its splits and IPS negatives."""

    dataset: str = "data/sample"
    seed: int = 0


class ValidationSettings(_Section):
    """Great Expectations limits (bgmrec/validation)."""

    max_description_chars: int = Field(2200, ge=1)
    min_norm: float = Field(0.001, ge=0.0, allow_inf_nan=False)
    max_norm: float = Field(10000.0, gt=0.0, allow_inf_nan=False)


class FeastSettings(_Section):
    """The Feast feature repo and the config file inside it."""

    repo: str = "features"
    config: str = "feature_store.yaml"


class TrainSettings(_Section):
    """Settings for the pipeline's dataset that override every model's `models:` entry (not the benchmark's)."""

    overrides: dict[str, Any] = Field(default_factory=dict)


class GateSettings(_Section):
    """The promotion gate: thresholds on `<split kind>.<metric>` names, and the tolerance against production."""

    model: str = "cmvae"
    registry: str = "data/registry"
    # The bundled sample's gate (docs/decisions/sample-gate-thresholds.md), equal to the project's params.yaml
    # `gate:` so a run without a params file gates the same way; tests/unit/test_config_defaults.py checks it.
    tolerance: float = Field(0.05, ge=0.0, allow_inf_nan=False)
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {"weak.recall@10": 0.15, "weak.ips_recall@10": 0.25, "strong.recall@10": 0.5}
    )

    @field_validator("thresholds")
    @classmethod
    def _finite(cls, thresholds: dict[str, float]) -> dict[str, float]:
        for name, value in thresholds.items():
            if not math.isfinite(value):
                raise ValueError(f"threshold {name} is {value}: thresholds must be finite numbers")
        return thresholds


class TaskResources(_Section):
    """CPU/memory requests and limits and the retry count of one kind of task; accelerator for GPU tasks."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    retries: int = Field(ge=0)
    accelerator: str = ""
    accelerator_count: int = Field(0, ge=0)
    node_selector: dict[str, str] = Field(default_factory=dict)
    toleration: dict[str, str] = Field(default_factory=dict)


class VolumeSettings(_Section):
    claim: str = "bgmrec-data"
    mount_path: str = "/data"


class ConfigMapSettings(_Section):
    name: str = "bgmrec-params"
    mount_path: str = "/etc/bgmrec"


class KubeflowSettings(_Section):
    """Everything the compiled pipelines need to know about the cluster."""

    base_image: str = "bgmrec-pipeline:latest"
    data_volume: VolumeSettings = Field(default_factory=VolumeSettings)
    params_config_map: ConfigMapSettings = Field(default_factory=ConfigMapSettings)
    dataset_dir: str = "/data/datasets/current"
    registry_dir: str = "/data/registry"
    feature_repo: str = "/data/feast"
    extract_shards: int = Field(4, ge=1)
    # Secret holding the Feast Redis password (key `password`), for the tasks that write to the online store.
    redis_secret: str = "bgmrec-redis"
    training: TaskResources = Field(default_factory=lambda: TaskResources(
        accelerator="nvidia.com/gpu", accelerator_count=1, node_selector={"nvidia.com/gpu.present": "true"},
        toleration={"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        cpu_request="4", cpu_limit="8", memory_request="16G", memory_limit="32G", retries=2,
    ))
    default: TaskResources = Field(default_factory=lambda: TaskResources(
        cpu_request="1", cpu_limit="2", memory_request="2G", memory_limit="8G", retries=1,
    ))

    @property
    def image(self) -> str:
        """The image components run in: $BGMREC_PIPELINE_IMAGE, else `base_image`."""
        return os.environ.get(IMAGE_ENV) or self.base_image

    @property
    def params_path(self) -> str:
        """Where tasks on the cluster read the configuration (the mounted ConfigMap)."""
        return f"{self.params_config_map.mount_path.rstrip('/')}/params.yaml"


class ServingSettings(_Section):
    """The recommender service (`bgmrec serve`, serving/service.py). It serves the registry `gate.registry`
    (or $BGMREC_REGISTRY); every field can be overridden by an environment variable BGMREC_<FIELD>, e.g.
    BGMREC_MAX_K=50 (what `bgmrec serve` options and the k8s Deployment set)."""

    # "registry": the registry's production model and catalog, followed; "bento": the model and catalog packaged
    # in the Bento (`bgmrec build-bento`), pinned.
    model_source: Literal["registry", "bento"] = "registry"
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    threads: int = Field(4, ge=1)
    # BentoML's request timeout. Its TimeoutMiddleware keeps every request's timer until the timeout: 10 s (not
    # BentoML's 60) keeps memory flat and the p99 low (docs/decisions/serving-on-bentoml.md).
    timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    access_log: bool = True
    max_k: int = Field(100, ge=1)
    max_upload_mb: float = Field(50.0, gt=0, allow_inf_nan=False)
    max_body_mb: float = Field(4.0, gt=0, allow_inf_nan=False)
    monitor_window: int = Field(1000, ge=1)
    monitor_interval_s: float = Field(1.0, ge=0, allow_inf_nan=False)
    torch_threads: int = Field(1, ge=1)
    blas_threads: int = Field(1, ge=1)
    # BentoML's adaptive batching of /recommend_by_features: most queries per model call, and the latency past
    # which its dispatcher sheds a waiting query with a 503 rather than answer it late (the batching window
    # itself adapts to the traffic).
    max_batch: int = Field(64, ge=1)
    max_batch_latency_ms: int = Field(5000, ge=1)
    # How often every replica looks at REGISTRY for a new production model or catalog version (0 = never).
    registry_poll_s: float = Field(2.0, ge=0, allow_inf_nan=False)

    def with_env(self, environ: Mapping[str, str], prefix: str = "BGMREC_") -> ServingSettings:
        """These settings with every BGMREC_<FIELD> variable of `environ` applied (converted from text and
        checked like the file's values; a bad one raises ConfigError naming the variable)."""
        given = {name: environ[f"{prefix}{name.upper()}"] for name in type(self).model_fields
                 if f"{prefix}{name.upper()}" in environ}
        if not given:
            return self
        try:
            return type(self).model_validate({**self.model_dump(), **given}, strict=False)
        except ValidationError as exc:
            problems = [f"{prefix}{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors(include_url=False)]
            raise ConfigError("environment: " + "; ".join(problems)) from None


class CatalogSettings(_Section):
    """Catalog search (bgmrec/catalog.py): exact matrix products below `index_min_size` music, a faiss IVF-SQ8
    index from there on. The defaults are the measured choice (docs/decisions/vector-index.md): the setting with
    the lowest latency at recall@20 >= 0.98 against exact search on a clustered 1M x 512 catalog."""

    index_min_size: int = Field(200_000, ge=1)
    # Inverted lists (k-means cells) of the index; 0 = 4·sqrt(music), 4,000 at 1M. Fixed when the index is built
    # (`bgmrec build-catalog`).
    ivf_lists: int = Field(0, ge=0)
    # Lists scanned per query: recall against latency (32 of 4,000 at 1M: recall@20 0.998). Read when a catalog
    # is loaded, so it can change without rebuilding.
    nprobe: int = Field(32, ge=1)


def _default_models() -> dict[str, dict[str, Any]]:
    return {"cmvae": {}, "vmcml": {}, "cevar": {}}


class Config(_Section):
    """The whole configuration, one section per step."""

    data: DataSettings = Field(default_factory=DataSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    feast: FeastSettings = Field(default_factory=FeastSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    models: dict[str, dict[str, Any]] = Field(default_factory=_default_models)
    gate: GateSettings = Field(default_factory=GateSettings)
    kubeflow: KubeflowSettings = Field(default_factory=KubeflowSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    sample_media: dict[str, Any] = Field(default_factory=dict)
    extract: dict[str, Any] = Field(default_factory=dict)
    batch: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sample_media", "extract", "batch", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("sample_media")
    @classmethod
    def _sample_media(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _checked_dataclass(SampleMediaConfig, value)

    @field_validator("extract")
    @classmethod
    def _extract(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _checked_dataclass(ExtractionConfig, value)

    @field_validator("batch")
    @classmethod
    def _batch(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _checked_dataclass(BatchRules, value)

    @model_validator(mode="after")
    def _models_known(self) -> Config:
        from bgmrec.models import create_model

        for name in self.models:
            try:
                model = create_model(name, self.model_params(name))
            except ValueError as exc:
                raise ValueError(f"models.{name}: {exc}") from exc
            defaults = getattr(model, "default_params", {})
            for key, value in self.model_params(name).items():
                if key in defaults and not _same_kind(value, defaults[key]):
                    raise ValueError(f"models.{name}.{key}: {value!r} is a {type(value).__name__}, expected a "
                                     f"{type(defaults[key]).__name__} like the default {defaults[key]!r}")
        if self.gate.model not in self.models:
            raise ValueError(f"gate.model: '{self.gate.model}' is not under models: ({', '.join(self.models)})")
        return self

    # -- the typed views the steps take --------------------------------------------------------------------

    def model_params(self, name: str) -> dict[str, Any]:
        """A model's training parameters: its `models:` entries (family block, ablation, own block), then
        `train.overrides`. The one resolver for `bgmrec train` and the KFP training component."""
        from bgmrec.models import resolve_params

        return resolve_params(name, self.models, self.train.overrides)

    @property
    def extraction(self) -> ExtractionConfig:
        return ExtractionConfig.from_params(self.extract)

    @property
    def sample(self) -> SampleMediaConfig:
        return SampleMediaConfig.from_params(self.sample_media)

    @property
    def batch_rules(self) -> BatchRules:
        return BatchRules.from_params(self.batch)

    def to_yaml(self) -> str:
        """The whole configuration as a params.yaml (every key, defaults included)."""
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a configured value has the type of the parameter's default (ints pass where floats are expected;
    booleans never pass as numbers)."""
    if default is None or isinstance(default, list | tuple | dict):
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, type(default))


def _checked_dataclass(cls: type, value: dict[str, Any]) -> dict[str, Any]:
    """A section kept as a mapping for a dataclass of its own module: unknown keys, wrong types and the
    dataclass's own range checks fail here, at load time."""
    defaults = asdict(cls())
    for key, given in value.items():
        if key in defaults and not _same_kind(given, defaults[key]):
            raise ValueError(f"{key}: {given!r} is a {type(given).__name__}, expected a "
                             f"{type(defaults[key]).__name__} like the default {defaults[key]!r}")
    instance = cls.from_params(value)
    return {key: getattr(instance, key) for key in value}


def parse_config(mapping: dict[str, Any] | None, source: str = "params.yaml") -> Config:
    """A Config from a mapping (a parsed YAML file); ConfigError naming the source and the key if it is bad."""
    try:
        return Config.model_validate(mapping or {})
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def load_config(path: str | Path | None = None) -> Config:
    """The configuration in `path` (a params.yaml); None reads $BGMREC_PARAMS when set, else the defaults."""
    import yaml

    if path is None:
        path = os.environ.get(PARAMS_ENV) or None
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        mapping = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if mapping is not None and not isinstance(mapping, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(mapping).__name__}")
    return parse_config(mapping, str(path))


def find_params(start: str | Path | None = None) -> Path | None:
    """The params.yaml of the project the working directory is in (it or a parent holds params.yaml next to
    dvc.yaml), else None: commands run inside a checkout take their defaults from its configuration."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder / "params.yaml"
    return None
