"""One photo of a specimen: pose, light, ground, foreground occluders and camera; the top-level render API."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mycolens.data.scenes.camera import finish
from mycolens.data.scenes.ground import LEAF_COLOURS, background, leaf_polygon
from mycolens.data.scenes.paint import F32, hsv, rgb255, supersample, unif
from mycolens.data.synth.appearance import check_appearance, make_specimen
from mycolens.data.synth.shapes import draw_instance


def _group_box(sp: dict[str, Any]) -> tuple[float, float, float, float]:
    """Bounding box of all instances of a find, in local units (before the photo's tilt)."""
    u0, u1, v0, v1 = sp["ext"]
    xs, ys = [], []
    for dx, tilt, sc in sp["instances"]:
        a = math.radians(tilt)
        for uu, vv in ((u0, v0), (u0, v1), (u1, v0), (u1, v1)):
            xs.append(dx + sc * (uu * math.cos(a) - vv * math.sin(a)))
            ys.append(sc * (uu * math.sin(a) + vv * math.cos(a)))
    return min(xs), max(xs), min(ys), max(ys)


def render_photo(specimen: dict[str, Any], rng: np.random.Generator, size: int, difficulty: float = 1.0) -> np.ndarray:
    """One photo of a specimen: pose, scale, light, background, blur, occlusion and noise vary; uint8 (size,size,3)."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    ss = supersample(size)
    R = size * ss
    canvas, kind = background(rng, R, d)
    if rng.random() < 0.7:  # depth of field: the ground is softer than the subject
        pil = Image.fromarray((canvas * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(unif(rng, 0.5, 2.0) * ss)
        )
        canvas = np.asarray(pil, dtype=F32) / 255.0
    canvas = np.array(canvas, dtype=F32)
    elev = math.radians(unif(rng, -24.0, 30.0) if rng.random() < 0.5 + 0.5 * d else unif(rng, -12.0, 15.0))
    sa, ca = math.sin(elev), math.cos(elev)
    tilt = math.radians(float(np.clip(rng.normal(0, 4 + 8 * d), -22, 22)))
    flip = bool(rng.random() < 0.5)
    gu0, gu1, gv0, gv1 = _group_box(specimen)
    frac = unif(rng, 0.72 - 0.18 * d, 0.95)
    S = frac * R / max(gu1 - gu0, gv1 - gv0)
    slack_x = max(R - S * (gu1 - gu0), 0.0) * 0.5
    slack_y = max(R - S * (gv1 - gv0), 0.0) * 0.5
    cx = R / 2 + unif(rng, -1, 1) * slack_x * 0.9
    cy = R / 2 + unif(rng, -1, 1) * slack_y * 0.9
    ox = cx - S * (gu0 + gu1) / 2
    oy = cy + S * (gv0 + gv1) / 2
    el, az = math.radians(unif(rng, 25, 70)), unif(rng, math.pi * 0.9, math.pi * 2.1)
    fill = unif(rng, 0.15, 0.35)
    light = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el), 0.0, -ca * fill, sa * fill)
    amb = unif(rng, 0.3, 0.45)
    # soft contact shadow under the find
    yy, xx = np.mgrid[0:R, 0:R].astype(F32)
    rx = S * (gu1 - gu0) * 0.45
    sh = np.exp(-(((xx - ox - S * light[0] * 0.3) / rx) ** 2 + ((yy - oy) / (rx * 0.3 + 1)) ** 2))
    canvas *= (1.0 - 0.5 * sh)[..., None]
    for dx, itilt, sc in specimen["instances"]:
        rot = tilt + math.radians(itilt)
        base = (ox + S * dx * math.cos(tilt), oy - S * dx * math.sin(tilt))
        draw_instance(canvas, specimen, base, S * sc, rot, flip, sa, ca, light, amb)
    _foreground(canvas, rng, d, kind, (ox + S * gu0, oy - S * gv1, S * (gu1 - gu0), S * (gv1 - gv0)))
    return finish(canvas, rng, size, d, ss)


def _foreground(canvas: np.ndarray, rng: np.random.Generator, d: float, kind: str, box) -> None:
    """Occluders in front of the mushroom: grass blades at the base, a fallen leaf or a twig over part of it."""
    R = canvas.shape[0]
    bx, by, bw, bh = box
    if not (rng.random() < 0.6 * d + 0.05):
        return
    layer = Image.new("RGBA", (R, R), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    what = rng.random()
    if kind == "grass" and what < 0.6:
        for _ in range(int(rng.integers(2, 7))):
            x = bx + unif(rng, 0, 1) * bw
            y = by + bh * unif(rng, 0.95, 1.1)
            ln, ang = bh * unif(rng, 0.15, 0.45), -math.pi / 2 + rng.normal(0, 0.3)
            col = hsv(unif(rng, 0.18, 0.3), unif(rng, 0.5, 0.8), unif(rng, 0.35, 0.7))
            draw.line([(x, y), (x + ln * math.cos(ang), y + ln * math.sin(ang))], fill=(*rgb255(col), 255),
                      width=max(1, int(R / 90)))  # fmt: skip
    elif what < 0.75:
        h, s, v = LEAF_COLOURS[int(rng.integers(len(LEAF_COLOURS)))]
        col = hsv(h, s, v * unif(rng, 0.7, 1.1))
        length = max(bw, bh) * unif(rng, 0.2, 0.38)
        x = bx + bw * unif(rng, 0.0, 1.0)
        y = by + bh * unif(rng, 0.2, 1.0)
        draw.polygon(leaf_polygon(x, y, length, length * 0.5, unif(rng, 0, math.pi)), fill=(*rgb255(col), 255))
    else:
        col = hsv(unif(rng, 0.06, 0.1), unif(rng, 0.3, 0.5), unif(rng, 0.2, 0.4))
        x, y = bx + bw * unif(rng, -0.2, 1.2), by + bh * unif(rng, 0.3, 1.0)
        ang = unif(rng, -0.5, 0.5)
        ln = bw * unif(rng, 0.4, 0.8)
        draw.line([(x - ln * math.cos(ang), y - ln * math.sin(ang)), (x + ln * math.cos(ang), y + ln * math.sin(ang))],
                  fill=(*rgb255(col), 255), width=max(1, int(R / 70)))  # fmt: skip
    arr = np.asarray(layer, dtype=F32) / 255.0
    a = arr[..., 3:4]
    canvas[:] = canvas * (1 - a) + arr[..., :3] * a


def render_specimen_photos(
    appearance: dict[str, Any], species_id: str, rng: np.random.Generator, photos: int, size: int, difficulty: float
) -> list[np.ndarray]:
    """Draw one specimen from a species' traits, then photograph it `photos` times."""
    specimen = make_specimen(check_appearance(species_id, appearance), rng)
    return [render_photo(specimen, rng, size, difficulty) for _ in range(photos)]
