"""Training-time safety metric: the share of dangerous images that the verdict rule would call edible."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from mycolens.verdict.rule import VerdictRule, decide


class UnsafeEdibleRate(Metric):
    """unsafe_edible_rate: poisonous/deadly images whose verdict is "edible" (uncalibrated during training)."""

    full_state_update = False

    def __init__(self, dangerous: Sequence[bool], rule: VerdictRule) -> None:
        super().__init__()
        self.dangerous = list(dangerous)
        self.rule = rule
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.probs.append(probs.detach().float())
        self.target.append(target.detach())

    def compute(self) -> torch.Tensor:
        probs = dim_zero_cat(self.probs).cpu().numpy()
        target = dim_zero_cat(self.target).cpu().numpy()
        danger = np.asarray(self.dangerous, bool)[target]
        if not danger.any():
            return torch.tensor(0.0)
        verdicts = np.asarray(decide(probs[danger], self.dangerous, self.rule))
        return torch.tensor(float((verdicts == "edible").mean()))
