"""Serving benchmark: `bgmrec serve`'s /recommend_by_features against the framework floor, and what BentoML's
request timeout and the garbage collector's settings cost that floor.

    .venv/bin/python bench/bench_serving.py --quick --out bench/results/serving.json   # 10 s per level
    .venv/bin/python bench/bench_serving.py --workdir /tmp/bgmrec-serving-bench         # full: 30 s per level

In one run:
1. A registry in WORKDIR (reused when it is there): the tt150k-shaped simulated dataset (3,003 music) at the media
   extractors' widths (visual 1280, text 512), a CMVAE (its default 512-d embeddings) trained one epoch (capped by
   --train-seconds: speed, not quality, is measured), promoted, and its catalog; and the request bodies, one query
   each, from the dataset's videos (about a third without text, as in the dataset).
2. `bgmrec serve` and the two no-op floors of bench/noop_service.py (plain `@bentoml.api` and `batchable=True`,
   the same input validation), each on a free loopback port in its own process group, with the same settings
   (timeout, threads, access log, `gc.freeze()` after start-up) and driven by the same load generator with the
   same bodies: every body checked once (200, one list per query) and a warm-up, then closed loop at 1 and at 32
   concurrent clients, the three services taking turns (--rounds turns per level, the order rotating) so that
   a change in the machine's load reaches all of them alike; p50 and p99 are the median over the turns,
   throughput and CPU per request the totals. 1 client is measured before any concurrent load, and once more
   right after each service's last 32-client turn (BentoML's batching dispatcher remembers a burst's waits).
   The load generator is `wrk` (one thread, a Lua script cycling through the bodies) when installed, else a
   Python asyncio client on raw keep-alive sockets.
3. The timeout question, on the plain floor: BentoML's default `traffic.timeout` (60 s) and shorter ones, alone,
   with `gc.freeze()` after start-up and/or raised `gc.set_threshold` values (--timeout-settings); at each,
   1 client, then a sustained 32-client run with the server's RSS read before, every 5 s and after; one server
   after the other (the timers need sustained load), in --passes passes of alternating order, averaged.
Writes one JSON file. Never fails on timing: the targets (real route vs the batched floor at 32 clients: p50 at
most 1.3x, throughput at least 0.8x) are reported as met or not met.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import numpy as np
import psutil
import typer

ROOT = Path(__file__).resolve().parents[1]
REQUEST_PATH = "/recommend_by_features"
RECORDED_ENV = ("BGMREC_TIMEOUT_S", "BGMREC_FLOOR_GC_FREEZE", "BGMREC_FLOOR_GC_THRESHOLD", "BGMREC_THREADS",
                "BGMREC_ACCESS_LOG", "BGMREC_MAX_BATCH", "BGMREC_MAX_BATCH_LATENCY_MS")
EXTRACTOR_WIDTHS = {"visual": 1280, "text": 512}
TARGETS = {"p50_vs_floor_max": 1.3, "rps_vs_floor_min": 0.8}
# The floor the targets compare against: the real route is batchable, so is this floor.
TARGET_FLOOR = "floor_batched"


# Options the serving benchmarks share (bench_soak.py too): where they work, the load's bodies, the model's training.
WorkdirOption = Annotated[
    Path | None,
    typer.Option(help="Where the dataset, registry, bodies and server logs go; a registry there is reused. "
                      "Default: a temporary directory, removed at the end."),
]
BodiesOption = Annotated[int, typer.Option(help="How many request bodies (videos) the load cycles through.")]
TrainSecondsOption = Annotated[float, typer.Option(help="Cap on the benchmark model's one training epoch, in seconds.")]

app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


# -- the registry and the request bodies -------------------------------------------------------------------


def prepare_registry(workdir: Path, train_seconds: float) -> Path:
    """WORKDIR/registry with a promoted CMVAE and its catalog of the tt150k-shaped dataset's 3,003 music, built
    once (the dataset in WORKDIR/dataset)."""
    from bgmrec.registry import ModelRegistry

    registry = ModelRegistry(workdir / "registry")
    if registry.production() is not None and (registry.root / "catalog.parquet").exists():
        return registry.root
    from bgmrec.data.contract import load_dataset
    from bgmrec.data.simulate import simulate
    from bgmrec.data.splits import make_split
    from bgmrec.models import create_model
    from bgmrec.models.base import TrainingData
    from bgmrec.steps import build_catalog_step
    from bgmrec.train import fit

    dataset = workdir / "dataset"
    if not (dataset / "music.parquet").exists():
        simulate("tt150k", 0, dataset, dims=EXTRACTOR_WIDTHS)
    ds = load_dataset(dataset)
    model = create_model("cmvae", {"epochs": 1, "max_seconds": train_seconds, "progress": False})
    fit(model, TrainingData(ds, make_split(ds, "weak", 0)))
    checkpoint = model.save(workdir / "cmvae.pt")
    registry.promote(registry.register(checkpoint, {"note": "benchmark model, one epoch"}, "cmvae"))
    build_catalog_step(dataset, registry.root)
    return registry.root


def request_bodies(workdir: Path, n: int) -> list[bytes]:
    """n /recommend_by_features bodies (one query each) of the dataset's videos, saved as WORKDIR/bodies.jsonl."""
    saved = workdir / f"bodies-{n}.jsonl"
    if not saved.exists():
        from bgmrec.data.contract import load_dataset

        vv = load_dataset(workdir / "dataset").video_vectors
        rows = np.random.default_rng(0).choice(len(vv), n, replace=False)
        lines = [json.dumps({"queries": [{
            "visual": vv.visual[i].tolist(), "text": vv.text[i].tolist() if vv.has_text[i] else None, "k": 10,
            "exclude": [], "mmr_lambda": 1.0, "popularity_debias": 0.0}]}) for i in rows]
        saved.write_text("".join(line + "\n" for line in lines))
    return [line.encode() for line in saved.read_text().splitlines()]


