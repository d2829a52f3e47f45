"""The FastAPI app of the HTTP contract, over any backend that runs the model (a Ray Serve handle or in-process)."""

import asyncio
import hmac
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import mycolens
from mycolens.inference.onnx_model import ModelRefused
from mycolens.serving import schemas, v2
from mycolens.serving.errors import ApiError, error_body, validation_message
from mycolens.serving.hooks import IngressContext
from mycolens.serving.images import answer_photos
from mycolens.serving.metrics import MetricsMiddleware, ServeMetrics
from mycolens.serving.model import ModelRunner
from mycolens.serving.settings import Limits, ServeSettings
from mycolens.serving.uploads import extract_image, read_limited

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorBody, "description": "not an image, truncated, empty, or malformed request"},
    413: {"model": schemas.ErrorBody, "description": "body or pixel count over the limit"},
    415: {"model": schemas.ErrorBody, "description": "unsupported image or content type"},
    422: {"model": schemas.ErrorBody, "description": "bad parameters"},
    503: {"model": schemas.ErrorBody, "description": "model not available"},
}
MULTIPART_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "JPEG, PNG or WebP photo"}
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
V2_INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": schemas.V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary", "description": "binary tensor extension"}
            },
        },
    }
}


class Backend(Protocol):
    """Decodes photos and runs the model: Ray Serve handles in serve/app.py, in-process for tests and local use."""

    async def predict(self, photo: bytes, top_k: int) -> dict[str, Any]:
        """{answer, probs, batch_size, crop, original_size}, or {"error": {status, code, message}} for a bad photo."""
        ...

    async def infer(self, x: np.ndarray) -> dict[str, Any]: ...

    async def info(self) -> dict[str, Any]: ...

    async def reload(self, model_dir: str, variant: str) -> dict[str, Any]: ...


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


class ModelView:
    """The ingress's cached view of the served model (input size, name, version); refreshed when the version changes."""

    def __init__(self, backend: Backend, metrics: ServeMetrics) -> None:
        self.backend, self.metrics = backend, metrics
        self.info: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def get(self, refresh: bool = False) -> dict[str, Any]:
        if self.info is None or refresh:
            async with self._lock:
                info = await self.backend.info()
                self.info = info
                self.metrics.set_model(info["name"], info["version"], info["variant"])
        assert self.info is not None
        return self.info

    def seen(self, model: dict[str, str]) -> None:
        """Note the model that answered; a new version triggers a refresh of the cached info."""
        self.metrics.set_model(model["name"], model["version"], model["variant"])
        if self.info is not None and model["version"] != self.info["version"]:
            self.info = None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status)


