"""Field mode in the browser: how long the page takes to answer a photo on the device (ONNX Runtime Web in Debian's
Chromium, headless) with WASM threads (serve.field.wasm_threads=0: min(4, cores), on the cross-origin-isolated page)
and with one thread (the default), next to the server answering the same photos over loopback HTTP.

Each photo is answered one after another, as a person would: decode, EXIF orientation, resize, normalise, the model,
temperature, OOD scores and the verdict rule. The server is the real ingress app (build_api + serve/web.py) in this
process under uvicorn, with its in-process ONNX Runtime runner (one thread per core), not Ray Serve: the figure is
the model path, not the cluster. Prints one JSON object as its LAST line. Example:
    .venv/bin/python benchmarks/field_inference.py --photos 40
Without models/export/model.json (or --model-dir) it stops and says to run `make demo` first.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MYCOLENS_ROOT", str(ROOT))

from benchmarks.serve_throughput import model_folder, photos  # noqa: E402

ANSWER_ALL = """
async ([items, where]) => {
  const bytes = items.map((b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  const one = async (b) => {
    if (where === "device") return window.mycolensField.answer(new Blob([b], { type: "image/jpeg" }), 5);
    const data = new FormData();
    data.append("file", new Blob([b], { type: "image/jpeg" }), "photo.jpg");
    const r = await fetch("/predict?top_k=5", { method: "POST", body: data });
    if (!r.ok) throw new Error("/predict answered HTTP " + r.status);
    return r.json();
  };
  await one(bytes[0]); // the model loaded and warm
  const t0 = performance.now();
  const verdicts = [];
  const parts = { decode: 0, preprocess: 0, model: 0 };
  for (const b of bytes) {
    const a = await one(b);
    verdicts.push(a.verdict);
    for (const k in a.timings_ms || {}) parts[k] += a.timings_ms[k] / bytes.length;
  }
  const ms = (performance.now() - t0) / bytes.length;
  const info = where === "device" ? await window.mycolensField.info() : null;
  return { ms, parts, verdicts, threads: info && info.threads, isolated: globalThis.crossOriginIsolated };
}
"""


@contextmanager
def served(model_dir: Path, variant: str, wasm_threads: int):
    """The ingress app on a free loopback port (the page cross-origin isolated, serve.field.wasm_threads set);
    yields its base URL."""
    import uvicorn

    from mycolens.serving.api import LocalBackend, build_api
    from mycolens.serving.hooks import IngressContext, PredictionHooks
    from mycolens.serving.metrics import ServeMetrics
    from mycolens.serving.model import ModelRunner
    from mycolens.serving.settings import ServeSettings
    from serve import web
    from serve.app import load_serve_config
    from serve.local import free_port

    overrides = [f"serve.model_dir={model_dir}", f"serve.variant={variant}"]
    cfg = load_serve_config(
        [*overrides, "serve.field.cross_origin_isolated=true", f"serve.field.wasm_threads={wasm_threads}"]
    )
    settings, metrics = ServeSettings.from_config(cfg), ServeMetrics()
    ctx = IngressContext(cfg, ROOT, metrics.registry, PredictionHooks(8), None)  # type: ignore[arg-type]
    runner = ModelRunner(threads=os.cpu_count() or 1)
    runner.load(model_dir, variant)
    app = build_api(
        settings,
        LocalBackend(runner, settings.limits, 2),
        ctx,
        metrics,
        static_dir=ROOT / "serve" / "static",
        routers=[web.router],
        setups=[web.setup],
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise SystemExit("the benchmark's server did not start within 30 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def measure(browser: Any, base: str, items: list[str], where: str) -> dict[str, Any]:
    """Answer `items` (base64 JPEGs) one after another on the device or through the server, in a fresh context."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(base + "/")
        page.wait_for_function("window.mycolensField !== undefined")
        return page.evaluate(ANSWER_ALL, [items, where])
    finally:
        context.close()


def screenshot(browser: Any, base: str, photo: bytes, out: Path) -> None:
    """The page answering `photo` on the device with the network gone (opened once online, then offline), to `out`."""
    import tempfile

    context = browser.new_context(viewport={"width": 900, "height": 900})
    try:
        page = context.new_page()
        page.goto(base + "/")
        page.wait_for_function("navigator.serviceWorker.controller !== null", timeout=60_000)
        page.wait_for_function("window.mycolensField !== undefined")
        page.evaluate("window.mycolensField.load().then(() => true)")
        context.set_offline(True)
        page.reload()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "mushroom.jpg"
            path.write_bytes(photo)
            page.get_by_label("Choose a photo").set_input_files(path)
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(".tmp.png")
        page.screenshot(path=str(tmp_out), full_page=True)
        tmp_out.replace(out)
    finally:
        context.close()


def test_photo() -> bytes:
    """The first test-split photo of the default shards (paths.shards_dir)."""
    from mycolens.data.shards import read_split

    shards = ROOT / "data" / "shards"
    if not shards.is_dir():
        raise SystemExit(f"no shards at {shards}: run `make demo` first, or leave out --screenshot")
    return read_split(shards, "test", ["image"]).column("image")[0].as_py()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--variant", default="int8", help="the served variant the page runs (int8 | fp32)")
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--image-size", default="640x480", help="WIDTHxHEIGHT of the test photos (a phone photo, scaled)")
    ap.add_argument("--screenshot", type=Path, default=None, help="also save the page answering offline (PNG)")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from serve.browser import launch

    model_dir, model_desc = model_folder(args.model_dir)
    w, h = (int(v) for v in args.image_size.split("x"))
    items = [base64.b64encode(p).decode() for p in photos(args.photos, w, h)]
    runs: dict[str, dict[str, Any]] = {}
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for threads in (0, 1):
                with served(model_dir, args.variant, threads) as base:
                    name = "device_threads" if threads == 0 else "device_one_thread"
                    runs[name] = measure(browser, base, items, "device")
                    print(f"{name}: {runs[name]['ms']:.1f} ms/photo, {runs[name]['threads']} thread(s)", flush=True)
                    if threads == 1:
                        runs["server"] = measure(browser, base, items, "server")
                        print(f"server: {runs['server']['ms']:.1f} ms/photo", flush=True)
                        if args.screenshot:
                            screenshot(browser, base, test_photo(), args.screenshot)
                            print(f"screenshot: {args.screenshot}", flush=True)
        finally:
            browser.close()
    server = runs["server"]["verdicts"]
    same = sum(
        a == b
        for run in ("device_threads", "device_one_thread")
        for a, b in zip(runs[run]["verdicts"], server, strict=True)
    )
    result = {
        "benchmark": "field_inference",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": model_desc,
        "variant": args.variant,
        "photos": f"{args.photos} JPEG {w}x{h}",
        "device_ms_per_photo_threads": round(runs["device_threads"]["ms"], 1),
        "wasm_threads": runs["device_threads"]["threads"],
        "page_isolated": runs["device_threads"]["isolated"] and runs["device_one_thread"]["isolated"],
        "device_ms_per_photo_one_thread": round(runs["device_one_thread"]["ms"], 1),
        "device_parts_ms_threads": {k: round(v, 1) for k, v in runs["device_threads"]["parts"].items()},
        "device_parts_ms_one_thread": {k: round(v, 1) for k, v in runs["device_one_thread"]["parts"].items()},
        "server_ms_per_photo": round(runs["server"]["ms"], 1),
        "threads_speedup": round(runs["device_one_thread"]["ms"] / runs["device_threads"]["ms"], 2),
        "threads_model_speedup": round(
            runs["device_one_thread"]["parts"]["model"] / runs["device_threads"]["parts"]["model"], 2
        ),
        "device_over_server_time": round(runs["device_one_thread"]["ms"] / runs["server"]["ms"], 2),
        "verdict_agreement_with_server": round(same / (2 * args.photos), 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
