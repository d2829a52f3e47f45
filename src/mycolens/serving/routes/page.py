"""The web page: GET /, its service worker GET /sw.js (scope /, for field mode offline) and the /static files;
optionally cross-origin isolated (COOP/COEP), so field mode's ONNX Runtime Web may run WASM threads."""

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles


def mount_static(app: FastAPI, static_dir: Path | None) -> None:
    """Serve `static_dir` under /static when it is a folder."""
    if static_dir is not None and static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir, check_dir=False), name="static")


def page_router(static_dir: Path | None) -> APIRouter:
    """GET /: `static_dir`/index.html, or a JSON pointer to the API when there is no page."""
    router = APIRouter()
    index = static_dir / "index.html" if static_dir else None

    @router.get("/", include_in_schema=True, tags=["web"], response_class=Response)
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

    worker = static_dir / "sw.js" if static_dir else None

    @router.get("/sw.js", include_in_schema=False)
    async def service_worker() -> Response:
        """The page's service worker (serve/static/sw.js), served at the root so its scope is the whole app."""
        if worker is None or not worker.is_file():
            return JSONResponse({"error": {"code": "not_found", "message": "no service worker"}}, status_code=404)
        return FileResponse(worker, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    return router


# Cross-origin isolation (window.crossOriginIsolated): SharedArrayBuffer, hence WASM threads. Every resource the page
# loads is same-origin, so require-corp blocks nothing of it.
ISOLATION_HEADERS = [
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
]
PAGE_PATHS = ("/", "/sw.js")
PAGE_PREFIXES = ("/static/", "/field/")


class CrossOriginIsolation:
    """ASGI middleware: COOP same-origin + COEP require-corp on the page, its service worker, /static and /field."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path not in PAGE_PATHS and not path.startswith(PAGE_PREFIXES):
            await self.app(scope, receive, send)
            return

        async def send_isolated(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *ISOLATION_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_isolated)
