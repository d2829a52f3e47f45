"""The HTTP contract through real Ray Serve on 127.0.0.1: started with `serve run <config>`, loaded, broken, reloaded.

The proxy mode is conf/serve's `proxy` (MYCOLENS_TEST_PROXY=python|haproxy picks the other one).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from mycolens.inference.onnx_model import OnnxClassifier
from mycolens.serving.loadgen import PhotoLoad
from serve.app import load_serve_config
from tests.conftest import ROOT
from tests.serve_fixtures import (
    PREDICTION_FIELDS,
    bad_inputs,
    free_port,
    good_inputs,
    image_bytes,
    make_model_dir,
    model_version,
    serve_run_config,
    start_ray,
    wait_ready,
    write_serve_config,
)

pytestmark = pytest.mark.slow
PROXY = os.environ.get("MYCOLENS_TEST_PROXY") or load_serve_config([])["proxy"]
TOKEN = "test-reload-token"
OVERRIDES = [
    "serve.model.num_replicas=2",
    "serve.model.ray_actor_options.num_cpus=0.5",
    "serve.ingress.ray_actor_options.num_cpus=0.25",
    "serve.limits.max_body_bytes=8000000",  # a photo over 4 MiB (gRPC's default message limit) must pass
    "serve.model.control_poll_s=0.5",
]


@dataclass
class Served:
    base: str
    port: int
    config: Path
    models: dict[str, Path]
    gcs: str
    notes: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Ray (2 CPUs) + the app deployed by `serve run CONFIG` with 2 model replicas on model `one`."""
    import ray
    from ray import serve

    tmp = tmp_path_factory.mktemp("serve")
    models = {"one": make_model_dir(tmp / "one", seed=0), "two": make_model_dir(tmp / "two", seed=1)}
    models["tampered"] = shutil.copytree(models["two"], tmp / "tampered")
    for name in ("model.onnx", "model.int8.onnx"):  # bytes changed after model.json recorded their hashes
        blob = bytearray((models["tampered"] / name).read_bytes())
        blob[-1] ^= 0xFF
        (models["tampered"] / name).write_bytes(bytes(blob))
    saved = {k: os.environ.get(k) for k in ("MYCOLENS_RELOAD_TOKEN",)}
    os.environ["MYCOLENS_RELOAD_TOKEN"] = TOKEN  # before Ray starts: replicas inherit it
    start_ray(PROXY)
    port = free_port()
    config = write_serve_config(
        tmp / "serve.yaml", port, OVERRIDES, {"model_dir": str(models["one"]), "variant": "int8"}
    )
    gcs = ray.get_runtime_context().gcs_address
    try:
        proc = serve_run_config(config, gcs)
        assert proc.returncode == 0, proc.stderr[-3000:]
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, version=model_version(models["one"]))
        yield Served(base, port, config, models, gcs)
    finally:
        serve.shutdown()
        ray.shutdown()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def predict(
    client: httpx.Client, data: bytes | None = None, filename: str = "p.jpg", query: str = ""
) -> httpx.Response:
    return client.post(
        f"/predict{query}", files={"file": (filename, image_bytes() if data is None else data, "image/jpeg")}
    )


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code:
        assert body["error"]["code"] == code, body


def versions_seen(base: str, n: int = 12) -> set[str]:
    with httpx.Client(base_url=base, timeout=10) as c:
        return {c.get("/model").json()["version"] for _ in range(n)}


