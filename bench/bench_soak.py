"""Soak benchmark: `bgmrec serve` under a steady closed-loop load for minutes, watching errors, latency per minute
and the memory of the server's process tree.

    .venv/bin/python bench/bench_soak.py --quick                               # 1 minute, 32 clients
    flock /tmp/bgmrec-cpu.lock .venv/bin/python bench/bench_soak.py --minutes 10 --clients 32

In one run:
1. The registry and request bodies of bench/bench_serving.py (the tt150k-shaped simulated catalog of 3,003 music
   at the media extractors' widths, a one-epoch CMVAE, one query per body), built in WORKDIR or reused from it.
2. `bgmrec serve` on it (its own process group, a free loopback port), every body checked once (200, one list of
   10 music), a 5 s warm-up.
3. --clients keep-alive connections posting /recommend_by_features in a closed loop for --minutes (raw asyncio
   sockets, the Python load generator of bench_serving.py, here with a per-request timestamp, status and
   latency). A connection that breaks or times out (30 s) is counted as an error and opened again.
4. Every --sample-seconds the RSS of the server's process tree (the `bgmrec serve` process and every child: the
   BentoML worker) is read with psutil.
Reported: errors (non-200 answers + broken connections; must be 0), p50 / p99 / throughput per minute, and the
RSS slope in MB/min (least squares over the samples; also over the second half only, after the warm-up growth).
Writes one JSON file; exits 1 when any request failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import (  # noqa: E402 - the sibling benchmark's registry, bodies and server handling
    REQUEST_PATH,
    ROOT,
    BodiesOption,
    Server,
    TrainSecondsOption,
    WorkdirOption,
    check_answers,
    prepare_registry,
    request_bodies,
    start_real,
)

CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
REQUEST_TIMEOUT_S = 30.0

app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


@dataclass
class SoakLog:
    """What the load generator saw: one row per answered request, and every failure."""

    started: float
    seconds: list[float] = field(default_factory=list)  # when each request was sent, since `started`
    latency_ms: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, what broke)


async def closed_loop(port: int, bodies: list[bytes], clients: int, seconds: float, log: SoakLog) -> None:
    """`clients` keep-alive sockets, each sending its next request when the previous answer arrived."""
    requests = [(f"POST {REQUEST_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in bodies]
    deadline = log.started + seconds

    async def client(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                log.failures.append((time.perf_counter() - log.started, f"connect: {exc!r}"))
                await asyncio.sleep(1.0)
                continue
            try:
                while time.perf_counter() < deadline:
                    sent = time.perf_counter()
                    writer.write(requests[i % len(requests)])
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
                    length = CONTENT_LENGTH.search(head)
                    if length is None:
                        raise ValueError(f"answer without Content-Length: {head[:80]!r}")
                    await asyncio.wait_for(reader.readexactly(int(length.group(1))), REQUEST_TIMEOUT_S)
                    log.seconds.append(sent - log.started)
                    log.latency_ms.append((time.perf_counter() - sent) * 1e3)
                    log.status.append(int(head[9:12]))
                    i += clients
            except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
                log.failures.append((time.perf_counter() - log.started, f"request: {exc!r}"))
            finally:
                writer.close()

    await asyncio.gather(*(client(c) for c in range(clients)))


async def sample_rss(server: Server, seconds: float, every: float, log: SoakLog,
                     samples: list[tuple[float, float]]) -> None:
    deadline = log.started + seconds
    while True:
        samples.append((time.perf_counter() - log.started, server.rss_mb()))
        if time.perf_counter() + every > deadline:
            return
        await asyncio.sleep(every)


async def soak(server: Server, bodies: list[bytes], clients: int, seconds: float,
               every: float) -> tuple[SoakLog, list[tuple[float, float]]]:
    log, samples = SoakLog(time.perf_counter()), []
    await asyncio.gather(closed_loop(server.port, bodies, clients, seconds, log),
                         sample_rss(server, seconds, every, log, samples))
    samples.append((time.perf_counter() - log.started, server.rss_mb()))
    return log, samples


def per_minute(log: SoakLog) -> list[dict]:
    """p50 / p99 / throughput / errors of the requests sent in each minute."""
    sent, latency, status = np.asarray(log.seconds), np.asarray(log.latency_ms), np.asarray(log.status)
    failed_at = np.asarray([t for t, _ in log.failures])
    minutes = int(np.ceil(max(sent.max(initial=0.0), failed_at.max(initial=0.0)) / 60.0)) or 1
    rows = []
    for m in range(minutes):
        rows_of = (sent >= 60 * m) & (sent < 60 * (m + 1))
        window = latency[rows_of]
        errors = int((status[rows_of] != 200).sum()) + int(((failed_at >= 60 * m) & (failed_at < 60 * (m + 1))).sum())
        span = min(60.0, max(sent.max(initial=0.0) - 60 * m, 1e-9))
        rows.append({"minute": m + 1, "n": int(rows_of.sum()), "rps": float(rows_of.sum() / span), "errors": errors,
                     "p50_ms": float(np.percentile(window, 50)) if len(window) else None,
                     "p99_ms": float(np.percentile(window, 99)) if len(window) else None})
    return rows


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of RSS over time, MB per minute."""
    if len(samples) < 3:
        return None
    t, rss = np.asarray(samples).T
    return float(np.polyfit(t / 60.0, rss, 1)[0])


