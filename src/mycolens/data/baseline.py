"""A colour-only baseline: logistic regression on per-channel colour histograms, blind to shape and structure.

The README reports it beside the CNN: a data set where it scores high would be solvable by colour alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mycolens.data.shards import read_manifest, read_split
from mycolens.inference.preprocess import decode_image


def colour_features(images: list[bytes], bins: int) -> np.ndarray:
    """Per image: a normalised histogram of each RGB channel plus each channel's mean and std, (N, 3*bins+6)."""
    feats = []
    for data in images:
        x = np.asarray(decode_image(data), dtype=np.float32).reshape(-1, 3) / 255.0
        hist = [np.histogram(x[:, c], bins=bins, range=(0.0, 1.0))[0] / len(x) for c in range(3)]
        feats.append(np.concatenate([*hist, x.mean(0), x.std(0)]))
    return np.asarray(feats, dtype=np.float64)


def colour_baseline(shards_dir: str | Path, bins: int = 16, seed: int = 0) -> dict[str, Any]:
    """Fit on the train split's colour statistics; return test (and val) accuracy and the split sizes."""
    manifest = read_manifest(shards_dir)
    data = {}
    for split in ("train", "val", "test"):
        rows = read_split(shards_dir, split, columns=["image", "label"]).to_pydict()
        data[split] = (colour_features(rows["image"], bins), np.asarray(rows["label"], dtype=np.int64))
    x_train, y_train = data["train"]
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"{shards_dir}: the train split has fewer than 2 classes; generate more specimens")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0, random_state=seed))
    model.fit(x_train, y_train)

    def accuracy(split: str) -> float | None:
        x, y = data[split]
        return round(float((model.predict(x) == y).mean()), 4) if len(y) else None

    return {
        "colour_baseline_accuracy": accuracy("test"),
        "colour_baseline_val_accuracy": accuracy("val"),
        "chance_accuracy": round(1.0 / len(manifest["classes"]), 4),
        "bins": bins,
        "train_images": len(y_train),
        "val_images": len(data["val"][1]),
        "test_images": len(data["test"][1]),
    }
