"""Mushroom parts ray-cast in 3D: caps and their textures, undersides, stems, rings and volvas."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mycolens.data.scenes.paint import F32
from mycolens.data.synth.raycast import lambert, ray_ellipsoid, revolve, voronoi


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
    hit, y, z, t = ray_ellipsoid(uu, vv, a, c, z0, sa, ca)
    dome = hit & (z >= 0.0)
    x = uu
    if sp["umbo"]:
        au, cu, zu = sp["umbo"]
        hit2, y2, z2, t2 = ray_ellipsoid(u, vp, au, cu, zu, sa, ca)
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
    shade = lambert(nx, ny, nz, light, amb)
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
        _, gap, d1 = voronoi(np.stack([x, y, z], 1), sp["seeds"], zscale=0.55)
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
        nearest, gap, _ = voronoi(np.stack([x, y, z], 1), sp["seeds"])
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
        shade = lambert(x, y, -k * k * (z - zs), light, amb) + 0.1
        out[so] = col * shade[:, None]
    if inner.any():
        x, y, z = u[inner], yfr[inner], zfr[inner]
        q = np.clip((z - zs) / sp["hf"], 0, 1)
        col = sp["cap_rgb"][None, :] * (1 - 0.4 * (1 - q)[:, None]) + sp["cap_dark"][None, :] * 0.4 * (1 - q)[:, None]
        shade = lambert(-x, -y, k * k * (z - zs) + 0.3, light, amb)
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
    mask, z, yf, w = revolve(u, vp, sa, ca, lambda zz: _stem_width(sp, zz), zg, zt)
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
    shade = lambert(x, y, np.zeros_like(x), light, amb)
    occl = 1.0 - 0.45 * np.exp(-np.maximum(sp["z_stem_top"] - z, 0.0) / 0.18)  # in the shadow of the cap
    return mask, col * (shade * occl)[:, None]


def _ring(sp, u, vp, sa, ca, light, amb):
    """A skirt-like ring hanging from the stem."""
    zr, hr, fl = sp["z_ring"], sp["ring_h"], sp["ring_flare"]
    wr0 = float(_stem_width(sp, np.float32(zr)))

    def wfun(zz):
        return wr0 + 0.01 + fl * np.clip((zr - zz) / hr, 0.0, 1.0) ** 0.6

    mask, z, yf, w = revolve(u, vp, sa, ca, wfun, zr - hr, zr)
    if not mask.any():
        return mask, np.zeros((0, 3), F32)
    x, y, z = u[mask], yf[mask], z[mask]
    edge = (zr - z) / hr > 0.8
    col = np.where(edge[:, None], sp["ring_rgb"][None, :] * 0.72, sp["ring_rgb"][None, :])
    if sp["stem"] == "tall_banded":
        col = np.where(((zr - z) / hr > 0.45)[:, None] & ~edge[:, None], sp["band_rgb"][None, :] * 1.4, col)
    shade = lambert(x, y, np.full_like(x, -0.4), light, amb) * 1.05
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

    mask, z, yf, w = revolve(u, vp, sa, ca, wfun, zg, zg + hv * 1.25)
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
    shade = lambert(x, y, np.full_like(x, 0.1), light, amb)
    return mask, col * shade[:, None]


def draw_instance(
    canvas: np.ndarray,
    sp: dict[str, Any],
    origin: tuple[float, float],
    S: float,
    rot: float,
    flip: bool,
    sa: float,
    ca: float,
    light: tuple[float, ...],
    amb: float,
) -> None:
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
