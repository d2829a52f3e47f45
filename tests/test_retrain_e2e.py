"""`make retrain` (scripts/retrain.py) end to end from a fresh state, served by Ray Serve (`serve run`): claims
posted over HTTP to the served app, reviewed with the review CLI, retrained, gated on the frozen set, promoted, and
the reloaded app answers with the new model version. First a poisoned but approved batch (photos of a deadly
species claimed as an edible one) goes the same way: the gate refuses the candidate, the old model keeps serving
and the report names the species. test_promotion.py tests the gate itself on a fully poisoned data set."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageOps

from mycolens.catalogue import load_catalogue
from mycolens.data.shards import read_split
from mycolens.inference.onnx_model import OnnxClassifier
from mycolens.monitoring import claims
from mycolens.monitoring.promotion import freeze_eval_set, model_scores
from serve.app import load_serve_config
from tests.conftest import TINY_DATA, make_shards, run_script
from tests.serve_fixtures import free_port, model_version, serve_run_config, start_ray, wait_ready, write_serve_config
from tests.test_promotion import EDIBLE_TARGET, train_and_export

pytestmark = pytest.mark.slow
PROXY = os.environ.get("MYCOLENS_TEST_PROXY") or load_serve_config([])["proxy"]
RELOAD_TOKEN = "reload-token"
VARIANT = "int8"  # the served file, and the one the gate compares (retrain.variant = serve.variant)
# 6 frozen photos per species at this size: one photo is a 17-point recall step, so a clean retrain's run-to-run
# noise would be refused by the default limits; the clean retrain opens them (the poisoned one runs on the defaults)
OPEN_GATE = ["export.safety_gate.max_recall_drop=1.0", "export.safety_gate.max_dangerous_edible_increase=1000"]
OPEN_GATE.append("export.safety_gate.max_ood_abstain_drop=1.0")


def retake(jpeg: bytes, k: int) -> bytes:
    """Another photo of the same find (another sha256, the same species): mirrored, then cropped by k pixels."""
    img = ImageOps.mirror(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    img = ImageOps.crop(img, k) if k else img
    buf = io.BytesIO()
    img.resize((96, 96)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def post_claims(base: str, photos: list[tuple[bytes, str]]) -> list[str]:
    """POST /feedback for each (photo, claimed species) to the served app; the claim ids (each answered 202)."""
    ids = []
    with httpx.Client(base_url=base, timeout=60) as c:
        for k, (photo, species) in enumerate(photos):
            answer = c.post(
                "/feedback", files={"file": (f"IMG_{k}.jpg", photo, "image/jpeg")}, data={"species": species}
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["claim_id"])
    return ids


def review(queue: Path, *args: str) -> str:
    proc = run_script("review.py", *args, f"monitoring.feedback.dir={queue}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def served_answer(base: str, photo: bytes) -> dict:
    r = httpx.post(f"{base}/predict", files={"file": ("p.jpg", photo, "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_claims_reviewed_retrained_gated_promoted_and_served(tmp_path: Path, tiny_ood_sets: Path, monkeypatch):
    import ray
    from ray import serve

    monkeypatch.setenv("MYCOLENS_RELOAD_TOKEN", RELOAD_TOKEN)  # before Ray starts: the ingress inherits it
    shards = make_shards(
        tmp_path / "data" / "shards", specimens_per_class=8, photos_per_specimen=3, ood_images=30, seed=5
    )
    served = train_and_export(tmp_path, shards, tiny_ood_sets)  # tmp_path/models/export, the served folder
    old_version, served_json = model_version(served), (served / "model.json").read_bytes()
    # the frozen set, made as the first retrain would (it reuses it): the poisoner's target is the deadly species
    # the served model recognises best there
    frozen = freeze_eval_set(shards, tmp_path / "data" / "frozen_eval")
    before = model_scores(OnnxClassifier.load(served, VARIANT), frozen["path"])["species"]
    deadly = max((s.id for s in load_catalogue().species if s.dangerous), key=lambda s: before[s]["recall"])
    assert before[deadly]["recall"] >= 0.5 and before[deadly]["edible_calls"] == 0, before[deadly]

    queue = tmp_path / "feedback"
    retrain_args = [
        *TINY_DATA,
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.ood_sets_dir={tiny_ood_sets}",
        f"paths.models_dir={tmp_path / 'models'}",
        f"paths.reports_dir={tmp_path / 'reports'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"monitoring.feedback.dir={queue}",
        f"serve.variant={VARIANT}",
        "trainer.max_epochs=6",
        "compress.max_epochs=2",
        # a 6-epoch 32-px model on ~100 photos: int8 and fp32 agree on 0.88-1.0 of val images from run to run (the
        # claims' ids carry their time, so the splits move); the check itself is tested in test_export.py
        "export.check.int8_min_top1_agreement=0.5",
    ]
    overrides = [
        f"serve.model_dir={served}",
        f"serve.variant={VARIANT}",
        "serve.model.ray_actor_options.num_cpus=0.5",
        "serve.ingress.ray_actor_options.num_cpus=0.25",
        f"monitoring.feedback.dir={queue}",
        "serve.rate_limits.feedback.burst=200",  # one test client posts the whole poisoned batch at once
    ]
    start_ray(PROXY)
    try:
        port = free_port()
        config = write_serve_config(
            tmp_path / "serve.yaml", port, overrides, {"model_dir": str(served), "variant": VARIANT}
        )
        proc = serve_run_config(config, ray.get_runtime_context().gcs_address)
        assert proc.returncode == 0, proc.stderr[-3000:]
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, version=old_version)

        # the poisoned batch: every train/val photo of the deadly species, twice, claimed as an edible species
        rows = read_split(shards, "train", columns=["image", "species"]).to_pylist()
        rows += read_split(shards, "val", columns=["image", "species"]).to_pylist()
        poison = post_claims(base, [(retake(r["image"], k), EDIBLE_TARGET) for r in rows if r["species"] == deadly
                                    for k in (0, 2)])  # fmt: skip
        honest_rows = [r for r in rows if r["species"] not in (deadly, EDIBLE_TARGET)][:4]
        honest = post_claims(base, [(retake(r["image"], 0), r["species"]) for r in honest_rows])
        shas = {cid: claims.get_claim(queue, cid).sha256 for cid in honest}
        pending = json.loads(review(queue, "format=json"))
        assert sorted(c["claim_id"] for c in pending) == sorted(poison + honest)
        assert all(c["model"]["version"] == old_version for c in pending)  # provenance: who answered
        review(queue, "action=approve", f"claim=[{','.join(poison)}]", "reviewer=mallory")  # a careless approval
        review(queue, "action=approve", f"claim=[{','.join(honest[:3])}]", "reviewer=alice")  # the 4th stays pending

        # the default promotion limits; the candidate's own safety gate (its test split holds poisoned claims too)
        # is opened so that the gate against the served model is what refuses it
        refused = run_script("retrain.py", *retrain_args, "export.safety_gate.limit=1.0", timeout=1500)
        out = refused.stdout + refused.stderr
        assert refused.returncode == 2, out[-4000:]
        assert "approved claims" in refused.stdout and "species that moved" in refused.stderr, out[-4000:]
        report = json.loads((tmp_path / "models" / "candidate" / "model.json").read_text())["promotion"]
        assert not report["passed"] and deadly in report["moved"] and deadly in refused.stderr
        moved = report["species"][deadly]
        print(f"poisoned candidate, {deadly}: {moved}; reasons {report['reasons']}")
        assert any(r.startswith(deadly) for r in report["reasons"])
        # the poison worked on the candidate: the deadly species' photos go to the claimed species, or are eaten
        lost = moved["recall_before"] - moved["recall_after"]
        assert lost >= 0.3 or moved["edible_calls_after"] >= moved["edible_calls_before"] + 2, moved
        assert (served / "model.json").read_bytes() == served_json  # the old model keeps serving
        assert httpx.get(f"{base}/model", timeout=30).json()["version"] == old_version
        assert served_answer(base, rows[0]["image"])["model"]["version"] == old_version
        approved = json.loads(review(queue, "status=approved", "format=json"))
        assert len(approved) == len(poison) + 3  # nothing archived: the claims wait for a second look

        # a second look: the gate named the species; the reviewer rejects the batch, and the honest claims ship
        review(queue, "action=reject", f"claim=[{','.join(poison)}]", "reviewer=alice", "note=gate: deadly recall")
        retrain = run_script("retrain.py", *retrain_args, *OPEN_GATE, timeout=1500)
        assert retrain.returncode == 0, retrain.stdout[-3000:] + retrain.stderr[-3000:]
        assert "3 approved claims" in retrain.stdout and "promoted" in retrain.stdout

        meta = json.loads((served / "model.json").read_text())
        assert meta["version"] != old_version and (tmp_path / "models" / "export.previous" / "model.json").is_file()
        trained = {c["claim_id"]: c["sha256"] for c in meta["trained_on"]["claims"]}
        assert trained == {cid: shas[cid] for cid in honest[:3]}  # exactly the approved claims, by hash
        assert meta["promotion"]["frozen_eval"]["sha256"] == frozen["sha256"]
        assert meta["promotion"]["compared_with"] == old_version
        left = json.loads(review(queue, "status=all", "format=json"))
        assert {c["claim_id"]: c["status"] for c in left} == {honest[3]: "pending", **dict.fromkeys(poison, "rejected")}

        reload = httpx.post(
            f"{base}/admin/reload",
            headers={"Authorization": f"Bearer {RELOAD_TOKEN}"},
            json={"model_dir": str(served)},
            timeout=120,
        )
        assert reload.status_code == 200, reload.text
        wait_ready(base, version=meta["version"], timeout=120)
        assert served_answer(base, retake(honest_rows[0]["image"], 1))["model"]["version"] == meta["version"]
    finally:
        serve.shutdown()
        ray.shutdown()


def test_a_retrain_killed_midway_loses_no_claim_and_no_decision(tmp_path: Path, tiny_shards: Path):
    """SIGKILL of `scripts/retrain.py` once its source is prepared: the queue and its decision log are as they were,
    nothing is archived or promoted, and the next retrain takes the same approved claims."""
    import signal
    import subprocess
    import sys
    import time

    from mycolens.monitoring.retrain import prepare_retrain_source
    from tests.conftest import ROOT

    queue = tmp_path / "feedback"
    rows = read_split(tiny_shards, "train", columns=["image", "species"]).to_pylist()[:3]
    made = [claims.add_claim(queue, r["species"], retake(r["image"], 0)) for r in rows]
    for c in made[:2]:
        claims.decide(queue, c.id, "approve", "alice")
    log_before = claims.decisions_path(queue).read_bytes()
    claim_files = {p: p.read_bytes() for p in sorted(claims.claims_dir(queue).rglob("*")) if p.is_file()}

    args = [f"paths.shards_dir={tiny_shards}", f"paths.data_dir={tmp_path / 'data'}"]
    args += [f"paths.models_dir={tmp_path / 'models'}", f"monitoring.feedback.dir={queue}"]
    proc = subprocess.Popen(  # its own process group: the kill reaches the stage it is running, by pid
        [sys.executable, str(ROOT / "scripts" / "retrain.py"), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    labels = tmp_path / "data" / "retrain" / "labels.csv"
    try:
        deadline = time.monotonic() + 300
        while not labels.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert labels.is_file(), "the retrain never prepared its source"
        time.sleep(2)  # into the ingest stage
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    assert claims.decisions_path(queue).read_bytes() == log_before
    assert {p: p.read_bytes() for p in sorted(claims.claims_dir(queue).rglob("*")) if p.is_file()} == claim_files
    assert not (tmp_path / "data" / "feedback-used").exists() and not (tmp_path / "models" / "export").exists()
    again = prepare_retrain_source(tiny_shards, queue, tmp_path / "again")
    assert sorted(again["claims"]) == sorted(c.id for c in made[:2])
