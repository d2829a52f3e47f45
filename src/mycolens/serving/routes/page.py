"""The web page: GET / and the /static files beside it."""

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

    return router
