"""Fit the abstention rule: temperature and energy threshold on validation, feature threshold on validation,
input-check bounds on training photos. Nothing here ever sees an outlier or a test image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mycolens.ood.input_stats import STAT_NAMES
from mycolens.verdict.calibration import energy_score, fit_temperature, ood_threshold
from mycolens.verdict.rule import ABSTAIN_REASONS, InputCheck, VerdictRule


@dataclass(frozen=True)
class OodSettings:
    """conf/export's `ood` section (see conf/export/default.yaml for the meaning of each value)."""

    keep: float  # the energy threshold and the feature threshold each keep this share of validation photos
    feature_normalize: bool
    feature_shrinkage: float
    checks_keep: float
    checks: tuple[dict[str, str], ...]

    @classmethod
    def from_config(cls, keep: float, ood: Mapping[str, Any]) -> OodSettings:
        checks = tuple({k: str(v) for k, v in dict(c).items()} for c in ood["input_checks"]["checks"])
        for c in checks:
            if (
                c.get("stat") not in STAT_NAMES
                or c.get("bound") not in ("min", "max")
                or c.get("reason") not in ABSTAIN_REASONS
            ):
                raise ValueError(
                    f"bad input check {c}: stat in {STAT_NAMES}, bound min|max, reason in {ABSTAIN_REASONS}"
                )
        return cls(
            keep=float(keep),
            feature_normalize=bool(ood["feature"]["normalize"]),
            feature_shrinkage=float(ood["feature"]["shrinkage"]),
            checks_keep=float(ood["input_checks"]["keep"]),
            checks=checks,
        )


def fit_input_checks(
    train_stats: np.ndarray, checks: Sequence[Mapping[str, str]], keep: float
) -> tuple[InputCheck, ...]:
    """Each bound at the quantile that keeps `keep` of the training photos on the allowed side."""
    out = []
    for c in checks:
        k = STAT_NAMES.index(c["stat"])
        q = 1.0 - keep if c["bound"] == "min" else keep
        thr = float(np.quantile(np.asarray(train_stats, np.float64)[:, k], q))
        out.append(InputCheck(k, c["stat"], c["bound"], thr, c["reason"]))  # type: ignore[arg-type]
    return tuple(out)


def fit_rule(
    base: VerdictRule,
    val: Mapping[str, np.ndarray],
    y_val: np.ndarray,
    train_stats: np.ndarray,
    settings: OodSettings,
    temperature: float | None = None,
) -> tuple[float, VerdictRule]:
    """The temperature (fitted unless given) and the full rule: `base`'s verdict thresholds plus every fitted
    abstention threshold, for the model whose outputs `val` and `train_stats` are."""
    keep = np.asarray(y_val) >= 0
    logits = np.asarray(val["logits"])[keep]
    if temperature is None:
        temperature = fit_temperature(logits, np.asarray(y_val)[keep])
    rule = dataclasses.replace(
        base,
        ood_threshold=ood_threshold(energy_score(logits, temperature), settings.keep),
        feature_threshold=ood_threshold(np.asarray(val["feature_score"])[keep], settings.keep),
        input_checks=fit_input_checks(train_stats, settings.checks, settings.checks_keep),
    )
    return temperature, rule


def fitted_on(train_split: str, val_split: str) -> dict[str, str]:
    """Which data fitted each part of the rule (written into model.json and metrics.json)."""
    return {
        "temperature": val_split,
        "energy_threshold": val_split,
        "feature_centres_and_covariance": train_split,
        "feature_threshold": val_split,
        "input_check_bounds": train_split,
        "outlier_exposure": "procedural outlier families of data.outliers (their own seed), never an OOD test set",
        "early_stopping_and_checkpoint": "val",
    }
