"""Drift of a folder of photos against the reference, without a server (scripts/monitor.py), with the serving code."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.inference.preprocess import ImageRejected, decode_image, normalize, resize_center_crop
from mycolens.monitoring.drift import DriftMonitor
from mycolens.monitoring.reference import Classifier


def list_images(folder: str | Path) -> list[Path]:
    """Regular files under `folder` (recursive, sorted, hidden files and folders skipped)."""
    root = Path(folder)
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def folder_drift(
    folder: str | Path,
    reference: dict[str, Any],
    settings: Mapping[str, Any],
    classifier: Classifier | None = None,
    *,
    max_pixels: int = 40_000_000,
    batch_size: int = 64,
) -> dict[str, Any]:
    """The /monitoring/drift report for every readable photo in `folder` (the window holds them all)."""
    files = list_images(folder)
    monitor = DriftMonitor.from_settings(reference, {**settings, "window": max(1, len(files))})
    size = monitor.image_size
    if classifier is not None and int(classifier.preprocessing["image_size"]) != size:
        raise ValueError(
            f"the model's input size {classifier.preprocessing['image_size']} differs from the reference's {size}"
        )
    skipped: Counter[str] = Counter()
    batch: list[tuple[np.ndarray, tuple[int, int]]] = []

    def flush() -> None:
        probs: Any = [None] * len(batch)
        if classifier is not None and batch:
            pre = classifier.preprocessing
            x = normalize(np.stack([c for c, _ in batch]), pre["mean"], pre["std"])
            probs = classifier.probabilities(classifier.logits(x))
        for (crop, wh), p in zip(batch, probs, strict=False):
            monitor.observe(crop, p, original_size=wh)
        batch.clear()

    for path in files:
        try:
            img = decode_image(path.read_bytes(), max_pixels=max_pixels)
        except ImageRejected as exc:
            skipped[exc.code] += 1
            continue
        except OSError:
            skipped["unreadable"] += 1
            continue
        batch.append((resize_center_crop(img, size), img.size))
        if len(batch) >= batch_size:
            flush()
    flush()
    report = monitor.report()
    report["folder"] = {"path": str(folder), "files": len(files), "images": len(monitor), "skipped": dict(skipped)}
    return report


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text table: one line per feature with score, threshold and a DRIFT mark."""
    lines = [f"{'feature':<16}{'method':<8}{'score':>10}{'threshold':>11}  {'reference':>10}{'live':>10}  state"]
    for name, f in report["features"].items():
        score = "-" if f["score"] is None else f"{f['score']:.4f}"
        ref = f"{f['reference_mean']:.3f}" if f.get("reference_mean") is not None else ""
        live = f"{f['live_mean']:.3f}" if f.get("live_mean") is not None else ""
        state = "DRIFT" if f["drifted"] else ("ok" if f["samples"] >= report["min_samples"] else "too few")
        lines.append(f"{name:<16}{f['method']:<8}{score:>10}{f['threshold']:>11.3f}  {ref:>10}{live:>10}  {state}")
    for name in report.get("unavailable_features", []):
        lines.append(f"{name:<16}(not in the reference: export it with a classifier)")
    n, need = report["window_size"], report["min_samples"]
    verdict = "DRIFTED: " + ", ".join(report["drifted_features"]) if report["drifted"] else "no drift"
    if n < need:
        verdict = f"too few images to flag drift ({n} < monitoring.min_samples={need})"
    lines.append(f"{n} images; {verdict}")
    return "\n".join(lines)
