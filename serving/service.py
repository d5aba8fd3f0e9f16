"""The bgmrec BentoML service: background music for a short video, from the production model and the catalog.

Run it with `bgmrec serve [--registry DIR] [--feast-repo DIR] [--port N]`, or directly:
`BGMREC_REGISTRY=DIR bentoml serve serving.service:BgmRecommender --port 3000`.

Endpoints (POST, JSON keyed by parameter name; the upload endpoint takes multipart/form-data):
- /recommend_by_features  {"visual": [...], "text": [...] | null, "k": 10, "exclude": [...], "mmr_lambda": 1.0,
                           "popularity_debias": 0.0}; a plain ASGI endpoint answered in front of BentoML's
                          middleware stack (fastlane.py), concurrent requests micro-batched into one model call
                          and one catalog matrix product (docs/serving.md)
- /recommend_by_video     {"video_id": "v1", ...options}: vectors from the Feast online store
- /recommend_by_upload    form fields video (file), description, ...options: decoded and embedded with the
                          training extractors (bgmrec.media)
- /catalog                {"offset": 0, "limit": 100}: size, version and a page of the catalog
- /refresh_catalog        admin (Authorization: Bearer $BGMREC_ADMIN_TOKEN): {"reload": true} re-reads the
                          registry now; {"music": [{"music_id", "title", "audio_embedding", "audio_lld",
                          "popularity"}]} adds music to this replica's catalog in memory.
Bad input gets a 4xx whose message names the problem; BentoML serves /healthz, /livez, /readyz and /metrics.

The service follows its registry: every `serving.registry_poll_s` seconds it looks at REGISTRY/production.json
and REGISTRY/catalog.parquet, and when either changed it loads the new production model and catalog aside and
swaps them in together with one reference assignment (no restart, no request failed). A catalog embedded by
another model than production's is not served: the old state keeps serving until `build-catalog` catches up.

Configuration, read once when the service starts: the configuration file $BGMREC_PARAMS (bgmrec.config; the
defaults without it), its `serving:` section overridden by BGMREC_<FIELD> variables (BGMREC_MAX_K, ...), the
registry $BGMREC_REGISTRY (else `gate.registry`), the Feast repo $BGMREC_FEATURE_REPO (opened with the config
file `feast.config`) and the admin token
$BGMREC_ADMIN_TOKEN (admin routes are refused without it). With `serving.model_source: bento` the service serves
the model packaged in the Bento (the build argument `bento_model` that `bgmrec build-bento` sets, or
$BGMREC_BENTO_MODEL), pinned.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import threading
from dataclasses import dataclass, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import orjson
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from bgmrec.catalog import CATALOG_FILE, CatalogError, MusicCatalog, load_catalog
from bgmrec.config import ServingSettings, load_config
from bgmrec.models.base import TorchRecommender
from bgmrec.registry import CHECKPOINT_FILE, PRODUCTION_FILE, ModelRegistry
from serving.batching import MicroBatcher
from serving.fastlane import serve_in_front
from serving.monitor import BATCH_SIZE, RECOMMENDATIONS, DiversityMonitor, count_error

logger = logging.getLogger("bgmrec.serving")

_current_service = bentoml.get_current_service  # resolved once: bentoml's module __getattr__ imports per call
# The BentoML model packaged in a built Bento: a build argument stored in the Bento (`bgmrec build-bento` sets it),
# or BGMREC_BENTO_MODEL. Empty when serving straight from a registry.
PACKAGED_MODEL = str(getattr(bentoml.use_arguments(), "bento_model", "") or os.environ.get("BGMREC_BENTO_MODEL", ""))

EXAMPLE_INPUT: dict[str, Any] = {
    "visual": [0.0] * 8,
    "text": None,
    "k": 10,
    "exclude": [],
    "mmr_lambda": 1.0,
    "popularity_debias": 0.0,
}


@dataclass(frozen=True)
class StartupConfig:
    """Everything the service reads when it starts: the `serving:` settings (environment applied), where the
    registry and the Feast repo are, and the admin token."""

    settings: ServingSettings
    registry: Path
    feature_repo: Path | None
    feast_config: str
    admin_token: str

    @classmethod
    def from_env(cls) -> StartupConfig:
        env = os.environ
        config = load_config()  # $BGMREC_PARAMS, else the defaults
        return cls(
            settings=config.serving.with_env(env),
            registry=Path(env.get("BGMREC_REGISTRY") or config.gate.registry),
            feature_repo=Path(env["BGMREC_FEATURE_REPO"]) if env.get("BGMREC_FEATURE_REPO") else None,
            feast_config=config.feast.config,
            admin_token=env.get("BGMREC_ADMIN_TOKEN", ""),
        )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        return int(self.settings.max_body_mb * 2**20)


@dataclass(frozen=True)
class ServedState:
    """What answers requests, swapped as one reference: the model, the catalog its music encoder embedded, the
    model's registry version, and the identity of the registry files they were read from."""

    model: TorchRecommender
    catalog: MusicCatalog
    model_version: str
    stamp: tuple = ()


