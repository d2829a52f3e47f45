"""Serving throughput: ONNX Runtime in-process (the raw limit) vs the Ray Serve HTTP path, fp32 and int8.

One run measures, on the same JPEG photos:
  (a) raw: decode + preprocess (a thread per core) and ONNX Runtime (all cores) in this process, batches of
      serve.batch.max_batch_size;
  (b) served: POST /predict over loopback HTTP with N concurrent clients for a bounded time, then 1 client,
      for each proxy mode (Serve's Python proxy and HAProxy; each in a fresh local Ray).
Prints one JSON object as its LAST line. Example:
    .venv/bin/python benchmarks/serve_throughput.py --seconds 10 --clients 16
Without models/export/model.json (or --model-dir) it stops and says to run `make demo` first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MYCOLENS_ROOT", str(ROOT))


def photos(n: int, width: int, height: int, seed: int = 0) -> list[bytes]:
    """n photo-like JPEGs (gradients + noise, quality 90) of width x height."""
    from mycolens.utils.images import encode_jpeg

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    out = []
    for i in range(n):
        base = np.stack([x / width * 255, y / height * 255, (x + y + i * 7) % 256], -1)
        arr = np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        out.append(encode_jpeg(arr, 90))
    return out


def percentile_ms(lat: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(lat) * 1000, q)), 2) if lat else float("nan")


# ---------------------------------------------------------------- (a) raw


def raw_rate(model_dir: Path, variant: str, images: list[bytes], batch: int, seconds: float, limits: Any) -> float:
    """Images/s of decode + preprocess + ONNX Runtime + verdict in this process, all cores."""
    from mycolens.serving.images import image_to_crop
    from mycolens.serving.model import ModelRunner

    cores = os.cpu_count() or 1
    runner = ModelRunner(threads=cores)
    runner.load(model_dir, variant)
    size = runner.require().image_size
    pool = ThreadPoolExecutor(cores)
    done, i = 0, 0
    deadline = None
    while True:
        chunk = [images[(i + j) % len(images)] for j in range(batch)]
        i += batch
        crops = [c for c, _ in pool.map(lambda b: image_to_crop(b, size, limits), chunk)]
        runner.predict(crops, [3] * len(crops))
        if deadline is None:  # first batch is warm-up
            deadline, start = time.perf_counter() + seconds, time.perf_counter()
            continue
        done += len(chunk)
        if time.perf_counter() >= deadline:
            break
    pool.shutdown()
    return done / (time.perf_counter() - start)


# ---------------------------------------------------------------- (b) served


def multipart(data: bytes, boundary: str = "mycolensbench") -> bytes:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode()


async def load(url: str, bodies: list[bytes], clients: int, seconds: float, warmup_s: float = 1.0) -> dict[str, Any]:
    """N clients posting in a loop for `seconds` (after `warmup_s` of the same load): rate, latency percentiles, errors."""
    import aiohttp

    headers = {"Content-Type": "multipart/form-data; boundary=mycolensbench"}
    lat: list[float] = []
    errors: list[str] = []
    phase = {"measure": False, "stop": False}

    async def client(k: int, session: aiohttp.ClientSession) -> None:
        i = k
        while not phase["stop"]:
            t = time.perf_counter()
            try:
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                    err = f"HTTP {r.status}"
            except Exception as exc:
                ok, err = False, type(exc).__name__
            if phase["measure"] and not phase["stop"]:
                lat.append(time.perf_counter() - t) if ok else errors.append(err)
            i += clients

    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        tasks = [asyncio.create_task(client(k, session)) for k in range(clients)]
        await asyncio.sleep(warmup_s)
        phase["measure"], start = True, time.perf_counter()
        await asyncio.sleep(seconds)
        phase["stop"], wall = True, time.perf_counter() - start
        await asyncio.gather(*tasks)
    return {
        "served_images_per_s": round(len(lat) / wall, 1),
        "p50_ms": percentile_ms(lat, 50),
        "p99_ms": percentile_ms(lat, 99),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "requests": len(lat) + len(errors),
    }


def served(
    proxy: str, model_dir: Path, variants: list[str], images: list[bytes], clients: int, seconds: float
) -> dict[str, Any]:
    """Start a local Ray + Serve in `proxy` mode and load it per variant (run in a child process)."""
    import ray
    from ray import serve

    from serve.app import build_app
    from serve.local import free_port, ray_env, wait_ready

    os.environ.update(ray_env(proxy))
    cores = os.cpu_count() or 1
    ray.init(
        address="local",
        num_cpus=cores,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
        namespace="serve",
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    bodies = [multipart(b) for b in images]
    out = {}
    try:
        for variant in variants:
            serve.delete("mycolens")  # each variant on fresh replicas: none of the last one's teardown in its window
            serve.run(
                build_app({"overrides": [f"serve.model_dir={model_dir}", f"serve.variant={variant}"]}),
                name="mycolens",
                route_prefix="/",
            )
            wait_ready(base)
            # 3 s of warm-up load: the front (HAProxy reloads as replicas come up) and the replicas settle first
            res = asyncio.run(load(f"{base}/predict", bodies, clients, seconds, warmup_s=3.0))
            one = asyncio.run(load(f"{base}/predict", bodies, 1, max(3.0, seconds / 2)))
            res["p50_ms_1_client"] = one["p50_ms"]
            res["errors"] += one["errors"]
            out[variant] = res
    finally:
        serve.shutdown()
        ray.shutdown()
    return out


# ---------------------------------------------------------------- main


def model_folder(arg: str | None) -> tuple[Path, str]:
    path = Path(arg) if arg else ROOT / "models" / "export"
    if (path / "model.json").is_file():
        return path, str(path)
    raise SystemExit(f"no model folder at {path}: run `make demo` (or scripts/export.py), or give --model-dir")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--variants", default="fp32,int8")
    ap.add_argument("--proxies", default="python,haproxy")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--image-size", default="640x480", help="WIDTHxHEIGHT of the test photos")
    ap.add_argument("--served-only", default=None, help=argparse.SUPPRESS)  # child process: one proxy mode
    args = ap.parse_args()

    from mycolens.serving.settings import ServeSettings
    from serve.app import load_serve_config

    w, h = (int(v) for v in args.image_size.split("x"))
    images = photos(args.images, w, h)
    variants = args.variants.split(",")
    model_dir, model_desc = model_folder(args.model_dir)
    if args.served_only:
        print(json.dumps(served(args.served_only, model_dir, variants, images, args.clients, args.seconds)))
        return

    cfg = load_serve_config([])
    limits = ServeSettings.from_config(cfg).limits
    result: dict[str, Any] = {
        "benchmark": "serve_throughput",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "model": model_desc,
        "images": f"{args.images} JPEG {w}x{h}",
        "clients": args.clients,
        "seconds": args.seconds,
        "batch": cfg["batch"],
        "default_proxy": cfg["proxy"],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    batch = int(cfg["batch"]["max_batch_size"])
    raw_runs: dict[str, list[float]] = {v: [] for v in variants}

    def measure_raw() -> None:
        for v in variants:
            raw_runs[v].append(round(raw_rate(model_dir, v, images, batch, args.seconds, limits), 1))
            print(f"raw {v}: {raw_runs[v][-1]} images/s", flush=True)

    measure_raw()  # raw before and after the served runs; the limit is the better of the two (shared machines drift)
    served_runs: dict[str, dict[str, Any]] = {v: {} for v in variants}
    for proxy in args.proxies.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--served-only",
            proxy,
            "--model-dir",
            str(model_dir),
            "--variants",
            args.variants,
        ]
        cmd += [
            "--clients",
            str(args.clients),
            "--seconds",
            str(args.seconds),
            "--images",
            str(args.images),
            "--image-size",
            args.image_size,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"served benchmark ({proxy}) failed:\n{proc.stderr[-3000:]}")
        for v, res in json.loads(lines[-1]).items():
            served_runs[v][proxy] = res
            print(f"served {v} via {proxy}: {res}", flush=True)
    measure_raw()
    for v in variants:
        raw = max(raw_runs[v])
        for res in served_runs[v].values():
            res["served_over_raw"] = round(res["served_images_per_s"] / raw, 3)
        result[v] = {"raw_images_per_s": raw, "raw_runs": raw_runs[v], "by_proxy": served_runs[v]}
    for v in variants:
        best = result[v]["by_proxy"].get(cfg["proxy"]) or next(iter(result[v]["by_proxy"].values()))
        result[v].update(
            {
                k: best[k]
                for k in ("served_images_per_s", "served_over_raw", "p50_ms", "p99_ms", "errors", "p50_ms_1_client")
            }
        )
        result[v]["proxy"] = (
            cfg["proxy"] if cfg["proxy"] in result[v]["by_proxy"] else next(iter(result[v]["by_proxy"]))
        )
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
