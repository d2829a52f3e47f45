"""Structured pruning with torch-pruning: whole channels removed (weights really shrink), the classifier head kept."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import nn

# importance criteria by config name; each maps to a torch-pruning importance class and its default arguments
IMPORTANCE: dict[str, tuple[type, dict[str, Any]]] = {
    "l1": (tp.importance.MagnitudeImportance, {"p": 1, "group_reduction": "first", "normalizer": None}),
    "l2": (tp.importance.MagnitudeImportance, {"p": 2, "group_reduction": "first", "normalizer": None}),
    "group_l1": (tp.importance.GroupMagnitudeImportance, {"p": 1, "group_reduction": "mean", "normalizer": "mean"}),
    "group_norm": (tp.importance.GroupMagnitudeImportance, {"p": 2, "group_reduction": "mean", "normalizer": "mean"}),
    "bn_scale": (tp.importance.BNScaleImportance, {}),
    "lamp": (tp.importance.LAMPImportance, {}),
    "fpgm": (tp.importance.FPGMImportance, {}),
    "random": (tp.importance.RandomImportance, {}),
}


def make_importance(name: str, **kwargs: Any) -> tp.importance.Importance:
    """A torch-pruning importance criterion by name (l1, l2, group_l1, group_norm, bn_scale, lamp, fpgm, random)."""
    if name not in IMPORTANCE:
        raise ValueError(f"unknown pruning importance {name!r}; use one of {', '.join(IMPORTANCE)}")
    cls, defaults = IMPORTANCE[name]
    return cls(**{**defaults, **kwargs})


def example_input(image_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A fixed one-image batch at the model's input size, for graph tracing and op counting."""
    return torch.zeros(1, 3, int(image_size), int(image_size), device=device)


def classifier_layers(net: nn.Module, num_classes: int) -> list[nn.Module]:
    """The output layer(s): Linear (or 1x1 Conv) modules producing `num_classes` outputs; never pruned."""
    heads = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    heads = heads or [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels == num_classes]
    if not heads:
        raise ValueError(
            f"no layer with {num_classes} outputs in {type(net).__name__}: cannot find the classifier head"
        )
    return heads


def count_ops(net: nn.Module, image_size: int) -> dict[str, int]:
    """Parameters, MACs and FLOPs (= 2 x MACs) for one image, counted by torch-pruning."""
    device = next(net.parameters()).device
    macs, params = tp.utils.count_ops_and_params(net, example_input(image_size, device))
    return {"params": int(params), "macs": int(macs), "flops": 2 * int(macs)}


def prune_network(
    net: nn.Module,
    image_size: int,
    num_classes: int,
    pruning_ratio: float,
    importance: str = "group_norm",
    importance_kwargs: dict[str, Any] | None = None,
    global_pruning: bool = False,
    iterative_steps: int = 1,
    round_to: int | None = None,
    max_pruning_ratio: float = 1.0,
) -> nn.Module:
    """Remove `pruning_ratio` of the channels of every prunable layer group in place (classifier head kept)."""
    if not 0.0 <= pruning_ratio < 1.0:
        raise ValueError(f"pruning_ratio must be in [0, 1), got {pruning_ratio}")
    was_training = net.training
    net.eval()  # tracing runs a forward pass: keep BatchNorm running statistics as they are
    device = next(net.parameters()).device
    pruner = tp.pruner.BasePruner(
        net,
        example_input(image_size, device),
        importance=make_importance(importance, **(importance_kwargs or {})),
        pruning_ratio=float(pruning_ratio),
        global_pruning=bool(global_pruning),
        iterative_steps=int(iterative_steps),
        round_to=round_to,
        max_pruning_ratio=float(max_pruning_ratio),
        ignored_layers=classifier_layers(net, num_classes),
    )
    for _ in range(int(iterative_steps)):
        pruner.step()
    net.train(was_training)
    return net
