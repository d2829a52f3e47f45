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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.catalogue import Catalogue
from mycolens.data.shards import check_catalogue, read_manifest
from mycolens.errors import UserError
from mycolens.ood.fit import fitted_on
from mycolens.utils.io import sha256_file, write_json_atomic
from mycolens.verdict import metrics as M
from mycolens.verdict.calibration import softmax
from mycolens.verdict.rule import VerdictRule, judge_outputs

log = logging.getLogger(__name__)

SUMMARY_KEYS = (
    "accuracy",
    "macro_f1",
    "ece",
    "ece_uncalibrated",
    "ece_noise_floor",
    "unsafe_edible_rate",
    "poison_cost",
    "abstain_rate",
    "ood_abstain_rate",
    "ood_abstain_rate_min",
    "ood_edible",
    "aurc",
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
    outputs: Callable[[np.ndarray], dict[str, np.ndarray]]  # {logits[, feature_score, input_stats]}
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


def load_torch_variant(
    name: str, path: Path, catalogue: Catalogue, batch_size: int, images: Any, fit_split: str, ood: Any
) -> Variant:
    """A checkpoint with its scores fitted as the export fits them (feature centres on `fit_split`)."""
    from mycolens.export.checkpoint import check_class_order, count_params_flops, load_checkpoint
    from mycolens.ood.scored import build_scored_net, scored_outputs

    model = load_checkpoint(path)
    check_class_order(model.catalogue, catalogue, f"variant {name} ({path})")
    hp = model.hparams
    size, mean, std = int(hp.image_size), list(hp.mean), list(hp.std)
    params, flops = count_params_flops(model.net, size)
    x_fit, y_fit = images.get(fit_split, size, mean, std)
    scored = build_scored_net(
        model.net.eval(), x_fit, y_fit, mean, std, ood.feature_normalize, ood.feature_shrinkage, batch_size
    )
    return Variant(name, "torch", path, size, mean, std, lambda x: scored_outputs(scored, x, batch_size), params, flops)


def load_onnx_variant(name: str, path: Path, catalogue: Catalogue, batch_size: int, threads: int) -> Variant:
    """An ONNX file of a model folder, verified against its model.json (hash, class order); the gate is not required."""
    from mycolens.export.onnx_export import onnx_outputs
    from mycolens.inference.onnx_model import ModelRefused, make_session, read_model_json, rule_for

    try:
        meta = read_model_json(path.parent)
    except ModelRefused as exc:
        raise UserError(str(exc)) from None
    variant, entry = next(
        ((k, f) for k, f in meta.get("files", {}).items() if f.get("path") == path.name), (None, None)
    )
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
        lambda x: onnx_outputs(sess, x, batch_size),
        int(src.get("params", 0)),
        int(src.get("flops", 0)),
        temperature=float(meta["temperature"]),
        rule=rule_for(meta, variant),
        meta=meta,
    )


def check_class_order_onnx(meta: dict[str, Any], catalogue: Catalogue, name: str, path: Path) -> None:
    from mycolens.export.checkpoint import check_class_order

    if meta.get("classes") != [c["id"] for c in meta["catalogue"]["classes"]]:
        raise UserError(f"variant {name}: model.json's classes and catalogue disagree; export again")
    check_class_order(Catalogue.from_dict(meta["catalogue"]), catalogue, f"variant {name} ({path})")


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Coverage and risk (error rate of the answered) when answering the most confident first, and their AURC."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    errors = 1.0 - np.asarray(correct, np.float64)[order]
    n = np.arange(1, len(order) + 1)
    risk = np.cumsum(errors) / n
    coverage = n / max(len(order), 1)
    return coverage, risk, float(risk.mean()) if len(risk) else 0.0


