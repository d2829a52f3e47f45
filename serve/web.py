"""Routes behind the web page: GET /monitoring/drift, GET and POST /feedback (the page is serve/static/).

The ingress (serve/deployments.py) includes `router` and calls `setup(ctx)` once per ingress replica with its
IngressContext (src/mycolens/serving/hooks.py), whose config's `web` is the composed conf/monitoring section.
Ray-free: tests mount the router on a plain FastAPI app.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from omegaconf import OmegaConf
from starlette.datastructures import UploadFile

from mycolens.catalogue import Catalogue
from mycolens.monitoring.drift import DriftMonitor
from mycolens.monitoring.feedback import FeedbackError, store_feedback
from mycolens.monitoring.reference import ReferenceError
from mycolens.serving.errors import error_response

log = logging.getLogger("mycolens.web")
router = APIRouter(tags=["web"])
MULTIPART_OVERHEAD = 64 * 1024  # headers and the species field around the photo in a multipart body


def monitoring_settings(web: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """The ingress's `web` config (the composed `monitoring` section; legacy drift / feedback_dir keys folded in).

    A relative feedback folder is taken from `root`.
    """
    web = dict(web)
    legacy_drift = web.pop("drift", None) or {}
    legacy_dir = web.pop("feedback_dir", None)
    merged = OmegaConf.to_container(OmegaConf.merge(legacy_drift, web), resolve=False)
    if legacy_dir and "dir" not in (web.get("feedback") or {}):
        merged["feedback"]["dir"] = legacy_dir
    folder = str(merged["feedback"]["dir"])
    merged["feedback"]["dir"] = str(root / folder) if not Path(folder).is_absolute() else folder
    return merged


def setup(ctx: Any) -> None:
    """Per ingress replica: read the settings, start the drift monitor for the served model folder, hook it to /predict."""
    root = Path(ctx.root)
    settings = monitoring_settings(ctx.config["web"], root)
    ctx.state["web"] = settings
    ctx.state["drift"] = None
    load_model_folder(ctx, ctx.config.get("model_dir") or root / "models" / "export")

    def observe(image_hwc: Any, probs: Any, original_size: Any = None, **_: Any) -> None:
        monitor: DriftMonitor | None = ctx.state.get("drift")
        if monitor is not None:
            monitor.observe(image_hwc, probs, original_size=original_size)

    ctx.on_prediction(observe)


def load_model_folder(ctx: Any, model_dir: str | Path) -> None:
    """Catalogue and drift reference of a model folder (its reference.json unless monitoring.reference is set)."""
    root = Path(ctx.root)
    model_dir = Path(model_dir) if Path(model_dir).is_absolute() else root / model_dir
    settings = ctx.state["web"]
    ctx.state["model_dir"] = str(model_dir)
    ctx.state["catalogue"] = _catalogue(model_dir) or ctx.state.get("catalogue")
    reference = Path(settings["reference"]) if settings.get("reference") else model_dir / "reference.json"
    old: DriftMonitor | None = ctx.state.get("drift")
    try:
        monitor: DriftMonitor | None = DriftMonitor.from_settings(reference, settings)
        ctx.state["drift_error"] = ""
    except (ReferenceError, ValueError) as exc:
        monitor = None
        ctx.state["drift_error"] = str(exc)
        log.warning("drift monitoring is off: %s", exc)
    if old is not None:
        old.unregister()
    if monitor is not None:
        monitor.register(getattr(ctx, "metrics_registry", None))
    ctx.state["drift"] = monitor


async def follow_served_model(request: Request) -> None:
    """After a model reload to another folder, switch to that folder's reference (and start a fresh window)."""
    ctx = getattr(request.app.state, "mycolens", None)
    if ctx is None or getattr(ctx, "model_info", None) is None or ctx.state["web"].get("reference"):
        return
    try:
        info = await ctx.model_info()
    except Exception:  # the model may be loading; keep the current reference
        return
    model_dir = info.get("model_dir") if isinstance(info, dict) else None
    if model_dir and str(model_dir) != ctx.state.get("model_dir"):
        load_model_folder(ctx, model_dir)


def _catalogue(model_dir: Path) -> Catalogue | None:
    try:
        return Catalogue.from_dict(json.loads((model_dir / "model.json").read_text())["catalogue"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("no catalogue for feedback from %s: %s", model_dir, exc)
        return None


def _state(request: Request) -> dict[str, Any]:
    ctx = getattr(request.app.state, "mycolens", None)
    return ctx.state if ctx is not None else {}


@router.get("/monitoring/drift")
async def drift_report(request: Request) -> Any:
    """Per feature: drift score (PSI or KS), threshold and drifted flag, over the rolling window of live requests."""
    await follow_served_model(request)
    state = _state(request)
    monitor: DriftMonitor | None = state.get("drift")
    if monitor is None:
        return error_response(503, "no_reference", state.get("drift_error") or "drift monitoring is not set up")
    return monitor.report()


@router.get("/feedback")
async def feedback_info(request: Request) -> Any:
    """Whether feedback is on, its size limit, and the species a person may choose from."""
    await follow_served_model(request)
    state = _state(request)
    settings = state.get("web") or {}
    fb = settings.get("feedback") or {}
    catalogue: Catalogue | None = state.get("catalogue")
    species = [
        {"id": s.id, "common_name": s.common_name, "scientific_name": s.scientific_name, "edibility": s.edibility}
        for s in (catalogue.species if catalogue else ())
    ]
    return {
        "enabled": bool(fb.get("enabled")) and catalogue is not None,
        "max_bytes": fb.get("max_bytes"),
        "species": species,
    }


@router.post("/feedback", status_code=201)
async def feedback(request: Request) -> Any:
    """Multipart `file` + `species`: store the photo as <feedback dir>/<species>/<sha256>.jpg for the next retrain."""
    await follow_served_model(request)
    state = _state(request)
    fb = (state.get("web") or {}).get("feedback") or {}
    catalogue: Catalogue | None = state.get("catalogue")
    if not fb.get("enabled") or catalogue is None:
        return error_response(
            404, "feedback_disabled", "feedback is switched off on this server (monitoring.feedback.enabled)"
        )
    max_bytes = int(fb["max_bytes"])
    limit = max_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return error_response(413, "too_large", f"request body over the limit of {max_bytes} bytes for a photo")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return error_response(413, "too_large", f"request body over the limit of {max_bytes} bytes for a photo")
    form_request = Request(request.scope, receive=_replay(bytes(body)))
    try:
        form = await form_request.form(max_files=1, max_fields=4, max_part_size=4096)
    except Exception as exc:  # malformed multipart: starlette raises HTTPException or MultiPartException
        return error_response(400, "bad_request", f"not a readable multipart form ({getattr(exc, 'detail', exc)})")
    try:
        upload, species = form.get("file"), form.get("species")
        if not isinstance(upload, UploadFile) or not isinstance(species, str):
            return error_response(
                422, "bad_request", "send multipart fields `file` (the photo) and `species` (a species id)"
            )
        data = await upload.read()
        stored = store_feedback(
            fb["dir"],
            species.strip(),
            data,
            catalogue,
            max_bytes,
            filename=upload.filename,
            max_pixels=int(fb["max_pixels"]),
            max_files=int(fb["max_files"]) if fb.get("max_files") else None,
        )
    except FeedbackError as exc:
        return error_response(exc.status, exc.code, str(exc))
    finally:
        await form.close()
    return JSONResponse(stored.to_dict(), status_code=201)


def _replay(body: bytes) -> Any:
    """An ASGI receive() that hands back an already-read body once."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
