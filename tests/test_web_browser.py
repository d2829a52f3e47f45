"""The web page, the review page, drift monitoring and feedback through the real Ray Serve app, driven by Debian's
Chromium.

Playwright (Python) launches /usr/bin/chromium headless (never a downloaded browser). Screenshots of the
rendered results are saved in each test's tmp_path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mycolens.catalogue import Catalogue
from mycolens.data.shards import read_split
from mycolens.inference.onnx_model import OnnxClassifier
from mycolens.monitoring import claims
from mycolens.monitoring.reference import write_reference
from serve.app import load_serve_config
from tests.conftest import FEEDBACK_REFUSALS, run_script
from tests.serve_fixtures import (
    free_port,
    make_model_dir,
    model_version,
    serve_run_config,
    small_shards,
    start_ray,
    wait_ready,
    write_serve_config,
)

pytestmark = pytest.mark.slow
SERVE_CONF = load_serve_config([])
PROXY = os.environ.get("MYCOLENS_TEST_PROXY") or SERVE_CONF["proxy"]
FEEDBACK_MAX_BYTES = 300_000
REVIEW_TOKEN_ENV = SERVE_CONF["web"]["feedback"]["review_token_env"]  # MYCOLENS_REVIEW_TOKEN by default
REVIEW_TOKEN = "review-token-for-the-browser-tests"  # one shared token: each reviewer names themself on the page


@dataclass
class Served:
    base: str
    model_dir: Path
    feedback: Path
    photos: list[bytes]  # encoded test-split photos (in distribution)
    photo_file: Path  # one of them on disk, for the page's file input


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Synthetic shards, a tiny model folder with its reference.json, served by `serve run` on Ray (2 CPUs)."""
    import ray
    from ray import serve

    tmp = tmp_path_factory.mktemp("web")
    small_shards(tmp / "shards")
    model_dir = make_model_dir(tmp)
    write_reference(tmp / "shards", model_dir / "reference.json", classifier=OnnxClassifier.load(model_dir, "fp32"))
    photos = [b.as_py() for b in read_split(tmp / "shards", "test", ["image"]).column("image")]
    photo_file = tmp / "mushroom.jpg"
    photo_file.write_bytes(photos[0])
    feedback = tmp / "feedback"
    overrides = [
        f"serve.model_dir={model_dir}",
        "serve.variant=fp32",
        "serve.model.ray_actor_options.num_cpus=0.5",
        "serve.ingress.ray_actor_options.num_cpus=0.25",
        "serve.limits.max_body_bytes=2000000",
        "monitoring.window=300",
        f"monitoring.feedback.dir={feedback}",
        f"monitoring.feedback.max_bytes={FEEDBACK_MAX_BYTES}",
    ]
    old_token = os.environ.get(REVIEW_TOKEN_ENV)
    os.environ[REVIEW_TOKEN_ENV] = REVIEW_TOKEN  # before Ray starts: the ingress replica inherits it
    start_ray(PROXY)
    port = free_port()
    config = write_serve_config(tmp / "serve.yaml", port, overrides, {"model_dir": str(model_dir), "variant": "fp32"})
    gcs = ray.get_runtime_context().gcs_address
    try:
        proc = serve_run_config(config, gcs)
        assert proc.returncode == 0, proc.stderr[-3000:]
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, version=model_version(model_dir))
        yield Served(base, model_dir, feedback, photos, photo_file)
    finally:
        serve.shutdown()
        ray.shutdown()
        if old_token is None:
            os.environ.pop(REVIEW_TOKEN_ENV, None)
        else:
            os.environ[REVIEW_TOKEN_ENV] = old_token


