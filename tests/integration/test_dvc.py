"""The DVC pipeline definition, run for real on a copy: a failed validation stops it, a re-run is a no-op,
a changed param re-runs only what depends on it. The stages are the project's own dvc.yaml entries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STAGES = ("validate_features", "split")  # a validation and what follows it, enough to show the pipeline stops

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "GX_ANALYTICS_ENABLED": "false"}
    return subprocess.run([str(BIN / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=600)


def _ran(result: subprocess.CompletedProcess) -> list[str]:
    """Names of the stages a `dvc repro` ran (from its log)."""
    out = result.stdout + result.stderr
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")]


def test_project_dvc_yaml_declares_the_whole_flow():
    pipeline = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
    stages = pipeline["stages"]
    for name in ("sample_media", "validate_manifests", "extract", "validate_features", "feast", "train", "evaluate",
                 "gate"):
        assert name in stages, f"dvc.yaml lacks stage {name}"
    assert {"metrics/${item}.json"} == {next(iter(m)) for m in stages["evaluate"]["do"]["metrics"]}
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    for block in ("data", "validation", "feast", "models", "gate"):
        assert block in params, f"params.yaml lacks `{block}:`"
    assert params["gate"]["thresholds"], "the gate needs thresholds"


def test_one_train_stage_per_model_and_split_logs_through_dvclive():
    train = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]["train"]
    assert train["matrix"] == {"model": ["cmvae", "vmcml"], "split": ["weak", "strong"]}
    run = "runs/${item.model}/${item.split}"
    assert "models.${item.model}" in train["params"]
    assert f"{run}/model.pt" in train["outs"]
    assert train["metrics"] == [f"{run}/dvclive/metrics.json"]
    assert train["plots"] == [{f"{run}/dvclive/plots/metrics": {"x": "step"}}]
    listed = _dvc(PROJECT, "stage", "list", "--name-only")
    assert listed.returncode == 0, listed.stderr
    names = set(listed.stdout.split())
    assert {"train@cmvae-weak", "train@cmvae-strong", "train@vmcml-weak", "train@vmcml-strong"} <= names


def _code_deps(stage: dict) -> list[str]:
    """A stage's dependencies that are code of this repository (not templated data paths)."""
    body = stage.get("do", stage)
    return [d for d in body.get("deps", []) if "${" not in d and d.split("/")[0] in ("bgmrec", "serving", "features")]


def test_every_code_dependency_exists():
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    missing = {name: dep for name, stage in stages.items() for dep in _code_deps(stage) if not (PROJECT / dep).exists()}
    assert not missing, f"dvc.yaml names code that does not exist: {missing}"


@pytest.mark.parametrize(("stage", "modules"), [
    ("train", ["bgmrec.train", "bgmrec.feature_store", "bgmrec.models.cmvae", "bgmrec.models.vmcml"]),
    ("evaluate", ["bgmrec.evaluate", "bgmrec.plots", "bgmrec.models.cmvae", "bgmrec.models.vmcml"]),
])
def test_model_stages_depend_on_all_the_domain_code_they_import(stage, modules):
    """Each module the stage's domain code imports, directly or not, lies in one of its deps (a package or a module),
    so a change to it re-runs the stage; the stage also depends on the step module that runs it."""
    import grimp

    graph = grimp.build_graph("bgmrec")
    deps = _code_deps(yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"][stage])
    assert "bgmrec/steps/training.py" in deps
    imported, todo = set(modules), list(modules)
    while todo:
        for module in graph.find_modules_directly_imported_by(todo.pop()):
            if module not in imported:
                imported.add(module)
                todo.append(module)

    def covered(module: str) -> bool:
        path = module.replace(".", "/")
        return any(dep in (f"{path}.py", path) or path.startswith(f"{dep}/") for dep in deps)

    uncovered = sorted(m for m in imported if not covered(m))
    assert not uncovered, f"stage {stage} imports code it does not depend on: {uncovered}"


@pytest.fixture
def project(tmp_path, tiny_dataset) -> Path:
    """A git + DVC project in tmp_path with the project's validate_features and split stages and the code
    they depend on."""
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    pipeline = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
    stages = {name: pipeline["stages"][name] for name in STAGES}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"] = {"dataset": "data/ds", "seed": 0}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for code in {dep for stage in stages.values() for dep in _code_deps(stage)}:
        (project / code).parent.mkdir(parents=True, exist_ok=True)
        if (PROJECT / code).is_dir():
            shutil.copytree(PROJECT / code, project / code, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(PROJECT / code, project / code)
    shutil.copytree(tiny_dataset, project / "data" / "ds", ignore=shutil.ignore_patterns("splits", "oracle.npz"))
    (project / ".dvc").mkdir()
    (project / ".dvc" / "config").write_text(
        f"[core]\n    analytics = false\n    site_cache_dir = {tmp_path / 'dvc-site-cache'}\n"
    )
    return project


def test_failed_validation_stops_the_pipeline_and_a_rerun_is_a_noop(project):
    features = project / "data" / "ds" / "video_features.parquet"
    good = features.read_bytes()
    table = pd.read_parquet(features)
    bad_id = table.at[2, "video_id"]
    table.at[2, "visual"] = table.at[2, "visual"][:-1]
    table.to_parquet(features)

    failed = _dvc(project, "repro")
    assert failed.returncode != 0
    assert _ran(failed) == ["validate_features"], failed.stdout + failed.stderr
    assert bad_id in (project / "reports" / "validation" / "features" / "summary.txt").read_text()
    assert not (project / "data" / "ds" / "splits").exists()

    features.write_bytes(good)
    fixed = _dvc(project, "repro")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert set(_ran(fixed)) == {"validate_features", "split@weak", "split@strong"}
    assert (project / "data" / "ds" / "splits" / "strong.parquet").exists()

    again = _dvc(project, "repro")
    assert again.returncode == 0 and _ran(again) == []

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["seed"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _dvc(project, "repro")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert set(_ran(changed)) == {"split@weak", "split@strong"}
