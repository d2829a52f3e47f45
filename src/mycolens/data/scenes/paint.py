"""Drawing helpers shared by the mushroom renderer and the not-a-mushroom scenes: colours, draws, value noise."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

F32 = np.float32


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB in [0, 1] (float32) of a hue (wrapped) and a saturation and value (clipped to [0, 1])."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), dtype=F32)


def unif(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One uniform draw in [lo, hi) as a Python float."""
    return float(rng.uniform(lo, hi))


def supersample(size: int) -> int:
    """Drawing scale: 2x-4x the output size, then an antialiased downsample."""
    return 4 if size <= 48 else 3 if size <= 96 else 2


def noise(rng: np.random.Generator, R: int, cells: int, octaves: int = 2) -> np.ndarray:
    """Smooth value noise in [0, 1], shape (R, R)."""
    out = np.zeros((R, R), F32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = max(2, cells * 2**o)
        small = Image.fromarray(rng.random((n, n)).astype(F32))
        out += amp * np.asarray(small.resize((R, R), Image.BICUBIC), dtype=F32)
        total += amp
        amp *= 0.5
    return np.clip(out / total, 0.0, 1.0)


def rgb255(c: np.ndarray) -> tuple[int, int, int]:
    """A float RGB colour in [0, 1] as PIL's 0..255 integer triple."""
    c = np.clip(c, 0, 1) * 255
    return int(c[0]), int(c[1]), int(c[2])
