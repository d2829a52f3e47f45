"""PNG plots for reports/plots: confusion matrix (dangerous confusions in red) and reliability diagrams."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mycolens.catalogue import Catalogue
from mycolens.utils.io import atomic_path
from mycolens.verdict.metrics import dangerous_confusions, reliability

DANGER = "#d62728"


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Write a figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return Path(path)


def plot_confusion(cm: np.ndarray, catalogue: Catalogue, path: str | Path, title: str = "confusion matrix") -> Path:
    """Row-normalised confusion matrix; cells where a poisonous/deadly species is predicted as an edible one are red."""
    n = catalogue.num_classes
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    danger = dangerous_confusions(n, catalogue.dangerous_mask)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if danger[i, j]:  # the confusions that could poison someone: faint red when empty, solid red when not
                alpha = 0.85 if cm[i, j] else 0.12
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color=DANGER, alpha=alpha, linewidth=0))
            if cm[i, j]:
                color = "white" if danger[i, j] or share[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=color,
                    weight="bold" if danger[i, j] else "normal",
                )
    labels = [f"{s.common_name} ({s.edibility[0].upper()})" for s in catalogue.species]
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    for tick, s in zip(ax.get_yticklabels(), catalogue.species, strict=True):
        tick.set_color(DANGER if s.dangerous else "black")
    ax.set_xlabel("predicted species")
    ax.set_ylabel("true species (red: poisonous/deadly)")
    ax.set_title(f"{title}\nred cells: a poisonous/deadly species predicted as an edible one", fontsize=9)
    return _save(fig, path)


def plot_reliability(
    probs_before: np.ndarray,
    probs_after: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    temperature: float,
    bins: int = 15,
) -> Path:
    """Reliability diagrams before and after temperature scaling, side by side, with their ECE."""
    from mycolens.verdict.metrics import ece

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, probs, name in (
        (axes[0], probs_before, "before (T = 1)"),
        (axes[1], probs_after, f"after (T = {temperature:.2f})"),
    ):
        r = reliability(probs, labels, bins)
        centers = (r["edges"][:-1] + r["edges"][1:]) / 2
        filled = r["count"] > 0
        ax.bar(centers[filled], r["accuracy"][filled], width=1 / bins, edgecolor="black", alpha=0.75, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ax.plot(r["confidence"][filled], r["accuracy"][filled], "o", color="black", ms=3, label="mean confidence")
        ax.set_title(f"{name}: ECE {ece(probs, labels, bins):.3f}", fontsize=10)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("reliability on the test split", fontsize=11)
    return _save(fig, path)


def plot_risk_coverage(curves: dict[str, tuple[np.ndarray, np.ndarray, float, float]], path: str | Path) -> Path:
    """Error rate of the answered photos vs the share answered, per variant (AURC in the legend; the dot is the
    coverage the verdict rule actually answers at)."""
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for name, (coverage, risk, aurc, answered) in curves.items():
        (line,) = ax.plot(coverage, risk, label=f"{name} (AURC {aurc:.4f})")
        if len(coverage):
            k = int(np.clip(round(answered * len(coverage)) - 1, 0, len(coverage) - 1))
            ax.plot([coverage[k]], [risk[k]], "o", color=line.get_color())
    ax.set_xlabel("coverage (share of test photos answered, most confident first)")
    ax.set_ylabel("risk (error rate of the answered)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("selective prediction: risk vs coverage (dot: the verdict rule's coverage)")
    return _save(fig, path)
