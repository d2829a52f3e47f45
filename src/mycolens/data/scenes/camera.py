"""The camera of the synthetic photos: light, blur, antialiased downsampling and sensor noise."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from mycolens.data.scenes.paint import F32, noise, unif


def finish(canvas: np.ndarray, rng: np.random.Generator, size: int, d: float, ss: int) -> np.ndarray:
    """Light (brightness, colour temperature, dappled shade, vignette), blur, downsample, sensor noise."""
    R = canvas.shape[0]
    img = canvas
    if rng.random() < 0.45 * d + 0.1:
        n = noise(rng, R, int(rng.integers(3, 7)), 2)
        thr = unif(rng, 0.4, 0.6)
        shade = 1.0 - unif(rng, 0.2, 0.4) * np.clip((n - thr) / 0.25 + 0.5, 0, 1)
        img = img * shade[..., None]
    temp = rng.normal(0, 0.05 + 0.06 * d)
    tint = rng.normal(0, 0.02 + 0.02 * d)
    img = img * np.array([1 + temp, 1 + tint, 1 - temp], F32) * unif(rng, 1 - 0.3 * d, 1 + 0.25 * d)
    yy, xx = np.mgrid[0:R, 0:R].astype(F32) / R - 0.5
    img = img * (1.0 - unif(rng, 0.0, 0.5) * (xx * xx + yy * yy))[..., None]
    img = np.clip(img, 0, 1) ** unif(rng, 0.85, 1.15)
    pil = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.55 * d:
        pil = pil.filter(ImageFilter.GaussianBlur(unif(rng, 0.2, 0.9) * ss))
    pil = pil.resize((size, size), Image.LANCZOS)
    out = np.asarray(pil, dtype=F32)
    sigma = unif(rng, 0.0, 9.0 * d)
    if sigma > 0.5:
        out = out + rng.normal(0, sigma, out.shape).astype(F32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
