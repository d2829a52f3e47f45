"""Feedback loop: POST /feedback queues a checked, metadata-free claim (202) with the model's answer, refuses bad
input writing nothing; the review routes; only approved claims reach the retrain source."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from omegaconf import OmegaConf
from PIL import Image
from prometheus_client import CollectorRegistry

from mycolens.catalogue import load_catalogue
from mycolens.data.ingest import ingest_folder
from mycolens.monitoring import claims
from mycolens.monitoring.feedback import FeedbackError, check_feedback
from mycolens.serving.hooks import IngressContext, PredictionHooks
from mycolens.utils.io import write_json_atomic
from serve import web
from tests.conftest import FEEDBACK_REFUSALS, ROOT, compose


def photo(seed: int = 0, size: tuple[int, int] = (96, 64), fmt: str = "JPEG", **save: Any) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def catalogue():
    return load_catalogue()


@pytest.fixture
def client(tmp_path: Path, catalogue) -> TestClient:
    """The real web router on a FastAPI app, set up by web.setup() with the real composed `monitoring` config."""
    return make_client(tmp_path, catalogue)


class FakeBackend:
    """The backend /predict uses, answering like the real model: `species` with `verdict` for every photo."""

    def __init__(self, catalogue, species: str = "boletus_edulis", verdict: str = "edible") -> None:
        self.catalogue, self.species, self.verdict = catalogue, species, verdict
        self.photos: list[bytes] = []

    async def predict(self, photo: bytes, top_k: int) -> dict[str, Any]:
        self.photos.append(photo)
        s = self.catalogue[self.species]
        others = [o for o in self.catalogue.ids if o != s.id][: top_k - 1]
        return {
            "answer": {
                "species": s.id,
                "common_name": s.common_name,
                "edibility": s.edibility,
                "verdict": self.verdict,
                "confidence": 0.61,
                "poisonous_probability": 0.2,
                "abstained": self.verdict == "uncertain",
                "abstain_reason": "low_confidence" if self.verdict == "uncertain" else None,
                "top_k": [
                    {"species": i, "probability": 0.1, "edibility": self.catalogue[i].edibility}
                    for i in [s.id, *others]
                ],
                "lookalikes": [],
                "model": {"name": "mycolens-test", "version": "v9", "variant": "int8"},
            }
        }


def make_client(tmp_path: Path, catalogue, *overrides: str, backend: Any = None) -> TestClient:
    cfg = compose(
        [f"monitoring.feedback.dir={tmp_path / 'feedback'}", "monitoring.feedback.max_bytes=200000", *overrides],
        tmp_path,
    )
    model_dir = tmp_path / "model"
    write_json_atomic(model_dir / "model.json", {"catalogue": catalogue.to_dict()})  # all web.setup reads of it

    async def model_info() -> dict[str, Any]:
        return {}

    client, ctx = web_app(cfg, model_dir, model_info)
    ctx.backend = backend or FakeBackend(catalogue)  # what the ingress's /predict runs on
    return client


def web_app(cfg: Any, model_dir: Path, model_info: Any) -> tuple[TestClient, IngressContext]:
    """The real web router on a FastAPI app serving `model_dir`, set up by web.setup() with cfg's `monitoring`."""
    ctx = IngressContext(
        config={"model_dir": str(model_dir), "web": OmegaConf.to_container(cfg.monitoring, resolve=True)},
        root=ROOT,
        metrics_registry=CollectorRegistry(),
        hooks=PredictionHooks(8),
        model_info=model_info,
    )
    app = FastAPI()
    app.include_router(web.router)
    app.state.mycolens = ctx
    web.setup(ctx)
    return TestClient(app), ctx


def ingest_32px(src: Path, tmp_path: Path, catalogue, **kwargs: Any) -> Any:
    """ingest_folder at 32 px into tmp_path/shards (seed 0, one worker, no synthetic OOD), its report in tmp_path/ingest."""
    return ingest_folder(
        src,
        tmp_path / "shards",
        catalogue,
        image_size=32,
        max_side=128,
        min_side=32,
        seed=0,
        workers=1,
        ood_images=0,
        report_path=tmp_path / "ingest" / "report.json",
        **kwargs,
    )


