"""`bgmrec registry`: list the registered model versions, show one, promote one, roll production back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bgmrec.commands.common import ParamsOption, command_config, console, fail, project_path

if TYPE_CHECKING:
    from bgmrec.config import Config
    from bgmrec.registry import ModelRegistry

registry_app = typer.Typer(
    help="The model registry: registered versions with their gate record, the production model and its history.",
    no_args_is_help=True,
)

RegistryOption = Annotated[
    Path | None,
    typer.Option("--registry", help="Model registry directory (default: the configuration's `gate.registry`; "
                                    "inside a checkout, relative to its root)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for programs instead of tables.")]
DatasetOption = Annotated[
    Path | None,
    typer.Option("--dataset", help="Dataset whose music the serving catalog is rebuilt from (default: "
                                   "`data.dataset`; inside a checkout, relative to its root)."),
]
RebuildOption = Annotated[
    bool,
    typer.Option("--rebuild-catalog/--no-rebuild-catalog",
                 help="Rebuild the serving catalog with the new production model (as `bgmrec build-catalog` does), "
                      "so the service swaps both in. Without it the service keeps serving the previous model until "
                      "the printed `bgmrec build-catalog` command has run."),
]


def _settings(registry: Path | None, params: Path | None) -> tuple[ModelRegistry, Config]:
    """The registry to work on and the configuration."""
    from bgmrec.registry import ModelRegistry

    config = command_config(params)
    return ModelRegistry(registry if registry is not None else project_path(config.gate.registry, params)), config


def _short(text: str | None, length: int = 12) -> str:
    return text[:length] if text else "—"


def _gate_cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "not recorded"
    verdict = "passed" if record.get("passed") else "refused"
    compared = record.get("production")
    return f"{verdict} (vs {compared})" if compared else f"{verdict} (no production before)"


def _gated_metrics(described: dict[str, Any], fallback: dict[str, float]) -> list[tuple[str, float | None, Any]]:
    """(metric, value, threshold) for each metric the gate checked (the current thresholds when the version has
    no gate record)."""
    from bgmrec.gate import flatten_metrics

    flat = flatten_metrics(described["metrics"])
    thresholds = (described["gate"] or {}).get("thresholds") or fallback
    return [(name, flat.get(name), minimum) for name, minimum in sorted(thresholds.items())]


def _when(timestamp: Any) -> str:
    """An ISO timestamp of the registry (UTC) to the minute, for tables."""
    return str(timestamp)[:16].replace("T", " ") if timestamp else "—"


def _change_cell(entry: dict[str, Any]) -> str:
    return f"{entry.get('action')} {entry.get('previous') or '—'} → {entry.get('version') or '—'}"


def _promoted_cell(described: dict[str, Any]) -> str:
    if not described["promotions"]:
        return "never in production"
    last = described["promotions"][-1]
    return f"{_change_cell(last)}\n{_when(last.get('at'))} by {last.get('by')}"


def _versions_table(registry: ModelRegistry, rows: list[dict[str, Any]], thresholds: dict[str, float]) -> Table:
    table = Table(title=f"model registry {registry.root}", title_justify="left")
    for column in ("", "version", "model", "registered (UTC)", "sha256", "gate", "gated metric ≥ threshold",
                   "last production change (UTC)"):
        table.add_column(column, no_wrap=column in ("version", "sha256"))
    for row in rows:
        metrics = "\n".join(f"{name} {_number(value)} ≥ {_number(minimum)}"
                            for name, value, minimum in _gated_metrics(row, thresholds))
        table.add_row("●" if row["in_production"] else "", row["version"], str(row["model_name"]),
                      _when(row["registered_at"]), _short(row["sha256"]), _gate_cell(row["gate"]), metrics or "—",
                      _promoted_cell(row), style="bold green" if row["in_production"] else None)
    return table


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _print_version(registry: ModelRegistry, described: dict[str, Any], thresholds: dict[str, float]) -> None:
    from bgmrec.gate import flatten_metrics

    out = Console()
    facts = Table(title=f"{described['version']} in {registry.root}", title_justify="left", show_header=False)
    facts.add_column(style="bold")
    facts.add_column()
    gate = described["gate"] or {}
    for name, value in (
        ("model", described["model_name"]), ("registered", described["registered_at"]),
        ("checkpoint", described["checkpoint"]), ("sha256", described["sha256"] or "not recorded"),
        ("checkpoint check", described.get("checkpoint_check", "not run")),
        ("in production", "yes" if described["in_production"] else "no"),
        ("gate", _gate_cell(described["gate"])), ("tolerance", _number(gate.get("tolerance", "—"))),
        ("gate reasons", "\n".join(gate.get("reasons", [])) or "—"),
    ):
        facts.add_row(name, str(value))
    out.print(facts)
    gated = {name: minimum for name, _, minimum in _gated_metrics(described, thresholds)}
    metrics = Table(title="metrics", title_justify="left")
    for column in ("metric", "value", "threshold"):
        metrics.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in sorted(flatten_metrics(described["metrics"]).items()):
        metrics.add_row(name, _number(value), _number(gated[name]) if name in gated else "",
                        style="bold" if name in gated else None)
    out.print(metrics)
    changes = Table(title="production changes to and from this version", title_justify="left")
    for column in ("at", "change", "by"):
        changes.add_column(column)
    for entry in described["promotions"]:
        changes.add_row(str(entry.get("at")), _change_cell(entry), str(entry.get("by")))
    out.print(changes if described["promotions"] else "never in production")


@registry_app.command("list")
def list_versions(registry: RegistryOption = None, params: ParamsOption = None, as_json: JsonOption = False) -> None:
    """List every registered version, oldest first (● = production).

    Per version: model, registration time, checkpoint sha256, the gate's record (decision, gated metrics against
    their thresholds) and the last production change to it (who or what, when).
    """
    from bgmrec.registry import RegistryError

    store, config = _settings(registry, params)
    try:
        rows = [store.describe(version) for version in store.versions()]
        production = store.production()
    except RegistryError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps({"registry": str(store.root), "production": production and production["version"],
                          "versions": rows}, indent=2, default=float))
        return
    if not rows:
        console.print(f"{store.root}: no registered model version")
        return
    Console().print(_versions_table(store, rows, config.gate.thresholds))


@registry_app.command("show")
def show(
    version: Annotated[str, typer.Argument(help="A registered version id, e.g. v0003-cmvae.")],
    registry: RegistryOption = None,
    params: ParamsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one version in full.

    Its checkpoint (checked against the sha256 recorded at registration, and loaded), every metric with the gate's
    threshold, the gate's decision and reasons, and every production change to it.
    """
    from bgmrec.registry import RegistryError

    store, config = _settings(registry, params)
    try:
        described = store.describe(version)
    except (KeyError, RegistryError) as exc:
        fail(str(exc.args[0]))
    try:
        store.check_checkpoint(version, load=True)
        described["checkpoint_check"] = "present, sha256 as registered, loads"
    except RegistryError as exc:
        described["checkpoint_check"] = f"FAILED: {exc}"
    if as_json:
        print(json.dumps(described, indent=2, default=float))
        return
    _print_version(store, described, config.gate.thresholds)


