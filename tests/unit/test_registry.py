"""Model registry and promotion gate: thresholds, not-worse-than-production, production untouched on refusal."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgmrec.config import parse_config
from bgmrec.gate import flatten_metrics, gate
from bgmrec.registry import ModelRegistry, RegistryError
from bgmrec.steps import gate_step

pytestmark = pytest.mark.unit

METRICS = {"weak": {"recall@10": 0.40, "ips_recall@10": 0.30, "n_videos": 50}, "strong": {"recall@10": 0.20}}


def test_flatten_metrics_keeps_numbers_under_dotted_names():
    flat = flatten_metrics({**METRICS, "note": "text"})
    assert flat == {"weak.recall@10": 0.40, "weak.ips_recall@10": 0.30, "weak.n_videos": 50.0, "strong.recall@10": 0.20}


def test_gate_passes_only_when_every_threshold_is_met():
    assert gate(METRICS, {"weak.recall@10": 0.35, "strong.recall@10": 0.2}, None, 0.0).passed
    refused = gate(METRICS, {"weak.recall@10": 0.35, "strong.recall@10": 0.25}, None, 0.0)
    assert not refused.passed
    assert refused.reasons == ["strong.recall@10: 0.2000 is below the threshold 0.2500"]


def test_gate_refuses_a_candidate_worse_than_production_beyond_the_tolerance():
    thresholds = {"weak.recall@10": 0.1}
    production = {"weak": {"recall@10": 0.45}}
    assert gate(METRICS, thresholds, production, tolerance=0.05).passed  # 0.40 >= 0.45 - 0.05
    refused = gate(METRICS, thresholds, production, tolerance=0.01)
    assert not refused.passed and "worse than production's 0.4500" in refused.reasons[0]


def test_gate_refuses_what_it_cannot_check():
    assert not gate(METRICS, {}, None, 0.0).passed
    missing = gate(METRICS, {"weak.recall@50": 0.1}, None, 0.0)
    assert not missing.passed and "missing from the candidate's metrics" in missing.reasons[0]


def test_register_promote_and_production(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.production() is None
    first = registry.register(checkpoint, METRICS, "cmvae")
    second = registry.register(checkpoint, METRICS, "vmcml")
    assert (first, second) == ("v0001-cmvae", "v0002-vmcml")
    assert registry.versions() == [first, second]
    assert (registry.versions_dir / first / "model.pt").read_bytes() == b"weights"
    registry.promote(second)
    record = registry.production()
    assert record["version"] == second and record["model_name"] == "vmcml" and record["metrics"] == METRICS
    assert json.loads((registry.root / "production.json").read_text())["checkpoint"].endswith("model.pt")
    with pytest.raises(KeyError, match="v0009-x"):
        registry.promote("v0009-x")


def test_gate_step_promotes_on_pass_and_leaves_production_on_refusal(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    registry_dir = tmp_path / "registry"
    metrics_json = tmp_path / "metrics.json"
    metrics_json.write_text(json.dumps(METRICS))
    passed = gate_step(metrics_json, registry_dir, {"weak.recall@10": 0.3}, 0.0, "cmvae", checkpoint)
    assert passed["passed"] and passed["version"] == "v0001-cmvae"
    worse = {"weak": {"recall@10": 0.31}}
    metrics_json.write_text(json.dumps(worse))
    refused = gate_step(metrics_json, registry_dir, {"weak.recall@10": 0.3}, 0.05, "cmvae", checkpoint)
    assert not refused["passed"] and refused["version"] is None
    assert refused["production"] == "v0001-cmvae"
    assert ModelRegistry(registry_dir).production()["version"] == "v0001-cmvae"
    assert ModelRegistry(registry_dir).versions() == ["v0001-cmvae"]


@pytest.mark.slow
def test_load_production_returns_the_promoted_model(tiny_dataset, tmp_path):
    import numpy as np

    from bgmrec.steps import train_step

    config = parse_config({"models": {"vmcml": {"epochs": 1, "progress": False}}, "gate": {"model": "vmcml"}})
    trained = train_step(tiny_dataset, "weak", "vmcml", config, tmp_path / "run")
    registry = ModelRegistry(tmp_path / "registry")
    registry.promote(registry.register(trained["checkpoint"], METRICS, "vmcml"))
    model = registry.load_production()
    x = np.ones((2, model.dims["visual"]), np.float32)
    assert model.embed_videos(x).shape[0] == 2

    # Relocatable: every path the registry records is relative to its root, so a copy (a backup restored, the
    # volume mounted at /data in a pod) serves and gates as before, with the original gone.
    record = json.loads((registry.root / "production.json").read_text())
    assert not Path(record["checkpoint"]).is_absolute()
    moved = ModelRegistry(shutil.move(str(registry.root), tmp_path / "elsewhere" / "registry"))
    again = moved.load_production()
    assert np.allclose(again.embed_videos(x), model.embed_videos(x))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(METRICS))
    decision = gate_step(metrics, moved.root, {"weak.recall@10": 0.1}, 0.0, "vmcml", trained["checkpoint"])
    # the same checkpoint again (a re-run): no second copy, the registered version is promoted
    assert decision["passed"] and decision["version"] == "v0001-vmcml" and moved.versions() == ["v0001-vmcml"]
    assert moved.production()["checkpoint"] == "versions/v0001-vmcml/model.pt"


@pytest.mark.parametrize(
    ("thresholds", "tolerance", "metrics", "reason"),
    [
        ({"weak.recall@10": float("nan")}, 0.0, METRICS, "threshold weak.recall@10: nan is not a finite number"),
        ({"weak.recall@10": float("inf")}, 0.0, METRICS, "threshold weak.recall@10: inf is not a finite number"),
        ({"weak.recall@10": "0.3"}, 0.0, METRICS, "threshold weak.recall@10: '0.3' is not a finite number"),
        ({"weak.recall@10": True}, 0.0, METRICS, "threshold weak.recall@10: True is not a finite number"),
        ({"weak.recall@10": 0.1}, float("nan"), METRICS, "tolerance: nan is not a finite number"),
        ({"weak.recall@10": 0.1}, 0.0, {"weak": {"recall@10": float("nan")}}, "the candidate's value is nan"),
    ],
)
def test_gate_refuses_what_is_not_a_finite_number(thresholds, tolerance, metrics, reason):
    decision = gate(metrics, thresholds, None, tolerance)
    assert not decision.passed and any(reason in r for r in decision.reasons), decision.reasons


def test_bgmrec_gate_refusal_has_its_own_exit_status_and_leaves_production(tmp_path):
    from typer.testing import CliRunner

    from bgmrec.cli import GATE_REFUSED_EXIT, app

    registry = ModelRegistry(tmp_path / "registry")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    registry.promote(registry.register(checkpoint, METRICS, "cmvae"))
    production = (registry.root / "production.json").read_bytes()
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"weak": {"recall@1": NaN, "recall@5": 0.9}}')
    args = ["gate", "--metrics", str(metrics), "--checkpoint", str(checkpoint), "--model", "cmvae",
            "--registry", str(registry.root), "--out", str(tmp_path / "gate.json")]
    refused = CliRunner().invoke(app, [*args, "--params", str(tmp_path / "none.yaml")])
    assert refused.exit_code == 1 and "configuration file not found" in refused.output
    params = tmp_path / "params.yaml"
    params.write_text("gate:\n  thresholds:\n    weak.recall@1: 0.3\n")
    refused = CliRunner().invoke(app, [*args, "--params", str(params)])
    assert refused.exit_code == GATE_REFUSED_EXIT, refused.output
    assert "weak.recall@1: the candidate's value is nan" in refused.output
    assert (registry.root / "production.json").read_bytes() == production
    assert json.loads((tmp_path / "gate.json").read_text())["passed"] is False
    params.write_text("gate:\n  thresholds:\n    weak.recall@1: .nan\n")
    bad = CliRunner().invoke(app, [*args, "--params", str(params)])
    assert bad.exit_code == 1 and "gate.thresholds" in bad.output
    assert (registry.root / "production.json").read_bytes() == production


# --- production history, rollback, damaged checkpoints ---------------------------------------------------------


def _versions(registry: ModelRegistry, tmp_path: Path, count: int) -> list[str]:
    versions = []
    for i in range(count):
        checkpoint = tmp_path / f"model{i}.pt"
        checkpoint.write_bytes(f"weights {i}".encode())
        versions.append(registry.register(checkpoint, METRICS, "cmvae"))
    return versions


def test_rollback_returns_to_each_earlier_production_model_and_logs_who(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    first, second, third = _versions(registry, tmp_path, 3)
    for version in (first, second, third):
        assert registry.promote(version)
    assert registry.promote(third) is False  # a re-run of the gate: nothing written
    assert [entry["version"] for entry in registry.production()["history"]] == [first, second]
    assert registry.rollback(by="ops@host") == second
    record = registry.production()
    assert record["version"] == second and record["promoted_by"] == "ops@host"
    assert [entry["version"] for entry in record["history"]] == [first]
    assert registry.rollback(by="ops@host") == first
    with pytest.raises(RegistryError, match="first production model: there is no earlier one"):
        registry.rollback(by="ops@host")
    log = registry.promotions()
    assert [(e["action"], e["version"], e["previous"]) for e in log] == [
        ("promote", first, None), ("promote", second, first), ("promote", third, second),
        ("rollback", second, third), ("rollback", first, second)]
    assert registry.describe(second)["promotions"][-1]["action"] == "rollback"


def test_the_gate_does_not_put_back_a_version_an_operator_replaced(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    first, second, third = _versions(registry, tmp_path, 3)
    registry.promote(first)
    registry.promote(second)
    registry.rollback(by="ops@host")
    with pytest.raises(RegistryError, match=f"{second} was in production until a rollback by ops@host replaced it"):
        registry.promote(second)
    registry.promote(third, by="ops@host", operator_decision=True)
    with pytest.raises(RegistryError, match=f"{first} was in production until a promote by ops@host replaced it"):
        registry.promote(first)
    assert registry.production()["version"] == third
    assert registry.promote(second, by="ops@host", operator_decision=True)
    assert registry.replaced(second) is None  # put back by an operator since


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_promoting_or_rolling_back_to_a_missing_or_damaged_checkpoint_is_refused(tmp_path, damage):
    registry = ModelRegistry(tmp_path / "registry")
    first, second = _versions(registry, tmp_path, 2)
    registry.promote(first)
    if damage == "missing":
        registry.checkpoint(second).unlink()
    else:
        registry.checkpoint(second).write_bytes(b"weights 1, flipped")
    production = (registry.root / "production.json").read_bytes()
    expected = "is missing" if damage == "missing" else "is damaged (its sha256 is not the one registered"
    with pytest.raises(RegistryError, match=re.escape(expected)):
        registry.promote(second)
    assert (registry.root / "production.json").read_bytes() == production
    registry.checkpoint(second).write_bytes(b"weights 1")
    registry.promote(second)
    registry.checkpoint(first).write_bytes(b"truncat")
    with pytest.raises(RegistryError, match=f"cannot roll back to {first}: .* is damaged"):
        registry.rollback(by="ops@host")
    assert registry.production()["version"] == second


def test_the_gate_records_its_decision_with_the_version(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    metrics_json = tmp_path / "metrics.json"
    metrics_json.write_text(json.dumps(METRICS))
    result = gate_step(metrics_json, tmp_path / "registry", {"weak.recall@10": 0.3}, 0.01, "cmvae", checkpoint)
    described = ModelRegistry(tmp_path / "registry").describe(result["version"])
    assert described["gate"] == {"thresholds": {"weak.recall@10": 0.3}, "tolerance": 0.01, "passed": True,
                                 "reasons": [], "production": None}
    assert described["in_production"] and described["promotions"][0]["by"] == "gate"
    assert described["sha256"] == hashlib.sha256(b"weights").hexdigest()


# --- experiments never change production ----------------------------------------------------------------------


def test_inside_a_dvc_experiment_the_gate_only_reports_and_the_registry_is_read_only(tmp_path, monkeypatch):
    registry = ModelRegistry(tmp_path / "registry")
    (first,) = _versions(registry, tmp_path, 1)
    registry.promote(first)
    production = (registry.root / "production.json").read_bytes()
    candidate = tmp_path / "candidate.pt"
    candidate.write_bytes(b"better weights")
    metrics_json = tmp_path / "metrics.json"
    metrics_json.write_text(json.dumps({"weak": {"recall@10": 0.9}}))

    monkeypatch.setenv("DVC_EXP_NAME", "curly-bass")
    result = gate_step(metrics_json, registry.root, {"weak.recall@10": 0.3}, 0.0, "cmvae", candidate)
    assert result["passed"] and result["experiment"] == "curly-bass"
    assert result["version"] is None and result["production"] == first
    assert (registry.root / "production.json").read_bytes() == production
    assert registry.versions() == [first]
    with pytest.raises(RegistryError, match="inside DVC experiment curly-bass"):
        registry.promote(first)
    with pytest.raises(RegistryError, match="inside DVC experiment curly-bass"):
        registry.register(candidate, METRICS, "cmvae")

    monkeypatch.delenv("DVC_EXP_NAME")
    result = gate_step(metrics_json, registry.root, {"weak.recall@10": 0.3}, 0.0, "cmvae", candidate)
    assert result["experiment"] is None and result["version"] == "v0002-cmvae"
    assert registry.production()["version"] == "v0002-cmvae"


def test_an_experiment_in_a_temporary_copy_reads_the_main_workspace_registry(tmp_path, monkeypatch):
    main, copy = tmp_path / "main", tmp_path / "copy"
    copy.mkdir()
    monkeypatch.chdir(copy)
    assert ModelRegistry("data/registry").root == Path("data/registry")
    monkeypatch.setenv("DVC_EXP_NAME", "curly-bass")
    monkeypatch.setenv("DVC_ROOT", str(main))
    assert ModelRegistry("data/registry").root == main / "data" / "registry"
    assert ModelRegistry(tmp_path / "elsewhere").root == tmp_path / "elsewhere"


def test_catalog_and_bento_steps_write_nothing_inside_an_experiment(tmp_path, monkeypatch):
    from bgmrec.steps import build_bento_step, build_catalog_step

    monkeypatch.setenv("DVC_EXP_NAME", "curly-bass")
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml_home"))
    catalog = build_catalog_step(tmp_path / "no-dataset", tmp_path / "registry")
    bento = build_bento_step(tmp_path / "registry")
    for result in (catalog, bento):
        assert result["experiment"] == "curly-bass" and "left as it is" in result["skipped"]
    assert not (tmp_path / "registry").exists() and not (tmp_path / "bentoml_home").exists()


def test_bgmrec_gate_inside_an_experiment_says_so_and_exits_0(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bgmrec.cli import app

    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"weak": {"recall@1": 0.1}}))
    params = tmp_path / "params.yaml"
    params.write_text("gate:\n  thresholds:\n    weak.recall@1: 0.3\n")
    monkeypatch.setenv("DVC_EXP_NAME", "curly-bass")
    out = tmp_path / "gate.json"
    result = CliRunner().invoke(app, ["gate", "--metrics", str(metrics), "--checkpoint", str(checkpoint),
                                      "--model", "cmvae", "--registry", str(tmp_path / "registry"),
                                      "--out", str(out), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert "DVC experiment curly-bass: the gate would refuse" in result.output
    assert "experiments never promote" in result.output
    assert json.loads(out.read_text())["experiment"] == "curly-bass"
    assert not (tmp_path / "registry").exists()


# --- `bgmrec registry` on real checkpoints, and the served model version -------------------------------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    """CMVAE and VMCML trained for one epoch on the tiny dataset: two real checkpoints of two models."""
    from bgmrec.steps import train_step

    config = parse_config({"models": {name: {"epochs": 1, "progress": False} for name in ("cmvae", "vmcml")}})
    root = tmp_path_factory.mktemp("trained")
    return {name: Path(train_step(tiny_dataset, "weak", name, config, root / name)["checkpoint"])
            for name in ("cmvae", "vmcml")}


@pytest.fixture
def checkout(trained, tiny_dataset, tmp_path) -> Path:
    """A params.yaml whose `gate.registry` holds CMVAE in production with its catalog, gated, and VMCML registered
    beside it; `data.dataset` is the tiny dataset."""
    from bgmrec.steps import build_catalog_step

    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  dataset: {tiny_dataset}\ngate:\n  registry: {tmp_path / 'registry'}\n"
                      "  thresholds:\n    weak.recall@10: 0.05\n")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(METRICS))
    assert gate_step(metrics, tmp_path / "registry", {"weak.recall@10": 0.05}, 0.0, "cmvae",
                     trained["cmvae"])["version"] == "v0001-cmvae"
    ModelRegistry(tmp_path / "registry").register(trained["vmcml"], METRICS, "vmcml")
    build_catalog_step(tiny_dataset, tmp_path / "registry")
    return params


def _bgmrec(*args: str):
    from typer.testing import CliRunner

    from bgmrec.cli import app

    return CliRunner().invoke(app, list(args), terminal_width=250, env={"COLUMNS": "250"})


@pytest.mark.integration
@pytest.mark.slow
def test_bgmrec_registry_lists_shows_promotes_and_rolls_back_with_the_catalog(checkout):
    params = ["--params", str(checkout)]
    registry = ModelRegistry(checkout.parent / "registry")

    listed = _bgmrec("registry", "list", "--json", *params)
    assert listed.exit_code == 0, listed.output
    versions = json.loads(listed.stdout)
    assert versions["production"] == "v0001-cmvae"
    assert [(v["version"], v["model_name"], v["gate"] is not None) for v in versions["versions"]] == [
        ("v0001-cmvae", "cmvae", True), ("v0002-vmcml", "vmcml", False)]
    table = _bgmrec("registry", "list", *params).stdout
    assert "● │ v0001-cmvae" in table and "weak.recall@10 0.4000 ≥ 0.0500" in table and "not recorded" in table
    shown = _bgmrec("registry", "show", "v0001-cmvae", *params).stdout
    assert "present, sha256 as registered, loads" in shown and "passed (no production before)" in shown

    promoted = _bgmrec("registry", "promote", "v0002-vmcml", *params)
    assert promoted.exit_code == 0, promoted.output
    assert "production: v0001-cmvae → v0002-vmcml" in promoted.output
    assert "serving catalog rebuilt with v0002-vmcml" in promoted.output
    assert registry.check_servable() == "v0002-vmcml"  # the service swaps both in together
    assert registry.production()["promoted_by"].startswith("bgmrec registry promote (")

    rolled = _bgmrec("registry", "rollback", "--json", *params)
    assert rolled.exit_code == 0, rolled.output
    assert json.loads(rolled.stdout)["production"] == "v0001-cmvae"
    assert registry.check_servable() == "v0001-cmvae"
    last = _bgmrec("registry", "rollback", *params)
    assert last.exit_code == 1 and "no earlier one to roll back to" in last.output

    unknown = _bgmrec("registry", "promote", "v0009-x", *params)
    assert unknown.exit_code == 1 and "version 'v0009-x' is not in the registry" in unknown.output


@pytest.mark.integration
@pytest.mark.slow
def test_bgmrec_registry_promote_refuses_a_damaged_checkpoint_and_undoes_a_promotion_without_catalog(checkout):
    params = ["--params", str(checkout)]
    registry = ModelRegistry(checkout.parent / "registry")
    production = (registry.root / "production.json").read_bytes()

    no_dataset = _bgmrec("registry", "promote", "v0002-vmcml", "--dataset", str(checkout.parent / "none"), *params)
    assert no_dataset.exit_code == 1 and "none" in no_dataset.output
    assert registry.production()["version"] == "v0001-cmvae" and registry.check_servable() == "v0001-cmvae"
    assert registry.promotions()[-1]["action"] == "restore"

    skipped = _bgmrec("registry", "promote", "v0002-vmcml", "--no-rebuild-catalog", *params)
    assert skipped.exit_code == 0, skipped.output
    assert f"bgmrec build-catalog --registry {registry.root}" in skipped.output
    with pytest.raises(RegistryError, match="embedded by model v0001-cmvae but production is v0002-vmcml"):
        registry.check_servable()
    _bgmrec("registry", "rollback", *params)

    checkpoint = registry.checkpoint("v0002-vmcml")
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    damaged = _bgmrec("registry", "promote", "v0002-vmcml", *params)
    assert damaged.exit_code == 1 and "the checkpoint of v0002-vmcml is damaged" in damaged.output
    assert json.loads((registry.root / "production.json").read_bytes())["version"] == json.loads(production)[
        "version"]
    shown = _bgmrec("registry", "show", "v0002-vmcml", "--json", *params)
    assert json.loads(shown.stdout)["checkpoint_check"].startswith("FAILED: ")


def _model_info(url: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {sample.labels["model_version"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "bgmrec_model_info"}


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(f"not within {seconds} s: {what}")


@pytest.mark.integration
@pytest.mark.slow
def test_bgmrec_serve_exports_the_served_model_version_and_follows_promote_and_rollback(checkout, start_server,
                                                                                           tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml_home"), "BGMREC_REGISTRY_POLL_S": "0.2"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = start_server([str(Path(sys.executable).parent / "bgmrec"), "serve", "--params", str(checkout),
                           "--registry", str(checkout.parent / "registry")], env, tmp_path / "serve.log")
    try:
        url = server.wait_ready()
        assert _model_info(url) == {"v0001-cmvae": 1.0}
        assert _bgmrec("registry", "promote", "v0002-vmcml", "--params", str(checkout)).exit_code == 0
        _wait_for(lambda: _model_info(url) == {"v0001-cmvae": 0.0, "v0002-vmcml": 1.0}, 60, "v0002 served")
        assert _bgmrec("registry", "rollback", "--params", str(checkout)).exit_code == 0
        _wait_for(lambda: _model_info(url) == {"v0001-cmvae": 1.0, "v0002-vmcml": 0.0}, 60, "v0001 served again")
    finally:
        server.stop()


# --- a real `dvc exp run` of the project's gate stage, in a throw-away repository ------------------------------


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("BGMREC_PARAMS", None)
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


@pytest.mark.integration
@pytest.mark.slow
def test_dvc_exp_run_never_changes_production_and_dvc_repro_promotes(tmp_path):
    import yaml

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["gate"]
    stage["deps"] = [dep for dep in stage["deps"] if not str(dep).startswith("bgmrec/")]  # the code is installed
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    (repo / "runs" / "cmvae" / "weak").mkdir(parents=True)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"gate": stage}}))
    (repo / "params.yaml").write_text("gate:\n  model: cmvae\n  registry: data/registry\n  tolerance: 0.0\n"
                                      "  thresholds:\n    weak.recall@1: 0.3\n")
    (repo / "metrics" / "cmvae.json").write_text(json.dumps({"weak": {"recall@1": 0.5}}))
    (repo / "runs" / "cmvae" / "weak" / "model.pt").write_bytes(b"candidate weights")
    (repo / ".gitignore").write_text("/data/\n/reports/\n")
    production_model = tmp_path / "production.pt"
    production_model.write_bytes(b"production weights")
    registry = ModelRegistry(repo / "data" / "registry")
    registry.promote(registry.register(production_model, {"weak": {"recall@1": 0.6}}, "cmvae"))
    production = (registry.root / "production.json").read_bytes()
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-q", "-m", "pipeline"], repo)

    # The candidate (0.5) is worse than production (0.6): only a gate that reads the real registry refuses it,
    # also from the temporary copy an experiment runs in with --temp (where data/registry does not exist).
    for args in (["dvc", "exp", "run", "-n", "in-workspace"], ["dvc", "exp", "run", "--temp", "-n", "in-a-copy"]):
        ran = _run(args, repo)
        assert "the gate would refuse (weak.recall@1: 0.5000 is worse than production's 0.6000" in (
            ran.stdout + ran.stderr)
        assert (registry.root / "production.json").read_bytes() == production
        assert registry.versions() == ["v0001-cmvae"]
    report = json.loads((repo / "reports" / "gate.json").read_text())
    assert report["experiment"] == "in-workspace" and not report["passed"] and report["production"] == "v0001-cmvae"

    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("tolerance: 0.0", "tolerance: 0.2"))
    _run(["dvc", "repro"], repo)
    assert registry.production()["version"] == "v0002-cmvae"
    assert json.loads((repo / "reports" / "gate.json").read_text())["experiment"] is None