def wait_all_replicas(base: str, version: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if versions_seen(base) == {version}:
            return
        time.sleep(0.5)
    raise AssertionError(f"replicas did not all serve {version} in {timeout}s: {versions_seen(base)}")


class Load(PhotoLoad):
    """Background clients posting a photo until stopped (mycolens.serving.loadgen); answers by outcome."""

    def __init__(self, base: str, clients: int = 2) -> None:
        super().__init__(base, image_bytes(), clients, keep=True, timeout_s=30)

    @property
    def ok(self) -> int:
        return sum(1 for b in self.bodies if set(b) == PREDICTION_FIELDS)

    @property
    def errors(self) -> list[str]:
        wrong = [f"fields {sorted(b)}" for b in self.bodies if set(b) != PREDICTION_FIELDS]
        return [a.outcome for a in self.failed()] + wrong

    @property
    def versions(self) -> set[str]:
        return {b["model"]["version"] for b in self.bodies}


def test_every_endpoint_and_field(served: Served) -> None:
    with httpx.Client(base_url=served.base, timeout=30) as c:
        r = predict(c, query="?top_k=5")
        assert r.status_code == 200 and set(r.json()) == PREDICTION_FIELDS and len(r.json()["top_k"]) == 5
        assert r.json()["model"] == {
            "name": "mycolens",
            "version": model_version(served.models["one"]),
            "variant": "int8",
        }
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["ready"] is True
        info = c.get("/model").json()
        assert info["num_classes"] == len(info["classes"]) == 14 and info["input_size"] == 32
        assert info["metrics"]["accuracy"] == 0.5 and info["versions"]["onnxruntime"]
        text = c.get("/metrics").text
        for needle in (
            "mycolens_http_requests_total",
            "mycolens_http_request_duration_seconds_bucket",
            "mycolens_batch_size_bucket",
            "mycolens_verdicts_total",
            "mycolens_model_info{",
        ):
            assert needle in text, needle
        assert c.get("/v2/health/live").json() == {"live": True} and c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get("/v2/models/mycolens").json()["inputs"][0] == {
            "name": "input",
            "datatype": "FP32",
            "shape": [-1, 3, 32, 32],
        }
        assert c.get("/v2/models/mycolens/ready").json()["ready"] is True
        paths = set(c.get("/openapi.json").json()["paths"])
        assert {
            "/predict",
            "/healthz",
            "/readyz",
            "/model",
            "/metrics",
            "/v2/models/{name}/infer",
            "/admin/reload",
            "/",
        } <= paths
        page = c.get("/")
        assert page.status_code == 200
        if (ROOT / "serve" / "web.py").is_file():
            assert {"/monitoring/drift", "/feedback"} <= paths  # the issue-7 router is plugged in
            assert c.get("/monitoring/drift").status_code in (200, 503)


def test_bad_input_never_hurts_the_service(served: Served) -> None:
    with httpx.Client(base_url=served.base, timeout=30) as c:
        for name, (data, filename, status, code) in bad_inputs().items():
            assert_error(predict(c, data, filename), status, code)
            assert predict(c).status_code == 200, f"after {name}"
        for name, data in good_inputs().items():
            r = predict(c, data, f"{name}.img")
            assert r.status_code == 200 and set(r.json()) == PREDICTION_FIELDS, name
        assert_error(
            c.post("/predict", content=b"\xff\xd8" + b"x" * 8_500_000, headers={"content-type": "image/jpeg"}),
            413,
            "too_large",
        )
        assert predict(c).status_code == 200
        assert_error(c.post("/predict", files={"image": ("p.jpg", image_bytes(), "image/jpeg")}), 422, "missing_field")
        for q in ("?top_k=0", "?top_k=abc"):
            assert_error(predict(c, query=q), 422, "invalid_parameter")
            assert predict(c).status_code == 200
        assert_error(c.post("/predict"), 400, "empty")
        ok = {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}
        for bad in ({"shape": [1, 3, 16, 16]}, {"datatype": "FP64"}, {"data": [1.0]}):
            r = c.post("/v2/models/mycolens/infer", json={"inputs": [ok | bad]})  # the v2 protocol's string error
            assert r.status_code == 422 and isinstance(r.json()["error"], str) and r.json()["error"], r.text
            assert c.post("/v2/models/mycolens/infer", json={"inputs": [ok]}).status_code == 200


def test_a_phone_sized_photo_over_4_mib_is_answered(served: Served) -> None:
    """Photo bytes go from the ingress to the model deployment over Serve's gRPC, whose default limit is 4 MiB."""
    big = image_bytes(size=(2000, 1500), quality=100)
    assert 4 * 2**20 < len(big) < 8_000_000
    with httpx.Client(base_url=served.base, timeout=60) as c:
        r = predict(c, big)
        assert r.status_code == 200 and set(r.json()) == PREDICTION_FIELDS, r.text


def test_v2_round_trip_equals_in_process_probabilities(served: Served) -> None:
    x = np.random.default_rng(5).normal(size=(4, 3, 32, 32)).astype(np.float32)
    req = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}],
        "outputs": [{"name": "probabilities"}],
    }
    r = httpx.post(f"{served.base}/v2/models/mycolens/infer", json=req, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    clf = OnnxClassifier.load(served.models["one"], "int8", threads=1)
    want = clf.probabilities(clf.logits(x)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(out["data"], np.float32).reshape(out["shape"]), want)


def test_bounded_load_500_requests_16_concurrent(served: Served) -> None:
    async def run() -> list[httpx.Response | Exception]:
        sem = asyncio.Semaphore(16)
        photos = [image_bytes(seed=i) for i in range(20)]
        async with httpx.AsyncClient(base_url=served.base, timeout=60, limits=httpx.Limits(max_connections=16)) as c:

            async def one(i: int) -> httpx.Response | Exception:
                async with sem:
                    try:
                        return await c.post("/predict", files={"file": ("p.jpg", photos[i % 20], "image/jpeg")})
                    except httpx.HTTPError as exc:
                        return exc

            return await asyncio.gather(*(one(i) for i in range(500)))

    results = asyncio.run(run())
    bad = [
        r if isinstance(r, Exception) else (r.status_code, r.text[:100])
        for r in results
        if isinstance(r, Exception) or r.status_code != 200
    ]
    assert not bad, bad[:5]
    assert all(
        set(r.json()) == PREDICTION_FIELDS and r.json()["verdict"] in ("edible", "do_not_eat", "uncertain")
        for r in results
    )


def model_replica_pids() -> set[int]:
    """Pids of the model replicas of the Ray this test process started (its descendants, by process title)."""
    import psutil

    me = psutil.Process()
    return {
        p.pid
        for p in me.children(recursive=True)
        if " ".join(p.cmdline() or []).startswith("ray::ServeReplica:mycolens:MycolensModel")
    }


def test_killing_a_model_replica_during_load_keeps_the_service_answering(served: Served, record_property) -> None:
    pids = model_replica_pids()
    assert len(pids) == 2, pids
    victim = min(pids)
    with Load(served.base, clients=4) as load:
        time.sleep(2)
        os.kill(victim, signal.SIGKILL)  # a replica process this test's Ray started
        time.sleep(8)
    record_property("errors_after_kill", len(load.errors))
    print(f"killed model replica {victim}: {load.ok} answers, {len(load.errors)} errors {load.errors[:3]}")
    assert load.ok > 0 and len(load.errors) <= max(5, load.ok // 20), load.errors[:5]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(model_replica_pids() - {victim}) != 2:
        time.sleep(1)  # Serve replaces the dead replica
    assert len(model_replica_pids() - {victim}) == 2
    wait_ready(served.base)
    with httpx.Client(base_url=served.base, timeout=30) as c:
        assert predict(c).status_code == 200


def test_model_reload_without_downtime_and_refused_folders(served: Served) -> None:
    one, two = model_version(served.models["one"]), model_version(served.models["two"])
    # 1) `serve run`/`serve deploy` with a changed user_config: reconfigure() swaps the model in place
    with Load(served.base) as load:
        write_serve_config(
            served.config, served.port, OVERRIDES, {"model_dir": str(served.models["two"]), "variant": "int8"}
        )
        proc = serve_run_config(served.config, served.gcs)
        assert proc.returncode == 0, proc.stderr[-2000:]
        wait_all_replicas(served.base, two)
        time.sleep(1)
    assert not load.errors and load.ok > 0, load.errors[:5]
    assert two in load.versions
    # 2) a folder whose hash does not match model.json is refused: the old model keeps serving
    write_serve_config(
        served.config, served.port, OVERRIDES, {"model_dir": str(served.models["tampered"]), "variant": "int8"}
    )
    assert serve_run_config(served.config, served.gcs).returncode == 0
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=served.base, timeout=10) as c:
        while time.monotonic() < deadline and not c.get("/model").json().get("last_reload_error"):
            time.sleep(0.5)
        info = c.get("/model").json()
        assert info["version"] == two and "hash" in info["last_reload_error"], info.get("last_reload_error")
        assert predict(c).status_code == 200
        # 3) POST /admin/reload (token from MYCOLENS_RELOAD_TOKEN) swaps every replica
        body = {"model_dir": str(served.models["one"]), "variant": "fp32"}
        assert_error(c.post("/admin/reload", json=body, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        with Load(served.base) as load:
            r = c.post("/admin/reload", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
            assert r.status_code == 200, r.text
            assert r.json()["model"] == {"name": "mycolens", "version": one, "variant": "fp32"}
            wait_all_replicas(served.base, one)
        assert not load.errors and load.ok > 0, load.errors[:5]
        assert c.get("/model").json()["variant"] == "fp32"
        r = c.post(
            "/admin/reload",
            json={"model_dir": str(served.models["tampered"])},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert_error(r, 409, "model_refused")
        assert versions_seen(served.base) == {one} and predict(c).status_code == 200


def test_http_listens_on_loopback_only(served: Served) -> None:
    """The app's port, and with HAProxy every port HAProxy opens (stats, Prometheus) and the ingress replica's own."""
    import psutil
    from ray.serve._private.constants import (
        RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT,
        RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT,
    )

    listening = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert {c.laddr.ip for c in listening if c.laddr.port == served.port} == {"127.0.0.1"}
    if PROXY == "haproxy":
        haproxy = [c for c in listening if process_text(c.pid).startswith("haproxy ")]
        ingress = [
            c
            for c in listening
            if "MycolensIngress" in process_text(c.pid)
            and RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT <= c.laddr.port <= RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT
        ]
        assert len({c.laddr.port for c in haproxy}) >= 3 and ingress, (haproxy, ingress)  # front, stats, metrics
        assert {c.laddr.ip for c in haproxy + ingress} == {"127.0.0.1"}, haproxy + ingress


def process_text(pid: int | None) -> str:
    """A process's name and command line ("" when it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return f"{proc.name()} {' '.join(proc.cmdline())}"
    except (psutil.Error, ValueError, TypeError):
        return ""
