"""The bgmrec BentoML service: background music for a short video, from the production model and the catalog.

Run it with `bgmrec serve [--registry DIR] [--feast-repo DIR] [--port N]`, or directly:
`BGMREC_REGISTRY=DIR bentoml serve serving.service:BgmRecommender --port 3000`.

Every route is a BentoML API (typed inputs and outputs in serving/schemas.py, listed in /docs.json, callable with
`bentoml.SyncHTTPClient`); POST, JSON keyed by parameter name, the upload as multipart/form-data:
- /recommend_by_features  {"queries": [{"visual": [...], "text": [...] | null, "k": 10, "exclude": [...],
                          "mmr_lambda": 1.0, "popularity_debias": 0.0}, ...]}: one list per query. Adaptive
                          batching joins the queries of concurrent requests into one model call and one catalog
                          search.
- /recommend_by_video     {"video_id": "v1", ...options}: vectors from the Feast online store
- /recommend_by_upload    form fields video (file), description, ...options: decoded and embedded with the
                          training extractors (bgmrec.media)
- /catalog                {"offset": 0, "limit": 100}: size, version and a page of the catalog
- /refresh_catalog        admin (Authorization: Bearer $BGMREC_ADMIN_TOKEN): {"reload": true} re-reads the
                          registry now; {"music": [...]} adds music to this replica's catalog in memory.
- /try (GET)              a page to try it: upload a video, hear the ranked music (serving/page.py); the catalog's
                          audio previews at /try/audio/<music_id>.
Bad input gets a 4xx whose message names the problem (serving/guard.py answers the malformed bodies BentoML's
parsers would fail on); BentoML serves /healthz, /livez, /readyz and /metrics.

The service follows its registry: every `serving.registry_poll_s` seconds it looks at REGISTRY/production.json
and REGISTRY/catalog.parquet, and when either changed it loads the new production model and catalog aside and
swaps them in together with one reference assignment (no restart, no request failed). A catalog embedded by
another model than production's is not served: the old state keeps serving until `build-catalog` catches up.

Configuration, read once when the service starts (serving/state.py): the configuration file $BGMREC_PARAMS
(bgmrec.config; the defaults without it), its `serving:` section overridden by BGMREC_<FIELD> variables, the
registry $BGMREC_REGISTRY (else `gate.registry`), the Feast repo $BGMREC_FEATURE_REPO (opened with the config file
`feast.config`) and the admin token $BGMREC_ADMIN_TOKEN (admin routes are refused without it). With
`serving.model_source: bento` the service serves the model packaged in the Bento (the build argument
`bento_model` that `bgmrec build-bento` sets, or $BGMREC_BENTO_MODEL), pinned.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound
from pydantic import Field

from bgmrec.catalog import CATALOG_FILE, CatalogError, MusicCatalog, load_catalog
from bgmrec.models.base import TorchRecommender
from bgmrec.registry import CHECKPOINT_FILE, ModelRegistry
from serving import client_errors
from serving.errors import PayloadTooLarge, Unavailable, check_admin
from serving.guard import RequestGuard
from serving.monitor import BATCH_SIZE, RECOMMENDATIONS, DiversityMonitor, count_error, set_served_model
from serving.page import page_app
from serving.schemas import (
    MAX_DEBIAS,
    MAX_DESCRIPTION_CHARS,
    MAX_EXCLUDE,
    MAX_QUERIES,
    CatalogItem,
    CatalogPage,
    FeaturesQuery,
    MusicId,
    NewMusic,
    RecommendationList,
    RecommendedMusic,
    RefreshResult,
    ServedLimits,
)
from serving.state import ServedState, StartupConfig, load_registry_state, registry_stamp

logger = logging.getLogger("bgmrec.serving")

STARTUP = StartupConfig.from_env()
SETTINGS = STARTUP.settings
# The BentoML model packaged in a built Bento: a build argument stored in the Bento (`bgmrec build-bento` sets it),
# or BGMREC_BENTO_MODEL. Empty when serving straight from a registry.
PACKAGED_MODEL = str(getattr(bentoml.use_arguments(), "bento_model", "") or os.environ.get("BGMREC_BENTO_MODEL", ""))

# Options of the single-video routes, with the same limits as FeaturesQuery's: strict in JSON bodies; form fields
# (the upload) arrive as text, so there the numbers are read from it.
K = Annotated[int, Field(ge=1, le=1000, strict=True, description="how many music to return")]
Exclude = Annotated[list[MusicId], Field(max_length=MAX_EXCLUDE, description="music ids never returned")]
MMRLambda = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]
Debias = Annotated[float, Field(ge=0.0, le=MAX_DEBIAS, allow_inf_nan=False, strict=True)]
FormK = Annotated[int, Field(ge=1, le=1000, description="how many music to return")]
FormMMRLambda = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
FormDebias = Annotated[float, Field(ge=0.0, le=MAX_DEBIAS, allow_inf_nan=False)]


@dataclass(frozen=True)
class VideoQuery:
    """One checked request, whatever route it came by: the video's vectors (text None = no description)."""

    endpoint: str
    visual: np.ndarray
    text: np.ndarray | None
    k: int
    exclude: list[str]
    mmr_lambda: float
    popularity_debias: float


