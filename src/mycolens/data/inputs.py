"""Shard images as model inputs, through the exact preprocessing serving uses (decode, resize, crop, normalize).

A split whose float32 inputs fit a budget is decoded into one array; a bigger one is a `LazyImages`, decoded a
batch at a time as the export and evaluation slice it, so their memory stays flat as the data grows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mycolens.data import storage
from mycolens.data.row_groups import RowGroup, scan_split
from mycolens.data.shards import read_split
from mycolens.inference.preprocess import decode_image, normalize, resize_center_crop

log = logging.getLogger(__name__)


def subset(rows: int, limit: int | None, seed: int) -> np.ndarray:
    """Row indices of a split: all, or a seeded random `limit` of them in file order."""
    index = np.arange(rows)
    if limit is not None and limit < len(index):
        index = np.sort(np.random.default_rng(seed).choice(index, size=int(limit), replace=False))
    return index


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
    index = subset(table.num_rows, limit, seed)
    blobs = table.column("image").to_pylist()
    labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)[index]
    if len(index) == 0:
        return np.zeros((0, 3, image_size, image_size), np.float32), labels
    images = np.stack([resize_center_crop(decode_image(blobs[i]), image_size) for i in index])
    return normalize(images, mean, std), labels


class EncodedRows:
    """Random access to a split's encoded images by row number, reading one row group at a time (the last one read
    is kept, so rows read in order cost one read per group)."""

    def __init__(self, groups: Sequence[RowGroup]) -> None:
        self.groups = list(groups)
        self.starts = np.cumsum([0, *[g.rows for g in self.groups]])
        self._group: tuple[int, list[bytes]] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, row: int) -> bytes:
        g = int(np.searchsorted(self.starts, row, side="right")) - 1
        if self._group is None or self._group[0] != g:
            group = self.groups[g]
            table = storage.open_parquet(group.file).read_row_group(group.index, columns=["image"])
            self._group = (g, table.column("image").to_pylist())
        return self._group[1][row - int(self.starts[g])]


class LazyImages:
    """The float32 NCHW inputs of some rows of a split, decoded on access: `x[i:j]` decodes those rows (reading
    their Parquet row groups; the last group read is kept), `x[mask]` or `x[indices]` is a LazyImages of the rows
    picked. Memory holds one row group and one batch, never the split."""

    def __init__(
        self,
        encoded: EncodedRows,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        rows: np.ndarray | None = None,
    ) -> None:
        self.encoded, self.image_size, self.mean, self.std = encoded, int(image_size), list(mean), list(std)
        self.rows = np.arange(len(encoded)) if rows is None else np.asarray(rows, np.int64)
        self.shape = (len(self.rows), 3, self.image_size, self.image_size)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            rows = self.rows[key]
            if len(rows) == 0:
                return np.zeros((0, 3, self.image_size, self.image_size), np.float32)
            size = self.image_size
            images = np.stack([resize_center_crop(decode_image(self.encoded[int(r)]), size) for r in rows])
            return normalize(images, self.mean, self.std)
        return LazyImages(self.encoded, self.image_size, self.mean, self.std, self.rows[np.asarray(key)])


def split_inputs(
    shards_dir: str | Path,
    split: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    max_gb: float | None,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray | LazyImages, np.ndarray]:
    """`load_images` when the rows' float32 inputs fit `max_gb` (None: always), else the same rows as LazyImages
    (the same values, decoded on access); the choice is logged with the size."""
    labels_all = np.asarray(read_split(shards_dir, split, columns=["label"]).column("label").to_pylist(), np.int64)
    index = subset(len(labels_all), limit, seed)
    size_gb = len(index) * 3 * int(image_size) ** 2 * 4 / 1e9
    if max_gb is None or size_gb <= float(max_gb):
        return load_images(shards_dir, split, image_size, mean, std, limit=limit, seed=seed)
    log.info("%s inputs: decoded on access (%.3f GB of float32 > data.cache_max_gb=%s)", split, size_gb, max_gb)
    lazy = LazyImages(EncodedRows(scan_split(shards_dir, split)), image_size, mean, std, rows=index)
    return lazy, labels_all[index]


class ImageCache:
    """Decoded splits kept per (split, size, mean, std), so several variants share one decode; a split over
    `max_gb` is kept as LazyImages instead."""

    def __init__(self, shards_dir: str | Path, max_gb: float | None = None) -> None:
        self.shards_dir, self.max_gb = shards_dir, max_gb
        self._cache: dict[tuple, tuple[np.ndarray | LazyImages, np.ndarray]] = {}

    def get(
        self, split: str, image_size: int, mean: Sequence[float], std: Sequence[float]
    ) -> tuple[np.ndarray | LazyImages, np.ndarray]:
        key = (split, int(image_size), tuple(map(float, mean)), tuple(map(float, std)))
        if key not in self._cache:
            self._cache[key] = split_inputs(self.shards_dir, split, image_size, mean, std, self.max_gb)
        return self._cache[key]
