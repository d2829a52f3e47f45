"""Routes behind the web pages: GET /monitoring/drift, GET and POST /feedback, the review page and its API.

POST /feedback queues a claim (mycolens.monitoring.claims); GET /review (serve/static/review.html) with
GET /review/claims, GET /review/claims/{id}/photo and POST /review/claims/{id} lets reviewers holding the token
from `monitoring.feedback.review_token_env` approve or reject claims.

The ingress (serve/deployments.py) includes `router` and calls `setup(ctx)` once per ingress replica with its
IngressContext (src/mycolens/serving/hooks.py), whose config's `web` is the composed conf/monitoring section.
Ray-free: tests mount the router on a plain FastAPI app.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from omegaconf import OmegaConf
from starlette.datastructures import UploadFile

from mycolens.catalogue import Catalogue
from mycolens.inference.onnx_model import ModelRefused
from mycolens.monitoring import claims
from mycolens.monitoring.drift import DriftMonitor
from mycolens.monitoring.feedback import FeedbackError, check_feedback
from mycolens.monitoring.reference import ReferenceError
from mycolens.serving.errors import ApiError, error_response
from mycolens.serving.ratelimit import client_key

log = logging.getLogger("mycolens.web")
router = APIRouter(tags=["web"])
MULTIPART_OVERHEAD = 64 * 1024  # headers and the species field around the photo in a multipart body
REVIEW_BODY_LIMIT = 16 * 1024  # a review decision's JSON
STATIC_DIR = Path(__file__).resolve().parent / "static"
_NAMED_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}:.+$")


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


@router.post("/feedback", status_code=202)
async def feedback(request: Request) -> Any:
    """Multipart `file` + `species`: store a claim pending review (202 {"status": "pending", "claim_id"}).

    The photo is checked (contract codes 400 / 413 / 415, 422 unknown_species), cleaned of metadata, answered by
    the served model through the same backend as /predict, and queued with its provenance
    (mycolens.monitoring.claims). Refused: 409 duplicate_claim (the same photo is already queued), 507 queue_full
    (`monitoring.feedback.max_claims`). A photo the model abstained on is stored with `model_abstained: true`.
    Nothing reaches training before reviewers approve it (GET /review, scripts/review.py).
    """
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
    queue = fb["dir"]
    max_claims = int(fb["max_claims"]) if fb.get("max_claims") else None
    try:
        upload, species = form.get("file"), form.get("species")
        if not isinstance(upload, UploadFile) or not isinstance(species, str):
            return error_response(
                422, "bad_request", "send multipart fields `file` (the photo) and `species` (a species id)"
            )
        data = await upload.read()
        photo = await asyncio.to_thread(
            check_feedback,
            species.strip(),
            data,
            catalogue,
            max_bytes,
            filename=upload.filename,
            max_pixels=int(fb["max_pixels"]),
        )
        await asyncio.to_thread(claims.check_room, queue, photo.sha256, max_claims)
        answer = await _model_answer(request, photo.jpeg, int(fb.get("top_k") or 5))
        if isinstance(answer, JSONResponse):
            return answer
        salt = os.environ.get(str(fb.get("client_salt_env") or "")) or None
        client = await asyncio.to_thread(claims.client_hash, queue, _client_address(request), salt)
        claim = await asyncio.to_thread(
            claims.add_claim, queue, photo.species, photo.jpeg, answer=answer, client=client, max_claims=max_claims
        )
    except FeedbackError as exc:
        return error_response(exc.status, exc.code, str(exc))
    finally:
        await form.close()
    return JSONResponse(
        {
            "status": "pending",
            "claim_id": claim.id,
            "species": claim.species,
            "sha256": claim.sha256,
            "model_abstained": claim.model_abstained,
        },
        status_code=202,
    )


def _backend(request: Request) -> Any | None:
    """The backend /predict uses: `ctx.backend` when the ingress sets it, else the one behind ctx.model_info.

    build_api sets `ctx.model_info = ModelView.get`, and the ModelView holds the backend.
    """
    ctx = getattr(request.app.state, "mycolens", None)
    if ctx is None:
        return None
    backend = getattr(ctx, "backend", None)
    if backend is None:
        backend = getattr(getattr(getattr(ctx, "model_info", None), "__self__", None), "backend", None)
    return backend


async def _model_answer(request: Request, photo: bytes, top_k: int) -> dict[str, Any] | JSONResponse:
    """The served model's /predict answer for the cleaned photo, or the contract error why there is none."""
    backend = _backend(request)
    if backend is None:
        return error_response(503, "model_unavailable", "no model to answer the photo; a claim needs its answer")
    try:
        result = await backend.predict(photo, top_k)
    except ModelRefused as exc:
        return error_response(503, "model_unavailable", str(exc))
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    if "error" in result:
        err = result["error"]
        return error_response(int(err.get("status", 400)), str(err.get("code")), str(err.get("message")))
    return result["answer"]