# -- servers -----------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A service started in its own process group on a loopback port."""

    name: str
    process: subprocess.Popen
    port: int
    env: dict[str, str]
    startup_seconds: float = 0.0
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.process.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def processes(self) -> list[psutil.Process]:
        return [self.ps, *self.ps.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_mb(self) -> float:
        total = 0
        for p in self.processes():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(timeout_s: float, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "BGMREC_TIMEOUT_S": f"{timeout_s:g}", **extra}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # BentoML sets its own
    return env


def start(name: str, command: list[str], env: dict[str, str], port: int, log: Path) -> Server:
    # BentoML keeps Prometheus' multiprocess files in $BENTOML_HOME and clears them when a server starts: each
    # server gets its own, so starting one does not reset another's /metrics (or another user's server's)
    home = log.parent / "bentoml_home" / name
    home.mkdir(parents=True, exist_ok=True)
    env = {**env, "BENTOML_HOME": str(home)}
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    # the settings that differ between the servers, recorded with the results (never the whole environment)
    server = Server(name, process, port, {k: env[k] for k in RECORDED_ENV if k in env})
    try:
        server.startup_seconds = wait_ready(server, log)
    except BaseException:
        server.stop()
        raise
    return server


def start_real(registry: Path, timeout_s: float, log_dir: Path) -> Server:
    """`bgmrec serve` of the registry (the real service; it calls gc.freeze() after start-up)."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "bgmrec"), "serve", "--registry", str(registry),
               "--port", str(port)]
    return start("real", command, server_env(timeout_s, {}), port, log_dir / "real.log")


def start_floor(name: str, service: str, timeout_s: float, gc_freeze: bool, gc_threshold: str,
                log_dir: Path) -> Server:
    """A no-op floor of bench/noop_service.py (`PlainFloor` or `BatchedFloor`) with `bentoml serve`."""
    port = free_port()
    command = [sys.executable, "-m", "bentoml", "serve", f"noop_service:{service}",
               "--working-dir", str(ROOT / "bench"), "--host", "127.0.0.1", "--port", str(port)]
    env = server_env(timeout_s, {"BGMREC_FLOOR_GC_FREEZE": str(gc_freeze).lower(),
                                 "BGMREC_FLOOR_GC_THRESHOLD": gc_threshold})
    return start(name, command, env, port, log_dir / f"{name}.log")


def wait_ready(server: Server, log: Path, timeout: float = 300) -> float:
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}; see {log}")
        if "Application startup failed" in log.read_text(errors="replace"):
            raise RuntimeError(f"{server.name} failed to start; see {log}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{server.name} not ready after {timeout} s; see {log}")


def check_answers(server: Server, bodies: list[bytes], items: int) -> None:
    """Every body once: 200 and one list of `items` music for the one query (10 for the real route, 0 for a
    floor), so the load runs below measure working requests."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i, body in enumerate(bodies):
            answer = client.post(REQUEST_PATH, content=body, headers={"Content-Type": "application/json"})
            if answer.status_code != 200:
                raise RuntimeError(f"{server.name}: body {i} answered {answer.status_code}: {answer.text[:300]}")
            lists = answer.json()
            if len(lists) != 1 or len(lists[0]["items"]) != items:
                raise RuntimeError(f"{server.name}: body {i}: expected one list of {items} music, got "
                                   f"{answer.text[:300]}")


def batch_counts(server: Server) -> tuple[float, float]:
    """(queries, model calls) of the real service's batches so far, from /metrics (bgmrec_batch_size)."""
    import httpx

    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = [re.search(rf"^bgmrec_batch_size_{name} ([0-9.e+]+)$", text, re.MULTILINE) for name in ("sum", "count")]
    return tuple(float(m.group(1)) if m else 0.0 for m in found)


# -- load generators ---------------------------------------------------------------------------------------

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


def wrk_closed_loop(url: str, bodies_file: Path, clients: int, seconds: float,
                    on_tick: Callable[[], None] | None) -> tuple[dict, float]:
    """wrk, one thread, `clients` keep-alive connections; returns its figures and its CPU seconds. wrk counts
    answers with a status of 400 or more as status errors (no 1xx/3xx can come from these routes)."""
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
            time.sleep(0.1)
            if on_tick and time.perf_counter() >= next_tick:
                on_tick()
                next_tick += 5
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if process.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({process.returncode}): {process.stderr.read().decode()[-500:]}")
        summary = json.loads(out.read_text())
    lat, errors = summary["latency_us"], summary["errors"]
    return {"p50_ms": lat["p50"] / 1e3, "p90_ms": lat["p90"] / 1e3, "p99_ms": lat["p99"] / 1e3,
            "p999_ms": lat["p999"] / 1e3, "max_ms": lat["max"] / 1e3, "mean_ms": lat["mean"] / 1e3,
            "n": summary["requests"], "rps": summary["requests"] / (summary["duration_us"] / 1e6),
            "non_200": errors["status"],
            "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
            "seconds": summary["duration_us"] / 1e6}, \
        (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


async def python_closed_loop(port: int, bodies: list[bytes], clients: int, seconds: float,
                             on_tick: Callable[[], None] | None) -> dict:
    """`clients` raw keep-alive sockets, each sending its next request when the previous answer arrived (raw
    sockets: a fraction of an HTTP library's CPU per request, which matters when the client shares 2 cores)."""
    requests = [(f"POST {REQUEST_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in bodies]
    latencies: list[float] = []
    non_200 = 0
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal non_200
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(CONTENT_LENGTH.search(head).group(1)))
            latencies.append(time.perf_counter() - t)
            non_200 += int(head[9:12]) != 200
            i += clients
        writer.close()

    async def ticker() -> None:
        while time.perf_counter() + 5 < deadline:
            await asyncio.sleep(5)
            on_tick()

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)), *([ticker()] if on_tick else []))
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1e3
    return {**{f"p{q:g}_ms".replace(".", ""): float(np.percentile(ms, q)) for q in (50, 90, 99, 99.9)},
            "max_ms": float(ms.max()), "mean_ms": float(ms.mean()), "n": len(ms), "rps": len(ms) / elapsed,
            "non_200": non_200, "socket_errors": 0, "seconds": elapsed}


