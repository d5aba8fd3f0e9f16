"""Packaging steps: the bgmrec wheel and the Bento that serves the production model."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

BENTO_MODEL_NAME = "bgmrec-recommender"


class BentoResult(TypedDict):
    """The Bento built: its tag, the BentoML model inside it, the registry version it serves, its folder."""

    bento: str
    model: str
    registry_version: str
    path: str


def build_bento_step(registry_dir: str | Path, version: str | None = None,
                     wheel: str | Path | None = None) -> BentoResult:
    """Package the production model and catalog as the BentoML model `bgmrec-recommender`, then build the Bento.

    The model folder holds model.pt (the registry's checkpoint) and catalog.parquet; the Bento is built from the
    bentofile that ships in the `serving` package, with the build argument `bento_model` set to the new model's
    tag, so the service declares that BentoModel at class level and the model travels inside the Bento. bgmrec
    goes in as a wheel (`wheel`, or one built from the source checkout this package runs from), its
    dependencies from the serving lock beside the bentofile. Uses BENTOML_HOME for the stores. Inside a DVC
    experiment nothing is built: the result says so.
    """
    import contextlib
    import shutil
    import tempfile
    from importlib import resources

    import bentoml
    import yaml

    from bgmrec.catalog import CATALOG_FILE, copy_catalog, require_catalog
    from bgmrec.previews import previews_dir
    from bgmrec.registry import CHECKPOINT_FILE, ModelRegistry, experiment_skip

    if (skipped := experiment_skip("the Bento store (BENTOML_HOME)")) is not None:
        return skipped
    registry = ModelRegistry(registry_dir)
    record = registry.require_production()
    catalog = require_catalog(registry.root)
    if wheel is not None and not Path(wheel).is_file():
        raise FileNotFoundError(f"{wheel}: no such wheel file")
    source = Path(__file__).resolve().parents[2]
    if wheel is None and not (source / "pyproject.toml").is_file():
        raise FileNotFoundError("bgmrec is installed, not run from a source checkout: pass the bgmrec wheel to "
                                "put in the Bento (`bgmrec build-bento --wheel dist/bgmrec-*.whl`)")
    with bentoml.models.create(
        BENTO_MODEL_NAME,
        labels={"model_name": record["model_name"]},
        metadata={"registry_version": record["version"]},
    ) as bento_model:
        shutil.copy2(registry.checkpoint(record["version"]), bento_model.path_of(CHECKPOINT_FILE))
        copy_catalog(catalog, bento_model.path_of(CATALOG_FILE))  # its parts (and index) travel with it
        if previews_dir(registry.root).is_dir():  # the try-it page's audio previews
            shutil.copytree(previews_dir(registry.root), previews_dir(bento_model.path))
    tag = str(bento_model.tag)
    packaged = resources.files("serving")
    config = yaml.safe_load(packaged.joinpath("bentofile.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="bgmrec-bento-") as work:
        # The build context holds the bentofile, its lock and the wheel (the service is a module of the wheel).
        context = Path(work) / "context"
        (context / "wheels").mkdir(parents=True)
        lock = config["python"]["requirements_txt"]
        (context / lock).write_bytes(packaged.joinpath(lock).read_bytes())
        if wheel is None:
            wheel = build_wheel(source, Path(work) / "dist")
        shutil.copy2(wheel, context / "wheels" / Path(wheel).name)
        config["python"] = {**config["python"], "wheels": [f"wheels/{Path(wheel).name}"]}
        config["models"] = [tag]
        bentofile = context / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(config, sort_keys=False))
        # BentoML resolves the wheel and the lock against the working directory.
        with contextlib.chdir(context):
            # The argument is stored in the Bento: the service reads it (bentoml.use_arguments) and declares the
            # BentoModel at class level, at build time and whenever the Bento is served.
            bento = bentoml.bentos.build_bentofile(str(bentofile), version=version, build_ctx=str(context),
                                                   args={"bento_model": tag})
    return {"bento": str(bento.tag), "model": tag, "registry_version": record["version"], "path": bento.path}


def build_wheel(source: str | Path, out_dir: str | Path) -> Path:
    """The bgmrec wheel of a source checkout, built from a clean copy of it (setuptools would otherwise reuse a
    stale build/ folder of the checkout)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    source, out = Path(source), Path(out_dir)
    keep = ("pyproject.toml", "README.md", "bgmrec", "components", "pipelines", "serving", "features")
    with tempfile.TemporaryDirectory(prefix="bgmrec-wheel-") as copy:
        for name in keep:
            if (source / name).is_dir():
                # features/data holds a local Feast store's tables, not package files
                skip = ("__pycache__", "*.egg-info", "data") if name == "features" else ("__pycache__", "*.egg-info")
                shutil.copytree(source / name, Path(copy) / name, ignore=shutil.ignore_patterns(*skip))
            else:
                shutil.copy2(source / name, Path(copy) / name)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(out), copy], check=True)
    return next(out.glob("bgmrec-*.whl"))
