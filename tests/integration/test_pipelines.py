"""The Kubeflow pipelines: cluster settings in the compiled spec, no run-time pip installs, both pipelines end to
end through kfp.local on tiny data, and `bgmrec trigger`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bgmrec.config import IMAGE_ENV, load_config
from pipelines.compile import NEW_MUSIC_BATCH_FILE, TRAINING_FILE, compile_pipelines

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_config(PROJECT_ROOT / "params.yaml")


def _documents(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, list[dict]]:
    """Both pipelines compiled from the project's params.yaml: {file name: [IR, platform spec]}."""
    out = tmp_path_factory.mktemp("compiled")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(IMAGE_ENV, raising=False)
        paths = compile_pipelines(out, CONFIG)
    return {path.name: _documents(path) for path in paths}


def _executor(ir: dict, task: str) -> dict:
    component = ir["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    executor = ir["components"][component]["executorLabel"]
    return ir["deploymentSpec"]["executors"][executor]


@pytest.mark.unit
@pytest.mark.slow
def test_every_task_runs_in_the_configured_image_without_installing_packages(compiled):
    """The image already holds kfp and bgmrec: a cluster without PyPI access runs every task."""
    for name in (TRAINING_FILE, NEW_MUSIC_BATCH_FILE):
        executors = compiled[name][0]["deploymentSpec"]["executors"]
        assert executors
        for executor in executors.values():
            container = executor["container"]
            assert container["image"] == CONFIG.kubeflow.base_image
            script = " ".join(container["command"] + container.get("args", []))
            assert "pip install" not in script, f"{name}: a task installs packages at run time: {script[:300]}"


@pytest.mark.unit
@pytest.mark.slow
def test_compile_pipelines_writes_where_asked_from_any_directory(tmp_path, monkeypatch):
    from bgmrec.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(IMAGE_ENV, "registry.example/bgmrec-pipeline:1.2.3")
    result = CliRunner().invoke(app, ["compile-pipelines", "--out", "compiled"])
    assert result.exit_code == 0, result.output
    ir = _documents(tmp_path / "compiled" / NEW_MUSIC_BATCH_FILE)[0]
    images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/bgmrec-pipeline:1.2.3"}
    assert (tmp_path / "compiled" / TRAINING_FILE).exists()


@pytest.mark.unit
def test_training_tasks_run_on_gpu_nodes_with_limits_and_retries(compiled):
    ir, platform = compiled[TRAINING_FILE]
    training = CONFIG.kubeflow.training
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = {task: spec["taskInfo"]["name"] for task, spec in ir["root"]["dag"]["tasks"].items()}
    train_tasks = sorted(task for task, name in tasks.items() if name.startswith("train "))
    expected = {f"train {model} ({split})" for model in CONFIG.models for split in ("weak", "strong")}
    assert {tasks[task] for task in train_tasks} == expected
    for task in train_tasks:
        container = _executor(ir, task)["container"]
        assert container["image"] == CONFIG.kubeflow.base_image
        resources = container["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert resources["accelerator"]["resourceCount"] == "1"
        assert resources["resourceCpuLimit"] == training.cpu_limit
        assert resources["resourceMemoryLimit"] == training.memory_limit
        retry = ir["root"]["dag"]["tasks"][task]["retryPolicy"]
        assert retry["maxRetryCount"] == training.retries
        label = ir["root"]["dag"]["tasks"][task]["componentRef"]["name"].replace("comp-", "exec-")
        k8s = executors[label]
        assert k8s["nodeSelector"]["labels"] == training.node_selector
        assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert k8s["pvcMount"][0]["mountPath"] == "/data"


@pytest.mark.unit
def test_cpu_tasks_have_no_accelerator_and_the_gate_is_never_cached(compiled):
    ir, _ = compiled[TRAINING_FILE]
    tasks = ir["root"]["dag"]["tasks"]
    for task in ("validate-manifests", "assemble-features", "gate-model", "evaluate-model"):
        resources = _executor(ir, task)["container"]["resources"]
        assert "accelerator" not in resources and resources["cpuLimit"] > 0
    assert tasks["gate-model"]["cachingOptions"] == {}
    assert "extract-shards" in {spec["taskInfo"]["name"] for spec in tasks.values()}
    loop = next(spec for spec in tasks.values() if spec["taskInfo"]["name"] == "extract-shards")
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == list(range(CONFIG.kubeflow.extract_shards))


@pytest.mark.unit
def test_thresholds_and_tolerance_are_pipeline_parameters_from_params(compiled):
    ir, _ = compiled[TRAINING_FILE]
    inputs = ir["root"]["inputDefinitions"]["parameters"]
    assert inputs["recall_thresholds"]["defaultValue"] == CONFIG.gate.thresholds
    assert inputs["tolerance"]["defaultValue"] == CONFIG.gate.tolerance


@pytest.fixture(scope="module")
def training_params(tmp_path_factory, fast_params_path) -> Path:
    """One model (CMVAE, gated), one epoch, two extraction shards: the whole DAG, as little compute as possible."""
    params = yaml.safe_load(fast_params_path.read_text())
    params["models"] = {"cmvae": params["models"]["cmvae"]}
    params["gate"]["model"] = "cmvae"
    params["kubeflow"]["extract_shards"] = 2
    path = tmp_path_factory.mktemp("training-params") / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.integration
@pytest.mark.slow
def test_training_pipeline_gate_promotes_then_refuses(local_runner, training_params, tmp_path):
    from bgmrec.data.simulate import simulate
    from bgmrec.registry import ModelRegistry
    from pipelines.training import build_training_pipeline

    simulate("tiny", seed=0, out=tmp_path / "data")
    registry = tmp_path / "registry"
    pipeline = build_training_pipeline(load_config(training_params))
    arguments = {"dataset_dir": str(tmp_path / "data"), "registry_dir": str(registry), "feature_repo": "",
                 "params_path": str(training_params), "tolerance": 0.02}

    passed = pipeline(recall_thresholds={"weak.recall@10": 0.0}, **arguments)
    assert passed.output == f"registered v0001-cmvae and promoted it to production in {registry}"
    production = (registry / "production.json").read_text()
    assert json.loads(production)["version"] == "v0001-cmvae"

    refused = pipeline(recall_thresholds={"weak.recall@10": 1.01}, **arguments)
    assert refused.output.startswith("gate refused, production unchanged: cmvae: gate REFUSED")
    assert "weak.recall@10" in refused.output and "below the threshold 1.0100" in refused.output
    assert (registry / "production.json").read_text() == production
    assert ModelRegistry(registry).versions() == ["v0001-cmvae"]


@pytest.mark.integration
@pytest.mark.slow
def test_trigger_adds_the_batch_to_the_serving_catalog(music_world, new_music_batch, tmp_path):
    from bgmrec.catalog import load_catalog
    from bgmrec.cli import app

    registry = Path(shutil.copytree(music_world.registry_dir, tmp_path / "registry"))
    args = ["trigger", "--music-batch", str(new_music_batch), "--dataset", str(music_world.dataset_dir),
            "--registry", str(registry), "--feature-repo", "", "--pipeline-root", str(tmp_path / "kfp"),
            "--params", str(PROJECT_ROOT / "params.yaml")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "added 2 music" in result.output
    catalog = load_catalog(registry / "catalog.parquet")
    assert (catalog.indices_of(["fresh-a", "fresh-b"]) >= 0).all()
    assert len(catalog) == len(music_world.music_ids) + 2

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1
    assert "music batch refused" in again.output and "already in the catalog" in again.output


@pytest.mark.unit
def test_inbox_lists_only_batches_not_submitted(tmp_path):
    from pipelines.trigger import SUBMITTED_MARKER, pending_batches

    for name in ("2026-11-01", "2026-11-02", "2026-11-03"):
        (tmp_path / name).mkdir()
    (tmp_path / "2026-11-02" / SUBMITTED_MARKER).write_text("{}")
    (tmp_path / "stray.wav").write_bytes(b"")
    assert [p.name for p in pending_batches(tmp_path)] == ["2026-11-01", "2026-11-03"]


@pytest.mark.unit
def test_trigger_needs_exactly_one_batch_source():
    from bgmrec.cli import app

    result = CliRunner().invoke(app, ["trigger"])
    assert result.exit_code == 1
    assert "exactly one of --music-batch DIR or --inbox DIR" in result.output
