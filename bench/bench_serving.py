"""Serving benchmark: `bgmrec serve` over real HTTP (loopback) beside raw in-process scoring, memory, catalog scaling.

    .venv/bin/python bench/bench_serving.py --dataset /tmp/sim_tt --workdir /tmp/bgmrec-bench

1. Builds a registry in WORKDIR: a CMVAE (the paper's defaults, 512-d embeddings) trained briefly on
   TRAIN_DATASET, promoted, and the catalog of DATASET's music (3,003 clips for the tt150k-shaped simulation).
   An existing WORKDIR registry is reused.
2. Raw in-process scoring per request: `model.embed_videos` of one video + `catalog.top_k(k=10)`, one at a time.
3. Starts `bgmrec serve` and drives recommend_by_features with closed-loop aiohttp clients at 1, 8 and 32
   concurrent clients (bounded by a duration per level): p50/p99 latency and throughput.
4. Memory: RSS of the server process tree before the load, then every 5 s of a sustained 32-client run.
5. Catalog-size scaling, in process: top-K latency at 3k, 100k and 1M music, exact and with the coarse index
   (and its recall@10 against exact), on catalogs grown from the real one (see `catalog_scaling`).
Writes bench/results/serving.json. Never fails on timing: targets are reported beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "p99_ms_3k_32_clients": 25.0,
    "throughput_rps_3k_32_clients": 400.0,
    "http_vs_raw_max_ratio": 1.5,
    "p99_ms_1m_top_k": 100.0,
}


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": len(ms)}


def prepare_registry(dataset: Path, train_dataset: Path, workdir: Path, train_seconds: float) -> Path:
    """A registry with a CMVAE trained briefly on `train_dataset` (same feature widths) and promoted, and the
    catalog of `dataset`'s music. Reused when it exists. Serving cost does not depend on how well it is trained."""
    from bgmrec.data.contract import load_dataset
    from bgmrec.data.splits import make_split
    from bgmrec.models import create_model
    from bgmrec.models.base import TrainingData
    from bgmrec.registry import ModelRegistry
    from bgmrec.steps import build_catalog_step

    registry = ModelRegistry(workdir / "registry")
    if registry.production() is not None and (registry.root / "catalog.parquet").exists():
        return registry.root
    ds = load_dataset(train_dataset)
    model = create_model("cmvae", {"epochs": 1, "max_seconds": train_seconds, "progress": False})
    model.fit(TrainingData(ds, make_split(ds, "weak", 0)))
    checkpoint = model.save(workdir / "cmvae.pt")
    registry.promote(registry.register(checkpoint, {"note": "benchmark model, trained briefly"}, "cmvae"))
    build_catalog_step(dataset, registry.root)
    return registry.root


def request_bodies(dataset: Path, n: int) -> list[dict]:
    """n recommend_by_features bodies from the dataset's videos (about half without text)."""
    from bgmrec.data.contract import load_dataset

    vv = load_dataset(dataset).video_vectors
    rows = np.random.default_rng(0).choice(len(vv), n, replace=False)
    return [{"visual": vv.visual[i].tolist(), "text": vv.text[i].tolist() if vv.has_text[i] else None, "k": 10}
            for i in rows]