@app.command()
def main(
    minutes: Annotated[float, typer.Option(min=0.1, help="How long the load runs.")] = 10.0,
    clients: Annotated[int, typer.Option(min=1, help="Concurrent closed-loop clients.")] = 32,
    quick: Annotated[bool, typer.Option(help="1 minute instead of --minutes.")] = False,
    out: Annotated[Path, typer.Option(help="The JSON results file.")] = ROOT / "bench" / "results" / "soak.json",
    workdir: WorkdirOption = None,
    bodies: BodiesOption = 48,
    train_seconds: TrainSecondsOption = 120.0,
    sample_seconds: Annotated[float, typer.Option(min=0.5, help="RSS sampling interval.")] = 5.0,
) -> None:
    """Run `bgmrec serve` under --clients concurrent clients for --minutes; report errors, latency per minute and
    the RSS slope of the server's process tree."""
    from bgmrec.config import load_config

    seconds = 60.0 if quick else minutes * 60.0
    settings = load_config().serving.with_env(os.environ)
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = (workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        registry = prepare_registry(work, train_seconds)
        body_list = request_bodies(work, bodies)
        logs = work / "logs"
        logs.mkdir(exist_ok=True)
        server = start_real(registry, settings.timeout_s, logs)
        try:
            check_answers(server, body_list, 10)
            asyncio.run(soak(server, body_list, clients, 5.0, sample_seconds))  # warm-up, not reported
            rss_before = server.rss_mb()
            log, samples = asyncio.run(soak(server, body_list, clients, seconds, sample_seconds))
            alive = server.process.poll() is None
        finally:
            server.stop()
    load_end = os.getloadavg()

    minutes_rows = per_minute(log)
    latency = np.asarray(log.latency_ms)
    non_200 = int((np.asarray(log.status) != 200).sum())
    half = [s for s in samples if s[0] >= seconds / 2]
    result = {
        "errors": non_200 + len(log.failures),
        "non_200": non_200,
        "broken_connections": len(log.failures),
        "failures": [f"{t:.1f}s {what}" for t, what in log.failures[:20]],
        "requests": len(latency),
        "rps": len(latency) / seconds,
        "p50_ms": float(np.percentile(latency, 50)),
        "p99_ms": float(np.percentile(latency, 99)),
        "max_ms": float(latency.max()),
        "per_minute": minutes_rows,
        "rss_mb": {"before": rss_before, "first": samples[0][1], "last": samples[-1][1],
                   "max": max(r for _, r in samples),
                   "slope_mb_per_min": slope_mb_per_min(samples),
                   "slope_mb_per_min_second_half": slope_mb_per_min(half),
                   "samples": [[round(t, 1), round(r, 1)] for t, r in samples]},
        "server_alive_at_end": alive,
        "run": {
            "command": shlex.join([Path(sys.executable).name, *sys.argv]), "seconds": seconds, "clients": clients,
            "bodies": len(body_list), "sample_seconds": sample_seconds, "timeout_s": settings.timeout_s,
            "threads": settings.threads, "max_batch": settings.max_batch, "access_log": settings.access_log,
            "load_generator": "python (asyncio raw sockets)",
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "bentoml": version("bentoml"), "load_avg_at_start": load_start, "load_avg_at_end": load_end},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("errors", "requests", "rps", "p50_ms", "p99_ms")}))
    for row in minutes_rows:
        print(json.dumps(row))
    print(json.dumps({k: v for k, v in result["rss_mb"].items() if k != "samples"}))
    print(f"load average at end: {load_end}; wrote {out}")
    if result["errors"] or not alive:
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
