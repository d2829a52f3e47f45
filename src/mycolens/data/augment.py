"""Training augmentation in two parts: per image on uint8 (random resized crop, flip, optional rotation and colour
jitter), then one float conversion and normalization per batch (`normalize_images`): in the DataLoader's collate in
memory, on the batch's device after transfer when streamed.

In memory (`CropFlip`), the images are held decoded at `image_size` and the result is the same, pixel for pixel and
random draw for random draw, as torchvision's v2.Compose([RandomResizedCrop, RandomHorizontalFlip, ..., ToDtype,
Normalize]) applied per image (`reference_transform`, which the tests compare against).
Streamed (`PhotoCropFlip`), each photo is decoded in a DataLoader worker: the crop is drawn the same way on the
photo's centre square and cut and resized from the decoded photo in one PIL call, so a photo is resampled once (not
resized to `image_size` and then again for the crop) and the per-image tensor dispatch is skipped; the workers
hand over uint8 batches.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
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


RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range


def crop_box(side: int, scale: Sequence[float], draw: Any = random) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random resized crop of a `side` x `side` square, drawn as torchvision's
    RandomResizedCrop.get_params draws it (area share in `scale`, aspect ratio in 3/4..4/3, 10 tries, then the
    centre), from `draw` (a random.Random, or the `random` module itself)."""
    area, log_lo, log_hi = side * side, math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        target = area * draw.uniform(scale[0], scale[1])
        aspect = math.exp(draw.uniform(log_lo, log_hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= side and 0 < h <= side:
            return draw.randint(0, side - h), draw.randint(0, side - w), h, w
    return 0, 0, side, side  # a square's own ratio (1) is always in range: the whole square


class PhotoCropFlip:
    """Streamed training: a decoded photo (PIL RGB, any size) -> uint8 CHW at `image_size`, resampled once.

    The crop is drawn on the photo's centre square in `image_size` pixels (what the in-memory path holds), mapped
    back to the photo, and cut and resized in one bilinear `Image.resize(box=...)`; then the flip and the optional
    extra steps. Draws come from Python's `random`, which PyTorch seeds in every DataLoader worker and Lightning's
    seed_everything in the main process, so a seeded run is repeatable."""

    def __init__(self, image_size: int, augment: dict[str, Any]) -> None:
        self.size = int(image_size)
        self.scale = tuple(float(s) for s in augment.get("scale", (1.0, 1.0)))
        self.hflip = bool(augment.get("hflip", True))
        extra = extra_steps(augment)
        self.extra = v2.Compose(extra) if extra else None

    def __call__(self, photo: Image.Image, draw: Any = random) -> torch.Tensor:
        top, left, h, w = crop_box(self.size, self.scale, draw)
        width, height = photo.size
        side = min(width, height)
        f, x0, y0 = side / self.size, (width - side) / 2, (height - side) / 2
        box = (x0 + left * f, y0 + top * f, x0 + (left + w) * f, y0 + (top + h) * f)
        pixels = np.asarray(photo.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box, reducing_gap=None))
        if self.hflip and draw.random() < 0.5:
            pixels = pixels[:, ::-1]
        # one copy to contiguous CHW: the collate then stacks plain blocks
        image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        return self.extra(image) if self.extra is not None else image


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NCHW -> float32 scaled to [0, 1] and normalized per channel, on the images' device."""
    return F.normalize(F.to_dtype(images, torch.float32, scale=True), list(mean), list(std))


class NormalizeBatch:
    """collate_fn: stack (uint8 image, label) samples, then scale to [0, 1] and normalize the whole batch at once."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

    def __call__(self, samples: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        images, labels = default_collate(samples)
        return [normalize_images(images, self.mean, self.std), labels]


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