def open_page(browser, served: Served, width: int = 1280, height: int = 900):
    """A fresh page on the app; every request it makes is recorded (to prove nothing leaves the server)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(served.base + "/")
    page.wait_for_load_state("networkidle")
    return page, requests


def upload_and_wait(page, path_or_file) -> None:
    page.get_by_label("Choose a photo").set_input_files(path_or_file)
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])", timeout=30_000)


def percent(p: float) -> str:
    v = 100 * p
    return "<0.1%" if 0 < v < 0.1 else ("99.9" if 99.95 <= v < 100 else f"{v:.1f}") + "%"


# ------------------------------------------------------------------ the page


def test_page_shows_the_api_answer_with_an_unmistakable_verdict(browser, served, tmp_path):
    page, requests = open_page(browser, served)
    assert page.title().startswith("mycolens")
    note = page.get_by_role("note", name="Safety note")
    assert note.is_visible() and "never eat a mushroom on an app's word" in note.inner_text().lower()
    assert page.locator("#camera").get_attribute("accept") == "image/*"
    assert page.locator("#camera").get_attribute("capture") == "environment"

    upload_and_wait(page, served.photo_file)
    assert page.locator("#error").is_hidden()
    with httpx.Client(base_url=served.base, timeout=30) as c:
        files = {"file": ("mushroom.jpg", served.photo_file.read_bytes(), "image/jpeg")}
        api = c.post("/predict?top_k=5", files=files).json()
        classes = {k["id"]: k for k in c.get("/model").json()["classes"]}

    assert page.locator("#common-name").get_attribute("data-species") == api["species"]
    assert page.locator("#common-name").inner_text() == api["common_name"]
    assert classes[api["species"]]["scientific_name"] in page.locator("#scientific-name").inner_text()
    verdict = page.locator("#verdict")
    assert verdict.get_attribute("data-verdict") == api["verdict"]
    words = {"edible": "edible species", "do_not_eat": "DO NOT EAT", "uncertain": "uncertain \u2014 do not eat"}
    assert page.locator("#verdict-label").inner_text() == "Verdict: " + words[api["verdict"]]  # words, not colour alone
    reason = page.locator("#verdict-reason")
    assert reason.get_attribute("data-reason") == (api["abstain_reason"] or "")
    assert reason.is_visible() == (api["abstain_reason"] is not None)
    assert page.locator("#confidence").inner_text() == percent(api["confidence"])
    assert page.locator("#poison").inner_text() == percent(api["poisonous_probability"])
    rows = page.locator("#topk-body tr")
    assert rows.count() == len(api["top_k"]) == 5
    for i, t in enumerate(api["top_k"]):
        cells = rows.nth(i)
        assert cells.locator("th").inner_text().startswith(classes[t["species"]]["common_name"])
        assert cells.locator("td").nth(0).inner_text() == percent(t["probability"])
        assert cells.locator("td").nth(1).inner_text().endswith(t["edibility"])
    warning = page.get_by_role("note", name="Look-alike warning")
    if api["lookalikes"]:
        for look in api["lookalikes"]:
            assert look["common_name"] in warning.inner_text() and look["edibility"] in warning.inner_text()
    assert page.evaluate("document.activeElement.id") == "result-title"  # focus moves to the answer
    assert note.is_visible()
    assert all(u.startswith(served.base) or u.startswith(("blob:", "data:")) for u in requests), requests
    page.screenshot(path=str(tmp_path / "result-desktop.png"), full_page=True)
    page.close()


def test_a_greyscale_photo_abstains_and_the_page_says_why(browser, served, tmp_path):
    grey = tmp_path / "grey.png"
    grey.write_bytes(encode(Image.open(io.BytesIO(served.photos[1])).convert("L")))
    page, _ = open_page(browser, served)
    upload_and_wait(page, grey)
    assert page.locator("#verdict").get_attribute("data-verdict") == "uncertain"
    reason = page.locator("#verdict-reason")
    assert reason.is_visible() and reason.get_attribute("data-reason") == "greyscale"
    assert "no colour" in reason.inner_text()
    page.close()


def test_a_non_image_gets_a_readable_error(browser, served, tmp_path):
    page, _ = open_page(browser, served)
    upload_and_wait(
        page, {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"shopping list, not a photo\n" * 20}
    )
    alert = page.get_by_role("alert")
    assert alert.is_visible() and page.locator("#result").is_hidden()
    text = alert.inner_text()
    assert "not a photo the server can read" in text and "not an image" in text
    page.screenshot(path=str(tmp_path / "error-not-image.png"), full_page=True)

    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8))
    upload_and_wait(page, {"name": "big.png", "mimeType": "image/png", "buffer": encode(big, "PNG")})  # ~3 MB > 2 MB
    assert page.locator("#error").is_visible() and "too large" in page.get_by_role("alert").inner_text()
    page.screenshot(path=str(tmp_path / "error-too-large.png"), full_page=True)
    page.close()


def test_narrow_phone_layout(browser, served, tmp_path):
    page, _ = open_page(browser, served, width=390, height=844)
    upload_and_wait(page, served.photo_file)
    assert page.locator("#result").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    for sel in ("#verdict", ".topk", "#disclaimer", "label[for=camera]", "label[for=file]"):
        box = page.locator(sel).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (sel, box)
    assert page.locator("label[for=camera]").bounding_box()["height"] >= 44  # a thumb-sized target
    page.screenshot(path=str(tmp_path / "result-narrow.png"), full_page=True)
    page.close()


def test_keyboard_and_screen_reader_basics(browser, served):
    page, _ = open_page(browser, served)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "camera"  # the hidden input itself takes focus
    assert page.evaluate("getComputedStyle(document.querySelector('label[for=camera]')).outlineStyle") != "none"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file"
    assert page.get_by_label("Take a photo").count() == 1 and page.get_by_label("Choose a photo").count() == 1
    assert page.locator("#status").get_attribute("role") == "status"
    assert page.locator("html").get_attribute("lang") == "en"
    page.close()


def test_feedback_from_the_page_is_opt_in_and_lands_in_the_folder(browser, served):
    page, _ = open_page(browser, served)
    upload_and_wait(page, served.photo_file)
    assert page.locator("#feedback").is_visible()
    page.get_by_label("The species it really was").select_option("amanita_phalloides")
    page.get_by_role("button", name="Send the correction").click()
    assert "Tick the box" in page.locator("#feedback-status").inner_text()
    assert not served.feedback.exists() or not any(served.feedback.rglob("*.jpg"))

    page.get_by_label("I agree that this photo is stored to train a future model.").check()
    page.get_by_role("button", name="Send the correction").click()
    page.wait_for_function("document.getElementById('feedback-status').textContent.startsWith('Thank you')")
    stored = sorted(served.feedback.rglob("photo.jpg"))  # a claim, pending review: claims/<id>/{photo.jpg,claim.json}
    assert len(stored) == 1
    assert json.loads((stored[0].parent / "claim.json").read_text())["species"] == "amanita_phalloides"
    page.close()


# ------------------------------------------------------------------ drift and feedback over HTTP


def wait_window(client: httpx.Client, size: int, timeout: float = 60) -> dict:
    """The drift report once the hook thread has observed `size` requests (the window holds at most 300)."""
    deadline = time.monotonic() + timeout
    while True:
        report = client.get("/monitoring/drift").json()
        if report["window_size"] >= min(size, report["window"]) or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def test_served_drift_stays_quiet_in_distribution_and_flags_darkened_photos(served):
    with httpx.Client(base_url=served.base, timeout=30) as c:
        seen = c.get("/monitoring/drift").json()["window_size"]  # pages above already sent a few photos
        for data in served.photos:
            assert c.post("/predict", files={"file": ("p.jpg", data, "image/jpeg")}).status_code == 200
        report = wait_window(c, seen + len(served.photos))
        assert report["status"] == "ok" and report["drifted"] is False, report["features"]
        assert set(report["features"]) >= {"brightness", "log_pixels", "predicted_class", "confidence"}
        assert report["features"]["log_pixels"]["samples"] == report["window_size"]  # the photo size reaches the hook

        for data in served.photos:
            dark = Image.fromarray((np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) * 0.5).astype(np.uint8))
            assert c.post("/predict", files={"file": ("d.png", encode(dark), "image/png")}).status_code == 200
        deadline = time.monotonic() + 60
        while not (report := c.get("/monitoring/drift").json())["drifted"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert report["window_size"] == 300
        drifted = set(report["drifted_features"])
        assert {"brightness", "red", "green", "blue"} <= drifted and not drifted & {"log_pixels", "aspect_ratio"}, (
            drifted
        )
        metrics = c.get("/metrics").text
        assert 'mycolens_drift_drifted{feature="brightness"} 1.0' in metrics
        assert 'mycolens_drift_drifted{feature="log_pixels"} 0.0' in metrics
        assert "mycolens_drift_window_size 300.0" in metrics


@pytest.mark.parametrize(("case", "status", "code"), FEEDBACK_REFUSALS)
def test_served_feedback_refusals(served, case, status, code):
    before = sorted(served.feedback.rglob("*")) if served.feedback.exists() else []
    photo = served.photos[1]
    form = {"species": "boletus_edulis"}
    files = {"file": ("p.jpg", photo, "image/jpeg")}
    if case == "unknown_species":
        form = {"species": "../../boletus_edulis"}
    elif case == "oversized_body":
        files = {"file": ("p.jpg", b"\xff\xd8" + b"\0" * (FEEDBACK_MAX_BYTES + 100_000), "image/jpeg")}
    elif case == "not_an_image":
        files = {"file": ("p.jpg", b"plain text " * 100, "image/jpeg")}
    else:
        files = {"file": ("../../../../etc/cron.d/evil.jpg", photo, "image/jpeg")}
    r = httpx.post(f"{served.base}/feedback", data=form, files=files, timeout=30)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert (sorted(served.feedback.rglob("*")) if served.feedback.exists() else []) == before


# ------------------------------------------------------------------ the review page


def post_claim(served: Served, data: bytes, species: str) -> str:
    """A claim through POST /feedback, as the main page sends it; its id."""
    files = {"file": ("claim.jpg", data, "image/jpeg")}
    r = httpx.post(f"{served.base}/feedback", data={"species": species}, files=files, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["claim_id"]


def jpeg_with_gps(data: bytes) -> bytes:
    """The photo re-encoded as a JPEG that tells where and with what it was taken (EXIF GPS and camera maker)."""
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 0.0), 3: "E", 4: (2.0, 21.0, 0.0)})
    out = encode_jpeg(Image.open(io.BytesIO(data)).convert("RGB"), exif.tobytes())
    assert Image.open(io.BytesIO(out)).getexif().get_ifd(0x8825)[2] == (48.0, 51.0, 0.0)
    return out


def encode_jpeg(img: Image.Image, exif: bytes) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def open_review(browser, served: Served):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(served.base + "/review")
    page.wait_for_load_state("networkidle")
    return page, requests


def log_in(page, token: str, reviewer: str = "alice") -> str:
    """Type the name and the token, press Enter in the token field; the page's answer once it has one."""
    page.get_by_label("Your name (logged with each decision)").fill(reviewer)
    page.get_by_label("Review token").fill(token)
    page.get_by_label("Review token").press("Enter")
    page.wait_for_function(
        "(() => { const t = document.getElementById('login-status').textContent;"
        " return t && t !== 'Loading\u2026'; })()"
    )
    return page.locator("#login-status").inner_text()