def registry_stamp(root: Path) -> tuple:
    """The identity of production.json and catalog.parquet (inode, size, mtime): a writer's atomic rename or
    rewrite changes it. Cheap enough to poll every few seconds, also on a network volume."""
    stamp = []
    for name in (PRODUCTION_FILE, CATALOG_FILE):
        try:
            st = os.stat(root / name)
        except FileNotFoundError:
            stamp.append(None)
        else:
            stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamp)


class AdminRefused(BentoMLException):
    """An admin call without valid credentials (401 without a token, 403 with a wrong one or none configured)."""

    def __init__(self, message: str, status: HTTPStatus):
        super().__init__(message)
        self.error_code = status


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
            body = await _read_body(receive, service.startup.max_body_bytes)
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


STARTUP = StartupConfig.from_env()
ACCESS_LOG = STARTUP.settings.access_log


@bentoml.asgi_app(FEATURES_APP, path="/", name="recommend_by_features")
@bentoml.service(
    name="bgmrec",
    workers=1,
    threads=STARTUP.settings.threads,
    traffic={"timeout": STARTUP.settings.timeout_s},
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

        self.startup = STARTUP
        self.settings = STARTUP.settings
        _cancel_request_timers_when_answered()
        # Parallelism comes from the request threads: a multi-threaded BLAS per request spin-waits against them
        # (a 3k-music top-K took 20 ms instead of 0.3 ms on 2 busy cores with OpenBLAS's 2 threads).
        torch.set_num_threads(self.settings.torch_threads)
        threadpool_limits(self.settings.blas_threads, user_api="blas")
        self.registry = ModelRegistry(STARTUP.registry)
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._unservable: tuple | None = None
        if self.settings.model_source == "bento":
            if self.bento_model is None:
                raise RuntimeError("serving.model_source is 'bento' but this Bento packages no model: build it with "
                                   "`bgmrec build-bento`, or serve the registry (model_source: registry)")
            from bgmrec.models import load_model

            stored = Path(self.bento_model.path)
            version = str(self.bento_model.info.metadata.get("registry_version", self.bento_model.tag))
            self.state = ServedState(load_model(stored / CHECKPOINT_FILE),
                                     self._indexed(load_catalog(stored / CATALOG_FILE)), version)
        else:
            self.state = self._load_registry(registry_stamp(self.registry.root), None)
        self._refresh_lock = threading.Lock()
        self.features_batcher: MicroBatcher[VideoQuery, dict[str, Any]] = MicroBatcher(
            self._answer, self.settings.max_batch, on_batch=BATCH_SIZE.observe
        )
        self.monitor = DiversityMonitor(self.catalog, self.settings.monitor_window,
                                      self.settings.monitor_interval_s)
        self.monitor.start()
        if self.settings.model_source == "registry" and self.settings.registry_poll_s > 0:
            self._follower = threading.Thread(target=self._follow_registry, name="bgmrec-registry-follower",
                                              daemon=True)
            self._follower.start()
        self._feature_store: Any = None
        if STARTUP.feature_repo is not None:
            from bgmrec import feature_store

            self._feature_store = feature_store.open_store(STARTUP.feature_repo, STARTUP.feast_config)
        # Everything loaded so far (modules, model, catalog, Feast) lives as long as the process: take it out of
        # the cyclic garbage collector's scans. A full collection over it took ~200 ms with the GIL held, which
        # was the request latency tail (p99 ~300 ms under 32 clients). Reference counting still frees garbage.
        gc.freeze()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop the monitor thread and hand the frozen start-up objects back to the collector (so interpreter exit,
        e.g. after in-process tests, frees them as usual)."""
        self._stop.set()
        self.monitor.stop()
        gc.unfreeze()

    # -- the served state and the registry it follows -----------------------------------------------------

    @property
    def model(self) -> TorchRecommender:
        return self.state.model

    @property
    def catalog(self) -> MusicCatalog:
        return self.state.catalog

    @property
    def model_version(self) -> str:
        return self.state.model_version

    def _load_registry(self, stamp: tuple, current: ServedState | None) -> ServedState:
        """The registry's production model and catalog, loaded aside (the model is reused when its version did
        not change). Raises when they cannot be served together: no production model, a catalog that is
        missing or empty, or one embedded by another model than production's."""
        root = self.registry.root
        record = self.registry.production()
        if record is None:
            raise FileNotFoundError(f"{root}: no {PRODUCTION_FILE}; promote a model (bgmrec gate) first")
        version = str(record["version"])
        if current is not None and current.model_version == version:
            model = current.model
        else:
            model = self.registry.load_production()
        catalog = load_catalog(root / CATALOG_FILE)
        if len(catalog) == 0:
            raise CatalogError(f"{root / CATALOG_FILE}: the catalog is empty")
        if catalog.model_version and catalog.model_version != version:
            raise CatalogError(f"{root / CATALOG_FILE} was embedded by model {catalog.model_version}, production is "
                               f"{version}: waiting for `bgmrec build-catalog`")
        if current is not None and current.model_version == version and catalog.dim != current.catalog.dim:
            raise CatalogError(f"{root / CATALOG_FILE}: embeddings have {catalog.dim} dims, the model embeds in "
                               f"{current.catalog.dim}")
        return ServedState(model, self._indexed(catalog), version, stamp)

    def sync_with_registry(self) -> bool:
        """Swap in the registry's production model and catalog if they changed since they were read; returns
        whether the served state changed. On a registry that cannot be served the current state keeps serving
        (one warning per change of the files)."""
        stamp = registry_stamp(self.registry.root)
        if stamp == self.state.stamp or stamp == self._unservable:
            return False
        with self._refresh_lock:
            current = self.state
            if stamp == current.stamp:
                return False
            try:
                fresh = self._load_registry(stamp, current)
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with the files, keep serving
                self._unservable = stamp
                logger.warning("registry %s not swapped in, still serving model %s, catalog version %s: %s",
                               self.registry.root, current.model_version, current.catalog.version, exc)
                return False
            self.state = fresh
            self.monitor.set_catalog(fresh.catalog, appended=False)
        logger.info("serving model %s, catalog version %s (%d music) from %s", fresh.model_version,
                    fresh.catalog.version, len(fresh.catalog), self.registry.root)
        return True

    def _follow_registry(self) -> None:
        while not self._stop.wait(self.settings.registry_poll_s):
            try:
                self.sync_with_registry()
            except Exception:  # noqa: BLE001 - the follower must outlive any one bad poll
                logger.exception("registry poll failed")

    def _check_admin(self, ctx: bentoml.Context, endpoint: str) -> None:
        """Admin routes need `Authorization: Bearer <token>` with the token in $BGMREC_ADMIN_TOKEN."""
        expected = self.startup.admin_token
        if not expected:
            count_error(endpoint, "admin_disabled")
            raise AdminRefused("admin routes are disabled on this server: set BGMREC_ADMIN_TOKEN to enable them",
                               HTTPStatus.FORBIDDEN)
        header = ctx.request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            count_error(endpoint, "unauthenticated")
            raise AdminRefused("admin route: send the admin token as `Authorization: Bearer <token>`",
                               HTTPStatus.UNAUTHORIZED)
        if not hmac.compare_digest(token.strip().encode(), expected.encode()):
            count_error(endpoint, "forbidden")
            raise AdminRefused("admin route: the token is not valid", HTTPStatus.FORBIDDEN)

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
        state = self.state  # one reference for the whole batch: a swap never changes model or catalog mid-way
        catalog, model = state.catalog, state.model
        visual = np.stack([q.visual for q in queries])
        has_text = np.asarray([q.text is not None for q in queries])
        text = None
        if has_text.any():
            text = np.zeros((len(queries), model.dims["text"]), np.float32)
            for row, q in enumerate(queries):
                if q.text is not None:
                    text[row] = q.text
        embedded = model.embed_videos(visual, text, None if text is None else has_text)
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
                "model_version": state.model_version,
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
        if size > self.startup.max_upload_bytes:
            raise self._reject(
                endpoint,
                "upload_too_large",
                f"video upload has {size} bytes, over the limit of {self.startup.max_upload_bytes} bytes",
                PayloadTooLarge,
            )
        visual, text = self._embed_upload(endpoint, video, description)
        return self._recommend(endpoint, visual, text, k, [], mmr_lambda, popularity_debias)

    @bentoml.api(route="/catalog")
    def catalog_info(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """Catalog size, version, embedding dim, new-music count and one page of (music_id, title, is_new)."""
        state = self.state
        catalog = state.catalog
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
            "model_version": state.model_version,
            "items": [
                {"music_id": str(catalog.ids[i]), "title": str(catalog.titles[i]), "is_new": bool(catalog.is_new[i])}
                for i in rows
            ],
        }

    @bentoml.api
    def refresh_catalog(
        self, ctx: bentoml.Context, music: list[NewMusic] | None = None, reload: bool = False
    ) -> dict[str, Any]:
        """Admin: reload the registry now (production model and catalog, as the follower does every few seconds),
        or add new music (embedded by the production music encoder) to this replica's catalog in memory.

        The new state is built aside and swapped in with one reference assignment: requests in flight finish
        on the state they started with, and no request waits for the refresh.
        """
        endpoint = "refresh_catalog"
        self._check_admin(ctx, endpoint)
        if not music and not reload:
            raise self._reject(endpoint, "empty_refresh", "refresh_catalog needs new `music` items or reload=true")
        if reload:
            if self.settings.model_source != "registry":
                raise self._reject(endpoint, "pinned", "this server serves the model packaged in its Bento "
                                   "(serving.model_source: bento): there is no registry to reload", _Unavailable)
            with self._refresh_lock:
                current = self.state
                try:
                    fresh = self._load_registry(registry_stamp(self.registry.root), current)
                except (CatalogError, FileNotFoundError, ValueError) as exc:
                    raise self._reject(endpoint, "catalog_file", str(exc), NotFound) from exc
                self.state = fresh
                self.monitor.set_catalog(fresh.catalog, appended=False)
            return {"size": len(fresh.catalog), "version": fresh.catalog.version, "added": None,
                    "model_version": fresh.model_version}
        with self._refresh_lock:  # refreshes are serialised; requests are not blocked
            current = self.state
            catalog = self._added(endpoint, current, music or [])
            self.state = replace(current, catalog=catalog)
            self.monitor.set_catalog(catalog, appended=True)
        return {"size": len(catalog), "version": catalog.version, "added": len(catalog) - len(current.catalog),
                "model_version": current.model_version}

    # -- helpers -------------------------------------------------------------------------------------------

    def _indexed(self, catalog: MusicCatalog) -> MusicCatalog:
        """Large catalogs get the coarse index (exact search reads the whole matrix per query)."""
        return catalog.with_index() if len(catalog) >= self.settings.ann_min_size else catalog

    def _added(self, endpoint: str, current: ServedState, music: list[NewMusic]) -> MusicCatalog:
        dims = current.model.dims
        try:
            audio = np.stack([_vector(f"music {m.music_id}: audio_embedding", m.audio_embedding,
                                      dims["audio_embedding"]) for m in music])
            lld = np.stack([_vector(f"music {m.music_id}: audio_lld", m.audio_lld, dims["audio_lld"]) for m in music])
        except _Rejected as exc:
            count_error(endpoint, exc.kind)
            raise
        ids = [m.music_id for m in music]
        try:
            embeddings = current.model.embed_music(audio, lld, np.asarray(ids, dtype=object))
            return current.catalog.add(
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


# /recommend_by_features in front of BentoML's middleware stack (fastlane.py; `serving.fast_lane: false` turns it off).
FAST_LANE = serve_in_front(BgmRecommender, {FeaturesEndpoint.path: FEATURES_ENDPOINT}, access_log=ACCESS_LOG,
                           enabled=STARTUP.settings.fast_lane)
