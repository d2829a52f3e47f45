"""Feedback loop: POST /feedback stores a checked photo in the ingest format, and refuses bad input writing nothing."""

from __future__ import annotations

import io
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
from mycolens.monitoring.feedback import FeedbackError, store_feedback
from mycolens.serving.hooks import IngressContext, PredictionHooks
from mycolens.utils.io import write_json_atomic
from serve import web
from tests.conftest import FEEDBACK_REFUSALS, compose

ROOT = Path(__file__).resolve().parents[1]


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


def make_client(tmp_path: Path, catalogue, *overrides: str) -> TestClient:
    cfg = compose(
        [f"monitoring.feedback.dir={tmp_path / 'feedback'}", "monitoring.feedback.max_bytes=200000", *overrides],
        tmp_path,
    )
    model_dir = tmp_path / "model"
    write_json_atomic(model_dir / "model.json", {"catalogue": catalogue.to_dict()})  # all web.setup reads of it

    async def model_info() -> dict[str, Any]:
        return {}

    return web_app(cfg, model_dir, model_info)[0]


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


# ------------------------------------------------------------------ store_feedback


def test_good_feedback_lands_in_ingest_format_and_ingests(tmp_path, catalogue):
    folder = tmp_path / "feedback"
    stored = [
        store_feedback(folder, "cantharellus_cibarius", photo(1), catalogue, 10**6),
        store_feedback(folder, "cantharellus_cibarius", photo(2), catalogue, 10**6),
        store_feedback(folder, "omphalotus_illudens", photo(3, fmt="PNG"), catalogue, 10**6),
    ]
    for s in stored:
        assert s.path == folder / s.species / f"{s.sha256}.jpg"
        assert s.path.is_file() and not s.duplicate
    assert [p.relative_to(folder).parts[0] for p in files_under(folder)] == [
        "cantharellus_cibarius",
        "cantharellus_cibarius",
        "omphalotus_illudens",
    ]

    report = ingest_32px(folder, tmp_path, catalogue, splits={"train": 1.0}, rows_per_file=100)
    assert report.kept == 3 and not report.quarantined
    assert report.per_class == {"cantharellus_cibarius": 2, "omphalotus_illudens": 1}


def test_stored_photo_is_upright_without_metadata(tmp_path, catalogue):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    exif[0x010F] = "SecretCam"  # camera maker: must not be kept
    data = photo(4, size=(96, 64), exif=exif.tobytes())
    stored = store_feedback(tmp_path, "boletus_edulis", data, catalogue, 10**6)
    with Image.open(stored.path) as img:
        assert img.size == (64, 96)  # rotated upright
        assert not img.getexif()
    assert b"SecretCam" not in stored.path.read_bytes()


def test_same_photo_twice_is_stored_once(tmp_path, catalogue):
    a = store_feedback(tmp_path, "morchella_esculenta", photo(5), catalogue, 10**6)
    b = store_feedback(tmp_path, "morchella_esculenta", photo(5), catalogue, 10**6)
    assert b.duplicate and a.path == b.path and len(files_under(tmp_path)) == 1


@pytest.mark.parametrize(
    ("species", "data", "filename", "status", "code"),
    [
        ("not_a_species", photo(0), None, 422, "unknown_species"),
        ("../../etc", photo(0), None, 422, "unknown_species"),
        ("cantharellus_cibarius", photo(0, size=(900, 900)), None, 413, "too_large"),
        ("cantharellus_cibarius", b"I am a text file, not a photo\n" * 20, None, 400, "not_image"),
        ("cantharellus_cibarius", b"", None, 400, "empty"),
        ("cantharellus_cibarius", photo(0, fmt="GIF"), None, 415, "unsupported"),
        ("cantharellus_cibarius", photo(0), "../../../tmp/evil.jpg", 400, "bad_filename"),
        ("cantharellus_cibarius", photo(0), "..\\evil.jpg", 400, "bad_filename"),
    ],
)
def test_refused_feedback_writes_nothing(tmp_path, catalogue, species, data, filename, status, code):
    with pytest.raises(FeedbackError) as info:
        store_feedback(tmp_path / "fb", species, data, catalogue, 50_000, filename=filename)
    assert (info.value.status, info.value.code) == (status, code)
    assert not (tmp_path / "fb").exists()


def test_full_folder_refuses(tmp_path, catalogue):
    store_feedback(tmp_path, "morchella_esculenta", photo(1), catalogue, 10**6, max_files=1)
    with pytest.raises(FeedbackError) as info:
        store_feedback(tmp_path, "morchella_esculenta", photo(2), catalogue, 10**6, max_files=1)
    assert info.value.status == 507 and len(files_under(tmp_path)) == 1


# ------------------------------------------------------------------ HTTP


def test_post_feedback_stores_and_lists_species(client, tmp_path, catalogue):
    info = client.get("/feedback").json()
    assert info["enabled"] is True
    assert [s["id"] for s in info["species"]] == catalogue.ids

    r = client.post(
        "/feedback", files={"file": ("IMG_0001.jpg", photo(7), "image/jpeg")}, data={"species": "macrolepiota_procera"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["stored"] is True and body["species"] == "macrolepiota_procera" and not body["duplicate"]
    assert files_under(tmp_path / "feedback") == [
        tmp_path / "feedback" / "macrolepiota_procera" / f"{body['sha256']}.jpg"
    ]


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [*FEEDBACK_REFUSALS, ("missing_species", 422, "bad_request"), ("not_multipart", 422, "bad_request")],
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


def test_retrain_source_puts_feedback_beside_the_shards_and_ingests(tmp_path, catalogue, tiny_shards):
    from mycolens.data.shards import read_manifest, read_split
    from mycolens.monitoring.retrain import archive_feedback, main, prepare_retrain_source

    feedback = tmp_path / "feedback"
    stored = [
        store_feedback(feedback, "amanita_phalloides", photo(11, size=(120, 90)), catalogue, 10**6),
        store_feedback(feedback, "boletus_edulis", photo(12, size=(120, 90)), catalogue, 10**6),
    ]
    counts = prepare_retrain_source(tiny_shards, feedback, tmp_path / "retrain")
    before = read_manifest(tiny_shards)["splits"]
    assert counts["feedback"] == 2 and counts["ood"] == before["ood"]["images"]
    assert counts["data"] == sum(before[s]["images"] for s in ("train", "val", "test"))

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
        (f"feedback/{s.sha256}", s.species) for s in stored
    }
    old_specimens = {
        r["specimen"] for s in ("train", "val", "test") for r in read_split(tiny_shards, s, ["specimen"]).to_pylist()
    }
    assert old_specimens <= {r["specimen"] for r in rows}  # photos of one find stay one observation

    late = store_feedback(feedback, "morchella_esculenta", photo(13), catalogue, 10**6)  # arrives during the retrain
    assert archive_feedback(tmp_path / "retrain", tmp_path / "used") == 2
    assert files_under(feedback) == [late.path]
    assert len(files_under(tmp_path / "used")) == 2
    assert main(["archive", "--out", str(tmp_path / "retrain"), "--to", str(tmp_path / "used")]) == 0


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
