"""Serving test helpers: a tiny model folder per the model-folder contract, test images, Ray + Serve on 127.0.0.1.

`make_model_dir(tmp) -> Path` is the one place that makes the served model (a tiny conv net exported with
torch.onnx, external_data=False, dynamic batch; ORT static QDQ int8; model.json with real hashes); switch it to
the real export (`python scripts/export.py ...`) and every serving test follows. Ray helpers: `start_ray(proxy)`
(2 CPUs, no dashboard, the proxy mode's env), `write_serve_config` + `serve_run_config` (the `serve run` CLI
against that cluster), `wait_ready`.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import platform
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mycolens.catalogue import load_catalogue
from mycolens.inference.onnx_model import ANSWER_FIELDS
from mycolens.utils.io import sha256_file, write_json_atomic
from mycolens.verdict.calibration import OOD_SCORE, energy_score, ood_threshold
from mycolens.verdict.rule import VerdictRule
from serve.local import free_port, ray_env, wait_ready  # noqa: F401  (re-exported for the tests)
from tests.conftest import ROOT, make_shards

SERVE_CLI = str(ROOT / ".venv" / "bin" / "serve")
IMAGE_SIZE = 32
MEAN, STD = [0.45, 0.42, 0.35], [0.25, 0.24, 0.23]
TEMPERATURE = 1.5  # model.json's; the OOD threshold is chosen on energy at this temperature

# the fields of a /predict answer (offline predict gives the same): the answer's own, plus lookalikes and model
PREDICTION_FIELDS = {*ANSWER_FIELDS, "lookalikes", "model"}


for _k, _v in {"RAY_USAGE_STATS_ENABLED": "0", "MYCOLENS_ROOT": str(ROOT)}.items():
    os.environ.setdefault(_k, _v)


# ---------------------------------------------------------------- model folder


def _tiny_net(num_classes: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )
    return net.eval()


def _calibration_batches(n: int = 8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    from mycolens.inference.preprocess import normalize

    return [
        normalize(rng.integers(0, 256, (4, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8), MEAN, STD) for _ in range(n)
    ]


def _quantize(fp32: Path, out: Path) -> None:
    """ORT static QDQ per-channel quantization (QUInt8 activations, reduce_range for AVX2 without VNNI)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": b} for b in _calibration_batches()])

        def get_next(self):
            return next(self.it, None)

    from mycolens.export.quantize import score_nodes

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        nodes_to_exclude=score_nodes(fp32),  # as the export does: the score heads stay fp32
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=True,
    )


_BUILT: dict[tuple[int, bool], Path] = {}  # (seed, gate_passed) -> the folder built for it in this test session


def make_model_dir(tmp: str | Path, seed: int = 0, gate_passed: bool = True) -> Path:
    """A tiny valid model folder (model.onnx, model.int8.onnx, model.json, metrics.json) under `tmp`/model.

    Built once per (seed, gate_passed) in a test session and copied for each caller: the build is deterministic,
    and its ONNX export (torch.export) alone takes ~30 s of the 2 cores."""
    key = (int(seed), bool(gate_passed))
    if key not in _BUILT:
        cache = Path(tempfile.mkdtemp(prefix="mycolens-model-"))
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        _BUILT[key] = _build_model_dir(cache, *key)
    return Path(shutil.copytree(_BUILT[key], Path(tmp) / "model", dirs_exist_ok=True))