# ------------------------------------------------------------------ check_feedback


def test_checked_photo_is_upright_without_any_metadata(catalogue):
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    exif[0x010F] = "SecretCam"  # camera maker: must not be kept
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 0.0)})  # GPS latitude
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = photo(4, size=(96, 64), exif=exif.tobytes(), comment=b"found at 48.85N 2.35E", icc_profile=icc)
    assert b"SecretCam" in data and b"48.85N" in data
    with Image.open(io.BytesIO(data)) as original:
        assert original.getexif().get_ifd(0x8825)[2] == (48.0, 51.0, 0.0) and original.info["icc_profile"]
    checked = check_feedback("boletus_edulis", data, catalogue, 10**6)
    with Image.open(io.BytesIO(checked.jpeg)) as img:
        assert img.size == (64, 96) == (checked.width, checked.height)  # rotated upright
        assert not img.getexif() and "comment" not in img.info and "icc_profile" not in img.info
    assert b"SecretCam" not in checked.jpeg and b"48.85N" not in checked.jpeg and b"ICC_PROFILE" not in checked.jpeg
    assert checked.species == "boletus_edulis" and len(checked.sha256) == 64
    assert (
        check_feedback("boletus_edulis", photo(4, size=(96, 64), fmt="PNG"), catalogue, 10**6).jpeg[:2] == b"\xff\xd8"
    )


@pytest.mark.parametrize(
    ("species", "data", "filename", "status", "code"),
    [
        ("not_a_species", photo(0), None, 422, "unknown_species"),
        ("../../etc", photo(0), None, 422, "unknown_species"),
        ("cantharellus_cibarius", photo(0, size=(900, 900)), None, 413, "too_large"),
        ("cantharellus_cibarius", b"I am a text file, not a photo\n" * 20, None, 400, "not_image"),
        ("cantharellus_cibarius", photo(0)[:600], None, 400, "truncated"),
        ("cantharellus_cibarius", b"", None, 400, "empty"),
        ("cantharellus_cibarius", photo(0, fmt="GIF"), None, 415, "unsupported"),
        ("cantharellus_cibarius", photo(0), "../../../tmp/evil.jpg", 400, "bad_filename"),
        ("cantharellus_cibarius", photo(0), "..\\evil.jpg", 400, "bad_filename"),
    ],
)
def test_refused_feedback(catalogue, species, data, filename, status, code):
    with pytest.raises(FeedbackError) as info:
        check_feedback(species, data, catalogue, 50_000, filename=filename)
    assert (info.value.status, info.value.code) == (status, code)


# ------------------------------------------------------------------ HTTP


def post(client: TestClient, data: bytes, species: str = "macrolepiota_procera", name: str = "IMG_0001.jpg"):
    return client.post("/feedback", files={"file": (name, data, "image/jpeg")}, data={"species": species})


def test_post_feedback_queues_a_pending_claim_with_provenance(tmp_path, catalogue):
    backend = FakeBackend(catalogue, species="chlorophyllum_molybdites", verdict="do_not_eat")
    client = make_client(tmp_path, catalogue, backend=backend)
    info = client.get("/feedback").json()
    assert info["enabled"] is True
    assert [s["id"] for s in info["species"]] == catalogue.ids

    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    r = post(client, photo(7, exif=exif.tobytes(), comment=b"my garden"))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "pending" and body["species"] == "macrolepiota_procera" and not body["model_abstained"]
    queue = tmp_path / "feedback"
    claim = claims.get_claim(queue, body["claim_id"])
    assert files_under(queue / "claims") == [claim.folder / "claim.json", claim.photo]
    assert not list(queue.glob("*/*.jpg"))  # nothing in the old ingest layout: no label before review
    stored = claim.photo.read_bytes()
    assert backend.photos == [stored]  # the model answered the stored, cleaned photo
    assert b"SecretCam" not in stored and b"my garden" not in stored and claim.sha256 == body["sha256"]
    saved = json.loads((claim.folder / "claim.json").read_text())
    assert saved["model"] == {"name": "mycolens-test", "version": "v9", "variant": "int8"}
    assert saved["answer"]["species"] == "chlorophyllum_molybdites" and saved["answer"]["verdict"] == "do_not_eat"
    assert len(saved["answer"]["top_k"]) == 5 and saved["created"].endswith("Z")
    assert len(saved["client"]) == 16 and "testclient" not in json.dumps(saved)  # a salted hash, not the address
    assert claims.claim_states(queue)[0].status == "pending"


