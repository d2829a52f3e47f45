"""The safety rule: probabilities to a verdict. Evaluation, offline prediction and serving all call this."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Verdict = Literal["edible", "do_not_eat", "uncertain"]
VERDICTS: tuple[Verdict, ...] = ("edible", "do_not_eat", "uncertain")
# why an answer abstained, in the order they are checked (the first that applies is reported)
ABSTAIN_REASONS = ("greyscale", "not_a_photo", "bad_exposure", "blurry", "unlike_training_data", "low_confidence")


@dataclass(frozen=True)
class InputCheck:
    """A photo statistic (a column of the model's input_stats output) that must stay on one side of a threshold."""

    stat: int  # column in input_stats
    name: str  # the statistic's name (mycolens.ood.input_stats.STAT_NAMES)
    bound: Literal["min", "max"]
    threshold: float
    reason: str  # one of ABSTAIN_REASONS

    def fails(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        return v < self.threshold if self.bound == "min" else v > self.threshold


@dataclass(frozen=True)
class VerdictRule:
    """Thresholds of the conservative verdict: the first three come from conf/export's `verdict` (no defaults
    here, so the YAML is their only source); the abstention thresholds are fitted by the export."""

    edible_min_confidence: float  # top-1 edible species must be at least this likely
    poison_max: float  # calibrated P(poisonous or deadly) must stay below this to say edible
    do_not_eat_min: float  # P(poisonous or deadly) at or above this says do_not_eat
    ood_threshold: float = float("inf")  # energy score above this abstains (the input is unlike training data)
    feature_threshold: float = float("inf")  # feature (Mahalanobis) score above this abstains
    input_checks: tuple[InputCheck, ...] = field(default_factory=tuple)  # photo statistics out of range abstain

    def to_dict(self) -> dict[str, Any]:
        return {
            "edible_min_confidence": float(self.edible_min_confidence),
            "poison_max": float(self.poison_max),
            "do_not_eat_min": float(self.do_not_eat_min),
            "ood_threshold": float(self.ood_threshold),
            "feature_threshold": float(self.feature_threshold),
            "input_checks": [
                {"stat": c.stat, "name": c.name, "bound": c.bound, "threshold": float(c.threshold), "reason": c.reason}
                for c in self.input_checks
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VerdictRule:
        """The rule from conf/export's `verdict` or as model.json writes it (older files without feature score or input
        checks still load)."""
        scalars = {
            k: float(d[k])
            for k in ("edible_min_confidence", "poison_max", "do_not_eat_min", "ood_threshold", "feature_threshold")
            if k in d
        }
        checks = tuple(
            InputCheck(int(c["stat"]), str(c["name"]), c["bound"], float(c["threshold"]), str(c["reason"]))
            for c in d.get("input_checks", ())
        )
        return cls(**scalars, input_checks=checks)


def poisonous_probability(probs: np.ndarray, dangerous: Sequence[bool]) -> np.ndarray:
    """P(poisonous or deadly) per row of an (N, C) or (C,) probability array."""
    mask = np.asarray(dangerous, dtype=bool)
    return np.asarray(probs, dtype=np.float64)[..., mask].sum(axis=-1)


def judge(
    probs: np.ndarray,
    dangerous: Sequence[bool],
    rule: VerdictRule,
    ood_scores: np.ndarray | None = None,
    feature_scores: np.ndarray | None = None,
    input_stats: np.ndarray | None = None,
) -> list[tuple[Verdict, str | None]]:
    """(verdict, abstain reason or None) per row of calibrated probabilities (N, C).

    `ood_scores` (energy) and `feature_scores` (N,): higher = less like training data; `input_stats` (N, K): the
    photo statistics the rule's input checks read. Any flag abstains before the species is looked at.
    """
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    mask = np.asarray(dangerous, dtype=bool)
    if probs.shape[1] != mask.size:
        raise ValueError(f"probabilities have {probs.shape[1]} classes, the catalogue {mask.size}")
    n = len(probs)
    p_danger = probs[:, mask].sum(axis=1)
    top = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    reason: list[str | None] = [None] * n
    if input_stats is not None and rule.input_checks:
        stats = np.asarray(input_stats, dtype=np.float64).reshape(n, -1)
        for check in rule.input_checks:
            for i in np.flatnonzero(check.fails(stats[:, check.stat])):
                reason[i] = reason[i] or check.reason
    unlike = np.zeros(n, bool)
    if ood_scores is not None:
        unlike |= np.asarray(ood_scores, dtype=np.float64).reshape(-1) > rule.ood_threshold
    if feature_scores is not None:
        unlike |= np.asarray(feature_scores, dtype=np.float64).reshape(-1) > rule.feature_threshold
    out: list[tuple[Verdict, str | None]] = []
    for i in range(n):
        if reason[i] is not None:
            out.append(("uncertain", reason[i]))
        elif unlike[i]:
            out.append(("uncertain", "unlike_training_data"))
        elif mask[top[i]] or p_danger[i] >= rule.do_not_eat_min:
            out.append(("do_not_eat", None))
        elif conf[i] >= rule.edible_min_confidence and p_danger[i] < rule.poison_max:
            out.append(("edible", None))
        else:
            out.append(("uncertain", "low_confidence"))
    return out


def decide(
    probs: np.ndarray,
    dangerous: Sequence[bool],
    rule: VerdictRule,
    ood_scores: np.ndarray | None = None,
    feature_scores: np.ndarray | None = None,
    input_stats: np.ndarray | None = None,
) -> list[Verdict]:
    """Verdict per row of calibrated probabilities (N, C) (see `judge`, which also says why it abstained)."""
    return [v for v, _ in judge(probs, dangerous, rule, ood_scores, feature_scores, input_stats)]


def judge_outputs(
    outputs: Mapping[str, np.ndarray], temperature: float, dangerous: Sequence[bool], rule: VerdictRule
) -> list[tuple[Verdict, str | None]]:
    """Verdicts and reasons from the model's outputs ({logits[, feature_score, input_stats]}) at the fitted T."""
    from mycolens.verdict.calibration import energy_score, softmax

    logits = outputs["logits"]
    return judge(
        softmax(logits, temperature),
        dangerous,
        rule,
        energy_score(logits, temperature),
        outputs.get("feature_score"),
        outputs.get("input_stats"),
    )


def decide_logits(
    logits: np.ndarray, temperature: float, dangerous: Sequence[bool], rule: VerdictRule
) -> list[Verdict]:
    """Verdicts for raw logits alone: calibrated probabilities and the energy OOD score at the fitted temperature."""
    return [v for v, _ in judge_outputs({"logits": logits}, temperature, dangerous, rule)]


def decide_outputs(
    outputs: Mapping[str, np.ndarray], temperature: float, dangerous: Sequence[bool], rule: VerdictRule
) -> list[Verdict]:
    """Verdicts from all the model's outputs (logits, feature score, input statistics)."""
    return [v for v, _ in judge_outputs(outputs, temperature, dangerous, rule)]
