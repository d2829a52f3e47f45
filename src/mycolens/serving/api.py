"""The FastAPI app of the HTTP contract, over any backend that runs the model (a Ray Serve handle or in-process).

The routes live in mycolens.serving.routes, one module per concern; build_api assembles them.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import mycolens
from mycolens.serving.errors import ApiError, error_response_for, is_v2_path, route_path, validation_message
from mycolens.serving.hooks import IngressContext
from mycolens.serving.images import answer_photos
from mycolens.serving.metrics import MetricsMiddleware, ServeMetrics
from mycolens.serving.model import ModelRunner
from mycolens.serving.ratelimit import RateLimiter, RateLimitMiddleware, match
from mycolens.serving.routes.admin import admin_router
from mycolens.serving.routes.common import RATE_LIMITED_DOC, RETRY_AFTER_DOC, Backend, ModelView
from mycolens.serving.routes.field import field_router, ort_dir_for
from mycolens.serving.routes.health import health_router
from mycolens.serving.routes.inference_v2 import v2_router
from mycolens.serving.routes.page import CrossOriginIsolation, mount_static, page_router
from mycolens.serving.routes.predict import predict_router
from mycolens.serving.settings import Limits, ServeSettings

__all__ = ["Backend", "LocalBackend", "ModelView", "build_api", "document_rate_limits", "install_error_handlers"]
log = logging.getLogger(__name__)


class LocalBackend:
    """The model in this process (tests, or serving without Ray): the same decode and answers as the model deployment."""

    def __init__(self, runner: ModelRunner, limits: Limits, decode_threads: int = 1) -> None:
        self.runner, self.limits = runner, limits
        self.pool = ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="mycolens-decode")

    async def _run(self, crops: list[np.ndarray], top_ks: list[int]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.runner.predict, crops, top_ks)

    async def predict(self, photo: bytes, top_k: int) -> dict[str, Any]:
        size = self.runner.require().image_size
        return (await answer_photos([photo], [top_k], size, self.limits, self.pool, self._run))[0]

    async def infer(self, x: np.ndarray) -> dict[str, Any]:
        return await asyncio.to_thread(self.runner.infer, x)

    async def info(self) -> dict[str, Any]:
        return self.runner.info()

    async def reload(self, model_dir: str, variant: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.runner.load, model_dir, variant)


def install_error_handlers(app: FastAPI, metrics: ServeMetrics) -> None:
    """Every error, FastAPI's own included, answers `{"error": {"code", "message"}}`; under /v2 the Open Inference
    Protocol's `{"error": "<message>"}` (same statuses)."""

    def answer(request: Request, status: int, code: str, message: str, headers: Any = None) -> JSONResponse:
        return error_response_for(route_path(request.scope), status, code, message, headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if 400 <= exc.status < 500:
            metrics.input_errors.labels(exc.code).inc()
        return answer(request, exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.input_errors.labels("invalid_parameter").inc()
        return answer(request, 422, "invalid_parameter", validation_message(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return answer(request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return answer(request, 500, "internal", f"internal error ({exc.__class__.__name__})")


def build_api(
    settings: ServeSettings,
    backend: Backend,
    ctx: IngressContext,
    metrics: ServeMetrics,
    *,
    static_dir: Path | None = None,
    routers: Iterable[APIRouter] = (),
    setups: Iterable[Callable[[IngressContext], Any]] = (),
) -> FastAPI:
    """The ingress app: /predict, /model, health, /metrics, the v2 protocol, /admin/reload, the page and plug-in routers.

    Per-client rate limits (settings.rate_limits) cover POST /predict, the v2 infer routes and POST /feedback (a
    plug-in route of serve/web.py): they match by method and path, so a router included here is covered too.
    """
    view = ModelView(backend, metrics)
    ctx.model_info = view.get
    app = FastAPI(
        title=settings.app_title,
        version=mycolens.__version__,
        description=(
            'A mushroom photo in, a safe answer out. Errors are `{"error": {"code", "message"}}`; under /v2 the Open '
            'Inference Protocol\'s `{"error": "<message>"}`. Over a per-client rate limit: 429 with Retry-After.'
        ),
    )
    app.state.mycolens = ctx
    install_error_handlers(app, metrics)
    # inside the metrics middleware, so 429s are counted by route and status like every other answer
    limiter = RateLimiter(settings.rate_limits)
    app.add_middleware(
        RateLimitMiddleware, limiter=limiter, on_limited=lambda limit: metrics.rate_limited.labels(limit).inc()
    )
    app.state.rate_limiter = limiter
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cross_origin_isolated:
        app.add_middleware(CrossOriginIsolation)
    app.include_router(predict_router(settings.limits, backend, view, metrics, ctx.hooks))
    app.include_router(health_router(view, metrics))
    app.include_router(v2_router(settings.limits, backend, view))
    app.include_router(admin_router(settings, backend, view, metrics))
    app.include_router(field_router(view, ort_dir_for(static_dir), settings.limits, settings.wasm_threads))
    mount_static(app, static_dir)
    app.include_router(page_router(static_dir))
    for router in routers:
        app.include_router(router)
    for setup in setups:
        setup(ctx)
    document_rate_limits(app)
    return app


def document_rate_limits(app: FastAPI) -> None:
    """Add the 429 answer to the OpenAPI operations a rate-limit rule covers (plug-in routes such as /feedback too)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        spec = generate()  # cached by FastAPI after the first call; the additions below are idempotent
        for path, operations in spec.get("paths", {}).items():
            for method, operation in operations.items():
                if not isinstance(operation, dict) or not match(method.upper(), path):
                    continue
                model = "V2ErrorBody" if is_v2_path(path) else "ErrorBody"
                operation.setdefault("responses", {}).setdefault(
                    "429",
                    {
                        "description": RATE_LIMITED_DOC,
                        "headers": {"Retry-After": {"description": RETRY_AFTER_DOC, "schema": {"type": "integer"}}},
                        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
                    },
                )
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
