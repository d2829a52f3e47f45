"""Distribution summaries and drift scores: population stability index (PSI) and the two-sample KS statistic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

QUANTILES = 201  # stored reference quantiles (0%, 0.5%, ..., 100%): enough for a KS statistic within 1%
SMOOTHING = 0.5  # pseudo-count per bin, so an empty bin never gives an infinite PSI


def bin_edges(values: np.ndarray, bins: int) -> list[float]:
    """Cut points at the reference's quantiles; a value held by many images (an atom) gets a bin of its own."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    cuts = np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else np.array([v[len(v) // 2]])
    edges = set(cuts.tolist())
    for c in np.unique(cuts):
        if np.count_nonzero(v == c) > len(v) / (2 * bins):  # many exact ties: split "== c" from "> c"
            edges.add(float(np.nextafter(c, np.inf)))
    return sorted(edges)


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts per bin: (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="right")
    return np.bincount(idx, minlength=len(edges) + 1)


def psi(reference_counts: Sequence[float], live_counts: Sequence[float]) -> float:
    """Population stability index of two histograms over the same bins (0 = same; above ~0.2 = a real shift)."""
    r = np.asarray(reference_counts, dtype=np.float64) + SMOOTHING
    q = np.asarray(live_counts, dtype=np.float64) + SMOOTHING
    r, q = r / r.sum(), q / q.sum()
    return float(np.sum((q - r) * np.log(q / r)))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance between the two empirical CDFs (ties handled)."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    if not len(a) or not len(b):
        return 0.0
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def summarize_numeric(values: Sequence[float], bins: int) -> dict[str, Any]:
    """Reference summary of a numeric feature: bin edges, counts per bin, quantiles, mean and std."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        raise ValueError("cannot summarize an empty feature")
    edges = bin_edges(v, bins)
    return {
        "kind": "numeric",
        "count": len(v),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "edges": edges,
        "counts": bin_counts(v, edges).tolist(),
        "quantiles": np.quantile(v, np.linspace(0, 1, QUANTILES)).tolist(),
    }


def summarize_categorical(values: Sequence[str], categories: Sequence[str]) -> dict[str, Any]:
    """Reference summary of a categorical feature: counts per known category."""
    cats = list(categories)
    counts = [0] * len(cats)
    pos = {c: i for i, c in enumerate(cats)}
    for x in values:
        if x in pos:
            counts[pos[x]] += 1
    return {"kind": "categorical", "count": int(sum(counts)), "categories": cats, "counts": counts}


def categorical_counts(values: Sequence[str], categories: Sequence[str]) -> np.ndarray:
    """Live counts per known category, plus one last bin for anything else."""
    pos = {c: i for i, c in enumerate(categories)}
    out = np.zeros(len(categories) + 1, dtype=np.int64)
    for x in values:
        out[pos.get(x, len(categories))] += 1
    return out


def score(summary: dict[str, Any], live: Sequence[Any], method: str) -> float:
    """Drift score of live values against a reference summary: PSI, or KS for numeric features when asked."""
    if summary["kind"] == "categorical":
        ref = [*summary["counts"], 0]
        return psi(ref, categorical_counts(live, summary["categories"]))
    if method == "ks":
        return ks_statistic(np.asarray(summary["quantiles"]), np.asarray(live, dtype=np.float64))
    if method == "psi":
        return psi(summary["counts"], bin_counts(np.asarray(live, dtype=np.float64), summary["edges"]))
    raise ValueError(f"unknown drift method {method!r}; use psi or ks")
