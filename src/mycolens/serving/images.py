"""Image bytes to model-input crops, with the contract's error for every kind of bad image; photos answered in groups."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from mycolens.inference.preprocess import ImageRejected, decode_image, resize_center_crop
from mycolens.serving.errors import ApiError, error_body, from_rejection
from mycolens.serving.settings import Limits

log = logging.getLogger(__name__)
Predict = Callable[[list[np.ndarray], list[int]], Awaitable[list[dict[str, Any]]]]


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


def error_entry(exc: ApiError) -> dict[str, Any]:
    """A bad photo's place in a group's answers (ApiError(**entry["error"]) raises it again in the ingress)."""
    return error_body(exc.code, exc.message, status=exc.status)


async def answer_photos(
    photos: list[bytes], top_ks: list[int], size: int, limits: Limits, pool: Executor, predict: Predict
) -> list[dict[str, Any]]:
    """Decode photos in `pool` (all at once) and answer the good ones with one `predict` call, in order.

    A good photo's entry is predict's result plus its `crop` and `original_size`; a bad one's is error_entry's (the
    contract's 4xx, or 500 if the decoder itself failed).
    """
    loop = asyncio.get_running_loop()
    decoded = await asyncio.gather(
        *(loop.run_in_executor(pool, image_to_crop, p, size, limits) for p in photos), return_exceptions=True
    )
    out: list[dict[str, Any]] = []
    for d in decoded:
        if isinstance(d, asyncio.CancelledError):
            raise d
        if isinstance(d, ApiError):
            out.append(error_entry(d))
        elif isinstance(d, BaseException):  # a decoder bug fails this photo only, not the others of its group
            log.error("decoding a photo failed", exc_info=d)
            out.append(error_entry(ApiError(500, "internal", f"internal error ({d.__class__.__name__})")))
        else:
            out.append({"crop": d[0], "original_size": d[1]})
    good = [entry for entry in out if "crop" in entry]
    if good:
        results = await predict([e["crop"] for e in good], [k for k, e in zip(top_ks, out, strict=True) if "crop" in e])
        for entry, result in zip(good, results, strict=True):
            entry.update(result)
    return out
