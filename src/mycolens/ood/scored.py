"""The classifier with its out-of-distribution scores as extra outputs, so the exported graph carries them.

`ScoredNet(x) -> (logits, feature_score, input_stats)`: the feature score is the Mahalanobis distance of the
penultimate features to the closest class centre (Lee et al. 2018), fitted with pytorch-ood on the training split;
input_stats are the photo checks of `mycolens.ood.input_stats`. Neither needs an outlier to fit.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mycolens.ood.input_stats import InputStats

OUTPUT_NAMES = ("logits", "feature_score", "input_stats")


def split_head(net: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """A copy of `net` that returns its penultimate features, and the last Linear layer (the class head)."""
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no Linear class head to take features before")
    body = copy.deepcopy(net).eval()
    head = body.get_submodule(linears[-1])
    body.set_submodule(linears[-1], nn.Identity())
    return body, head


def _unit(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=1, keepdim=True).clamp(min=1e-12)


log = logging.getLogger(__name__)


class MahalanobisScore(nn.Module):
    """Half the squared Mahalanobis distance to the closest class centre (pytorch-ood's score, vectorised)."""

    def __init__(self, mu: torch.Tensor, precision: torch.Tensor, normalize: bool) -> None:
        super().__init__()
        self.register_buffer("mu", mu.float().clone())
        self.register_buffer("precision", precision.float().clone())
        self.normalize = bool(normalize)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            z = _unit(z)
        d = z.unsqueeze(1) - self.mu.unsqueeze(0)  # (N, C, D)
        m = ((d @ self.precision) * d).sum(dim=-1)  # (N, C)
        return 0.5 * m.amin(dim=1)


def fit_mahalanobis(
    features: torch.Tensor, labels: torch.Tensor, normalize: bool, shrinkage: float
) -> MahalanobisScore:
    """Class centres and shared covariance of in-distribution features, fitted by pytorch-ood.

    The covariance is shrunk towards a multiple of the identity, so the precision stays well conditioned (and
    the same in float32 ONNX as in PyTorch) even with fewer images than feature dimensions.
    """
    from pytorch_ood.detector import Mahalanobis

    z = (_unit(features) if normalize else features).double()
    # centres of the classes that have images (pytorch-ood needs labels 0..K-1, all present): a species with no
    # training photo (e.g. a retrain whose data lost it) has no centre, and the score is the distance to the others
    present, dense = torch.unique(labels.long(), return_inverse=True)
    if len(present) < int(labels.max()) + 1:
        log.warning(
            "feature score: %s classes have no training images and get no centre", int(labels.max()) + 1 - len(present)
        )
    det = Mahalanobis(None).fit_features(z, dense)
    cov = det.cov / len(z)  # pytorch-ood keeps the unnormalised sum of centred outer products
    d = cov.shape[0]
    cov = (1.0 - shrinkage) * cov + shrinkage * (torch.trace(cov) / d) * torch.eye(d, dtype=cov.dtype)
    return MahalanobisScore(det.mu, torch.linalg.inv(cov), normalize)


class ScoredNet(nn.Module):
    """body -> features -> head -> logits, plus the feature score and the input statistics."""

    def __init__(self, body: nn.Module, head: nn.Module, score: nn.Module, stats: InputStats) -> None:
        super().__init__()
        self.body, self.head, self.score, self.stats = body, head, score, stats

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.body(x)
        return self.head(z), self.score(z), self.stats(x)


@torch.no_grad()
def penultimate(body: nn.Module, x: np.ndarray, batch_size: int) -> torch.Tensor:
    """Features of a float32 NCHW array, in batches."""
    out = [body(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))) for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def build_scored_net(
    net: nn.Module,
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    normalize: bool,
    shrinkage: float,
    batch_size: int,
) -> ScoredNet:
    """Wrap a classifier with scores fitted on in-distribution images `x_fit` (labels `y_fit`, all >= 0)."""
    keep = np.asarray(y_fit) >= 0
    body, head = split_head(net.eval())
    z = penultimate(body, x_fit[keep], batch_size)  # x_fit: an array or LazyImages
    score = fit_mahalanobis(z, torch.as_tensor(np.asarray(y_fit)[keep]), normalize, shrinkage)
    return ScoredNet(body, head, score, InputStats(mean, std)).eval()


@torch.no_grad()
def scored_outputs(model: nn.Module, x: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """{logits, feature_score, input_stats} of a ScoredNet for a float32 NCHW array, in batches."""
    parts: list[tuple[torch.Tensor, ...]] = [
        model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], np.float32)))
        for i in range(0, len(x), batch_size)
    ]
    if not parts:
        return {name: np.zeros((0,), np.float32) for name in OUTPUT_NAMES}
    return {name: torch.cat([p[k] for p in parts]).numpy() for k, name in enumerate(OUTPUT_NAMES)}
