"""Evaluate every variant (teacher, compressed, ONNX fp32, ONNX int8) on the test and OOD shards.

Writes reports/metrics.json, reports/plots/*.png, reports/model_card.md and a copy of the metrics beside the
served model (models/export/metrics.json, which serving reports on /model).
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.catalogue import Catalogue
from mycolens.cli import UserError
from mycolens.data.shards import check_catalogue, read_manifest
from mycolens.evaluation import metrics as M
from mycolens.evaluation.calibration import energy_score, fit_temperature, ood_threshold, softmax
from mycolens.evaluation.safety import VerdictRule, decide_logits
from mycolens.utils.io import sha256_file, write_json_atomic

log = logging.getLogger(__name__)

SUMMARY_KEYS = (
    "accuracy",
    "macro_f1",
    "ece",
    "ece_uncalibrated",
    "unsafe_edible_rate",
    "poison_cost",
    "abstain_rate",
    "ood_abstain_rate",
)


@dataclass
class Variant:
    """One evaluable model: how to get its logits and how it is calibrated (None = fit on validation)."""

    name: str
    kind: str  # "torch" | "onnx"
    path: Path
    image_size: int
    mean: list[float]
    std: list[float]
    logits: Callable[[np.ndarray], np.ndarray]
    params: int
    flops: int
    temperature: float | None = None
    rule: VerdictRule | None = None
    meta: dict[str, Any] | None = None


def machine() -> str:
    """CPU model and core count, stated next to every latency figure."""
    name = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def load_torch_variant(name: str, path: Path, catalogue: Catalogue, batch_size: int) -> Variant:
    from mycolens.export.checkpoint import check_class_order, count_params_flops, load_checkpoint, torch_logits

    model = load_checkpoint(path)
    check_class_order(model.catalogue, catalogue, f"variant {name} ({path})")
    hp = model.hparams
    size = int(hp.image_size)
    params, flops = count_params_flops(model.net, size)
    net = model.net.eval()
    return Variant(
        name,
        "torch",
        path,
        size,
        list(hp.mean),
        list(hp.std),
        lambda x: torch_logits(net, x, batch_size),
        params,
        flops,
    )


def load_onnx_variant(name: str, path: Path, catalogue: Catalogue, batch_size: int, threads: int) -> Variant:
    """An ONNX file of a model folder, verified against its model.json (hash, class order); the gate is not required."""
    from mycolens.export.onnx_export import onnx_logits
    from mycolens.inference.onnx_model import ModelRefused, make_session, read_model_json

    try:
        meta = read_model_json(path.parent)
    except ModelRefused as exc:
        raise UserError(str(exc)) from None
    entry = next((f for f in meta.get("files", {}).values() if f.get("path") == path.name), None)
    if entry is None:
        raise UserError(f"variant {name}: {path.name} is not listed in {path.parent / 'model.json'}")
    if sha256_file(path) != entry["sha256"]:
        raise UserError(f"variant {name}: {path} differs from the hash in model.json; export again")
    check_class_order_onnx(meta, catalogue, name, path)
    sess = make_session(path, threads=threads, providers=["CPUExecutionProvider"])
    pre, src = meta["preprocessing"], meta.get("source", {})
    return Variant(
        name,
        "onnx",
        path,
        int(pre["image_size"]),
        list(pre["mean"]),
        list(pre["std"]),
        lambda x: onnx_logits(sess, x, batch_size),
        int(src.get("params", 0)),
        int(src.get("flops", 0)),
        temperature=float(meta["temperature"]),
        rule=VerdictRule(**meta["verdict"]),
        meta=meta,
    )


def check_class_order_onnx(meta: dict[str, Any], catalogue: Catalogue, name: str, path: Path) -> None:
    from mycolens.export.checkpoint import check_class_order

    if meta.get("classes") != [c["id"] for c in meta["catalogue"]["classes"]]:
        raise UserError(f"variant {name}: model.json's classes and catalogue disagree; export again")
    check_class_order(Catalogue.from_dict(meta["catalogue"]), catalogue, f"variant {name} ({path})")


def measure_latency(
    logits: Callable[[np.ndarray], np.ndarray], image_size: int, batch_sizes: Sequence[int], repeats: int, warmup: int
) -> dict[str, float]:
    """Median milliseconds per image at each batch size (random inputs of the model's shape)."""
    rng = np.random.default_rng(0)
    out = {}
    for b in batch_sizes:
        x = rng.standard_normal((int(b), 3, image_size, image_size), dtype=np.float32)
        for _ in range(int(warmup)):
            logits(x)
        times = []
        for _ in range(max(1, int(repeats))):
            start = time.perf_counter()
            logits(x)
            times.append(time.perf_counter() - start)
        out[f"latency_ms_batch{b}"] = round(1000 * statistics.median(times) / int(b), 4)
    return out


def evaluate_one(
    v: Variant,
    images: Any,
    catalogue: Catalogue,
    rule: VerdictRule,
    keep_in_distribution: float,
    bins: int,
    latency: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics of one variant, plus the arrays the plots need."""
    dangerous = catalogue.dangerous_mask
    x_test, y_test = images.get("test", v.image_size, v.mean, v.std)
    x_ood, _ = images.get("ood", v.image_size, v.mean, v.std)
    keep = y_test >= 0
    x_test, y_test = x_test[keep], y_test[keep]
    temperature, v_rule = v.temperature, v.rule
    if temperature is None or v_rule is None:
        x_val, y_val = images.get("val", v.image_size, v.mean, v.std)
        val_logits = v.logits(x_val)
        temperature = fit_temperature(val_logits, y_val)
        v_rule = replace(rule, ood_threshold=ood_threshold(energy_score(val_logits, temperature), keep_in_distribution))
    test_logits = v.logits(x_test)
    probs_raw, probs = softmax(test_logits, 1.0), softmax(test_logits, temperature)
    preds = probs.argmax(1)
    verdicts = decide_logits(test_logits, temperature, dangerous, v_rule)
    if len(x_ood):
        ood_logits = v.logits(x_ood)
        ood_verdicts = decide_logits(ood_logits, temperature, dangerous, v_rule)
    else:
        ood_verdicts = []
    out: dict[str, Any] = {
        "format": v.kind,
        "path": str(v.path),
        "accuracy": M.accuracy(y_test, preds),
        "macro_f1": M.macro_f1(y_test, preds, catalogue.num_classes),
        "ece_uncalibrated": M.ece(probs_raw, y_test, bins),
        "ece": M.ece(probs, y_test, bins),
        "temperature": float(temperature),
        "ood_threshold": float(v_rule.ood_threshold),
        "unsafe_edible_rate": M.unsafe_edible_rate(verdicts, y_test, dangerous),
        "poison_cost": M.poison_cost(y_test, preds, dangerous),
        "abstain_rate": M.abstain_rate(verdicts),
        "ood_abstain_rate": M.ood_abstain_rate(ood_verdicts) if len(ood_verdicts) else None,
        "ood_edible_rate": float(np.mean(np.asarray(ood_verdicts) == "edible")) if len(ood_verdicts) else None,
        "verdicts": M.verdict_counts(verdicts),
        "params": int(v.params),
        "flops": int(v.flops),
        "file_bytes": v.path.stat().st_size,
        "test_images": len(y_test),
        "ood_images": len(x_ood),
    }
    out.update(measure_latency(v.logits, v.image_size, latency["batch_sizes"], latency["repeats"], latency["warmup"]))
    arrays = {"labels": y_test, "preds": preds, "probs_raw": probs_raw, "probs": probs}
    return out, arrays


def evaluate_variants(
    shards_dir: str | Path,
    catalogue: Catalogue,
    variants: dict[str, str | Path],
    *,
    served: str,
    rule: VerdictRule,
    gate_limit: float,
    reports_dir: str | Path,
    plots_dir: str | Path | None = None,
    card_path: str | Path | None = None,
    model_metrics_path: str | Path | None = None,
    keep_in_distribution: float = 0.95,
    ece_bins: int = 15,
    latency: dict[str, Any] | None = None,
    threads: int = 0,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Evaluate each named variant file (.ckpt or .onnx), write metrics.json, plots and the model card; return the metrics.

    The safety gate is computed for `served` (its test unsafe_edible_rate against `gate_limit`) and recorded under
    "safety_gate"; raising on failure is left to the caller.
    """
    from mycolens.evaluation.card import write_model_card
    from mycolens.evaluation.plots import plot_confusion, plot_reliability
    from mycolens.export.inputs import ImageCache

    if served not in variants:
        raise UserError(
            f"the served variant {served!r} is not among the evaluated ones ({', '.join(variants)}); add it to evaluate.variants"
        )
    missing = {n: Path(p) for n, p in variants.items() if not Path(p).is_file()}
    if missing:
        how = {".ckpt": "train/compress it first", ".onnx": "run `python scripts/export.py` first"}
        detail = "; ".join(f"{n}: {p} not found ({how.get(p.suffix, 'make it first')})" for n, p in missing.items())
        keep = [n for n in variants if n not in missing]
        raise UserError(f"{detail}; or evaluate without it: evaluate.variants=[{','.join(keep)}]")
    manifest = read_manifest(shards_dir)
    check_catalogue(manifest, catalogue)
    latency = latency or {"batch_sizes": [1, 32], "repeats": 10, "warmup": 2}
    if threads > 0:
        import torch

        torch.set_num_threads(int(threads))
    images = ImageCache(shards_dir)
    results: dict[str, dict[str, Any]] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    served_meta = None
    for name, path in variants.items():
        path = Path(path)
        log.info("evaluating %s (%s)", name, path)
        if path.suffix == ".onnx":
            v = load_onnx_variant(name, path, catalogue, batch_size, threads)
        elif path.suffix == ".ckpt":
            v = load_torch_variant(name, path, catalogue, batch_size)
        else:
            raise UserError(f"variant {name}: {path} is neither a .ckpt nor an .onnx file")
        results[name], arrays[name] = evaluate_one(v, images, catalogue, rule, keep_in_distribution, ece_bins, latency)
        if name == served:
            served_meta = v.meta
    s = results[served]
    gate = {
        "passed": bool(s["unsafe_edible_rate"] <= gate_limit),
        "limit": float(gate_limit),
        "variant": served,
        "unsafe_edible_rate": s["unsafe_edible_rate"],
        "split": "test",
    }
    report: dict[str, Any] = {
        **{k: s[k] for k in SUMMARY_KEYS},
        **{k: v for k, v in s.items() if k.startswith("latency_ms_")},
        "served": served,
        "safety_gate": gate,
        "variants": results,
        "classes": catalogue.ids,
        "verdict": (served_meta or {}).get("verdict") or replace(rule, ood_threshold=s["ood_threshold"]).to_dict(),
        "data": {
            "test_images": s["test_images"],
            "ood_images": s["ood_images"],
            "catalogue_sha256": catalogue.sha256,
            "shards_files": len(manifest.get("files", {})),
        },
        "machine": machine(),
    }
    if served_meta:
        report["model"] = {"name": served_meta["name"], "version": served_meta["version"]}
    write_json_atomic(Path(reports_dir) / "metrics.json", report)
    if plots_dir:
        a = arrays[served]
        cm = M.confusion_matrix(a["labels"], a["preds"], catalogue.num_classes)
        plot_confusion(cm, catalogue, Path(plots_dir) / "confusion_matrix.png", f"{served}: test confusion matrix")
        plot_reliability(
            a["probs_raw"], a["probs"], a["labels"], Path(plots_dir) / "reliability.png", s["temperature"], ece_bins
        )
    if card_path:
        write_model_card(card_path, catalogue, report, served_meta)
    if model_metrics_path and served_meta is not None and Path(model_metrics_path).parent.is_dir():
        write_json_atomic(model_metrics_path, report)
    return report
