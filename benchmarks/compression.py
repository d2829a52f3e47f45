"""What compression buys and costs, measured in one run on the same test images.

Variants: the teacher (models/best.ckpt, PyTorch), the pruned + distilled student (models/compressed.ckpt,
PyTorch), and its ONNX exports (models/export/model.onnx fp32, model.int8.onnx int8, ONNX Runtime).
Reports FLOPs/params ratios (torch-pruning's counter), top-1 accuracy and unsafe_edible_rate per variant
(every variant through the same verdict rule, temperature and OOD threshold from model.json), and ONNX
Runtime int8-vs-fp32 throughput at batch 1 and batch 32 (rounds interleaved, median of rounds).
Progress goes to stderr; the LAST line on stdout is one JSON object. Example:
    .venv/bin/python benchmarks/compression.py --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.utils.paths import repo_root

ROOT = repo_root(env=False)
os.environ.setdefault("MYCOLENS_ROOT", str(ROOT))


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchmarkError(RuntimeError):
    """A missing input: printed as one line, exit code 2."""


def require(path: Path, how: str) -> Path:
    if not path.exists():
        raise BenchmarkError(f"{path} not found: {how}")
    return path


def load_test_split(shards: Path, size: int, mean: list[float], std: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The test split as float32 NCHW, through serving's preprocessing (decode, resize, center crop, normalize)."""
    from mycolens.data.shards import read_split
    from mycolens.inference.preprocess import decode_image, normalize, resize_center_crop

    table = read_split(shards, "test", columns=["image", "label"])
    images = np.stack([resize_center_crop(decode_image(b), size) for b in table.column("image").to_pylist()])
    return normalize(images, mean, std), np.asarray(table.column("label").to_pylist(), dtype=np.int64)


def batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def scores(logits: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> dict[str, float]:
    """Top-1 accuracy and unsafe_edible_rate (dangerous test images called edible) under model.json's rule.

    Scored from logits (temperature, energy and verdict thresholds), the same for every variant; evaluation's
    figures add the graph's feature score and photo checks, which only ever turn an answer into `uncertain`.
    """
    from mycolens.catalogue import Catalogue
    from mycolens.verdict.rule import VerdictRule, decide_logits

    dangerous = Catalogue.from_dict(meta["catalogue"]).dangerous_mask
    verdicts = np.asarray(
        decide_logits(logits, float(meta["temperature"]), dangerous, VerdictRule.from_dict(meta["verdict"]))
    )
    danger = np.asarray(dangerous, bool)[labels]
    unsafe = float((verdicts[danger] == "edible").mean()) if danger.any() else 0.0
    return {"accuracy": round(float((logits.argmax(1) == labels).mean()), 6), "unsafe_edible_rate": round(unsafe, 6)}


def interleaved_rates(
    runners: dict[str, Callable[[np.ndarray], Any]], x: np.ndarray, batch: int, seconds: float, rounds: int
) -> dict[str, float]:
    """Images/s of each runner on the same batches; rounds alternate between runners, median round wins."""
    batches = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)] or [x[:batch]]
    for run in runners.values():  # warm-up: allocations, kernel selection
        for b in batches[:3]:
            run(b)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                for b in batches:
                    run(b)
                    done += len(b)
                    if time.perf_counter() - start >= seconds:
                        break
            rates[name].append(done / (time.perf_counter() - start))
    return {name: round(statistics.median(r), 1) for name, r in rates.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=Path, default=ROOT / "data" / "shards")
    ap.add_argument("--teacher", type=Path, default=ROOT / "models" / "best.ckpt")
    ap.add_argument("--compressed", type=Path, default=ROOT / "models" / "compressed.ckpt")
    ap.add_argument("--export-dir", type=Path, default=ROOT / "models" / "export")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per variant, batch size and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime / torch intra-op threads (0 = all cores)")
    args = ap.parse_args(argv)

    require(args.shards / "manifest.json", "make the data with `python scripts/data.py`")
    require(args.teacher, "train the teacher with `python scripts/train.py`")
    require(args.compressed, "make it with `python scripts/compress.py`")
    for name in ("model.onnx", "model.int8.onnx", "model.json"):
        if not (args.export_dir / name).is_file():
            say(f"ONNX export missing: {args.export_dir / name} does not exist")
            raise BenchmarkError(f"{args.export_dir / name} not found: export with `python scripts/export.py` first")

    import torch

    from mycolens.compression.prune import count_ops
    from mycolens.inference.onnx_model import ModelRefused, OnnxClassifier, make_session, read_model_json
    from mycolens.models.loading import load_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    onnx: dict[str, Any] = {}
    for variant in ("fp32", "int8"):
        try:
            onnx[variant] = OnnxClassifier.load(args.export_dir, variant, threads=args.threads)
        except ModelRefused as exc:  # measure a model serving would refuse, but say so
            if "safety gate" not in str(exc):
                raise BenchmarkError(str(exc)) from exc
            say(f"warning: {exc}")
            meta = read_model_json(args.export_dir)
            path = args.export_dir / meta["files"][variant]["path"]
            onnx[variant] = OnnxClassifier(meta, make_session(path, args.threads), variant)
    meta = onnx["fp32"].meta
    pre = meta["preprocessing"]
    size = int(pre["image_size"])

    models = {"teacher": load_classifier(args.teacher), "pruned": load_classifier(args.compressed)}
    for name, model in models.items():
        if int(model.hparams.image_size) != size or model.catalogue.ids != meta["classes"]:
            raise BenchmarkError(f"{name} checkpoint does not match model.json (image size or class order)")
    say(f"test split of {args.shards}: decoding at {size} px")
    x, labels = load_test_split(args.shards, size, pre["mean"], pre["std"])
    say(f"{len(x)} test images; scoring 4 variants")

    def torch_fn(model: Any) -> Callable[[np.ndarray], np.ndarray]:
        def run(b: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(b)).float().numpy()

        return run

    runners = {"teacher": torch_fn(models["teacher"]), "pruned": torch_fn(models["pruned"])}
    runners.update({v: clf.logits for v, clf in onnx.items()})
    result = {name: scores(batched(run, x), labels, meta) for name, run in runners.items()}
    ops = {name: count_ops(m.net, size) for name, m in models.items()}

    say(f"ONNX Runtime throughput, int8 vs fp32: batch 1 and 32, {args.rounds} x {args.seconds:.0f} s each")
    onnx_runners = {v: onnx[v].logits for v in ("fp32", "int8")}
    b1 = interleaved_rates(onnx_runners, x[:64], 1, args.seconds, args.rounds)
    b32 = interleaved_rates(onnx_runners, x, 32, args.seconds, args.rounds)
    say("PyTorch throughput, pruned vs teacher: batch 32")
    t32 = interleaved_rates({k: runners[k] for k in ("teacher", "pruned")}, x, 32, args.seconds, args.rounds)

    acc = {k: v["accuracy"] for k, v in result.items()}
    return {
        "benchmark": "compression",
        "test_images": len(x),
        "image_size": size,
        "threads": args.threads or os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "int8_vs_fp32_speedup": round(b32["int8"] / b32["fp32"], 3),
        "int8_vs_fp32_speedup_b1": round(b1["int8"] / b1["fp32"], 3),
        "int8_vs_fp32_speedup_b32": round(b32["int8"] / b32["fp32"], 3),
        "pruned_vs_teacher_torch_speedup_b32": round(t32["pruned"] / t32["teacher"], 3),
        "pruned_flops_ratio": round(ops["pruned"]["flops"] / ops["teacher"]["flops"], 4),
        "pruned_params_ratio": round(ops["pruned"]["params"] / ops["teacher"]["params"], 4),
        "accuracy": acc,
        "accuracy_drop_pruned": round(acc["teacher"] - acc["pruned"], 6),
        "accuracy_drop_int8": round(acc["fp32"] - acc["int8"], 6),
        "accuracy_drop_int8_vs_teacher": round(acc["teacher"] - acc["int8"], 6),
        "unsafe_edible_rate": {k: v["unsafe_edible_rate"] for k, v in result.items()},
        "images_per_s": {
            "onnx_fp32_b1": b1["fp32"],
            "onnx_int8_b1": b1["int8"],
            "onnx_fp32_b32": b32["fp32"],
            "onnx_int8_b32": b32["int8"],
            "torch_teacher_b32": t32["teacher"],
            "torch_pruned_b32": t32["pruned"],
        },
        "params": {k: v["params"] for k, v in ops.items()},
        "flops": {k: v["flops"] for k, v in ops.items()},
        "verdict": {
            "temperature": float(meta["temperature"]),
            "rule": meta["verdict"],
            "ood": meta["ood"]["score"],
        },
        "model_version": meta.get("version"),
    }


if __name__ == "__main__":
    try:
        report = main()
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(report, sort_keys=True))