@dataclass
class LoadGenerator:
    """The one load generator every service is driven with."""

    use_wrk: bool
    bodies: list[bytes]
    bodies_file: Path

    @property
    def name(self) -> str:
        return "wrk" if self.use_wrk else "python"

    def run(self, server: Server, clients: int, seconds: float,
            on_tick: Callable[[], None] | None = None) -> dict:
        """One closed-loop level, with the server's CPU per request and the CPU share of other processes."""
        cpu_before, busy_before, load_before = server.cpu_seconds(), busy_cpu_seconds(), os.getloadavg()[0]
        if self.use_wrk:
            level, client_cpu = wrk_closed_loop(server.url, self.bodies_file, clients, seconds, on_tick)
        else:
            started = time.process_time()
            level = asyncio.run(python_closed_loop(server.port, self.bodies, clients, seconds, on_tick))
            client_cpu = time.process_time() - started
        server_cpu = server.cpu_seconds() - cpu_before
        n = max(level["n"], 1)
        other = busy_cpu_seconds() - busy_before - server_cpu - client_cpu
        return {"clients": clients, **level, "server_cpu_s": server_cpu, "client_cpu_s": client_cpu,
                "server_cpu_ms_per_request": server_cpu / n * 1e3,
                "client_cpu_ms_per_request": client_cpu / n * 1e3,
                # CPU the machine spent on anything but the server and the load generator (other users' jobs)
                "other_cpu_share": max(0.0, other) / (level["seconds"] * (os.cpu_count() or 1)),
                "load_avg_1m": [load_before, os.getloadavg()[0]]}


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes), since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


