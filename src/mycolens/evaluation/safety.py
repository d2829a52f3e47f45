"""The safety rule: probabilities to a verdict. Evaluation, offline prediction and serving all call this."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Verdict = Literal["edible", "do_not_eat", "uncertain"]
VERDICTS: tuple[Verdict, ...] = ("edible", "do_not_eat", "uncertain")


@dataclass(frozen=True)
class VerdictRule:
    """Thresholds of the conservative verdict (defaults live in conf/export)."""

    edible_min_confidence: float = 0.9  # top-1 edible species must be at least this likely
    poison_max: float = 0.02  # calibrated P(poisonous or deadly) must stay below this to say edible
    do_not_eat_min: float = 0.5  # P(poisonous or deadly) at or above this says do_not_eat
    ood_threshold: float = float("inf")  # OOD score above this abstains (the input is unlike training data)

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def poisonous_probability(probs: np.ndarray, dangerous: Sequence[bool]) -> np.ndarray:
    """P(poisonous or deadly) per row of an (N, C) or (C,) probability array."""
    mask = np.asarray(dangerous, dtype=bool)
    return np.asarray(probs, dtype=np.float64)[..., mask].sum(axis=-1)


def decide(
    probs: np.ndarray,
    dangerous: Sequence[bool],
    rule: VerdictRule,
    ood_scores: np.ndarray | None = None,
) -> list[Verdict]:
    """Verdict per row of calibrated probabilities (N, C); `ood_scores` (N,) higher = less like training data."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    mask = np.asarray(dangerous, dtype=bool)
    if probs.shape[1] != mask.size:
        raise ValueError(f"probabilities have {probs.shape[1]} classes, the catalogue {mask.size}")
    p_danger = probs[:, mask].sum(axis=1)
    top = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    ood = np.zeros(len(probs), bool) if ood_scores is None else np.asarray(ood_scores).reshape(-1) > rule.ood_threshold
    out: list[Verdict] = []
    for i in range(len(probs)):
        if ood[i]:
            out.append("uncertain")
        elif mask[top[i]] or p_danger[i] >= rule.do_not_eat_min:
            out.append("do_not_eat")
        elif conf[i] >= rule.edible_min_confidence and p_danger[i] < rule.poison_max:
            out.append("edible")
        else:
            out.append("uncertain")
    return out


def decide_logits(
    logits: np.ndarray, temperature: float, dangerous: Sequence[bool], rule: VerdictRule
) -> list[Verdict]:
    """Verdicts for raw logits: calibrated probabilities and the OOD score, both at the fitted temperature."""
    from mycolens.evaluation.calibration import energy_score, softmax

    return decide(softmax(logits, temperature), dangerous, rule, energy_score(logits, temperature))
