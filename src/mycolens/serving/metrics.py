"""Prometheus metrics of one ingress replica (prometheus-client, own registry) and the ASGI middleware that counts."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

ROUTE_KEY = "mycolens.route"  # scope key: the route template of a request answered before routing (ratelimit.py)
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    """Request counts by route/status, latency, model batch sizes, verdicts, input errors, rate-limit refusals, the
    served model."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # no *_created series: they only double the scrape
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mycolens_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mycolens_http_request_duration_seconds",
            "HTTP request latency in the ingress",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "mycolens_batch_size",
            "Images per ONNX Runtime batch of the model deployment (/predict)",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.verdicts = Counter("mycolens_verdicts", "Verdicts answered by /predict", ["verdict"], registry=r)
        self.input_errors = Counter(
            "mycolens_input_errors", "Requests refused for bad input, by error code", ["code"], registry=r
        )
        self.model_info = Gauge(
            "mycolens_model_info", "The served model (value 1)", ["name", "version", "variant"], registry=r
        )
        self.rate_limited = Counter(
            "mycolens_rate_limited",
            "Requests refused with 429 by a per-client rate limit (serve.rate_limits), by limit",
            ["limit"],
            registry=r,
        )
        self.hook_errors = Counter("mycolens_hook_errors", "Prediction hook calls that raised", registry=r)
        self.hook_dropped = Counter("mycolens_hook_dropped", "Prediction hook calls dropped (queue full)", registry=r)
        self.reloads = Counter("mycolens_model_reloads", "Model reload requests by result", ["result"], registry=r)
        self._model: tuple[str, str, str] | None = None

    def set_model(self, name: str, version: str, variant: str) -> None:
        """Point the model-info gauge at the served model (one label set at a time)."""
        key = (name, version, variant)
        if key != self._model:
            self.model_info.clear()
            self.model_info.labels(*key).set(1)
            self._model = key

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP response by route template and status, and times it."""

    def __init__(self, app: Callable[..., Awaitable[Any]], metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = (
                getattr(route, "path", None)
                or scope.get(ROUTE_KEY)  # answered before routing (a rate limit's 429)
                or ("/static" if scope.get("path", "").startswith("/static/") else "unmatched")
            )
            self.metrics.requests.labels(path, scope.get("method", ""), str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
