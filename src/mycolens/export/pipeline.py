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
from mycolens.cli import UserError
from mycolens.data.shards import check_catalogue, read_manifest
from mycolens.evaluation.calibration import OOD_SCORE, energy_score, fit_temperature, ood_threshold
from mycolens.evaluation.metrics import unsafe_edible_rate
from mycolens.evaluation.safety import VerdictRule, decide_logits
from mycolens.export.checkpoint import check_class_order, count_params_flops, load_checkpoint, torch_logits
from mycolens.export.inputs import load_images
from mycolens.export.onnx_export import INPUT_NAME, OUTPUT_NAME, compare_logits, export_onnx, onnx_logits, session
from mycolens.export.quantize import quantize_int8, resolve_settings
from mycolens.utils.io import atomic_dir, sha256_file

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
        return VerdictRule(**{k: float(v) for k, v in self.verdict.items() if k != "ood_threshold"})


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
    logits: np.ndarray, labels: np.ndarray, temperature: float, rule: VerdictRule, dangerous: list[bool]
) -> float:
    """unsafe_edible_rate of logits under the calibrated rule (energy OOD score included)."""
    verdicts = decide_logits(logits, temperature, dangerous, rule)
    return unsafe_edible_rate(verdicts, labels, dangerous)


def export_model(
    ckpt_path: str | Path,
    out_dir: str | Path,
    shards_dir: str | Path,
    catalogue: Catalogue,
    settings: ExportSettings,
    root: str | Path | None = None,
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export, check, quantize, calibrate and gate `ckpt_path`; write out_dir atomically; return model.json + checks.

    The folder is written even when the safety gate fails (with safety_gate.passed=false, which serving refuses);
    it is not written at all when the ONNX checks fail or anything raises.
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

    cache: dict[tuple[str, int | None], tuple[np.ndarray, np.ndarray]] = {}

    def images(split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if (split, limit) not in cache:
            cache[split, limit] = load_images(shards_dir, split, size, mean, std, limit=limit, seed=int(settings.seed))
            if len(cache[split, limit][0]) == 0:
                raise UserError(f"the {split} split of {shards_dir} is empty; the export needs it")
        return cache[split, limit]

    x_check, _ = images(chk["split"])
    x_cal, y_cal = images(cal["split"])
    x_gate, y_gate = images(gate["split"])
    x_calib, _ = images(q["calibration_split"], limit=int(q["calibration_images"]))
    quant = resolve_settings(
        q["activation_type"], q["weight_type"], q["reduce_range"], q["per_channel"], q["calibrate_method"], len(x_calib)
    )
    params, flops = count_params_flops(net, size)
    torch_check = torch_logits(net, x_check, bs)

    with atomic_dir(out_dir) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the model folder is meant to be shared
        log.info("exporting %s to ONNX (opset %s)", ckpt_path, settings.opset)
        export_onnx(net, tmp / FP32_FILE, size, int(settings.opset))
        fp32 = session(tmp / FP32_FILE)
        fp32_check = onnx_logits(fp32, x_check, bs)
        fp32_vs_torch = compare_logits(torch_check, fp32_check)
        if fp32_vs_torch["max_abs_diff"] > float(chk["max_abs_diff"]) or fp32_vs_torch["top1_agreement"] < float(
            chk["min_top1_agreement"]
        ):
            raise ExportCheckFailed(
                f"ONNX fp32 differs from PyTorch on {fp32_vs_torch['images']} {chk['split']} images: max |diff| "
                f"{fp32_vs_torch['max_abs_diff']:.3g} (limit {chk['max_abs_diff']}), top-1 agreement "
                f"{fp32_vs_torch['top1_agreement']:.4f} (min {chk['min_top1_agreement']}); nothing was written"
            )
        log.info("quantizing to int8 with %s calibration images (%s)", len(x_calib), quant)
        quantize_int8(tmp / FP32_FILE, tmp / INT8_FILE, x_calib, quant, batch_size=bs)
        int8 = session(tmp / INT8_FILE)
        int8_vs_fp32 = compare_logits(fp32_check, onnx_logits(int8, x_check, bs))
        if int8_vs_fp32["top1_agreement"] < float(chk["int8_min_top1_agreement"]):
            raise ExportCheckFailed(
                f"int8 ONNX agrees with fp32 on only {int8_vs_fp32['top1_agreement']:.4f} of {chk['split']} images "
                f"(min {chk['int8_min_top1_agreement']}); try more export.quantize.calibration_images; nothing was written"
            )

        cal_logits = onnx_logits(fp32, x_cal, bs)
        temperature = fit_temperature(cal_logits, y_cal)
        keep = float(cal["keep_in_distribution"])
        rule = dataclasses.replace(
            settings.rule(), ood_threshold=ood_threshold(energy_score(cal_logits, temperature), keep)
        )
        rates = {
            "fp32": gate_rate(onnx_logits(fp32, x_gate, bs), y_gate, temperature, rule, dangerous),
            "int8": gate_rate(onnx_logits(int8, x_gate, bs), y_gate, temperature, rule, dangerous),
        }
        limit = float(gate["limit"])
        del fp32, int8  # sessions hold the files open on some platforms

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
            "temperature": float(temperature),
            "verdict": rule.to_dict(),
            "ood": {"score": OOD_SCORE, "threshold": float(rule.ood_threshold), "keep_in_distribution": keep},
            "files": files,
            "safety_gate": {
                "passed": bool(max(rates.values()) <= limit),
                "limit": limit,
                "unsafe_edible_rate": {k: float(v) for k, v in rates.items()},
                "split": str(gate["split"]),
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
