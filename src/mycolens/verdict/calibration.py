"""Temperature scaling and the out-of-distribution score, fitted on the validation split."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature (float64)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


OOD_SCORE = "energy(T) = -T logsumexp(logits / T), T = temperature"  # what model.json's OOD threshold applies to


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """OOD score -T logsumexp(logits / T) (Liu et al. 2020; higher = less like the training data).

    Taken at the fitted temperature: at T=1 an outlier-exposed model's log-sum-exp saturates and separates far worse.
    """
    t = float(temperature)
    z = np.asarray(logits, dtype=np.float64) / t
    m = z.max(axis=-1)
    return -t * (m + np.log(np.exp(z - m[..., None]).sum(axis=-1)))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood at a temperature."""
    p = softmax(logits, temperature)
    return float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The temperature minimising validation NLL (golden-section search on log T; deterministic)."""
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(80):
        if nll(logits, labels, np.exp(c)) < nll(logits, labels, np.exp(d)):
            b, d = d, c
            c = b - g * (b - a)
        else:
            a, c = c, d
            d = a + g * (b - a)
    return float(np.exp((a + b) / 2))


def ood_threshold(in_dist_scores: np.ndarray, keep: float = 0.95) -> float:
    """Score threshold that keeps `keep` of in-distribution (validation) images; above it we abstain."""
    return float(np.quantile(np.asarray(in_dist_scores, dtype=np.float64), keep))
