"""The shipped product, tried as a new user would: the wheel built by `pip wheel .`, installed (not editable) into
a fresh virtualenv from the lock files, used from an empty working directory that holds only data.

Compile the pipelines; set up a Feast repo from the definitions the wheel carries; serve the registry; run the
new-music-batch pipeline through kfp.local with the installed package on real audio files and see the served
catalog grow without a restart or any call to the service; see an anonymous admin call refused. Build the Bento
from the installed package and serve it, pinned to the model it packages and following the registry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.deployment, pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("requirements/pipelines.txt", "serving/requirements.txt")
ADMIN_TOKEN = "deployment-test-token"


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    command = " ".join(map(str, args))
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with the locked pipeline and serving stacks and the bgmrec wheel; returns its bin/."""
    from bgmrec.steps import build_wheel

    base = tmp_path_factory.mktemp("installed")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheel = build_wheel(ROOT, base / "wheel")
    _run([sys.executable, "-m", "venv", str(base / "venv")], cwd=base, env=env)
    pip = [str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, *(arg for lock in LOCKS for arg in ("-r", str(ROOT / lock)))], cwd=base, env=env)
    _run([*pip, "--no-deps", str(wheel)], cwd=base, env=env)
    return base / "venv" / "bin"


@pytest.fixture
def workdir(tmp_path, music_world) -> Path:
    """An empty directory laid out as the configuration's defaults expect: the dataset at data/sample, the model
    registry at data/registry; no params.yaml, no source tree."""
    work = tmp_path / "work"
    shutil.copytree(music_world.dataset_dir, work / "data" / "sample")
    shutil.copytree(music_world.registry_dir, work / "data" / "registry")
    return work


def _env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BGMREC_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(BENTOML_DO_NOT_TRACK="true", GX_ANALYTICS_ENABLED="false", **extra)
    return env


@contextlib.contextmanager
def _serving(start_server, args: list[str], cwd: Path, env: dict[str, str]):
    """A server started as a user starts it (its own process group), ready on /readyz; yields its URL."""
    server = start_server(args, env, cwd / f"serve-{len(list(cwd.glob('serve-*.log')))}.log", cwd)
    try:
        yield server.wait_ready()
        assert server.process.poll() is None, "the server stopped or restarted"
    finally:
        server.stop()


def _catalog(url: str) -> dict:
    import httpx

    return httpx.post(f"{url}/catalog", json={"limit": 0}, timeout=10).json()


def test_the_wheel_is_the_product_and_carries_no_source_tree(installed, tmp_path):
    env = _env(installed)
    where = _run([str(installed / "python"), "-c",
                  "import bgmrec, serving.service, pipelines.compile, components, features, importlib.resources as r;"
                  "print(bgmrec.__file__); print(r.files('features').joinpath('definitions.py').is_file())"],
                 cwd=tmp_path, env={**env, "BGMREC_REGISTRY": str(tmp_path)}).stdout.split()
    assert where[0].startswith(str(installed.parent)) and where[1] == "True"
    assert "site-packages" in where[0]
    for module in ("conftest", "components.train_model.tests.test_train_model"):
        missing = subprocess.run([str(installed / "python"), "-c", f"import {module}"], cwd=tmp_path, env=env,
                                 capture_output=True)
        assert missing.returncode != 0, f"{module}: tests and their helpers must not ship in the wheel"

    out = tmp_path / "compiled"
    _run([str(installed / "bgmrec"), "compile-pipelines", "--out", str(out)], cwd=tmp_path, env=env)
    assert {p.name for p in out.iterdir()} == {"training.yaml", "new_music_batch.yaml"}


def test_a_triggered_batch_is_served_without_a_restart(installed, workdir, new_music_batch, start_server):
    import httpx

    env = _env(installed)
    bgmrec = str(installed / "bgmrec")
    # The Feast repo, set up from the definitions the wheel carries (no features/ folder here).
    _run([bgmrec, "feast-apply", "--repo", "features", "--dataset", "data/sample"], cwd=workdir, env=env)
    assert (workdir / "features" / "definitions.py").is_file()

    serve_env = _env(installed, BGMREC_ADMIN_TOKEN=ADMIN_TOKEN, BGMREC_REGISTRY_POLL_S="2",
                     BENTOML_HOME=str(workdir / "bentoml_home"))
    with _serving(start_server, [bgmrec, "serve"], workdir, serve_env) as url:
        before = _catalog(url)["size"]
        anonymous = httpx.post(f"{url}/refresh_catalog", json={"reload": True}, timeout=10)
        assert anonymous.status_code == 401
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200

        # The new-music-batch pipeline through kfp.local, every task in the installed package.
        batch = _run([bgmrec, "trigger", "--music-batch", str(new_music_batch), "--pipeline-root", "kfp"],
                     cwd=workdir, env=env)
        assert "added 2 music" in batch.stdout, batch.stdout + batch.stderr
        written = time.monotonic()
        while (size := _catalog(url)["size"]) != before + 2:
            assert time.monotonic() - written < 15, f"catalog still {size} music 15 s after the batch was added"
            time.sleep(0.25)


def test_the_bento_built_from_the_wheel_serves_pinned_or_following_the_registry(installed, workdir, start_server):
    """`bgmrec build-bento` from the installed package (the wheel passed explicitly), then `bentoml serve` of the
    built Bento: by default it follows the registry; `BGMREC_MODEL_SOURCE=bento` serves the packaged model."""
    import json

    from bgmrec.catalog import load_catalog

    wheel = next((installed.parent.parent / "wheel").glob("bgmrec-*.whl"))
    env = _env(installed, BENTOML_HOME=str(workdir / "bentoml_home"))
    built = json.loads(_run([str(installed / "bgmrec"), "build-bento", "--registry", "data/registry",
                             "--wheel", str(wheel)], cwd=workdir, env=env).stdout.strip().splitlines()[-1])
    packaged = load_catalog(workdir / "data" / "registry" / "catalog.parquet")
    grown = packaged.add(["after-build"], packaged.embeddings[:1])
    grown.save(workdir / "data" / "registry" / "catalog.parquet")

    bentoml = [str(installed / "bentoml"), "serve", built["bento"]]
    with _serving(start_server, bentoml, workdir, {**env, "BGMREC_MODEL_SOURCE": "bento"}) as url:
        pinned = _catalog(url)
        assert pinned["size"] == len(packaged) and pinned["model_version"] == built["registry_version"]
    following = {**env, "BGMREC_REGISTRY": str(workdir / "data" / "registry")}
    with _serving(start_server, bentoml, workdir, following) as url:
        assert _catalog(url)["size"] == len(grown)
