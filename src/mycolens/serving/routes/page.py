"""The web page: GET /, its service worker GET /sw.js (scope /, for field mode offline) and the /static files."""

from pathlib import Path

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
