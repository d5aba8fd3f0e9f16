"""Promotion steps: put a registered version in production, or roll production back, with the serving catalog
rebuilt for the model that is then in production.

The served catalog is embedded by the production model's music encoder, and the service refuses a catalog
stamped with another model version (serving/state.py): a new production model without its catalog would not be
served. So a production change here is complete only with its catalog: when the rebuild fails, the production
record from before is put back and the error is raised, so what is served never changes half-way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bgmrec.config import CatalogSettings
    from bgmrec.registry import ModelRegistry


def promote_step(
    registry_dir: str | Path, version: str, by: str, dataset_dir: str | Path, *, rebuild_catalog: bool = True,
    catalog_settings: CatalogSettings | None = None,
) -> dict[str, Any]:
    """Put a registered version in production (refused when its checkpoint is missing, damaged or unreadable)
    and rebuild the serving catalog from `dataset_dir` with it (`build_catalog_step`). With `rebuild_catalog`
    False the catalog is left as it is and the result's `next` is the command that rebuilds it."""
    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_dir)

    def change() -> str | None:
        return version if registry.promote(version, by, load=True, operator_decision=True) else None

    return _change_production(registry, change, by, dataset_dir, rebuild_catalog, catalog_settings)


def rollback_step(
    registry_dir: str | Path, by: str, dataset_dir: str | Path, *, rebuild_catalog: bool = True,
    catalog_settings: CatalogSettings | None = None,
) -> dict[str, Any]:
    """Put the production model before the current one back in production and rebuild the serving catalog with
    it, as `promote_step` does."""
    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_dir)
    return _change_production(registry, lambda: registry.rollback(by, load=True), by, dataset_dir, rebuild_catalog,
                              catalog_settings)


def _change_production(
    registry: ModelRegistry, change: Callable[[], str | None], by: str, dataset_dir: str | Path,
    rebuild_catalog: bool, catalog_settings: CatalogSettings | None,
) -> dict[str, Any]:
    from bgmrec.steps import build_catalog_step

    before = registry.production()
    changed = change()
    after = registry.production()
    assert after is not None
    result: dict[str, Any] = {"production": after["version"], "previous": before["version"] if before else None,
                              "changed": changed is not None, "catalog": None, "next": None}
    if changed is None:
        return result
    if not rebuild_catalog:
        result["next"] = f"bgmrec build-catalog --registry {registry.root} --dataset {dataset_dir}"
        return result
    try:
        result["catalog"] = build_catalog_step(dataset_dir, registry.root, catalog_settings=catalog_settings)
    except BaseException:
        registry.restore_production(before, f"{by}: the catalog could not be rebuilt for {after['version']}")
        raise
    return result