def _client_address(request: Request) -> str:
    """Who sent the claim, as the ingress's rate limiter keys clients (mycolens.serving.ratelimit.client_key: an
    X-Forwarded-For address only behind a trusted proxy); only its salted hash is stored."""
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        return client_key(request.scope, limiter.settings.trust_forwarded_for, limiter.trusted)
    return request.client.host if request.client else "unknown"


# ------------------------------------------------------------------ review


def review_tokens(raw: str) -> dict[str, str | None]:
    """Bearer token -> the reviewer name it is bound to: `name:token,name:token`, or one shared token (name None).

    With one shared token every reviewer names themself; per-reviewer tokens make `reviewers_required: 2` mean two
    token holders.
    """
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if parts and all(_NAMED_TOKEN.match(p) for p in parts):
        return {p.split(":", 1)[1]: p.split(":", 1)[0] for p in parts}
    return {raw.strip(): None} if raw.strip() else {}


def _review_auth(request: Request, fb: Mapping[str, Any]) -> tuple[str | None, str] | JSONResponse:
    """(bound reviewer name or None, token fingerprint), or the 403 / 401 error."""
    env = str(fb.get("review_token_env") or "MYCOLENS_REVIEW_TOKEN")
    tokens = review_tokens(os.environ.get(env, ""))
    if not tokens:
        return error_response(403, "review_disabled", f"review over HTTP is disabled: set {env} on the server")
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    given = value.strip().encode() if scheme.lower() == "bearer" else b""
    for token, name in tokens.items():
        if given and hmac.compare_digest(given, token.encode()):
            return name, hashlib.sha256(token.encode()).hexdigest()[:8]
    return error_response(401, "unauthorized", "missing or wrong review token (Authorization: Bearer <token>)")


def _feedback_settings(request: Request) -> dict[str, Any]:
    return dict((_state(request).get("web") or {}).get("feedback") or {})


def _species_card(catalogue: Catalogue | None, species_id: str | None) -> dict[str, Any] | None:
    """A species with its note and its look-alikes' notes, for the review page."""
    if not species_id:
        return None
    if catalogue is None or species_id not in catalogue.ids:
        return {"id": species_id}
    s = catalogue[species_id]
    return {
        "id": s.id,
        "common_name": s.common_name,
        "scientific_name": s.scientific_name,
        "edibility": s.edibility,
        "note": s.note,
        "lookalikes": [
            {
                "id": o,
                "common_name": catalogue[o].common_name,
                "edibility": catalogue[o].edibility,
                "note": catalogue[o].note,
            }
            for o in s.lookalikes
            if o in catalogue.ids
        ],
    }


def _review_entry(st: claims.ClaimState, catalogue: Catalogue | None, per_client: Mapping[str, int]) -> dict:
    d = st.to_dict()
    d["photo_url"] = f"/review/claims/{st.claim.id}/photo"
    d["claimed"] = _species_card(catalogue, st.claim.species)
    d["model_species"] = _species_card(catalogue, (st.claim.answer or {}).get("species"))
    d["client_claims"] = per_client.get(st.claim.client, 0)  # claims in the queue from the same client
    return d


