"""Training augmentation split in two: per image on uint8 (random resized crop, flip, optional rotation and colour
jitter), then one float conversion and normalization per batch, in the DataLoader's collate.

The result is the same, pixel for pixel and random draw for random draw, as torchvision's
v2.Compose([RandomResizedCrop, RandomHorizontalFlip, ..., ToDtype, Normalize]) applied per image
(`reference_transform`, which the tests compare against), in about half the time: on a 64-px image most of that
time was v2's per-call dispatch and the per-image float conversion, not the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import default_collate
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


def extra_steps(augment: dict[str, Any]) -> list[v2.Transform]:
    """conf/data's optional augmentation after the crop and flip: rotation, colour jitter (off by default)."""
    steps: list[v2.Transform] = []
    if augment.get("rotation", 0):
        steps.append(v2.RandomRotation(augment["rotation"]))
    jitter = float(augment.get("color_jitter", 0.0))
    if jitter:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 4))
    return steps


class CropFlip:
    """uint8 CHW -> uint8 CHW at `image_size`: RandomResizedCrop (conf/data augment.scale), a horizontal flip with
    probability 0.5 (augment.hflip), then rotation / colour jitter if configured."""

    def __init__(self, image_size: int, augment: dict[str, Any]) -> None:
        self.size = [int(image_size), int(image_size)]
        self.crop = v2.RandomResizedCrop(image_size, scale=tuple(augment.get("scale", (1.0, 1.0))), antialias=True)
        self.hflip = bool(augment.get("hflip", True))
        extra = extra_steps(augment)
        self.extra = v2.Compose(extra) if extra else None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        p = self.crop.make_params([image])  # the draws v2.RandomResizedCrop makes, in its order
        out = F.resized_crop(image, p["top"], p["left"], p["height"], p["width"], self.size, antialias=True)
        if self.hflip and torch.rand(1) < 0.5:  # v2.RandomHorizontalFlip: flips unless rand(1) >= p
            out = F.horizontal_flip(out)
        return self.extra(out) if self.extra is not None else out


class NormalizeBatch:
    """collate_fn: stack (uint8 image, label) samples, then scale to [0, 1] and normalize the whole batch at once."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

    def __call__(self, samples: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        images, labels = default_collate(samples)
        return [F.normalize(F.to_dtype(images, torch.float32, scale=True), self.mean, self.std), labels]


def reference_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], augment: dict[str, Any]
) -> v2.Transform:
    """The same augmentation as one torchvision v2 pipeline per image (float out): what CropFlip + NormalizeBatch
    must equal."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, scale=tuple(augment.get("scale", (1.0, 1.0))), antialias=True)
    ]
    if augment.get("hflip", True):
        steps.append(v2.RandomHorizontalFlip())
    steps += extra_steps(augment)
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
