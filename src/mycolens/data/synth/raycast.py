"""Orthographic ray casting: hits with ellipsoids and bodies of revolution, Lambert shading, Voronoi cells."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def ray_ellipsoid(
    u: np.ndarray, vp: np.ndarray, a: float, c: float, z0: float, sa: float, ca: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of orthographic rays with the ellipsoid x^2/a^2 + y^2/a^2 + (z-z0)^2/c^2 = 1."""
    ia, ic = 1.0 / (a * a), 1.0 / (c * c)
    A = ca * ca * ia + sa * sa * ic
    w = vp * ca - z0
    B = -2.0 * vp * sa * ca * ia + 2.0 * w * sa * ic
    C = (u * u + (vp * sa) ** 2) * ia + w * w * ic - 1.0
    D = B * B - 4.0 * A * C
    t = (-B + np.sqrt(np.maximum(D, 0.0))) / (2.0 * A)
    return D >= 0, vp * sa - t * ca, vp * ca + t * sa, t


def revolve(
    u: np.ndarray,
    vp: np.ndarray,
    sa: float,
    ca: float,
    wfun: Callable[[np.ndarray], np.ndarray],
    zlo: float,
    zhi: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Front surface of a body of revolution about the z axis with radius wfun(z) for zlo <= z <= zhi."""
    z = vp / ca
    for _ in range(2):
        w = wfun(z)
        yf = -np.sqrt(np.maximum(w * w - u * u, 0.0))
        z = (vp - yf * sa) / ca
    w = wfun(z)
    yf = -np.sqrt(np.maximum(w * w - u * u, 0.0))
    return (u * u <= w * w) & (z >= zlo) & (z <= zhi), z, yf, w


def lambert(nx: np.ndarray, ny: np.ndarray, nz: np.ndarray, light: Sequence[float], amb: float) -> np.ndarray:
    """Ambient + sun (light[:3]) + a fill light from the camera (light[3:], pre-scaled)."""
    inv = 1.0 / np.sqrt(nx * nx + ny * ny + nz * nz + 1e-9)
    sun = np.clip((nx * light[0] + ny * light[1] + nz * light[2]) * inv, 0.0, 1.0)
    fill = np.clip((nx * light[3] + ny * light[4] + nz * light[5]) * inv, 0.0, 1.0)
    return amb + (1.0 - amb) * sun + fill


def voronoi(p: np.ndarray, seeds: np.ndarray, zscale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
