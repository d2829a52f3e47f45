"""Procedurally drawn mushroom photos: each species' look comes from its catalogue `appearance` traits.

A tiny orthographic ray caster (numpy) shades caps, undersides, stems, rings and volvas in 3D on a ground drawn
with PIL, at 2x-4x the output size, then downsamples with antialiasing. PIL + numpy only; nothing is downloaded.
Every random choice comes from the numpy Generator passed in, so the same generator state gives the same image.
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SYNTH_VERSION = 1  # bump when the drawings change: it is recorded in the manifest params
CAPS = ("funnel", "umbo", "conical", "brain", "bun", "convex", "flat")
UNDERSIDES = ("gills", "ridges", "pores", "none")
STEMS = ("tapered", "tall_banded", "stout", "bulbous_net", "plain")
SPOTS = ("none", "scales", "warts")
TEXTURES = ("smooth", "scaly", "honeycomb", "brain", "cracked")
BACKGROUNDS = ("forest", "needles", "grass", "moss")
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

_CHOICES = {"cap": CAPS, "underside": UNDERSIDES, "stem": STEMS, "spots": SPOTS, "texture": TEXTURES}
_REQUIRED_RANGES = ("cap_hue", "cap_sat", "cap_val", "stem_hue")
# optional HSV ranges; None = derived from the cap or stem colour
_OPTIONAL_RANGES: dict[str, tuple[float, float] | None] = {
    "stem_sat": (0.04, 0.18),
    "stem_val": (0.8, 0.95),
    "gill_hue": None,
    "gill_sat": None,
    "gill_val": (0.78, 0.95),
    "pore_hue": None,
    "pore_sat": None,
    "pore_val": (0.65, 0.9),
    "net_hue": None,
    "net_sat": None,
    "net_val": None,
}
_BOOLS = ("ring", "volva", "cluster")
F32 = np.float32


# ----------------------------------------------------------------------------------------------- traits


def check_appearance(species_id: str, appearance: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a species' appearance traits and fill defaults; ValueError names the species and the bad key."""
    where = f"species {species_id!r}"
    if not appearance:
        raise ValueError(
            f"{where} has no `appearance` traits, which the synthetic generator needs: add an appearance block "
            "(cap, cap_hue, cap_sat, cap_val, underside, stem, stem_hue, ...) as in src/mycolens/resources/species.yaml"
        )
    known = {*_CHOICES, *_REQUIRED_RANGES, *_OPTIONAL_RANGES, *_BOOLS}
    unknown = sorted(set(appearance) - known)
    if unknown:
        raise ValueError(f"{where}: unknown appearance keys {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    for key, choices in _CHOICES.items():
        default = {"spots": "none", "texture": "smooth", "underside": "gills"}.get(key)
        value = appearance.get(key, default)
        if value not in choices:
            raise ValueError(f"{where}: appearance.{key} = {value!r}; use one of {', '.join(choices)}")
        out[key] = value
    for key in (*_REQUIRED_RANGES, *_OPTIONAL_RANGES):
        value = appearance.get(key, _OPTIONAL_RANGES.get(key))
        if value is None and key not in _REQUIRED_RANGES:
            out[key] = None
            continue
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value)
        if not ok or not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError(f"{where}: appearance.{key} = {value!r}; use [low, high] with 0 <= low <= high <= 1")
        out[key] = (float(value[0]), float(value[1]))
    for key in _BOOLS:
        value = appearance.get(key, False)
        if not isinstance(value, bool):
            raise ValueError(f"{where}: appearance.{key} = {value!r}; use true or false")
        out[key] = value
    return out


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), dtype=F32)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _sphere_points(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.normal(size=(n, 3))
    return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(F32)


def make_specimen(traits: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One find: fixed colours, proportions and pattern seeds drawn once from validated species traits."""
    t = traits
    sp: dict[str, Any] = {k: t[k] for k in (*_CHOICES, *_BOOLS)}
    ch, cs, cv = _u(rng, *t["cap_hue"]), _u(rng, *t["cap_sat"]), _u(rng, *t["cap_val"])
    sp["cap_rgb"] = _hsv(ch, cs, cv)
    sp["cap_dark"] = _hsv(ch - 0.015, min(1.0, cs * 1.15 + 0.15), cv * _u(rng, 0.4, 0.6))
    sp["centre_dark"] = _u(rng, 0.15, 0.55)
    sh = _u(rng, *t["stem_hue"])
    ss_, sv = _u(rng, *t["stem_sat"]), _u(rng, *t["stem_val"])
    sp["stem_rgb"] = _hsv(sh, ss_, sv)
    under = t["underside"]
    if under == "pores":
        ph = _u(rng, *t["pore_hue"]) if t["pore_hue"] else ch
        ps = _u(rng, *t["pore_sat"]) if t["pore_sat"] else cs * 0.5
        sp["under_rgb"] = _hsv(ph, ps, _u(rng, *t["pore_val"]))
    elif under in ("gills", "ridges"):
        gh = _u(rng, *t["gill_hue"]) if t["gill_hue"] else ch + _u(rng, -0.005, 0.01)
        gs = _u(rng, *t["gill_sat"]) if t["gill_sat"] else cs * _u(rng, 0.8, 0.95)
        gv = _u(rng, *t["gill_val"]) if t["gill_hue"] else cv * _u(rng, 0.85, 0.97)
        sp["under_rgb"] = _hsv(gh, gs, gv)
    else:
        sp["under_rgb"] = sp["cap_dark"] * F32(0.8)
    nh = _u(rng, *t["net_hue"]) if t["net_hue"] else sh
    ns = _u(rng, *t["net_sat"]) if t["net_sat"] else min(1.0, ss_ + 0.1)
    nv = _u(rng, *t["net_val"]) if t["net_val"] else sv * 0.9
    sp["net_rgb"] = _hsv(nh, ns, nv)
    sp["band_rgb"] = _hsv(ch - 0.01, min(1.0, cs + 0.35), cv * _u(rng, 0.4, 0.55))  # parasol snakeskin bands
    sp["ring_rgb"] = _hsv(sh, ss_ * 0.5, min(1.0, sv * 1.05 + 0.05))
    sp["volva_rgb"] = _hsv(_u(rng, 0.1, 0.13), _u(rng, 0.02, 0.12), _u(rng, 0.85, 0.97))
    sp["wart_rgb"] = _hsv(_u(rng, 0.1, 0.14), _u(rng, 0.03, 0.18), _u(rng, 0.88, 1.0))
    sp["scale_rgb"] = _hsv(ch - 0.01, min(1.0, cs + 0.3), cv * _u(rng, 0.35, 0.5))
    sp["n_gills"] = int(rng.integers(44, 60))
    sp["n_ridges"] = int(rng.integers(11, 15))
    sp["fork_at"] = _u(rng, 0.45, 0.6)
    sp["pore_k"] = _u(rng, 26.0, 34.0)
    sp["phase"] = rng.uniform(0, 2 * math.pi, size=8).astype(F32)
    _cap_geometry(sp, rng)
    _stem_geometry(sp, rng)
    _patterns(sp, rng)
    _cluster_layout(sp, rng)
    return sp


def _cap_geometry(sp: dict[str, Any], rng: np.random.Generator) -> None:
    cap = sp["cap"]
    sp["a"], sp["umbo"], sp["egg"], sp["lobes"] = 1.0, None, 0.0, None
    if cap == "funnel":
        sp["w0"], sp["hf"] = _u(rng, 0.15, 0.22), _u(rng, 0.65, 0.85)  # k_f <= 1.52 keeps the ray quadratic well posed
        sp["k_f"] = math.sqrt(1.0 - sp["w0"] ** 2) / sp["hf"]
        sp["wave_amp"], sp["wave_k"] = _u(rng, 0.03, 0.08), int(rng.integers(3, 7))
        sp["c"], sp["z0"], sp["cap_top"] = 0.0, 0.0, 0.08
        return
    if cap == "convex":
        c = _u(rng, 0.48, 0.7)
        z0 = -c * _u(rng, 0.0, 0.15)
    elif cap == "bun":
        c = _u(rng, 0.62, 0.82)
        z0 = -c * _u(rng, 0.18, 0.3)
    elif cap == "flat":
        c = _u(rng, 0.24, 0.34)
        z0 = -c * _u(rng, 0.0, 0.15)
    elif cap == "umbo":
        c = _u(rng, 0.22, 0.3)
        z0 = -c * _u(rng, 0.0, 0.1)
        cu = _u(rng, 0.12, 0.18)
        sp["umbo"] = (_u(rng, 0.24, 0.32), cu, z0 + c - cu * 0.35)
    elif cap == "conical":
        c = _u(rng, 1.4, 1.9)
        z0 = c * _u(rng, 0.5, 0.62)
        sp["egg"] = _u(rng, 0.2, 0.38)
    else:  # brain
        c = _u(rng, 0.72, 0.92)
        z0 = c * _u(rng, 0.25, 0.4)
        sp["lobes"] = [(int(k), _u(rng, 0.05, 0.13), _u(rng, 0, 2 * math.pi)) for k in (2, 3, 5, 7)]
    sp["c"], sp["z0"] = c, z0
    sp["cap_top"] = z0 + c + (sp["umbo"][1] * 0.7 if sp["umbo"] else 0.0)
    sp["r0"] = sp["a"] * math.sqrt(max(1.0 - (z0 / c) ** 2, 0.0)) if z0 < c else 0.0


def _stem_geometry(sp: dict[str, Any], rng: np.random.Generator) -> None:
    stem, cap = sp["stem"], sp["cap"]
    top = -sp["hf"] + 0.03 if cap == "funnel" else 0.0
    if stem == "tapered":
        hs, wt, wb = _u(rng, 0.7, 1.15), sp.get("w0", 0.2), _u(rng, 0.08, 0.12)
    elif stem == "tall_banded":
        hs, wt = _u(rng, 1.8, 2.4), _u(rng, 0.085, 0.11)
        wb = wt * _u(rng, 1.1, 1.25)
    elif stem == "stout":
        base_r = sp.get("r0", 0.6) or 0.6
        hs = _u(rng, 0.75, 1.2)
        wt = base_r * _u(rng, 0.7, 0.85) if sp["cap"] == "conical" else _u(rng, 0.35, 0.5)
        wb = wt * _u(rng, 1.0, 1.15)
    elif stem == "bulbous_net":
        hs, wt = _u(rng, 1.0, 1.45), _u(rng, 0.22, 0.3)
        wb = wt
        sp["w_bulb"] = _u(rng, 0.45, 0.6)
    else:  # plain
        hs, wt = _u(rng, 1.25, 1.9), _u(rng, 0.12, 0.18)
        wb = wt * _u(rng, 1.1, 1.3)
    sp["hs"], sp["w_top"], sp["w_bot"] = hs, wt, wb
    sp["z_stem_top"], sp["z_ground"] = top, top - hs
    sp["z_ring"] = top - hs * (_u(rng, 0.12, 0.22) if stem != "tall_banded" else _u(rng, 0.25, 0.35))
    sp["ring_h"], sp["ring_flare"] = _u(rng, 0.09, 0.14), _u(rng, 0.08, 0.13)
    sp["volva_h"] = min(0.5, hs * _u(rng, 0.2, 0.28))
    sp["volva_w"] = wb * _u(rng, 1.7, 2.0)
    sp["band_period"] = _u(rng, 0.16, 0.24)
    sp["net_k"] = (_u(rng, 8.0, 11.0), _u(rng, 16.0, 22.0))
    wmax = max(1.05, sp.get("w_bulb", 0.0), sp["volva_w"] * 1.3 if sp["volva"] else 0.0) * (1.2 if sp["lobes"] else 1.0)
    sp["ext"] = (-wmax, wmax, -0.45, sp["cap_top"] - sp["z_ground"] + 0.2)


def _patterns(sp: dict[str, Any], rng: np.random.Generator) -> None:
    """Spots (3D points on the cap), Voronoi seeds and fold phases, fixed per specimen."""
    a, c, z0 = sp["a"], sp["c"], sp["z0"]
    sp["spot_pts"], sp["spot_r"] = None, None
    if sp["spots"] != "none" and sp["cap"] != "funnel":
        r0 = sp["r0"]
        if sp["spots"] == "warts":
            n = int(rng.integers(28, 50))
            rho = r0 * np.sqrt(rng.uniform(0.0, 0.9, n))
            radius = np.where(rho < 0.5, rng.uniform(0.075, 0.11, n), rng.uniform(0.05, 0.085, n))
        else:  # scales: concentric rows of brown patches around a dark centre
            rows = [(r, int(6 + 16 * r)) for r in np.arange(0.34, 0.95, 0.13)]
            rho = np.concatenate([np.full(k, r * r0) + rng.normal(0, 0.02, k) for r, k in rows])
            n = len(rho)
            radius = rng.uniform(0.045, 0.075, n) * (1.2 - 0.5 * rho / r0)
        phi = rng.uniform(0, 2 * math.pi, n)
        z = z0 + c * np.sqrt(np.clip(1.0 - (rho / a) ** 2, 0.0, 1.0))
        sp["spot_pts"] = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], 1).astype(F32)
        sp["spot_r"] = radius.astype(F32)
    sp["seeds"] = None
    if sp["texture"] == "honeycomb":
        p = _sphere_points(rng, int(rng.integers(80, 110)))
        sp["seeds"] = (p * np.array([a, a, c], F32) + np.array([0, 0, z0], F32)).astype(F32)
    elif sp["texture"] == "cracked":
        n = int(rng.integers(26, 40))
        rho = sp["r0"] * np.sqrt(rng.uniform(0.06, 1.0, n))
        phi = rng.uniform(0, 2 * math.pi, n)
        z = z0 + c * np.sqrt(np.clip(1.0 - (rho / a) ** 2, 0.0, 1.0))
        sp["seeds"] = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], 1).astype(F32)
        sp["cell_tint"] = rng.uniform(0.85, 1.12, n).astype(F32)
    sp["fold_k"] = (_u(rng, 6.0, 8.0), _u(rng, 4.0, 6.0), _u(rng, 5.0, 7.0))


def _cluster_layout(sp: dict[str, Any], rng: np.random.Generator) -> None:
    """Instances of one find: (base offset, tilt degrees, scale); several fused stems when `cluster`."""
    if not sp["cluster"]:
        sp["instances"] = [(0.0, 0.0, 1.0)]
        return
    n = int(rng.integers(3, 6))
    tilts = np.sort(rng.uniform(-38, 38, n))
    inst = [(float(rng.uniform(-0.15, 0.15)), float(tl), _u(rng, 0.55, 0.85)) for tl in tilts]
    order = rng.permutation(n)
    sp["instances"] = [inst[i] for i in order]


# --------------------------------------------------------------------------------------------- ray casting


def _ray_ellipsoid(u, vp, a, c, z0, sa, ca):
    """Nearest hit of orthographic rays with the ellipsoid x^2/a^2 + y^2/a^2 + (z-z0)^2/c^2 = 1."""
    ia, ic = 1.0 / (a * a), 1.0 / (c * c)
    A = ca * ca * ia + sa * sa * ic
    w = vp * ca - z0
    B = -2.0 * vp * sa * ca * ia + 2.0 * w * sa * ic
    C = (u * u + (vp * sa) ** 2) * ia + w * w * ic - 1.0
    D = B * B - 4.0 * A * C
    t = (-B + np.sqrt(np.maximum(D, 0.0))) / (2.0 * A)
    return D >= 0, vp * sa - t * ca, vp * ca + t * sa, t


def _revolve(u, vp, sa, ca, wfun, zlo, zhi):
    """Front surface of a body of revolution about the z axis with radius wfun(z) for zlo <= z <= zhi."""
    z = vp / ca
    for _ in range(2):
        w = wfun(z)
        yf = -np.sqrt(np.maximum(w * w - u * u, 0.0))
        z = (vp - yf * sa) / ca
    w = wfun(z)
    yf = -np.sqrt(np.maximum(w * w - u * u, 0.0))
    return (u * u <= w * w) & (z >= zlo) & (z <= zhi), z, yf, w


def _lambert(nx, ny, nz, light, amb):
    """Ambient + sun (light[:3]) + a fill light from the camera (light[3:], pre-scaled)."""
    inv = 1.0 / np.sqrt(nx * nx + ny * ny + nz * nz + 1e-9)
    sun = np.clip((nx * light[0] + ny * light[1] + nz * light[2]) * inv, 0.0, 1.0)
    fill = np.clip((nx * light[3] + ny * light[4] + nz * light[5]) * inv, 0.0, 1.0)
    return amb + (1.0 - amb) * sun + fill


def _voronoi(p: np.ndarray, seeds: np.ndarray, zscale: float = 1.0):
    """Nearest seed index and the gap d2 - d1 (small near cell borders) for points p (M,3)."""
    q = p.copy()
    s = seeds.copy()
    q[:, 2] *= zscale
    s[:, 2] *= zscale
    d = ((q[:, None, :] - s[None, :, :]) ** 2).sum(-1)
    idx = np.argpartition(d, 1, axis=1)[:, :2]
    d2 = np.take_along_axis(d, idx, 1)
    order = np.argsort(d2, axis=1)
    d2 = np.sqrt(np.take_along_axis(d2, order, 1))
    nearest = np.take_along_axis(idx, order, 1)[:, 0]
    return nearest, d2[:, 1] - d2[:, 0], d2[:, 0]


def _underside_rgb(sp: dict[str, Any], phi: np.ndarray, r: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gills (dense thin plates), ridges (few, blunt, forked), pores (sponge) or plain, as colour (M,3)."""
    kind, base = sp["underside"], sp["under_rgb"]
    if kind == "gills":
        n = sp["n_gills"]
        g = 0.5 + 0.5 * np.cos(n * phi)
        g2 = 0.5 + 0.5 * np.cos(2 * n * phi)
        g = np.where(r > 0.55, np.maximum(g, g2), g)  # short gills between the long ones near the rim
        val = 0.55 + 0.45 * g**0.6
    elif kind == "ridges":
        n = sp["n_ridges"]
        fork = sp["fork_at"] + 0.08 * np.sin(3 * phi + sp["phase"][0])
        inner, outer = np.cos(n * phi), -np.cos(2 * n * phi)
        blend = np.clip((r - fork) / 0.12, 0.0, 1.0)
        p = inner * (1 - blend) + outer * blend
        val = 0.62 + 0.38 * (0.5 + 0.5 * p) ** 1.5
    elif kind == "pores":
        k = sp["pore_k"]
        p = np.cos(k * x + 0.7 * np.sin(9 * y)) * np.cos(k * y + 0.7 * np.sin(9 * x))
        val = 0.78 + 0.22 * (p > -0.3)
    else:
        val = np.full_like(r, 0.8)
    val = val * (0.62 + 0.38 * np.clip(r, 0, 1))
    return base[None, :] * val[:, None]


# ----------------------------------------------------------------------------------------------- parts


def _cap_dome(sp, u, vp, sa, ca, light, amb, view):
    """Dome-like caps (convex, bun, flat, umbo, conical, brain) and the underside disc: mask + colour."""
    a, c, z0 = sp["a"], sp["c"], sp["z0"]
    uu, vv = u, vp
    if sp["egg"]:
        zc = (vp - z0 * ca) / c
        uu = u / np.clip(1.0 - sp["egg"] * np.clip(zc, -1.0, 1.0), 0.3, 2.0)
    if sp["lobes"]:
        vc = z0 * ca
        th = np.arctan2(vp - vc, u)
        rr = 1.0 + sum(amp * np.sin(k * th + ph) for k, amp, ph in sp["lobes"])
        uu, vv = u / rr, vc + (vp - vc) / rr
    hit, y, z, t = _ray_ellipsoid(uu, vv, a, c, z0, sa, ca)
    dome = hit & (z >= 0.0)
    x = uu
    if sp["umbo"]:
        au, cu, zu = sp["umbo"]
        hit2, y2, z2, t2 = _ray_ellipsoid(u, vp, au, cu, zu, sa, ca)
        bump = hit2 & (z2 >= zu) & (~dome | (t2 > t))
        y, z, t = np.where(bump, y2, y), np.where(bump, z2, z), np.where(bump, t2, t)
        dome = dome | bump
    else:
        bump = np.zeros_like(dome)
    under = np.zeros_like(dome)
    if sa < -1e-3 and sp["r0"] > 0:
        tp = -vv * ca / sa
        yp = vv * sa - tp * ca
        under = (uu * uu + yp * yp <= sp["r0"] ** 2) & (~dome | (tp > t))
        dome = dome & ~under
    mask = dome | under
    out = np.zeros((int(mask.sum()), 3), F32)
    sel_d = dome[mask]
    if dome.any():
        xd, yd, zd = x[dome], y[dome], z[dome]
        is_bump = bump[dome]
        if sp["umbo"]:
            au, cu, zu = sp["umbo"]
            nx = np.where(is_bump, xd / au**2, xd / a**2)
            ny = np.where(is_bump, yd / au**2, yd / a**2)
            nz = np.where(is_bump, (zd - zu) / cu**2, (zd - z0) / c**2)
        else:
            nx, ny, nz = xd / a**2, yd / a**2, (zd - z0) / c**2
        out[sel_d] = _cap_surface_rgb(sp, xd, yd, zd, nx, ny, nz, is_bump, light, amb, view)
    if under.any():
        yp_u = yp[under]
        xu = uu[under]
        r = np.sqrt(xu * xu + yp_u * yp_u) / sp["r0"]
        phi = np.arctan2(yp_u, xu)
        col = _underside_rgb(sp, phi, r, xu, yp_u)
        out[~sel_d] = col * F32(amb + 0.15 + math.sqrt(light[3] ** 2 + light[4] ** 2 + light[5] ** 2) * 0.8)
    return mask, out


def _cap_surface_rgb(sp, x, y, z, nx, ny, nz, is_bump, light, amb, view):
    """Shaded cap colour with its texture (smooth, scaly, honeycomb, brain, cracked) and spots."""
    base = sp["cap_rgb"][None, :]
    dark = sp["cap_dark"][None, :]
    rho = np.sqrt(x * x + y * y) / max(sp["a"], 1e-6)
    k = sp["centre_dark"] * np.clip(1.0 - rho, 0, 1) ** 2
    col = base * (1 - k[:, None]) + dark * k[:, None]
    shade = _lambert(nx, ny, nz, light, amb)
    tex = sp["texture"]
    ph = sp["phase"]
    if tex in ("smooth", "scaly"):
        fib = 0.5 + 0.5 * np.cos(70 * np.arctan2(y, x) + 3 * np.sin(5 * rho))
        mott = np.sin(6 * x + ph[1]) * np.sin(5 * y + ph[2]) * np.sin(4 * z + ph[3])
        shade = shade * (0.97 + 0.06 * mott - (0.07 if tex == "scaly" else 0.03) * fib * rho)
    if tex == "scaly":
        centre = (rho < 0.24) | is_bump
        col = np.where(centre[:, None], sp["scale_rgb"][None, :], col)
    elif tex == "honeycomb":
        _, gap, d1 = _voronoi(np.stack([x, y, z], 1), sp["seeds"], zscale=0.55)
        ridge = np.clip(1.0 - gap / 0.07, 0.0, 1.0)
        pit = np.clip(d1 / 0.28, 0.0, 1.0)
        col = dark * (0.55 + 0.3 * pit[:, None]) * (1 - ridge[:, None]) + base * 1.15 * ridge[:, None]
        shade = shade * (0.6 + 0.4 * np.maximum(ridge, 1 - pit))
    elif tex == "brain":
        k1, k2, k3 = sp["fold_k"]
        q = k1 * x + 1.8 * np.sin(k2 * z + ph[4]) + 1.4 * np.sin(k3 * y + ph[5])
        q2 = k1 * z + 1.5 * np.sin(k2 * x + ph[6]) + 1.2 * np.sin(k3 * y + ph[7])
        folds = np.abs(np.sin(q) * np.cos(q2 * 0.8))
        crease = np.clip(1.0 - folds / 0.16, 0.0, 1.0)
        bulge = 0.82 + 0.3 * folds
        col = col * (1 - 0.65 * crease[:, None])
        shade = shade * bulge
    elif tex == "cracked":
        nearest, gap, _ = _voronoi(np.stack([x, y, z], 1), sp["seeds"])
        width = 0.035 + 0.1 * np.clip(rho - 0.25, 0, 1)
        crack = (gap < width) & (rho > 0.22)
        col = col * sp["cell_tint"][nearest][:, None]
        pale = np.array([0.9, 0.92, 0.8], F32)[None, :] * 0.75 + base * 0.25
        col = np.where(crack[:, None], pale, col)
    if sp["spot_pts"] is not None:
        p = np.stack([x, y, z], 1)
        d = np.sqrt(((p[:, None, :] - sp["spot_pts"][None]) ** 2).sum(-1)) / sp["spot_r"][None]
        j = np.argmin(d, 1)
        dm = d[np.arange(len(j)), j]
        if sp["spots"] == "warts":
            on = dm < 1.0
            bright = (1.1 - 0.35 * dm**2)[:, None]
            col = np.where(on[:, None], sp["wart_rgb"][None, :] * bright, col)
        else:
            wob = 1.0 + 0.35 * np.sin(7 * np.arctan2(y, x) + j)
            on = dm < wob
            col = np.where(on[:, None], sp["scale_rgb"][None, :], col)
    rgb = col * shade[:, None]
    if tex in ("smooth", "cracked"):  # a soft specular highlight on smooth, moist caps
        hx, hy, hz = light[0] + view[0], light[1] + view[1], light[2] + view[2]  # half vector
        hn = math.sqrt(hx * hx + hy * hy + hz * hz)
        nn = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-9
        spec = np.clip((nx * hx + ny * hy + nz * hz) / (nn * hn), 0, 1) ** 24
        rgb = rgb + (0.18 * spec)[:, None]
    return rgb


def _cap_funnel(sp, u, vp, sa, ca, light, amb):
    """Trumpet cap (hyperboloid shell): outer surface shows the underside, the wavy opening shows the cap."""
    w0, k, zs = sp["w0"], sp["k_f"], -sp["hf"]
    m = vp * ca - zs
    A = ca * ca - k * k * sa * sa
    B = -2.0 * vp * sa * ca - 2.0 * k * k * m * sa
    C = u * u + (vp * sa) ** 2 - k * k * m * m - w0 * w0
    D = B * B - 4.0 * A * C
    sq = np.sqrt(np.maximum(D, 0.0))
    hit = D >= 0
    tn, tf = (-B + sq) / (2 * A), (-B - sq) / (2 * A)

    def rim(xx, yy):
        return sp["wave_amp"] * np.sin(sp["wave_k"] * np.arctan2(yy, xx) + sp["phase"][0])

    yn, zn = vp * sa - tn * ca, vp * ca + tn * sa
    yfr, zfr = vp * sa - tf * ca, vp * ca + tf * sa
    outer = hit & (zn >= zs) & (zn <= rim(u, yn))
    inner = hit & ~outer & (zn > rim(u, yn)) & (zfr >= zs) & (zfr <= rim(u, yfr))
    mask = outer | inner
    out = np.zeros((int(mask.sum()), 3), F32)
    so = outer[mask]
    if outer.any():
        x, y, z = u[outer], yn[outer], zn[outer]
        q = np.clip((z - zs) / sp["hf"], 0, 1)
        phi = np.arctan2(y, x)
        col = _underside_rgb(sp, phi, q, x, y)
        margin = z > rim(x, y) - 0.06
        col = np.where(margin[:, None], sp["cap_rgb"][None, :], col)
        shade = _lambert(x, y, -k * k * (z - zs), light, amb) + 0.1
        out[so] = col * shade[:, None]
    if inner.any():
        x, y, z = u[inner], yfr[inner], zfr[inner]
        q = np.clip((z - zs) / sp["hf"], 0, 1)
        col = sp["cap_rgb"][None, :] * (1 - 0.4 * (1 - q)[:, None]) + sp["cap_dark"][None, :] * 0.4 * (1 - q)[:, None]
        shade = _lambert(-x, -y, k * k * (z - zs) + 0.3, light, amb)
        out[~so] = col * shade[:, None]
    return mask, out


def _stem_width(sp, z):
    zg, zt = sp["z_ground"], sp["z_stem_top"]
    q = np.clip((z - zg) / (zt - zg), 0.0, 1.0)
    wt, wb = sp["w_top"], sp["w_bot"]
    kind = sp["stem"]
    if kind == "tapered":
        return wb + (wt - wb) * q**2.2
    if kind == "bulbous_net":
        bulb = (sp["w_bulb"] - wt) * np.exp(-(((q - 0.26) / 0.3) ** 2))
        return (wt + bulb) * np.sqrt(np.clip(q / 0.07, 0.08, 1.0))
    if kind == "tall_banded":
        return wt + (wb - wt) * (1 - q) + wt * 0.9 * np.exp(-((q / 0.06) ** 2))
    return wb + (wt - wb) * q


def _stem(sp, u, vp, sa, ca, light, amb):
    """Stem: tapered, tall with snakeskin bands, stout, bulbous with a net, or plain; shaded as a cylinder."""
    zg, zt = sp["z_ground"], sp["z_stem_top"] + 0.02
    mask, z, yf, w = _revolve(u, vp, sa, ca, lambda zz: _stem_width(sp, zz), zg, zt)
    if not mask.any():
        return mask, np.zeros((0, 3), F32)
    x, y, z, w = u[mask], yf[mask], z[mask], w[mask]
    th = np.arcsin(np.clip(x / np.maximum(w, 1e-6), -1, 1))
    q = (z - zg) / (zt - zg)
    col = np.repeat(sp["stem_rgb"][None, :], len(x), 0)
    kind = sp["stem"]
    ph = sp["phase"]
    if kind == "tall_banded":
        band = np.sin(2 * math.pi * z / sp["band_period"] + 1.2 * np.abs(np.sin(2.5 * th + ph[1])))
        snake = (band > 0.15) & (q > 0.05) & (q < 0.9)
        col = np.where(snake[:, None], sp["band_rgb"][None, :] * 1.25, col)
    elif kind == "bulbous_net":
        kt, kz = sp["net_k"]
        m1, m2 = np.abs(np.sin(kt * th + kz * z)), np.abs(np.sin(kt * th - kz * z))
        net = (np.minimum(m1, m2) < 0.3) & (q > 0.15)
        col = np.where(net[:, None], sp["net_rgb"][None, :], col)
    elif kind == "stout":
        grain = np.sin(23 * z + 5 * np.sin(9 * th)) * np.sin(17 * th + 11 * z)
        col = col * (0.9 + 0.1 * grain)[:, None] * (0.92 + 0.08 * np.cos(7 * th + ph[2]))[:, None]
    elif kind == "tapered" and sp["underside"] in ("ridges", "gills"):
        n = sp["n_ridges"] if sp["underside"] == "ridges" else sp["n_gills"]
        lines = 0.5 + 0.5 * np.cos(n * th)
        fade = np.clip((q - 0.45) / 0.5, 0, 1) * (0.35 if sp["underside"] == "ridges" else 0.12)
        col = col * (1 - fade * (1 - lines))[:, None]
    else:
        col = col * (0.96 + 0.04 * np.cos(40 * th + 6 * z))[:, None]
    shade = _lambert(x, y, np.zeros_like(x), light, amb)
    occl = 1.0 - 0.45 * np.exp(-np.maximum(sp["z_stem_top"] - z, 0.0) / 0.18)  # in the shadow of the cap
    return mask, col * (shade * occl)[:, None]


def _ring(sp, u, vp, sa, ca, light, amb):
    """A skirt-like ring hanging from the stem."""
    zr, hr, fl = sp["z_ring"], sp["ring_h"], sp["ring_flare"]
    wr0 = float(_stem_width(sp, np.float32(zr)))

    def wfun(zz):
        return wr0 + 0.01 + fl * np.clip((zr - zz) / hr, 0.0, 1.0) ** 0.6

    mask, z, yf, w = _revolve(u, vp, sa, ca, wfun, zr - hr, zr)
    if not mask.any():
        return mask, np.zeros((0, 3), F32)
    x, y, z = u[mask], yf[mask], z[mask]
    edge = (zr - z) / hr > 0.8
    col = np.where(edge[:, None], sp["ring_rgb"][None, :] * 0.72, sp["ring_rgb"][None, :])
    if sp["stem"] == "tall_banded":
        col = np.where(((zr - z) / hr > 0.45)[:, None] & ~edge[:, None], sp["band_rgb"][None, :] * 1.4, col)
    shade = _lambert(x, y, np.full_like(x, -0.4), light, amb) * 1.05
    return mask, col * shade[:, None]


def _volva(sp, u, vp, sa, ca, light, amb):
    """A sac-like cup (volva) at the base, or a warty bulb for spotted amanitas."""
    zg, hv, wv = sp["z_ground"], sp["volva_h"], sp["volva_w"]
    warty = sp["spots"] == "warts"

    def wfun(zz):
        q = np.clip((zz - zg) / hv, 0.0, 1.0)
        if warty:
            return wv * (1.15 - 0.35 * q**2) * np.sqrt(np.clip(q / 0.15, 0.1, 1.0))
        return wv * (0.85 + 0.35 * np.sin(math.pi * np.clip(q * 0.75 + 0.1, 0, 1))) * np.sqrt(np.clip(q / 0.1, 0.1, 1))

    mask, z, yf, w = _revolve(u, vp, sa, ca, wfun, zg, zg + hv * 1.25)
    th = np.arctan2(yf, u)
    ph = sp["phase"]
    ragged = zg + hv * (0.9 + 0.2 * np.sin(5 * th + ph[3]) + 0.1 * np.sin(11 * th + ph[4]))
    mask = mask & (z <= ragged)
    if not mask.any():
        return mask, np.zeros((0, 3), F32)
    x, y, z = u[mask], yf[mask], z[mask]
    q = (z - zg) / hv
    col = np.repeat(sp["volva_rgb"][None, :], len(x), 0)
    if warty:
        rings = np.abs(np.sin(2 * math.pi * q * 2.2 + 0.4 * np.sin(9 * th[mask])))
        col = col * np.where(rings < 0.35, 1.0, 0.82)[:, None]
        col = col * (sp["stem_rgb"][None, :] * 0.3 + 0.7)
    else:
        dirt = np.clip(1.0 - q / 0.35, 0, 1) * 0.35
        col = col * (1 - dirt[:, None]) + np.array([0.45, 0.36, 0.25], F32)[None, :] * dirt[:, None]
        col = col * (0.9 + 0.1 * np.sin(30 * q + 6 * th[mask]))[:, None]
    shade = _lambert(x, y, np.full_like(x, 0.1), light, amb)
    return mask, col * shade[:, None]


def _draw_instance(canvas, sp, origin, S, rot, flip, sa, ca, light, amb):
    """Ray-cast one mushroom into `canvas` (R,R,3) with its ground point at `origin` and `S` pixels per unit."""
    R = canvas.shape[0]
    ox, oy = origin
    cr, sr = math.cos(rot), math.sin(rot)
    u0, u1, v0, v1 = sp["ext"]
    corners = [(uu, vv) for uu in (u0, u1) for vv in (v0, v1)]
    px = [ox + S * (uu * cr - vv * sr) for uu, vv in corners]
    py = [oy - S * (uu * sr + vv * cr) for uu, vv in corners]
    x0, x1 = max(int(min(px)) - 1, 0), min(int(max(px)) + 2, R)
    y0, y1 = max(int(min(py)) - 1, 0), min(int(max(py)) + 2, R)
    if x1 <= x0 or y1 <= y0:
        return
    dx = ((np.arange(x0, x1, dtype=F32) + 0.5 - ox) / S)[None, :]
    dy = (-(np.arange(y0, y1, dtype=F32) + 0.5 - oy) / S)[:, None]
    u = dx * cr + dy * sr
    v = -dx * sr + dy * cr
    if flip:
        u = -u
    vp = v + sp["z_ground"] * ca
    view = (0.0, -ca, sa)
    region = canvas[y0:y1, x0:x1]
    cap = _cap_funnel if sp["cap"] == "funnel" else _cap_dome
    cap_args = (sp, u, vp, sa, ca, light, amb) + (() if sp["cap"] == "funnel" else (view,))
    parts = [lambda: _stem(sp, u, vp, sa, ca, light, amb)]
    if sp["ring"]:
        parts.append(lambda: _ring(sp, u, vp, sa, ca, light, amb))
    if sp["volva"]:
        parts.append(lambda: _volva(sp, u, vp, sa, ca, light, amb))
    below_view = sa < 0 and sp["cap"] != "funnel"
    parts = [lambda: cap(*cap_args), *parts] if below_view else [*parts, lambda: cap(*cap_args)]
    for part in parts:
        mask, rgb = part()
        if rgb.shape[0]:
            region[mask] = rgb


# ------------------------------------------------------------------------------------------------- ground


def supersample(size: int) -> int:
    """Drawing scale: 2x-4x the output size, then an antialiased downsample."""
    return 4 if size <= 48 else 3 if size <= 96 else 2


def _noise(rng: np.random.Generator, R: int, cells: int, octaves: int = 2) -> np.ndarray:
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


def _rgb255(c: np.ndarray) -> tuple[int, int, int]:
    c = np.clip(c, 0, 1) * 255
    return int(c[0]), int(c[1]), int(c[2])


def _leaf_polygon(cx: float, cy: float, length: float, width: float, angle: float) -> list[tuple[float, float]]:
    pts = []
    ca, sa = math.cos(angle), math.sin(angle)
    for s in np.linspace(0, 1, 9):
        lx, ly = length * (s - 0.5), 0.5 * width * math.sin(math.pi * s) ** 0.8
        pts.append((lx, ly))
    for s in np.linspace(1, 0, 9)[1:-1]:
        lx, ly = length * (s - 0.5), -0.5 * width * math.sin(math.pi * s) ** 0.8
        pts.append((lx, ly))
    return [(cx + lx * ca - ly * sa, cy + lx * sa + ly * ca) for lx, ly in pts]


_LEAF_COLOURS = [(0.07, 0.65, 0.45), (0.09, 0.7, 0.6), (0.11, 0.75, 0.75), (0.05, 0.6, 0.35), (0.03, 0.7, 0.5),
                 (0.13, 0.55, 0.7), (0.08, 0.35, 0.3), (0.15, 0.5, 0.5), (0.02, 0.55, 0.28)]  # fmt: skip


def _draw_leaves(draw: ImageDraw.ImageDraw, rng: np.random.Generator, R: int, n: int, big: float = 1.0) -> None:
    for _ in range(n):
        h, s, v = _LEAF_COLOURS[int(rng.integers(len(_LEAF_COLOURS)))]
        col = _hsv(h + rng.normal(0, 0.01), s * _u(rng, 0.8, 1.1), v * _u(rng, 0.6, 1.15))
        length = R * _u(rng, 0.07, 0.2) * big
        poly = _leaf_polygon(_u(rng, -0.1, 1.1) * R, _u(rng, -0.1, 1.1) * R, length, length * _u(rng, 0.35, 0.6),
                             _u(rng, 0, 2 * math.pi))  # fmt: skip
        draw.polygon(poly, fill=_rgb255(col))
        (ax, ay), (bx, by) = poly[0], poly[8]
        draw.line([(ax, ay), (bx, by)], fill=_rgb255(col * 0.75), width=max(1, R // 160))


def _draw_lines(draw, rng, R, n, hsv_choices, length, width, vertical=False):
    for _ in range(n):
        h, s, v = hsv_choices[int(rng.integers(len(hsv_choices)))]
        col = _rgb255(_hsv(h + rng.normal(0, 0.01), s * _u(rng, 0.8, 1.1), v * _u(rng, 0.6, 1.2)))
        x, y = _u(rng, 0, R), _u(rng, 0, R * 1.1)
        ln = R * _u(rng, *length)
        ang = -math.pi / 2 + rng.normal(0, 0.35) if vertical else _u(rng, 0, math.pi)
        bend = rng.normal(0, 0.25)
        pts = [(x, y)]
        for i in range(1, 4):
            a = ang + bend * i / 3
            x, y = x + ln / 3 * math.cos(a), y + ln / 3 * math.sin(a)
            pts.append((x, y))
        draw.line(pts, fill=col, width=max(1, int(round(width * R / 192 * _u(rng, 0.7, 1.3)))))


_GRASS = [(0.22, 0.7, 0.55), (0.25, 0.65, 0.45), (0.28, 0.6, 0.6), (0.19, 0.6, 0.65), (0.14, 0.45, 0.75),
          (0.3, 0.55, 0.35)]  # fmt: skip
_NEEDLES = [(0.06, 0.7, 0.5), (0.07, 0.6, 0.4), (0.05, 0.75, 0.6), (0.08, 0.5, 0.3)]
_TWIGS = [(0.07, 0.4, 0.25), (0.08, 0.2, 0.35), (0.06, 0.5, 0.2)]


def _background(rng: np.random.Generator, R: int, d: float, kind: str | None = None) -> tuple[np.ndarray, str]:
    """A ground (forest floor with leaves, needle litter, grass or moss) as float RGB (R,R,3) and its kind."""
    kind = kind or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    clutter = 0.35 + 0.65 * d
    n1, n2 = _noise(rng, R, int(rng.integers(3, 7)), 3), _noise(rng, R, int(rng.integers(8, 16)), 2)
    if kind in ("forest", "needles"):
        base = _hsv(_u(rng, 0.04, 0.11), _u(rng, 0.3, 0.65), _u(rng, 0.18, 0.42))
        alt = _hsv(_u(rng, 0.05, 0.12), _u(rng, 0.2, 0.6), _u(rng, 0.15, 0.5))
    elif kind == "grass":
        base = _hsv(_u(rng, 0.18, 0.3), _u(rng, 0.45, 0.8), _u(rng, 0.2, 0.45))
        alt = _hsv(_u(rng, 0.12, 0.25), _u(rng, 0.35, 0.7), _u(rng, 0.25, 0.55))
    else:
        base = _hsv(_u(rng, 0.17, 0.28), _u(rng, 0.5, 0.9), _u(rng, 0.25, 0.55))
        alt = _hsv(_u(rng, 0.14, 0.3), _u(rng, 0.4, 0.85), _u(rng, 0.15, 0.5))
    mix = n1[..., None]
    img = base * (1 - mix) + alt * mix
    img = img * (0.65 + 0.7 * n2[..., None])
    if kind == "moss":
        fine = _noise(rng, R, R // 6, 1)
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
            x, y, r = _u(rng, 0, R), _u(rng, 0, R), R * _u(rng, 0.004, 0.012)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=_rgb255(_hsv(_u(rng, 0.12, 0.3), 0.6, _u(rng, 0.4, 0.8))))
    if rng.random() < 0.5 * clutter:
        _draw_lines(draw, rng, R, int(rng.integers(1, 4)), _TWIGS, (0.15, 0.45), 4.5)
    out = np.asarray(pil, dtype=F32) / 255.0
    if rng.random() < 0.55:  # a blurred far background (trees, light) above a horizon, as in low-angle photos
        hz = _u(rng, 0.12, 0.42) * R
        far = _hsv(_u(rng, 0.08, 0.35), _u(rng, 0.2, 0.6), _u(rng, 0.1, 0.45))
        far_img = far * (0.5 + 1.0 * _noise(rng, R, int(rng.integers(2, 6)), 2)[..., None])
        if rng.random() < 0.5:
            glow = np.clip((_noise(rng, R, 5, 1) - 0.55) / 0.2, 0, 1)[..., None]  # light through the canopy
            far_img = far_img + 0.35 * glow * _hsv(_u(rng, 0.1, 0.2), 0.3, 1.0)
        ys = np.arange(R, dtype=F32)[:, None, None]
        t = np.clip((ys - hz) / (0.08 * R), 0, 1)
        out = far_img * (1 - t) + out * t
    return np.clip(out, 0, 1).astype(F32), kind


# -------------------------------------------------------------------------------------------------- photo


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


def _finish(canvas: np.ndarray, rng: np.random.Generator, size: int, d: float, ss: int) -> np.ndarray:
    """Light (brightness, colour temperature, dappled shade, vignette), blur, downsample, sensor noise."""
    R = canvas.shape[0]
    img = canvas
    if rng.random() < 0.45 * d + 0.1:
        n = _noise(rng, R, int(rng.integers(3, 7)), 2)
        thr = _u(rng, 0.4, 0.6)
        shade = 1.0 - _u(rng, 0.2, 0.4) * np.clip((n - thr) / 0.25 + 0.5, 0, 1)
        img = img * shade[..., None]
    temp = rng.normal(0, 0.05 + 0.06 * d)
    tint = rng.normal(0, 0.02 + 0.02 * d)
    img = img * np.array([1 + temp, 1 + tint, 1 - temp], F32) * _u(rng, 1 - 0.3 * d, 1 + 0.25 * d)
    yy, xx = np.mgrid[0:R, 0:R].astype(F32) / R - 0.5
    img = img * (1.0 - _u(rng, 0.0, 0.5) * (xx * xx + yy * yy))[..., None]
    img = np.clip(img, 0, 1) ** _u(rng, 0.85, 1.15)
    pil = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.55 * d:
        pil = pil.filter(ImageFilter.GaussianBlur(_u(rng, 0.2, 0.9) * ss))
    pil = pil.resize((size, size), Image.LANCZOS)
    out = np.asarray(pil, dtype=F32)
    sigma = _u(rng, 0.0, 9.0 * d)
    if sigma > 0.5:
        out = out + rng.normal(0, sigma, out.shape).astype(F32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def render_photo(specimen: dict[str, Any], rng: np.random.Generator, size: int, difficulty: float = 1.0) -> np.ndarray:
    """One photo of a specimen: pose, scale, light, background, blur, occlusion and noise vary; uint8 (size,size,3)."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    ss = supersample(size)
    R = size * ss
    canvas, kind = _background(rng, R, d)
    if rng.random() < 0.7:  # depth of field: the ground is softer than the subject
        pil = Image.fromarray((canvas * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(_u(rng, 0.5, 2.0) * ss))
        canvas = np.asarray(pil, dtype=F32) / 255.0
    canvas = np.array(canvas, dtype=F32)
    elev = math.radians(_u(rng, -24.0, 30.0) if rng.random() < 0.5 + 0.5 * d else _u(rng, -12.0, 15.0))
    sa, ca = math.sin(elev), math.cos(elev)
    tilt = math.radians(float(np.clip(rng.normal(0, 4 + 8 * d), -22, 22)))
    flip = bool(rng.random() < 0.5)
    gu0, gu1, gv0, gv1 = _group_box(specimen)
    frac = _u(rng, 0.72 - 0.18 * d, 0.95)
    S = frac * R / max(gu1 - gu0, gv1 - gv0)
    slack_x = max(R - S * (gu1 - gu0), 0.0) * 0.5
    slack_y = max(R - S * (gv1 - gv0), 0.0) * 0.5
    cx = R / 2 + _u(rng, -1, 1) * slack_x * 0.9
    cy = R / 2 + _u(rng, -1, 1) * slack_y * 0.9
    ox = cx - S * (gu0 + gu1) / 2
    oy = cy + S * (gv0 + gv1) / 2
    el, az = math.radians(_u(rng, 25, 70)), _u(rng, math.pi * 0.9, math.pi * 2.1)
    fill = _u(rng, 0.15, 0.35)
    light = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el), 0.0, -ca * fill, sa * fill)
    amb = _u(rng, 0.3, 0.45)
    # soft contact shadow under the find
    yy, xx = np.mgrid[0:R, 0:R].astype(F32)
    rx = S * (gu1 - gu0) * 0.45
    sh = np.exp(-(((xx - ox - S * light[0] * 0.3) / rx) ** 2 + ((yy - oy) / (rx * 0.3 + 1)) ** 2))
    canvas *= (1.0 - 0.5 * sh)[..., None]
    for dx, itilt, sc in specimen["instances"]:
        rot = tilt + math.radians(itilt)
        base = (ox + S * dx * math.cos(tilt), oy - S * dx * math.sin(tilt))
        _draw_instance(canvas, specimen, base, S * sc, rot, flip, sa, ca, light, amb)
    _foreground(canvas, rng, d, kind, (ox + S * gu0, oy - S * gv1, S * (gu1 - gu0), S * (gv1 - gv0)))
    return _finish(canvas, rng, size, d, ss)


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
            x = bx + _u(rng, 0, 1) * bw
            y = by + bh * _u(rng, 0.95, 1.1)
            ln, ang = bh * _u(rng, 0.15, 0.45), -math.pi / 2 + rng.normal(0, 0.3)
            col = _hsv(_u(rng, 0.18, 0.3), _u(rng, 0.5, 0.8), _u(rng, 0.35, 0.7))
            draw.line([(x, y), (x + ln * math.cos(ang), y + ln * math.sin(ang))], fill=(*_rgb255(col), 255),
                      width=max(1, int(R / 90)))  # fmt: skip
    elif what < 0.75:
        h, s, v = _LEAF_COLOURS[int(rng.integers(len(_LEAF_COLOURS)))]
        col = _hsv(h, s, v * _u(rng, 0.7, 1.1))
        length = max(bw, bh) * _u(rng, 0.2, 0.38)
        x = bx + bw * _u(rng, 0.0, 1.0)
        y = by + bh * _u(rng, 0.2, 1.0)
        draw.polygon(_leaf_polygon(x, y, length, length * 0.5, _u(rng, 0, math.pi)), fill=(*_rgb255(col), 255))
    else:
        col = _hsv(_u(rng, 0.06, 0.1), _u(rng, 0.3, 0.5), _u(rng, 0.2, 0.4))
        x, y = bx + bw * _u(rng, -0.2, 1.2), by + bh * _u(rng, 0.3, 1.0)
        ang = _u(rng, -0.5, 0.5)
        ln = bw * _u(rng, 0.4, 0.8)
        draw.line([(x - ln * math.cos(ang), y - ln * math.sin(ang)), (x + ln * math.cos(ang), y + ln * math.sin(ang))],
                  fill=(*_rgb255(col), 255), width=max(1, int(R / 70)))  # fmt: skip
    arr = np.asarray(layer, dtype=F32) / 255.0
    a = arr[..., 3:4]
    canvas[:] = canvas * (1 - a) + arr[..., :3] * a


# ---------------------------------------------------------------------------------------------------- OOD


def render_ood(rng: np.random.Generator, size: int, difficulty: float = 1.0) -> np.ndarray:
    """A photo that is not a mushroom (texture, sky, bare ground, stones, shapes, noise, bark, ...); uint8 HWC."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    ss = supersample(size)
    R = size * ss
    kind = OOD_KINDS[int(rng.integers(len(OOD_KINDS)))]
    if kind in ("leaves", "grass", "moss", "bare"):
        bg = {"leaves": "forest", "grass": "grass", "moss": "moss"}.get(kind)
        img, _ = _background(rng, R, d, bg or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])
    elif kind == "texture":
        c1, c2 = (_hsv(_u(rng, 0, 1), _u(rng, 0, 1), _u(rng, 0.2, 1)) for _ in range(2))
        n = _noise(rng, R, int(rng.integers(4, 40)), 3)[..., None]
        img = c1 * (1 - n) + c2 * n
    elif kind == "sky":
        top, bottom = _hsv(_u(rng, 0.55, 0.65), _u(rng, 0.4, 0.8), _u(rng, 0.6, 0.9)), _hsv(0.58, 0.15, 0.95)
        t = np.linspace(0, 1, R, dtype=F32)[:, None, None]
        img = top * (1 - t) + bottom * t + np.zeros((1, R, 1), F32)
        clouds = np.clip((_noise(rng, R, int(rng.integers(3, 8)), 3) - _u(rng, 0.4, 0.65)) * 4, 0, 1)[..., None]
        img = img * (1 - clouds) + np.array([0.95, 0.95, 0.97], F32) * clouds
    elif kind == "stones":
        img = _hsv(_u(rng, 0.05, 0.15), _u(rng, 0.0, 0.2), _u(rng, 0.3, 0.6)) * (
            0.7 + 0.6 * _noise(rng, R, R // 8, 1)[..., None]
        )
        pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(5, 25))):
            x, y, r = _u(rng, 0, R), _u(rng, 0, R), R * _u(rng, 0.04, 0.16)
            g = _hsv(_u(rng, 0.0, 0.15), _u(rng, 0.0, 0.25), _u(rng, 0.35, 0.85))
            draw.ellipse([x - r, y - r * 0.7, x + r, y + r * 0.7], fill=_rgb255(g * 0.7))
            draw.ellipse([x - r * 0.9, y - r * 0.7, x + r * 0.8, y + r * 0.5], fill=_rgb255(g))
        img = np.asarray(pil, dtype=F32) / 255.0
    elif kind == "shapes":
        pil = Image.new("RGB", (R, R), _rgb255(_hsv(_u(rng, 0, 1), _u(rng, 0, 0.6), _u(rng, 0.3, 1))))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(2, 9))):
            col = _rgb255(_hsv(_u(rng, 0, 1), _u(rng, 0.3, 1), _u(rng, 0.3, 1)))
            x0, y0 = _u(rng, -0.1, 0.9) * R, _u(rng, -0.1, 0.9) * R
            w, h = _u(rng, 0.1, 0.6) * R, _u(rng, 0.1, 0.6) * R
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
        base = _hsv(_u(rng, 0.05, 0.12), _u(rng, 0.1, 0.5), _u(rng, 0.2, 0.5))
        xs = np.linspace(0, 1, R, dtype=F32)[None, :]
        n = _noise(rng, R, 6, 2)
        stripes = 0.5 + 0.5 * np.sin(xs * _u(rng, 20, 60) + 6 * n)
        img = base * (0.5 + 0.8 * stripes[..., None] * (0.7 + 0.6 * _noise(rng, R, 20, 1)[..., None]))
    elif kind == "stripes":
        yy, xx = np.mgrid[0:R, 0:R].astype(F32) / R
        a = _u(rng, 0, math.pi)
        s = 0.5 + 0.5 * np.sin((xx * math.cos(a) + yy * math.sin(a)) * _u(rng, 6, 40))
        c1, c2 = (
            _hsv(_u(rng, 0, 1), _u(rng, 0, 1), _u(rng, 0.2, 1)),
            _hsv(_u(rng, 0, 1), _u(rng, 0, 1), _u(rng, 0.2, 1)),
        )
        img = c1 * s[..., None] + c2 * (1 - s[..., None])
    else:  # plain: a flat colour with a gentle gradient
        c = _hsv(_u(rng, 0, 1), _u(rng, 0, 0.8), _u(rng, 0.1, 1))
        t = np.linspace(-1, 1, R, dtype=F32)[:, None, None] * _u(rng, -0.15, 0.15)
        img = c * (1 + t) + np.zeros((1, R, 1), F32)
    return _finish(np.clip(np.asarray(img, dtype=F32), 0, 1), rng, size, d, ss)


def render_specimen_photos(
    appearance: dict[str, Any], species_id: str, rng: np.random.Generator, photos: int, size: int, difficulty: float
) -> list[np.ndarray]:
    """Draw one specimen from a species' traits, then photograph it `photos` times."""
    specimen = make_specimen(check_appearance(species_id, appearance), rng)
    return [render_photo(specimen, rng, size, difficulty) for _ in range(photos)]
