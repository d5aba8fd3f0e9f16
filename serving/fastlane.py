"""The fast lane: a few hot routes answered in front of BentoML's ASGI middleware stack, in the same server.

`bentoml serve` builds the service's ASGI app with `Service.to_asgi()`: a Starlette app whose middlewares (request
metrics, OpenTelemetry, access log, timeout, context, exception handling, routing, the mount) cost ~0.65 ms of
Python per request on this machine (docs/benchmarks.md, issue 8) -- more than a batched model call and top-K over a
3k catalog. `serve_in_front(service, routes)` makes that service's `to_asgi()` return `FastLane(app, routes)`: a
request for one of `routes` (exact path) goes straight to its ASGI endpoint, everything else (the other endpoints,
/metrics, probes, docs, lifespan) to BentoML's app as before. It is the same process, started the same way
(`bentoml serve`, `bgmrec serve`, a built Bento), and the endpoints keep their BentoML mount, which answers them
whenever the lane is not installed.

What the lane keeps of the stack, at a fraction of the cost:
- BentoML's request metrics: `bentoml_service_request_total`, `_request_duration_seconds`, `_request_in_progress`
  and `_last_request_timestamp_seconds` with BentoML's names, labels and buckets (`RequestMetrics`), so dashboards
  and alert rules see the lane's routes beside the others. In Prometheus multiprocess mode (always, under BentoML)
  a metric is its name + labels in the process's value files, so these objects are not registered a second time.
- the access log: one `bentoml.access` line per request in BentoML's format when the service's access log is on;
- a 500 with BentoML's answer shape if an endpoint raises (it should answer 4xx itself for bad input).
What it drops: OpenTelemetry spans (none are collected at BentoML's default sample rate 0; a deployment that traces
sets `serving.fast_lane: false`, or BGMREC_FAST_LANE=false), the request timeout and the concurrency limit (the
endpoints do bounded work).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

_INTERNAL_ERROR = b'[{"error":"Internal Server Error"}]'


class RequestMetrics:
    """BentoML's HTTP request metric families (its `RunnerTrafficMetricsMiddleware`), for routes it does not see.

    Children are labelled once per (route, status) and reused: labelling costs more than the update.
    """

    def __init__(self) -> None:
        from bentoml._internal.configuration.containers import BentoMLContainer
        from bentoml._internal.context import server_context
        from prometheus_client import Counter, Gauge, Histogram

        namespace = BentoMLContainer.api_server_config.metrics.namespace.get()
        buckets = BentoMLContainer.duration_buckets.get()
        self._common = {"service_name": server_context.bento_name, "service_version": server_context.bento_version,
                        "runner_name": server_context.service_name}
        labels = ["endpoint", "service_name", "service_version", "http_response_code", "runner_name"]
        # registry=None: BentoML registered these names in the default registry already; in multiprocess mode the
        # values land in the same files and its /metrics reads them from there.
        self.duration = Histogram("request_duration_seconds", "runner RPC duration in seconds", labels,
                                  namespace=namespace, buckets=buckets, registry=None)
        self.total = Counter("request_total", "Total number of runner RPC", labels, namespace=namespace,
                             registry=None)
        self.in_progress = Gauge("request_in_progress", "Total number of runner RPC in progress now",
                                 ["endpoint", "service_name", "service_version", "runner_name"], namespace=namespace,
                                 multiprocess_mode="livesum", registry=None)
        self.last_request = Gauge("last_request_timestamp_seconds", "Timestamp of the last received request",
                                  ["service_name", "service_version", "runner_name"], namespace=namespace,
                                  registry=None).labels(**self._common)
        self._finished: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._running: dict[str, Any] = {}

    def started(self, route: str) -> None:
        self.last_request.set(time.time())
        running = self._running.get(route)
        if running is None:
            running = self._running[route] = self.in_progress.labels(endpoint=route, **self._common)
        running.inc()

    def finished(self, route: str, status: int, seconds: float) -> None:
        """One request done; status 0 = nothing was answered (the client went away), counted nowhere but the
        in-progress gauge, as BentoML's middleware does."""
        self._running[route].dec()
        if not status:
            return
        children = self._finished.get((route, status))
        if children is None:
            labels = {"endpoint": route, "http_response_code": str(status), **self._common}
            children = self._finished[(route, status)] = (self.total.labels(**labels),
                                                          self.duration.labels(**labels))
        children[0].inc()
        children[1].observe(seconds)


class FastLane:
    """ASGI: requests whose path is one of `routes` go to that endpoint, with request metrics and the access log;
    all other traffic, and every non-HTTP scope (lifespan), to `app`."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, ASGIApp], access_log: bool = True):
        self.app = app
        self.routes = dict(routes)
        self.access_log = logging.getLogger("bentoml.access") if access_log else None
        self._metrics: RequestMetrics | None = None

    async def __call__(self, scope: dict, receive, send) -> None:
        endpoint = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            return await self.app(scope, receive, send)
        if self._metrics is None:  # BentoML's server context (names, versions) is complete once requests come in
            self._metrics = RequestMetrics()
        route = scope["path"]
        started = time.perf_counter()
        status = 0
        length = ""

        async def watched_send(message: dict) -> None:
            nonlocal status, length
            if message["type"] == "http.response.start":
                status = message["status"]
                length = _header(message.get("headers", ()), b"content-length")
            await send(message)

        self._metrics.started(route)
        try:
            await endpoint(scope, receive, watched_send)
        except Exception:
            logging.getLogger("bentoml.serve").exception("%s %s failed", scope["method"], route)
            if status:  # the answer had started: nothing more can be said on this connection
                raise
            status = 500
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(_INTERNAL_ERROR)).encode())]})
            await send({"type": "http.response.body", "body": _INTERNAL_ERROR})
        finally:
            seconds = time.perf_counter() - started
            self._metrics.finished(route, status, seconds)
            if self.access_log is not None:
                client = scope.get("client")
                self.access_log.info("%s (scheme=%s,method=%s,path=%s,length=%s) (status=%s,length=%s) %.3fms",
                                     f"{client[0]}:{client[1]}" if client else "_", scope.get("scheme", "http"),
                                     scope["method"], route, _header(scope.get("headers", ()), b"content-length"),
                                     status, length, seconds * 1e3)


def _header(headers, name: bytes) -> str:
    """An ASGI header's value ('' if absent)."""
    return next((v.decode() for k, v in headers if k == name), "")


def serve_in_front(
    service: Any, routes: Mapping[str, ASGIApp], access_log: bool = True, enabled: bool = True
) -> bool:
    """Make `service.to_asgi()` -- what `bentoml serve` and in-process clients call -- put `routes` in front of
    BentoML's app. Off with enabled=False (`serving.fast_lane`; then the routes' BentoML mounts answer them).
    Returns whether the lane is installed.

    The service object becomes an instance of a subclass of its BentoML `Service` class whose only change is that
    `to_asgi` wraps the app BentoML built; nothing of BentoML itself is patched.
    """
    if not enabled:
        return False
    base = type(service)
    if getattr(base, "_bgmrec_fast_lane", False):
        return True

    class _WithFastLane(base):  # type: ignore[misc, valid-type]
        __slots__ = ()
        _bgmrec_fast_lane = True

        def to_asgi(self, is_main: bool = True) -> ASGIApp:
            return FastLane(super().to_asgi(is_main), routes, access_log)

    _WithFastLane.__name__ = _WithFastLane.__qualname__ = f"{base.__name__}WithFastLane"
    service.__class__ = _WithFastLane
    return True
