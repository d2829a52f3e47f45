"""Health and metadata: /healthz, /readyz, /model, /metrics."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from mycolens.serving import schemas
from mycolens.serving.metrics import ServeMetrics
from mycolens.serving.routes.common import ERRORS, ModelView


def health_router(view: ModelView, metrics: ServeMetrics) -> APIRouter:
    """Liveness, readiness, the served model's metadata and the Prometheus text of `metrics`."""
    router = APIRouter()

    @router.get("/healthz", response_model=schemas.Health, tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @router.get("/readyz", response_model=schemas.Ready, responses={503: ERRORS[503]}, tags=["health"])
    async def readyz() -> dict[str, Any]:
        """Readiness: a model replica answers with a loaded model."""
        info = await view.ready()
        return {"ready": True, "model": {k: info[k] for k in ("name", "version", "variant")}}

    @router.get("/model", response_model=schemas.ModelInfo, responses={503: ERRORS[503]}, tags=["model"])
    async def model() -> Response:
        """The served model: classes, input size, versions, evaluation metrics (metrics.json)."""
        return JSONResponse(await view.ready())

    @router.get("/metrics", response_class=Response, tags=["health"], responses={200: {"content": {"text/plain": {}}}})
    async def prometheus() -> Response:
        """Prometheus text: requests by route/status, latency, batch sizes, verdicts, model version."""
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    return router
