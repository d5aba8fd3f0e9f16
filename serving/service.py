"""The bgmrec BentoML service: background music for a short video, from the production model and the catalog.

Run it with `bgmrec serve --registry DIR [--feast-repo DIR] [--port N]`, or directly:
`BGMREC_REGISTRY=DIR bentoml serve service:BgmRecommender --working-dir serving --port 3000`.

Endpoints (POST, JSON keyed by parameter name; the upload endpoint takes multipart/form-data):
- /recommend_by_features  {"visual": [...], "text": [...] | null, "k": 10, "exclude": [...], "mmr_lambda": 1.0,
                           "popularity_debias": 0.0}; a plain ASGI endpoint answered in front of BentoML's
                          middleware stack (fastlane.py), concurrent requests micro-batched into one model call
                          and one catalog matrix product (docs/serving.md)
- /recommend_by_video     {"video_id": "v1", ...options}: vectors from the Feast online store
- /recommend_by_upload    form fields video (file), description, ...options: decoded and embedded with the
                          training extractors (bgmrec.media)
- /catalog                {"offset": 0, "limit": 100}: size, version and a page of the catalog
- /refresh_catalog        {"music": [{"music_id", "title", "audio_embedding", "audio_lld", "popularity"}]} adds
                          new music embedded by the production music encoder; {"reload": true} re-reads
                          REGISTRY/catalog.parquet. The new catalog replaces the old one in one reference swap.
Bad input gets a 4xx whose message names the problem; BentoML serves /healthz, /livez, /readyz and /metrics.

Configuration (environment, read when the service starts): BGMREC_REGISTRY, BGMREC_FEATURE_REPO, BGMREC_MAX_K,
BGMREC_MAX_UPLOAD_MB, BGMREC_MONITOR_WINDOW, BGMREC_MONITOR_INTERVAL_S, BGMREC_THREADS, BGMREC_TORCH_THREADS,
BGMREC_BLAS_THREADS, BGMREC_ACCESS_LOG, BGMREC_MAX_BATCH, BGMREC_TIMEOUT_S, BGMREC_MAX_BODY_MB (the features body),
BGMREC_FAST_LANE (false: the features route goes through BentoML's middlewares),
BGMREC_ANN_MIN_SIZE (catalogs this large get the coarse index of bgmrec.catalog);
the Bento argument `bento_model` (set by `bgmrec build-bento`, or BGMREC_BENTO_MODEL) makes the service load the
packaged BentoML model instead of the registry.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import orjson
from batching import MicroBatcher
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound
from fastlane import serve_in_front
from monitor import BATCH_SIZE, RECOMMENDATIONS, DiversityMonitor, count_error
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from bgmrec.catalog import CATALOG_FILE, CatalogError, MusicCatalog, load_catalog
from bgmrec.models.base import TorchRecommender

_current_service = bentoml.get_current_service  # resolved once: bentoml's module __getattr__ imports per call
# The BentoML model packaged in a built Bento: a build argument stored in the Bento (`bgmrec build-bento` sets it),
# or BGMREC_BENTO_MODEL. Empty when serving straight from a registry.
PACKAGED_MODEL = str(getattr(bentoml.use_arguments(), "bento_model", "") or os.environ.get("BGMREC_BENTO_MODEL", ""))
CHECKPOINT_FILE = "model.pt"

EXAMPLE_INPUT: dict[str, Any] = {
    "visual": [0.0] * 8,
    "text": None,
    "k": 10,
    "exclude": [],
    "mmr_lambda": 1.0,
    "popularity_debias": 0.0,
}


@dataclass(frozen=True)
class ServingSettings:
    """Knobs of the service, from the environment (the `bgmrec serve` options set them)."""

    registry: Path | None
    feature_repo: Path | None
    max_k: int = 100
    max_upload_bytes: int = 50 * 2**20
    max_body_bytes: int = 4 * 2**20
    monitor_window: int = 1000
    monitor_interval: float = 1.0
    torch_threads: int = 1
    blas_threads: int = 1
    ann_min_size: int = 200_000
    max_batch: int = 64

    @classmethod
    def from_env(cls) -> ServingSettings:
        env = os.environ
        return cls(
            registry=Path(env["BGMREC_REGISTRY"]) if env.get("BGMREC_REGISTRY") else None,
            feature_repo=Path(env["BGMREC_FEATURE_REPO"]) if env.get("BGMREC_FEATURE_REPO") else None,
            max_k=int(env.get("BGMREC_MAX_K", 100)),
            max_upload_bytes=int(float(env.get("BGMREC_MAX_UPLOAD_MB", 50)) * 2**20),
            max_body_bytes=int(float(env.get("BGMREC_MAX_BODY_MB", 4)) * 2**20),
            monitor_window=int(env.get("BGMREC_MONITOR_WINDOW", 1000)),
            monitor_interval=float(env.get("BGMREC_MONITOR_INTERVAL_S", 1.0)),
            torch_threads=int(env.get("BGMREC_TORCH_THREADS", 1)),
            blas_threads=int(env.get("BGMREC_BLAS_THREADS", 1)),
            ann_min_size=int(env.get("BGMREC_ANN_MIN_SIZE", 200_000)),
            max_batch=int(env.get("BGMREC_MAX_BATCH", 64)),
        )


class PayloadTooLarge(BentoMLException):
    """An upload over the size limit (HTTP 413)."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class RecommendedMusic(BaseModel):
    music_id: str
    title: str
    score: float = Field(description="cosine of the video and music embeddings")


