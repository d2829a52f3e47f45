"""Image statistics a photo like the training data must have: colour, texture, exposure, sharpness, no repetition.

Computed by a torch module from the model's normalized input, so they are exported inside the ONNX graph and
every runtime (serving, offline predict, a browser) gets the same numbers. None depends on having seen an outlier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# the column order of the graph's "input_stats" output (model.json lists it too)
STAT_NAMES = ("colourfulness", "flat_fraction", "periodicity", "luminance", "clipped_fraction", "sharpness")
FLAT_STEP = 1.5 / 255  # a pixel is "flat" when it differs from its right and lower neighbours by less than this
CLIP_LOW, CLIP_HIGH = 0.02, 0.98  # luminance counted as crushed black / blown white
PERIOD_SHIFTS = range(2, 17)  # pixel shifts where the autocorrelation is probed for a repeating pattern


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per image of two (N, H, W') tensors."""
    a = a - a.mean(dim=(1, 2), keepdim=True)
    b = b - b.mean(dim=(1, 2), keepdim=True)
    num = (a * b).mean(dim=(1, 2))
    den = torch.sqrt((a * a).mean(dim=(1, 2)) * (b * b).mean(dim=(1, 2)) + 1e-8)
    return num / den


def _rebound(lum: torch.Tensor, dim: int) -> torch.Tensor:
    """How far the autocorrelation climbs back after falling, along one axis: ~0 for photos, large for patterns."""
    corrs = []
    size = lum.shape[dim]
    for s in (s for s in PERIOD_SHIFTS if s <= size // 2):
        a, b = lum.narrow(dim, s, size - s), lum.narrow(dim, 0, size - s)
        corrs.append(_correlation(a, b))
    best, lowest = torch.zeros_like(corrs[0]), corrs[0]
    for c in corrs[1:]:  # a running minimum, unrolled (cummin has no ONNX export)
        lowest = torch.minimum(lowest, c)
        best = torch.maximum(best, c - lowest)
    return best


class InputStats(nn.Module):
    """(N, 3, H, W) normalized images -> (N, len(STAT_NAMES)) statistics of the un-normalized RGB in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
        self.register_buffer("laplacian", lap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x * self.std + self.mean).clamp(0.0, 1.0)
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        # Hasler & Suesstrunk (2003) colourfulness: ~0 for greyscale, 0.1-0.3 for ordinary photos
        rg, yb = r - g, 0.5 * (r + g) - b
        colour = torch.sqrt(rg.var(dim=(1, 2)) + yb.var(dim=(1, 2)) + 1e-12) + 0.3 * torch.sqrt(
            rg.mean(dim=(1, 2)) ** 2 + yb.mean(dim=(1, 2)) ** 2 + 1e-12
        )
        lum = 0.299 * r + 0.587 * g + 0.114 * b
        dx = (lum[:, :-1, 1:] - lum[:, :-1, :-1]).abs()
        dy = (lum[:, 1:, :-1] - lum[:, :-1, :-1]).abs()
        flat = ((dx < FLAT_STEP) & (dy < FLAT_STEP)).float().mean(dim=(1, 2))
        periodic = torch.maximum(_rebound(lum, 1), _rebound(lum, 2))
        brightness = lum.mean(dim=(1, 2))
        clipped = ((lum < CLIP_LOW) | (lum > CLIP_HIGH)).float().mean(dim=(1, 2))
        sharp = nn.functional.conv2d(lum.unsqueeze(1), self.laplacian).abs().mean(dim=(1, 2, 3))
        return torch.stack([colour, flat, periodic, brightness, clipped, sharp], dim=1)
