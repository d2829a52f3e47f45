"""Backbones by name: a small CNN for 2-core laptops and torchvision's classifiers, random init or a local file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

TORCHVISION = ("resnet18", "mobilenet_v3_small", "efficientnet_b0")


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks with max-pooling, global average pooling and a linear head."""

    def __init__(
        self,
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        dropout: float = 0.2,
        convs_per_block: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(channels):
            for k in range(convs_per_block):
                layers += [
                    nn.Conv2d(c_in if k == 0 else c, c, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                ]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


def build_backbone(name: str, num_classes: int, weights_path: str | None = None, **kwargs: object) -> nn.Module:
    """A classifier with `num_classes` outputs; weights only from a local file (`weights_only=True`)."""
    if name == "small_cnn":
        net: nn.Module = SmallCNN(num_classes, **kwargs)  # type: ignore[arg-type]
    elif name in TORCHVISION:
        import torchvision.models as tvm

        net = getattr(tvm, name)(weights=None, num_classes=num_classes, **kwargs)
    else:
        raise ValueError(f"unknown backbone {name!r}; use small_cnn or one of {', '.join(TORCHVISION)}")
    if weights_path:
        load_local_weights(net, weights_path)
    return net


def load_local_weights(net: nn.Module, path: str | Path) -> None:
    """Load a local state_dict, skipping tensors whose shape differs (e.g. an ImageNet head)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (model.weights_path must be a local file)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    own = net.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not kept:
        raise ValueError(f"{path}: no tensor matches the {type(net).__name__} architecture")
    net.load_state_dict(kept, strict=False)
