"""Species appearance: a species' catalogue traits checked, then one specimen's colours, shape and patterns drawn."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mycolens.data.scenes.paint import F32, hsv, unif

CAPS = ("funnel", "umbo", "conical", "brain", "bun", "convex", "flat")
UNDERSIDES = ("gills", "ridges", "pores", "none")
STEMS = ("tapered", "tall_banded", "stout", "bulbous_net", "plain")
SPOTS = ("none", "scales", "warts")
TEXTURES = ("smooth", "scaly", "honeycomb", "brain", "cracked")

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


def _sphere_points(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.normal(size=(n, 3))
    return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(F32)


def make_specimen(traits: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One find: fixed colours, proportions and pattern seeds drawn once from validated species traits."""
    t = traits
    sp: dict[str, Any] = {k: t[k] for k in (*_CHOICES, *_BOOLS)}
    ch, cs, cv = unif(rng, *t["cap_hue"]), unif(rng, *t["cap_sat"]), unif(rng, *t["cap_val"])
    sp["cap_rgb"] = hsv(ch, cs, cv)
    sp["cap_dark"] = hsv(ch - 0.015, min(1.0, cs * 1.15 + 0.15), cv * unif(rng, 0.4, 0.6))
    sp["centre_dark"] = unif(rng, 0.15, 0.55)
    sh = unif(rng, *t["stem_hue"])
    ss_, sv = unif(rng, *t["stem_sat"]), unif(rng, *t["stem_val"])
    sp["stem_rgb"] = hsv(sh, ss_, sv)
    under = t["underside"]
    if under == "pores":
        ph = unif(rng, *t["pore_hue"]) if t["pore_hue"] else ch
        ps = unif(rng, *t["pore_sat"]) if t["pore_sat"] else cs * 0.5
        sp["under_rgb"] = hsv(ph, ps, unif(rng, *t["pore_val"]))
    elif under in ("gills", "ridges"):
        gh = unif(rng, *t["gill_hue"]) if t["gill_hue"] else ch + unif(rng, -0.005, 0.01)
        gs = unif(rng, *t["gill_sat"]) if t["gill_sat"] else cs * unif(rng, 0.8, 0.95)
        gv = unif(rng, *t["gill_val"]) if t["gill_hue"] else cv * unif(rng, 0.85, 0.97)
        sp["under_rgb"] = hsv(gh, gs, gv)
    else:
        sp["under_rgb"] = sp["cap_dark"] * F32(0.8)
    nh = unif(rng, *t["net_hue"]) if t["net_hue"] else sh
    ns = unif(rng, *t["net_sat"]) if t["net_sat"] else min(1.0, ss_ + 0.1)
    nv = unif(rng, *t["net_val"]) if t["net_val"] else sv * 0.9
    sp["net_rgb"] = hsv(nh, ns, nv)
    sp["band_rgb"] = hsv(ch - 0.01, min(1.0, cs + 0.35), cv * unif(rng, 0.4, 0.55))  # parasol snakeskin bands
    sp["ring_rgb"] = hsv(sh, ss_ * 0.5, min(1.0, sv * 1.05 + 0.05))
    sp["volva_rgb"] = hsv(unif(rng, 0.1, 0.13), unif(rng, 0.02, 0.12), unif(rng, 0.85, 0.97))
    sp["wart_rgb"] = hsv(unif(rng, 0.1, 0.14), unif(rng, 0.03, 0.18), unif(rng, 0.88, 1.0))
    sp["scale_rgb"] = hsv(ch - 0.01, min(1.0, cs + 0.3), cv * unif(rng, 0.35, 0.5))
    sp["n_gills"] = int(rng.integers(44, 60))
    sp["n_ridges"] = int(rng.integers(11, 15))
    sp["fork_at"] = unif(rng, 0.45, 0.6)
    sp["pore_k"] = unif(rng, 26.0, 34.0)
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
        sp["w0"], sp["hf"] = (
            unif(rng, 0.15, 0.22),
            unif(rng, 0.65, 0.85),
        )  # k_f <= 1.52 keeps the ray quadratic well posed
        sp["k_f"] = math.sqrt(1.0 - sp["w0"] ** 2) / sp["hf"]
        sp["wave_amp"], sp["wave_k"] = unif(rng, 0.03, 0.08), int(rng.integers(3, 7))
        sp["c"], sp["z0"], sp["cap_top"] = 0.0, 0.0, 0.08
        return
    if cap == "convex":
        c = unif(rng, 0.48, 0.7)
        z0 = -c * unif(rng, 0.0, 0.15)
    elif cap == "bun":
        c = unif(rng, 0.62, 0.82)
        z0 = -c * unif(rng, 0.18, 0.3)
    elif cap == "flat":
        c = unif(rng, 0.24, 0.34)
        z0 = -c * unif(rng, 0.0, 0.15)
    elif cap == "umbo":
        c = unif(rng, 0.22, 0.3)
        z0 = -c * unif(rng, 0.0, 0.1)
        cu = unif(rng, 0.12, 0.18)
        sp["umbo"] = (unif(rng, 0.24, 0.32), cu, z0 + c - cu * 0.35)
    elif cap == "conical":
        c = unif(rng, 1.4, 1.9)
        z0 = c * unif(rng, 0.5, 0.62)
        sp["egg"] = unif(rng, 0.2, 0.38)
    else:  # brain
        c = unif(rng, 0.72, 0.92)
        z0 = c * unif(rng, 0.25, 0.4)
        sp["lobes"] = [(int(k), unif(rng, 0.05, 0.13), unif(rng, 0, 2 * math.pi)) for k in (2, 3, 5, 7)]
    sp["c"], sp["z0"] = c, z0
    sp["cap_top"] = z0 + c + (sp["umbo"][1] * 0.7 if sp["umbo"] else 0.0)
    sp["r0"] = sp["a"] * math.sqrt(max(1.0 - (z0 / c) ** 2, 0.0)) if z0 < c else 0.0