def test_feedback_on_an_abstained_photo_is_stored_flagged(tmp_path, catalogue):
    client = make_client(tmp_path, catalogue, backend=FakeBackend(catalogue, verdict="uncertain"))
    r = post(client, photo(20))
    assert r.status_code == 202 and r.json()["model_abstained"] is True
    assert claims.get_claim(tmp_path / "feedback", r.json()["claim_id"]).model_abstained


def test_duplicate_photo_is_refused_with_409(client, tmp_path):
    first = post(client, photo(21), "boletus_edulis")
    assert first.status_code == 202
    for species in ("boletus_edulis", "amanita_phalloides"):
        r = post(client, photo(21), species, name="again.jpg")
        assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate_claim"
        assert first.json()["claim_id"] in r.json()["error"]["message"]
    assert claims.count_claims(tmp_path / "feedback") == 1


def test_full_queue_is_refused_with_507(tmp_path, catalogue):
    backend = FakeBackend(catalogue)
    client = make_client(tmp_path, catalogue, "monitoring.feedback.max_claims=1", backend=backend)
    assert post(client, photo(22)).status_code == 202
    r = post(client, photo(23))
    assert r.status_code == 507 and r.json()["error"]["code"] == "queue_full"
    assert claims.count_claims(tmp_path / "feedback") == 1 and len(backend.photos) == 1  # refused before the model


