"""Vector index benchmark: which persisted index serves catalog search at 1M music, with which parameters.

    flock /tmp/bgmrec-cpu.lock .venv/bin/python bench/bench_index.py            # 1M music x 512 dims
    flock /tmp/bgmrec-cpu.lock .venv/bin/python bench/bench_index.py --quick    # 50k music, a few minutes

The catalog is synthetic but clustered the way a music catalog is (genres > artists > tracks, `clustered_music`),
with noise as large as the cluster structure so that neither a graph nor inverted lists find the neighbours
trivially. Queries are drawn from the same clusters, not taken from the catalog.

For each candidate, built with every core and searched with one thread (`faiss.omp_set_num_threads(1)`, as a
request thread of the service does): single-query latency p50/p99 over QUERIES queries, recall@20 against exact
search (faiss IndexFlatIP in the same run), index file size, build time, load time (plain, and memory-mapped where
the library can). Latency is what the catalog pays per query: the index fetches a candidate pool of
max(5·k, 100) and the pool is re-scored exactly with the catalog's float32 embeddings ("served" recall); "raw"
recall is the index's own top 20. Candidates: exact search, the hand-written k-means index the vector index
replaced (its code from the newest commit that has it, or --old-catalog, at its default), faiss HNSW (flat and
SQ8 storage), faiss IVF-SQ8 (the catalog's index, bgmrec.vector_index), IVF-SQ8 with an HNSW graph over the list
centroids in place of comparing the query with each, and usearch HNSW (f32 and i8; skipped when usearch is not
installed). Then the catalog path end to end (`MusicCatalog` saved, loaded as the service loads
it, `top_k`, `top_k_many`, a batch added in memory and appended to the stored catalog).

Writes bench/results/index.json. Never fails on timing: targets are reported beside the figures.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from clustered_catalog import (
    POOL,
    TARGETS,
    K,
    clustered_music,
    fastest_meeting_target,
    file_mb,
    measure_search,
    other_cpu_share,
    percentiles,
    recall,
    rss_mb,
    timed,
)
from index_candidates import old_coarse_index, usearch_candidate

ROOT = Path(__file__).resolve().parents[1]

app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None, pretty_exceptions_enable=False)


def exact_truth(x: np.ndarray, q: np.ndarray, threads: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The exact top K of every query (faiss IndexFlatIP, all cores, batched) and the single-query latency of exact
    search on one thread."""
    import faiss

    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    faiss.omp_set_num_threads(threads)
    _, truth = flat.search(q, K)
    faiss.omp_set_num_threads(1)
    sample = q[: min(len(q), 200)]  # exact search is the slow baseline: 200 queries show its latency
    result = measure_search(lambda one: flat.search(one, POOL)[1][0], x, sample, truth[: len(sample)])
    return truth, {"name": "exact (faiss IndexFlatIP)", **result}


