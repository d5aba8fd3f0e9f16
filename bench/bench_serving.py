"""Serving benchmark: `bgmrec serve` over real HTTP (loopback) beside raw in-process scoring, memory, catalog scaling.

    .venv/bin/python bench/bench_serving.py --dataset /tmp/sim_tt --workdir /tmp/bgmrec-bench

1. Builds a registry in WORKDIR: a CMVAE (the paper's defaults, 512-d embeddings) trained briefly on
   TRAIN_DATASET, promoted, and the catalog of DATASET's music (3,003 clips for the tt150k-shaped simulation).
   An existing WORKDIR registry is reused.
2. Raw in-process scoring per request: `model.embed_videos` of one video + `catalog.top_k(k=10)`, one at a time
   (the issue's reference), and the same in batches of 32 videos with `catalog.top_k_many` (what the server does
   under 32 clients).
3. Starts `bgmrec serve` and drives recommend_by_features closed-loop at 1, 8 and 32 concurrent clients (each
   client sends its next request when the previous answer arrives) for a duration per level: p50/p99 latency,
   throughput, server CPU per request. The load generator is `wrk` (C, one thread; `apt-get install wrk`) with
   a Lua script cycling through the request bodies; without wrk, a Python asyncio client on raw sockets.
4. Open loop: requests sent at a fixed arrival rate (default 400 req/s) over 32 keep-alive connections by a Python
   asyncio client; latency counted from each request's scheduled send time, so a stalled server is not hidden
   by the client waiting for it (no coordinated omission).
5. Memory: RSS of the server process tree before a sustained 32-client run and every 5 s during it.
6. Catalog-size scaling, in process: top-K latency at 3k, 100k and 1M music, exact and with the coarse index
   (and its recall@10 against exact), on catalogs grown from the real one (see `catalog_scaling`).
Writes bench/results/serving.json. Never fails on timing: targets are reported beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def machine_probe() -> dict:
    """How fast this machine is right now, for reading the other figures: a VM's neighbours can halve it with no
    load visible inside (one BLAS thread; best of 20). `gemm_ms`: a 32 x 512 by 512 x 3,003 float32 product (a
    micro-batch against the 3k catalog); `read_gb_s`: summing a 256 MB float32 array (memory bandwidth)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((32, 512), dtype=np.float32), rng.standard_normal((512, 3003), dtype=np.float32)
    big = np.ones(64 * 2**20, np.float32)
    with threadpool_limits(1, user_api="blas"):
        gemm = min(_seconds(lambda: a @ b) for _ in range(20))
        read = min(_seconds(big.sum) for _ in range(5))
    return {"gemm_ms": gemm * 1e3, "read_gb_s": big.nbytes / read / 1e9}


def _seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


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


