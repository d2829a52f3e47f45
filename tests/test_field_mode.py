"""Field mode: the page's on-device answers (ONNX Runtime Web in Debian's Chromium) against the server's /predict for
the same bytes, through the real Ray Serve app.

The device path (serve/static/field.js, window.mycolensField.answer) decodes with EXIF orientation, resizes with
Pillow's bilinear resampling re-implemented on the pixel array, normalises, runs the served ONNX file and applies
model.json's temperature, energy OOD threshold, feature score, input checks and verdict rule.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from mycolens.data.shards import read_split
from mycolens.inference.onnx_model import OnnxClassifier
from mycolens.inference.preprocess import load_for_model
from mycolens.utils.io import write_json_atomic
from mycolens.verdict.calibration import energy_score
from mycolens.verdict.rule import VerdictRule
from tests.conftest import make_shards
from tests.serve_fixtures import (
    IMAGE_SIZE,
    bad_inputs,
    exif_rotated_jpeg,
    free_port,
    good_inputs,
    make_model_dir,
    model_version,
    serve_run_config,
    start_ray,
    wait_ready,
    write_serve_config,
)
from tests.test_web_browser import PROXY

pytestmark = pytest.mark.slow
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


RELOAD_TOKEN = "field-reload-token"


@dataclass
class Field:
    base: str
    model_dir: Path
    shards: Path
    feedback: Path
    tmp: Path


def between(values: np.ndarray, q: float) -> float:
    """A threshold between two neighbouring values at quantile q (never on a value, so no ties decide)."""
    v = np.sort(np.asarray(values, dtype=np.float64)[np.isfinite(values)])
    i = min(max(1, int(q * len(v))), len(v) - 1)
    return float((v[i - 1] + v[i]) / 2)


def spread_int8_rule(model_dir: Path, shards: Path) -> None:
    """Give the int8 file thresholds of its own (model.json's verdict_by_variant) that split the test photos over
    every branch of the rule: each input check, the energy and feature scores, do_not_eat, edible, low confidence.
    The tiny test model's fitted rule abstains on nearly every real photo, which would make verdict parity trivial."""
    clf = OnnxClassifier.load(model_dir, "int8", threads=1)
    pre = clf.preprocessing
    photos = [b.as_py() for s in ("test", "ood") for b in read_split(shards, s, ["image"]).column("image")]
    x = np.stack([load_for_model(d, int(pre["image_size"]), pre["mean"], pre["std"]) for d in photos])
    outs = clf.outputs(x)
    probs = clf.probabilities(outs["logits"])
    p_danger = probs[:, np.asarray(clf.catalogue.dangerous_mask)].sum(axis=1)
    checks = [
        {**c, "threshold": between(outs["input_stats"][:, c["stat"]], 0.04 if c["bound"] == "min" else 0.96)}
        for c in clf.rule.to_dict()["input_checks"]
    ]
    rule = {
        "edible_min_confidence": between(probs.max(axis=1), 0.3),
        "poison_max": between(p_danger, 0.6),
        "do_not_eat_min": between(p_danger, 0.6),
        "ood_threshold": between(energy_score(outs["logits"], float(clf.meta["temperature"])), 0.9),
        "feature_threshold": between(outs["feature_score"].reshape(-1), 0.9),
        "input_checks": checks,
    }
    meta = json.loads((model_dir / "model.json").read_text())
    meta["verdict_by_variant"] = {"int8": VerdictRule.from_dict(rule).to_dict()}
    write_json_atomic(model_dir / "model.json", meta)


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Field]:
    """Shards with a test split (252 photos) and an OOD split, a tiny model folder, served (int8) by `serve run`."""
    import ray
    from ray import serve

    tmp = tmp_path_factory.mktemp("field")
    shards = make_shards(
        tmp / "shards", image_size=IMAGE_SIZE, specimens_per_class=24, photos_per_specimen=3, ood_images=48, seed=3
    )
    model_dir = make_model_dir(tmp)
    spread_int8_rule(model_dir, shards)
    overrides = [
        f"serve.model_dir={model_dir}",
        "serve.variant=int8",
        "serve.model.ray_actor_options.num_cpus=0.5",
        "serve.ingress.ray_actor_options.num_cpus=0.25",
        f"monitoring.feedback.dir={tmp / 'feedback'}",
    ]
    saved = os.environ.get("MYCOLENS_RELOAD_TOKEN")
    os.environ["MYCOLENS_RELOAD_TOKEN"] = RELOAD_TOKEN  # before Ray starts: the ingress inherits it
    start_ray(PROXY)
    port = free_port()
    config = write_serve_config(tmp / "serve.yaml", port, overrides, {"model_dir": str(model_dir), "variant": "int8"})
    gcs = ray.get_runtime_context().gcs_address
    try:
        proc = serve_run_config(config, gcs)
        assert proc.returncode == 0, proc.stderr[-3000:]
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, version=model_version(model_dir))
        yield Field(base, model_dir, shards, tmp / "feedback", tmp)
    finally:
        serve.shutdown()
        ray.shutdown()
        if saved is None:
            os.environ.pop("MYCOLENS_RELOAD_TOKEN", None)
        else:
            os.environ["MYCOLENS_RELOAD_TOKEN"] = saved