def faiss_candidate(kind: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, workdir: Path, threads: int,
                    settings: dict[str, Any], sweep: list[int]) -> tuple[dict[str, Any], Any]:
    """Build one faiss index on all cores, save it, load it plain and memory-mapped, and sweep its search
    parameter (efSearch for HNSW, nprobe for IVF) on one thread. Returns the figures and the loaded index."""
    import faiss

    dim = x.shape[1]
    faiss.omp_set_num_threads(threads)
    row: dict[str, Any] = {"library": f"faiss {faiss.__version__}", "kind": kind, **settings}
    with timed(row, "build_seconds"):
        if kind == "IVF_HNSW,SQ8":  # the lists' centroids found through an HNSW graph, not compared one by one
            index = faiss.index_factory(dim, f"IVF{settings['nlist']}_HNSW32,SQ8", faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.max_points_per_centroid, ivf.cp.niter = 64, 10
            # efConstruction 128: faiss's 40 lost recall@20 (0.996 -> 0.990 at 1M); rows assigned with efSearch 64
            faiss.downcast_index(ivf.quantizer).hnsw.efConstruction = 128
            index.train(x[np.random.default_rng(0).choice(len(x), min(len(x), 64 * settings["nlist"]),
                                                           replace=False)])
            faiss.downcast_index(ivf.quantizer).hnsw.efSearch = 64
        elif kind == "HNSW,Flat":
            index = faiss.IndexHNSWFlat(dim, settings["M"], faiss.METRIC_INNER_PRODUCT)
        elif kind == "HNSW,SQ8":
            index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, settings["M"], faiss.METRIC_INNER_PRODUCT)
        else:
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, settings["nlist"], faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
            # k-means on a 64-per-list sample, 10 iterations: minutes, not an hour, at 1M
            index.cp.max_points_per_centroid, index.cp.niter = 64, 10
        if kind.startswith("HNSW"):
            index.hnsw.efConstruction = settings["efConstruction"]
        if not index.is_trained:
            index.train(x[np.random.default_rng(0).choice(len(x), min(len(x), 64 * settings.get("nlist", 4096)),
                                                           replace=False)])
        if not index.ntotal:
            index.add(x)
    path = workdir / f"{kind.replace(',', '_')}.faiss"
    faiss.write_index(index, str(path))
    row["file_mb"] = file_mb(path)
    del index
    gc.collect()
    before = rss_mb()
    with timed(row, "load_seconds"):
        index = faiss.read_index(str(path))
    row["memory_mb"] = round(rss_mb() - before, 1)
    try:
        with timed(row, "load_mmap_seconds"):
            mapped = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:
        row.pop("load_mmap_seconds")
        row["load_mmap"] = f"not supported: {str(exc).splitlines()[0][:160]}"
        mapped = None
    faiss.omp_set_num_threads(1)
    label = "efSearch" if kind.startswith("HNSW") else "nprobe"

    def searcher(searched: Any, value: int) -> Callable[[np.ndarray], np.ndarray]:
        if kind.startswith("HNSW"):
            params = faiss.SearchParametersHNSW(efSearch=max(value, POOL))
        elif kind == "IVF_HNSW,SQ8":  # the graph explores 2 centroids per list probed: the flat quantizer's recall
            params = faiss.SearchParametersIVF(nprobe=value,
                                               quantizer_params=faiss.SearchParametersHNSW(efSearch=2 * value))
        else:
            params = faiss.SearchParametersIVF(nprobe=value)
        return lambda one: searched.search(one, POOL, params=params)[1][0]

    row["search"] = []
    for value in sweep:
        result: dict[str, Any] = {}
        with other_cpu_share(result):
            result.update(measure_search(searcher(index, value), x, q, truth))
        row["search"].append({label: value, **result})
        print(json.dumps({"kind": kind, label: value, **result}), flush=True)
    if mapped is not None:
        chosen = fastest_meeting_target(row["search"]) or row["search"][-1]
        row["search_mmap"] = {label: chosen[label], **measure_search(searcher(mapped, chosen[label]), x, q, truth)}
    path.unlink()
    return row, index


