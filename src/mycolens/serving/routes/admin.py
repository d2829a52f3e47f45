"""POST /admin/reload: swap the served model, behind a bearer token."""

import hmac
from typing import Any

from fastapi import APIRouter, Request

from mycolens.inference.onnx_model import ModelRefused
from mycolens.serving import schemas
from mycolens.serving.errors import ApiError
from mycolens.serving.metrics import ServeMetrics
from mycolens.serving.routes.common import ERRORS, Backend, ModelView
from mycolens.serving.settings import ServeSettings


def admin_router(settings: ServeSettings, backend: Backend, view: ModelView, metrics: ServeMetrics) -> APIRouter:
    """POST /admin/reload: checks the token of `settings`, reloads through `backend`, counts outcomes in `metrics`."""
    router = APIRouter()

    @router.post(
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
        variant = spec.variant or (await view.current())["variant"]
        try:
            info = await backend.reload(spec.model_dir, variant)
        except ModelRefused as exc:
            metrics.reloads.labels("refused").inc()
            raise ApiError(409, "model_refused", f"{exc}; the current model keeps serving") from None
        metrics.reloads.labels("ok").inc()
        view.info = None
        return {"status": "reloaded", "model": {k: info[k] for k in ("name", "version", "variant")}}

    return router
