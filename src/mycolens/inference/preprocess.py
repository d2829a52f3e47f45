"""Image decode and preprocessing shared by ingest, training, evaluation, offline prediction and serving."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")


class ImageRejected(ValueError):
    """An image that cannot be used; `code` says why (empty, truncated, not_image, unsupported, too_large, too_small)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def decode_image(
    data: bytes,
    *,
    max_pixels: int = 40_000_000,
    min_side: int = 1,
    formats: Sequence[str] = ALLOWED_FORMATS,
) -> Image.Image:
    """Decode and verify image bytes to an upright RGB PIL image, or raise ImageRejected."""
    if not data:
        raise ImageRejected("empty", "empty file: zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "?"
            if fmt not in formats:
                raise ImageRejected("unsupported", f"unsupported image type {fmt}; send one of {', '.join(formats)}")
            w, h = img.size
            if w * h > max_pixels:
                raise ImageRejected("too_large", f"image of {w}x{h} pixels is over the limit of {max_pixels}")
            img.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageRejected("too_large", f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageRejected("not_image", "not an image (no known image header)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("truncated", f"corrupt or truncated image: {exc}") from None
    if min(img.size) < min_side:
        raise ImageRejected("too_small", f"image of {img.size[0]}x{img.size[1]} is below the minimum side {min_side}")
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").split()[-1])
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = (arr / max(arr.max(), 1.0) * 255.0).round().astype(np.uint8)
        img = Image.fromarray(arr, "L")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to `size`, center-crop to size x size; uint8 HWC array."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def normalize(batch_hwc: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N,H,W,3) or (H,W,3) to float32 NCHW (or CHW) normalized with per-channel mean/std in [0,1] units."""
    x = np.asarray(batch_hwc, dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def load_for_model(
    data: bytes, size: int, mean: Sequence[float], std: Sequence[float], max_pixels: int = 40_000_000
) -> np.ndarray:
    """Bytes to the model's float32 CHW input (decode, EXIF, RGB, resize, crop, normalize)."""
    return normalize(resize_center_crop(decode_image(data, max_pixels=max_pixels), size), mean, std)
