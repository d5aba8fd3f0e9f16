"""Catalog batch benchmark: what adding a batch of new music costs against the size of the catalog.

    flock /tmp/bgmrec-cpu.lock .venv/bin/python bench/bench_catalog_batch.py           # 100k and 1M music x 512
    flock /tmp/bgmrec-cpu.lock .venv/bin/python bench/bench_catalog_batch.py --quick   # 10k and 100k, a check

In one run: for each catalog size, a registry with a promoted model and its catalog (clustered embeddings as in
bench/bench_index.py, the IVF-SQ8 index built and saved with it: `save`, a rebuild's write); then batches of new
music added to every catalog by `refresh_catalog_step` itself, as the new-music pipeline runs it (features and
embeddings files written beforehand, as the pipeline's earlier steps write them; the timed call reads them,
records the batch in the ledger and appends it to the catalog under the catalog's lock), --repeats times per
batch size, catalog sizes and batch sizes interleaved turn by turn; then `load_catalog` as a replica loads each
grown catalog (the segments' rows added to the base's index), against the catalog before any batch. The ratio of
the batch times between the largest and the smallest catalog is the figure: near 1 when a batch costs what the
batch costs.

Writes bench/results/catalog_batch.json (a --quick run: the temp dir). Never fails on timing.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from clustered_catalog import clustered_music, other_cpu_share

ROOT = Path(__file__).resolve().parents[1]

app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None, pretty_exceptions_enable=False)


def _seconds(values: list[float]) -> dict[str, float]:
    return {"p50_s": round(float(np.median(values)), 4), "max_s": round(float(np.max(values)), 4),
            "min_s": round(float(np.min(values)), 4), "runs": len(values)}


def _registry(root: Path, size: int, dim: int, seed: int) -> tuple[str, dict[str, Any]]:
    """A registry with a promoted model and a catalog of `size` music saved with its index; returns the model
    version and the build figures."""
    import torch

    from bgmrec.catalog import MusicCatalog
    from bgmrec.config import CatalogSettings
    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(root)
    checkpoint = root.parent / f"model-{size}.pt"
    torch.save({"name": "cmvae", "params": {}, "size": size}, checkpoint)
    version = registry.register(checkpoint, {}, "cmvae")
    registry.promote(version)
    x, _ = clustered_music(size, dim, seed)
    ids = np.char.add("m", np.arange(size).astype(str)).astype(object)
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    catalog = MusicCatalog(ids, ids, x, np.zeros(size), np.zeros(size, bool), model_version=version,
                           normalised=True).with_index(CatalogSettings(index_min_size=1))
    figures["index_build_seconds"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    catalog.save(root / "catalog.parquet")
    figures["save_seconds"] = round(time.perf_counter() - started, 2)
    return version, figures


def _batch_files(folder: Path, ids: list[str], dim: int, version: str, seed: int) -> tuple[Path, Path]:
    """A batch as the pipeline hands it to the refresh step: the accepted music and their features
    (OUT/music.parquet + music_features.parquet) and the production model's embeddings."""
    from bgmrec.batch import ACCEPTED_FILE
    from bgmrec.data.contract import MusicVectors, write_music_features

    rng = np.random.default_rng(seed)
    features, embeddings = folder / "features", folder / "embeddings"
    features.mkdir(parents=True)
    embeddings.mkdir(parents=True)
    write_music_features(features, MusicVectors(np.asarray(ids, dtype=object),
                                                rng.standard_normal((len(ids), 128), np.float32),
                                                rng.standard_normal((len(ids), 64), np.float32)))
    pd.DataFrame({"music_id": ids, "title": [f"Title {i}" for i in ids]}).to_parquet(features / ACCEPTED_FILE)
    vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
    table = pa.table({"music_id": ids, "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.reshape(-1), pa.float32()), dim)})
    pq.write_table(table.replace_schema_metadata({"model_version": version}), embeddings / "embeddings.parquet")
    return features, embeddings


def _load_seconds(path: Path, repeats: int) -> dict[str, Any]:
    from bgmrec.catalog import load_catalog
    from bgmrec.config import CatalogSettings

    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        catalog = load_catalog(path, CatalogSettings(index_min_size=1))  # as built: with its index
        seconds.append(time.perf_counter() - started)
    return {**_seconds(seconds), "music": len(catalog), "indexed_rows": catalog.index.rows if catalog.index else 0}


def prepare_size(size: int, dim: int, workdir: Path, seed: int) -> tuple[Path, str, dict[str, Any]]:
    """A registry with a catalog of `size` music; its folder, model version and figures (build, save, load)."""
    from bgmrec.catalog import catalog_files

    registry = workdir / f"catalog-{size}" / "registry"
    registry.mkdir(parents=True)
    version, row = _registry(registry, size, dim, seed)
    path = registry / "catalog.parquet"
    row.update({"music": size, "files_mb": round(sum(f.stat().st_size for f in catalog_files(path)) / 2**20, 1)})
    row["load_before_batches"] = _load_seconds(path, 2)
    return registry, version, row


def add_batches(registries: dict[int, tuple[Path, str]], dim: int, batches: list[int], repeats: int,
                seed: int) -> dict[int, dict[int, list[float]]]:
    """`repeats` batches of each size through `refresh_catalog_step` into every catalog, interleaved (catalog
    sizes, then batch sizes, turn by turn: a change in the machine's load reaches every case alike); only the step
    itself is timed. Seconds per catalog size and batch size."""
    from bgmrec.config import CatalogSettings
    from bgmrec.steps import refresh_catalog_step

    timings: dict[int, dict[int, list[float]]] = {size: {b: [] for b in batches} for size in registries}
    for turn in range(repeats):
        for batch in batches:
            for size, (registry, version) in registries.items():
                ids = [f"new-{batch}-{turn}-{i}" for i in range(batch)]
                features, embeddings = _batch_files(registry.parent / f"batch-{batch}-{turn}", ids, dim, version,
                                                    seed + 100 * turn + batch)
                started = time.perf_counter()
                result = refresh_catalog_step(features, embeddings, registry,
                                              catalog_settings=CatalogSettings(index_min_size=1))
                timings[size][batch].append(time.perf_counter() - started)
                assert result["added"] == batch and result["indexed"], result
    return timings


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="10k and 100k music: a check that runs in a few minutes")] = False,
    sizes: Annotated[str, typer.Option(help="catalog sizes (comma-separated)")] = "100000,1000000",
    dim: Annotated[int, typer.Option(help="embedding width")] = 512,
    batches: Annotated[str, typer.Option(help="batch sizes (comma-separated)")] = "2,100",
    repeats: Annotated[int, typer.Option(help="batches of each size added per catalog")] = 7,
    workdir: Annotated[Path | None, typer.Option(help="where registries are written (default: a temp dir)")] = None,
    out: Annotated[Path, typer.Option(help="results JSON (a --quick run writes to the temp dir by default)")] =
        ROOT / "bench" / "results" / "catalog_batch.json",
    seed: Annotated[int, typer.Option(help="data seed")] = 0,
) -> None:
    """Measure the cost of a batch at each catalog size and write OUT."""
    import faiss

    if quick:
        sizes = "10000,100000"
        if out == ROOT / "bench" / "results" / "catalog_batch.json":  # a check: the figures stay the full run's
            out = Path(tempfile.gettempdir()) / "bgmrec-catalog-batch-quick.json"
    size_list = sorted(int(s) for s in sizes.split(",") if s)
    batch_list = [int(b) for b in batches.split(",") if b]
    scratch = tempfile.TemporaryDirectory(prefix="bgmrec-catalog-batch-") if workdir is None else None
    folder = Path(scratch.name) if scratch else workdir
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": " ".join(["flock /tmp/bgmrec-cpu.lock .venv/bin/python bench/bench_catalog_batch.py",
                             *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "faiss": faiss.__version__,
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "load_avg_at_start": os.getloadavg()},
        "data": {"dim": dim, "batches": batch_list, "repeats": repeats, "seed": seed,
                 "generator": "bench_index.clustered_music"},
        "sizes": {},
    }
    started = time.perf_counter()
    registries = {}
    for size in size_list:
        registry, version, row = prepare_size(size, dim, folder, seed)
        registries[size] = (registry, version)
        result["sizes"][str(size)] = row
        print(json.dumps({str(size): row}), flush=True)
    with other_cpu_share(result, "other_cpu_share_during_batches"):
        timings = add_batches(registries, dim, batch_list, repeats, seed)
    for size, (registry, _) in registries.items():
        row = result["sizes"][str(size)]
        row["refresh"] = {str(b): _seconds(s) for b, s in timings[size].items()}
        row["segments"] = repeats * len(batch_list)
        row["load_after_batches"] = _load_seconds(registry / "catalog.parquet", 2)
        shutil.rmtree(registry.parent)
    small, large = (result["sizes"][str(s)] for s in (size_list[0], size_list[-1]))
    result["ratio_largest_to_smallest"] = {
        f"refresh_{b}": round(large["refresh"][str(b)]["p50_s"] / small["refresh"][str(b)]["p50_s"], 2)
        for b in batch_list}
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    if scratch:
        scratch.cleanup()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratio_largest_to_smallest"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    app()