def encode(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def not_mushrooms(seed: int = 7) -> list[tuple[str, bytes, str]]:
    """Generated non-mushroom images of other sizes than the model's (the resize path): noise, gradients, stripes,
    a chessboard, flat colour, shapes and text, in JPEG, PNG and WebP."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, bytes, str]] = []
    sizes = [(45, 37), (64, 48), (100, 75), (37, 80), (120, 90), (33, 33), (200, 150), (50, 101)]
    for i in range(48):
        w, h = sizes[i % len(sizes)]
        kind = i % 6
        if kind == 0:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            gx = np.linspace(0, 255, w)[None, :, None]
            gy = np.linspace(255, 0, h)[:, None, None]
            arr = np.broadcast_to((gx * rng.random(3) + gy * rng.random(3)) / 2, (h, w, 3)).astype(np.uint8)
        elif kind == 2:
            period = int(rng.integers(2, 9))
            arr = (((np.arange(w)[None, :] // period) % 2) * 255 * np.ones((h, 1)))[..., None].repeat(3, -1)
            arr = arr.astype(np.uint8)
        elif kind == 3:
            cell = int(rng.integers(3, 12))
            board = ((np.arange(h)[:, None] // cell + np.arange(w)[None, :] // cell) % 2) * 255
            arr = board[..., None].repeat(3, -1).astype(np.uint8)
        elif kind == 4:
            arr = np.full((h, w, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        else:
            img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
            d = ImageDraw.Draw(img)
            d.ellipse((w // 5, h // 5, w // 2, h // 2), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            d.text((2, h // 2), "not a mushroom", fill=(0, 0, 0))
            arr = np.asarray(img)
        fmt = ("PNG", "JPEG", "WEBP")[i % 3]
        save = {"quality": 90} if fmt == "JPEG" else ({"lossless": True} if fmt == "WEBP" else {})
        out.append((f"generated-{i}.{fmt.lower()}", encode(Image.fromarray(arr, "RGB"), fmt, **save), MIME[fmt]))
    return out


def resized_photos(photos: list[bytes]) -> list[tuple[str, bytes, str]]:
    """Test photos at other sizes (larger and smaller than the model's input) and EXIF-rotated: the resize path."""
    out = []
    sizes = [(45, 37), (64, 48), (97, 131), (40, 40), (29, 41), (150, 100)]
    for i, data in enumerate(photos[:24]):
        img = Image.open(io.BytesIO(data)).convert("RGB").resize(sizes[i % len(sizes)], Image.Resampling.LANCZOS)
        fmt = "PNG" if i % 2 else "JPEG"
        out.append((f"resized-{i}.{fmt.lower()}", encode(img, fmt), MIME[fmt]))
    for i in range(4):
        out.append((f"exif-{i}.jpg", exif_rotated_jpeg((80 + 10 * i, 40 + 5 * i)), "image/jpeg"))
    return out


def rule_flags(
    rule: VerdictRule, dangerous: np.ndarray, probs: np.ndarray, energy: float, feature: float, stats: np.ndarray
) -> list[bool]:
    """Every comparison the verdict rule makes for one photo (mycolens.verdict.rule.judge), in order."""
    p_danger = float(np.asarray(probs)[dangerous].sum())
    return [
        *(bool(c.fails(np.asarray([stats[c.stat]]))[0]) for c in rule.input_checks),
        energy > rule.ood_threshold,
        feature > rule.feature_threshold,
        bool(dangerous[int(np.argmax(probs))]),
        p_danger >= rule.do_not_eat_min,
        float(np.max(probs)) >= rule.edible_min_confidence,
        p_danger < rule.poison_max,
    ]


DEVICE_ANSWERS = """
async (items) => {
  const field = window.mycolensField;
  const info = await field.info();
  const answers = [];
  const t0 = performance.now();
  for (const [name, b64, type] of items) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    try {
      answers.push(await field.answer(new Blob([bytes], { type }), 100));
    } catch (e) {
      answers.push({ error: { code: e.code || "", message: String(e.message || e) } });
    }
  }
  return { info, answers, ms: performance.now() - t0, cores: navigator.hardwareConcurrency };
}
"""


def test_device_answers_agree_with_the_server(browser, field, tmp_path):
    started = time.perf_counter()
    meta = json.loads((field.model_dir / "model.json").read_text())
    n_classes = len(meta["classes"])
    test_photos = [b.as_py() for b in read_split(field.shards, "test", ["image"]).column("image")]
    ood = [b.as_py() for b in read_split(field.shards, "ood", ["image"]).column("image")]
    assert len(test_photos) >= 200 and len(ood) >= 40
    items = (
        [(f"test-{i}.jpg", b, "image/jpeg") for i, b in enumerate(test_photos)]
        + [(f"ood-{i}.jpg", b, "image/jpeg") for i, b in enumerate(ood)]
        + not_mushrooms()
        + resized_photos(test_photos)
    )

    with httpx.Client(base_url=field.base, timeout=60) as c:
        server = []
        for name, data, mime in items:
            r = c.post(f"/predict?top_k={n_classes}", files={"file": (name, data, mime)})
            assert r.status_code == 200, (name, r.text)
            server.append(r.json())
        mj = c.get("/field/model.json")
        assert mj.status_code == 200 and mj.headers["x-mycolens-variant"] == "int8"
        assert c.get("/field/model.json", headers={"If-None-Match": mj.headers["etag"]}).status_code == 304
    server_s = time.perf_counter() - started

    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(field.base + "/")
    page.wait_for_function("window.mycolensField !== undefined")
    payload = [[n, base64.b64encode(d).decode(), m] for n, d, m in items]
    out = page.evaluate(DEVICE_ANSWERS, payload)
    page.close()

    info, device = out["info"], out["answers"]
    assert info["model_sha256"] == mj.headers["etag"].strip('"')
    assert info["version"] == meta["version"] and info["variant"] == "int8", info
    # the page is cross-origin isolated (serve.field.cross_origin_isolated), so WASM threads could run; it runs the
    # serve.field.wasm_threads the server names
    assert info["isolated"] and info["threads"] == 1, info
    assert all(u.startswith(field.base) or u.startswith(("blob:", "data:")) for u in requests), requests
    assert any("/field/ort/ort-wasm-simd-threaded.wasm" in u for u in requests)

    errors = [(items[i][0], d["error"]) for i, d in enumerate(device) if "error" in d]
    assert not errors, errors[:5]
    verdict_same = top1_same = 0
    unsafe, max_diff, disagreements = [], 0.0, []
    for (name, _, _), s, d in zip(items, server, device, strict=True):
        verdict_same += s["verdict"] == d["verdict"]
        top1_same += s["species"] == d["species"]
        if d["verdict"] == "edible" and s["verdict"] != "edible":
            unsafe.append(name)
        if s["verdict"] != d["verdict"] or s["species"] != d["species"]:
            disagreements.append((name, s["verdict"], d["verdict"], s["abstain_reason"], d["abstain_reason"]))
        probs = {t["species"]: t["probability"] for t in s["top_k"]}
        for t in d["top_k"]:
            max_diff = max(max_diff, abs(probs[t["species"]] - t["probability"]))
        assert d["model"] == s["model"]
    # beneath the verdicts: each comparison of the rule gets the same answer from the device's scores as from the
    # served file's scores in ONNX Runtime here (Pillow decode and resize), so agreement is not an artefact of one
    # abstention branch catching everything
    clf = OnnxClassifier.load(field.model_dir, "int8", threads=1)
    pre = clf.preprocessing
    x = np.stack([load_for_model(d, int(pre["image_size"]), pre["mean"], pre["std"]) for _, d, _ in items])
    outs = clf.outputs(x)
    probs_py = clf.probabilities(outs["logits"])
    energy_py = energy_score(outs["logits"], float(meta["temperature"]))
    dangerous = np.asarray(clf.catalogue.dangerous_mask)
    flags_py = np.array(
        [
            rule_flags(clf.rule, dangerous, p, e, f, st)
            for p, e, f, st in zip(
                probs_py, energy_py, outs["feature_score"].reshape(-1), outs["input_stats"], strict=True
            )
        ]
    )
    flags_dev = np.array(
        [
            rule_flags(
                clf.rule,
                dangerous,
                np.asarray(d["probabilities"]),
                d["scores"]["energy"],
                d["scores"]["feature_score"],
                np.asarray(d["scores"]["input_stats"]),
            )
            for d in device
        ]
    )
    flag_agreement = (flags_py == flags_dev).mean(axis=0)
    stats_dev = np.array([d["scores"]["input_stats"] for d in device])
    n = len(items)
    report = {
        "photos": n,
        "test_split": len(test_photos),
        "not_a_mushroom": len(ood) + len(not_mushrooms()),
        "verdict_agreement": round(verdict_same / n, 4),
        "top1_agreement": round(top1_same / n, 4),
        "device_edible_server_not": len(unsafe),
        "max_abs_probability_difference": max_diff,
        "max_abs_probability_difference_vs_in_process": float(
            np.abs(np.array([d["probabilities"] for d in device]) - probs_py).max()
        ),
        "max_abs_energy_difference": float(np.abs(np.array([d["scores"]["energy"] for d in device]) - energy_py).max()),
        "max_abs_input_stats_difference": float(np.nanmax(np.abs(stats_dev - outs["input_stats"]))),
        "input_stats_nan_mismatch": int((np.isnan(stats_dev) != np.isnan(outs["input_stats"])).sum()),
        "rule_comparison_agreement_min": float(flag_agreement.min()),
        "rule_comparisons_true_on_server_side": flags_py.sum(axis=0).tolist(),
        "server_verdicts": {v: sum(a["verdict"] == v for a in server) for v in ("edible", "do_not_eat", "uncertain")},
        "server_abstain_reasons": {
            r: sum(a["abstain_reason"] == r for a in server) for r in {a["abstain_reason"] for a in server} if r
        },
        "device_ms_per_photo": round(out["ms"] / n, 2),
        "server_s": round(server_s, 1),
        "variant": info["variant"],
        "wasm_threads": info["threads"],
    }
    print("field-mode parity:", json.dumps(report))
    nan_mismatch = np.argwhere(np.isnan(stats_dev) != np.isnan(outs["input_stats"]))
    nan_rows = [(items[i][0], int(j), stats_dev[i, j], float(outs["input_stats"][i, j])) for i, j in nan_mismatch]
    (tmp_path / "parity.json").write_text(
        json.dumps({**report, "disagreements": disagreements, "nan_mismatch": nan_rows}, indent=2)
    )
    assert not unsafe, unsafe
    assert flag_agreement.min() >= 0.99, flag_agreement
    assert verdict_same / n >= 0.99, disagreements[:10]
    assert top1_same / n >= 0.99, disagreements[:10]


def test_the_page_installs_and_answers_on_the_device_offline(browser, field, tmp_path):
    photo = [b.as_py() for b in read_split(field.shards, "test", ["image"]).column("image")][5]
    photo_file = tmp_path / "mushroom.jpg"
    photo_file.write_bytes(photo)
    with httpx.Client(base_url=field.base, timeout=60) as c:
        api = c.post("/predict?top_k=5", files={"file": ("mushroom.jpg", photo, "image/jpeg")}).json()
        manifest = c.get("/static/manifest.webmanifest")
        assert manifest.status_code == 200 and manifest.json()["start_url"] == "/"
        assert c.get("/sw.js").headers["content-type"].startswith("text/javascript")
    model_sha = hashlib.sha256((field.model_dir / "model.json").read_bytes()).hexdigest()

    context = browser.new_context()
    page = context.new_page()
    page.goto(field.base + "/")
    # the service worker keeps the page, scripts and ONNX Runtime Web, then controls the page; the page keeps the
    # verified model pair itself
    page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=60_000)
    assert kept_paths(page, "mycolens-field-v2") >= {
        "/",
        "/static/field.js",
        "/static/outbox.js",
        "/field/ort/ort-wasm-simd-threaded.wasm",
        "/feedback",
    }
    wait_model_kept(page, model_sha)

    page.get_by_label("Choose a photo").set_input_files(photo_file)  # online, automatic: the server answers
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.locator("#answer-source").get_attribute("data-source") == "server"

    context.set_offline(True)
    page.reload()
    page.wait_for_selector("#file", state="attached")
    assert page.evaluate("fetch('/healthz').then(() => 'reached', () => 'offline')") == "offline"
    page.get_by_label("Choose a photo").set_input_files(photo_file)
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])", timeout=60_000)
    assert page.locator("#error").is_hidden(), page.locator("#error-message").inner_text()
    source = page.locator("#answer-source")
    assert source.get_attribute("data-source") == "device"
    assert source.get_attribute("data-model-sha256") == model_sha
    assert model_sha[:12] in source.inner_text() and "this device" in source.inner_text()
    assert page.locator("#verdict").get_attribute("data-verdict") == api["verdict"]
    assert page.locator("#common-name").get_attribute("data-species") == api["species"]
    assert page.locator("#common-name").inner_text() == api["common_name"]
    assert page.locator("#topk-body tr").count() == len(api["top_k"])
    assert source.get_attribute("data-model-update") == "offline"
    page.screenshot(path=str(tmp_path / "field-offline.png"), full_page=True)
    context.close()


