"""The README's main command: the whole DVC pipeline on the embedded default, then the answers it gives.

Runs `dvc repro` (data -> train -> compress -> export -> evaluate), prints the evaluation table, answers one
test photo offline and once over HTTP from the Ray Serve app, and says where every artifact is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)
BIN = Path(sys.executable).parent


def run(*cmd: str) -> None:
    print(f"\n$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def sample_image() -> Path:
    """One test-split photo written to reports/sample.jpg."""
    from mycolens.data.shards import read_split

    row = read_split(ROOT / "data/shards", "test").slice(0, 1).to_pylist()[0]
    out = ROOT / "reports" / "sample.jpg"
    out.write_bytes(row["image"])
    print(f"sample photo: {out} (truly {row['species']})")
    return out


def served_prediction(image: Path) -> None:
    """Start the Serve app on 127.0.0.1 (its log in logs/demo_serve.log), POST the photo, stop it by pid."""
    import httpx

    log_path = ROOT / "logs" / "demo_serve.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n$ python scripts/serve.py  (serve run serve/config.yaml with conf/serve's front; log: {log_path})")
    with log_path.open("w") as log:
        proc = subprocess.Popen(  # scripts/serve.py execs `serve run`, so proc is the Serve CLI
            [sys.executable, "scripts/serve.py"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_ready("http://127.0.0.1:8000/readyz", proc, log_path, timeout_s=240)
            with image.open("rb") as f:
                files = {"file": (image.name, f, "image/jpeg")}
                r = httpx.post("http://127.0.0.1:8000/predict", files=files, timeout=30)
            print(f"POST http://127.0.0.1:8000/predict -> {r.status_code}")
            print(json.dumps(r.json(), indent=2))
        finally:
            proc.send_signal(signal.SIGINT)  # `serve run` shuts the app and its local Ray down on Ctrl-C
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    """Poll `url` until it answers 200; a clear error (with the log's tail) if the server exits or never gets ready."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-20:])
    raise SystemExit(f"error: the Serve app did not get ready at {url}; last lines of {log_path}:\n{tail}")


def main() -> None:
    start = time.perf_counter()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    run(str(BIN / "dvc"), "repro")
    from mycolens.evaluation.summary import table  # the table scripts/evaluate.py prints

    metrics = json.loads((ROOT / "reports/metrics.json").read_text())
    print("\nEvaluation on the test split (OOD: the not-a-mushroom sets; * served):\n" + table(metrics))
    image = sample_image()
    run(sys.executable, "scripts/predict.py", f"path={image}")
    if "--no-serve" not in sys.argv:
        served_prediction(image)
    print(
        "\nArtifacts: data/shards (Parquet + manifest.json), models/best.ckpt, models/compressed.ckpt,\n"
        "models/export/ (model.onnx, model.int8.onnx, model.json, reference.json, metrics.json),\n"
        "reports/ (metrics.json, train.json, compress.json, plots/, model_card.md), logs/ (run folders).\n"
        f"Whole demo: {time.perf_counter() - start:.0f} s. Serve it: make serve, then open http://127.0.0.1:8000/"
    )


if __name__ == "__main__":
    main()