def catalog_end_to_end(x: np.ndarray, q: np.ndarray, truth: np.ndarray, workdir: Path, settings: Any,
                       new: np.ndarray, index: Any = None, build_seconds: float | None = None) -> dict:
    """The catalog path the build step and the service run: its index (`with_index`, or the one the ivf_sq8
    candidate built in this run), `save` (a base part with the index), `load_catalog` as a replica loads it at
    start (twice: right after the save, and again), `top_k(k=20)` one query at a time and `top_k_many` of 32
    queries on one thread; then a batch of `new` music: `add` in memory (the service's admin route: the index
    shared, the batch scanned exactly per query), and `append_batch` to the stored catalog followed by
    `load_catalog` of the grown catalog (the segment's rows added to the loaded index)."""
    import faiss
    from threadpoolctl import threadpool_limits

    from bgmrec.catalog import MusicCatalog, append_batch, catalog_files, load_catalog
    from bgmrec.vector_index import VectorIndex

    n = len(x)
    ids = np.char.add("m", np.arange(n).astype(str)).astype(object)
    row: dict[str, Any] = {"catalog_size": n, "settings": settings.model_dump()}
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    if index is None:
        catalog = MusicCatalog(ids, ids, x, np.zeros(n), np.zeros(n, bool), model_version="bench", normalised=True)
        with timed(row, "build_seconds"):
            catalog = catalog.with_index(settings)
    else:
        row["build_seconds"] = build_seconds
        catalog = MusicCatalog(ids, ids, x, np.zeros(n), np.zeros(n, bool), model_version="bench", normalised=True,
                               index=VectorIndex(index, settings.nprobe))
    path = workdir / "catalog" / "catalog.parquet"
    with timed(row, "save_seconds"):
        catalog.save(path)
    row["files_mb"] = {str(p.relative_to(path.parent)): file_mb(p) for p in catalog_files(path)}
    del catalog
    gc.collect()
    before = rss_mb()
    with timed(row, "load_catalog_seconds"):
        loaded = load_catalog(path, settings)
    row["load_memory_mb"] = round(rss_mb() - before, 1)
    row["index_loaded_from_file"] = loaded.index is not None and loaded.index.path is not None
    del loaded
    gc.collect()
    with timed(row, "load_catalog_again_seconds"):
        loaded = load_catalog(path, settings)
    faiss.omp_set_num_threads(1)
    new_ids = np.char.add("new", np.arange(len(new)).astype(str)).astype(object)
    with threadpool_limits(1, user_api="blas"), other_cpu_share(row, "other_cpu_share_top_k"):
        row["top_k"] = _catalog_latency(loaded, q, truth)
    with threadpool_limits(1, user_api="blas"):
        seconds = []
        for start in range(0, len(q) - 31, 32):
            started = time.perf_counter()
            loaded.top_k_many(q[start:start + 32], [K] * 32, [()] * 32, [1.0] * 32, [0.0] * 32)
            seconds.append(time.perf_counter() - started)
        row["top_k_many_32"] = percentiles(seconds)
        with timed(row, "add_batch_seconds"):
            bigger = loaded.add(new_ids, new)
        row["add_batch"] = len(new)
        row["top_k_after_add"] = _catalog_latency(bigger, q, truth)
    del loaded, bigger
    gc.collect()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    with timed(row, "append_batch_seconds"):
        append_batch(path, "bench", new_ids, new, [None] * len(new), "bench", settings)
    with timed(row, "load_catalog_with_segment_seconds"):
        grown = load_catalog(path, settings)
    faiss.omp_set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        row["top_k_after_append"] = {**_catalog_latency(grown, q, truth),
                                     "indexed_rows": grown.index.rows if grown.index else 0}
    del grown
    shutil.rmtree(path.parent)
    return row


