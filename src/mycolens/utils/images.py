"""JPEG encoding: the one place image bytes are made (data shards, ingest, feedback, benchmarks)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_jpeg(img: Image.Image | np.ndarray, quality: int, subsampling: int | None = None) -> bytes:
    """Baseline JPEG bytes of a PIL image (made RGB first) or a uint8 HWC RGB array; no EXIF is written.

    `subsampling` None keeps PIL's default chroma subsampling (4:2:0); 0 is 4:4:4.
    """
    pil = Image.fromarray(img) if isinstance(img, np.ndarray) else img if img.mode == "RGB" else img.convert("RGB")
    options = {} if subsampling is None else {"subsampling": subsampling}
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality), **options)
    return buf.getvalue()