def test_feedback_without_a_model_answer_stores_nothing(tmp_path, catalogue):
    from mycolens.inference.onnx_model import ModelRefused

    class Down(FakeBackend):
        async def predict(self, photo: bytes, top_k: int) -> dict[str, Any]:
            raise ModelRefused("no model loaded")

    client = make_client(tmp_path, catalogue, backend=Down(catalogue))
    r = post(client, photo(24))
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
    assert files_under(tmp_path / "feedback") == []


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        *FEEDBACK_REFUSALS,
        ("truncated", 400, "truncated"),
        ("missing_species", 422, "bad_request"),
        ("not_multipart", 422, "bad_request"),
    ],
)
def test_post_feedback_refusals_are_json_errors_and_write_nothing(client, tmp_path, case, status, code):
    good = {"file": ("photo.jpg", photo(8), "image/jpeg")}
    if case == "unknown_species":
        r = client.post("/feedback", files=good, data={"species": "space_mushroom"})
    elif case == "oversized_body":
        r = client.post(
            "/feedback",
            files={"file": ("big.jpg", b"\xff" * 400_000, "image/jpeg")},
            data={"species": "morchella_esculenta"},
        )
    elif case == "not_an_image":
        r = client.post(
            "/feedback",
            files={"file": ("a.jpg", b"just text" * 50, "image/jpeg")},
            data={"species": "morchella_esculenta"},
        )
    elif case == "truncated":
        r = post(client, photo(8)[:700], "morchella_esculenta")
    elif case == "crafted_file_name":
        r = client.post(
            "/feedback",
            files={"file": ("../../../etc/cron.d/x.jpg", photo(8), "image/jpeg")},
            data={"species": "morchella_esculenta"},
        )
    elif case == "missing_species":
        r = client.post("/feedback", files=good)
    else:
        r = client.post("/feedback", json={"species": "morchella_esculenta"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert files_under(tmp_path / "feedback") == []


def test_feedback_can_be_switched_off(tmp_path, catalogue):
    client = make_client(tmp_path, catalogue, "monitoring.feedback.enabled=false")
    assert client.get("/feedback").json()["enabled"] is False
    r = client.post(
        "/feedback", files={"file": ("p.jpg", photo(9), "image/jpeg")}, data={"species": "morchella_esculenta"}
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "feedback_disabled"
    assert files_under(tmp_path / "feedback") == []


def test_drift_route_without_reference_is_a_json_error(client):
    r = client.get("/monitoring/drift")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "no_reference" and "reference.json" in r.json()["error"]["message"]


# ------------------------------------------------------------------ review routes


def auth(token: str = "s3cret") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_review_is_disabled_without_a_token(client, monkeypatch):
    monkeypatch.delenv("MYCOLENS_REVIEW_TOKEN", raising=False)
    post(client, photo(30))
    for method, url in (("get", "/review"), ("get", "/review/claims"), ("post", "/review/claims/x")):
        r = getattr(client, method)(url, headers=auth())
        assert r.status_code == 403 and r.json()["error"]["code"] == "review_disabled", url


def test_review_routes_need_the_token(client, monkeypatch):
    monkeypatch.setenv("MYCOLENS_REVIEW_TOKEN", "s3cret")
    cid = post(client, photo(31)).json()["claim_id"]
    assert client.get("/review").headers["content-type"].startswith("text/html")  # the page holds no data
    for method, url in (
        ("get", "/review/claims"),
        ("get", f"/review/claims/{cid}/photo"),
        ("post", f"/review/claims/{cid}"),
    ):
        for headers in ({}, auth("wrong"), {"Authorization": "s3cret"}):
            r = getattr(client, method)(url, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (url, headers)


def test_review_lists_shows_and_decides(tmp_path, catalogue, monkeypatch):
    monkeypatch.setenv("MYCOLENS_REVIEW_TOKEN", "s3cret")
    client = make_client(tmp_path, catalogue, backend=FakeBackend(catalogue, species="chlorophyllum_molybdites"))
    a = post(client, photo(32), "macrolepiota_procera").json()["claim_id"]
    b = post(client, photo(33), "amanita_phalloides").json()["claim_id"]

    body = client.get("/review/claims", headers=auth()).json()
    assert body["reviewers_required"] == 1 and [c["claim_id"] for c in body["claims"]] == [a, b]
    first = body["claims"][0]
    assert first["claimed"]["id"] == "macrolepiota_procera" and first["claimed"]["note"]
    assert [x["id"] for x in first["claimed"]["lookalikes"]] == ["chlorophyllum_molybdites"]
    assert first["claimed"]["lookalikes"][0]["note"] and first["model_species"]["edibility"] == "poisonous"
    assert first["answer"]["top_k"] and first["model"]["version"] == "v9" and first["client_claims"] == 2
    photo_r = client.get(first["photo_url"], headers=auth())
    assert photo_r.status_code == 200 and photo_r.headers["content-type"] == "image/jpeg"
    assert photo_r.content == claims.get_claim(tmp_path / "feedback", a).photo.read_bytes()

    r = client.post(f"/review/claims/{a}", headers=auth(), json={"decision": "approve", "reviewer": "alice"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "claim_id": a,
        "status": "approved",
        "approved_by": ["alice"],
        "rejected_by": [],
        "reviewers_required": 1,
    }
    r = client.post(
        f"/review/claims/{b}", headers=auth(), json={"decision": "reject", "note": "a Parasol", "reviewer": "alice"}
    )
    assert r.json()["status"] == "rejected"
    logged = claims.read_decisions(tmp_path / "feedback")[b][0]
    assert (logged.reviewer, logged.note, logged.via, logged.token) == ("alice", "a Parasol", "http", logged.token)
    assert len(logged.token) == 8 and "s3cret" not in claims.decisions_path(tmp_path / "feedback").read_text()

    assert client.get("/review/claims", headers=auth()).json()["claims"] == []
    every = client.get("/review/claims?status=all", headers=auth()).json()
    assert {c["claim_id"]: c["status"] for c in every["claims"]} == {a: "approved", b: "rejected"}
    assert every["counts"] == {"approved": 1, "rejected": 1}


@pytest.mark.parametrize(
    ("url", "body", "status", "code"),
    [
        ("/review/claims/{id}", {"decision": "maybe", "reviewer": "alice"}, 422, "bad_decision"),
        ("/review/claims/{id}", {"decision": "approve"}, 422, "bad_reviewer"),
        ("/review/claims/{id}", "not json", 400, "bad_request"),
        (
            "/review/claims/20990101T000000Z-0123456789ab",
            {"decision": "approve", "reviewer": "a"},
            404,
            "unknown_claim",
        ),
        ("/review/claims/.claim.json", {"decision": "approve", "reviewer": "a"}, 404, "unknown_claim"),
    ],
)
def test_bad_review_decisions_are_json_errors_and_not_logged(client, tmp_path, monkeypatch, url, body, status, code):
    monkeypatch.setenv("MYCOLENS_REVIEW_TOKEN", "s3cret")
    cid = post(client, photo(34)).json()["claim_id"]
    kwargs = {"json": body} if isinstance(body, dict) else {"content": body}
    r = client.post(url.format(id=cid), headers=auth(), **kwargs)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert not claims.decisions_path(tmp_path / "feedback").exists()
    assert client.get("/review/claims/..%2F..%2Fclaim.json/photo", headers=auth()).status_code == 404
    assert client.get("/review/claims?status=everything", headers=auth()).status_code == 422


def test_two_reviewers_with_their_own_tokens(tmp_path, catalogue, monkeypatch):
    monkeypatch.setenv("MYCOLENS_REVIEW_TOKEN", "alice:tok-a,bob:tok-b")
    client = make_client(tmp_path, catalogue, "monitoring.feedback.reviewers_required=2")
    cid = post(client, photo(35)).json()["claim_id"]
    approve = {"decision": "approve"}
    r = client.post(f"/review/claims/{cid}", headers=auth("tok-a"), json={**approve, "reviewer": "bob"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "reviewer_mismatch"  # a token speaks for one name
    assert client.post(f"/review/claims/{cid}", headers=auth("tok-a"), json=approve).json()["status"] == "pending"
    assert client.post(f"/review/claims/{cid}", headers=auth("tok-a"), json=approve).json()["status"] == "pending"
    r = client.post(f"/review/claims/{cid}", headers=auth("tok-b"), json={**approve, "reviewer": "bob"})
    assert r.json()["status"] == "approved" and r.json()["approved_by"] == ["alice", "bob"]
    assert [s.claim.id for s in claims.approved_claims(tmp_path / "feedback", 2)] == [cid]


def test_review_tokens_parse():
    assert web.review_tokens("") == {}
    assert web.review_tokens("abc==") == {"abc==": None}
    assert web.review_tokens("alice:t1, bob:t2") == {"t1": "alice", "t2": "bob"}
    assert web.review_tokens("alice:t1,plain") == {"alice:t1,plain": None}


def test_feedback_and_review_through_the_real_ingress_app(tmp_path, monkeypatch):
    """build_api with the in-process model and serve/web.py as the ingress mounts them: the claim carries the served
    model's own answer and version, and the review page with its local assets is served."""
    from tests.serve_fixtures import image_bytes, ingress_client, make_model_dir

    monkeypatch.setenv("MYCOLENS_REVIEW_TOKEN", "s3cret")
    client = ingress_client(make_model_dir(tmp_path / "m"), tmp_path / "feedback")
    data = image_bytes()
    predicted = client.post("/predict?top_k=5", files={"file": ("p.jpg", data, "image/jpeg")}).json()

    r = post(client, data, "amanita_phalloides")
    assert r.status_code == 202, r.text
    claim = claims.get_claim(tmp_path / "feedback", r.json()["claim_id"])
    assert claim.model == predicted["model"] and claim.answer["species"] == predicted["species"]
    assert claim.answer["verdict"] == predicted["verdict"] and len(claim.answer["top_k"]) == 5
    assert claim.client == claims.client_hash(tmp_path / "feedback", "testclient")  # the rate limiter's client key

    page = client.get("/review")
    assert page.status_code == 200 and "/static/review.js" in page.text and "/static/review.css" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # every asset is local
    for asset in ("review.js", "review.css", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    listed = client.get("/review/claims", headers=auth()).json()["claims"]
    assert [c["claim_id"] for c in listed] == [claim.id] and listed[0]["claimed"]["edibility"] == "deadly"
    r = client.post(f"/review/claims/{claim.id}", headers=auth(), json={"decision": "reject", "reviewer": "alice"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    r = client.post(f"/review/claims/{claim.id}", headers=auth("nope"), json={"decision": "approve", "reviewer": "x"})
    assert r.status_code == 401 and set(r.json()) == {"error"}


# ------------------------------------------------------------------ retrain: feedback beside the existing data


def fake_model_dir(folder: Path, passed: bool) -> Path:
    """A model folder as verify_model_dir sees it: files with their hashes and a safety gate."""
    from mycolens.utils.io import sha256_file

    folder.mkdir(parents=True)
    files = {}
    for variant, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        (folder / name).write_bytes(name.encode() * 10)
        files[variant] = {"path": name, "sha256": sha256_file(folder / name), "bytes": 150}
    write_json_atomic(folder / "model.json", {"files": files, "safety_gate": {"passed": passed}})
    return folder


def queue_claim(queue: Path, catalogue, species: str, seed: int, minutes: int = 0):
    from datetime import UTC, datetime, timedelta

    checked = check_feedback(species, photo(seed, size=(120, 90)), catalogue, 10**6)
    when = datetime(2025, 5, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return claims.add_claim(queue, species, checked.jpeg, now=when)


def test_retrain_source_takes_only_approved_claims_and_ingests(tmp_path, catalogue, tiny_shards):
    from mycolens.data.shards import read_manifest, read_split
    from mycolens.monitoring.retrain import archive_feedback, main, prepare_retrain_source

    feedback = tmp_path / "feedback"
    approved = [
        queue_claim(feedback, catalogue, "amanita_phalloides", 11),
        queue_claim(feedback, catalogue, "boletus_edulis", 12, 1),
    ]
    pending = queue_claim(feedback, catalogue, "cantharellus_cibarius", 14, 2)
    rejected = queue_claim(feedback, catalogue, "boletus_edulis", 15, 3)
    for c in approved:
        claims.decide(feedback, c.id, "approve", "alice")
    claims.decide(feedback, rejected.id, "reject", "alice")
    claims.decide(feedback, pending.id, "approve", "alice")
    (feedback / "boletus_edulis").mkdir()
    (feedback / "boletus_edulis" / "legacy.jpg").write_bytes(photo(16))  # an unreviewed old-style file: ignored

    counts = prepare_retrain_source(tiny_shards, feedback, tmp_path / "retrain", reviewers_required=1)
    assert counts["feedback"] == 3 and pending.id in counts["claims"]  # pending at 1 reviewer = approved
    counts = prepare_retrain_source(tiny_shards, feedback, tmp_path / "retrain", reviewers_required=2)
    assert counts["feedback"] == 0  # nobody has two approvals
    claims.decide(feedback, approved[0].id, "approve", "bob")
    claims.decide(feedback, approved[1].id, "approve", "bob")
    counts = prepare_retrain_source(tiny_shards, feedback, tmp_path / "retrain", reviewers_required=2)
    before = read_manifest(tiny_shards)["splits"]
    assert counts["feedback"] == 2 and counts["ood"] == before["ood"]["images"]
    assert counts["claims"] == [c.id for c in approved]
    assert counts["data"] == sum(before[s]["images"] for s in ("train", "val", "test"))
    used = json.loads((tmp_path / "retrain" / "feedback_files.json").read_text())
    assert used["reviewers_required"] == 2
    assert [(u["claim_id"], u["sha256"], u["approved_by"]) for u in used["claims"]] == [
        (c.id, c.sha256, ["alice", "bob"]) for c in approved
    ]
    labels = (tmp_path / "retrain" / "labels.csv").read_text()
    assert all(f"feedback/{c.id}" in labels for c in approved) and pending.id not in labels

    report = ingest_32px(
        tmp_path / "retrain",
        tmp_path,
        catalogue,
        csv="labels.csv",
        splits={"train": 0.5, "val": 0.25, "test": 0.25},
        ood_source=tmp_path / "retrain" / "ood",
        rows_per_file=1000,
    )
    assert report.kept == counts["data"] + 2 and not report.quarantined
    rows = [
        r
        for s in ("train", "val", "test")
        for r in read_split(tmp_path / "shards", s, ["specimen", "species"]).to_pylist()
    ]
    assert {(r["specimen"], r["species"]) for r in rows if r["specimen"].startswith("feedback/")} == {
        (f"feedback/{c.id}", c.species) for c in approved
    }
    old_specimens = {
        r["specimen"] for s in ("train", "val", "test") for r in read_split(tiny_shards, s, ["specimen"]).to_pylist()
    }
    assert old_specimens <= {r["specimen"] for r in rows}  # photos of one find stay one observation

    late = queue_claim(feedback, catalogue, "morchella_esculenta", 13, 4)  # arrives during the retrain
    claims.decide(feedback, late.id, "approve", "alice")
    assert archive_feedback(tmp_path / "retrain", tmp_path / "used") == 2
    assert sorted(c.id for c in claims.read_claims(feedback)) == sorted([pending.id, rejected.id, late.id])
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == sorted(c.id for c in approved)
    assert {c.id: claims.read_decisions(feedback)[c.id][-1].decision for c in approved} == dict.fromkeys(
        [c.id for c in approved], "used"
    )
    assert main(["archive", "--out", str(tmp_path / "retrain"), "--to", str(tmp_path / "used")]) == 0
    counts = prepare_retrain_source(tiny_shards, feedback, tmp_path / "retrain", reviewers_required=2)
    assert counts["claims"] == []  # used claims never train twice; late has one approval of two


def test_retrain_source_refuses_a_changed_photo(tmp_path, catalogue, tiny_shards):
    from mycolens.monitoring.retrain import prepare_retrain_source

    c = queue_claim(tmp_path / "feedback", catalogue, "boletus_edulis", 17)
    claims.decide(tmp_path / "feedback", c.id, "approve", "alice")
    c.photo.write_bytes(photo(18))
    with pytest.raises(claims.ClaimError, match="no longer matches"):
        prepare_retrain_source(tiny_shards, tmp_path / "feedback", tmp_path / "retrain")
    assert not (tmp_path / "retrain").exists()


def test_promote_only_a_model_that_passes_the_safety_gate(tmp_path, capsys):
    from mycolens.monitoring.retrain import main

    served = fake_model_dir(tmp_path / "export", passed=True)
    served_json = (served / "model.json").read_bytes()
    fake_model_dir(tmp_path / "unsafe", passed=False)
    assert main(["promote", "--candidate", str(tmp_path / "unsafe"), "--target", str(served)]) == 2
    assert "safety gate did not pass" in capsys.readouterr().err
    assert (served / "model.json").read_bytes() == served_json and (tmp_path / "unsafe").is_dir()

    good = fake_model_dir(tmp_path / "candidate", passed=True)
    good_json = (good / "model.json").read_bytes()
    assert main(["promote", "--candidate", str(good), "--target", str(served)]) == 0
    assert (served / "model.json").read_bytes() == good_json and not good.exists()
    assert (tmp_path / "export.previous" / "model.json").read_bytes() == served_json


def test_drift_route_follows_a_model_reload_to_its_reference(tmp_path, catalogue, tiny_shards):
    """After /admin/reload to another folder, /monitoring/drift uses that folder's reference.json (fresh window)."""
    from mycolens.monitoring.reference import write_reference

    folders = {}
    for name, bins in (("a", 10), ("b", 4)):
        folders[name] = tmp_path / name
        write_json_atomic(folders[name] / "model.json", {"catalogue": catalogue.to_dict()})
        write_reference(tiny_shards, folders[name] / "reference.json", image_size=32, bins=bins)
    served = {"model_dir": str(folders["a"])}

    async def model_info() -> dict[str, Any]:
        return dict(served)

    cfg = compose([f"monitoring.feedback.dir={tmp_path / 'feedback'}"], tmp_path)
    client, ctx = web_app(cfg, folders["a"], model_info)

    first = ctx.state["drift"]
    first.observe(np.zeros((32, 32, 3), np.uint8), original_size=(32, 32))
    report = client.get("/monitoring/drift").json()
    assert report["window_size"] == 1 and len(first.reference["features"]["brightness"]["counts"]) == 10
    served["model_dir"] = str(folders["b"])
    report = client.get("/monitoring/drift").json()
    assert ctx.state["drift"] is not first and report["window_size"] == 0
    assert len(ctx.state["drift"].reference["features"]["brightness"]["counts"]) == 4
    ctx.hooks.emit(np.zeros((32, 32, 3), np.uint8), np.full(14, 1 / 14), original_size=(40, 30))
    ctx.hooks.join()
    assert client.get("/monitoring/drift").json()["window_size"] == 1  # the hook feeds the new monitor
