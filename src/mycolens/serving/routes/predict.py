"""POST /predict: a photo in, the conservative verdict out."""

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from mycolens.inference.onnx_model import ModelRefused
from mycolens.serving import schemas
from mycolens.serving.errors import ApiError
from mycolens.serving.hooks import PredictionHooks
from mycolens.serving.metrics import ServeMetrics
from mycolens.serving.routes.common import ERRORS, Backend, ModelView
from mycolens.serving.settings import Limits
from mycolens.serving.uploads import extract_image, read_limited

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


def predict_router(
    lim: Limits, backend: Backend, view: ModelView, metrics: ServeMetrics, hooks: PredictionHooks
) -> APIRouter:
    """POST /predict over `backend`; answers feed `metrics` and the prediction `hooks`."""
    router = APIRouter()

    @router.post(
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
        hooks.emit(result["crop"], np.asarray(result["probs"]), tuple(result["original_size"]))
        return JSONResponse(answer)

    return router