def raw_scoring(registry: Path, bodies: list[dict]) -> dict[str, float]:
    """Per-request latency of embedding one video and ranking the catalog, in this process, one at a time."""
    import torch
    from threadpoolctl import threadpool_limits

    from bgmrec.catalog import load_catalog
    from bgmrec.registry import ModelRegistry

    torch.set_num_threads(1)  # as the service does (BGMREC_TORCH_THREADS, BGMREC_BLAS_THREADS)
    threadpool_limits(1, user_api="blas")
    model = ModelRegistry(registry).load_production()
    catalog = load_catalog(registry / "catalog.parquet")
    arrays = [(np.asarray(b["visual"], np.float32), None if b["text"] is None else np.asarray(b["text"], np.float32))
              for b in bodies]
    for visual, text in arrays[:20]:
        catalog.top_k(model.embed_videos(visual[None], None if text is None else text[None])[0], 10)
    latencies = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for visual, text in arrays:
        t = time.perf_counter()
        catalog.top_k(model.embed_videos(visual[None], None if text is None else text[None])[0], 10)
        latencies.append(time.perf_counter() - t)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {**percentiles(latencies), "throughput_rps": len(arrays) / elapsed, "catalog_size": len(catalog),
            "embedding_dim": catalog.dim, "cpu_ms_per_request": cpu / len(arrays) * 1e3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of a process and its children (the BentoML worker)."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def tree_rss_mb(process: psutil.Process) -> float:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


async def closed_loop(url: str, bodies: list[dict], clients: int, seconds: float, max_requests: int,
                      on_tick=None) -> dict[str, float]:
    """`clients` concurrent clients, each sending its next request when the previous answer arrives."""
    import aiohttp

    payloads = [json.dumps(b).encode() for b in bodies]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    counter = 0

    async def client(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal errors, counter
        i = offset
        while time.perf_counter() < deadline and counter < max_requests:
            counter += 1
            t = time.perf_counter()
            async with session.post(f"{url}/recommend_by_features", data=payloads[i % len(payloads)],
                                    headers={"content-type": "application/json"}) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - t)
            i += clients

    async def ticker() -> None:
        while time.perf_counter() < deadline and counter < max_requests:
            await asyncio.sleep(5)
            if on_tick:
                on_tick()

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        tasks = [client(session, c) for c in range(clients)]
        if on_tick:
            tasks.append(ticker())
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {**percentiles(latencies), "throughput_rps": len(latencies) / elapsed, "errors": errors,
            "clients": clients, "seconds": elapsed}


def start_server(registry: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("w") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "bgmrec"), "serve", "--registry", str(registry), "--port", str(port),
             "--threads", str(threads)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300) -> float:
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"bgmrec serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def catalog_scaling(registry: Path, dataset: Path, sizes: list[int], queries: int, noise: float) -> list[dict]:
    """Top-10 latency at each catalog size: exact (plain; MMR 0.7 + 10 exclusions) and with the coarse index.

    Catalogs past the real one are synthetic but shaped like it: real catalog embeddings drawn with replacement
    plus Gaussian noise (norm ~ `noise`), renormalised. Queries are real video embeddings from the model.
    Recall@10 of the indexed search is measured against exact search on the same catalog.
    """
    from bgmrec.catalog import MusicCatalog, load_catalog
    from bgmrec.data.contract import load_dataset
    from bgmrec.models.base import l2_normalise
    from bgmrec.registry import ModelRegistry

    base = load_catalog(registry / "catalog.parquet").embeddings
    model = ModelRegistry(registry).load_production()
    vv = load_dataset(dataset).video_vectors
    rows = np.random.default_rng(1).choice(len(vv), queries, replace=False)
    q = model.embed_videos(vv.visual[rows], vv.text[rows], vv.has_text[rows])
    rng = np.random.default_rng(0)
    out = []
    for size in sizes:
        dim = base.shape[1]
        embeddings = np.empty((size, dim), np.float32)  # filled in chunks to keep the peak memory near 2 copies
        for start in range(0, size, 100_000):
            stop = min(size, start + 100_000)
            if size <= len(base):
                chunk = base[start:stop].copy()
            else:
                chunk = base[rng.integers(0, len(base), stop - start)]
                chunk += rng.standard_normal(chunk.shape, dtype=np.float32) * np.float32(noise / np.sqrt(dim))
            embeddings[start:stop] = l2_normalise(chunk)
        ids = np.array([f"m{i}" for i in range(size)], dtype=object)
        catalog = MusicCatalog(ids, ids, embeddings, rng.zipf(1.5, size).astype(float), np.zeros(size, bool))
        del embeddings
        row: dict = {"catalog_size": size, "dim": dim, "matrix_mb": catalog.embeddings.nbytes / 2**20}
        for name, kwargs in (("exact", {}), ("exact_mmr_exclude", {"mmr_lambda": 0.7, "exclude": list(ids[:10])})):
            catalog.top_k(q[0], 10, **kwargs)
            latencies = []
            for i in range(queries):
                t = time.perf_counter()
                catalog.top_k(q[i], 10, **kwargs)
                latencies.append(time.perf_counter() - t)
            row[name] = percentiles(latencies)
        truth = [set(catalog.ids[catalog.top_k(q[i], 10).index]) for i in range(queries)]
        t = time.perf_counter()
        indexed = catalog.with_index()
        row["index_build_seconds"] = time.perf_counter() - t
        del catalog
        row["index_lists"] = len(indexed.index.centroids)
        row["index_probe"] = indexed.index.n_probe
        latencies, hits = [], 0
        for i in range(queries):
            t = time.perf_counter()
            got = indexed.top_k(q[i], 10)
            latencies.append(time.perf_counter() - t)
            hits += len(set(indexed.ids[got.index]) & truth[i])
        row["indexed"] = {**percentiles(latencies), "recall_at_10_vs_exact": hits / (10 * queries)}
        out.append(row)
        print(json.dumps(row), flush=True)
        del indexed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("/tmp/sim_tt"), help="the catalog's music")
    parser.add_argument("--train-dataset", type=Path, default=Path("/tmp/sim_sample"),
                        help="dataset the benchmark model is trained on, and the query videos (same widths)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bgmrec-bench"), help="registry and logs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--level-seconds", type=float, default=15.0, help="duration of each concurrency level")
    parser.add_argument("--max-requests", type=int, default=20000, help="request cap per level")
    parser.add_argument("--memory-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=4, help="request threads of the service")
    parser.add_argument("--sizes", default="3000,100000,1000000")
    parser.add_argument("--parts", default="http,scaling",
                        help="http and/or scaling; results are merged into an existing --out file")
    parser.add_argument("--scaling-queries", type=int, default=30)
    parser.add_argument("--scaling-noise", type=float, default=0.5, help="noise norm of synthetic catalog rows")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    parts = set(args.parts.split(","))
    result: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    result.update({"machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
                               "python": platform.python_version()}, "targets": TARGETS})
    registry = prepare_registry(args.dataset, args.train_dataset, args.workdir, args.train_seconds)
    if "http" in parts:
        run_http(args, registry, result)
    if "scaling" in parts:
        result["catalog_scaling"] = catalog_scaling(registry, args.train_dataset,
                                                    [int(s) for s in args.sizes.split(",")],
                                                    args.scaling_queries, args.scaling_noise)
    result["against_targets"] = against_targets(result)
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["against_targets"], indent=2))
    print(f"wrote {args.out}")


