"""The export stage: checkpoint -> checked fp32 ONNX + int8 ONNX + calibrated model.json, written as one folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.catalogue import Catalogue
from mycolens.data.inputs import LazyImages, load_images, split_inputs
from mycolens.data.shards import check_catalogue, read_manifest
from mycolens.errors import UserError
from mycolens.export.checkpoint import check_class_order, count_params_flops, load_checkpoint
from mycolens.export.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    compare_logits,
    compare_scores,
    export_onnx,
    onnx_outputs,
    session,
)
from mycolens.export.quantize import quantize_int8, resolve_settings
from mycolens.ood.fit import OodSettings, fit_rule, fitted_on
from mycolens.ood.input_stats import STAT_NAMES
from mycolens.ood.scored import OUTPUT_NAMES, build_scored_net, scored_outputs
from mycolens.utils.io import atomic_dir, sha256_file
from mycolens.verdict.calibration import OOD_SCORE
from mycolens.verdict.metrics import unsafe_edible_rate
from mycolens.verdict.rule import VerdictRule, decide_outputs

log = logging.getLogger(__name__)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
RESIZE = "shorter_side_bilinear_center_crop"


class ExportCheckFailed(UserError):
    """The exported graph does not reproduce the PyTorch model closely enough; nothing was written."""


@dataclass(frozen=True)
class ExportSettings:
    """Everything conf/export sets (see conf/export/default.yaml for the meaning of each)."""

    name: str
    version: str
    opset: int
    batch_size: int
    check: dict[str, Any]
    quantize: dict[str, Any]
    calibration: dict[str, Any]
    ood: dict[str, Any]
    verdict: dict[str, Any]
    safety_gate: dict[str, Any]
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, conf: dict[str, Any]) -> ExportSettings:
        """Build from the plain conf/export mapping (keys that are not settings, like ckpt_path, are kept aside)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        missing = sorted(names - set(conf) - {"seed"})
        if missing:
            raise UserError(f"conf/export lacks {', '.join(missing)}")
        return cls(**{k: conf[k] for k in names if k in conf}, extra={k: v for k, v in conf.items() if k not in names})

    def rule(self) -> VerdictRule:
        return VerdictRule.from_dict({k: v for k, v in self.verdict.items() if k != "ood_threshold"})  # fitted here

    def ood_settings(self) -> OodSettings:
        return OodSettings.from_config(float(self.calibration["keep_in_distribution"]), self.ood)


