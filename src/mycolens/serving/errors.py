"""The contract's JSON errors with the status each kind of bad input gets.

`{"error": {"code", "message"}}` everywhere but under /v2, where the Open Inference Protocol defines the error body
as `{"error": "<message>"}` (a string: v2 clients print it as is).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from mycolens.inference.preprocess import ImageRejected

# ImageRejected.code -> HTTP status (DESIGN.md: 400 not an image/truncated/empty, 413 too large, 415 unsupported type)
STATUS_BY_REJECTION = {
    "empty": 400,
    "truncated": 400,
    "not_image": 400,
    "too_large": 413,
    "unsupported": 415,
    "too_small": 422,
}
V2_PREFIX = "/v2"


class ApiError(Exception):
    """An HTTP error answered with `status` as `{"error": {"code", "message"}}` (under /v2: `{"error": message}`)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = int(status), code, message


def error_body(code: str, message: str, *, status: int | None = None) -> dict[str, Any]:
    """The contract's body `{"error": {"code", "message"}}`; with `status` inside too (a group's entry, images.py)."""
    inner: dict[str, Any] = {"code": code, "message": message}
    return {"error": inner if status is None else {"status": status, **inner}}


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The contract's error as a response with `status`."""
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path as the app routes it: without the root path (an app served under a route prefix)."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def is_v2_path(path: str) -> bool:
    """Whether `path` (the request path, without the root path) is an Open Inference Protocol route."""
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def v2_error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The Open Inference Protocol's error: `{"error": "<message>"}` with `status`."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def error_response_for(
    path: str, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The error in the shape of the route at `path`: a v2 string under /v2, the contract's object elsewhere."""
    if is_v2_path(path):
        return v2_error_response(status, message, headers)
    return error_response(status, code, message, headers)


def from_rejection(exc: ImageRejected) -> ApiError:
    """The ApiError for an image the decoder refused."""
    return ApiError(STATUS_BY_REJECTION.get(exc.code, 400), exc.code, str(exc))


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One line from FastAPI/pydantic validation errors: `where: what; ...`."""
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
