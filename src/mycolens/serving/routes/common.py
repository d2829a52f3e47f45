"""What the route modules share: the backend they call, the cached view of the served model, the error docs."""

import asyncio
from typing import Any, Protocol

import numpy as np

from mycolens.inference.onnx_model import ModelRefused
from mycolens.serving import schemas
from mycolens.serving.errors import ApiError
from mycolens.serving.metrics import ServeMetrics

READY_TIMEOUT_S = 5  # how long readiness waits for the model deployment's answer
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorBody, "description": "not an image, truncated, empty, or malformed request"},
    413: {"model": schemas.ErrorBody, "description": "body or pixel count over the limit"},
    415: {"model": schemas.ErrorBody, "description": "unsupported image or content type"},
    422: {"model": schemas.ErrorBody, "description": "bad parameters"},
    503: {"model": schemas.ErrorBody, "description": "model not available"},
}
# the same statuses under /v2, in the Open Inference Protocol's shape {"error": "<message>"}
V2_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {**doc, "model": schemas.V2ErrorBody} for status, doc in ERRORS.items()
} | {404: {"model": schemas.V2ErrorBody, "description": "no such model or version"}}
# 429 over a per-client rate limit: api.document_rate_limits adds it to each operation a ratelimit rule covers
RATE_LIMITED_DOC = "over the client's rate limit (serve.rate_limits); retry after the Retry-After header's seconds"
RETRY_AFTER_DOC = "whole seconds (at least 1) until the client may retry"


class Backend(Protocol):
    """Decodes photos and runs the model: Ray Serve handles in serve/, in-process for tests and local use."""

    async def predict(self, photo: bytes, top_k: int) -> dict[str, Any]:
        """{answer, probs, batch_size, crop, original_size}, or {"error": {status, code, message}} for a bad photo."""
        ...

    async def infer(self, x: np.ndarray) -> dict[str, Any]: ...

    async def info(self) -> dict[str, Any]: ...

    async def reload(self, model_dir: str, variant: str) -> dict[str, Any]: ...


class ModelView:
    """The ingress's cached view of the served model (input size, name, version); refreshed when the version changes."""

    def __init__(self, backend: Backend, metrics: ServeMetrics) -> None:
        self.backend, self.metrics = backend, metrics
        self.info: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def get(self, refresh: bool = False) -> dict[str, Any]:
        """The model's info, asked of the backend when not cached (or `refresh`)."""
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

    async def current(self) -> dict[str, Any]:
        """The cached info; 503 model_unavailable when no model is loaded."""
        try:
            return await self.get()
        except ApiError:
            raise
        except ModelRefused as exc:
            raise ApiError(503, "model_unavailable", str(exc)) from None

    async def ready(self) -> dict[str, Any]:
        """Fresh info from a model replica; 503 not_ready when none answers with a loaded model."""
        try:
            return await asyncio.wait_for(self.get(refresh=True), timeout=READY_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(503, "not_ready", f"the model deployment did not answer in {READY_TIMEOUT_S} s") from None
        except ApiError:
            raise
        except Exception as exc:
            raise ApiError(503, "not_ready", f"model not ready: {exc}") from None