def raw_scoring(registry: Path, bodies: list[dict], batch: int = 32) -> dict:
    """Per-request latency of embedding one video and ranking the catalog, in this process, one at a time; and the
    CPU per request of the same work done `batch` videos per model call."""
    import torch
    from threadpoolctl import threadpool_limits

    from bgmrec.catalog import load_catalog
    from bgmrec.registry import ModelRegistry

    torch.set_num_threads(1)  # as the service does (BGMREC_TORCH_THREADS, BGMREC_BLAS_THREADS)
    threadpool_limits(1, user_api="blas")
    model = ModelRegistry(registry).load_production()
    catalog = load_catalog(registry / "catalog.parquet")
    if len(catalog) >= int(os.environ.get("BGMREC_ANN_MIN_SIZE", 200_000)):  # the search the service uses
        catalog = catalog.with_index()
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
    one_at_a_time = {**percentiles(latencies), "throughput_rps": len(arrays) / elapsed, "catalog_size": len(catalog),
                     "embedding_dim": catalog.dim, "cpu_ms_per_request": cpu / len(arrays) * 1e3}
    # the same work in batches of `batch` videos, as the server does it under load: one embed_videos call and one
    # top_k_many (catalog reads shared by the batch) per batch
    text = np.stack([np.zeros(model.dims["text"], np.float32) if t is None else t for _, t in arrays])
    has_text = np.asarray([t is not None for _, t in arrays])
    visual = np.stack([v for v, _ in arrays])
    started, cpu_started = time.perf_counter(), time.process_time()
    for start in range(0, len(arrays), batch):
        sl = slice(start, start + batch)
        queries = model.embed_videos(visual[sl], text[sl], has_text[sl])
        n = len(queries)
        catalog.top_k_many(queries, [10] * n, [()] * n, [1.0] * n, [0.0] * n)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {**one_at_a_time, "batched": {"batch": batch, "throughput_rps": len(arrays) / elapsed,
                                         "cpu_ms_per_request": cpu / len(arrays) * 1e3}}


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


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes), since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def batch_counts(url: str) -> tuple[float, float]:
    """(requests, model calls) of the server's micro-batcher so far, from /metrics (bgmrec_batch_size)."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = [re.search(rf"^bgmrec_batch_size_{name} ([0-9.e+]+)$", text, re.MULTILINE) for name in ("sum", "count")]
    return tuple(float(m.group(1)) if m else 0.0 for m in found)


def tree_rss_mb(process: psutil.Process) -> float:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


REQUEST_PATH = "/recommend_by_features"

WRK_SCRIPT = r"""
-- wrk script: POST the request bodies of a file (one JSON document per line) in turn; write a JSON summary.
local bodies = {}
local counter = 0
init = function(args)
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = wrk.format("POST", args[2], {["Content-Type"] = "application/json"}, line)
  end
  counter = math.random(#bodies)
end
request = function()
  counter = counter % #bodies + 1
  return bodies[counter]
end
done = function(summary, latency, requests)
  local out = io.open(os.getenv("BGMREC_WRK_OUT"), "w")
  local e = summary.errors
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d}, "latency_us": {"mean": %f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}}',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency.mean,
    latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
  out:close()
end
"""


def http_request(host: str, port: int, body: bytes) -> bytes:
    """One HTTP/1.1 keep-alive POST of a JSON body to REQUEST_PATH, as bytes on the wire."""
    head = (f"POST {REQUEST_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection and read the whole answer; returns the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(int(CONTENT_LENGTH.search(head).group(1)))
    return int(head[9:12])


async def python_closed_loop(host: str, port: int, requests: list[bytes], clients: int, seconds: float,
                             on_tick=None) -> dict:
    """`clients` connections, each sending its next request when the previous answer arrives (raw sockets: a
    fraction of aiohttp's CPU per request, which matters when the client shares the server's 2 cores)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        i = offset
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            if await exchange(reader, writer, requests[i % len(requests)]) != 200:
                errors += 1
            latencies.append(time.perf_counter() - t)
            i += clients
        writer.close()

    async def ticker() -> None:
        while time.perf_counter() + 5 < deadline:
            await asyncio.sleep(5)
            on_tick()

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)), *([ticker()] if on_tick else []))
    elapsed = time.perf_counter() - started
    return {**percentiles(latencies), "throughput_rps": len(latencies) / elapsed, "errors": errors,
            "seconds": elapsed}