# -- the runs ----------------------------------------------------------------------------------------------

LEVELS = {"clients_1": 1, "clients_32": 32}


def prepare(server: Server, load: LoadGenerator, items: int) -> None:
    """Check every body's answer, then warm up at 1 client (2 s)."""
    check_answers(server, load.bodies, items)
    load.run(server, 1, 2.0)


def combined(chunks: list[dict]) -> dict:
    """One level measured in several chunks: counts, CPU and throughput summed over them; p50 / p90 / p99 the
    median of the chunks' (each chunk's own list kept under `rounds`)."""
    n = sum(c["n"] for c in chunks)
    seconds = sum(c["seconds"] for c in chunks)
    server_cpu, client_cpu = sum(c["server_cpu_s"] for c in chunks), sum(c["client_cpu_s"] for c in chunks)
    return {
        "clients": chunks[0]["clients"], "n": n, "seconds": seconds, "rps": n / seconds,
        **{key: float(np.median([c[key] for c in chunks])) for key in ("p50_ms", "p90_ms", "p99_ms")},
        "max_ms": max(c["max_ms"] for c in chunks), "mean_ms": sum(c["mean_ms"] * c["n"] for c in chunks) / max(n, 1),
        "non_200": sum(c["non_200"] for c in chunks), "socket_errors": sum(c["socket_errors"] for c in chunks),
        "server_cpu_ms_per_request": server_cpu / max(n, 1) * 1e3,
        "client_cpu_ms_per_request": client_cpu / max(n, 1) * 1e3,
        "other_cpu_share": sum(c["other_cpu_share"] * c["seconds"] for c in chunks) / seconds,
        "load_avg_1m": [chunks[0]["load_avg_1m"][0], chunks[-1]["load_avg_1m"][1]],
        "rounds": [{key: c[key] for key in ("p50_ms", "p99_ms", "rps", "other_cpu_share")} for c in chunks],
    }


def compare_services(servers: dict[str, Server], load: LoadGenerator, level_seconds: float, rounds: int) -> dict:
    """The services driven in turn, `rounds` turns per level of level_seconds / rounds each (the order rotating
    every round), so that a change in the machine's load reaches all of them alike: first 1 client, before any
    concurrent load; then, after a 3 s warm-up at 32 clients, 32 clients; and in the last round, right after
    each service's 32-client turn, 1 client again (`clients_1_after_32`: BentoML's batching dispatcher holds a
    lone request for about the average wait it has seen, which a burst of concurrent requests raises)."""
    chunks: dict[str, dict[str, list[dict]]] = {
        name: {"clients_1": [], "clients_32": [], "clients_1_after_32": []} for name in servers}
    batches = [0.0, 0.0]
    names = list(servers)

    def measure(name: str, level: str, clients: int, r: int) -> None:
        server = servers[name]
        before = batch_counts(server) if name == "real" and level == "clients_32" else None
        chunks[name][level].append(load.run(server, clients, level_seconds / rounds))
        if before is not None:
            batches[:] = [total + after - b for total, after, b in zip(batches, batch_counts(server), before,
                                                                       strict=True)]
        print(name, level, f"round {r + 1}", json.dumps(
            {k: round(chunks[name][level][-1][k], 2) for k in ("p50_ms", "p99_ms", "rps", "non_200")}), flush=True)

    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            measure(name, "clients_1", 1, r)
    for server in servers.values():
        load.run(server, 32, 3.0)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            measure(name, "clients_32", 32, r)
            if r == rounds - 1:
                measure(name, "clients_1_after_32", 1, r)
    result = {name: {"startup_seconds": server.startup_seconds, "env": server.env, "rss_mb_at_end": server.rss_mb(),
                     **{level: combined(levels) for level, levels in chunks[name].items()}}
              for name, server in servers.items()}
    if "real" in result:
        result["real"]["clients_32"]["mean_batch_size"] = batches[0] / batches[1] if batches[1] else None
    return result