def ood_set_metrics(judged: list[tuple[str, str | None]]) -> dict[str, Any]:
    """Abstention, edible count and abstain reasons on one OOD set."""
    verdicts = np.asarray([v for v, _ in judged])
    reasons: dict[str, int] = {}
    for _, r in judged:
        if r is not None:
            reasons[r] = reasons.get(r, 0) + 1
    return {
        "images": len(judged),
        "abstain_rate": float(np.mean(verdicts == "uncertain")) if len(judged) else None,
        "edible": int(np.sum(verdicts == "edible")),
        "reasons": dict(sorted(reasons.items())),
    }


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
    ood_sets: Callable[[int, list[float], list[float]], dict[str, np.ndarray]],
    catalogue: Catalogue,
    rule: VerdictRule,
    ood: Any,
    bins: int,
    latency: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics of one variant, plus the arrays the plots need."""
    from mycolens.ood.fit import fit_rule

    dangerous = catalogue.dangerous_mask
    x_test, y_test = images.get("test", v.image_size, v.mean, v.std)
    keep = y_test >= 0
    x_test, y_test = x_test[keep], y_test[keep]
    temperature, v_rule = v.temperature, v.rule
    if temperature is None or v_rule is None:  # a checkpoint: fitted as the export fits an ONNX model
        x_val, y_val = images.get("val", v.image_size, v.mean, v.std)
        x_fit, _ = images.get("train", v.image_size, v.mean, v.std)
        temperature, v_rule = fit_rule(rule, v.outputs(x_val), y_val, v.outputs(x_fit)["input_stats"], ood)
    test_out = v.outputs(x_test)
    test_logits = test_out["logits"]
    probs_raw, probs = softmax(test_logits, 1.0), softmax(test_logits, temperature)
    preds = probs.argmax(1)
    verdicts = [verdict for verdict, _ in judge_outputs(test_out, temperature, dangerous, v_rule)]
    judged = {
        name: judge_outputs(v.outputs(x), temperature, dangerous, v_rule)
        for name, x in ood_sets(v.image_size, v.mean, v.std).items()
    }
    per_set = {name: ood_set_metrics(j) for name, j in judged.items()}
    ood_verdicts = [verdict for verdict, _ in judged.get("synthetic", [])]
    coverage, risk, aurc = risk_coverage(probs.max(1), preds == y_test)
    rates = [m["abstain_rate"] for m in per_set.values() if m["abstain_rate"] is not None]
    out: dict[str, Any] = {
        "format": v.kind,
        "path": str(v.path),
        "accuracy": M.accuracy(y_test, preds),
        "macro_f1": M.macro_f1(y_test, preds, catalogue.num_classes),
        "ece_uncalibrated": M.ece(probs_raw, y_test, bins),
        "ece": M.ece(probs, y_test, bins),
        "ece_noise_floor": M.ece_noise_floor(probs, bins),  # what a perfectly calibrated model would show here
        "temperature": float(temperature),
        "ood_threshold": float(v_rule.ood_threshold),
        "feature_threshold": float(v_rule.feature_threshold),
        "verdict": v_rule.to_dict(),
        "aurc": aurc,
        "ood_sets": per_set,
        "ood_abstain_rate_min": min(rates) if rates else None,
        "ood_edible": int(sum(m["edible"] for m in per_set.values())),
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
        "ood_images": len(ood_verdicts),
    }
    logits_only = lambda x: v.outputs(x)["logits"]  # noqa: E731
    out.update(
        measure_latency(logits_only, v.image_size, latency["batch_sizes"], latency["repeats"], latency["warmup"])
    )
    arrays = {
        "labels": y_test,
        "preds": preds,
        "probs_raw": probs_raw,
        "probs": probs,
        "coverage": coverage,
        "risk": risk,
    }
    return out, arrays


def evaluate_variants(
    shards_dir: str | Path,
    catalogue: Catalogue,
    variants: dict[str, str | Path],
    *,
    served: str,
    rule: VerdictRule,
    ood: Any,
    gate: dict[str, Any],
    reports_dir: str | Path,
    plots_dir: str | Path | None = None,
    card_path: str | Path | None = None,
    model_metrics_path: str | Path | None = None,
    ood_sets_dir: str | Path | None = None,
    ece_bins: int = 15,
    latency: dict[str, Any] | None = None,
    threads: int = 0,
    batch_size: int = 64,
    inputs_max_gb: float | None = None,
) -> dict[str, Any]:
    """Evaluate each named variant file (.ckpt or .onnx), write metrics.json, plots and the model card; return the metrics.

    A split whose float32 inputs exceed `inputs_max_gb` is decoded a batch at a time (LazyImages) when read.

    `rule` holds the verdict thresholds (conf/export) and `ood` the OodSettings a checkpoint's scores are fitted
    with. The safety gate is computed for `served` (test unsafe_edible_rate against gate["limit"], abstention on
    every named OOD set against gate["min_ood_abstain"], OOD edible count against gate["max_ood_edible"]) and
    recorded under "safety_gate"; raising on failure is left to the caller.
    """
    from mycolens.data.inputs import ImageCache
    from mycolens.evaluation.card import write_model_card
    from mycolens.evaluation.plots import plot_confusion, plot_reliability, plot_risk_coverage
    from mycolens.export.pipeline import named_ood_sets

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
    images = ImageCache(shards_dir, inputs_max_gb)
    set_cache: dict[tuple, dict[str, np.ndarray]] = {}

    def ood_sets(size: int, mean: list[float], std: list[float]) -> dict[str, np.ndarray]:
        """The named OOD sets as the export's gate reads them, decoded once per preprocessing."""
        key = (size, tuple(mean), tuple(std))
        if key not in set_cache:
            set_cache[key] = named_ood_sets(shards_dir, ood_sets_dir, size, mean, std)
        return set_cache[key]

    results: dict[str, dict[str, Any]] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    served_meta = None
    for name, path in variants.items():
        path = Path(path)
        log.info("evaluating %s (%s)", name, path)
        if path.suffix == ".onnx":
            v = load_onnx_variant(name, path, catalogue, batch_size, threads)
        elif path.suffix == ".ckpt":
            v = load_torch_variant(name, path, catalogue, batch_size, images, "train", ood)
        else:
            raise UserError(f"variant {name}: {path} is neither a .ckpt nor an .onnx file")
        results[name], arrays[name] = evaluate_one(v, images, ood_sets, catalogue, rule, ood, ece_bins, latency)
        if name == served:
            served_meta = v.meta
    s = results[served]
    min_abstain, max_edible = float(gate["min_ood_abstain"]), int(gate["max_ood_edible"])
    low = sorted(
        n for n, m in s["ood_sets"].items() if m["abstain_rate"] is not None and m["abstain_rate"] < min_abstain
    )
    gate = {
        "passed": bool(s["unsafe_edible_rate"] <= float(gate["limit"]) and not low and s["ood_edible"] <= max_edible),
        "limit": float(gate["limit"]),
        "variant": served,
        "unsafe_edible_rate": s["unsafe_edible_rate"],
        "split": "test",
        "min_ood_abstain": min_abstain,
        "ood_below_limit": low,
        "max_ood_edible": max_edible,
        "ood_edible": s["ood_edible"],
    }
    report: dict[str, Any] = {
        **{k: s[k] for k in SUMMARY_KEYS},
        **{k: v for k, v in s.items() if k.startswith("latency_ms_")},
        "served": served,
        "safety_gate": gate,
        "variants": results,
        "classes": catalogue.ids,
        "verdict": s["verdict"],
        "fitted_on": fitted_on("train", "val"),
        "ood_sets": {name: {"images": m["images"]} for name, m in s["ood_sets"].items()},
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
        curves = {
            n: (arr["coverage"], arr["risk"], results[n]["aurc"], 1.0 - results[n]["abstain_rate"])
            for n, arr in arrays.items()
        }
        plot_risk_coverage(curves, Path(plots_dir) / "risk_coverage.png")
    if card_path:
        write_model_card(card_path, catalogue, report, served_meta)
    if model_metrics_path and served_meta is not None and Path(model_metrics_path).parent.is_dir():
        write_json_atomic(model_metrics_path, report)
    return report