async def open_loop(host: str, port: int, requests: list[bytes], rate: float, seconds: float,
                    connections: int) -> dict:
    """Requests at a fixed arrival rate over a pool of keep-alive connections. A request waits for a free
    connection if all are busy; its latency runs from its scheduled send time (so queueing counts)."""
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    errors = 0

    async def one(request: bytes, scheduled: float) -> None:
        nonlocal errors
        connection = await idle.get()
        if await exchange(*connection, request) != 200:
            errors += 1
        latencies.append(time.perf_counter() - scheduled)
        idle.put_nowait(connection)

    # perf_counter, not loop.time(): uvloop's clock has 1 ms resolution
    total = int(rate * seconds)
    started = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(requests[i % len(requests)], scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not idle.empty():
        idle.get_nowait()[1].close()
    return {**percentiles(latencies), "offered_rps": rate, "throughput_rps": total / elapsed, "errors": errors,
            "connections": connections, "seconds": elapsed}


def run_python_loop(coroutine) -> tuple[dict, float]:
    """Run a load coroutine (uvloop when installed); returns its result and the client's CPU seconds."""
    cpu = time.process_time()
    try:
        import uvloop

        result = uvloop.run(coroutine)
    except ImportError:
        result = asyncio.run(coroutine)
    return result, time.process_time() - cpu


def wrk_closed_loop(url: str, bodies_file: Path, clients: int, seconds: float, on_tick=None) -> tuple[dict, float]:
    """wrk with one thread and `clients` connections (closed loop); returns its summary and its CPU seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        script, out = Path(tmp) / "post.lua", Path(tmp) / "out.json"
        script.write_text(WRK_SCRIPT)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        process = subprocess.Popen(
            ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script), url, "--",
             str(bodies_file), REQUEST_PATH],
            env={**os.environ, "BGMREC_WRK_OUT": str(out)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        next_tick = time.perf_counter() + 5
        while process.poll() is None:
            time.sleep(0.2)
            if on_tick and time.perf_counter() >= next_tick:
                on_tick()
                next_tick += 5
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if process.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({process.returncode}): {process.stderr.read().decode()[-500:]}")
        summary = json.loads(out.read_text())
    lat, errors = summary["latency_us"], summary["errors"]
    elapsed = summary["duration_us"] / 1e6
    return {"p50_ms": lat["p50"] / 1e3, "p90_ms": lat["p90"] / 1e3, "p99_ms": lat["p99"] / 1e3,
            "p999_ms": lat["p999"] / 1e3, "max_ms": lat["max"] / 1e3, "mean_ms": lat["mean"] / 1e3,
            "n": summary["requests"], "throughput_rps": summary["requests"] / elapsed,
            "errors": sum(errors.values()), "error_kinds": errors, "seconds": elapsed}, \
        (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def closed_loop(url: str, port: int, bodies: list[dict], bodies_file: Path, clients: int, seconds: float,
                use_wrk: bool, on_tick=None) -> dict:
    """One closed-loop level with wrk or the Python client; adds the client's CPU per request."""
    if use_wrk:
        level, client_cpu = wrk_closed_loop(url, bodies_file, clients, seconds, on_tick)
    else:
        requests = [http_request("127.0.0.1", port, json.dumps(b).encode()) for b in bodies]
        level, client_cpu = run_python_loop(python_closed_loop("127.0.0.1", port, requests, clients, seconds,
                                                               on_tick))
    return {**level, "clients": clients, "load_generator": "wrk" if use_wrk else "python",
            "client_cpu_ms_per_request": client_cpu / max(level["n"], 1) * 1e3}


def start_server(registry: Path, port: int, threads: int, log: Path, access_log: bool) -> subprocess.Popen:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "BGMREC_ACCESS_LOG": str(access_log).lower()}
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


def synthetic_catalog(base: np.ndarray, size: int, noise: float, rng: np.random.Generator):
    """A catalog of `size` music shaped like the real one: the real catalog's embeddings (all of them when size is
    not larger) drawn with replacement plus Gaussian noise of norm ~`noise`, renormalised; Zipf popularity."""
    from bgmrec.catalog import MusicCatalog
    from bgmrec.models.base import l2_normalise

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
    return MusicCatalog(ids, ids, embeddings, rng.zipf(1.5, size).astype(float), np.zeros(size, bool))


def registry_with_catalog_size(registry: Path, size: int, noise: float) -> Path:
    """A copy of the registry (same production model) whose catalog is a synthetic one of `size` music; reused."""
    from bgmrec.catalog import load_catalog

    sized = registry.parent / f"registry-{size}"
    if not (sized / "catalog.parquet").exists():
        shutil.copytree(registry, sized, dirs_exist_ok=True, ignore=shutil.ignore_patterns("catalog.parquet"))
        base = load_catalog(registry / "catalog.parquet").embeddings
        synthetic_catalog(base, size, noise, np.random.default_rng(0)).save(sized / "catalog.parquet")
    return sized