def install_error_handlers(app: FastAPI, metrics: ServeMetrics) -> None:
    """Every error, FastAPI's own included, answers `{"error": {"code", "message"}}`."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        if 400 <= exc.status < 500:
            metrics.input_errors.labels(exc.code).inc()
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.input_errors.labels("invalid_parameter").inc()
        return _error(422, "invalid_parameter", validation_message(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal", f"internal error ({exc.__class__.__name__})")


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
    lim = settings.limits
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

    async def model_info() -> dict[str, Any]:
        try:
            return await view.get()
        except ApiError:
            raise
        except ModelRefused as exc:
            raise ApiError(503, "model_unavailable", str(exc)) from None

    @app.post(
        "/predict", response_model=schemas.Prediction, responses=ERRORS, openapi_extra=MULTIPART_DOC, tags=["predict"]
    )
    async def predict(
        request: Request,
        top_k: Annotated[int | None, Query(ge=1, le=lim.max_top_k, description="how many species to list")] = None,
    ) -> Response:
        """Classify a photo (multipart field `file`: JPEG, PNG or WebP) and give the conservative verdict."""
        k = top_k or lim.default_top_k
        body = await read_limited(request.stream(), lim.max_body_bytes, request.headers.get("content-length"))
        data = extract_image(body, request.headers.get("content-type"))
        try:
            result = await backend.predict(data, k)
        except ModelRefused as exc:  # no model loaded yet
            raise ApiError(503, "model_unavailable", str(exc)) from None
        if "error" in result:
            raise ApiError(**result["error"])
        answer = result["answer"]
        view.seen(answer["model"])
        metrics.verdicts.labels(answer["verdict"]).inc()
        if result.get("batch_first", True):
            metrics.batch_size.observe(result["batch_size"])
        ctx.hooks.emit(result["crop"], np.asarray(result["probs"]), tuple(result["original_size"]))
        return JSONResponse(answer)

    @app.get("/healthz", response_model=schemas.Health, tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=schemas.Ready, responses={503: ERRORS[503]}, tags=["health"])
    async def readyz() -> dict[str, Any]:
        """Readiness: a model replica answers with a loaded model."""
        info = await _ready_info()
        return {"ready": True, "model": {k: info[k] for k in ("name", "version", "variant")}}

    async def _ready_info() -> dict[str, Any]:
        try:
            return await asyncio.wait_for(view.get(refresh=True), timeout=5)
        except TimeoutError:
            raise ApiError(503, "not_ready", "the model deployment did not answer in 5 s") from None
        except ApiError:
            raise
        except Exception as exc:
            raise ApiError(503, "not_ready", f"model not ready: {exc}") from None

    @app.get("/model", response_model=schemas.ModelInfo, responses={503: ERRORS[503]}, tags=["model"])
    async def model() -> Response:
        """The served model: classes, input size, versions, evaluation metrics (metrics.json)."""
        return JSONResponse(await _ready_info())

    @app.get("/metrics", response_class=Response, tags=["health"], responses={200: {"content": {"text/plain": {}}}})
    async def prometheus() -> Response:
        """Prometheus text: requests by route/status, latency, batch sizes, verdicts, model version."""
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    # ------------------------------------------------------------ Open Inference Protocol (KServe v2)

    @app.get("/v2", tags=["v2"])
    async def v2_server() -> dict[str, Any]:
        """v2 server metadata."""
        return v2.server_metadata(mycolens.__version__)

    @app.get("/v2/health/live", tags=["v2"])
    async def v2_live() -> dict[str, bool]:
        """v2 liveness."""
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"], responses={503: ERRORS[503]})
    async def v2_ready() -> dict[str, bool]:
        """v2 readiness."""
        await _ready_info()
        return {"ready": True}

    async def _v2_model(name: str, version: str | None = None) -> dict[str, Any]:
        info = await model_info()
        if name != info["name"] or (version is not None and version != info["version"]):
            want = f"{name}" + (f" version {version}" if version else "")
            raise ApiError(
                404, "model_not_found", f"no model {want!r}; serving {info['name']!r} version {info['version']!r}"
            )
        return info

    @app.get("/v2/models/{name}", response_model=schemas.V2ModelMetadata, responses={404: ERRORS[400]}, tags=["v2"])
    async def v2_metadata(name: str) -> dict[str, Any]:
        """v2 model metadata: input and output tensor names, shapes, datatypes."""
        return v2.model_metadata(await _v2_model(name))

    @app.get("/v2/models/{name}/versions/{version}", response_model=schemas.V2ModelMetadata, tags=["v2"])
    async def v2_metadata_version(name: str, version: str) -> dict[str, Any]:
        """v2 model metadata of a given version (the served one)."""
        return v2.model_metadata(await _v2_model(name, version))

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    async def v2_model_ready(name: str) -> dict[str, Any]:
        """v2 model readiness."""
        await _v2_model(name)
        return {"name": name, "ready": True}

    async def _v2_infer(request: Request, name: str, version: str | None) -> Response:
        info = await _v2_model(name, version)
        body = await read_limited(request.stream(), lim.max_body_bytes, request.headers.get("content-length"))
        req = v2.parse_infer(body, request.headers.get(v2.HEADER_LENGTH), info, lim.max_v2_batch)
        result = await backend.infer(req.x)
        view.seen(result["model"])
        content, headers = v2.infer_response(req, result)
        return Response(content, headers=headers, media_type=headers["content-type"])

    @app.post(
        "/v2/models/{name}/infer",
        response_model=schemas.V2InferResponse,
        responses=ERRORS,
        openapi_extra=V2_INFER_DOC,
        tags=["v2"],
    )
    async def v2_infer(request: Request, name: str) -> Response:
        """v2 inference on a preprocessed FP32 NCHW tensor: calibrated probabilities (and logits)."""
        return await _v2_infer(request, name, None)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        response_model=schemas.V2InferResponse,
        responses=ERRORS,
        openapi_extra=V2_INFER_DOC,
        tags=["v2"],
    )
    async def v2_infer_version(request: Request, name: str, version: str) -> Response:
        """v2 inference against a given model version (the served one)."""
        return await _v2_infer(request, name, version)

    # ------------------------------------------------------------ admin

    @app.post(
        "/admin/reload",
        response_model=schemas.ReloadResult,
        responses={401: ERRORS[400], 403: ERRORS[400], 409: ERRORS[400], 422: ERRORS[422]},
        tags=["admin"],
    )
    async def reload(request: Request, spec: schemas.ReloadRequest) -> dict[str, Any]:
        """Swap the served model for another folder (hash and safety gate checked first). Needs `Authorization: Bearer <token>`."""
        token = settings.reload_token()
        if token is None:
            raise ApiError(
                403,
                "reload_disabled",
                f"model reload over HTTP is disabled: set {settings.reload_token_env} on the cluster",
            )
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            metrics.reloads.labels("unauthorized").inc()
            raise ApiError(401, "unauthorized", "missing or wrong reload token (Authorization: Bearer <token>)")
        variant = spec.variant or (await model_info())["variant"]
        try:
            info = await backend.reload(spec.model_dir, variant)
        except ModelRefused as exc:
            metrics.reloads.labels("refused").inc()
            raise ApiError(409, "model_refused", f"{exc}; the current model keeps serving") from None
        metrics.reloads.labels("ok").inc()
        view.info = None
        return {"status": "reloaded", "model": {k: info[k] for k in ("name", "version", "variant")}}

    # ------------------------------------------------------------ web page and plug-ins

    index = static_dir / "index.html" if static_dir else None
    if static_dir is not None and static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir, check_dir=False), name="static")

    @app.get("/", include_in_schema=True, tags=["web"], response_class=Response)
    async def page() -> Response:
        """The web page (serve/static/index.html)."""
        if index is not None and index.is_file():
            return FileResponse(index, media_type="text/html")
        return JSONResponse(
            {
                "name": "mycolens",
                "docs": "/docs",
                "openapi": "/openapi.json",
                "predict": "POST /predict (multipart field 'file')",
            }
        )

    for router in routers:
        app.include_router(router)
    for setup in setups:
        setup(ctx)
    return app
