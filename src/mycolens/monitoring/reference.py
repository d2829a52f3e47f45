"""Reference statistics of the training data (and the model's answers on validation), written beside model.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mycolens.data.inputs import EncodedRows
from mycolens.data.row_groups import scan_split
from mycolens.data.shards import read_manifest
from mycolens.inference.preprocess import decode_image, normalize, resize_center_crop
from mycolens.monitoring.features import IMAGE_FEATURES, image_features, prediction_features
from mycolens.monitoring.stats import summarize_categorical, summarize_numeric
from mycolens.utils.io import sha256_file, write_json_atomic

FORMAT = "mycolens-reference/1"


class ReferenceError(FileNotFoundError):
    """A reference file that is missing or unusable; the message says how to make one."""


class Classifier(Protocol):
    """What the reference needs of a model (OnnxClassifier has it): preprocessing, logits, calibrated probs."""

    preprocessing: dict[str, Any]

    def logits(self, x: np.ndarray) -> np.ndarray: ...

    def probabilities(self, logits: np.ndarray) -> np.ndarray: ...


def _spread(n: int, limit: int | None) -> np.ndarray:
    """Evenly spaced row indices (all rows when `limit` is None or not smaller than n): deterministic subsampling."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, int(limit)).round().astype(int))


def _crops(shards_dir: str | Path, split: str, size: int, limit: int | None) -> Iterator[tuple[np.ndarray, tuple]]:
    """(uint8 HWC crop at `size`, decoded (w, h)) for the stored images of one split."""
    images = EncodedRows(scan_split(shards_dir, split))  # only the row groups of the rows picked are read
    for i in _spread(len(images), limit):
        img = decode_image(images[int(i)])
        yield resize_center_crop(img, size), img.size


def reference_stats(
    shards_dir: str | Path,
    *,
    classifier: Classifier | None = None,
    image_size: int | None = None,
    bins: int = 10,
    max_images: int | None = 5000,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Image statistics of the train split and, given a classifier, its confidence and predicted class on val."""
    manifest = read_manifest(shards_dir)
    params = manifest.get("params", {})
    if classifier is not None:
        image_size = int(classifier.preprocessing["image_size"])
    image_size = int(image_size or params.get("image_size") or 0)
    if image_size <= 0:
        raise ReferenceError(f"no image size for {shards_dir}: pass image_size= or a classifier")
    values: dict[str, list[float]] = {k: [] for k in IMAGE_FEATURES}
    for crop, size in _crops(shards_dir, "train", image_size, max_images):
        for k, v in image_features(crop, size).items():
            values[k].append(v)
    if not values["brightness"]:
        raise ReferenceError(f"the train split of {shards_dir} has no images")
    features = {k: {**summarize_numeric(v, bins), "split": "train"} for k, v in values.items()}
    out: dict[str, Any] = {
        "format": FORMAT,
        "image_size": image_size,
        "bins": int(bins),
        "classes": list(manifest.get("classes", [])),
        "source": {
            "shards_dir": str(shards_dir),
            "manifest_sha256": sha256_file(Path(shards_dir) / "manifest.json"),
            "generator": params.get("generator") or params.get("kind"),
            "train_images": len(values["brightness"]),
        },
        "features": features,
    }
    if classifier is not None:
        out["features"].update(
            _prediction_reference(shards_dir, classifier, out["classes"], bins, max_images, batch_size)
        )
        out["source"]["val_images"] = out["features"]["confidence"]["count"]
        meta = getattr(classifier, "meta", {})
        out["model"] = {
            "name": meta.get("name"),
            "version": meta.get("version"),
            "variant": getattr(classifier, "variant", None),
        }
    return out


def _prediction_reference(
    shards_dir: str | Path, classifier: Classifier, classes: list[str], bins: int, limit: int | None, batch_size: int
) -> dict[str, Any]:
    """Confidence and predicted-class summaries of the classifier's answers on the validation split."""
    pre = classifier.preprocessing
    size, mean, std = int(pre["image_size"]), pre["mean"], pre["std"]
    crops = [c for c, _ in _crops(shards_dir, "val", size, limit)]
    if not crops:
        raise ReferenceError(f"the val split of {shards_dir} has no images for the prediction reference")
    conf: list[float] = []
    pred: list[str] = []
    for start in range(0, len(crops), batch_size):
        x = normalize(np.stack(crops[start : start + batch_size]), mean, std)
        for row in classifier.probabilities(classifier.logits(x)):
            f = prediction_features(row, classes)
            conf.append(f["confidence"])
            pred.append(f["predicted_class"])
    return {
        "confidence": {**summarize_numeric(conf, bins), "split": "val"},
        "predicted_class": {**summarize_categorical(pred, classes), "split": "val"},
    }


def write_reference(
    shards_dir: str | Path, out_path: str | Path, classifier: Classifier | None = None, **kwargs: Any
) -> Path:
    """Compute reference_stats and write them atomically as JSON (models/export/reference.json at export time)."""
    return write_json_atomic(out_path, reference_stats(shards_dir, classifier=classifier, **kwargs))


def load_reference(path: str | Path) -> dict[str, Any]:
    """A reference.json, checked for its format, or a ReferenceError saying how to make one."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceError(
            f"no drift reference at {path}: the export stage writes reference.json beside model.json "
            "(mycolens.monitoring.reference.write_reference)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReferenceError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("features"), dict):
        raise ReferenceError(f"{path}: not a {FORMAT} file; rewrite it with write_reference")
    return data