# The try-it page and the catalog's audio previews, at /try (serving/page.py).
@bentoml.asgi_app(page_app, path="/try")
@bentoml.service(
    name="bgmrec",
    workers=1,
    threads=SETTINGS.threads,
    traffic={"timeout": SETTINGS.timeout_s},
    # One access-log line per request (`serving.access_log`); probes and scrapes are not logged.
    logging={"access": {"enabled": SETTINGS.access_log, "skip_paths": ["/metrics", "/healthz", "/livez", "/readyz"]}},
)
class BgmRecommender:
    """Top-K background music for a video, with diversity options and diversity monitoring."""

    bento_model = bentoml.models.BentoModel(PACKAGED_MODEL) if PACKAGED_MODEL else None

    def __init__(self) -> None:
        import torch
        from threadpoolctl import threadpool_limits

        client_errors.install()
        self.startup = STARTUP
        self.settings = SETTINGS
        # Parallelism comes from the request threads: a multi-threaded BLAS per request spin-waits against them
        # (a 3k-music top-K took 20 ms instead of 0.3 ms on 2 busy cores with OpenBLAS's 2 threads).
        torch.set_num_threads(self.settings.torch_threads)
        threadpool_limits(self.settings.blas_threads, user_api="blas")
        import faiss  # the catalog's index searches with OpenMP: as many threads as BLAS, not every core

        faiss.omp_set_num_threads(self.settings.blas_threads)
        self.registry = ModelRegistry(STARTUP.registry)
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._unservable: tuple | None = None
        if self.settings.model_source == "bento":
            if self.bento_model is None:
                raise RuntimeError("serving.model_source is 'bento' but this Bento packages no model: build it with "
                                   "`bgmrec build-bento`, or serve the registry (model_source: registry)")
            from bgmrec.models import load_model

            stored = Path(self.bento_model.path)
            version = str(self.bento_model.info.metadata.get("registry_version", self.bento_model.tag))
            self._serve(ServedState(load_model(stored / CHECKPOINT_FILE),
                                    load_catalog(stored / CATALOG_FILE, STARTUP.catalog), version))
        else:
            self._serve(load_registry_state(self.registry, registry_stamp(self.registry.root), None,
                                            STARTUP.catalog))
        self.monitor = DiversityMonitor(self.catalog, self.settings.monitor_window, self.settings.monitor_interval_s)
        self.monitor.start()
        if self.settings.model_source == "registry" and self.settings.registry_poll_s > 0:
            threading.Thread(target=self._follow_registry, name="bgmrec-registry-follower", daemon=True).start()
        self._feature_store: Any = None
        if STARTUP.feature_repo is not None:
            from bgmrec import feature_store

            self._feature_store = feature_store.open_store(STARTUP.feature_repo, STARTUP.feast_config)
        # Everything loaded so far (modules, model, catalog, Feast) lives as long as the process: take it out of
        # the cyclic garbage collector's scans, which otherwise walk it on every full collection.
        gc.freeze()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop the background threads and hand the frozen start-up objects back to the collector."""
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

    def _serve(self, state: ServedState) -> None:
        """Make `state` the one requests read (one reference assignment); request validation follows its model."""
        ServedLimits.set(state.model.dims, self.settings.max_k)
        self.state = state
        set_served_model(state.model_version, state.model.name)

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
                fresh = load_registry_state(self.registry, stamp, current, STARTUP.catalog)
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with the files, keep serving
                self._unservable = stamp
                logger.warning("registry %s not swapped in, still serving model %s, catalog version %s: %s",
                               self.registry.root, current.model_version, current.catalog.version, exc)
                return False
            self._serve(fresh)
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

    # -- the one request path ------------------------------------------------------------------------------

    def _answer(self, queries: list[VideoQuery]) -> list[RecommendationList]:
        """Recommendation lists for checked queries: one model call embeds them all, one catalog search ranks them
        (every route comes here; the features route with the queries adaptive batching joined)."""
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
        answers = []
        for q, ranked in zip(queries, rankings, strict=True):
            if isinstance(ranked, Exception):  # options are validated before: only a bug gets here
                raise ranked
            self.monitor.record(ranked.index)
            RECOMMENDATIONS.labels(endpoint=q.endpoint).inc()
            items = [RecommendedMusic.model_construct(music_id=str(catalog.ids[i]), title=str(catalog.titles[i]),
                                                      score=float(s))
                     for i, s in zip(ranked.index, ranked.scores, strict=True)]
            answers.append(RecommendationList.model_construct(items=items, k=q.k, catalog_version=catalog.version,
                                                              model_version=state.model_version))
        return answers

    def _query(self, endpoint: str, visual: np.ndarray, text: np.ndarray | None, k: int, exclude: list[str],
               mmr_lambda: float, popularity_debias: float) -> VideoQuery:
        if k > self.settings.max_k:
            raise self._reject(endpoint, "k_out_of_range",
                               f"k={k} is out of range: it must be between 1 and {self.settings.max_k}")
        return VideoQuery(endpoint, visual, text, k, exclude, mmr_lambda, popularity_debias)

    def _reject(self, endpoint: str, kind: str, message: str, error: type[BentoMLException] = InvalidArgument):
        count_error(endpoint, kind)
        return error(message)

    # -- endpoints -----------------------------------------------------------------------------------------

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.max_batch, max_latency_ms=SETTINGS.max_batch_latency_ms)
    def recommend_by_features(
        self, queries: Annotated[list[FeaturesQuery], Field(min_length=1, max_length=MAX_QUERIES)]
    ) -> list[RecommendationList]:
        """Top-k music for each video given as feature vectors (visual, and text unless it has no description)."""
        BATCH_SIZE.observe(len(queries))
        return self._answer([
            VideoQuery("recommend_by_features", np.asarray(q.visual, np.float32),
                       None if q.text is None else np.asarray(q.text, np.float32), q.k, q.exclude, q.mmr_lambda,
                       q.popularity_debias)
            for q in queries
        ])

    @bentoml.api
    def recommend_by_video(
        self,
        video_id: MusicId,
        k: K = 10,
        exclude: Exclude = [],  # noqa: B006 - BentoML reads the default into the schema; never mutated
        mmr_lambda: MMRLambda = 1.0,
        popularity_debias: Debias = 0.0,
    ) -> RecommendationList:
        """Top-k music for a video known to the Feast online store, by its id."""
        endpoint = "recommend_by_video"
        visual, text = self._online_video_vectors(endpoint, video_id)
        return self._answer([self._query(endpoint, visual, text, k, exclude, mmr_lambda, popularity_debias)])[0]

    @bentoml.api
    def recommend_by_upload(
        self,
        video: Path,
        description: Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)] | None = None,
        k: FormK = 10,
        mmr_lambda: FormMMRLambda = 1.0,
        popularity_debias: FormDebias = 0.0,
    ) -> RecommendationList:
        """Top-k music for an uploaded video file (multipart), embedded with the training feature extractors."""
        endpoint = "recommend_by_upload"
        size = video.stat().st_size
        if size == 0:
            raise self._reject(endpoint, "empty_upload", "video upload is empty (0 bytes)")
        if size > self.startup.max_upload_bytes:
            raise self._reject(endpoint, "upload_too_large",
                               f"video upload has {size} bytes, over the limit of {self.startup.max_upload_bytes} "
                               "bytes", PayloadTooLarge)
        visual, text = self._embed_upload(endpoint, video, description)
        return self._answer([self._query(endpoint, visual, text, k, [], mmr_lambda, popularity_debias)])[0]

    @bentoml.api(route="/catalog")
    def catalog_info(
        self,
        offset: Annotated[int, Field(ge=0, strict=True)] = 0,
        limit: Annotated[int, Field(ge=0, le=1000, strict=True)] = 100,
    ) -> CatalogPage:
        """Catalog size, version, embedding dim, new-music count and one page of (music_id, title, is_new)."""
        state = self.state
        catalog = state.catalog
        rows = range(min(offset, len(catalog)), min(offset + limit, len(catalog)))
        return CatalogPage(
            size=len(catalog), version=catalog.version, dim=catalog.dim, new_music=int(catalog.is_new.sum()),
            model_version=state.model_version,
            items=[CatalogItem(music_id=str(catalog.ids[i]), title=str(catalog.titles[i]),
                               is_new=bool(catalog.is_new[i])) for i in rows],
        )

    @bentoml.api
    def refresh_catalog(
        self,
        ctx: bentoml.Context,
        music: Annotated[list[NewMusic], Field(max_length=1000)] | None = None,
        reload: Annotated[bool, Field(strict=True)] = False,
    ) -> RefreshResult:
        """Admin: reload the registry now (production model and catalog, as the follower does every few seconds),
        or add new music (embedded by the production music encoder) to this replica's catalog in memory.

        The new state is built aside and swapped in with one reference assignment: requests in flight finish
        on the state they started with, and no request waits for the refresh.
        """
        endpoint = "refresh_catalog"
        check_admin(ctx, self.startup.admin_token, endpoint)
        if not music and not reload:
            raise self._reject(endpoint, "empty_refresh", "refresh_catalog needs new `music` items or reload=true")
        if reload:
            if self.settings.model_source != "registry":
                raise self._reject(endpoint, "pinned", "this server serves the model packaged in its Bento "
                                   "(serving.model_source: bento): there is no registry to reload", Unavailable)
            with self._refresh_lock:
                try:
                    fresh = load_registry_state(self.registry, registry_stamp(self.registry.root), self.state,
                                                STARTUP.catalog)
                except (CatalogError, FileNotFoundError, ValueError) as exc:
                    raise self._reject(endpoint, "catalog_file", str(exc), NotFound) from exc
                self._serve(fresh)
                self.monitor.set_catalog(fresh.catalog, appended=False)
            return RefreshResult(size=len(fresh.catalog), version=fresh.catalog.version, added=None,
                                 model_version=fresh.model_version)
        with self._refresh_lock:  # refreshes are serialised; requests are not blocked
            current = self.state
            catalog = self._added(endpoint, current, music or [])
            self._serve(replace(current, catalog=catalog))
            self.monitor.set_catalog(catalog, appended=True)
        return RefreshResult(size=len(catalog), version=catalog.version, added=len(catalog) - len(current.catalog),
                             model_version=current.model_version)

    # -- helpers -------------------------------------------------------------------------------------------

    def _added(self, endpoint: str, current: ServedState, music: list[NewMusic]) -> MusicCatalog:
        dims = current.model.dims
        for m in music:
            for field in ("audio_embedding", "audio_lld"):
                if len(getattr(m, field)) != dims[field]:
                    raise self._reject(endpoint, "wrong_length", f"music {m.music_id}: {field} has "
                                       f"{len(getattr(m, field))} values, expected {dims[field]}")
        audio = np.asarray([m.audio_embedding for m in music], np.float32)
        lld = np.asarray([m.audio_lld for m in music], np.float32)
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
                               Unavailable)
        from bgmrec.feature_store import online_video_vectors

        vectors, unknown = online_video_vectors(self._feature_store, [video_id])
        if unknown:
            raise self._reject(endpoint, "unknown_video", f"video_id {video_id!r} is not in the feature store",
                               NotFound)
        dims = self.model.dims
        visual = np.asarray(vectors.visual[0], np.float32)
        text = np.asarray(vectors.text[0], np.float32) if bool(vectors.has_text[0]) else None
        if len(visual) != dims["visual"] or (text is not None and len(text) != dims["text"]):
            raise self._reject(endpoint, "feature_store_mismatch",
                               f"video_id {video_id!r}: the feature store's vectors do not fit the served model",
                               Unavailable)
        return visual, text

    def _embed_upload(self, endpoint: str, path: Path, description: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            from bgmrec.media import embed_video_file
        except ImportError as exc:
            raise self._reject(endpoint, "media_unavailable",
                               "recommend_by_upload is unavailable: bgmrec.media.embed_video_file is missing",
                               Unavailable) from exc
        try:
            visual, text = embed_video_file(path, description)
        except ValueError as exc:
            # the decoder names the server's temporary file: the client is told about "the upload" instead
            reason = str(exc).replace(str(path), "the upload").replace(path.name, "the upload")
            raise self._reject(endpoint, "corrupt_upload", f"video upload could not be decoded: {reason}") from exc
        dims = self.model.dims
        if not dims.get("text"):  # a model trained without descriptions ranks by the frames alone
            text = None
        for kind, vector in (("visual", visual), ("text", text)):
            if vector is not None and dims.get(kind) is not None and len(vector) != dims[kind]:
                raise self._reject(
                    endpoint, "extractor_mismatch",
                    f"the {kind} extractor gives {len(vector)} values but the production model expects "
                    f"{dims[kind]}: this model was not trained on the media extractors' features",
                    Unavailable,
                )
        return np.asarray(visual, np.float32), None if text is None else np.asarray(text, np.float32)


# Malformed request bodies (multipart without a boundary or without its file, oversized bodies) are answered
# with a 4xx before BentoML's parsers see them.
BgmRecommender.add_asgi_middleware(RequestGuard, max_body_bytes=STARTUP.max_body_bytes,
                                   max_upload_bytes=STARTUP.max_upload_bytes)