def go_to_claim(page, claim_id: str, limit: int = 30) -> None:
    """Step through the pending claims with the `j` key until `claim_id` shows."""
    for _ in range(limit):
        if page.locator("#claim-id").inner_text() == claim_id:
            return
        page.keyboard.press("j")
    raise AssertionError(f"{claim_id} is not among the pending claims on the page")


def shown_photo(page) -> bytes:
    """The bytes of the photo the page shows (its blob: URL, fetched inside the page)."""
    page.wait_for_function(
        "(() => { const i = document.getElementById('photo');"
        " return i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0; })()"
    )
    data = page.evaluate(
        "async () => Array.from(new Uint8Array(await (await fetch(document.getElementById('photo').src)).arrayBuffer()))"
    )
    return bytes(data)


def decisions_log(served: Served) -> list[dict]:
    log = claims.decisions_path(served.feedback)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_review_page_refuses_a_missing_or_wrong_token_and_shows_no_claims(browser, served, tmp_path):
    claim_id = post_claim(served, served.photos[4], "boletus_edulis")
    logged = decisions_log(served)
    with httpx.Client(base_url=served.base, timeout=30) as c:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": REVIEW_TOKEN}):
            for method, url in (
                ("GET", "/review/claims"),
                ("GET", f"/review/claims/{claim_id}/photo"),
                ("POST", f"/review/claims/{claim_id}"),
            ):
                body = {"decision": "approve", "reviewer": "mallory"} if method == "POST" else None
                r = c.request(method, url, headers=headers, json=body)
                assert r.status_code == 401, (headers, url, r.text)
                assert set(r.json()) == {"error"} and r.json()["error"]["code"] == "unauthorized"
                assert "review token" in r.json()["error"]["message"]
    assert decisions_log(served) == logged

    page, requests = open_review(browser, served)
    assert page.locator("#claim").is_hidden() and page.locator("#empty").is_hidden()
    for token in ("", "not-the-token"):
        status = log_in(page, token)
        assert status.startswith("Not loaded:") and "missing or wrong review token" in status, status
        assert page.locator("#claim").is_hidden() and page.locator("#empty").is_hidden()
        assert claim_id not in page.content()
    assert not [u for u in requests if u.endswith("/photo")]  # no photo asked for either
    page.screenshot(path=str(tmp_path / "review-refused.png"), full_page=True)

    assert "pending claim(s)" in log_in(page, REVIEW_TOKEN)  # the right token shows the queue ...
    assert page.locator("#claim").is_visible()
    status = log_in(page, "not-the-token")  # ... and a wrong one afterwards hides it again
    assert status.startswith("Not loaded:") and "missing or wrong review token" in status, status
    assert page.locator("#claim").is_hidden() and page.locator("#photo").get_attribute("src") is None
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("a")  # the approve key decides nothing once the token is refused
    assert decisions_log(served) == logged  # nothing was decided
    assert claims.claim_state(served.feedback, claim_id).status == "pending"
    page.close()


