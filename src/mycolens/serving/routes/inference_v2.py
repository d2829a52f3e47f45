"""The Open Inference Protocol (KServe v2): server and model metadata, health, and tensor inference.

Errors here answer the protocol's `{"error": "<message>"}` (api.install_error_handlers picks the shape by path).
"""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

import mycolens
from mycolens.serving import schemas, v2
from mycolens.serving.errors import ApiError
from mycolens.serving.routes.common import V2_ERRORS, Backend, ModelView
from mycolens.serving.settings import Limits
from mycolens.serving.uploads import read_limited

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
INFER_ROUTE: dict[str, Any] = {
    "response_model": schemas.V2InferResponse,
    "responses": V2_ERRORS,
    "openapi_extra": V2_INFER_DOC,
    "tags": ["v2"],
}


def v2_router(lim: Limits, backend: Backend, view: ModelView) -> APIRouter:
    """The /v2 routes over `backend`: metadata of the served model, readiness, inference on FP32 NCHW tensors."""
    router = APIRouter()

    async def served(name: str, version: str | None = None) -> dict[str, Any]:
        info = await view.current()
        if name != info["name"] or (version is not None and version != info["version"]):
            want = f"{name}" + (f" version {version}" if version else "")
            raise ApiError(
                404, "model_not_found", f"no model {want!r}; serving {info['name']!r} version {info['version']!r}"
            )
        return info

    async def infer(request: Request, name: str, version: str | None) -> Response:
        info = await served(name, version)
        body = await read_limited(request.stream(), lim.max_body_bytes, request.headers.get("content-length"))
        req = v2.parse_infer(body, request.headers.get(v2.HEADER_LENGTH), info, lim.max_v2_batch)
        result = await backend.infer(req.x)
        view.seen(result["model"])
        content, headers = v2.infer_response(req, result)
        return Response(content, headers=headers, media_type=headers["content-type"])

    @router.get("/v2", tags=["v2"])
    async def v2_server() -> dict[str, Any]:
        """v2 server metadata."""
        return v2.server_metadata(mycolens.__version__)

    @router.get("/v2/health/live", tags=["v2"])
    async def v2_live() -> dict[str, bool]:
        """v2 liveness."""
        return {"live": True}

    @router.get("/v2/health/ready", tags=["v2"], responses={503: V2_ERRORS[503]})
    async def v2_ready() -> dict[str, bool]:
        """v2 readiness."""
        await view.ready()
        return {"ready": True}

    @router.get(
        "/v2/models/{name}", response_model=schemas.V2ModelMetadata, responses={404: V2_ERRORS[404]}, tags=["v2"]
    )
    async def v2_metadata(name: str) -> dict[str, Any]:
        """v2 model metadata: input and output tensor names, shapes, datatypes."""
        return v2.model_metadata(await served(name))

    @router.get(
        "/v2/models/{name}/versions/{version}",
        response_model=schemas.V2ModelMetadata,
        responses={404: V2_ERRORS[404]},
        tags=["v2"],
    )
    async def v2_metadata_version(name: str, version: str) -> dict[str, Any]:
        """v2 model metadata of a given version (the served one)."""
        return v2.model_metadata(await served(name, version))

    @router.get("/v2/models/{name}/ready", tags=["v2"], responses={404: V2_ERRORS[404], 503: V2_ERRORS[503]})
    async def v2_model_ready(name: str) -> dict[str, Any]:
        """v2 model readiness."""
        await served(name)
        return {"name": name, "ready": True}

    @router.post("/v2/models/{name}/infer", **INFER_ROUTE)
    async def v2_infer(request: Request, name: str) -> Response:
        """v2 inference on a preprocessed FP32 NCHW tensor: calibrated probabilities (and logits)."""
        return await infer(request, name, None)

    @router.post("/v2/models/{name}/versions/{version}/infer", **INFER_ROUTE)
    async def v2_infer_version(request: Request, name: str, version: str) -> Response:
        """v2 inference against a given model version (the served one)."""
        return await infer(request, name, version)

    return router
