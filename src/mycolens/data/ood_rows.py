"""Synthetic not-a-mushroom shard rows: the `ood` split of the generated shards, and of an ingest without OOD photos.

Every image has its own RNG from (seed, OOD_STREAM, index). Only `mycolens.data.scenes` draws them: training and
ingest get their OOD rows without importing the mushroom renderer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mycolens.data.scenes.ood import render_ood
from mycolens.data.shards import sha256_bytes
from mycolens.utils.images import encode_jpeg

OOD_STREAM = 1  # SeedSequence domain tag: OOD images never share a stream with specimens (mycolens.data.generate)


def check_size(image_size: int) -> None:
    """Refuse an image size outside 16..512 pixels (ValueError)."""
    if not 16 <= int(image_size) <= 512:
        raise ValueError(f"image_size={image_size} is out of range: use 16..512 pixels (default 64)")


def synthetic_row(img: np.ndarray, label: int, species: str, specimen: str, quality: int) -> dict[str, Any]:
    """A shard row of a drawn uint8 HWC image: 4:4:4 JPEG bytes (small colour details survive at 64 px) and its hash."""
    data = encode_jpeg(img, quality, subsampling=0)
    return {"image": data, "label": label, "species": species, "specimen": specimen,
            "sha256": sha256_bytes(data), "source": "synthetic"}  # fmt: skip


def ood_rows(task: tuple) -> list[dict[str, Any]]:
    """Worker: not-mushroom images start..stop of (seed, start, stop, size, quality), each from its own stream."""
    seed, start, stop, size, quality = task
    rows = []
    for i in range(start, stop):
        rng = np.random.default_rng(np.random.SeedSequence([seed, OOD_STREAM, i]))
        rows.append(synthetic_row(render_ood(rng, size), -1, "", f"ood-{i:05d}", quality))
    return rows


def generate_ood_rows(n: int, image_size: int, seed: int, jpeg_quality: int) -> list[dict[str, Any]]:
    """`n` synthetic not-mushroom images as shard rows (label -1, species ""), as generate_dataset makes them."""
    check_size(image_size)
    return ood_rows((int(seed), 0, int(n), int(image_size), int(jpeg_quality)))
