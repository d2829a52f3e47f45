"""Procedural not-a-mushroom families: for outlier exposure in training and, held out, as OOD test sets.

Families: `synthetic` (the generator's own scenes and graphics: ground, sky, bark, stones, shapes, stripes,
noise), `fractals` (Julia sets), `periodic` (checkerboards, grids, dot lattices, plaids) and `text` (print and
handwriting-like strokes on paper). Each image may then be turned greyscale or colour-jittered. Every image has
its own RNG from (seed, family, index), so the same arguments give the same pixels.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mycolens.data.scenes.ood import render_ood

FAMILY_STREAM = 7  # SeedSequence domain tag, distinct from the specimen and OOD-split streams


def _colour(
    rng: np.random.Generator, s: tuple[float, float] = (0.2, 1.0), v: tuple[float, float] = (0.2, 1.0)
) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*s), rng.uniform(*v))
    return int(r * 255), int(g * 255), int(b * 255)


def _camera(img: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    """Downsample to the output size with a little blur and sensor noise, like a photo of the thing."""
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    out = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)
    sigma = rng.uniform(0.0, 6.0)
    if sigma > 0.5:
        out = out + rng.normal(0, sigma, out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def render_fractal(rng: np.random.Generator, size: int) -> np.ndarray:
    """A coloured Julia set at a random c, zoom, centre and palette."""
    R = size * 2
    zoom, cx, cy = rng.uniform(0.4, 1.6), rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)
    ang = rng.uniform(0, math.pi)
    c = complex(*(0.7885 * np.array([math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a)])))
    ys, xs = np.mgrid[-1 : 1 : R * 1j, -1 : 1 : R * 1j]
    z = (
        (xs * math.cos(ang) - ys * math.sin(ang)) / zoom
        + cx
        + 1j * ((xs * math.sin(ang) + ys * math.cos(ang)) / zoom + cy)
    )
    count = np.zeros(z.shape, np.float32)
    alive = np.ones(z.shape, bool)
    for _ in range(40):
        z[alive] = z[alive] ** 2 + c
        alive &= np.abs(z) < 4
        count += alive
    t = count / 40.0
    h0, dh = rng.uniform(0, 1), rng.uniform(0.3, 2.0)
    hsv = np.stack(
        [(h0 + dh * t) % 1.0, np.full_like(t, rng.uniform(0.5, 1.0)), 0.15 + 0.85 * t ** rng.uniform(0.4, 1.0)], -1
    )
    rgb = np.asarray(Image.fromarray((hsv * 255).astype(np.uint8), "HSV").convert("RGB"))
    return _camera(Image.fromarray(rgb), rng, size)


def render_periodic(rng: np.random.Generator, size: int) -> np.ndarray:
    """A checkerboard, grid, dot lattice or plaid in two or three colours, at a random period and angle."""
    R = size * 2
    period = rng.uniform(0.06, 0.3) * R
    ang = rng.uniform(0, math.pi / 2) if rng.random() < 0.6 else 0.0
    ys, xs = np.mgrid[0:R, 0:R].astype(np.float32)
    u = (xs * math.cos(ang) + ys * math.sin(ang)) / period
    v = (-xs * math.sin(ang) + ys * math.cos(ang)) / period
    kind = int(rng.integers(4))
    if kind == 0:
        mask = (np.floor(u) + np.floor(v)) % 2
    elif kind == 1:
        w = rng.uniform(0.05, 0.3)
        mask = ((u % 1 < w) | (v % 1 < w)).astype(np.float32)
    elif kind == 2:
        mask = (((u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2) < rng.uniform(0.04, 0.2)).astype(np.float32)
    else:
        mask = 0.5 * ((u % 1 < 0.5).astype(np.float32) + (v % 1 < 0.5).astype(np.float32))
    c1, c2 = (np.array(_colour(rng), np.float32) for _ in range(2))
    img = c1 * (1 - mask[..., None]) + c2 * mask[..., None]
    return _camera(Image.fromarray(img.astype(np.uint8)), rng, size)


_GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,;:!?-"


def render_text(rng: np.random.Generator, size: int) -> np.ndarray:
    """Lines of print or handwriting-like strokes in ink on paper."""
    R = size * 4
    paper = _colour(rng, s=(0.0, 0.15), v=(0.8, 1.0))
    ink = _colour(rng, s=(0.0, 0.8), v=(0.0, 0.4))
    img = Image.new("RGB", (R, R), paper)
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5:
        font = ImageFont.load_default(size=int(rng.uniform(0.08, 0.25) * R))
        y = rng.uniform(-0.05, 0.1) * R
        while y < R:
            line = "".join(_GLYPHS[int(i)] for i in rng.integers(len(_GLYPHS), size=int(rng.integers(4, 20))))
            draw.text((rng.uniform(-0.1, 0.1) * R, y), line, fill=ink, font=font)
            y += font.size * rng.uniform(1.1, 1.6)
    else:
        for _ in range(int(rng.integers(1, 12))):
            pts = (
                np.cumsum(rng.normal(0, R * 0.06, (int(rng.integers(4, 14)), 2)), axis=0) + rng.uniform(0.1, 0.9, 2) * R
            )
            draw.line([tuple(p) for p in pts], fill=ink, width=max(1, int(rng.uniform(0.01, 0.04) * R)), joint="curve")
    return _camera(img, rng, size)


FAMILIES = {
    "synthetic": render_ood,
    "fractals": render_fractal,
    "periodic": render_periodic,
    "text": render_text,
}


def greyscale(img: np.ndarray) -> np.ndarray:
    """The same image in grey (three equal channels)."""
    return np.repeat(np.asarray(Image.fromarray(img).convert("L"))[..., None], 3, axis=2)


def jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hue rotation with saturation and contrast changes."""
    hsv = np.asarray(Image.fromarray(img).convert("HSV"), dtype=np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 255)) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.6), 0, 255)
    rgb = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"), dtype=np.float32)
    rgb = (rgb - rgb.mean()) * rng.uniform(0.6, 1.4) + rgb.mean()
    return np.clip(rgb, 0, 255).astype(np.uint8)


def render_outliers(
    families: Sequence[str],
    n: int,
    size: int,
    seed: int,
    greyscale_share: float = 0.0,
    jitter_share: float = 0.0,
) -> np.ndarray:
    """`n` uint8 NHWC images, cycling through `families`; a share of them greyscale or colour-jittered."""
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown or not families:
        raise ValueError(f"unknown outlier families {unknown or families}; use some of {', '.join(FAMILIES)}")
    out = np.zeros((int(n), int(size), int(size), 3), np.uint8)
    for i in range(int(n)):
        family = families[i % len(families)]
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), FAMILY_STREAM, list(FAMILIES).index(family), i]))
        img = FAMILIES[family](rng, int(size))
        u = rng.random()
        if u < greyscale_share:
            img = greyscale(img)
        elif u < greyscale_share + jitter_share:
            img = jitter(img, rng)
        out[i] = img
    return out