class RecommendationList(BaseModel):
    items: list[RecommendedMusic]
    k: int
    catalog_version: int
    model_version: str


class FeaturesRequest(BaseModel):
    """The /recommend_by_features body (EXAMPLE_INPUT); vectors are checked against the model's widths after."""

    visual: list[float]
    text: list[float] | None = None
    k: int = 10
    exclude: list[str] = Field(default_factory=list)
    mmr_lambda: float = 1.0
    popularity_debias: float = 0.0


@dataclass(frozen=True)
class VideoQuery:
    """One checked recommendation request: a video's vectors (text None = no description) and the options."""

    endpoint: str
    visual: np.ndarray
    text: np.ndarray | None
    k: int
    exclude: list[str]
    mmr_lambda: float
    popularity_debias: float


class NewMusic(BaseModel):
    music_id: str
    title: str | None = None
    audio_embedding: list[float]
    audio_lld: list[float]
    popularity: float = 0.0


class _Rejected(InvalidArgument):
    """A 400 that also names the error kind counted in Prometheus."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _vector(name: str, values: list[float], dim: int) -> np.ndarray:
    """A finite float32 vector of length dim, or a 400 naming the field and the problem."""
    vector = np.asarray(values, dtype=np.float32)
    if vector.ndim != 1 or len(vector) != dim:
        raise _Rejected("wrong_length", f"{name} has {vector.size} values, expected {dim}")
    bad = np.flatnonzero(~np.isfinite(vector))
    if len(bad):
        raise _Rejected("not_finite", f"{name}[{int(bad[0])}] is {vector[bad[0]]}: values must be finite numbers")
    return vector


def _plain_features(data: Any) -> tuple | None:
    """The fields of a /recommend_by_features body that is exactly of the expected JSON types (vectors as float32
    arrays), or None for anything else, which `FeaturesRequest` then checks and words the error for."""
    if type(data) is not dict:
        return None
    visual, text = data.get("visual"), data.get("text")
    k, exclude = data.get("k", 10), data.get("exclude", [])
    mmr_lambda, debias = data.get("mmr_lambda", 1.0), data.get("popularity_debias", 0.0)
    if (type(visual) is not list or (text is not None and type(text) is not list) or type(k) is not int
            or type(exclude) is not list or any(type(m) is not str for m in exclude)
            or type(mmr_lambda) not in (int, float) or type(debias) not in (int, float)):
        return None
    try:
        visual = np.asarray(visual, dtype=np.float32)
        text = None if text is None else np.asarray(text, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        return None
    if visual.ndim != 1 or (text is not None and text.ndim != 1):
        return None
    return visual, text, k, exclude, float(mmr_lambda), float(debias)


class FeaturesEndpoint:
    """POST /recommend_by_features: top-k music for a video given as feature vectors (visual, and text unless the
    video has no description), as a plain ASGI app.

    The body is parsed with orjson straight into numpy, and concurrent requests share one model call and one
    catalog matrix product (`MicroBatcher`). It is reached two ways, with the same answers: through the fast lane
    in front of BentoML's middlewares (`fastlane.serve_in_front`, the default, which keeps BentoML's request
    metrics and access log), and through its BentoML mount (`bentoml.asgi_app`) when the lane is off.
    """

    path = "/recommend_by_features"

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["method"] != "POST":
            return await _send_json(send, 405, b'{"detail":"Method Not Allowed"}', [(b"allow", b"POST")])
        service: BgmRecommender = _current_service()
        try:
            body = await _read_body(receive, service.settings.max_body_bytes)
            answer = await service.features_batcher.submit(service.features_query(body))
        except _ClientGone:
            return
        except ValidationError as exc:  # the same answer BentoML gives for an invalid @bentoml.api body
            errors = exc.errors(include_context=False, include_input=False, include_url=False)
            status, payload = 400, {"error": f"{exc.error_count()} validation error for {exc.title}", "detail": errors}
        except BentoMLException as exc:  # our 4xx (BentoML's format for its exceptions)
            status, payload = exc.error_code.value, [{"error": str(exc)}]
        else:
            status, payload = 200, answer
        await _send_json(send, status, orjson.dumps(payload))


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def _read_body(receive, limit: int) -> bytes:
    """The whole request body, or a 413 as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            count_error("recommend_by_features", "body_too_large")
            raise PayloadTooLarge(f"request body has more than {limit} bytes, the limit of this endpoint")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_json(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


FEATURES_ENDPOINT = FeaturesEndpoint()
FEATURES_APP = Starlette(routes=[Route(FeaturesEndpoint.path, FEATURES_ENDPOINT, methods=["POST"])])


ACCESS_LOG = os.environ.get("BGMREC_ACCESS_LOG", "true").lower() != "false"


@bentoml.asgi_app(FEATURES_APP, path="/", name="recommend_by_features")
@bentoml.service(
    name="bgmrec",
    workers=1,
    threads=int(os.environ.get("BGMREC_THREADS", 4)),
    traffic={"timeout": float(os.environ.get("BGMREC_TIMEOUT_S", 60))},
    # One access-log line per request (BGMREC_ACCESS_LOG=false turns it off); probes and scrapes are not logged.
    logging={"access": {"enabled": ACCESS_LOG,
                        "skip_paths": ["/metrics", "/healthz", "/livez", "/readyz"]}},
)
class BgmRecommender:
    """Top-K background music for a video, with diversity options and diversity monitoring."""

    bento_model = bentoml.models.BentoModel(PACKAGED_MODEL) if PACKAGED_MODEL else None

    def __init__(self) -> None:
        import torch
        from threadpoolctl import threadpool_limits

        self.settings = ServingSettings.from_env()
        _cancel_request_timers_when_answered()
        # Parallelism comes from the request threads: a multi-threaded BLAS per request spin-waits against them
        # (a 3k-music top-K took 20 ms instead of 0.3 ms on 2 busy cores with OpenBLAS's 2 threads).
        torch.set_num_threads(self.settings.torch_threads)
        threadpool_limits(self.settings.blas_threads, user_api="blas")
        if self.bento_model is not None:
            stored = Path(self.bento_model.path)
            from bgmrec.models import load_model

            self.model: TorchRecommender = load_model(stored / CHECKPOINT_FILE)
            self.catalog_path = stored / CATALOG_FILE
            self.model_version = str(self.bento_model.info.metadata.get("registry_version", self.bento_model.tag))
        else:
            from bgmrec.registry import ModelRegistry

            if self.settings.registry is None:
                raise RuntimeError("set BGMREC_REGISTRY (or `bgmrec serve --registry DIR`) to the model registry")
            registry = ModelRegistry(self.settings.registry)
            record = registry.production()
            if record is None:
                raise RuntimeError(f"no production model in {registry.root}; run the gate step first")
            self.model = registry.load_production()
            self.catalog_path = registry.root / CATALOG_FILE
            self.model_version = str(record["version"])
        self.catalog: MusicCatalog = self._indexed(load_catalog(self.catalog_path))
        self._refresh_lock = threading.Lock()
        self.features_batcher: MicroBatcher[VideoQuery, dict[str, Any]] = MicroBatcher(
            self._answer, self.settings.max_batch, on_batch=BATCH_SIZE.observe
        )
        self.monitor = DiversityMonitor(self.catalog, self.settings.monitor_window, self.settings.monitor_interval)
        self.monitor.start()
        self._feature_store: Any = None
        if self.settings.feature_repo is not None:
            from bgmrec import feature_store

            self._feature_store = feature_store.open_store(self.settings.feature_repo)
        # Everything loaded so far (modules, model, catalog, Feast) lives as long as the process: take it out of
        # the cyclic garbage collector's scans. A full collection over it took ~200 ms with the GIL held, which
        # was the request latency tail (p99 ~300 ms under 32 clients). Reference counting still frees garbage.
        gc.freeze()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop the monitor thread and hand the frozen start-up objects back to the collector (so interpreter exit,
        e.g. after in-process tests, frees them as usual)."""
        self.monitor.stop()
        gc.unfreeze()

    # -- shared request path -------------------------------------------------------------------------------

    def _query(
        self,
        endpoint: str,
        visual: np.ndarray,
        text: np.ndarray | None,
        k: int,
        exclude: list[str],
        mmr_lambda: float,
        popularity_debias: float,
    ) -> VideoQuery:
        """One request's vectors and options, checked (a 400 naming the option, counted, otherwise)."""
        try:
            if not 1 <= k <= self.settings.max_k:
                raise _Rejected(
                    "k_out_of_range", f"k={k} is out of range: it must be between 1 and {self.settings.max_k}"
                )
            if not 0.0 <= mmr_lambda <= 1.0:
                raise _Rejected("option_out_of_range", f"mmr_lambda={mmr_lambda} is out of range: it must be in [0, 1]")
            if not (0.0 <= popularity_debias < float("inf")):
                raise _Rejected(
                    "option_out_of_range", f"popularity_debias={popularity_debias} is out of range: it must be >= 0"
                )
        except _Rejected as exc:
            count_error(endpoint, exc.kind)
            raise
        return VideoQuery(endpoint, visual, text, k, exclude, mmr_lambda, popularity_debias)

    def _answer(self, queries: list[VideoQuery]) -> list[dict[str, Any] | Exception]:
        """Recommendation lists for checked queries: one model call embeds them all, one catalog search ranks them.

        Every endpoint goes through here; the features route hands it the requests that arrived together
        (`batching.MicroBatcher`), the others one at a time. The catalog scores the whole batch with one matrix
        product (`MusicCatalog.top_k_many`); a query whose ranking fails gets its exception in its place, so it
        fails alone rather than with its whole batch.
        """
        catalog = self.catalog  # one reference for the whole batch: a refresh never changes it mid-way
        visual = np.stack([q.visual for q in queries])
        has_text = np.asarray([q.text is not None for q in queries])
        text = None
        if has_text.any():
            text = np.zeros((len(queries), self.model.dims["text"]), np.float32)
            for row, q in enumerate(queries):
                if q.text is not None:
                    text[row] = q.text
        embedded = self.model.embed_videos(visual, text, None if text is None else has_text)
        rankings = catalog.top_k_many(embedded, [q.k for q in queries], [q.exclude for q in queries],
                                      [q.mmr_lambda for q in queries], [q.popularity_debias for q in queries])
        answers: list[dict[str, Any] | Exception] = []
        for q, ranked in zip(queries, rankings, strict=True):
            if isinstance(ranked, Exception):
                answers.append(ranked)
                continue
            self.monitor.record(ranked.index)
            RECOMMENDATIONS.labels(endpoint=q.endpoint).inc()
            answers.append({
                "items": [
                    {"music_id": str(catalog.ids[i]), "title": str(catalog.titles[i]), "score": float(s)}
                    for i, s in zip(ranked.index, ranked.scores, strict=True)
                ],
                "k": q.k,
                "catalog_version": catalog.version,
                "model_version": self.model_version,
            })
        return answers

    def _recommend(self, endpoint: str, visual: np.ndarray, text: np.ndarray | None, k: int, exclude: list[str],
                   mmr_lambda: float, popularity_debias: float) -> RecommendationList:
        query = self._query(endpoint, visual, text, k, exclude, mmr_lambda, popularity_debias)
        answer = self._answer([query])[0]
        if isinstance(answer, Exception):
            raise answer
        return RecommendationList.model_validate(answer)

    def features_query(self, body: bytes) -> VideoQuery:
        """Parse and check a /recommend_by_features JSON body (pydantic's ValidationError or a 400 if bad)."""
        endpoint = "recommend_by_features"
        try:
            fields = _plain_features(orjson.loads(body))
        except orjson.JSONDecodeError:
            fields = None
        if fields is None:
            # The slow path, only for bodies the fast one does not take: pydantic reads what orjson refuses (NaN,
            # Infinity, 1e999: rejected below, by name), converts what it may (k "5" -> 5), and words its messages
            # for JSON input ("Input should be a valid array"), as BentoML's @bentoml.api answers.
            try:
                request = FeaturesRequest.model_validate_json(body)
            except ValidationError:
                count_error(endpoint, "invalid_request")
                raise
            fields = (request.visual, request.text, request.k, request.exclude, request.mmr_lambda,
                      request.popularity_debias)
        visual, text, k, exclude, mmr_lambda, popularity_debias = fields
        dims = self.model.dims
        try:
            visual = _vector("visual", visual, dims["visual"])
            text = None if text is None else _vector("text", text, dims["text"])
        except _Rejected as exc:
            count_error(endpoint, exc.kind)
            raise
        return self._query(endpoint, visual, text, k, exclude, mmr_lambda, popularity_debias)

    def _reject(self, endpoint: str, kind: str, message: str, error: type[BentoMLException] = InvalidArgument):
        count_error(endpoint, kind)
        return error(message)

    # -- endpoints -----------------------------------------------------------------------------------------

    @bentoml.api
    def recommend_by_video(
        self,
        video_id: str,
        k: int = 10,
        exclude: list[str] = EXAMPLE_INPUT["exclude"],
        mmr_lambda: float = 1.0,
        popularity_debias: float = 0.0,
    ) -> RecommendationList:
        """Top-k music for a video known to the Feast online store, by its id."""
        endpoint = "recommend_by_video"
        try:
            visual, text = self._online_video_vectors(endpoint, video_id)
        except _Rejected as exc:
            count_error(endpoint, exc.kind)
            raise
        return self._recommend(endpoint, visual, text, k, exclude, mmr_lambda, popularity_debias)

    @bentoml.api
    def recommend_by_upload(
        self,
        video: Path,
        description: str | None = None,
        k: int = 10,
        mmr_lambda: float = 1.0,
        popularity_debias: float = 0.0,
    ) -> RecommendationList:
        """Top-k music for an uploaded video file (multipart), embedded with the training feature extractors."""
        endpoint = "recommend_by_upload"
        size = video.stat().st_size
        if size == 0:
            raise self._reject(endpoint, "empty_upload", "video upload is empty (0 bytes)")
        if size > self.settings.max_upload_bytes:
            raise self._reject(
                endpoint,
                "upload_too_large",
                f"video upload has {size} bytes, over the limit of {self.settings.max_upload_bytes} bytes",
                PayloadTooLarge,
            )
        visual, text = self._embed_upload(endpoint, video, description)
        return self._recommend(endpoint, visual, text, k, [], mmr_lambda, popularity_debias)

    @bentoml.api(route="/catalog")
    def catalog_info(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """Catalog size, version, embedding dim, new-music count and one page of (music_id, title, is_new)."""
        catalog = self.catalog
        if offset < 0 or not 0 <= limit <= 1000:
            raise self._reject(
                "catalog_info", "option_out_of_range",
                f"offset={offset}, limit={limit}: offset must be >= 0 and limit between 0 and 1000",
            )
        rows = range(min(offset, len(catalog)), min(offset + limit, len(catalog)))
        return {
            "size": len(catalog),
            "version": catalog.version,
            "dim": catalog.dim,
            "new_music": int(catalog.is_new.sum()),
            "model_version": self.model_version,
            "items": [
                {"music_id": str(catalog.ids[i]), "title": str(catalog.titles[i]), "is_new": bool(catalog.is_new[i])}
                for i in rows
            ],
        }

    @bentoml.api
    def refresh_catalog(self, music: list[NewMusic] | None = None, reload: bool = False) -> dict[str, Any]:
        """Add new music (embedded by the production music encoder) or reload the registry's catalog file.

        The new catalog is built aside and swapped in with one reference assignment: requests in flight finish
        on the catalog they started with, and no request waits for the refresh.
        """
        endpoint = "refresh_catalog"
        if not music and not reload:
            raise self._reject(endpoint, "empty_refresh", "refresh_catalog needs new `music` items or reload=true")
        with self._refresh_lock:  # refreshes are serialised; requests are not blocked
            current = self.catalog
            if reload:
                try:
                    fresh = load_catalog(self.catalog_path)
                except CatalogError as exc:
                    raise self._reject(endpoint, "catalog_file", str(exc), NotFound) from exc
                if fresh.dim != current.dim:
                    raise self._reject(
                        endpoint, "catalog_file",
                        f"{self.catalog_path}: embeddings have {fresh.dim} dims, the model embeds in {current.dim}",
                    )
                fresh = self._indexed(_with_version(fresh, current.version + 1))
                appended = False
            else:
                fresh = self._added(endpoint, current, music or [])
                appended = True
            self.catalog = fresh
            self.monitor.set_catalog(fresh, appended=appended)
        return {"size": len(fresh), "version": fresh.version, "added": len(fresh) - len(current) if appended else None}

    # -- helpers -------------------------------------------------------------------------------------------

    def _indexed(self, catalog: MusicCatalog) -> MusicCatalog:
        """Large catalogs get the coarse index (exact search reads the whole matrix per query)."""
        return catalog.with_index() if len(catalog) >= self.settings.ann_min_size else catalog

    def _added(self, endpoint: str, current: MusicCatalog, music: list[NewMusic]) -> MusicCatalog:
        dims = self.model.dims
        try:
            audio = np.stack([_vector(f"music {m.music_id}: audio_embedding", m.audio_embedding,
                                      dims["audio_embedding"]) for m in music])
            lld = np.stack([_vector(f"music {m.music_id}: audio_lld", m.audio_lld, dims["audio_lld"]) for m in music])
        except _Rejected as exc:
            count_error(endpoint, exc.kind)
            raise
        ids = [m.music_id for m in music]
        try:
            embeddings = self.model.embed_music(audio, lld, np.asarray(ids, dtype=object))
            return current.add(
                ids, embeddings, [m.title for m in music], np.asarray([m.popularity for m in music], dtype=np.float64)
            )
        except CatalogError as exc:
            raise self._reject(endpoint, "duplicate_music", str(exc)) from exc

    def _online_video_vectors(self, endpoint: str, video_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """One video's (visual, text or None) from the Feast online store (one long-lived FeatureStore)."""
        if self._feature_store is None:
            raise self._reject(endpoint, "feature_store_unavailable",
                               "recommend_by_video is unavailable: start the service with --feast-repo DIR",
                               _Unavailable)
        from bgmrec.feature_store import online_video_vectors

        vectors, unknown = online_video_vectors(self._feature_store, [video_id])
        if unknown:
            raise self._reject(
                endpoint, "unknown_video", f"video_id {video_id!r} is not in the feature store", NotFound
            )
        dims = self.model.dims
        text = _vector("text", vectors.text[0], dims["text"]) if bool(vectors.has_text[0]) else None
        return _vector("visual", vectors.visual[0], dims["visual"]), text

    def _embed_upload(self, endpoint: str, path: Path, description: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            from bgmrec.media import embed_video_file
        except ImportError as exc:
            raise self._reject(endpoint, "media_unavailable",
                               "recommend_by_upload is unavailable: bgmrec.media.embed_video_file is missing",
                               _Unavailable) from exc
        try:
            visual, text = embed_video_file(path, description)
        except ValueError as exc:
            raise self._reject(endpoint, "corrupt_upload", f"video upload could not be decoded: {exc}") from exc
        dims = self.model.dims
        if len(visual) != dims["visual"]:
            raise self._reject(
                endpoint, "extractor_mismatch",
                f"the video extractor gives {len(visual)} visual values but the production model expects "
                f"{dims['visual']}: this model was not trained on the media extractors' features",
                _Unavailable,
            )
        return np.asarray(visual, np.float32), None if text is None else np.asarray(text, np.float32)


def _cancel_request_timers_when_answered() -> None:
    """Make BentoML's request-timeout middleware cancel its timer once the request is answered.

    bentoml 1.4.39's `TimeoutMiddleware` arms `loop.call_later(timeout, ...)` per request and never cancels it, so
    each request's timer, future, contextvars copy and tracing span (~20 objects) stay alive for the whole
    timeout (60 s): RSS grew ~2 KB per request for the first minute under load, and the garbage collector's
    full scans over ~200k such objects paused the event loop for 60-95 ms (the p99 under 32 clients). Same
    behaviour otherwise (504 if nothing was sent within the timeout). Applied only to the version it was read
    from; BentoML is pinned in pyproject.toml.
    """
    from bentoml._internal.server.http import traffic

    middleware = traffic.TimeoutMiddleware
    if bentoml.__version__ != "1.4.39" or getattr(middleware, "_bgmrec_cancels_timer", False):
        return

    async def __call__(self, scope, receive, send) -> None:  # noqa: N807 - bentoml's body plus timer.cancel()
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                resp = JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504
                )
                await resp(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()

    middleware.__call__ = __call__
    middleware._bgmrec_cancels_timer = True


class _Unavailable(BentoMLException):
    """A feature this deployment cannot serve, reported with its message (HTTP 409; BentoML hides 5xx messages)."""

    error_code = HTTPStatus.CONFLICT


def _with_version(catalog: MusicCatalog, version: int) -> MusicCatalog:
    return MusicCatalog(catalog.ids, catalog.titles, catalog.embeddings, catalog.popularity, catalog.is_new, version)


# /recommend_by_features in front of BentoML's middleware stack (fastlane.py; BGMREC_FAST_LANE=false turns it off).
FAST_LANE = serve_in_front(BgmRecommender, {FeaturesEndpoint.path: FEATURES_ENDPOINT}, access_log=ACCESS_LOG)
