"""The HTTP contract without Ray: the same FastAPI app the Serve ingress runs, over an in-process model."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient

from mycolens.inference.onnx_model import OnnxClassifier
from mycolens.inference.preprocess import decode_image, normalize, resize_center_crop
from mycolens.serving.api import LocalBackend, build_api
from mycolens.serving.errors import ApiError
from mycolens.serving.hooks import IngressContext, PredictionHooks
from mycolens.serving.metrics import ServeMetrics
from mycolens.serving.model import ModelControl, ModelRunner
from mycolens.serving.settings import ServeSettings, ort_threads, resolve_path
from mycolens.serving.uploads import extract_image, parse_multipart, parse_top_k
from mycolens.verdict.rule import judge_outputs
from serve.app import build_app, deployment_options, load_serve_config
from tests.serve_fixtures import (
    PREDICTION_FIELDS,
    ROOT,
    bad_inputs,
    good_inputs,
    image_bytes,
    make_model_dir,
    model_version,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two valid model folders (different weights), a tampered copy and a copy whose safety gate failed."""
    tmp = tmp_path_factory.mktemp("models")
    one = make_model_dir(tmp / "one", seed=0)
    two = make_model_dir(tmp / "two", seed=1)
    tampered = shutil.copytree(two, tmp / "tampered")
    for name in ("model.onnx", "model.int8.onnx"):  # bytes changed after model.json recorded their hashes
        data = bytearray((tampered / name).read_bytes())
        data[-1] ^= 0xFF
        (tampered / name).write_bytes(bytes(data))
    unsafe = make_model_dir(tmp / "unsafe", seed=2, gate_passed=False)
    return {"one": one, "two": two, "tampered": tampered, "unsafe": unsafe}


def make_client(
    model_dir: Path, overrides: list[str] | None = None, **kw
) -> tuple[TestClient, IngressContext, ModelRunner]:
    cfg = load_serve_config(overrides or [])
    settings = ServeSettings.from_config(cfg)
    metrics = ServeMetrics()
    ctx = IngressContext(
        cfg, ROOT, metrics.registry, PredictionHooks(8, metrics.hook_errors.inc, metrics.hook_dropped.inc), None
    )  # type: ignore[arg-type]
    runner = ModelRunner(threads=1)
    runner.load(model_dir, cfg["variant"])
    app = build_api(settings, LocalBackend(runner, settings.limits, settings.decode_threads), ctx, metrics, **kw)
    return TestClient(app), ctx, runner


@pytest.fixture(scope="module")
def client(models: dict[str, Path]) -> TestClient:
    return make_client(models["one"], ["serve.limits.max_body_bytes=200000"])[0]


def post(client: TestClient, data: bytes, filename: str = "p.jpg", query: str = "", field: str = "file"):
    return client.post(f"/predict{query}", files={field: (filename, data, "application/octet-stream")})