def kept_paths(page, cache: str) -> set[str]:
    """The paths a Cache Storage cache of the page holds."""
    js = "(n) => caches.open(n).then((c) => c.keys()).then((k) => k.map((r) => new URL(r.url).pathname))"
    return set(page.evaluate(js, cache))


def wait_model_kept(page, model_sha: str) -> None:
    """Wait until the page (app.js, on load) has fetched, verified and kept the served model with model.json `model_sha`."""
    pointer = "/field/kept/current"
    js = """async ([sha, key]) => {
      const r = await (await caches.open("mycolens-field-model")).match(key);
      return r !== undefined && (await r.json()).sha256 === sha;
    }"""
    deadline = time.monotonic() + 60
    while not page.evaluate(js, [model_sha, pointer]):
        assert time.monotonic() < deadline, f"the page did not keep model {model_sha[:12]} within 60 s"
        time.sleep(0.25)
    assert {f"/field/kept/{model_sha}/model.json", f"/field/kept/{model_sha}/model"} <= kept_paths(
        page, "mycolens-field-model"
    )


NODE_PREPROCESS = """
import { readFileSync, writeFileSync } from "fs";
const { preprocess } = await import(process.argv[1]);
const cases = JSON.parse(readFileSync(process.argv[2] + "/cases.json"));
cases.forEach((c, i) => {
  const raw = new Uint8ClampedArray(readFileSync(process.argv[2] + "/" + i + ".rgba"));
  writeFileSync(process.argv[2] + "/" + i + ".f32", preprocess(raw, c.w, c.h, c.pre));
});
"""