def sustained(server: Server, load: LoadGenerator, level_seconds: float, sustained_seconds: float) -> dict:
    """1 client for level_seconds, then 32 clients for sustained_seconds with the RSS read before, every 5 s and
    after."""
    result: dict = {"clients_1": load.run(server, 1, level_seconds)}
    samples = [server.rss_mb()]
    result["clients_32"] = load.run(server, 32, sustained_seconds, on_tick=lambda: samples.append(server.rss_mb()))
    samples.append(server.rss_mb())
    result["rss_mb_samples_32_clients"] = samples
    print(server.name, json.dumps({level: {k: round(result[level][k], 2) for k in ("p50_ms", "p99_ms", "rps")}
                                   for level in LEVELS}), f"rss {samples[0]:.0f} -> {samples[-1]:.0f} MB", flush=True)
    return result


def timeout_settings(specs: str, gc_threshold: str) -> dict[str, dict]:
    """The floor settings of the timeout question, from specs like "60,60+freeze,10+freeze+threshold": the
    traffic.timeout in seconds, `gc.freeze()` after start-up, `gc.set_threshold(gc_threshold)`."""
    settings = {}
    for spec in specs.split(","):
        timeout, *options = spec.strip().split("+")
        if not timeout or set(options) - {"freeze", "threshold"}:
            raise typer.BadParameter(f"timeout setting {spec!r}: expected SECONDS[+freeze][+threshold]")
        name = f"timeout_{float(timeout):g}s" + "".join(f"_gc_{option}" for option in options)
        settings[name] = {"timeout_s": float(timeout), "gc_freeze": "freeze" in options,
                          "gc_threshold": gc_threshold if "threshold" in options else ""}
    return settings


def timeout_study(settings: dict[str, dict], load: LoadGenerator, level_seconds: float, sustained_seconds: float,
                  passes: int, logs: Path) -> dict:
    """The plain floor at each setting, one server after the other (the timers need sustained load), in
    `passes` passes whose order alternates (forward, reverse, ...) so a steady change in the machine's load
    cancels out of the mean."""
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    for p in range(passes):
        for name in list(settings)[::1 if p % 2 == 0 else -1]:
            setting = settings[name]
            server = start_floor(f"floor_plain_{name}", "PlainFloor", setting["timeout_s"], setting["gc_freeze"],
                                 setting["gc_threshold"], logs)
            try:
                prepare(server, load, 0)
                runs[name].append({"pass": p + 1, **sustained(server, load, level_seconds, sustained_seconds)})
            finally:
                server.stop()
    return {name: {**settings[name], "passes": runs[name]} for name in settings}


def setting_row(name: str, passes: list[dict]) -> dict:
    """One setting's figures, the mean over its passes."""
    def mean(get: Callable[[dict], float]) -> float:
        return float(np.mean([get(run) for run in passes]))

    def growth(run: dict, since: float) -> float:
        samples = run["rss_mb_samples_32_clients"]
        return samples[-1] - samples[int(len(samples) * since)]

    return {
        "setting": name,
        **{f"{key}_{level}": mean(lambda run, k=key, lv=level: run[lv][k])
           for level in LEVELS for key in ("p50_ms", "p99_ms", "rps")},
        "p99_over_p50_clients_32": mean(lambda run: run["clients_32"]["p99_ms"] / run["clients_32"]["p50_ms"]),
        "rss_mb_after_sustained": mean(lambda run: run["rss_mb_samples_32_clients"][-1]),
        "rss_growth_mb": mean(lambda run: growth(run, 0.0)),
        # near 0 once the timers retained per request are bounded (the run outlasted the timeout)
        "rss_growth_mb_second_half": mean(lambda run: growth(run, 0.5)),
        "other_cpu_share": mean(lambda run: run["clients_32"]["other_cpu_share"]),
        "non_200": sum(run[level]["non_200"] + run[level]["socket_errors"] for run in passes for level in LEVELS),
    }


