"""Synthetic not-a-mushroom photos: ground, sky, bark, stones, shapes, stripes, noise, ... (no mushroom drawn)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from mycolens.data.scenes.camera import finish
from mycolens.data.scenes.ground import BACKGROUNDS, background
from mycolens.data.scenes.paint import F32, hsv, noise, rgb255, supersample, unif

OOD_KINDS = (
    "texture",
    "sky",
    "leaves",
    "grass",
    "moss",
    "stones",
    "shapes",
    "noise",
    "bare",
    "bark",
    "stripes",
    "plain",
)


def render_ood(rng: np.random.Generator, size: int, difficulty: float = 1.0) -> np.ndarray:
    """A photo that is not a mushroom (texture, sky, bare ground, stones, shapes, noise, bark, ...); uint8 HWC."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    ss = supersample(size)
    R = size * ss
    kind = OOD_KINDS[int(rng.integers(len(OOD_KINDS)))]
    if kind in ("leaves", "grass", "moss", "bare"):
        bg = {"leaves": "forest", "grass": "grass", "moss": "moss"}.get(kind)
        img, _ = background(rng, R, d, bg or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])
    elif kind == "texture":
        c1, c2 = (hsv(unif(rng, 0, 1), unif(rng, 0, 1), unif(rng, 0.2, 1)) for _ in range(2))
        n = noise(rng, R, int(rng.integers(4, 40)), 3)[..., None]
        img = c1 * (1 - n) + c2 * n
    elif kind == "sky":
        top, bottom = hsv(unif(rng, 0.55, 0.65), unif(rng, 0.4, 0.8), unif(rng, 0.6, 0.9)), hsv(0.58, 0.15, 0.95)
        t = np.linspace(0, 1, R, dtype=F32)[:, None, None]
        img = top * (1 - t) + bottom * t + np.zeros((1, R, 1), F32)
        clouds = np.clip((noise(rng, R, int(rng.integers(3, 8)), 3) - unif(rng, 0.4, 0.65)) * 4, 0, 1)[..., None]
        img = img * (1 - clouds) + np.array([0.95, 0.95, 0.97], F32) * clouds
    elif kind == "stones":
        img = hsv(unif(rng, 0.05, 0.15), unif(rng, 0.0, 0.2), unif(rng, 0.3, 0.6)) * (
            0.7 + 0.6 * noise(rng, R, R // 8, 1)[..., None]
        )
        pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(5, 25))):
            x, y, r = unif(rng, 0, R), unif(rng, 0, R), R * unif(rng, 0.04, 0.16)
            g = hsv(unif(rng, 0.0, 0.15), unif(rng, 0.0, 0.25), unif(rng, 0.35, 0.85))
            draw.ellipse([x - r, y - r * 0.7, x + r, y + r * 0.7], fill=rgb255(g * 0.7))
            draw.ellipse([x - r * 0.9, y - r * 0.7, x + r * 0.8, y + r * 0.5], fill=rgb255(g))
        img = np.asarray(pil, dtype=F32) / 255.0
    elif kind == "shapes":
        pil = Image.new("RGB", (R, R), rgb255(hsv(unif(rng, 0, 1), unif(rng, 0, 0.6), unif(rng, 0.3, 1))))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(2, 9))):
            col = rgb255(hsv(unif(rng, 0, 1), unif(rng, 0.3, 1), unif(rng, 0.3, 1)))
            x0, y0 = unif(rng, -0.1, 0.9) * R, unif(rng, -0.1, 0.9) * R
            w, h = unif(rng, 0.1, 0.6) * R, unif(rng, 0.1, 0.6) * R
            shape = int(rng.integers(3))
            if shape == 0:
                draw.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
            elif shape == 1:
                draw.ellipse([x0, y0, x0 + w, y0 + h], fill=col)
            else:
                draw.polygon([(x0, y0 + h), (x0 + w / 2, y0), (x0 + w, y0 + h)], fill=col)
        img = np.asarray(pil, dtype=F32) / 255.0
    elif kind == "noise":
        n = int(rng.integers(4, R + 1))
        small = Image.fromarray((rng.random((n, n, 3)) * 255).astype(np.uint8))
        img = np.asarray(small.resize((R, R), Image.NEAREST if rng.random() < 0.5 else Image.BILINEAR), F32) / 255
    elif kind == "bark":
        base = hsv(unif(rng, 0.05, 0.12), unif(rng, 0.1, 0.5), unif(rng, 0.2, 0.5))
        xs = np.linspace(0, 1, R, dtype=F32)[None, :]
        n = noise(rng, R, 6, 2)
        stripes = 0.5 + 0.5 * np.sin(xs * unif(rng, 20, 60) + 6 * n)
        img = base * (0.5 + 0.8 * stripes[..., None] * (0.7 + 0.6 * noise(rng, R, 20, 1)[..., None]))
    elif kind == "stripes":
        yy, xx = np.mgrid[0:R, 0:R].astype(F32) / R
        a = unif(rng, 0, math.pi)
        s = 0.5 + 0.5 * np.sin((xx * math.cos(a) + yy * math.sin(a)) * unif(rng, 6, 40))
        c1, c2 = (
            hsv(unif(rng, 0, 1), unif(rng, 0, 1), unif(rng, 0.2, 1)),
            hsv(unif(rng, 0, 1), unif(rng, 0, 1), unif(rng, 0.2, 1)),
        )
        img = c1 * s[..., None] + c2 * (1 - s[..., None])
    else:  # plain: a flat colour with a gentle gradient
        c = hsv(unif(rng, 0, 1), unif(rng, 0, 0.8), unif(rng, 0.1, 1))
        t = np.linspace(-1, 1, R, dtype=F32)[:, None, None] * unif(rng, -0.15, 0.15)
        img = c * (1 + t) + np.zeros((1, R, 1), F32)
    return finish(np.clip(np.asarray(img, dtype=F32), 0, 1), rng, size, d, ss)
