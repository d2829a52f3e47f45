"""Image bytes to model-input crops, with the contract's error for every kind of bad image; photos answered in groups."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from mycolens.inference.preprocess import ImageRejected, decode_image, resize_center_crop
from mycolens.serving.errors import ApiError, from_rejection
from mycolens.serving.settings import Limits

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
    return {"error": {"status": exc.status, "code": exc.code, "message": exc.message}}


async def answer_photos(
    photos: list[bytes], top_ks: list[int], size: int, limits: Limits, pool: Executor, predict: Predict
) -> list[dict[str, Any]]:
    """Decode photos in `pool` (all at once) and answer the good ones with one `predict` call, in order.

    A good photo's entry is predict's result plus its `crop` and `original_size`; a bad one's is error_entry's.
    """
    loop = asyncio.get_running_loop()
    decoded = await asyncio.gather(
        *(loop.run_in_executor(pool, image_to_crop, p, size, limits) for p in photos), return_exceptions=True
    )
    for d in decoded:
        if isinstance(d, BaseException) and not isinstance(d, ApiError):
            raise d
    good = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
    results = iter(await predict([decoded[i][0] for i in good], [top_ks[i] for i in good]) if good else [])
    out = []
    for d in decoded:
        if isinstance(d, ApiError):
            out.append(error_entry(d))
        else:
            out.append({**next(results), "crop": d[0], "original_size": d[1]})
    return out