def timeout_reading(study: dict) -> dict:
    """Per setting, the mean over passes; the setting with the lowest 32-client p99, overall and among those
    whose memory stopped growing (second-half growth under 2 MB)."""
    rows = [setting_row(name, run["passes"]) for name, run in study.items()]
    bounded = [row for row in rows if row["rss_growth_mb_second_half"] < 2.0]
    return {"reference": rows[0]["setting"],
            "lowest_p99_clients_32": min(rows, key=lambda r: r["p99_ms_clients_32"])["setting"],
            "lowest_p99_clients_32_bounded_memory":
                min(bounded, key=lambda r: r["p99_ms_clients_32"])["setting"] if bounded else None,
            "rows": rows}


def summary_of(levels: dict, floor: dict) -> dict:
    """The real route's figures beside a floor's, and their ratios, at one client level."""
    return {"p50_ms": levels["p50_ms"], "p99_ms": levels["p99_ms"], "rps": levels["rps"],
            "floor_p50_ms": floor["p50_ms"], "floor_p99_ms": floor["p99_ms"], "floor_rps": floor["rps"],
            "p50_vs_floor": levels["p50_ms"] / floor["p50_ms"], "p99_vs_floor": levels["p99_ms"] / floor["p99_ms"],
            "rps_vs_floor": levels["rps"] / floor["rps"],
            "p50_vs_floor_by_round": [a["p50_ms"] / b["p50_ms"] for a, b in zip(levels["rounds"], floor["rounds"],
                                                                               strict=True)],
            "rps_vs_floor_by_round": [a["rps"] / b["rps"] for a, b in zip(levels["rounds"], floor["rounds"],
                                                                         strict=True)]}


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="10 s per load level instead of 30 s.")] = False,
    out: Annotated[Path, typer.Option(help="The JSON results file.")] = ROOT / "bench" / "results" / "serving.json",
    workdir: WorkdirOption = None,
    bodies: BodiesOption = 48,
    train_seconds: TrainSecondsOption = 120.0,
    timeout_s: Annotated[
        float | None,
        typer.Option(help="traffic.timeout (BGMREC_TIMEOUT_S) of the real service and the floors it is compared "
                          "with. Default: serving.timeout_s of the configuration."),
    ] = None,
    rounds: Annotated[
        int, typer.Option(min=1, help="Turns each service gets per level in the comparison (the level's time split).")
    ] = 3,
    timeout_settings_specs: Annotated[
        str,
        typer.Option("--timeout-settings",
                     help="The floor settings of the timeout question, comma-separated, each "
                          "SECONDS[+freeze][+threshold]: traffic.timeout, gc.freeze() after start-up, "
                          "gc.set_threshold(--gc-threshold). The first is the reference (BentoML's default)."),
    ] = "60,60+freeze,60+threshold,10,10+freeze,10+freeze+threshold,5+freeze",
    gc_threshold: Annotated[
        str, typer.Option(help="gc.set_threshold values of the settings with +threshold.")
    ] = "10000,50,100",
    sustained_seconds: Annotated[
        float, typer.Option(help="Length of each timeout setting's 32-client run, after which RSS is read.")
    ] = 30.0,
    passes: Annotated[
        int, typer.Option(min=0, help="Passes over the timeout settings, alternately forward and reverse (0: none).")
    ] = 2,
    wrk: Annotated[bool, typer.Option(help="Use wrk when installed (else the Python client).")] = True,
) -> None:
    """Measure /recommend_by_features of `bgmrec serve` against the no-op floors, and the timeout/GC settings."""
    from bgmrec.config import load_config

    level_seconds = 10.0 if quick else 30.0
    study_settings = timeout_settings(timeout_settings_specs, gc_threshold)
    settings = load_config().serving.with_env(os.environ)
    timeout_s = settings.timeout_s if timeout_s is None else timeout_s
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = (workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        registry = prepare_registry(work, train_seconds)
        body_list = request_bodies(work, bodies)
        load = LoadGenerator(wrk and shutil.which("wrk") is not None, body_list, work / f"bodies-{bodies}.jsonl")
        logs = work / "logs"
        logs.mkdir(exist_ok=True)

        load_before_comparison = os.getloadavg()
        servers: dict[str, Server] = {}
        try:
            # the real service's gc.freeze() after start-up is in serving/service.py; the floors do the same
            servers["real"] = start_real(registry, timeout_s, logs)
            servers["floor_batched"] = start_floor("floor_batched", "BatchedFloor", timeout_s, True, "", logs)
            servers["floor_plain"] = start_floor("floor_plain", "PlainFloor", timeout_s, True, "", logs)
            for name, server in servers.items():
                prepare(server, load, 10 if name == "real" else 0)
            services = compare_services(servers, load, level_seconds, rounds)
        finally:
            for server in servers.values():
                server.stop()
        load_after_comparison = os.getloadavg()
        study = timeout_study(study_settings, load, level_seconds, sustained_seconds, passes, logs) if passes else {}
    load_end = os.getloadavg()

    real, target_floor = services["real"], services[TARGET_FLOOR]
    top = summary_of(real["clients_32"], target_floor["clients_32"])
    study_runs = [(f"{name}.pass_{run['pass']}", run) for name, setting in study.items() for run in setting["passes"]]
    result: dict = {
        **top,
        "clients_1": summary_of(real["clients_1"], target_floor["clients_1"]),
        "target_floor": TARGET_FLOOR,
        "clients_1_after_32": summary_of(real["clients_1_after_32"], target_floor["clients_1_after_32"]),
        "vs_plain_floor": {level: summary_of(real[level], services["floor_plain"][level])
                           for level in (*LEVELS, "clients_1_after_32")},
        "non_200": {f"{name}.{level}": run[level]["non_200"]
                    for name, run in [*services.items(), *study_runs] for level in run if level.startswith("clients")},
        "socket_errors": {f"{name}.{level}": run[level]["socket_errors"] for name, run in [*services.items(),
                          *study_runs] for level in run if level.startswith("clients")},
        "server_cpu_ms_per_request": {f"{name}.{level}": run[level]["server_cpu_ms_per_request"]
                                      for name, run in services.items() for level in run
                                      if level.startswith("clients")},
        "mean_batch_size_32_clients": real["clients_32"].get("mean_batch_size"),
        "targets": {
            **TARGETS, "floor": TARGET_FLOOR, "clients": 32,
            "p50_met": top["p50_vs_floor"] <= TARGETS["p50_vs_floor_max"],
            "rps_met": top["rps_vs_floor"] >= TARGETS["rps_vs_floor_min"],
        },
        "services": services,
        "timeout_study": {"floor": "floor_plain", "settings": study, **(timeout_reading(study) if study else {})},
        "run": {
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "quick": quick, "level_seconds": level_seconds, "rounds": rounds, "sustained_seconds": sustained_seconds,
            "passes": passes, "load_generator": load.name, "bodies": len(body_list),
            "body_bytes_mean": float(np.mean([len(b) for b in body_list])),
            "timeout_s": timeout_s, "threads": settings.threads, "access_log": settings.access_log,
            "max_batch": settings.max_batch, "max_batch_latency_ms": settings.max_batch_latency_ms,
        },
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "bentoml": version("bentoml"), "uvloop": version("uvloop"), "pydantic": version("pydantic"),
            "load_avg_at_start": load_start, "load_avg_before_comparison": load_before_comparison,
            "load_avg_after_comparison": load_after_comparison, "load_avg_at_end": load_end,
        },
    }
    result["non_200_total"] = sum(result["non_200"].values()) + sum(result["socket_errors"].values())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("p50_ms", "p99_ms", "rps", "floor_p50_ms", "floor_p99_ms", "floor_rps",
                                            "p50_vs_floor", "rps_vs_floor", "non_200_total", "targets")}, indent=2))
    print(f"load average at end: {load_end}; wrote {out}")


if __name__ == "__main__":
    app()