def package_versions() -> dict[str, str]:
    """Versions of the packages that made the model (recorded in model.json)."""
    out = {"python": platform.python_version()}
    for pkg in ("mycolens", "torch", "onnx", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def relative_to_root(path: Path, root: str | Path | None) -> str:
    """`path` relative to the repository root when inside it, else absolute."""
    path = Path(path).resolve()
    if root is not None:
        try:
            return path.relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def check_writable(out_dir: Path) -> None:
    """Fail early, before minutes of work, when the model folder cannot be replaced."""
    parent = out_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    for folder in (parent, out_dir):
        if folder.exists() and not os.access(folder, os.W_OK):
            raise UserError(
                f"cannot write the model folder {out_dir}: {folder} is read-only (make it writable or set export.output_dir=...)"
            )


def gate_rate(
    outputs: dict[str, np.ndarray], labels: np.ndarray, temperature: float, rule: VerdictRule, dangerous: list[bool]
) -> float:
    """unsafe_edible_rate of the model's outputs under the calibrated rule (every abstention signal included)."""
    verdicts = decide_outputs(outputs, temperature, dangerous, rule)
    return unsafe_edible_rate(verdicts, labels, dangerous)


def ood_gate(
    sess: Any,
    sets: dict[str, np.ndarray],
    temperature: float,
    rule: VerdictRule,
    dangerous: list[bool],
    batch_size: int,
) -> dict[str, dict[str, float]]:
    """Abstention rate and edible count of one model file on each named OOD set."""
    out: dict[str, dict[str, float]] = {}
    for name, x in sets.items():
        verdicts = np.asarray(decide_outputs(onnx_outputs(sess, x, batch_size), temperature, dangerous, rule))
        out[name] = {
            "images": len(x),
            "abstain_rate": float(np.mean(verdicts == "uncertain")) if len(x) else 1.0,
            "edible": int(np.sum(verdicts == "edible")),
        }
    return out


def named_ood_sets(
    shards_dir: str | Path, ood_dir: str | Path | None, size: int, mean: list[float], std: list[float]
) -> dict[str, np.ndarray]:
    """The shards' synthetic ood split plus every set of the ood_sets folder (test data: checked, never fitted)."""
    from mycolens.data.ood_sets import load_ood_sets

    sets = {"synthetic": load_images(shards_dir, "ood", size, mean, std)[0]}
    if ood_dir is not None:
        try:
            sets.update(load_ood_sets(ood_dir, size, mean, std))
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
    return sets


def export_model(
    ckpt_path: str | Path,
    out_dir: str | Path,
    shards_dir: str | Path,
    catalogue: Catalogue,
    settings: ExportSettings,
    root: str | Path | None = None,
    reference: dict[str, Any] | None = None,
    inputs_max_gb: float | None = None,
) -> dict[str, Any]:
    """Export, check, quantize, calibrate and gate `ckpt_path`; write out_dir atomically; return model.json + checks.

    The folder is written even when the safety gate fails (with safety_gate.passed=false, which serving refuses);
    it is not written at all when the ONNX checks fail or anything raises. A split whose float32 inputs exceed
    `inputs_max_gb` is decoded a batch at a time (LazyImages) each time it is read, with the same results.
    """
    ckpt_path, out_dir = Path(ckpt_path), Path(out_dir)
    model = load_checkpoint(ckpt_path)
    check_class_order(model.catalogue, catalogue, f"checkpoint {ckpt_path}")
    manifest = read_manifest(shards_dir)
    check_catalogue(manifest, catalogue)
    check_writable(out_dir)
    hp = model.hparams
    size, mean, std = int(hp.image_size), [float(m) for m in hp.mean], [float(s) for s in hp.std]
    net, bs, dangerous = model.net.eval(), int(settings.batch_size), catalogue.dangerous_mask
    chk, cal, gate, q = settings.check, settings.calibration, settings.safety_gate, settings.quantize

    cache: dict[tuple[str, int | None], tuple[np.ndarray | LazyImages, np.ndarray]] = {}

    def images(split: str, limit: int | None = None) -> tuple[np.ndarray | LazyImages, np.ndarray]:
        if (split, limit) not in cache:
            cache[split, limit] = split_inputs(
                shards_dir, split, size, mean, std, inputs_max_gb, limit=limit, seed=int(settings.seed)
            )
            if len(cache[split, limit][0]) == 0:
                raise UserError(f"the {split} split of {shards_dir} is empty; the export needs it")
        return cache[split, limit]

    ood = settings.ood_settings()
    x_check, _ = images(chk["split"])
    x_cal, y_cal = images(cal["split"])
    x_gate, y_gate = images(gate["split"])
    x_fit, y_fit = images(settings.ood["feature"]["fit_split"])
    x_calib, _ = images(q["calibration_split"], limit=int(q["calibration_images"]))
    quant = resolve_settings(
        q["activation_type"], q["weight_type"], q["reduce_range"], q["per_channel"], q["calibrate_method"], len(x_calib)
    )
    params, flops = count_params_flops(net, size)
    log.info("fitting the feature score on %s %s images", len(x_fit), settings.ood["feature"]["fit_split"])
    scored = build_scored_net(net, x_fit, y_fit, mean, std, ood.feature_normalize, ood.feature_shrinkage, bs)
    torch_check = scored_outputs(scored, x_check, bs)
    ood_sets = named_ood_sets(shards_dir, gate.get("ood_sets_dir"), size, mean, std)

    with atomic_dir(out_dir) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the model folder is meant to be shared
        log.info("exporting %s to ONNX (opset %s)", ckpt_path, settings.opset)
        export_onnx(scored, tmp / FP32_FILE, size, int(settings.opset), OUTPUT_NAMES)
        fp32 = session(tmp / FP32_FILE)
        fp32_check = onnx_outputs(fp32, x_check, bs)
        fp32_vs_torch = {
            **compare_logits(torch_check["logits"], fp32_check["logits"]),
            **compare_scores(torch_check, fp32_check),
        }
        if (
            fp32_vs_torch["max_abs_diff"] > float(chk["max_abs_diff"])
            or fp32_vs_torch["top1_agreement"] < float(chk["min_top1_agreement"])
            or fp32_vs_torch.get("feature_score_max_rel_diff", 0.0) > float(chk["max_score_rel_diff"])
            or fp32_vs_torch.get("input_stats_max_abs_diff", 0.0) > float(chk["max_stats_abs_diff"])
        ):
            raise ExportCheckFailed(
                f"ONNX fp32 differs from PyTorch on {fp32_vs_torch['images']} {chk['split']} images: max |diff| "
                f"{fp32_vs_torch['max_abs_diff']:.3g} (limit {chk['max_abs_diff']}), top-1 agreement "
                f"{fp32_vs_torch['top1_agreement']:.4f} (min {chk['min_top1_agreement']}), feature score rel. diff "
                f"{fp32_vs_torch.get('feature_score_max_rel_diff', 0.0):.3g} (limit {chk['max_score_rel_diff']}), "
                f"input stats |diff| {fp32_vs_torch.get('input_stats_max_abs_diff', 0.0):.3g} "
                f"(limit {chk['max_stats_abs_diff']}); nothing was written"
            )
        log.info("quantizing to int8 with %s calibration images (%s)", len(x_calib), quant)
        quantize_int8(tmp / FP32_FILE, tmp / INT8_FILE, x_calib, quant, batch_size=bs)
        int8 = session(tmp / INT8_FILE)
        int8_check = onnx_outputs(int8, x_check, bs)
        int8_vs_fp32 = {
            **compare_logits(fp32_check["logits"], int8_check["logits"]),
            **compare_scores(fp32_check, int8_check),
        }
        if int8_vs_fp32["top1_agreement"] < float(chk["int8_min_top1_agreement"]):
            raise ExportCheckFailed(
                f"int8 ONNX agrees with fp32 on only {int8_vs_fp32['top1_agreement']:.4f} of {chk['split']} images "
                f"(min {chk['int8_min_top1_agreement']}); try more export.quantize.calibration_images; nothing was written"
            )

        # temperature from fp32; every abstention threshold fitted on each variant's own outputs
        sessions = {"fp32": fp32, "int8": int8}
        temperature, rules = None, {}
        for variant, sess in sessions.items():
            train_stats = onnx_outputs(sess, x_fit, bs)["input_stats"]
            temperature, rules[variant] = fit_rule(
                settings.rule(), onnx_outputs(sess, x_cal, bs), y_cal, train_stats, ood, temperature
            )
        rule = rules["fp32"]
        rates = {
            v: gate_rate(onnx_outputs(s_, x_gate, bs), y_gate, temperature, rules[v], dangerous)
            for v, s_ in sessions.items()
        }
        ood_rates = {v: ood_gate(s_, ood_sets, temperature, rules[v], dangerous, bs) for v, s_ in sessions.items()}
        limit = float(gate["limit"])
        min_abstain, max_edible = float(gate["min_ood_abstain"]), int(gate["max_ood_edible"])
        low = sorted(
            f"{v}/{n} {r['abstain_rate']:.3f}"
            for v, per in ood_rates.items()
            for n, r in per.items()
            if r["abstain_rate"] < min_abstain
        )
        edible = {v: sum(r["edible"] for r in per.values()) for v, per in ood_rates.items()}
        del fp32, int8, sessions  # sessions hold the files open on some platforms

        files = {
            variant: {"path": name, "sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
            for variant, name in (("fp32", FP32_FILE), ("int8", INT8_FILE))
        }
        meta = {
            "name": str(settings.name),
            "version": f"{settings.version}+{files['fp32']['sha256'][:12]}",
            "catalogue": model.catalogue.to_dict(),  # the class order travels with the model
            "classes": catalogue.ids,
            "preprocessing": {
                "image_size": size,
                "mean": mean,
                "std": std,
                "resize": RESIZE,
                "layout": "NCHW",
                "dtype": "float32",
                "scale": "0-1",
            },
            "input": {"name": INPUT_NAME, "shape": [-1, 3, size, size], "datatype": "FP32"},
            "output": {"name": OUTPUT_NAME, "shape": [-1, catalogue.num_classes], "datatype": "FP32"},
            "outputs": {
                "logits": {"shape": [-1, catalogue.num_classes], "datatype": "FP32"},
                "feature_score": {"shape": [-1], "datatype": "FP32"},
                "input_stats": {"shape": [-1, len(STAT_NAMES)], "datatype": "FP32", "columns": list(STAT_NAMES)},
            },
            "temperature": float(temperature),
            "verdict": rule.to_dict(),  # fp32's; verdict_by_variant holds each file's own thresholds
            "verdict_by_variant": {v: r.to_dict() for v, r in rules.items()},
            "ood": {
                "score": OOD_SCORE,
                "threshold": float(rule.ood_threshold),
                "keep_in_distribution": float(ood.keep),
                "feature": {
                    "score": "0.5 min_k (z - mu_k)^T Sigma^-1 (z - mu_k), z = unit penultimate features (pytorch-ood Mahalanobis)",
                    "normalize": ood.feature_normalize,
                    "shrinkage": ood.feature_shrinkage,
                    "threshold": float(rule.feature_threshold),
                },
                "input_checks": {"keep": ood.checks_keep, "columns": list(STAT_NAMES)},
                "fitted_on": fitted_on(str(settings.ood["feature"]["fit_split"]), str(cal["split"])),
            },
            "files": files,
            "safety_gate": {
                "passed": bool(max(rates.values()) <= limit and not low and max(edible.values()) <= max_edible),
                "limit": limit,
                "unsafe_edible_rate": {k: float(v) for k, v in rates.items()},
                "split": str(gate["split"]),
                "min_ood_abstain": min_abstain,
                "max_ood_edible": max_edible,
                "ood": ood_rates,
                "ood_below_limit": low,
                "ood_edible": edible,
            },
            "source": {
                "ckpt": relative_to_root(ckpt_path, root),
                "ckpt_sha256": sha256_file(ckpt_path),
                "backbone": str(hp.get("backbone", "unknown")),
                "params": params,
                "flops": flops,
            },
            "versions": package_versions(),
            "quantization": quant.to_dict(),
            "checks": {"fp32_vs_torch": fp32_vs_torch, "int8_vs_fp32": int8_vs_fp32, "split": str(chk["split"])},
        }
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if reference is not None:  # drift monitoring's baseline travels with the model (reference.json)
            from mycolens.inference.onnx_model import OnnxClassifier, make_session
            from mycolens.monitoring.reference import write_reference

            ref = dict(reference)
            variant = str(ref.pop("variant", "fp32"))
            clf = OnnxClassifier(meta, make_session(tmp / files[variant]["path"]), variant)
            write_reference(shards_dir, tmp / "reference.json", classifier=clf, **ref)
    return meta
