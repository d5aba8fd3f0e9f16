"""What the catalog benchmarks share: a synthetic clustered catalog, the measures, and how busy the machine was.

`clustered_music` draws a catalog clustered the way a music catalog is (genres > artists > tracks) and queries from
the same clusters; `measure_search` times single queries and their recall@20 against exact search;
`other_cpu_share` records the CPU the rest of the machine used during a measurement (2 shared cores: a figure
taken while others ran shows it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

TARGETS = {"p99_ms": 2.0, "recall_at_20": 0.98, "load_seconds": 15.0}
K = 20
POOL = max(5 * K, 100)  # the pool MusicCatalog fetches from its index for k=20 (bgmrec.catalog, INDEX_MIN_POOL)


def clustered_music(n: int, dim: int, seed: int, genres_per_million: int = 100, tracks_per_artist: int = 20,
                    artist_scale: float = 1.0, noise_scale: float = 1.5) -> tuple[np.ndarray, Callable]:
    """n unit-norm rows x = normalise(genre + artist_scale·artist + noise_scale·noise), each part a Gaussian of
    norm ~1: genres of ~10,000 tracks, artists of ~`tracks_per_artist` (many small clusters), the noise 1.5 times
    either. A track's cosine to its artist's other tracks is then ~0.47, to the rest of its genre ~0.24, and the
    noise on a cosine (~0.035) blurs the genre level: the top 20 of a query is its artist's tracks and, for the
    smaller artists, the closest of its genre's 10,000, spread over many inverted lists and graph regions.
    (Genres of 1,000 tracks made it easy: a few probed lists held the whole neighbourhood; noise 2.0 made the top
    20 mostly noise.) Returns the rows and a function drawing `m` queries (new tracks of random artists) from the
    same clusters."""
    rng = np.random.default_rng(seed)
    n_genres = max(2, round(n * genres_per_million / 1_000_000))
    n_artists = max(n_genres, n // tracks_per_artist)
    genre_of_artist = rng.integers(0, n_genres, n_artists)
    scale = np.float32(1 / np.sqrt(dim))
    genres = rng.standard_normal((n_genres, dim), dtype=np.float32) * scale
    artists = rng.standard_normal((n_artists, dim), dtype=np.float32) * scale * np.float32(artist_scale)

    def draw(artist: np.ndarray, chunk_rng: np.random.Generator) -> np.ndarray:
        x = genres[genre_of_artist[artist]] + artists[artist]
        x += chunk_rng.standard_normal(x.shape, dtype=np.float32) * scale * np.float32(noise_scale)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    out = np.empty((n, dim), np.float32)
    artist_of_row = rng.integers(0, n_artists, n)
    for start in range(0, n, 65536):
        out[start:start + 65536] = draw(artist_of_row[start:start + 65536], rng)

    def queries(m: int, query_seed: int) -> np.ndarray:
        query_rng = np.random.default_rng(query_seed)
        return draw(query_rng.integers(0, n_artists, m), query_rng)

    return out, queries


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4), "queries": len(ms)}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (rows of row numbers; -1 in `found` never matches)."""
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def measure_search(search: Callable[[np.ndarray], np.ndarray], x: np.ndarray, q: np.ndarray,
                   truth: np.ndarray) -> dict[str, Any]:
    """Single-query latency of `search` (a query row -> the index's pool of row numbers, best first) plus the exact
    re-scoring of the pool, and its raw and served recall@K."""
    for i in range(min(20, len(q))):
        search(q[i:i + 1])
    seconds, raw, served = [], [], []
    for i in range(len(q)):
        started = time.perf_counter()
        pool = search(q[i:i + 1])
        pool = pool[pool >= 0]
        top = pool[np.argsort(-(x[pool] @ q[i]), kind="stable")[:K]]
        seconds.append(time.perf_counter() - started)
        raw.append(pool[:K])
        served.append(top)
    return {**percentiles(seconds), "recall_at_20_raw": round(recall(raw, truth), 4),
            "recall_at_20": round(recall(served, truth), 4)}


@contextlib.contextmanager
def timed(into: dict[str, Any], key: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    into[key] = round(time.perf_counter() - started, 3)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def file_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def fastest_meeting_target(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    meeting = [r for r in rows if r["recall_at_20"] >= TARGETS["recall_at_20"]]
    return min(meeting, key=lambda r: r["p99_ms"]) if meeting else None


@contextlib.contextmanager
def other_cpu_share(into: dict[str, Any], key: str = "other_cpu_share") -> Iterator[None]:
    """into[key]: the share of the machine's CPU (all cores) that other processes used during the block."""
    me = psutil.Process()

    def busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def own() -> float:
        times = me.cpu_times()
        return times.user + times.system + times.children_user + times.children_system

    busy_before, own_before, started = busy(), own(), time.perf_counter()
    yield
    other = busy() - busy_before - (own() - own_before)
    into[key] = round(max(0.0, other) / ((time.perf_counter() - started) * (os.cpu_count() or 1)), 3)