def test_device_preprocessing_is_pillows_bit_for_bit(tmp_path):
    """field.js's resize (Pillow 13's bilinear, both pass orders), center crop and normalisation give the very
    float32 input of mycolens.inference.preprocess for photos smaller, larger, taller and wider than the model's."""
    import shutil
    import subprocess

    from mycolens.inference.preprocess import normalize, resize_center_crop

    node = shutil.which("node")
    assert node is not None, "field mode needs node and npm on the machine (make web)"
    rng = np.random.default_rng(11)
    cases, refs = [], []
    sizes = [(37, 80), (80, 37), (45, 37), (33, 33), (31, 17), (32, 400), (401, 32), (1000, 999), (17, 5), (640, 480)]
    sizes += [tuple(int(v) for v in rng.integers(5, 300, 2)) for _ in range(20)]
    for i, (w, h) in enumerate(sizes):
        size = 224 if i % 3 == 0 else IMAGE_SIZE
        pre = {"image_size": size, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i % 2:  # smooth, photo-like content as well as noise
            small = Image.fromarray(arr).resize((max(1, w // 6), max(1, h // 6)))
            arr = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))
        np.concatenate([arr, np.full((h, w, 1), 255, np.uint8)], -1).tofile(tmp_path / f"{i}.rgba")
        cases.append({"w": w, "h": h, "pre": pre})
        refs.append(normalize(resize_center_crop(Image.fromarray(arr), size), pre["mean"], pre["std"]))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    field_js = Path(__file__).resolve().parents[1] / "serve" / "static" / "field.js"
    subprocess.run([node, "--input-type=module", "-e", NODE_PREPROCESS, str(field_js), str(tmp_path)], check=True)
    differ = []
    for i, ref in enumerate(refs):
        got = np.fromfile(tmp_path / f"{i}.f32", np.float32).reshape(ref.shape)
        if not np.array_equal(got, ref):
            differ.append((sizes[i], float(np.abs(got - ref).max())))
    assert not differ, differ


def test_bad_photos_get_the_servers_error_codes_on_the_device(browser, field, tmp_path):
    """The device refuses what the server refuses, with the contract's codes, answers the unusual valid images, and
    the page never leaves an earlier photo's answer on screen after a refused one."""
    cases = {name: (data, fname, code) for name, (data, fname, _status, code) in bad_inputs().items()}
    with httpx.Client(base_url=field.base, timeout=60) as c:
        for data, fname, code in cases.values():
            assert c.post("/predict", files={"file": (fname, data, "image/jpeg")}).json()["error"]["code"] == code
    page = browser.new_page()
    page.goto(field.base + "/")
    page.wait_for_function("window.mycolensField !== undefined")
    items = [[n, base64.b64encode(d).decode(), "image/jpeg"] for n, (d, _, _) in cases.items()]
    items += [[n, base64.b64encode(d).decode(), ""] for n, d in good_inputs().items()]
    device = page.evaluate(DEVICE_ANSWERS, items)["answers"]
    got = dict(zip([i[0] for i in items], device, strict=True))
    for name, (_, _, code) in cases.items():
        assert got[name].get("error", {}).get("code") == code, (name, got[name])
    for name in good_inputs():
        assert "error" not in got[name] and got[name]["verdict"] in ("edible", "do_not_eat", "uncertain"), name

    page.select_option("#answer-mode", "device")
    photo = tmp_path / "mushroom.jpg"
    photo.write_bytes(read_split(field.shards, "test", ["image"]).column("image")[0].as_py())
    page.get_by_label("Choose a photo").set_input_files(photo)
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.locator("#answer-source").get_attribute("data-source") == "device"
    notes = tmp_path / "notes.jpg"
    notes.write_bytes(cases["text_as_jpg"][0])
    page.get_by_label("Choose a photo").set_input_files(notes)
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert page.locator("#result").is_hidden()
    assert "not a photo" in page.locator("#error-message").inner_text()
    page.close()


DEVICE_ONE = """
async ([b64, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return window.mycolensField.answer(new Blob([bytes], { type }), 5);
}
"""


def reload_model(base: str, model_dir: Path) -> None:
    """POST /admin/reload to `model_dir` (int8) and wait until /predict answers with its version."""
    with httpx.Client(base_url=base, timeout=120) as c:
        r = c.post(
            "/admin/reload",
            json={"model_dir": str(model_dir), "variant": "int8"},
            headers={"Authorization": f"Bearer {RELOAD_TOKEN}"},
        )
        assert r.status_code == 200, r.text
    wait_ready(base, version=model_version(model_dir))


def test_a_new_served_model_replaces_the_kept_one_only_once_verified(browser, field):
    """After a reload on the server, the page's next online visit fetches the new pair; a transfer that fails the
    sha256 check keeps the verified model it had (and says so); the device never answers with a mixed pair."""
    photo = [b.as_py() for b in read_split(field.shards, "test", ["image"]).column("image")][9]
    arg = [base64.b64encode(photo).decode(), "image/jpeg"]
    old_sha = hashlib.sha256((field.model_dir / "model.json").read_bytes()).hexdigest()
    second = make_model_dir(field.tmp / "second", seed=1)
    new_sha = hashlib.sha256((second / "model.json").read_bytes()).hexdigest()
    assert model_version(second) != model_version(field.model_dir)

    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(field.base + "/")
        page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=60_000)
        wait_model_kept(page, old_sha)
        first = page.evaluate(DEVICE_ONE, arg)
        assert first["model_sha256"] == old_sha and first["model_update"]["status"] in ("fetched", "current")

        reload_model(field.base, second)
        with httpx.Client(base_url=field.base, timeout=60) as c:
            server_new = c.post("/predict?top_k=5", files={"file": ("p.jpg", photo, "image/jpeg")}).json()
        assert server_new["model"]["version"] == model_version(second)

        # the next visit gets model files that differ from the new model.json's sha256 (a broken transfer)
        def broken(route) -> None:
            body = bytearray(route.fetch().body())
            body[len(body) // 2] ^= 0xFF
            route.fulfill(status=200, body=bytes(body), headers={"Content-Type": "application/octet-stream"})

        context.route("**/field/model/*", broken)
        page.reload()
        refused = page.evaluate(DEVICE_ONE, arg)
        assert refused["model_update"]["status"] == "refused", refused["model_update"]
        assert "differs from model.json's sha256" in refused["model_update"]["problem"]
        assert refused["model_sha256"] == old_sha and refused["model"] == first["model"]
        assert refused["probabilities"] == first["probabilities"]
        wait_model_kept(page, old_sha)
        page.select_option("#answer-mode", "device")
        upload = field.tmp / "update.jpg"
        upload.write_bytes(photo)
        page.get_by_label("Choose a photo").set_input_files(upload)
        page.wait_for_selector("#result:not([hidden])", timeout=30_000)
        source = page.locator("#answer-source")
        assert source.get_attribute("data-model-update") == "refused"
        assert "could not be verified" in source.inner_text()

        # the transfer works again: the next visit fetches, verifies and keeps the new pair, and answers as the server
        context.unroute("**/field/model/*")
        page.reload()
        updated = page.evaluate(DEVICE_ONE, arg)
        assert updated["model_update"]["status"] == "fetched" and updated["model_sha256"] == new_sha
        assert updated["model"] == server_new["model"]
        assert (updated["verdict"], updated["species"]) == (server_new["verdict"], server_new["species"])
        wait_model_kept(page, new_sha)
        assert not any(old_sha in p for p in kept_paths(page, "mycolens-field-model"))
        page.reload()
        assert page.evaluate(DEVICE_ONE, arg)["model_update"]["status"] == "current"
    finally:
        context.close()
        reload_model(field.base, field.model_dir)


OUTBOX_WAITING = "document.getElementById('outbox-status').dataset.waiting"


def test_feedback_given_offline_waits_on_the_device_and_is_sent_once(browser, field, tmp_path):
    """Corrections given with no network are kept in IndexedDB, survive a reload, and reach POST /feedback once the
    network is back, once each; a send whose answer is lost is not stored twice (409 duplicate_claim clears it)."""
    from mycolens.monitoring.claims import read_claims

    photos = [b.as_py() for b in read_split(field.shards, "test", ["image"]).column("image")][20:23]
    files = []
    for i, data in enumerate(photos):
        files.append(tmp_path / f"found-{i}.jpg")
        files[-1].write_bytes(data)
    species = ["boletus_edulis", "amanita_phalloides", "cantharellus_cibarius"]
    before = {c.id for c in read_claims(field.feedback)}

    def new_claims() -> list:
        return [c for c in read_claims(field.feedback) if c.id not in before]

    def correct(page, path: Path, chosen: str) -> str:
        page.get_by_label("Choose a photo").set_input_files(path)
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        page.select_option("#feedback-species", chosen)
        page.check("#feedback-consent")
        page.click("#feedback-send")
        page.wait_for_function(
            "(t) => !document.getElementById('feedback-status').textContent.startsWith(t)", arg="Sending"
        )
        page.wait_for_function("document.getElementById('feedback-status').textContent.length > 0")
        return page.locator("#feedback-status").inner_text()

    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(field.base + "/")
        page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=60_000)
        wait_model_kept(page, hashlib.sha256((field.model_dir / "model.json").read_bytes()).hexdigest())

        context.set_offline(True)
        page.reload()
        page.wait_for_selector("#file", state="attached")
        assert "kept on this device" in correct(page, files[0], species[0])
        assert "(2 waiting)" in correct(page, files[1], species[1])
        page.reload()  # still offline: the page says what waits
        page.wait_for_function(f"{OUTBOX_WAITING} === '2'")
        assert "2 correction(s) wait on this device" in page.locator("#outbox-status").inner_text()
        assert new_claims() == []

        context.set_offline(False)  # the "online" event sends what waits
        page.wait_for_function(f"{OUTBOX_WAITING} === '0'", timeout=30_000)
        assert "2 correction(s) kept on this device reached the server" in page.locator("#outbox-status").inner_text()
        assert sorted(c.species for c in new_claims()) == sorted(species[:2])
        again = page.evaluate("window.mycolensOutbox.send()")
        assert (again["sent"], again["already"], again["left"]) == (0, 0, 0)

        # the server stores a correction but its answer never reaches the page: kept, then cleared by the 409.
        # (Chromium does not hand an intercepted multipart body with a file to Playwright, so the handler delivers
        # the same photo and species itself, then cuts the page's connection.)
        delivered: list[int] = []

        def lost(route) -> None:
            if route.request.method == "POST":
                sent = {"file": ("photo", photos[2], "image/jpeg")}
                delivered.append(
                    httpx.post(field.base + "/feedback", files=sent, data={"species": species[2]}).status_code
                )
                route.abort("connectionreset")
            else:
                route.continue_()

        context.route("**/feedback", lost)
        assert "kept on this device" in correct(page, files[2], species[2])
        assert delivered == [202] and len(new_claims()) == 3
        context.unroute("**/feedback")
        report = page.evaluate("window.mycolensOutbox.send()")
        assert (report["sent"], report["already"], report["left"], report["refused"]) == (0, 1, 0, [])
        claims = new_claims()
        assert sorted(c.species for c in claims) == sorted(species)
        assert len({c.sha256 for c in claims}) == 3
    finally:
        context.close()


def test_automatic_mode_answers_on_the_device_when_the_server_fails_or_is_slow(browser, field, tmp_path):
    """Automatic: a 503 from /predict, or no answer within 10 s, and this device answers; "always the server" shows
    the server's error instead."""
    photo = tmp_path / "mushroom.jpg"
    photo.write_bytes(read_split(field.shards, "test", ["image"]).column("image")[3].as_py())
    unavailable = json.dumps({"error": {"code": "model_unavailable", "message": "the model is loading"}})
    held: list = []  # requests left unanswered (a slow server); the context's close ends them

    def fail(route) -> None:
        route.fulfill(status=503, body=unavailable, headers={"Content-Type": "application/json"})

    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(field.base + "/")
        page.wait_for_function("window.mycolensField !== undefined")

        def ask(mode: str) -> str:
            page.select_option("#answer-mode", mode)
            page.get_by_label("Choose a photo").set_input_files(photo)
            page.wait_for_selector("#result:not([hidden]), #error:not([hidden])", timeout=60_000)
            return (
                "error"
                if page.locator("#error").is_visible()
                else page.locator("#answer-source").get_attribute("data-source")
            )

        context.route("**/predict*", fail)
        assert ask("auto") == "device"
        assert ask("server") == "error" and "the model is loading" in page.locator("#error-message").inner_text()
        context.unroute("**/predict*")
        context.route("**/predict*", lambda route: held.append(route))
        assert ask("auto") == "device" and len(held) == 1  # asked the server first, gave up after app.js's SLOW_MS
        context.unroute("**/predict*")
        assert ask("auto") == "server"
    finally:
        context.close()
