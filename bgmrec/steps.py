"""The pipeline steps as plain functions: DVC stages (via `bgmrec` commands) and KFP components both call these.

Each step takes paths and plain parameters, writes its outputs to paths, and returns a small JSON-able dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bgmrec.config import CatalogSettings, Config


def build_catalog_step(dataset_dir: str | Path, registry_dir: str | Path, *,
                       catalog_settings: CatalogSettings | None = None) -> dict[str, Any]:
    """Embed every music of the dataset with the production model's music encoder into REGISTRY/catalog.parquet.

    Popularity is the dataset's videos per music; music the production model never saw in training is flagged
    new (the checkpoint records its training music ids). The catalog is stamped with the model version, and its
    version follows the previous catalog's (serving replicas report it). A catalog of at least
    `catalog_settings.index_min_size` music (default: the `catalog:` defaults) gets its vector index built and
    saved beside it (REGISTRY/catalog.index), so replicas load it instead of building it.

    Every batch of new music the ledger recorded (bgmrec.ledger) is re-embedded with the dataset's music, so a
    rebuild (`dvc repro`, a new production model) keeps the music added since the dataset was made.
    """
    import dataclasses

    import pyarrow.parquet as pq

    from bgmrec.catalog import CATALOG_FILE, build_catalog
    from bgmrec.config import CatalogSettings
    from bgmrec.data.contract import MusicVectors, load_dataset
    from bgmrec.ledger import catalog_transaction, recorded_batches
    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_dir)
    record = registry.production()
    if record is None:
        raise FileNotFoundError(f"no production model in {registry.root}; run the gate step first")
    model = registry.load_production()
    dataset = load_dataset(dataset_dir)
    assert dataset.music_vectors is not None
    vectors = dataset.music_vectors
    ids = [str(i) for i in vectors.ids]
    titles = (dataset.music.set_index("music_id")["title"].reindex(ids).tolist() if "title" in dataset.music
              else [None] * len(ids))
    popularity = [float(p) for p in dataset.popularity]
    with catalog_transaction(registry.root):
        for batch, batch_titles in recorded_batches(registry.root):
            known = set(ids)
            keep = np.asarray([str(i) not in known for i in batch.ids])
            vectors = MusicVectors(np.concatenate([vectors.ids, batch.ids[keep]]),
                                   np.concatenate([vectors.audio_embedding, batch.audio_embedding[keep]]),
                                   np.concatenate([vectors.audio_lld, batch.audio_lld[keep]]))
            added = [str(i) for i in batch.ids[keep]]
            ids += added
            titles += [batch_titles.get(i) for i in added]
            popularity += [0.0] * len(added)
        seen = set(model.extra.get("train_music_ids", ids))
        catalog = build_catalog(
            model, vectors, titles=titles, popularity=np.asarray(popularity),
            is_new=np.asarray([i not in seen for i in ids]), model_version=record["version"],
        )
        path = registry.root / CATALOG_FILE
        if path.exists():
            previous = pq.read_schema(path).metadata or {}
            catalog = dataclasses.replace(catalog, version=int(previous.get(b"bgmrec_catalog_version", b"0")) + 1)
        catalog = catalog.with_index(catalog_settings or CatalogSettings())
        catalog.save(path)
    return {"catalog": str(path), "music": len(catalog), "new_music": int(catalog.is_new.sum()),
            "from_batches": len(catalog) - len(dataset.music), "dim": catalog.dim,
            "model_version": record["version"], "indexed": catalog.index is not None}


BENTO_MODEL_NAME = "bgmrec-recommender"


def build_bento_step(registry_dir: str | Path, version: str | None = None,
                     wheel: str | Path | None = None) -> dict[str, Any]:
    """Package the production model and catalog as the BentoML model `bgmrec-recommender`, then build the Bento.

    The model folder holds model.pt (the registry's checkpoint) and catalog.parquet; the Bento is built from the
    bentofile that ships in the `serving` package, with the build argument `bento_model` set to the new model's
    tag, so the service declares that BentoModel at class level and the model travels inside the Bento. bgmrec
    goes in as a wheel (`wheel`, or one built from the source checkout this package runs from), its
    dependencies from the serving lock beside the bentofile. Uses BENTOML_HOME for the stores.
    """
    import contextlib
    import shutil
    import tempfile
    from importlib import resources

    import bentoml
    import yaml

    from bgmrec.catalog import CATALOG_FILE, index_files
    from bgmrec.registry import CHECKPOINT_FILE, ModelRegistry

    registry = ModelRegistry(registry_dir)
    record = registry.production()
    if record is None:
        raise FileNotFoundError(f"no production model in {registry.root}; run the gate step first")
    catalog = registry.root / CATALOG_FILE
    if not catalog.exists():
        raise FileNotFoundError(f"{catalog} does not exist; run `bgmrec build-catalog` first")
    if wheel is not None and not Path(wheel).is_file():
        raise FileNotFoundError(f"{wheel}: no such wheel file")
    source = Path(__file__).resolve().parents[1]
    if wheel is None and not (source / "pyproject.toml").is_file():
        raise FileNotFoundError("bgmrec is installed, not run from a source checkout: pass the bgmrec wheel to "
                                "put in the Bento (`bgmrec build-bento --wheel dist/bgmrec-*.whl`)")
    with bentoml.models.create(
        BENTO_MODEL_NAME,
        labels={"model_name": record["model_name"]},
        metadata={"registry_version": record["version"]},
    ) as bento_model:
        shutil.copy2(registry.checkpoint(record["version"]), bento_model.path_of(CHECKPOINT_FILE))
        shutil.copy2(catalog, bento_model.path_of(CATALOG_FILE))
        for index_file in index_files(catalog):  # the vector index of a large catalog travels with it
            if index_file.exists():
                shutil.copy2(index_file, bento_model.path_of(index_file.name))
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


# ---------------------------------------------------------------- media: sample data set, feature extraction


def sample_media_step(out_dir: str | Path, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate the bundled sample media data set (params `sample_media:`) into OUT, manifests in the contract."""
    from bgmrec.media.sample import generate_sample_media

    return {"out": str(out_dir), **generate_sample_media(out_dir, params)}


def extract_step(dataset_dir: str | Path, params: dict[str, Any] | None = None, console: Any = None) -> dict[str, Any]:
    """Media → music_features.parquet / video_features.parquet (params `extract:`); bad items are reported in
    DATASET/extraction_report.json and skipped. `ok` is False when any item failed.
    """
    from bgmrec.media.extract import extract_dataset

    report = extract_dataset(dataset_dir, params, console=console)
    return {"ok": report.ok, "counts": report.counts, "seconds": report.seconds, "outputs": report.outputs,
            "dims": {kind: info["dim"] for kind, info in report.extractors.items()},
            "failures": [str(f) for f in report.failures]}


# ---------------------------------------------------------------- data layer: validation, Feast, train, gate


def validate_manifests_step(
    dataset_dir: str | Path, report_dir: str | Path, max_description_chars: int | None = None,
    data_root: str | Path | None = None,
) -> dict[str, Any]:
    """Great Expectations on music.parquet / videos.parquet; writes the report and raises ValidationFailed
    (naming the offending rows) when anything fails, so no later step runs.
    """
    from bgmrec.validation import DEFAULT_MAX_DESCRIPTION_CHARS, raise_on_failure, validate_manifests

    max_chars = max_description_chars or DEFAULT_MAX_DESCRIPTION_CHARS
    report = validate_manifests(dataset_dir, report_dir, max_chars, data_root)
    raise_on_failure(report)
    return {"passed": True, "tables": report.tables, "summary": str(Path(report.report_dir) / "summary.txt"),
            "data_docs": report.data_docs}


def validate_features_step(
    dataset_dir: str | Path, report_dir: str | Path, min_norm: float | None = None,
    max_norm: float | None = None,
) -> dict[str, Any]:
    """Great Expectations on the feature tables (keys, row counts, embedding length, finiteness, norm); writes
    the report and raises ValidationFailed naming the offending rows when anything fails.
    """
    from bgmrec.validation import DEFAULT_MAX_NORM, DEFAULT_MIN_NORM, raise_on_failure, validate_features

    report = validate_features(dataset_dir, report_dir,
                               DEFAULT_MIN_NORM if min_norm is None else min_norm,
                               DEFAULT_MAX_NORM if max_norm is None else max_norm)
    raise_on_failure(report)
    return {"passed": True, "tables": report.tables, "summary": str(Path(report.report_dir) / "summary.txt"),
            "data_docs": report.data_docs}


def feast_apply_step(
    repo_dir: str | Path, dataset_dir: str | Path, config: str = "feature_store.yaml"
) -> dict[str, Any]:
    """Stage the dataset's feature tables into the Feast repo, apply its definitions, materialize online."""
    from bgmrec.feature_store import apply_repo, init_repo, materialize_all, open_store, stage_repo_data

    init_repo(repo_dir)
    rows = stage_repo_data(repo_dir, dataset_dir)
    store = open_store(repo_dir, config)
    applied = apply_repo(store, repo_dir)
    materialize_all(store)
    return {"repo": str(repo_dir), "rows": rows, "applied": applied}


def train_step(
    dataset_dir: str | Path, split_kind: str, model_name: str, config: Config,
    out_dir: str | Path, feature_repo: str | Path | None = None, feature_service: str | None = None,
) -> dict[str, Any]:
    """Train a registered torch model on one split, with the parameters `config.model_params` resolves and the
    split seed `data.seed`; vectors come from Feast (`get_historical_features`, service `<model>_features`
    unless named) when a feature repo is given, else from the dataset's files.
    Writes OUT/model.pt, OUT/train.json (with the resolved parameters), OUT/history.csv and the training curves.
    """
    import json

    from bgmrec.data.contract import load_dataset
    from bgmrec.data.splits import load_or_make_split
    from bgmrec.models import create_model
    from bgmrec.models.base import TorchRecommender, TrainingData
    from bgmrec.plots import write_training_curves

    params = config.model_params(model_name)
    seed = config.data.seed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if feature_repo is not None:
        from bgmrec.feature_store import open_store, training_dataset

        service = feature_service or f"{model_name.split('-')[0]}_features"
        dataset = training_dataset(open_store(feature_repo), dataset_dir, service)
    else:
        dataset = load_dataset(dataset_dir)
    split = load_or_make_split(dataset, split_kind, seed)
    model = create_model(model_name, params)
    if not isinstance(model, TorchRecommender):
        raise ValueError(f"model '{model_name}' is not a torch model: it has no checkpoint to register")
    report = model.fit(TrainingData(dataset, split, seed)) or {}
    checkpoint = model.save(out / "model.pt")
    history = report.pop("history", model.history)
    plots = write_training_curves(history, out, f"{model_name} ({split_kind})")
    summary = {"model_name": model_name, "split": split_kind, "checkpoint": str(checkpoint), "params": params,
               "seed": seed, "features_from": "feast" if feature_repo is not None else "files", **report, **plots}
    (out / "train.json").write_text(json.dumps(summary, indent=2, default=float))
    return {**summary, "history": history}


def evaluate_step(
    dataset_dir: str | Path, checkpoint: str | Path | dict[str, str | Path], out_metrics_json: str | Path,
    split_kinds: tuple[str, ...] = ("weak", "strong"), seed: int = 0, plots_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Both protocols (Recall@K full gallery, IPS Recall@K) on the test part of each split kind.

    `checkpoint` is one checkpoint for every split, or {split_kind: checkpoint} so the strong split is scored
    by a model that never saw its test music. Writes {split_kind: metrics} to OUT, Recall@K curves to plots_dir.
    """
    import json

    from bgmrec.data.contract import load_dataset
    from bgmrec.data.splits import load_or_make_split
    from bgmrec.evaluate import evaluate
    from bgmrec.models import load_model
    from bgmrec.plots import write_recall_curves

    checkpoints = checkpoint if isinstance(checkpoint, dict) else {kind: checkpoint for kind in split_kinds}
    dataset = load_dataset(dataset_dir)
    metrics: dict[str, Any] = {}
    name = ""
    for kind, path in checkpoints.items():
        model = load_model(path)
        name = model.name
        result = evaluate(model, dataset, load_or_make_split(dataset, kind, seed), "test")
        metrics[kind] = {k: v for k, v in result.items() if isinstance(v, int | float)}
    out = Path(out_metrics_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, default=float))
    plots = write_recall_curves(metrics, Path(plots_dir), name) if plots_dir is not None else {}
    return {"model_name": name, "metrics": metrics, "metrics_json": str(out), **plots}


def gate_step(
    metrics_json: str | Path, registry_dir: str | Path, thresholds: dict[str, float], tolerance: float,
    model_name: str, checkpoint: str | Path,
) -> dict[str, Any]:
    """Register and promote the checkpoint only if every threshold is met and no gated metric is worse than
    production's minus the tolerance; production is untouched otherwise. Returns the decision and its reasons.
    """
    decision = gate_decision_step(metrics_json, registry_dir, thresholds, tolerance)
    version = None
    if decision["passed"]:
        version = register_model_step(metrics_json, registry_dir, model_name, checkpoint)["version"]
    return {"passed": decision["passed"], "reasons": decision["reasons"], "version": version,
            "production": version or decision["production"], "model_name": model_name}


def gate_decision_step(
    metrics_json: str | Path, registry_dir: str | Path, thresholds: dict[str, float], tolerance: float
) -> dict[str, Any]:
    """The gate's verdict alone (nothing is written): thresholds met AND not worse than production's metrics
    minus the tolerance. The KFP pipeline branches on `passed` (dsl.If) before registering.
    """
    import json

    from bgmrec.registry import ModelRegistry, gate

    metrics = json.loads(Path(metrics_json).read_text())
    production = ModelRegistry(registry_dir).production()
    decision = gate(metrics, thresholds, production["metrics"] if production else None, tolerance)
    return {"passed": decision.passed, "reasons": decision.reasons,
            "production": (production or {}).get("version")}


def register_model_step(
    metrics_json: str | Path, registry_dir: str | Path, model_name: str, checkpoint: str | Path
) -> dict[str, Any]:
    """Register a checkpoint with its metrics and promote it to production (call only after the gate passed)."""
    import json

    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_dir)
    version = registry.register(checkpoint, json.loads(Path(metrics_json).read_text()), model_name)
    registry.promote(version)
    return {"version": version, "model_name": model_name}


# ---------------------------------------------------------------- sharded extraction (the KFP training pipeline)


def media_to_extract(dataset_dir: str | Path) -> bool:
    """Whether the dataset's manifests point to media files. A dataset without media paths but with feature
    tables (e.g. `bgmrec simulate`) has its features precomputed: extraction has nothing to do."""
    from bgmrec.data.contract import MUSIC_FEATURES_FILE, VIDEO_FEATURES_FILE, load_manifests

    music, videos = load_manifests(dataset_dir)
    has_paths = "audio_path" in music.columns and "video_path" in videos.columns
    if has_paths:
        return True
    root = Path(dataset_dir)
    if not ((root / MUSIC_FEATURES_FILE).exists() and (root / VIDEO_FEATURES_FILE).exists()):
        raise ValueError(f"{root}: the manifests have no audio_path/video_path and there are no feature tables: "
                         "nothing to train on")
    return False


def extract_shard_step(
    dataset_dir: str | Path, shard: int, n_shards: int, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Extract every n_shards-th music and video into the dataset's content-hash feature cache (one ParallelFor
    shard); `extract_step` afterwards assembles the feature tables from the cache (and fits audio_lld's PCA on
    the whole catalog). Bad items are reported here and again, authoritatively, by `extract_step`.
    """
    from bgmrec.media.extract import extract_shard_to_cache

    if not media_to_extract(dataset_dir):
        return {"shard": shard, "music": 0, "videos": 0, "skipped": "features are precomputed", "failures": []}
    config = {**(params or {}), "progress": False}
    n_music, n_videos, report = extract_shard_to_cache(dataset_dir, shard, n_shards, config)
    return {"shard": shard, "music": n_music, "videos": n_videos, "failures": [str(f) for f in report.failures]}


def assemble_features_step(dataset_dir: str | Path, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """After the shards: `extract_step` over the whole dataset (cache hits), or nothing when the features are
    precomputed. Raises when any item failed, naming them, so no model trains on a partial catalog."""
    if not media_to_extract(dataset_dir):
        return {"ok": True, "skipped": "features are precomputed", "failures": []}
    result = extract_step(dataset_dir, {**(params or {}), "progress": False})
    if not result["ok"]:
        raise ValueError(f"{dataset_dir}: extraction failed for {len(result['failures'])} item(s): "
                         + "; ".join(result["failures"][:20]))
    return result


# ---------------------------------------------------------------- new music batches


def _catalog_ids(registry_dir: str | Path) -> list[str]:
    """Music ids of the serving catalog (only that column is read), [] when there is no catalog yet."""
    import pyarrow.parquet as pq

    from bgmrec.catalog import CATALOG_FILE

    path = Path(registry_dir) / CATALOG_FILE
    if not path.exists():
        return []
    return [str(i) for i in pq.read_table(path, columns=["music_id"]).column("music_id").to_pylist()]


def _read_batch_music_vectors(features_dir: str | Path):
    from bgmrec.data.contract import MUSIC_FEATURES_FILE, DatasetError, read_music_vectors

    problems: list[str] = []
    read = read_music_vectors(Path(features_dir) / MUSIC_FEATURES_FILE, problems)
    if read is None or problems:
        raise DatasetError(problems)
    return read[0]


def ingest_music_batch_step(
    batch_dir: str | Path, registry_dir: str | Path, out_dir: str | Path, config: Config
) -> dict[str, Any]:
    """Check a new music batch (bgmrec.batch: corrupt files, duplicate ids, ids already in the catalog) against
    the `batch:` rules; write OUT/music.parquet (the accepted part, empty when the batch is refused) and
    OUT/batch_report.json. Returns the verdict and a readable summary.
    """
    from bgmrec.batch import check_music_batch, write_batch

    extraction = config.extraction
    report = check_music_batch(batch_dir, _catalog_ids(registry_dir), config.batch_rules,
                               extraction.sample_rate, extraction.max_audio_seconds)
    write_batch(report, out_dir)
    return {"passed": report.passed, "accepted": len(report.accepted) if report.passed else 0,
            "rejected": len(report.rejected), "has_videos": report.has_videos, "summary": report.summary()}


def extract_music_batch_step(
    batch_out_dir: str | Path, dataset_dir: str | Path, out_dir: str | Path, config: Config
) -> dict[str, Any]:
    """Features of the accepted batch music, transformed with the catalog dataset's SAVED audio_lld scaler + PCA;
    writes OUT/music_features.parquet, OUT/music.parquet (music that extracted) and OUT/extraction_report.json.
    """
    import pandas as pd

    from bgmrec.batch import ACCEPTED_FILE
    from bgmrec.data.contract import write_music_features
    from bgmrec.media.extract import extract_music_files

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    music = pd.read_parquet(Path(batch_out_dir) / ACCEPTED_FILE)
    if music.empty:
        raise ValueError(f"{batch_out_dir}: the batch has no accepted music to extract; see its batch_report.json")
    extraction = dict(config.extract, progress=False)
    vectors, report = extract_music_files(music["audio_path"].tolist(), extraction, ids=music["music_id"].tolist(),
                                          catalog_dir=dataset_dir)
    report.write(out_dir / "extraction_report.json")
    if len(vectors) == 0:
        raise ValueError(f"{batch_out_dir}: no music of the batch could be extracted; see "
                         f"{out_dir / 'extraction_report.json'}")
    write_music_features(out_dir, vectors)
    music[music["music_id"].isin(set(vectors.ids))].to_parquet(out_dir / ACCEPTED_FILE, index=False)
    return {"extracted": len(vectors), "failed": len(report.failures),
            "failures": [f"{f.item_id} ({f.path}): {f.reason}" for f in report.failures]}


def push_music_batch_step(features_dir: str | Path, feature_repo: str | Path) -> dict[str, Any]:
    """Push the batch's music vectors to Feast, online and offline at once (readable online immediately)."""
    from bgmrec.feature_store import open_store, push_music

    pushed = push_music(open_store(feature_repo), _read_batch_music_vectors(features_dir))
    return {"pushed": pushed, "feature_repo": str(feature_repo)}


def embed_music_batch_step(features_dir: str | Path, registry_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Embed the batch's music with the production model's music encoder (the papers' unseen-music path:
    no retraining); writes OUT/embeddings.parquet (music_id, embedding) tagged with the model version.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_dir)
    record = registry.production()
    if record is None:
        raise FileNotFoundError(f"no production model in {registry.root}: train and promote one before adding music")
    vectors = _read_batch_music_vectors(features_dir)
    embeddings = registry.load_production().embed_music(vectors.audio_embedding, vectors.audio_lld, vectors.ids)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "music_id": pa.array([str(i) for i in vectors.ids]),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), pa.float32()),
                                                       embeddings.shape[1]),
    }).replace_schema_metadata({"model_version": record["version"]})
    pq.write_table(table, out / "embeddings.parquet")
    return {"embedded": len(vectors), "dim": int(embeddings.shape[1]), "model_version": record["version"]}


