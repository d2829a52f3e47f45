"""Image bytes to the model-input crop (uint8 HWC), with the contract's error for every kind of bad image."""

from __future__ import annotations

import numpy as np

from mycolens.inference.preprocess import ImageRejected, decode_image, resize_center_crop
from mycolens.serving.errors import from_rejection
from mycolens.serving.settings import Limits


def image_to_crop(data: bytes, size: int, limits: Limits) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode (EXIF-upright RGB), resize the shorter side and center-crop to size x size; also the photo's (w, h).

    Raises ApiError with the contract's status for every kind of bad image.
    """
    try:
        img = decode_image(data, max_pixels=limits.max_pixels, min_side=limits.min_side)
        return resize_center_crop(img, size), img.size
    except ImageRejected as exc:
        raise from_rejection(exc) from None
    except MemoryError:
        raise from_rejection(ImageRejected("too_large", "image too large to decode")) from None
