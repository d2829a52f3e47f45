"""Training augmentation (mycolens.data.augment): per image on uint8, normalized per batch, equal to torchvision's
one-pipeline-per-image version draw for draw and pixel for pixel, in memory and streamed."""

from __future__ import annotations

import pytest
import torch

from mycolens.data.augment import CropFlip, NormalizeBatch, reference_transform
from mycolens.training.run import build_datamodule

MEAN, STD = [0.45, 0.42, 0.35], [0.25, 0.24, 0.23]


@pytest.mark.parametrize(
    "augment",
    [
        {"hflip": True, "scale": [0.8, 1.0]},  # conf/data's default
        {"hflip": False, "scale": [0.08, 1.0]},
        {"hflip": True, "scale": [0.5, 1.0], "rotation": 15, "color_jitter": 0.2},
    ],
)
def test_crop_flip_then_batch_normalize_equals_the_per_image_v2_pipeline(augment):
    gen = torch.Generator().manual_seed(3)
    images = [torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=gen) for _ in range(24)]
    labels = [torch.tensor(i % 14) for i in range(24)]
    torch.manual_seed(11)
    reference = torch.stack([reference_transform(32, MEAN, STD, augment)(im) for im in images])
    after = torch.rand(1)  # the RNG's state after the pipeline's draws
    torch.manual_seed(11)
    crop = CropFlip(32, augment)
    x, y = NormalizeBatch(MEAN, STD)([(crop(im), lab) for im, lab in zip(images, labels, strict=True)])
    assert torch.rand(1) == after  # the same number of draws, so every later draw (dropout, ...) is unchanged
    assert x.dtype == torch.float32 and x.shape == (24, 3, 32, 32)
    assert torch.equal(x, reference)
    assert torch.equal(y, torch.stack(labels))


@pytest.mark.parametrize("cache_max_gb", [4.0, 0.0])  # in memory, streamed
def test_training_batches_are_normalized_floats_and_validation_batches_unchanged(make_cfg, cache_max_gb):
    dm = build_datamodule(make_cfg(f"data.cache_max_gb={cache_max_gb}"))
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape[1:] == (3, dm.hparams.image_size, dm.hparams.image_size)
    assert y.dtype == torch.long and len(x) == len(y)
    lo = min((0 - m) / s for m, s in zip(dm.mean, dm.std, strict=True))
    hi = max((1 - m) / s for m, s in zip(dm.mean, dm.std, strict=True))
    assert lo - 1e-5 <= float(x.min()) and float(x.max()) <= hi + 1e-5  # scaled to [0, 1], then normalized
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.dtype == torch.float32 and xv.shape[1:] == x.shape[1:]