def test_review_page_shows_claims_and_logs_keyboard_decisions(browser, served, tmp_path):
    catalogue = Catalogue.from_dict(json.loads((served.model_dir / "model.json").read_text())["catalogue"])
    start = datetime.now(UTC)
    approve_id = post_claim(served, served.photos[2], "agaricus_campestris")
    gps_photo = jpeg_with_gps(served.photos[3])
    reject_id = post_claim(served, gps_photo, "boletus_edulis")
    page, requests = open_review(browser, served)
    status = log_in(page, REVIEW_TOKEN)
    assert "pending claim(s); 1 distinct approval(s) needed" in status, status
    assert page.evaluate("document.activeElement.id") == "claim-title"  # out of the token field: keys work

    for claim_id in (approve_id, reject_id):
        go_to_claim(page, claim_id)
        claim = claims.get_claim(served.feedback, claim_id)
        answer = claim.answer
        claimed, model = catalogue[claim.species], catalogue[answer["species"]]
        assert page.locator("#claimed").inner_text() == (
            f"{claimed.common_name} ({claimed.scientific_name}) \u2014 {claimed.edibility}"
        )
        said = page.locator("#model-answer").inner_text()
        assert said.startswith(f"{model.common_name} ({model.scientific_name}) \u2014 {model.edibility}, ")
        assert f"verdict {answer['verdict']}, confidence {answer['confidence']:.2f}" in said
        assert ("the model abstained" in said) == claim.model_abstained
        assert claim.model["version"] in said
        rows = page.locator("#top-k li")
        assert rows.count() == len(answer["top_k"]) == 5
        for i, t in enumerate(answer["top_k"]):
            sp, pct, edibility = rows.nth(i).inner_text().split(" ")
            assert sp == t["species"] and edibility == f"({t['edibility']})"
            assert abs(float(pct.rstrip("%")) - 100 * t["probability"]) <= 0.051, (pct, t)
        notes = page.locator("#lookalikes-box")
        assert notes.is_visible() and claimed.note in notes.inner_text()
        assert claimed.lookalikes and all(
            catalogue[o].common_name in notes.inner_text() and catalogue[o].note in notes.inner_text()
            for o in claimed.lookalikes
        )
        assert claim.sha256[:16] in page.locator("#provenance").inner_text()
        photo = shown_photo(page)
        assert photo == claim.photo.read_bytes()  # the claim's own stored photo
        with Image.open(io.BytesIO(photo)) as img:
            assert img.format == "JPEG" and not img.getexif() and not img.getexif().get_ifd(0x8825)
        if claim_id == reject_id:  # sent with GPS and a camera maker: the reviewer's copy has neither
            assert b"SecretCam" not in photo
    page.screenshot(path=str(tmp_path / "review-claim.png"), full_page=True)

    go_to_claim(page, approve_id)
    page.get_by_label("Note (optional, logged)").click()
    page.keyboard.type("ring, gills and base all fit")  # `a` and `r` typed in the note decide nothing
    assert page.locator("#decide-status").inner_text() == "" and page.locator("#claim-id").inner_text() == approve_id
    assert not [d for d in decisions_log(served) if d["claim"] in (approve_id, reject_id)]
    page.keyboard.press("Tab")  # out of the note, onto the Approve button
    page.keyboard.press("a")
    page.wait_for_function(f"document.getElementById('decide-status').textContent.startsWith('{approve_id} approved')")
    assert "its status is now approved (1/1 approvals)" in page.locator("#decide-status").inner_text()
    go_to_claim(page, reject_id)
    page.keyboard.press("r")
    page.wait_for_function(f"document.getElementById('decide-status').textContent.startsWith('{reject_id} rejected')")
    assert "its status is now rejected" in page.locator("#decide-status").inner_text()
    page.screenshot(path=str(tmp_path / "review-decided.png"), full_page=True)
    assert all(u.startswith(served.base) or u.startswith(("blob:", "data:")) for u in requests), requests
    page.close()

    r = run_script(
        "review.py",
        f"monitoring.feedback.dir={served.feedback}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "status=all",
        "format=json",
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    listed = {c["claim_id"]: c for c in json.loads(r.stdout)}
    assert (listed[approve_id]["status"], listed[approve_id]["approved_by"]) == ("approved", ["alice"])
    assert (listed[reject_id]["status"], listed[reject_id]["rejected_by"]) == ("rejected", ["alice"])

    ours = [d for d in decisions_log(served) if d["claim"] in (approve_id, reject_id)]
    assert [(d["claim"], d["decision"]) for d in ours] == [(approve_id, "approve"), (reject_id, "reject")]
    fingerprint = hashlib.sha256(REVIEW_TOKEN.encode()).hexdigest()[:8]
    for d in ours:
        assert d["reviewer"] == "alice" and d["via"] == "http" and d["token"] == fingerprint
        assert start <= datetime.fromisoformat(d["time"].replace("Z", "+00:00")) <= datetime.now(UTC)
    assert ours[0]["note"] == "ring, gills and base all fit" and ours[1]["note"] == ""
    assert REVIEW_TOKEN not in claims.decisions_path(served.feedback).read_text()