@router.get("/review", include_in_schema=True)
async def review_page(request: Request) -> Any:
    """The review page (serve/static/review.html); its calls need the review token. 403 when review is off."""
    auth = _review_auth(request, _feedback_settings(request))
    if isinstance(auth, JSONResponse) and auth.status_code == 403:
        return auth
    return FileResponse(STATIC_DIR / "review.html", media_type="text/html", headers={"Cache-Control": "no-store"})


@router.get("/review/claims")
async def review_claims(request: Request, status: str = "pending") -> Any:
    """Claims with their status, provenance, the model's answer and look-alike notes (`status`: pending by default,
    approved, rejected, used or all). Needs `Authorization: Bearer <review token>`."""
    fb = _feedback_settings(request)
    auth = _review_auth(request, fb)
    if isinstance(auth, JSONResponse):
        return auth
    await follow_served_model(request)
    required = int(fb.get("reviewers_required") or 1)
    wanted = None if status == "all" else status
    if wanted is not None and wanted not in claims.STATUSES:
        return error_response(422, "bad_status", f"status {status[:32]!r}: use all or {', '.join(claims.STATUSES)}")
    every = await asyncio.to_thread(claims.claim_states, fb["dir"], required)
    per_client = Counter(st.claim.client for st in every)
    catalogue = _state(request).get("catalogue")
    chosen = [st for st in every if wanted is None or st.status == wanted]
    return {
        "reviewers_required": required,
        "status": status,
        "counts": dict(Counter(st.status for st in every)),
        "claims": [_review_entry(st, catalogue, per_client) for st in chosen],
    }


@router.get("/review/claims/{claim_id}/photo")
async def review_photo(request: Request, claim_id: str) -> Any:
    """The claim's stored photo (JPEG, metadata already removed). Needs the review token."""
    fb = _feedback_settings(request)
    auth = _review_auth(request, fb)
    if isinstance(auth, JSONResponse):
        return auth
    try:
        claim = await asyncio.to_thread(claims.get_claim, fb["dir"], claim_id)
        data = await asyncio.to_thread(claim.read_photo)
    except FeedbackError as exc:
        return error_response(exc.status, exc.code, str(exc))
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.post("/review/claims/{claim_id}")
async def review_decide(request: Request, claim_id: str) -> Any:
    """JSON {decision: approve|reject, note, reviewer}: log the decision (decisions.jsonl), answer the new status.

    The reviewer is the name the token is bound to (`name:token` in the token variable), else the `reviewer` sent;
    the token's fingerprint is logged with it.
    """
    fb = _feedback_settings(request)
    auth = _review_auth(request, fb)
    if isinstance(auth, JSONResponse):
        return auth
    bound, fingerprint = auth
    raw = await request.body()
    if len(raw) > REVIEW_BODY_LIMIT:
        return error_response(413, "too_large", f"a decision is at most {REVIEW_BODY_LIMIT} bytes of JSON")
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return error_response(400, "bad_request", 'send JSON {"decision": "approve" | "reject", "note", "reviewer"}')
    sent = body.get("reviewer")
    if bound is not None and sent not in (None, "", bound):
        return error_response(403, "reviewer_mismatch", f"this token belongs to reviewer {bound!r}")
    reviewer = bound or sent
    try:
        st = await asyncio.to_thread(
            claims.decide,
            fb["dir"],
            claim_id,
            body.get("decision"),
            reviewer,
            note=body.get("note") or "",
            via="http",
            token=fingerprint,
            reviewers_required=int(fb.get("reviewers_required") or 1),
        )
    except FeedbackError as exc:
        return error_response(exc.status, exc.code, str(exc))
    return {
        "claim_id": st.claim.id,
        "status": st.status,
        "approved_by": list(st.approved_by),
        "rejected_by": list(st.rejected_by),
        "reviewers_required": st.reviewers_required,
    }


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