def run_http(args: argparse.Namespace, registry: Path, result: dict) -> None:
    """Raw in-process scoring, then `bgmrec serve` under 1, 8 and 32 clients and a sustained memory run."""
    bodies = request_bodies(args.train_dataset, 500)
    result["raw_in_process"] = raw_scoring(registry, bodies)
    print("raw", json.dumps(result["raw_in_process"]), flush=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(registry, port, args.threads, args.workdir / "serve.log")
    try:
        result["startup_seconds"] = wait_ready(url, process)
        server = psutil.Process(process.pid)
        asyncio.run(closed_loop(url, bodies, 4, 3.0, 500))  # warm-up
        levels = []
        for clients in (1, 8, 32):
            cpu_before, load_before = tree_cpu_seconds(server), os.getloadavg()[0]
            level = asyncio.run(closed_loop(url, bodies, clients, args.level_seconds, args.max_requests))
            level["server_cpu_ms_per_request"] = (tree_cpu_seconds(server) - cpu_before) / max(level["n"], 1) * 1e3
            level["load_avg_1m"] = [load_before, os.getloadavg()[0]]
            levels.append(level)
            print("http", json.dumps(level), flush=True)
        result["http_recommend_by_features"] = levels
        samples = [tree_rss_mb(server)]
        sustained = asyncio.run(closed_loop(url, bodies, 32, args.memory_seconds, 10**9,
                                            on_tick=lambda: samples.append(tree_rss_mb(server))))
        samples.append(tree_rss_mb(server))
        result["memory"] = {"rss_mb_before": samples[0], "rss_mb_after": samples[-1], "rss_mb_samples": samples,
                            "sustained_run": sustained}
        print("memory", json.dumps(result["memory"]), flush=True)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def against_targets(result: dict) -> dict:
    """The figures the issue sets targets for (TARGETS), from whatever parts were run."""
    out: dict = {}
    if "http_recommend_by_features" in result:
        top, one = result["http_recommend_by_features"][-1], result["http_recommend_by_features"][0]
        raw = result["raw_in_process"]
        samples = result["memory"]["rss_mb_samples"]
        out.update({
            "p99_ms_3k_32_clients": top["p99_ms"],
            "throughput_rps_3k_32_clients": top["throughput_rps"],
            "http_1_client_p50_over_raw_p50": one["p50_ms"] / raw["p50_ms"],
            "raw_throughput_over_http_32_clients": raw["throughput_rps"] / top["throughput_rps"],
            "memory_growth_mb_over_sustained_run": samples[-1] - samples[0],
        })
        if "server_cpu_ms_per_request" in top and "cpu_ms_per_request" in raw:
            # what the figures would be on 2 dedicated cores, from CPU time rather than wall time (the machine is
            # shared): 2 cores / server CPU per request, and server CPU over raw scoring CPU per request
            out["throughput_ceiling_rps_2_cores_from_cpu"] = 2000.0 / top["server_cpu_ms_per_request"]
            out["http_cpu_over_raw_cpu_per_request"] = top["server_cpu_ms_per_request"] / raw["cpu_ms_per_request"]
    for row in result.get("catalog_scaling", []):
        if row["catalog_size"] == 1_000_000:
            out["p99_ms_1m_top_k_exact"] = row["exact"]["p99_ms"]
            out["p99_ms_1m_top_k_indexed"] = row["indexed"]["p99_ms"]
            out["recall_at_10_1m_indexed"] = row["indexed"]["recall_at_10_vs_exact"]
    return out


if __name__ == "__main__":
    main()