def _build_model_dir(tmp: Path, seed: int, gate_passed: bool) -> Path:
    """make_model_dir's build, under `tmp`/model."""
    import onnxruntime
    import torch

    import mycolens

    out = Path(tmp) / "model"
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    from mycolens.export.onnx_export import export_onnx
    from mycolens.ood.fit import fit_input_checks
    from mycolens.ood.scored import OUTPUT_NAMES, build_scored_net, scored_outputs

    cat = load_catalogue()
    net = _tiny_net(cat.num_classes, seed)
    x_fit = np.concatenate(_calibration_batches(n=16, seed=2))
    scored = build_scored_net(net, x_fit, np.arange(len(x_fit)) % cat.num_classes, MEAN, STD, True, 0.01, 16)
    export_onnx(scored, out / "model.onnx", IMAGE_SIZE, 20, OUTPUT_NAMES)  # the export's graph: 3 outputs
    _quantize(out / "model.onnx", out / "model.int8.onnx")
    cal = scored_outputs(scored, np.concatenate(_calibration_batches(seed=1)))
    checks = yaml.safe_load((ROOT / "conf" / "export" / "default.yaml").read_text())["ood"]["input_checks"]["checks"]
    rule = VerdictRule(
        edible_min_confidence=0.5,
        poison_max=0.5,
        do_not_eat_min=0.5,
        ood_threshold=ood_threshold(energy_score(cal["logits"], TEMPERATURE), 0.95),
        feature_threshold=ood_threshold(cal["feature_score"], 0.95),
        input_checks=fit_input_checks(scored_outputs(scored, x_fit)["input_stats"], checks, 1.0),
    )
    sha = sha256_file(out / "model.onnx")
    files = {
        v: {"path": p, "sha256": sha256_file(out / p), "bytes": (out / p).stat().st_size}
        for v, p in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"))
    }
    meta: dict[str, Any] = {
        "name": "mycolens",
        "version": f"1.0.0+{sha[:12]}",
        "catalogue": cat.to_dict(),
        "classes": cat.ids,
        "preprocessing": {
            "image_size": IMAGE_SIZE,
            "mean": MEAN,
            "std": STD,
            "resize": "shorter_side_bilinear_center_crop",
            "layout": "NCHW",
            "dtype": "float32",
            "scale": "0-1",
        },
        "input": {"name": "input", "shape": [-1, 3, IMAGE_SIZE, IMAGE_SIZE], "datatype": "FP32"},
        "output": {"name": "logits", "shape": [-1, cat.num_classes], "datatype": "FP32"},
        "temperature": TEMPERATURE,
        "verdict": rule.to_dict(),
        "ood": {"score": OOD_SCORE, "threshold": rule.ood_threshold, "keep_in_distribution": 0.95},
        "files": files,
        "safety_gate": {
            "passed": gate_passed,
            "limit": 0.01,
            "unsafe_edible_rate": {"fp32": 0.0, "int8": 0.0},
            "split": "test",
        },
        "source": {"ckpt": "tests/tiny", "ckpt_sha256": "0" * 64, "backbone": "tiny_cnn", "params": 0, "flops": 0},
        "versions": {
            "mycolens": mycolens.__version__,
            "torch": torch.__version__,
            "onnx": __import__("onnx").__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
    }
    write_json_atomic(out / "model.json", meta)
    write_json_atomic(out / "metrics.json", {"accuracy": 0.5, "macro_f1": 0.4, "ece": 0.1, "unsafe_edible_rate": 0.0})
    return out


# ---------------------------------------------------------------- images


def image_bytes(
    fmt: str = "JPEG", size: tuple[int, int] = (80, 60), mode: str = "RGB", seed: int = 0, **save: Any
) -> bytes:
    """An encoded test image of a given format and mode."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode in ("I;16", "I"):
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        if mode != "RGB":
            img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def exif_rotated_jpeg(size: tuple[int, int] = (80, 40)) -> bytes:
    """A JPEG with EXIF orientation 6 (rotate 90 degrees on display)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return image_bytes("JPEG", size=size, exif=exif.tobytes())


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    raw = image_bytes("PNG", size=(1, 1))
    assert raw[12:16] == b"IHDR"
    ihdr = bytearray(raw[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return raw[:16] + bytes(ihdr) + crc + raw[33:]


def bad_inputs() -> dict[str, tuple[bytes, str, int, str]]:
    """name -> (file bytes, filename, expected status, expected error code) for the /predict bad-input matrix."""
    jpeg = image_bytes("JPEG")
    return {
        "empty": (b"", "empty.jpg", 400, "empty"),
        "truncated": (jpeg[: len(jpeg) // 2], "cut.jpg", 400, "truncated"),
        "text_as_jpg": (b"hello, I am not an image\n" * 10, "notes.jpg", 400, "not_image"),
        "gif": (image_bytes("GIF"), "a.gif", 415, "unsupported"),
        "tiff": (image_bytes("TIFF"), "a.tiff", 415, "unsupported"),
        "bomb": (png_bomb(), "bomb.png", 413, "too_large"),
        "over_pixel_limit": (png_bomb(8000, 8000), "big.png", 413, "too_large"),
    }


def good_inputs() -> dict[str, bytes]:
    """Unusual but valid images that must succeed with 200."""
    return {
        "jpeg": image_bytes("JPEG"),
        "png": image_bytes("PNG"),
        "webp": image_bytes("WEBP"),
        "cmyk_jpeg": image_bytes("JPEG", mode="CMYK"),
        "gray_png": image_bytes("PNG", mode="L"),
        "gray16_png": image_bytes("PNG", mode="I;16"),
        "rgba_png": image_bytes("PNG", mode="RGBA"),
        "palette_png": image_bytes("PNG", mode="P"),
        "exif_rotated_jpeg": exif_rotated_jpeg(),
    }


# ---------------------------------------------------------------- Ray + Serve


def start_ray(proxy: str) -> None:
    """A 2-CPU local Ray with no dashboard and a small object store; env set first so Serve's processes inherit it."""
    import ray

    os.environ.update(ray_env(proxy))
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=150 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
        namespace="serve",
    )


def write_serve_config(path: Path, port: int, overrides: list[str], user_config: dict[str, Any] | None = None) -> Path:
    """A Serve config file like serve/config.yaml, on a test port, with Hydra overrides and a model user_config."""
    import yaml

    base = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    base["http_options"] = {**base.get("http_options", {}), "host": "127.0.0.1", "port": port}
    app = base["applications"][0]
    app["args"] = {**app.get("args", {}), "overrides": list(overrides)}
    if user_config is not None:
        deps = [d for d in app.get("deployments", []) if d["name"] != "MycolensModel"]
        app["deployments"] = [*deps, {"name": "MycolensModel", "user_config": user_config}]
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def serve_run_config(config: Path, gcs_address: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`serve run CONFIG --non-blocking --address GCS`: the real CLI path, submitting a config to the running cluster."""
    return subprocess.run(
        [SERVE_CLI, "run", str(config), "--non-blocking", "--address", gcs_address],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def model_version(model_dir: Path) -> str:
    return json.loads((model_dir / "model.json").read_text())["version"]


def small_shards(folder: Path) -> Path:
    """Synthetic shards at 32 px (504 train, 252 val, 252 test photos, no OOD), the same every time (seed 3)."""
    return make_shards(
        folder,
        image_size=IMAGE_SIZE,
        specimens_per_class=24,
        photos_per_specimen=3,
        ood_images=0,
        seed=3,
        rows_per_file=5000,
    )


def ingress_client(model_dir: Path, queue: Path, *overrides: str) -> Any:
    """A TestClient of the real ingress app (build_api + serve/web.py) on the in-process model runner, with the
    claim queue in `queue`."""
    from fastapi.testclient import TestClient

    from mycolens.serving.api import LocalBackend, build_api
    from mycolens.serving.hooks import IngressContext, PredictionHooks
    from mycolens.serving.metrics import ServeMetrics
    from mycolens.serving.model import ModelRunner
    from mycolens.serving.settings import ServeSettings
    from serve import web
    from serve.app import load_serve_config

    cfg = load_serve_config([f"serve.model_dir={model_dir}", f"monitoring.feedback.dir={queue}", *overrides])
    settings, metrics = ServeSettings.from_config(cfg), ServeMetrics()
    ctx = IngressContext(cfg, ROOT, metrics.registry, PredictionHooks(8), None)  # type: ignore[arg-type]
    runner = ModelRunner(threads=1)
    runner.load(model_dir, cfg["variant"])
    backend = LocalBackend(runner, settings.limits, 1)
    app = build_api(
        settings, backend, ctx, metrics, static_dir=ROOT / "serve" / "static", routers=[web.router], setups=[web.setup]
    )
    return TestClient(app)