def batch_latency(catalog, q: np.ndarray, batch: int = 32, repeats: int = 5) -> dict:
    """Top-10 of `batch` queries at once (`top_k_many`, as the server does for a micro-batch): wall time per
    batch and per query, best and median of `repeats`."""
    n = min(batch, len(q))
    args = (q[:n], [10] * n, [()] * n, [1.0] * n, [0.0] * n)
    catalog.top_k_many(*args)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        catalog.top_k_many(*args)
        times.append(time.perf_counter() - t)
    return {"batch": n, "median_ms_per_batch": float(np.median(times) * 1e3),
            "median_ms_per_query": float(np.median(times) * 1e3 / n), "best_ms_per_query": min(times) * 1e3 / n}


def catalog_scaling(registry: Path, dataset: Path, sizes: list[int], queries: int, noise: float) -> list[dict]:
    """Top-10 latency at each catalog size: exact (plain; MMR 0.7 + 10 exclusions) and with the coarse index.

    Catalogs past the real one are synthetic but shaped like it: real catalog embeddings drawn with replacement
    plus Gaussian noise (norm ~ `noise`), renormalised. Queries are real video embeddings from the model.
    Recall@10 of the indexed search is measured against exact search on the same catalog.
    """
    from threadpoolctl import threadpool_limits

    from bgmrec.catalog import load_catalog
    from bgmrec.data.contract import load_dataset
    from bgmrec.registry import ModelRegistry

    threadpool_limits(1, user_api="blas")  # as the service does per request (BGMREC_BLAS_THREADS)
    base = load_catalog(registry / "catalog.parquet").embeddings
    model = ModelRegistry(registry).load_production()
    vv = load_dataset(dataset).video_vectors
    rows = np.random.default_rng(1).choice(len(vv), queries, replace=False)
    q = model.embed_videos(vv.visual[rows], vv.text[rows], vv.has_text[rows])
    rng = np.random.default_rng(0)
    out = []
    for size in sizes:
        catalog = synthetic_catalog(base, size, noise, rng)
        ids, dim = catalog.ids, catalog.dim
        row: dict = {"catalog_size": size, "dim": dim, "matrix_mb": catalog.embeddings.nbytes / 2**20}
        for name, kwargs in (("exact", {}), ("exact_mmr_exclude", {"mmr_lambda": 0.7, "exclude": list(ids[:10])})):
            catalog.top_k(q[0], 10, **kwargs)
            latencies = []
            for i in range(queries):
                t = time.perf_counter()
                catalog.top_k(q[i], 10, **kwargs)
                latencies.append(time.perf_counter() - t)
            row[name] = percentiles(latencies)
        row["exact_batch_32"] = batch_latency(catalog, q)
        truth = [set(catalog.ids[catalog.top_k(q[i], 10).index]) for i in range(queries)]
        t = time.perf_counter()
        indexed = catalog.with_index()
        row["index_build_seconds"] = time.perf_counter() - t
        del catalog
        row["index_lists"] = len(indexed.index.centroids)
        row["index_probe"] = indexed.index.n_probe
        n_lists = row["index_lists"]
        for name, n_probe in (("indexed", indexed.index.n_probe), ("indexed_probe_1_16", n_lists // 16),
                              ("indexed_probe_1_32", n_lists // 32), ("indexed_probe_1_64", n_lists // 64)):
            if n_probe < 1 or any(isinstance(v, dict) and v.get("n_probe") == n_probe for v in row.values()):
                continue
            indexed.top_k(q[0], 10, n_probe=n_probe)
            latencies, hits = [], 0
            for i in range(queries):
                t = time.perf_counter()
                got = indexed.top_k(q[i], 10, n_probe=n_probe)
                latencies.append(time.perf_counter() - t)
                hits += len(set(indexed.ids[got.index]) & truth[i])
            row[name] = {**percentiles(latencies), "n_probe": n_probe, "recall_at_10_vs_exact": hits / (10 * queries)}
        row["indexed_batch_32"] = batch_latency(indexed, q)
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
    parser.add_argument("--http-catalog-size", type=int, default=0,
                        help="serve a synthetic catalog of this many music (as in the scaling part) instead of "
                             "DATASET's; use another --out")
    parser.add_argument("--clients", default="1,8,32", help="closed-loop concurrency levels (comma-separated)")
    parser.add_argument("--open-rates", default="200,400,600,700",
                        help="open-loop arrival rates, req/s (comma-separated)")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator even if wrk is there")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                        help="the server's per-request access log (BGMREC_ACCESS_LOG)")
    parser.add_argument("--memory-seconds", type=float, default=60.0, help="sustained 32-client run (0: none)")
    parser.add_argument("--threads", type=int, default=4, help="request threads of the service")
    parser.add_argument("--sizes", default="3000,100000,1000000")
    parser.add_argument("--parts", default="http,scaling",
                        help="http and/or scaling; results are merged into an existing --out file")
    parser.add_argument("--scaling-queries", type=int, default=50)
    parser.add_argument("--scaling-noise", type=float, default=0.5, help="noise norm of synthetic catalog rows")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    parts = set(args.parts.split(","))
    result: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    result.update({"machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
                               "python": platform.python_version(), "probe_at_start": machine_probe()},
                   "targets": TARGETS})
    registry = prepare_registry(args.dataset, args.train_dataset, args.workdir, args.train_seconds)
    for part in parts:  # the load around each part (the top-level "machine" is the latest run's)
        result[f"machine_{part}"] = {"load_avg_at_start": os.getloadavg()}
    if "http" in parts:
        served = registry if not args.http_catalog_size else registry_with_catalog_size(
            registry, args.http_catalog_size, args.scaling_noise)
        run_http(args, served, result)
    if "scaling" in parts:
        rows = catalog_scaling(registry, args.train_dataset, [int(s) for s in args.sizes.split(",")],
                               args.scaling_queries, args.scaling_noise)
        measured = {row["catalog_size"] for row in rows}  # sizes run separately are merged into one table
        kept = [row for row in result.get("catalog_scaling", []) if row["catalog_size"] not in measured]
        result["catalog_scaling"] = sorted(kept + rows, key=lambda row: row["catalog_size"])
    result["against_targets"] = against_targets(result)
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    result["machine"]["probe_at_end"] = machine_probe()
    for part in parts:
        result[f"machine_{part}"]["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["against_targets"], indent=2))
    print(f"wrote {args.out}")


def run_http(args: argparse.Namespace, registry: Path, result: dict) -> None:
    """Raw in-process scoring, then `bgmrec serve` closed-loop at 1, 8 and 32 clients, open loop at fixed rates,
    and a sustained run for memory."""
    bodies = request_bodies(args.train_dataset, 500)
    result["raw_in_process"] = raw_scoring(registry, bodies)
    print("raw", json.dumps(result["raw_in_process"]), flush=True)
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    bodies_file = args.workdir / "bodies.jsonl"
    bodies_file.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    requests = [http_request("127.0.0.1", port, json.dumps(b).encode()) for b in bodies]
    process = start_server(registry, port, args.threads, args.workdir / "serve.log", args.access_log)
    try:
        result["startup_seconds"] = wait_ready(url, process)
        server = psutil.Process(process.pid)
        result["server"] = {"threads": args.threads, "access_log": args.access_log}
        closed_loop(url, port, bodies, bodies_file, 8, 3.0, use_wrk)  # warm-up

        def measured(run) -> dict:
            cpu_before, busy_before, load_before = tree_cpu_seconds(server), busy_cpu_seconds(), os.getloadavg()[0]
            batches_before = batch_counts(url)
            level = run()
            server_cpu = tree_cpu_seconds(server) - cpu_before
            level["server_cpu_ms_per_request"] = server_cpu / max(level["n"], 1) * 1e3
            # CPU used on the machine by anything but the server and the load generator (other users' jobs)
            client_cpu = level["client_cpu_ms_per_request"] * level["n"] / 1e3
            level["other_cpu_share"] = max(0.0, busy_cpu_seconds() - busy_before - server_cpu - client_cpu) / (
                level["seconds"] * (os.cpu_count() or 1))
            level["load_avg_1m"] = [load_before, os.getloadavg()[0]]
            batches = [after - before for after, before in zip(batch_counts(url), batches_before, strict=True)]
            level["mean_batch_size"] = batches[0] / batches[1] if batches[1] else None
            print("http", json.dumps(level), flush=True)
            return level

        result["http_recommend_by_features"] = [
            measured(lambda c=clients: closed_loop(url, port, bodies, bodies_file, c, args.level_seconds, use_wrk))
            for clients in (int(c) for c in args.clients.split(","))
        ]

        def open_level(rate: float) -> dict:
            level, client_cpu = run_python_loop(open_loop("127.0.0.1", port, requests, rate, args.level_seconds, 32))
            return {**level, "load_generator": "python", "client_cpu_ms_per_request": client_cpu / level["n"] * 1e3}

        result["http_open_loop"] = [measured(lambda r=float(rate): open_level(r))
                                    for rate in args.open_rates.split(",") if rate]
        result.pop("memory", None)  # never report a sustained run of an earlier invocation merged into --out
        if args.memory_seconds > 0:
            samples = [tree_rss_mb(server)]
            sustained = closed_loop(url, port, bodies, bodies_file, 32, args.memory_seconds, use_wrk,
                                    on_tick=lambda: samples.append(tree_rss_mb(server)))
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
    """The figures the issue sets targets for (TARGETS), from whatever parts were run.

    Closed loop at 32 clients answers "p99 and req/s at 32 concurrent clients" literally; by Little's law its p99
    can only be <= 25 ms at >= 32 / 0.025 = 1,280 req/s. The open-loop p99 at 400 req/s over 32 connections
    answers "p99 while serving 400 req/s". "Within 1.5x of raw" compares per-request cost: server CPU per request
    over raw in-process CPU per request (one at a time), and 1-client HTTP p50 over raw p50 (wall).
    """
    out: dict = {}
    if "http_recommend_by_features" in result:
        levels = {level["clients"]: level for level in result["http_recommend_by_features"]}
        raw = result["raw_in_process"]
        raw_cpu = raw["cpu_ms_per_request"]
        if 32 in levels:
            top = levels[32]
            out.update({
                "closed_loop_32_clients_p99_ms": top["p99_ms"],
                "closed_loop_32_clients_throughput_rps": top["throughput_rps"],
                "server_cpu_over_raw_cpu_per_request_32_clients": top["server_cpu_ms_per_request"] / raw_cpu,
                # wall time per request at 32 clients (1 / throughput) over raw one-at-a-time and raw batched by 32
                "http_32_clients_wall_per_request_over_raw": 1e3 / top["throughput_rps"] / raw["mean_ms"],
                "http_32_clients_wall_per_request_over_raw_batched": 1e3 / top["throughput_rps"] / (
                    1e3 / raw["batched"]["throughput_rps"]),
            })
        if 1 in levels:
            one = levels[1]
            out.update({
                "http_1_client_p50_over_raw_p50": one["p50_ms"] / raw["p50_ms"],
                "server_cpu_over_raw_cpu_per_request_1_client": one["server_cpu_ms_per_request"] / raw_cpu,
            })
        if "memory" in result:
            samples = result["memory"]["rss_mb_samples"]
            out.update({
                "memory_growth_mb_over_sustained_run": samples[-1] - samples[0],
                "memory_growth_mb_second_half": samples[-1] - samples[len(samples) // 2],
            })
        for level in result.get("http_open_loop", []):
            out[f"open_loop_{level['offered_rps']:g}_rps_p99_ms"] = level["p99_ms"]
            out[f"open_loop_{level['offered_rps']:g}_rps_achieved_rps"] = level["throughput_rps"]
    for row in result.get("catalog_scaling", []):
        if row["catalog_size"] == 1_000_000:
            for name, figures in row.items():
                if isinstance(figures, dict) and "p99_ms" in figures:
                    out[f"p99_ms_1m_top_k_{name}"] = figures["p99_ms"]
                if isinstance(figures, dict) and "recall_at_10_vs_exact" in figures:
                    out[f"recall_at_10_1m_{name}"] = figures["recall_at_10_vs_exact"]
    return out


if __name__ == "__main__":
    main()
