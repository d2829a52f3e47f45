"""The figures users read, from labels, predictions, probabilities and verdicts (plain numpy).

Names match DESIGN.md: accuracy, macro_f1, ece, unsafe_edible_rate, poison_cost, abstain_rate, ood_abstain_rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POISON_COST_DANGEROUS_AS_EDIBLE = 100.0  # FungiCLEF: a poisonous species predicted as an edible one
POISON_COST_EDIBLE_AS_DANGEROUS = 1.0  # FungiCLEF: an edible species predicted as a poisonous one


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Share of images whose top-1 class is the true class."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    return float((labels == preds).mean()) if len(labels) else 0.0


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return cm


def macro_f1(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """Unweighted mean F1 over the classes present in labels or predictions."""
    cm = confusion_matrix(labels, preds, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    present = (support + predicted) > 0
    if not present.any():
        return 0.0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=(support + predicted) > 0)
    return float(f1[present].mean())


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: count, mean confidence and accuracy of the top-1 prediction."""
    probs = np.asarray(probs, np.float64)
    conf, correct = probs.max(1), (probs.argmax(1) == np.asarray(labels)).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # (lo, hi] bins, as in Guo et al. 2017
    count = np.bincount(which, minlength=bins).astype(np.float64)
    mean_conf = np.divide(np.bincount(which, conf, bins), count, out=np.zeros(bins), where=count > 0)
    acc = np.divide(np.bincount(which, correct, bins), count, out=np.zeros(bins), where=count > 0)
    return {"count": count, "confidence": mean_conf, "accuracy": acc, "edges": np.linspace(0, 1, bins + 1)}


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: count-weighted mean |accuracy - confidence| over `bins` confidence bins."""
    if len(labels) == 0:
        return 0.0
    r = reliability(probs, labels, bins)
    return float((r["count"] * np.abs(r["accuracy"] - r["confidence"])).sum() / r["count"].sum())


def ece_noise_floor(probs: np.ndarray, bins: int = 15, draws: int = 200, seed: int = 0) -> float:
    """Mean ECE of a perfectly calibrated model with these confidences on this many images: the estimator's own
    noise, from labels drawn so that each top-1 is right with exactly its stated confidence."""
    probs = np.asarray(probs, np.float64)
    if len(probs) == 0:
        return 0.0
    conf, top = probs.max(1), probs.argmax(1)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(draws)):
        right = rng.random(len(conf)) < conf
        values.append(ece(probs, np.where(right, top, (top + 1) % probs.shape[1]), bins))
    return float(np.mean(values))


def unsafe_edible_rate(verdicts: Sequence[str], labels: np.ndarray, dangerous: Sequence[bool]) -> float:
    """Share of poisonous/deadly images (label >= 0) whose verdict is "edible": the key safety figure (0 when none)."""
    labels = np.asarray(labels, np.int64)
    mask = np.asarray(dangerous, bool)
    danger = (labels >= 0) & mask[np.clip(labels, 0, None)]
    if not danger.any():
        return 0.0
    return float((np.asarray(verdicts)[danger] == "edible").mean())


def poison_cost(labels: np.ndarray, preds: np.ndarray, dangerous: Sequence[bool]) -> float:
    """FungiCLEF's poisonous/edible confusion cost of the top-1 species, per image.

    (100 x images of a poisonous/deadly species predicted as an edible species
    + 1 x images of an edible species predicted as a poisonous/deadly species) / N.
    It scores the predicted species, not the verdict (which may abstain); see unsafe_edible_rate for that.
    """
    labels, preds = np.asarray(labels, np.int64), np.asarray(preds, np.int64)
    if len(labels) == 0:
        return 0.0
    mask = np.asarray(dangerous, bool)
    true_danger, pred_danger = mask[labels], mask[preds]
    cost = POISON_COST_DANGEROUS_AS_EDIBLE * (true_danger & ~pred_danger).sum()
    cost += POISON_COST_EDIBLE_AS_DANGEROUS * (~true_danger & pred_danger).sum()
    return float(cost / len(labels))


def abstain_rate(verdicts: Sequence[str]) -> float:
    """Share of verdicts that are "uncertain" (0 when there are none)."""
    v = np.asarray(verdicts)
    return float((v == "uncertain").mean()) if len(v) else 0.0


def ood_abstain_rate(ood_verdicts: Sequence[str]) -> float:
    """Share of out-of-distribution (not-mushroom) images the rule abstains on ("uncertain")."""
    return abstain_rate(ood_verdicts)


def verdict_counts(verdicts: Sequence[str]) -> dict[str, int]:
    """How many of each verdict."""
    v = list(verdicts)
    return {k: v.count(k) for k in ("edible", "do_not_eat", "uncertain")}


def dangerous_confusions(num_classes: int, dangerous: Sequence[bool]) -> np.ndarray:
    """(C, C) mask of the cells where a poisonous/deadly true class is predicted as an edible class."""
    mask = np.asarray(dangerous, bool)
    if mask.size != num_classes:
        raise ValueError(f"dangerous mask has {mask.size} classes, expected {num_classes}")
    return mask[:, None] & ~mask[None, :]