def _catalog_latency(catalog: Any, q: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    for i in range(20):
        catalog.top_k(q[i], K)
    seconds, served = [], []
    for i in range(len(q)):
        started = time.perf_counter()
        got = catalog.top_k(q[i], K)
        seconds.append(time.perf_counter() - started)
        served.append(got.index)
    return {**percentiles(seconds), "recall_at_20": round(recall(served, truth), 4)}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="50k music, fewer candidates: a check that runs in under a minute")] =
        False,
    size: Annotated[int, typer.Option(help="music in the catalog")] = 1_000_000,
    dim: Annotated[int, typer.Option(help="embedding width")] = 512,
    queries: Annotated[int, typer.Option(help="single queries timed per setting")] = 1000,
    hnsw_m: Annotated[int, typer.Option("--hnsw-m", help="HNSW neighbours per node (M)")] = 32,
    ef_construction: Annotated[int, typer.Option(help="HNSW efConstruction")] = 128,
    ef_search: Annotated[str, typer.Option(help="HNSW efSearch values swept (comma-separated)")] =
        "100,128,160,192,256,384",
    nlist: Annotated[int, typer.Option(help="IVF lists (0: 4·sqrt(n))")] = 0,
    nprobe: Annotated[str, typer.Option(help="IVF nprobe values swept (comma-separated)")] =
        "16,24,32,48,64",
    noise_scale: Annotated[float, typer.Option(help="noise of the synthetic catalog (see clustered_music)")] = 1.5,
    candidates: Annotated[str, typer.Option(help="comma-separated subset of: exact, old, hnsw_flat, hnsw_sq8, "
                                                 "ivf_sq8, ivf_hnsw_sq8, usearch_f32, usearch_i8, catalog")] =
        "exact,old,hnsw_flat,hnsw_sq8,ivf_sq8,ivf_hnsw_sq8,usearch_f32,usearch_i8,catalog",
    old_catalog: Annotated[Path | None, typer.Option(help="the catalog module with the hand-written index "
                                                          "(default: the newest committed one that has it)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="where index files are written (default: a temp dir)")] =
        None,
    out: Annotated[Path, typer.Option(help="results JSON (a --quick run writes to the temp dir by default)")] =
        ROOT / "bench" / "results" / "index.json",
    seed: Annotated[int, typer.Option(help="data and query seed")] = 0,
) -> None:
    """Measure the candidates and write OUT (merged into an existing OUT: a run of some candidates keeps the
    others' figures). OUT is rewritten after each candidate."""
    import faiss

    if quick:
        size, queries = min(size, 50_000), min(queries, 1000)
        candidates = "exact,old,ivf_sq8,ivf_hnsw_sq8,catalog"
        if out == ROOT / "bench" / "results" / "index.json":  # a check: the figures stay the 1M run's
            out = Path(tempfile.gettempdir()) / "bgmrec-index-quick.json"
    threads = os.cpu_count() or 1
    chosen = set(candidates.split(","))
    scratch = tempfile.TemporaryDirectory(prefix="bgmrec-index-bench-") if workdir is None else None
    folder = Path(scratch.name) if scratch else workdir
    folder.mkdir(parents=True, exist_ok=True)
    data = {"music": size, "dim": dim, "queries": queries, "k": K, "pool": POOL, "seed": seed,
            "noise_scale": noise_scale,
            "generator": "clustered_music: genres of ~10k tracks > artists of ~20 > tracks, plus noise"}
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if any(result.get("data", {}).get(key) != data[key] for key in ("music", "dim", "seed", "noise_scale")):
        result = {}  # figures of another catalog are not merged
    command = " ".join([".venv/bin/python bench/bench_index.py", *sys.argv[1:]])
    result.update({
        # every run merged into OUT, in order (each measured the candidates it names)
        "commands": [*result.get("commands", []), command],
        "machine": {"cpus": threads, "python": platform.python_version(), "load_avg_at_start": os.getloadavg(),
                    "faiss": faiss.__version__, "search_threads": 1, "build_threads": threads},
        "data": data,
        "targets": TARGETS,
    })
    candidates_out: dict[str, Any] = result.setdefault("candidates", {})

    def record(name: str, row: dict[str, Any]) -> None:
        if "search" in row:
            row["fastest_meeting_recall_target"] = fastest_meeting_target(row["search"])
        candidates_out[name] = row
        print(json.dumps({name: {k: v for k, v in row.items() if k != "search"}}), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")

    started = time.perf_counter()
    with timed(data, "generate_seconds"):
        x, draw_queries = clustered_music(size, dim, seed, noise_scale=noise_scale)
        q = draw_queries(queries, seed + 1)
    truth, exact = exact_truth(x, q, threads)
    data["cosine_of_1st_neighbour_mean"] = round(float(np.mean([x[truth[i, 0]] @ q[i] for i in range(len(q))])), 4)
    data["cosine_of_20th_neighbour_mean"] = round(float(np.mean([x[truth[i, -1]] @ q[i] for i in range(len(q))])),
                                                  4)
    if "exact" in chosen:
        record("exact", exact)
    if "old" in chosen:
        record("old", old_coarse_index(x, q, truth, old_catalog))
    efs = _ints(ef_search)
    catalog_index = None  # the catalog's kind of index, when built in this run (the catalog path reuses it)
    for name, kind, settings, sweep in (
        ("hnsw_flat", "HNSW,Flat", {"M": hnsw_m, "efConstruction": ef_construction}, efs),
        ("hnsw_sq8", "HNSW,SQ8", {"M": hnsw_m, "efConstruction": ef_construction}, efs),
        ("ivf_sq8", "IVF,SQ8", {"nlist": nlist or int(4 * np.sqrt(size))}, _ints(nprobe)),
        ("ivf_hnsw_sq8", "IVF_HNSW,SQ8", {"nlist": nlist or int(4 * np.sqrt(size))}, _ints(nprobe)),
    ):
        if name in chosen:
            row, index = faiss_candidate(kind, x, q, truth, folder, threads, settings, sweep)
            record(name, row)
            if name == "ivf_sq8":  # the catalog's index is faiss's IVF-SQ8 built the same way
                catalog_index = index
            del index
            gc.collect()
    # The catalog's index: among the faiss settings measured (in this run or an earlier one merged into OUT), the
    # one with the lowest p99 that meets the recall target, else the one with the best recall.
    settings_measured = [(name, row, setting) for name, row in candidates_out.items()
                         if name in ("hnsw_flat", "hnsw_sq8", "ivf_sq8", "ivf_hnsw_sq8")
                         for setting in row.get("search", [])]
    meeting = [t for t in settings_measured if t[2]["recall_at_20"] >= TARGETS["recall_at_20"]]
    pick = (min(meeting, key=lambda t: t[2]["p99_ms"]) if meeting
            else max(settings_measured, key=lambda t: t[2]["recall_at_20"], default=None))
    if pick is not None:
        name, row, setting = pick
        result["chosen"] = {"candidate": name, **{k: v for k, v in row.items() if k in ("M", "efConstruction",
                                                                                         "nlist")},
                            **{k: v for k, v in setting.items() if k in ("efSearch", "nprobe")}}
        result["chosen_against_targets"] = {
            "recall_at_20": setting["recall_at_20"], "p50_ms": setting["p50_ms"], "p99_ms": setting["p99_ms"],
            "meets_recall": setting["recall_at_20"] >= TARGETS["recall_at_20"],
            "meets_p99": setting["p99_ms"] <= TARGETS["p99_ms"]}
    for dtype in ("f32", "i8"):
        if f"usearch_{dtype}" in chosen:
            if importlib.util.find_spec("usearch") is None:
                record(f"usearch_{dtype}", {"library": "usearch", "kind": f"HNSW,{dtype}",
                                            "skipped": "usearch is not installed (pip install usearch)"})
                continue
            record(f"usearch_{dtype}", usearch_candidate(dtype, x, q, truth, folder, threads, hnsw_m,
                                                         ef_construction, efs))
            gc.collect()
    if "catalog" in chosen:
        from bgmrec.config import CatalogSettings

        # The catalog's index with its shipped settings (the `catalog:` defaults), built here unless the ivf_sq8
        # candidate built it in this run.
        settings = CatalogSettings(index_min_size=1, ivf_lists=nlist)
        new, _ = clustered_music(max(1000, size // 1000), dim, seed + 2, noise_scale=noise_scale)
        result["catalog_end_to_end"] = catalog_end_to_end(
            x, q, truth, folder, settings, new, catalog_index, candidates_out.get("ivf_sq8", {}).get("build_seconds"))
        print(json.dumps(result["catalog_end_to_end"]), flush=True)
    result.pop("growth", None)  # figures of a candidate this benchmark no longer measures
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    if scratch:
        scratch.cleanup()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result.get(k) for k in ("chosen", "catalog_end_to_end")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    app()