def refresh_catalog_step(
    batch_out_dir: str | Path, embeddings_dir: str | Path, registry_dir: str | Path, *,
    catalog_settings: CatalogSettings | None = None,
) -> dict[str, Any]:
    """Add the batch's embedded music (flagged new) to REGISTRY/catalog.parquet; refuses embeddings made by a
    model other than the one in production (the catalog must hold one embedding space).

    The vector index beside it grows with the catalog (a copy of the saved index with the batch added; built
    when the catalog reaches `catalog_settings.index_min_size`), so no full rebuild is needed.

    One transaction under the catalog's lock (bgmrec.ledger): the batch is recorded in the ledger (so rebuilds
    keep it), the current catalog is read inside the lock, so batches added at the same time are all kept, and
    music already in the catalog (a re-run of a batch) is not added twice.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from bgmrec.batch import ACCEPTED_FILE
    from bgmrec.catalog import CATALOG_FILE, load_catalog
    from bgmrec.config import CatalogSettings
    from bgmrec.ledger import catalog_transaction, record_batch
    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(registry_dir)
    table = pq.read_table(Path(embeddings_dir) / "embeddings.parquet")
    made_by = (table.schema.metadata or {}).get(b"model_version", b"").decode()
    record = registry.production()
    if record is None or record["version"] != made_by:
        current = record["version"] if record else "none"
        raise ValueError(f"embeddings were made by model {made_by or 'unknown'} but production is {current}: "
                         "re-run the embed step")
    ids = [str(i) for i in table.column("music_id").to_pylist()]
    column = table.column("embedding").combine_chunks()
    embeddings = column.flatten().to_numpy().reshape(len(ids), column.type.list_size)
    titles = pd.read_parquet(Path(batch_out_dir) / ACCEPTED_FILE).set_index("music_id")["title"]
    catalog_path = registry.root / CATALOG_FILE
    catalog_settings = catalog_settings or CatalogSettings()
    with catalog_transaction(registry.root):
        record_batch(registry.root, _read_batch_music_vectors(batch_out_dir),
                     {str(i): None if pd.isna(t) else str(t) for i, t in titles.items()})
        catalog = load_catalog(catalog_path, catalog_settings)
        if catalog.model_version and catalog.model_version != made_by:
            raise ValueError(f"{catalog_path} was embedded by model {catalog.model_version} but production is "
                             f"{made_by}: rebuild the catalog (`bgmrec build-catalog`) before adding music")
        before = len(catalog)
        fresh = [row for row, music_id in enumerate(ids) if catalog.indices_of([music_id])[0] < 0]
        if fresh:
            catalog = catalog.add([ids[r] for r in fresh], embeddings[fresh],
                                  titles=[titles.get(ids[r]) for r in fresh]).with_index(catalog_settings)
            catalog.save(catalog_path)
    return {"catalog": str(catalog_path), "added": len(fresh), "music_before": before, "music_after": len(catalog),
            "catalog_version": catalog.version, "indexed": catalog.index is not None}


def evaluate_music_batch_step(
    batch_dir: str | Path, features_dir: str | Path, registry_dir: str | Path, out_json: str | Path,
    config: Config,
) -> dict[str, Any]:
    """Strong-generalization Recall@K of a batch that comes with videos (batch videos.csv/.parquet): each video
    ranks the batch's new music — never seen in training, the papers' unseen music — with the production model;
    full-gallery Recall@K (VMCML eq. 7) over the batch's music. Videos that fail to decode are reported and left
    out. Writes OUT_JSON and returns the metrics.
    """
    import json

    import numpy as np
    import pandas as pd

    from bgmrec.batch import read_batch_videos
    from bgmrec.media.extract import embed_video_file, resolve_media_path
    from bgmrec.metrics import FULL_KS, recall_at_k
    from bgmrec.registry import ModelRegistry

    videos = read_batch_videos(batch_dir)
    if videos is None:
        raise FileNotFoundError(f"{batch_dir}: no videos.csv or videos.parquet: nothing to evaluate")
    music = _read_batch_music_vectors(features_dir)
    column = {str(music_id): i for i, music_id in enumerate(music.ids)}
    extraction = dict(config.extract, progress=False)
    visual, text, kept, failures = [], [], [], []
    for row in videos.to_dict("records"):
        if str(row["music_id"]) not in column:
            failures.append(f"{row['video_id']}: music {row['music_id']} is not among the batch's extracted music")
            continue
        try:
            path = resolve_media_path(Path(batch_dir), row.get("video_path"))
            described = row.get("description")
            vector, description = embed_video_file(path, None if pd.isna(described) else described, extraction)
        except Exception as exc:  # noqa: BLE001 - one bad video is reported, the rest is evaluated
            failures.append(f"{row['video_id']}: {exc}")
            continue
        visual.append(vector)
        text.append(description)
        kept.append(column[str(row["music_id"])])
    if not kept:
        raise ValueError(f"{batch_dir}: no video of the batch could be evaluated: {'; '.join(failures)}")
    model = ModelRegistry(registry_dir).load_production()
    has_text = np.array([t is not None for t in text])
    text_matrix = None
    if has_text.any():
        dim = len(next(t for t in text if t is not None))
        text_matrix = np.stack([t if t is not None else np.zeros(dim, np.float32) for t in text])
    video_embeddings = model.embed_videos(np.stack(visual), text_matrix, has_text if has_text.any() else None)
    music_embeddings = model.embed_music(music.audio_embedding, music.audio_lld, music.ids)
    ks = tuple(k for k in FULL_KS if k < len(music)) or (1,)
    metrics = recall_at_k(video_embeddings @ music_embeddings.T, np.asarray(kept), ks)
    result = {"protocol": "strong generalization, full gallery = the batch's new music", "videos": len(kept),
              "music": len(music), "metrics": metrics, "failures": failures}
    out = Path(out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    return result
