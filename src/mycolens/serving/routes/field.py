"""Field mode: what the page needs to answer on the device. GET /field/model.json and /field/model/{variant} stream
the served model folder's files, each with its content hash as ETag; GET /field/ort/{name} serves ONNX Runtime
Web's files from the local npm install (serve/web/node_modules, `make web`), never a CDN."""

import hashlib
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from mycolens.inference.onnx_model import VARIANTS
from mycolens.serving.errors import ApiError
from mycolens.serving.routes.common import ERRORS, ModelView
from mycolens.serving.settings import Limits

# the ONNX Runtime Web files the page loads: the WASM-only ES module and its single WASM build (SIMD, threads when
# the page is cross-origin isolated, one thread otherwise)
ORT_FILES = {
    "ort.wasm.min.mjs": "text/javascript",
    "ort-wasm-simd-threaded.mjs": "text/javascript",
    "ort-wasm-simd-threaded.wasm": "application/wasm",
}
ORT_DIST = Path("web") / "node_modules" / "onnxruntime-web" / "dist"  # under serve/, beside serve/static
REVALIDATE = {"Cache-Control": "no-cache"}  # the page may keep a copy but asks again (If-None-Match) each time


def ort_dir_for(static_dir: Path | None) -> Path | None:
    """ONNX Runtime Web's dist folder beside the page's static folder (serve/web/node_modules/...)."""
    return static_dir.parent / ORT_DIST if static_dir is not None else None


class _Hashes:
    """sha256 of files, recomputed only when a file's size or mtime changes."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, int, str]] = {}

    def __call__(self, path: Path) -> str:
        st = path.stat()
        key = str(path)
        cached = self.seen.get(key)
        if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
            return cached[2]
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        self.seen[key] = (st.st_size, st.st_mtime_ns, h.hexdigest())
        return h.hexdigest()


def _etag_response(request: Request, path: Path, etag: str, media_type: str, headers: dict[str, str]) -> Response:
    tag = f'"{etag}"'
    all_headers = {**REVALIDATE, **headers, "ETag": tag}
    if tag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=all_headers)
    return FileResponse(path, media_type=media_type, headers=all_headers)


def field_router(view: ModelView, ort_dir: Path | None, limits: Limits, wasm_threads: int) -> APIRouter:
    """The served model's files and ONNX Runtime Web's, for the page's on-device answers; model.json's answer
    carries the server's photo limits (X-Mycolens-Max-Bytes, -Max-Pixels, -Min-Side) so the device refuses alike,
    and X-Mycolens-Wasm-Threads (serve.field.wasm_threads)."""
    router = APIRouter()
    hashes = _Hashes()

    async def served() -> tuple[dict[str, Any], Path]:
        info = await view.ready()
        return info, Path(info["model_dir"])

    @router.get("/field/model.json", tags=["field"], responses={503: ERRORS[503]}, response_class=Response)
    async def model_json(request: Request) -> Response:
        """The served model's model.json as it is on disk; ETag its sha256 (the page's model version), header
        X-Mycolens-Variant the variant the server runs, X-Mycolens-Max-* the server's photo limits,
        X-Mycolens-Wasm-Threads the device's ONNX Runtime Web threads."""
        info, folder = await served()
        path = folder / "model.json"
        if not path.is_file():
            raise ApiError(503, "model_unavailable", f"{path} is missing")
        headers = {
            "X-Mycolens-Variant": str(info["variant"]),
            "X-Mycolens-Max-Bytes": str(limits.max_body_bytes),
            "X-Mycolens-Max-Pixels": str(limits.max_pixels),
            "X-Mycolens-Min-Side": str(limits.min_side),
            "X-Mycolens-Wasm-Threads": str(wasm_threads),
        }
        return _etag_response(request, path, hashes(path), "application/json", headers)

    @router.get("/field/model/{variant}", tags=["field"], responses={503: ERRORS[503]})
    async def model_file(variant: str, request: Request) -> Response:
        """The served folder's ONNX file of `variant` (fp32 | int8), only while its content matches model.json's
        sha256 (the ETag)."""
        if variant not in VARIANTS:
            raise ApiError(404, "not_found", f"no variant {variant!r}; use one of {', '.join(VARIANTS)}")
        _, folder = await served()
        meta = json.loads((folder / "model.json").read_text())
        entry = meta.get("files", {}).get(variant)
        if entry is None:
            raise ApiError(404, "not_found", f"the served model.json has no {variant} file")
        path = folder / entry["path"]
        if not path.is_file() or hashes(path) != entry["sha256"]:
            raise ApiError(503, "model_unavailable", f"{path.name} is missing or differs from model.json's sha256")
        return _etag_response(request, path, entry["sha256"], "application/octet-stream", {})

    @router.get("/field/ort/{name}", tags=["field"], include_in_schema=False)
    async def ort_file(name: str) -> Response:
        """ONNX Runtime Web's files from the local npm install (`make web`)."""
        if name not in ORT_FILES:
            raise ApiError(404, "not_found", f"no such file {name!r}")
        path = ort_dir / name if ort_dir is not None else None
        if path is None or not path.is_file():
            raise ApiError(503, "field_mode_unavailable", "ONNX Runtime Web is not installed: run `make web`")
        return FileResponse(path, media_type=ORT_FILES[name], headers=REVALIDATE)

    return router
