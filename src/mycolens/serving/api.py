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
from mycolens.serving.errors import ApiError, error_response, validation_message
from mycolens.serving.hooks import IngressContext
from mycolens.serving.images import answer_photos
from mycolens.serving.metrics import MetricsMiddleware, ServeMetrics
from mycolens.serving.model import ModelRunner
from mycolens.serving.routes.admin import admin_router
from mycolens.serving.routes.common import Backend, ModelView
from mycolens.serving.routes.health import health_router
from mycolens.serving.routes.inference_v2 import v2_router
from mycolens.serving.routes.page import mount_static, page_router
from mycolens.serving.routes.predict import predict_router
from mycolens.serving.settings import Limits, ServeSettings

__all__ = ["Backend", "LocalBackend", "ModelView", "build_api", "install_error_handlers"]
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
    """Every error, FastAPI's own included, answers `{"error": {"code", "message"}}`."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        if 400 <= exc.status < 500:
            metrics.input_errors.labels(exc.code).inc()
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.input_errors.labels("invalid_parameter").inc()
        return error_response(422, "invalid_parameter", validation_message(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal", f"internal error ({exc.__class__.__name__})")


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
    """The ingress app: /predict, /model, health, /metrics, the v2 protocol, /admin/reload, the page and plug-in routers."""
    view = ModelView(backend, metrics)
    ctx.model_info = view.get
    app = FastAPI(
        title=settings.app_title,
        version=mycolens.__version__,
        description='A mushroom photo in, a safe answer out. Errors are always `{"error": {"code", "message"}}`.',
    )
    app.state.mycolens = ctx
    install_error_handlers(app, metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(predict_router(settings.limits, backend, view, metrics, ctx.hooks))
    app.include_router(health_router(view, metrics))
    app.include_router(v2_router(settings.limits, backend, view))
    app.include_router(admin_router(settings, backend, view, metrics))
    mount_static(app, static_dir)
    app.include_router(page_router(static_dir))
    for router in routers:
        app.include_router(router)
    for setup in setups:
        setup(ctx)
    return app
