"""The framework floor of /recommend_by_features: what BentoML alone costs per request, without model or catalog.

Two services, each with one route `/recommend_by_features` that takes exactly the real route's input
(`queries: list[FeaturesQuery]`, the same strict validation and vector widths) and answers every query at once
with an empty recommendation list (the real route's answer type, no items):
- `PlainFloor`: a plain `@bentoml.api`;
- `BatchedFloor`: `batchable=True` with the real route's batch size and latency limit (adaptive batching), the
  floor the real route is compared against.
Both are configured like serving/service.py from the same settings (bgmrec.config `serving:`, BGMREC_<FIELD>
variables): 1 worker, `serving.threads`, `traffic.timeout` = `serving.timeout_s`, `serving.access_log`. Reading
them loads the configuration as the real service does, which imports torch (the configuration checks its model
sections): the floor's heap at start-up is of the real service's order, which matters to the GC settings.

    BGMREC_TIMEOUT_S=5 bentoml serve noop_service:PlainFloor --working-dir bench --port 3001

Garbage-collector settings, for measuring their effect (bench/bench_serving.py sets them):
BGMREC_FLOOR_GC_FREEZE=true calls `gc.freeze()` after start-up as the real service does;
BGMREC_FLOOR_GC_THRESHOLD=700,10,10 calls `gc.set_threshold(700, 10, 10)` first.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from typing import Annotated

import bentoml
from pydantic import Field

from bgmrec.config import load_config
from serving.schemas import (
    EXAMPLE_TEXT_WIDTH,
    EXAMPLE_VISUAL_WIDTH,
    MAX_QUERIES,
    FeaturesQuery,
    RecommendationList,
    ServedLimits,
)

# The real service's settings, read the same way (the configuration file $BGMREC_PARAMS, then BGMREC_<FIELD>).
SETTINGS = load_config().serving.with_env(os.environ)
SERVICE_CONFIG = {
    "workers": 1,
    "threads": SETTINGS.threads,
    "traffic": {"timeout": SETTINGS.timeout_s},
    "logging": {"access": {"enabled": SETTINGS.access_log,
                           "skip_paths": ["/metrics", "/healthz", "/livez", "/readyz"]}},
}
Queries = Annotated[list[FeaturesQuery], Field(min_length=1, max_length=MAX_QUERIES)]


def gc_settings(environ: Mapping[str, str]) -> tuple[tuple[int, ...] | None, bool]:
    """(thresholds or None, freeze) from BGMREC_FLOOR_GC_THRESHOLD and BGMREC_FLOOR_GC_FREEZE."""
    raw = environ.get("BGMREC_FLOOR_GC_THRESHOLD", "").strip()
    try:
        thresholds = tuple(int(part) for part in raw.split(",")) if raw else None
    except ValueError:
        raise ValueError(f"BGMREC_FLOOR_GC_THRESHOLD={raw!r}: expected 1 to 3 comma-separated integers, "
                         "e.g. 700,10,10") from None
    if thresholds is not None and not 1 <= len(thresholds) <= 3:
        raise ValueError(f"BGMREC_FLOOR_GC_THRESHOLD={raw!r}: expected 1 to 3 comma-separated integers")
    return thresholds, environ.get("BGMREC_FLOOR_GC_FREEZE", "false").strip().lower() in ("1", "true", "yes")


class FloorSetup:
    """Start-up shared by both floors: the request validation the real service sets (the media extractors'
    vector widths, `serving.max_k`), then the garbage-collector settings asked for."""

    def __init__(self) -> None:
        ServedLimits.set({"visual": EXAMPLE_VISUAL_WIDTH, "text": EXAMPLE_TEXT_WIDTH}, SETTINGS.max_k)
        thresholds, freeze = gc_settings(os.environ)
        if thresholds is not None:
            gc.set_threshold(*thresholds)
        if freeze:
            gc.freeze()


def empty_lists(queries: list[FeaturesQuery]) -> list[RecommendationList]:
    return [RecommendationList.model_construct(items=[], k=q.k, catalog_version=0, model_version="floor")
            for q in queries]


@bentoml.service(name="bgmrec-floor", **SERVICE_CONFIG)
class PlainFloor(FloorSetup):
    """The floor of a plain `@bentoml.api` route with the real route's input."""

    @bentoml.api
    def recommend_by_features(self, queries: Queries) -> list[RecommendationList]:
        """An empty recommendation list for each query."""
        return empty_lists(queries)


@bentoml.service(name="bgmrec-floor-batched", **SERVICE_CONFIG)
class BatchedFloor(FloorSetup):
    """The floor of the real route as it is declared: adaptive batching with the same limits."""

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.max_batch, max_latency_ms=SETTINGS.max_batch_latency_ms)
    def recommend_by_features(self, queries: Queries) -> list[RecommendationList]:
        """An empty recommendation list for each query of the batch."""
        return empty_lists(queries)
