"""Shard images as model inputs, through the exact preprocessing serving uses (decode, resize, crop, normalize)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mycolens.data.shards import read_split
from mycolens.inference.preprocess import decode_image, normalize, resize_center_crop


def load_images(
    shards_dir: str | Path,
    split: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    limit: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """float32 NCHW inputs and int64 labels (-1 for ood) of a split; `limit` picks a seeded random subset."""
    table = read_split(shards_dir, split, columns=["image", "label"])
    index = np.arange(table.num_rows)
    if limit is not None and limit < len(index):
        index = np.sort(np.random.default_rng(seed).choice(index, size=int(limit), replace=False))
    blobs = table.column("image").to_pylist()
    labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)[index]
    if len(index) == 0:
        return np.zeros((0, 3, image_size, image_size), np.float32), labels
    images = np.stack([resize_center_crop(decode_image(blobs[i]), image_size) for i in index])
    return normalize(images, mean, std), labels


class ImageCache:
    """Decoded splits kept per (split, size, mean, std), so several variants share one decode."""

    def __init__(self, shards_dir: str | Path) -> None:
        self.shards_dir = shards_dir
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def get(
        self, split: str, image_size: int, mean: Sequence[float], std: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        key = (split, int(image_size), tuple(map(float, mean)), tuple(map(float, std)))
        if key not in self._cache:
            self._cache[key] = load_images(self.shards_dir, split, image_size, mean, std)
        return self._cache[key]