def _stem_geometry(sp: dict[str, Any], rng: np.random.Generator) -> None:
    stem, cap = sp["stem"], sp["cap"]
    top = -sp["hf"] + 0.03 if cap == "funnel" else 0.0
    if stem == "tapered":
        hs, wt, wb = unif(rng, 0.7, 1.15), sp.get("w0", 0.2), unif(rng, 0.08, 0.12)
    elif stem == "tall_banded":
        hs, wt = unif(rng, 1.8, 2.4), unif(rng, 0.085, 0.11)
        wb = wt * unif(rng, 1.1, 1.25)
    elif stem == "stout":
        base_r = sp.get("r0", 0.6) or 0.6
        hs = unif(rng, 0.75, 1.2)
        wt = base_r * unif(rng, 0.7, 0.85) if sp["cap"] == "conical" else unif(rng, 0.35, 0.5)
        wb = wt * unif(rng, 1.0, 1.15)
    elif stem == "bulbous_net":
        hs, wt = unif(rng, 1.0, 1.45), unif(rng, 0.22, 0.3)
        wb = wt
        sp["w_bulb"] = unif(rng, 0.45, 0.6)
    else:  # plain
        hs, wt = unif(rng, 1.25, 1.9), unif(rng, 0.12, 0.18)
        wb = wt * unif(rng, 1.1, 1.3)
    sp["hs"], sp["w_top"], sp["w_bot"] = hs, wt, wb
    sp["z_stem_top"], sp["z_ground"] = top, top - hs
    sp["z_ring"] = top - hs * (unif(rng, 0.12, 0.22) if stem != "tall_banded" else unif(rng, 0.25, 0.35))
    sp["ring_h"], sp["ring_flare"] = unif(rng, 0.09, 0.14), unif(rng, 0.08, 0.13)
    sp["volva_h"] = min(0.5, hs * unif(rng, 0.2, 0.28))
    sp["volva_w"] = wb * unif(rng, 1.7, 2.0)
    sp["band_period"] = unif(rng, 0.16, 0.24)
    sp["net_k"] = (unif(rng, 8.0, 11.0), unif(rng, 16.0, 22.0))
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
    sp["fold_k"] = (unif(rng, 6.0, 8.0), unif(rng, 4.0, 6.0), unif(rng, 5.0, 7.0))


def _cluster_layout(sp: dict[str, Any], rng: np.random.Generator) -> None:
    """Instances of one find: (base offset, tilt degrees, scale); several fused stems when `cluster`."""
    if not sp["cluster"]:
        sp["instances"] = [(0.0, 0.0, 1.0)]
        return
    n = int(rng.integers(3, 6))
    tilts = np.sort(rng.uniform(-38, 38, n))
    inst = [(float(rng.uniform(-0.15, 0.15)), float(tl), unif(rng, 0.55, 0.85)) for tl in tilts]
    order = rng.permutation(n)
    sp["instances"] = [inst[i] for i in order]
