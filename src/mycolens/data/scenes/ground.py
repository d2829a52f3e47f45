"""Grounds the synthetic photos are taken on: forest floor with leaves, needle litter, grass or moss."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from mycolens.data.scenes.paint import F32, hsv, noise, rgb255, unif

BACKGROUNDS = ("forest", "needles", "grass", "moss")


def leaf_polygon(cx: float, cy: float, length: float, width: float, angle: float) -> list[tuple[float, float]]:
    """Outline of a leaf centred at (cx, cy), `length` long and `width` wide, turned by `angle` radians."""
    pts = []
    ca, sa = math.cos(angle), math.sin(angle)
    for s in np.linspace(0, 1, 9):
        lx, ly = length * (s - 0.5), 0.5 * width * math.sin(math.pi * s) ** 0.8
        pts.append((lx, ly))
    for s in np.linspace(1, 0, 9)[1:-1]:
        lx, ly = length * (s - 0.5), -0.5 * width * math.sin(math.pi * s) ** 0.8
        pts.append((lx, ly))
    return [(cx + lx * ca - ly * sa, cy + lx * sa + ly * ca) for lx, ly in pts]


LEAF_COLOURS = [(0.07, 0.65, 0.45), (0.09, 0.7, 0.6), (0.11, 0.75, 0.75), (0.05, 0.6, 0.35), (0.03, 0.7, 0.5),
                 (0.13, 0.55, 0.7), (0.08, 0.35, 0.3), (0.15, 0.5, 0.5), (0.02, 0.55, 0.28)]  # fmt: skip


def _draw_leaves(draw: ImageDraw.ImageDraw, rng: np.random.Generator, R: int, n: int, big: float = 1.0) -> None:
    for _ in range(n):
        h, s, v = LEAF_COLOURS[int(rng.integers(len(LEAF_COLOURS)))]
        col = hsv(h + rng.normal(0, 0.01), s * unif(rng, 0.8, 1.1), v * unif(rng, 0.6, 1.15))
        length = R * unif(rng, 0.07, 0.2) * big
        poly = leaf_polygon(unif(rng, -0.1, 1.1) * R, unif(rng, -0.1, 1.1) * R, length, length * unif(rng, 0.35, 0.6),
                             unif(rng, 0, 2 * math.pi))  # fmt: skip
        draw.polygon(poly, fill=rgb255(col))
        (ax, ay), (bx, by) = poly[0], poly[8]
        draw.line([(ax, ay), (bx, by)], fill=rgb255(col * 0.75), width=max(1, R // 160))


def _draw_lines(draw, rng, R, n, hsv_choices, length, width, vertical=False):
    for _ in range(n):
        h, s, v = hsv_choices[int(rng.integers(len(hsv_choices)))]
        col = rgb255(hsv(h + rng.normal(0, 0.01), s * unif(rng, 0.8, 1.1), v * unif(rng, 0.6, 1.2)))
        x, y = unif(rng, 0, R), unif(rng, 0, R * 1.1)
        ln = R * unif(rng, *length)
        ang = -math.pi / 2 + rng.normal(0, 0.35) if vertical else unif(rng, 0, math.pi)
        bend = rng.normal(0, 0.25)
        pts = [(x, y)]
        for i in range(1, 4):
            a = ang + bend * i / 3
            x, y = x + ln / 3 * math.cos(a), y + ln / 3 * math.sin(a)
            pts.append((x, y))
        draw.line(pts, fill=col, width=max(1, int(round(width * R / 192 * unif(rng, 0.7, 1.3)))))


_GRASS = [(0.22, 0.7, 0.55), (0.25, 0.65, 0.45), (0.28, 0.6, 0.6), (0.19, 0.6, 0.65), (0.14, 0.45, 0.75),
          (0.3, 0.55, 0.35)]  # fmt: skip
_NEEDLES = [(0.06, 0.7, 0.5), (0.07, 0.6, 0.4), (0.05, 0.75, 0.6), (0.08, 0.5, 0.3)]
_TWIGS = [(0.07, 0.4, 0.25), (0.08, 0.2, 0.35), (0.06, 0.5, 0.2)]


def background(rng: np.random.Generator, R: int, d: float, kind: str | None = None) -> tuple[np.ndarray, str]:
    """A ground (forest floor with leaves, needle litter, grass or moss) as float RGB (R,R,3) and its kind."""
    kind = kind or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    clutter = 0.35 + 0.65 * d
    n1, n2 = noise(rng, R, int(rng.integers(3, 7)), 3), noise(rng, R, int(rng.integers(8, 16)), 2)
    if kind in ("forest", "needles"):
        base = hsv(unif(rng, 0.04, 0.11), unif(rng, 0.3, 0.65), unif(rng, 0.18, 0.42))
        alt = hsv(unif(rng, 0.05, 0.12), unif(rng, 0.2, 0.6), unif(rng, 0.15, 0.5))
    elif kind == "grass":
        base = hsv(unif(rng, 0.18, 0.3), unif(rng, 0.45, 0.8), unif(rng, 0.2, 0.45))
        alt = hsv(unif(rng, 0.12, 0.25), unif(rng, 0.35, 0.7), unif(rng, 0.25, 0.55))
    else:
        base = hsv(unif(rng, 0.17, 0.28), unif(rng, 0.5, 0.9), unif(rng, 0.25, 0.55))
        alt = hsv(unif(rng, 0.14, 0.3), unif(rng, 0.4, 0.85), unif(rng, 0.15, 0.5))
    mix = n1[..., None]
    img = base * (1 - mix) + alt * mix
    img = img * (0.65 + 0.7 * n2[..., None])
    if kind == "moss":
        fine = noise(rng, R, R // 6, 1)
        img = img * (0.6 + 0.7 * fine[..., None])
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    if kind == "forest":
        _draw_leaves(draw, rng, R, int(rng.integers(8, 30) * clutter))
        _draw_lines(draw, rng, R, int(rng.integers(5, 40) * clutter), _NEEDLES, (0.04, 0.1), 1.5)
    elif kind == "needles":
        _draw_lines(draw, rng, R, int(rng.integers(60, 160) * clutter), _NEEDLES, (0.05, 0.12), 1.6)
        _draw_leaves(draw, rng, R, int(rng.integers(0, 6) * clutter), big=0.8)
    elif kind == "grass":
        _draw_lines(draw, rng, R, int(rng.integers(80, 220) * clutter), _GRASS, (0.08, 0.25), 2.2, vertical=True)
        _draw_leaves(draw, rng, R, int(rng.integers(0, 5) * clutter), big=0.7)
    else:
        for _ in range(int(rng.integers(10, 60) * clutter)):
            x, y, r = unif(rng, 0, R), unif(rng, 0, R), R * unif(rng, 0.004, 0.012)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=rgb255(hsv(unif(rng, 0.12, 0.3), 0.6, unif(rng, 0.4, 0.8))))
    if rng.random() < 0.5 * clutter:
        _draw_lines(draw, rng, R, int(rng.integers(1, 4)), _TWIGS, (0.15, 0.45), 4.5)
    out = np.asarray(pil, dtype=F32) / 255.0
    if rng.random() < 0.55:  # a blurred far background (trees, light) above a horizon, as in low-angle photos
        hz = unif(rng, 0.12, 0.42) * R
        far = hsv(unif(rng, 0.08, 0.35), unif(rng, 0.2, 0.6), unif(rng, 0.1, 0.45))
        far_img = far * (0.5 + 1.0 * noise(rng, R, int(rng.integers(2, 6)), 2)[..., None])
        if rng.random() < 0.5:
            glow = np.clip((noise(rng, R, 5, 1) - 0.55) / 0.2, 0, 1)[..., None]  # light through the canopy
            far_img = far_img + 0.35 * glow * hsv(unif(rng, 0.1, 0.2), 0.3, 1.0)
        ys = np.arange(R, dtype=F32)[:, None, None]
        t = np.clip((ys - hz) / (0.08 * R), 0, 1)
        out = far_img * (1 - t) + out * t
    return np.clip(out, 0, 1).astype(F32), kind