def _change(action: str, registry: Path | None, dataset: Path | None, rebuild_catalog: bool, params: Path | None,
            as_json: bool, version: str | None = None) -> None:
    from bgmrec.registry import RegistryError, operator
    from bgmrec.steps.promotion import promote_step, rollback_step

    store, config = _settings(registry, params)
    dataset = dataset if dataset is not None else project_path(config.data.dataset, params)
    by = f"bgmrec registry {action} ({operator()})"
    try:
        if version is not None:
            result = promote_step(store.root, version, by, dataset, rebuild_catalog=rebuild_catalog,
                                  catalog_settings=config.catalog)
        else:
            result = rollback_step(store.root, by, dataset, rebuild_catalog=rebuild_catalog,
                                   catalog_settings=config.catalog)
    except (KeyError, RegistryError, FileNotFoundError, ValueError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    if as_json:
        print(json.dumps(result, indent=2, default=float))
        return
    if not result["changed"]:
        console.print(f"{result['production']} is already in production; nothing changed")
        return
    console.print(f"production: {result['previous']} → {result['production']} ({by})")
    if result["catalog"] is not None:
        catalog = result["catalog"]
        console.print(f"serving catalog rebuilt with {catalog['model_version']}: {catalog['music']} music "
                      f"({catalog['catalog']}); the service swaps model and catalog in together")
    else:
        console.print("the serving catalog was not rebuilt: the service keeps serving the previous model until "
                      f"this has run:\n  {result['next']}")
    Console().print(_versions_table(store, [store.describe(result["production"])], config.gate.thresholds))


@registry_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="The registered version to put in production, e.g. v0003-cmvae.")],
    registry: RegistryOption = None,
    dataset: DatasetOption = None,
    rebuild_catalog: RebuildOption = True,
    params: ParamsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put a registered version in production and rebuild the serving catalog with it.

    The operator decides, whatever the gate said (also for a version the gate does not put back because it was
    replaced in production). Refused when the version's checkpoint is missing, is not the one registered (sha256) or
    cannot be loaded. production.json is rewritten atomically and keeps the production models before it, so
    `bgmrec registry rollback` returns to the current one. If the catalog cannot be rebuilt, production is put
    back as it was. Inside a DVC experiment the registry is read-only.
    """
    _change("promote", registry, dataset, rebuild_catalog, params, as_json, version)


@registry_app.command("rollback")
def rollback(
    registry: RegistryOption = None,
    dataset: DatasetOption = None,
    rebuild_catalog: RebuildOption = True,
    params: ParamsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put the previous production model back in production and rebuild the serving catalog with it.

    Each rollback goes one production model further back. Refused when there is no earlier production model or
    its checkpoint is missing, damaged or unreadable; if the catalog cannot be rebuilt, production is put back.
    """
    _change("rollback", registry, dataset, rebuild_catalog, params, as_json)


def register(app: typer.Typer) -> None:
    """Add `bgmrec registry ...` to the `bgmrec` app."""
    app.add_typer(registry_app, name="registry")