def assert_error(r, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body


def assert_v2_error(r, status: int, contains: str = "") -> None:
    """The Open Inference Protocol's error: `{"error": "<message>"}`, a string a v2 client can print."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert contains in body["error"], body


def test_predict_has_every_contract_field_and_the_evaluation_verdict(
    client: TestClient, models: dict[str, Path]
) -> None:
    data = image_bytes(seed=3)
    r = post(client, data, query="?top_k=4")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == PREDICTION_FIELDS
    assert len(body["top_k"]) == 4 and all(set(t) == {"species", "probability", "edibility"} for t in body["top_k"])
    assert all(set(x) == {"species", "common_name", "edibility", "note"} for x in body["lookalikes"])
    assert body["model"] == {"name": "mycolens", "version": model_version(models["one"]), "variant": "int8"}
    # same numbers, verdict and reason as the evaluation path: every graph output -> judge_outputs
    clf = OnnxClassifier.load(models["one"], "int8", threads=1)
    x = normalize(resize_center_crop(decode_image(data), 32), clf.preprocessing["mean"], clf.preprocessing["std"])[None]
    outputs = clf.outputs(x)
    assert set(outputs) == {"logits", "feature_score", "input_stats"}
    judged = judge_outputs(outputs, clf.meta["temperature"], clf.catalogue.dangerous_mask, clf.rule)[0]
    assert (body["verdict"], body["abstain_reason"]) == judged
    assert body == clf.answer(x, top_k=4)[0]
    assert body["abstained"] == (body["verdict"] == "uncertain") == (body["abstain_reason"] is not None)


@pytest.mark.parametrize("name", list(bad_inputs()))
def test_bad_image_gets_its_status_and_the_next_request_succeeds(client: TestClient, name: str) -> None:
    data, filename, status, code = bad_inputs()[name]
    assert_error(post(client, data, filename), status, code)
    assert post(client, image_bytes()).status_code == 200


@pytest.mark.parametrize("name", list(good_inputs()))
def test_unusual_but_valid_images_succeed(client: TestClient, name: str) -> None:
    r = post(client, good_inputs()[name], f"{name}.img")
    assert r.status_code == 200, r.text
    assert set(r.json()) == PREDICTION_FIELDS


def test_exif_rotation_is_applied() -> None:
    from tests.serve_fixtures import exif_rotated_jpeg

    img = decode_image(exif_rotated_jpeg(size=(80, 40)))
    assert img.size == (40, 80)


@pytest.mark.parametrize(
    ("query", "field", "status", "code"),
    [
        ("?top_k=0", "file", 422, "invalid_parameter"),
        ("?top_k=abc", "file", 422, "invalid_parameter"),
        ("?top_k=51", "file", 422, "invalid_parameter"),
        ("", "image", 422, "missing_field"),
    ],
)
def test_bad_parameters_get_422_in_the_contract_shape(
    client: TestClient, query: str, field: str, status: int, code: str
) -> None:
    assert_error(post(client, image_bytes(), query=query, field=field), status, code)
    assert post(client, image_bytes()).status_code == 200


def test_body_and_content_type_errors(client: TestClient) -> None:
    assert_error(client.post("/predict"), 400, "empty")
    assert_error(
        client.post("/predict", content=b"x" * 300_000, headers={"content-type": "image/jpeg"}), 413, "too_large"
    )
    big = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    assert_error(post(client, image_bytes("PNG", size=(400, 400)) + big.tobytes()), 413, "too_large")
    assert_error(client.post("/predict", content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported")
    assert_error(
        client.post("/predict", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}), 400
    )
    r = client.post("/predict", content=image_bytes(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and set(r.json()) == PREDICTION_FIELDS


def test_unknown_routes_and_methods_answer_contract_errors(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_health_model_and_metrics(client: TestClient, models: dict[str, Path]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["model"]["version"] == model_version(models["one"])
    info = client.get("/model").json()
    assert info["classes"][0].keys() >= {"id", "common_name", "edibility", "scientific_name"}
    assert info["num_classes"] == 14 and info["input_size"] == 32
    assert info["versions"]["onnxruntime"] and info["metrics"]["accuracy"] == 0.5
    assert info["variant"] == "int8" and info["version"] == model_version(models["one"])
    post(client, image_bytes())
    post(client, b"", "e.jpg")
    text = client.get("/metrics").text
    for needle in (
        'mycolens_http_requests_total{method="POST",route="/predict",status="200"}',
        'mycolens_http_requests_total{method="POST",route="/predict",status="400"}',
        "mycolens_http_request_duration_seconds_bucket",
        "mycolens_batch_size_bucket",
        "mycolens_verdicts_total{verdict=",
        f'mycolens_model_info{{name="mycolens",variant="int8",version="{model_version(models["one"])}"}} 1.0',
        'mycolens_input_errors_total{code="empty"}',
    ):
        assert needle in text, needle


def test_v2_protocol_round_trip_equals_in_process_probabilities(client: TestClient, models: dict[str, Path]) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/mycolens").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert {o["name"] for o in meta["outputs"]} == {"probabilities", "logits"} and meta["outputs"][0]["shape"] == [
        -1,
        14,
    ]
    assert client.get("/v2/models/mycolens/ready").json()["ready"] is True
    x = np.random.default_rng(1).normal(size=(3, 3, 32, 32)).astype(np.float32)
    req = {
        "id": "r1",
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}],
    }
    r = client.post("/v2/models/mycolens/infer", json=req)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["id"] == "r1" and r.json()["model_version"] == model_version(models["one"])
    clf = OnnxClassifier.load(models["one"], "int8", threads=1)
    want = clf.probabilities(clf.logits(x)).astype(np.float32)
    got = np.asarray(out["probabilities"]["data"], np.float32).reshape(out["probabilities"]["shape"])
    np.testing.assert_array_equal(got, want)
    # nested data and an explicit output list
    req2 = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}],
        "outputs": [{"name": "logits"}],
    }
    assert [o["name"] for o in client.post("/v2/models/mycolens/infer", json=req2).json()["outputs"]] == ["logits"]
    # binary tensor extension (what tritonclient sends by default)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    r = client.post(
        "/v2/models/mycolens/infer",
        content=head + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    np.testing.assert_array_equal(np.frombuffer(r.content[n:], "<f4").reshape(3, 14), want)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"shape": [3, 3, 16, 16]}, 422),
        ({"shape": [3, 3, 32]}, 422),
        ({"datatype": "FP64"}, 422),
        ({"datatype": "INT8"}, 422),
        ({"name": "image"}, 422),
        ({"data": [1.0, 2.0]}, 422),
        ({"data": ["a"] * (3 * 3 * 32 * 32)}, 422),
    ],
)
def test_v2_bad_tensors_get_422(client: TestClient, change: dict, status: int) -> None:
    tensor = {"name": "input", "shape": [3, 3, 32, 32], "datatype": "FP32", "data": [0.0] * (3 * 3 * 32 * 32)} | change
    assert_v2_error(client.post("/v2/models/mycolens/infer", json={"inputs": [tensor]}), status)
    ok = {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * (3 * 32 * 32)}
    assert client.post("/v2/models/mycolens/infer", json={"inputs": [ok]}).status_code == 200


def test_v2_other_errors(client: TestClient) -> None:
    assert_v2_error(
        client.post("/v2/models/mycolens/infer", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "not JSON",
    )
    assert_v2_error(client.post("/v2/models/mycolens/infer", json={"inputs": []}), 422, "exactly one tensor")
    assert_v2_error(client.get("/v2/models/other"), 404, "no model 'other'")
    assert_v2_error(client.get("/v2/models/mycolens/versions/0"), 404, "version")
    assert_v2_error(client.post("/v2/models/other/infer", json={}), 404, "no model 'other'")
    assert_v2_error(client.post("/v2/models/mycolens/infer", content=b"x" * 200_001), 413, "over the limit")
    assert_v2_error(client.get("/v2/nope"), 404)  # Starlette's own errors too
    assert_v2_error(client.delete("/v2/models/mycolens/infer"), 405)
    # and the rest of the API keeps its documented object
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.post("/predict", content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported")


def test_v2_validation_and_internal_errors_are_strings_too(models: dict[str, Path]) -> None:
    """FastAPI's validation errors and unhandled exceptions under /v2 (a plug-in route there) take the v2 shape."""
    extra = APIRouter()

    @extra.get("/v2/extra")
    async def typed(n: int) -> dict:
        return {"n": n}

    @extra.get("/v2/boom")
    async def boom() -> dict:
        raise RuntimeError("kaput")

    @extra.get("/typed")
    async def typed_outside(n: int) -> dict:
        return {"n": n}

    client = TestClient(make_client(models["one"], routers=[extra])[0].app, raise_server_exceptions=False)
    assert client.get("/v2/extra?n=3").json() == {"n": 3}
    assert_v2_error(client.get("/v2/extra?n=three"), 422, "n:")
    assert_v2_error(client.get("/v2/extra"), 422, "n:")
    assert_v2_error(client.get("/v2/boom"), 500, "RuntimeError")
    assert_error(client.get("/typed?n=three"), 422, "invalid_parameter")
    assert_error(post(client, image_bytes(), query="?top_k=0"), 422, "invalid_parameter")


def test_rate_limits_answer_429_per_client_in_each_shape(models: dict[str, Path]) -> None:
    """Over serve.rate_limits: 429, Retry-After, the contract's body (a string under /v2); other clients go on."""
    feedback = APIRouter()  # a plug-in route like serve/web.py's, covered by path and method

    @feedback.post("/feedback")
    async def claim() -> dict:
        return {"status": "pending"}

    client, _, _ = make_client(
        models["one"],
        [
            "serve.rate_limits.predict={rate_per_s: 0.01, burst: 3}",
            "serve.rate_limits.feedback={rate_per_s: 0.5, burst: 1}",
        ],
        routers=[feedback],
    )
    app = client.app
    me, other = TestClient(app, client=("192.0.2.10", 4000)), TestClient(app, client=("192.0.2.11", 4000))
    assert [post(me, image_bytes()).status_code for _ in range(2)] == [200, 200]
    x = np.zeros((1, 3, 32, 32), np.float32)
    infer = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    assert me.post("/v2/models/mycolens/infer", json=infer).status_code == 200  # the third token: one bucket
    r = post(me, image_bytes())
    assert_error(r, 429, "rate_limited")
    assert r.headers["retry-after"] == "100"  # 1 token at 0.01/s
    assert_v2_error(me.post("/v2/models/mycolens/infer", json=infer), 429, "too many requests")
    assert me.post("/v2/models/mycolens/infer", json=infer).headers["retry-after"] == "100"
    assert post(other, image_bytes()).status_code == 200  # another client is unaffected
    assert me.get("/model").status_code == 200 and me.get("/v2/models/mycolens").status_code == 200  # not limited
    assert me.post("/feedback").status_code == 200
    r = me.post("/feedback")
    assert_error(r, 429, "rate_limited")
    assert r.headers["retry-after"] == "2"
    assert other.post("/feedback").status_code == 200
    # the refusals are counted, by limit and as HTTP answers of their route
    text = client.get("/metrics").text
    assert 'mycolens_rate_limited_total{limit="predict"} 3.0' in text
    assert 'mycolens_rate_limited_total{limit="feedback"} 1.0' in text
    assert 'mycolens_http_requests_total{method="POST",route="/predict",status="429"} 1.0' in text
    assert 'mycolens_http_requests_total{method="POST",route="/v2/models/{name}/infer",status="429"} 2.0' in text
    assert "/feedback" in client.get("/openapi.json").json()["paths"]
    assert "429" in client.get("/openapi.json").json()["paths"]["/feedback"]["post"]["responses"]
    # off: no limit at all
    free, _, _ = make_client(models["one"], ["serve.rate_limits.predict=null", "serve.rate_limits.feedback=0"])
    assert free.app.state.rate_limiter.buckets == {}
    assert post(free, image_bytes()).status_code == 200


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = {getattr(r, "path", None) for r in client.app.routes if getattr(r, "include_in_schema", False)}
    assert routes <= set(spec["paths"]), routes - set(spec["paths"])
    for path in (
        "/predict",
        "/healthz",
        "/readyz",
        "/model",
        "/metrics",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/infer",
        "/admin/reload",
        "/",
    ):
        assert path in spec["paths"], path
    predict = spec["paths"]["/predict"]["post"]
    assert "file" in predict["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"400", "413", "415", "422", "429"} <= set(predict["responses"])
    assert "Retry-After" in predict["responses"]["429"]["headers"]
    schema = lambda op, status: op["responses"][status]["content"]["application/json"]["schema"]["$ref"]  # noqa: E731
    assert schema(predict, "429").endswith("/ErrorBody") and schema(predict, "415").endswith("/ErrorBody")
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert schema(infer, "422").endswith("/V2ErrorBody") and schema(infer, "429").endswith("/V2ErrorBody")
    assert spec["components"]["schemas"]["V2ErrorBody"]["properties"]["error"]["type"] == "string"
    assert schema(spec["paths"]["/v2/models/{name}"]["get"], "404").endswith("/V2ErrorBody")
    assert "429" not in spec["paths"]["/model"]["get"]["responses"]
    assert any(p["name"] == "top_k" for p in predict["parameters"])


def test_prediction_hooks_get_the_crop_and_probabilities(models: dict[str, Path]) -> None:
    client, ctx, _ = make_client(models["one"])
    seen: list[tuple] = []
    sizes: list = []
    ctx.on_prediction(lambda img, probs: seen.append((img.shape, img.dtype, probs.shape, float(probs.sum()))))
    ctx.on_prediction(lambda img, probs, original_size=None: sizes.append(original_size))
    ctx.on_prediction(lambda img, probs: 1 / 0)  # a broken listener never fails a request
    for _ in range(3):
        assert post(client, image_bytes(size=(80, 60))).status_code == 200
    ctx.hooks.join()
    assert seen == [((32, 32, 3), np.dtype("uint8"), (14,), pytest.approx(1.0))] * 3
    assert sizes == [(80, 60)] * 3
    assert "mycolens_hook_errors_total 3.0" in client.get("/metrics").text


def test_web_plugin_router_setup_and_static_page(models: dict[str, Path], tmp_path: Path) -> None:
    router = APIRouter()

    @router.get("/monitoring/drift")
    async def drift(request: Request) -> dict:
        return {"observed": request.app.state.mycolens.state["n"]}

    def setup(ctx: IngressContext) -> None:
        ctx.state["n"] = 0
        ctx.on_prediction(lambda img, probs: ctx.state.__setitem__("n", ctx.state["n"] + 1))

    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<html>mycolens</html>")
    (static / "app.js").write_text("console.log(1)")
    client, ctx, _ = make_client(models["one"], static_dir=static, routers=[router], setups=[setup])
    post(client, image_bytes())
    ctx.hooks.join()
    assert client.get("/monitoring/drift").json() == {"observed": 1}
    assert client.get("/").text == "<html>mycolens</html>"
    assert client.get("/static/app.js").text == "console.log(1)"
    assert "/monitoring/drift" in client.get("/openapi.json").json()["paths"]
    bare, _, _ = make_client(models["one"], static_dir=tmp_path / "missing")
    assert bare.get("/").json()["docs"] == "/docs"


def test_admin_reload_token_refusals_and_swap(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    client, _, _ = make_client(models["one"])
    body = {"model_dir": str(models["two"])}
    monkeypatch.delenv("MYCOLENS_RELOAD_TOKEN", raising=False)
    assert_error(client.post("/admin/reload", json=body), 403, "reload_disabled")
    monkeypatch.setenv("MYCOLENS_RELOAD_TOKEN", "s3cret")
    assert_error(client.post("/admin/reload", json=body), 401, "unauthorized")
    auth = {"Authorization": "Bearer s3cret"}
    for bad in ("tampered", "unsafe"):
        assert_error(
            client.post("/admin/reload", json={"model_dir": str(models[bad])}, headers=auth), 409, "model_refused"
        )
        assert client.get("/model").json()["version"] == model_version(models["one"])
        assert post(client, image_bytes()).status_code == 200
    assert_error(
        client.post("/admin/reload", json={"model_dir": str(models["two"]), "variant": "int4"}, headers=auth), 422
    )
    r = client.post("/admin/reload", json={**body, "variant": "fp32"}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == {"name": "mycolens", "version": model_version(models["two"]), "variant": "fp32"}
    assert client.get("/model").json()["version"] == model_version(models["two"])
    assert post(client, image_bytes()).json()["model"]["version"] == model_version(models["two"])


def test_model_runner_refuses_bad_folders_and_keeps_serving(models: dict[str, Path]) -> None:
    runner = ModelRunner(threads=1)
    runner.load(models["one"], "fp32")
    for bad in ("tampered", "unsafe"):
        with pytest.raises(Exception, match="hash|safety gate"):
            runner.load(models[bad], "int8")
        assert runner.info()["version"] == model_version(models["one"]) and runner.last_error
    crop = np.zeros((64, 64, 3), np.uint8)  # a crop of another size (a reload changed the input size) still works
    assert runner.predict([crop, crop[:32, :32]], [1, 2])[1]["answer"]["top_k"].__len__() == 2


def test_model_control_prefers_the_newest_change() -> None:
    c = ModelControl()
    s1 = c.offer_config('{"a"}', "/m1", "int8")
    assert (
        s1["generation"] == 1 and c.offer_config('{"a"}', "/m1", "int8")["generation"] == 1
    )  # other replicas: no change
    assert c.set("/m2", "fp32")["desired"] == {"model_dir": "/m2", "variant": "fp32"}
    assert (
        c.offer_config('{"a"}', "/m1", "int8")["desired"]["model_dir"] == "/m2"
    )  # a restarted replica adopts the reload
    assert c.offer_config('{"b"}', "/m3", "int8")["desired"]["model_dir"] == "/m3"  # a new deploy config wins


def test_request_parsing_helpers() -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--B\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n\x00\x01\r\n--B--\r\n'
    parts = parse_multipart(body, "multipart/form-data; boundary=B")
    assert [(p.name, p.filename, p.data) for p in parts] == [("note", None, b"hi"), ("file", "a.jpg", b"\x00\x01")]
    assert extract_image(body, "multipart/form-data; boundary=B") == b"\x00\x01"
    assert parse_top_k(None, 3, 50) == 3 and parse_top_k("7", 3, 50) == 7
    for bad in ("0", "-1", "x", "51"):
        with pytest.raises(ApiError) as err:
            parse_top_k(bad, 3, 50)
        assert err.value.status == 422


def test_settings_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        ort_threads(None, 1) == 1
        and ort_threads(None, 2) == 2
        and ort_threads(None, 0.5) == 1
        and ort_threads(3, 1) == 3
    )
    monkeypatch.setenv("MYCOLENS_ROOT", "/srv/app")
    assert resolve_path("models/export") == Path("/srv/app/models/export") and resolve_path("/abs/m") == Path("/abs/m")


def test_serve_config_file_matches_conf_and_builds_the_app() -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)
    cfg = load_serve_config([])
    assert schema.http_options.host == cfg["host"] == "127.0.0.1" and schema.http_options.port == cfg["port"]
    app_cfg = raw["applications"][0]
    assert app_cfg["import_path"] == "serve.app:build_app" and app_cfg["name"] == cfg["app_name"]
    user = next(d for d in app_cfg["deployments"] if d["name"] == cfg["model"]["name"])["user_config"]
    assert resolve_path(user["model_dir"]) == resolve_path(cfg["model_dir"]) and user["variant"] == cfg["variant"]
    app = build_app({"overrides": ["serve.model.num_replicas=3", "serve.batch.max_batch_size=8"]})
    ingress = app._bound_deployment
    model = ingress.init_args[0]._bound_deployment
    assert ingress.name == "MycolensIngress" and model.name == "MycolensModel"
    assert model.num_replicas == 3 and model.max_ongoing_requests == cfg["model"]["max_ongoing_requests"]
    assert model.ray_actor_options["num_cpus"] == cfg["model"]["ray_actor_options"]["num_cpus"]
    assert model.user_config == {"model_dir": cfg["model_dir"], "variant": cfg["variant"]}
    assert model.init_args[:3] == (1, 8, cfg["batch"]["batch_wait_timeout_s"])  # threads = num_cpus
    assert deployment_options({"name": "x", "num_replicas": 2, "autoscaling_config": {"min_replicas": 1}}) == {
        "name": "x",
        "autoscaling_config": {"min_replicas": 1},
    }


def test_the_real_web_module_plugs_into_the_ingress(models: dict[str, Path], tmp_path: Path) -> None:
    """serve/web.py (issue 7) as serve/app.py mounts it: its router, setup(ctx) and the static page."""
    import importlib

    web = importlib.import_module("serve.web")
    client, ctx, _ = make_client(
        models["one"],
        [f"serve.model_dir={models['one']}", f"monitoring.feedback.dir={tmp_path / 'feedback'}"],
        static_dir=ROOT / "serve" / "static",
        routers=[web.router],
        setups=[web.setup],
    )
    assert post(client, image_bytes()).status_code == 200
    ctx.hooks.join()
    assert client.get("/monitoring/drift").status_code in (200, 503)
    assert client.get("/feedback").status_code == 200
    assert "/feedback" in client.get("/openapi.json").json()["paths"]
    if (ROOT / "serve" / "static" / "index.html").is_file():
        assert client.get("/").headers["content-type"].startswith("text/html")
    assert "mycolens_hook_errors_total 0.0" in client.get("/metrics").text


def test_haproxy_front_keeps_every_listener_on_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """front_env picks the front; the wrapper rewrites HAProxy's address-less binds to 127.0.0.1 and execs HAProxy."""
    import subprocess

    from serve.front import front_env, grpc_message_bytes, loopback_config

    # a process that already started a Ray with this front (the tests do) must still find the real HAProxy
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(ROOT / "serve" / "haproxy_loopback.py"))

    cluster = front_env("haproxy", ROOT, loopback=False)
    assert cluster["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and "RAY_SERVE_HAPROXY_BINARY_PATH" not in cluster
    assert front_env("python", ROOT)["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    # gRPC between deployments must take a whole group of photos at the body limit (default 4 MiB would not)
    serve_cfg = load_serve_config([])
    group = serve_cfg["ingress"]["group"]["max_size"] * serve_cfg["limits"]["max_body_bytes"]
    assert int(cluster["RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"]) >= grpc_message_bytes(serve_cfg) > group
    big = load_serve_config(["serve.limits.max_body_bytes=50000000"])
    assert grpc_message_bytes(big) > 4 * 50_000_000
    with pytest.raises(ValueError, match="serve.proxy"):
        front_env("nginx", ROOT)
    local = front_env("haproxy", ROOT)
    wrapper = Path(local["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert wrapper.is_file() and os.access(wrapper, os.X_OK) and Path(local["MYCOLENS_HAPROXY_BINARY"]).is_file()

    cfg = "frontend prometheus\n    bind :9101\nfrontend http\n    bind 127.0.0.1:8000\nlisten stats\n  bind *:8404\n"
    assert loopback_config(cfg) == cfg.replace("bind :9101", "bind 127.0.0.1:9101").replace("*:8404", "127.0.0.1:8404")
    (tmp_path / "haproxy.cfg").write_text(cfg)
    # the real HAProxy checks the rewritten file (-c: parse only); the wrapper passes the other arguments through
    out = subprocess.run(
        [str(wrapper), "-c", "-f", str(tmp_path / "haproxy.cfg")],
        env={**os.environ, **local},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "haproxy.cfg.loopback").read_text() == loopback_config(cfg)
    looped = subprocess.run(
        [str(wrapper), "-c", "-f", str(tmp_path / "haproxy.cfg")],
        env={**os.environ, **local, "MYCOLENS_HAPROXY_BINARY": str(wrapper)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert looped.returncode != 0 and "points at this wrapper" in looped.stderr


def test_haproxy_started_through_the_wrapper_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A Serve actor killed by Ray must not leave HAProxy holding its ports."""
    import subprocess

    import psutil

    from serve.front import front_env
    from tests.serve_fixtures import free_port

    env = {**os.environ, **front_env("haproxy", ROOT)}
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"defaults\n    mode http\n    timeout client 5s\nfrontend f\n    bind :{free_port()}\n")
    parent = (  # starts HAProxy through the wrapper, prints its pid, then dies without cleaning up
        "import subprocess, sys, time, os\n"
        f"p = subprocess.Popen([{str(env['RAY_SERVE_HAPROXY_BINARY_PATH'])!r}, '-db', '-f', {str(cfg)!r}],\n"
        "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid, flush=True); time.sleep(1.5); os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", parent], env=env, capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    try:
        psutil.Process(pid).wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        os.kill(pid, 9)
        pytest.fail("HAProxy outlived the process that started it")
