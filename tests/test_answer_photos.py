"""A group of photos in the model deployment: decoded together, good ones answered in one model call, bad ones
answered with their contract error, in order (mycolens.serving.images.answer_photos)."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mycolens.serving import images
from mycolens.serving.errors import ApiError
from mycolens.serving.images import answer_photos
from mycolens.serving.settings import Limits

LIMITS = Limits(max_body_bytes=1 << 20, max_pixels=4_000_000, min_side=8, max_top_k=5, default_top_k=3, max_v2_batch=8)


def jpeg(w: int, h: int, value: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, fmt)
    return buf.getvalue()


def test_good_and_bad_photos_keep_their_order_and_good_ones_share_one_model_call() -> None:
    calls: list[tuple[list[np.ndarray], list[int]]] = []

    async def predict(crops: list[np.ndarray], top_ks: list[int]) -> list[dict[str, Any]]:
        calls.append((crops, top_ks))
        return [{"answer": {"mean": float(c.mean())}, "k": k} for c, k in zip(crops, top_ks, strict=True)]

    photos = [jpeg(120, 80, 40), b"not an image", jpeg(4, 4, 0), jpeg(60, 90, 200)]
    with ThreadPoolExecutor(2) as pool:
        out = asyncio.run(answer_photos(photos, [1, 2, 3, 4], 32, LIMITS, pool, predict))

    assert len(calls) == 1 and calls[0][1] == [1, 4]  # the two good photos, one call
    assert all(c.shape == (32, 32, 3) and c.dtype == np.uint8 for c in calls[0][0])
    assert out[0]["k"] == 1 and out[0]["original_size"] == (120, 80) and out[0]["crop"].shape == (32, 32, 3)
    assert out[3]["k"] == 4 and out[3]["original_size"] == (60, 90) and abs(out[3]["answer"]["mean"] - 200) < 3
    assert out[1]["error"]["status"] == 400 and out[1]["error"]["code"] == "not_image"
    assert out[2]["error"]["status"] == 422 and out[2]["error"]["code"] == "too_small"
    err = ApiError(**out[1]["error"])  # the ingress raises it again as the contract's JSON error
    assert (err.status, err.code) == (400, "not_image")


def test_a_group_of_bad_photos_never_calls_the_model_and_model_errors_propagate() -> None:
    async def predict(crops: list[np.ndarray], top_ks: list[int]) -> list[dict[str, Any]]:
        raise AssertionError("no good photo, no model call")

    with ThreadPoolExecutor(1) as pool:
        out = asyncio.run(answer_photos([b"", jpeg(40, 40, 9, "GIF")], [1, 1], 32, LIMITS, pool, predict))
        assert [e["error"]["status"] for e in out] == [400, 415]

        async def broken(crops: list[np.ndarray], top_ks: list[int]) -> list[dict[str, Any]]:
            raise RuntimeError("model crashed")

        with pytest.raises(RuntimeError, match="model crashed"):
            asyncio.run(answer_photos([jpeg(50, 50, 1)], [1], 32, LIMITS, pool, broken))


def test_a_decoder_failure_fails_that_photo_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = images.image_to_crop

    def flaky(data: bytes, size: int, limits: Limits) -> Any:
        if data == b"boom":
            raise ValueError("decoder bug")
        return real(data, size, limits)

    async def predict(crops: list[np.ndarray], top_ks: list[int]) -> list[dict[str, Any]]:
        return [{"k": k} for k in top_ks]

    monkeypatch.setattr(images, "image_to_crop", flaky)
    with ThreadPoolExecutor(2) as pool:
        out = asyncio.run(
            answer_photos([jpeg(50, 50, 1), b"boom", jpeg(50, 50, 2)], [1, 2, 3], 32, LIMITS, pool, predict)
        )
    assert out[0]["k"] == 1 and out[2]["k"] == 3
    assert out[1] == {"error": {"status": 500, "code": "internal", "message": "internal error (ValueError)"}}
