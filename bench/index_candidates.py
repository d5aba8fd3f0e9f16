"""Index candidates of bench/bench_index.py that are not faiss's: the hand-written k-means index the vector index
replaced (its code from git history) and usearch HNSW."""

from __future__ import annotations

import gc
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from clustered_catalog import (
    POOL,
    K,
    fastest_meeting_target,
    file_mb,
    measure_search,
    percentiles,
    recall,
    rss_mb,
    timed,
)

ROOT = Path(__file__).resolve().parents[1]


def old_coarse_index(x: np.ndarray, q: np.ndarray, truth: np.ndarray, old_catalog: Path | None) -> dict[str, Any]:
    """The hand-written k-means inverted-file index (spherical k-means, 2·sqrt(n) lists, 1/8 probed) at its
    default, from the catalog module before the vector index replaced it."""
    from threadpoolctl import threadpool_limits

    source = old_catalog.read_text() if old_catalog else _last_committed_coarse_index()
    if source is None:
        return {"name": "hand-written k-means IVF", "skipped": "no catalog module with CoarseIndex found "
                "(pass --old-catalog FILE)"}
    with tempfile.TemporaryDirectory() as folder:
        module_path = Path(folder) / "old_catalog.py"
        module_path.write_text(source)
        spec = importlib.util.spec_from_file_location("old_catalog", module_path)
        old = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = old  # its dataclasses look their module up while the class is created
        spec.loader.exec_module(old)
    n = len(x)
    ids = np.arange(n).astype(str).astype(object)
    row: dict[str, Any] = {"name": "hand-written k-means IVF (default lists and probes)"}
    with threadpool_limits(1, user_api="blas"):
        catalog = old.MusicCatalog(ids, ids, x, np.zeros(n), np.zeros(n, bool))
        with timed(row, "build_seconds"):
            indexed = catalog.with_index()
        del catalog
        rows = indexed.ids.astype(np.int64)  # its rows are regrouped by list: map back to the original numbering
        row["lists"], row["probed"] = len(indexed.index.centroids), indexed.index.n_probe
        for i in range(20):
            indexed.top_k(q[i], K)
        seconds, served = [], []
        for i in range(len(q)):
            started = time.perf_counter()
            got = indexed.top_k(q[i], K)
            seconds.append(time.perf_counter() - started)
            served.append(rows[got.index])
    return {**row, **percentiles(seconds), "recall_at_20": round(recall(served, truth), 4)}


def _last_committed_coarse_index() -> str | None:
    """bgmrec/catalog.py as of the newest commit that still has the hand-written index, or None."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    try:
        for commit in git("rev-list", "--max-count=50", "HEAD", "--", "bgmrec/catalog.py").split():
            source = git("show", f"{commit}:bgmrec/catalog.py")
            if "class CoarseIndex" in source:
                return source
    except (OSError, subprocess.CalledProcessError):
        return None
    return None


def usearch_candidate(dtype: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, workdir: Path, threads: int,
                      connectivity: int, expansion_add: int, sweep: list[int]) -> dict[str, Any]:
    """The same for a usearch HNSW (inner product), vectors stored as `dtype`."""
    import usearch
    from usearch.index import Index

    row: dict[str, Any] = {"library": f"usearch {usearch.__version__}", "kind": f"HNSW,{dtype}",
                           "M": connectivity, "efConstruction": expansion_add}
    index = Index(ndim=x.shape[1], metric="ip", dtype=dtype, connectivity=connectivity, expansion_add=expansion_add)
    with timed(row, "build_seconds"):
        index.add(np.arange(len(x)), x, threads=threads)
    path = workdir / f"usearch_{dtype}.usearch"
    index.save(str(path))
    row["file_mb"] = file_mb(path)
    del index
    gc.collect()
    before = rss_mb()
    with timed(row, "load_seconds"):
        index = Index.restore(str(path), view=False)
    row["memory_mb"] = round(rss_mb() - before, 1)
    with timed(row, "load_mmap_seconds"):
        mapped = Index.restore(str(path), view=True)
    row["search"] = []
    for value in sweep:
        index.expansion_search = max(value, POOL)
        result = measure_search(lambda one: index.search(one[0], POOL, threads=1).keys.astype(np.int64), x, q, truth)
        row["search"].append({"efSearch": value, **result})
        print(json.dumps({"kind": row["kind"], "library": "usearch", "efSearch": value, **result}), flush=True)
    chosen = fastest_meeting_target(row["search"]) or row["search"][-1]
    mapped.expansion_search = max(chosen["efSearch"], POOL)
    row["search_mmap"] = {"efSearch": chosen["efSearch"], **measure_search(
        lambda one: mapped.search(one[0], POOL, threads=1).keys.astype(np.int64), x, q, truth)}
    path.unlink()
    return row
