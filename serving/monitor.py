"""Diversity of what the service recommends, over a sliding window of served lists, as Prometheus gauges.

Every served list is recorded (catalog rows). A background thread recomputes the window's diversity with
`bgmrec.metrics.diversity` (catalog coverage, Gini of exposure, normalised entropy, share of new music, mean
popularity) at most once per `interval` seconds and sets the gauges, so the request path only appends to a deque.
Intra-list diversity is scored once per list, when the thread first sees it, and averaged over the window: the
thread then holds the GIL for about a millisecond per refresh instead of ~20 ms for re-scoring the whole window
(which showed up in the request latency tail). The served model is `bgmrec_model_info` (info-style, set on every
swap by `set_served_model`). Errors are counted by endpoint and kind
(`bgmrec_request_errors_total`); request counts and latencies are BentoML's own `bentoml_service_request_*` metrics.

Gauges use multiprocess_mode="livemostrecent": BentoML serves /metrics in Prometheus multiprocess mode, and with
several workers the most recently updated live worker's window is reported.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from bgmrec.catalog import MusicCatalog
from bgmrec.metrics import diversity

DIVERSITY_FIELDS = ("coverage", "gini", "entropy", "intra_list_diversity", "new_share", "mean_popularity")

DIVERSITY_GAUGES = {
    name: Gauge(
        f"bgmrec_diversity_{name}",
        f"{name.replace('_', ' ')} of the music recommended over the sliding window of served lists",
        multiprocess_mode="livemostrecent",
    )
    for name in DIVERSITY_FIELDS
}
WINDOW_LISTS = Gauge(
    "bgmrec_diversity_window_lists", "served lists in the diversity window", multiprocess_mode="livemostrecent"
)
CATALOG_SIZE = Gauge("bgmrec_catalog_size", "music in the served catalog", multiprocess_mode="livemostrecent")
CATALOG_VERSION = Gauge(
    "bgmrec_catalog_version", "version of the served catalog (+1 per refresh)", multiprocess_mode="livemostrecent"
)
REQUEST_ERRORS = Counter(
    "bgmrec_request_errors", "requests rejected by the recommender, by endpoint and kind", ["endpoint", "kind"]
)
RECOMMENDATIONS = Counter("bgmrec_recommendations", "recommendation lists served", ["endpoint"])
# Info-style: 1 for the model this worker serves now, 0 for each one it served before (Prometheus multiprocess
# files keep a label set once written, so a swapped-out version is set to 0 rather than removed). Query `== 1`.
MODEL_INFO = Gauge(
    "bgmrec_model_info", "the registry version and model this replica serves (1) or served before (0)",
    ["model_version", "model"], multiprocess_mode="livemostrecent",
)
BATCH_SIZE = Histogram(
    "bgmrec_batch_size", "requests answered by one model call (micro-batching of concurrent requests)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


def count_error(endpoint: str, kind: str) -> None:
    """Count one rejected request (kind: wrong_length, not_finite, k_out_of_range, unknown_video, ...)."""
    REQUEST_ERRORS.labels(endpoint=endpoint, kind=kind).inc()


_served_lock = threading.Lock()
_served: tuple[str, str] | None = None


def set_served_model(model_version: str, model: str) -> None:
    """Export the model now served (`bgmrec_model_info{model_version, model} 1`); the one before goes to 0.
    Called on every swap of the served state."""
    global _served
    with _served_lock:
        if _served is not None and _served != (model_version, model):
            MODEL_INFO.labels(model_version=_served[0], model=_served[1]).set(0)
        MODEL_INFO.labels(model_version=model_version, model=model).set(1)
        _served = (model_version, model)


class DiversityMonitor:
    """A sliding window of the last `window` served lists and the diversity gauges computed from it."""

    def __init__(self, catalog: MusicCatalog, window: int = 1000, interval: float = 1.0):
        self.window = window
        self.interval = interval
        self._lists: deque[np.ndarray] = deque(maxlen=window)
        self._intra_list: deque[float] = deque(maxlen=window)  # of each list in _lists, in order; NaN for 1 item
        self._unscored: list[np.ndarray] = []
        self._catalog = catalog
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: dict[str, float] = {}
        self.set_catalog(catalog)

    def start(self) -> None:
        """Start the background thread that refreshes the gauges (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="diversity-monitor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()

    def set_catalog(self, catalog: MusicCatalog, appended: bool = True) -> None:
        """Follow a catalog swap; rows of an append-only refresh keep their meaning, other swaps reset the window."""
        with self._lock:
            if not appended:
                self._lists.clear()
                self._intra_list.clear()
                self._unscored.clear()
            self._catalog = catalog
        CATALOG_SIZE.set(len(catalog))
        CATALOG_VERSION.set(catalog.version)
        self._dirty.set()

    def record(self, rows: np.ndarray) -> None:
        """Add one served list (catalog rows, best first)."""
        if len(rows):
            rows = np.asarray(rows, dtype=np.int64)
            with self._lock:
                self._lists.append(rows)
                self._unscored.append(rows)
            self._dirty.set()

    def update(self) -> dict[str, float]:
        """Recompute the window's diversity and set the gauges; returns the values."""
        with self._lock:
            lists = list(self._lists)
            catalog = self._catalog
            unscored, self._unscored = self._unscored, []
        scores = intra_list_diversity(unscored, catalog.embeddings)
        with self._lock:
            self._intra_list.extend(scores)
            intra_list = np.asarray(self._intra_list)
        values = window_diversity(lists, catalog, intra_list)
        for name, gauge in DIVERSITY_GAUGES.items():
            if name in values:
                gauge.set(values[name])
        WINDOW_LISTS.set(len(lists))
        self.last = values
        return values

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            self.update()
            time.sleep(self.interval)


def window_diversity(
    lists: list[np.ndarray], catalog: MusicCatalog, intra_list: np.ndarray | None = None
) -> dict[str, float]:
    """`bgmrec.metrics.diversity` over lists of varying length.

    Exposure metrics count slots, so they are computed on all slots at once (a (slots, 1) array). Intra-list
    diversity is the mean over lists (of 2+ items) of each list's score (`intra_list_diversity`); pass the
    scores already computed, or they are computed here.
    """
    if not lists:
        return {}
    slots = np.concatenate(lists)
    values = diversity(slots[:, None], len(catalog), popularity=catalog.popularity, is_new=catalog.is_new)
    if intra_list is None:
        intra_list = intra_list_diversity(lists, catalog.embeddings)
    scored = intra_list[np.isfinite(intra_list)]
    if len(scored):
        values["intra_list_diversity"] = float(scored.mean())
    return values


def intra_list_diversity(lists: list[np.ndarray], embeddings: np.ndarray) -> np.ndarray:
    """Each list's intra-list diversity as `bgmrec.metrics.diversity` defines it (1 − mean pairwise cosine of
    the listed music), NaN for lists of fewer than 2 items. The sum of pairwise cosines of unit vectors e_i is
    (|Σ e_i|² − Σ |e_i|²) / 2 per pair order, so no k × k similarity matrix is needed."""
    out = np.full(len(lists), np.nan)
    lengths = np.asarray([len(row) for row in lists])
    for length in np.unique(lengths[lengths > 1]):
        members = np.flatnonzero(lengths == length)
        for chunk in np.array_split(members, -(-len(members) // 64)):  # 64 lists at a time stay in cache
            listed = embeddings[np.stack([lists[i] for i in chunk])]
            listed = listed / np.maximum(np.linalg.norm(listed, axis=2, keepdims=True), 1e-12)
            off_diagonal = np.square(listed.sum(axis=1)).sum(axis=1) - np.square(listed).sum(axis=(1, 2))
            out[chunk] = 1.0 - off_diagonal / (length * (length - 1))
    return out
