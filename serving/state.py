"""What the service reads when it starts, and what it serves: the model and the catalog, swapped together.

`StartupConfig` is read once (configuration file, environment, admin token). `ServedState` is the model, the
catalog its music encoder embedded and the model's registry version, as one immutable object: the service swaps
its reference, so a request reads it once and finishes on the state it started with. `load_registry_state`
reads a registry's production model and catalog aside and refuses a pair that cannot be served together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bgmrec.catalog import CATALOG_FILE, CatalogError, MusicCatalog, load_catalog
from bgmrec.config import CatalogSettings, ServingSettings, load_config
from bgmrec.models.base import TorchRecommender
from bgmrec.registry import PRODUCTION_FILE, ModelRegistry


@dataclass(frozen=True)
class StartupConfig:
    """Everything the service reads when it starts: the `serving:` settings (environment applied), where the
    registry and the Feast repo are, and the admin token."""

    settings: ServingSettings
    catalog: CatalogSettings
    registry: Path
    feature_repo: Path | None
    feast_config: str
    admin_token: str

    @classmethod
    def from_env(cls) -> StartupConfig:
        env = os.environ
        config = load_config()  # $BGMREC_PARAMS, else the defaults
        return cls(
            settings=config.serving.with_env(env),
            catalog=config.catalog,
            registry=Path(env.get("BGMREC_REGISTRY") or config.gate.registry),
            feature_repo=Path(env["BGMREC_FEATURE_REPO"]) if env.get("BGMREC_FEATURE_REPO") else None,
            feast_config=config.feast.config,
            admin_token=env.get("BGMREC_ADMIN_TOKEN", ""),
        )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        return int(self.settings.max_body_mb * 2**20)


@dataclass(frozen=True)
class ServedState:
    """What answers requests, swapped as one reference: the model, the catalog its music encoder embedded, the
    model's registry version, and the identity of the registry files they were read from."""

    model: TorchRecommender
    catalog: MusicCatalog
    model_version: str
    stamp: tuple = ()


def registry_stamp(root: Path) -> tuple:
    """The identity of production.json and catalog.parquet (inode, size, mtime): a writer's atomic rename or
    rewrite changes it. Cheap enough to poll every few seconds, also on a network volume."""
    stamp = []
    for name in (PRODUCTION_FILE, CATALOG_FILE):
        try:
            st = os.stat(root / name)
        except FileNotFoundError:
            stamp.append(None)
        else:
            stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def load_registry_state(
    registry: ModelRegistry, stamp: tuple, current: ServedState | None, catalog_settings: CatalogSettings
) -> ServedState:
    """The registry's production model and catalog, loaded aside (the model is reused when its version did not
    change; a large catalog with the vector index saved beside it). Raises when they cannot be served together:
    no production model, a catalog that is missing or empty, or one embedded by another model than production's."""
    root = registry.root
    record = registry.production()
    if record is None:
        raise FileNotFoundError(f"{root}: no {PRODUCTION_FILE}; promote a model (bgmrec gate) first")
    version = str(record["version"])
    model = current.model if current is not None and current.model_version == version else registry.load_production()
    catalog = load_catalog(root / CATALOG_FILE, catalog_settings)
    if len(catalog) == 0:
        raise CatalogError(f"{root / CATALOG_FILE}: the catalog is empty")
    if catalog.model_version and catalog.model_version != version:
        raise CatalogError(f"{root / CATALOG_FILE} was embedded by model {catalog.model_version}, production is "
                           f"{version}: waiting for `bgmrec build-catalog`")
    if current is not None and current.model_version == version and catalog.dim != current.catalog.dim:
        raise CatalogError(f"{root / CATALOG_FILE}: embeddings have {catalog.dim} dims, the model embeds in "
                           f"{current.catalog.dim}")
    return ServedState(model, catalog, version, stamp)
