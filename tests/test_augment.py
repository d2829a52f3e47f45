"""Training augmentation (mycolens.data.augment): per image on uint8, normalized per batch. In memory it equals
torchvision's one-pipeline-per-image version draw for draw and pixel for pixel; streamed, the same crop is drawn on
the photo's centre square and cut from the decoded photo in one resample."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from mycolens.data.augment import CropFlip, NormalizeBatch, PhotoCropFlip, crop_box, reference_transform
from mycolens.inference.preprocess import decode_image, resize_center_crop
from mycolens.training.run import build_datamodule
from mycolens.utils.images import encode_jpeg

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
def test_training_batches_reach_the_model_as_normalized_floats(make_cfg, cache_max_gb):
    """As the model gets them: after the data module's on_after_batch_transfer (a streamed loader's batch is uint8
    until then)."""
    dm = build_datamodule(make_cfg(f"data.cache_max_gb={cache_max_gb}"))
    dm.setup("fit")
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.dtype == torch.float32 and x.shape[1:] == (3, dm.hparams.image_size, dm.hparams.image_size)
    assert y.dtype == torch.long and len(x) == len(y)
    lo = min((0 - m) / s for m, s in zip(dm.mean, dm.std, strict=True))
    hi = max((1 - m) / s for m, s in zip(dm.mean, dm.std, strict=True))
    assert lo - 1e-5 <= float(x.min()) and float(x.max()) <= hi + 1e-5  # scaled to [0, 1], then normalized
    xv, _ = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert xv.dtype == torch.float32 and xv.shape[1:] == x.shape[1:]


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A decoded JPEG with smooth content (a real photo's kind of detail, not noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)  # a few features per side, as at 64 px
    smooth = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    return decode_image(encode_jpeg(smooth, 90))


def test_streamed_crop_boxes_are_drawn_as_random_resized_crop_draws_them():
    draw = random.Random(5)
    boxes = [crop_box(64, (0.3, 1.0), draw) for _ in range(2000)]
    for top, left, h, w in boxes:
        assert 0 <= top <= 64 - h and 0 <= left <= 64 - w
        assert 0.3 * 64 * 64 * 0.9 <= h * w <= 64 * 64 and 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05  # sizes are rounded
    # the same distribution as torchvision's own draws (area share, aspect ratio, position)
    torch.manual_seed(5)
    square = torch.zeros(3, 64, 64)
    theirs = [v2.RandomResizedCrop.get_params(square, [0.3, 1.0], [3 / 4, 4 / 3]) for _ in range(2000)]

    def stats(bs):
        a = np.array(bs, dtype=float)
        return np.array([(a[:, 2] * a[:, 3]).mean() / 64**2, (a[:, 3] / a[:, 2]).mean(), a[:, 0].mean() / 64])

    assert np.allclose(stats(boxes), stats(theirs), atol=0.02), (stats(boxes), stats(theirs))
    assert len(set(boxes)) > 1500  # spread over the range, not a few boxes
    assert crop_box(64, (0.3, 1.0), random.Random(5)) == boxes[0]  # seeded: the same draws
    assert crop_box(64, (1.0, 1.0), random.Random(5)) == (0, 0, 64, 64)  # the whole square


def test_a_streamed_photo_at_full_scale_is_the_centre_crop_evaluation_sees():
    no_flip = PhotoCropFlip(32, {"hflip": False, "scale": [1.0, 1.0]})
    square = photo(32, 32, 1)
    expected = torch.from_numpy(resize_center_crop(square, 32).copy()).permute(2, 0, 1)
    assert torch.equal(no_flip(square, random.Random(0)), expected)  # the image as stored: not resampled
    # a larger, non-square photo: its centre square, resized in one step (serving's resize-then-crop sees the same
    # square up to its whole-pixel crop offset)
    wide = photo(200, 120, 2)
    once = no_flip(wide, random.Random(0)).float()
    square_of_wide = wide.crop((40, 0, 160, 120)).resize((32, 32), Image.Resampling.BILINEAR)
    assert once.shape == (3, 32, 32)
    assert (once - torch.from_numpy(np.array(square_of_wide)).permute(2, 0, 1).float()).abs().mean() < 1
    flipping = PhotoCropFlip(32, {"hflip": True, "scale": [1.0, 1.0]})
    draw = random.Random(1)
    outs = [flipping(square, draw) for _ in range(40)]
    flipped = [torch.equal(o, expected.flip(-1)) for o in outs]
    assert all(f or torch.equal(o, expected) for f, o in zip(flipped, outs, strict=True)) and 8 < sum(flipped) < 32


def test_a_streamed_crop_shows_the_part_of_the_photo_its_box_names():
    """scale < 1 zooms in: the crop of a large photo matches the same box cut from the photo's centre square."""
    big = photo(256, 192, 3)
    crop = PhotoCropFlip(64, {"hflip": False, "scale": [0.25, 0.5]})
    top, left, h, w = crop_box(64, (0.25, 0.5), random.Random(7))
    out = crop(big, random.Random(7)).float()
    f = 192 / 64  # photo pixels per output pixel of the centre square
    x0 = (256 - 192) / 2
    box = (x0 + left * f, top * f, x0 + (left + w) * f, (top + h) * f)
    expected = np.array(big.crop(tuple(round(v) for v in box)).resize((64, 64), Image.Resampling.BILINEAR))
    assert (out - torch.from_numpy(expected).permute(2, 0, 1).float()).abs().mean() < 2  # box rounded to pixels
