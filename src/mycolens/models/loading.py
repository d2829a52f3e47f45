"""Load a classifier from models/best.ckpt (teacher) or models/compressed.ckpt (pruned), always weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mycolens.models.backbones import build_backbone
from mycolens.models.module import MushroomClassifier

# the constructor arguments of MushroomClassifier that a checkpoint's hyper_parameters may carry
CLASSIFIER_KEYS = (
    "catalogue",
    "backbone",
    "backbone_kwargs",
    "label_smoothing",
    "image_size",
    "mean",
    "std",
    "compile",
    "verdict",
)
# module attributes torch-pruning rewrites when it removes channels (plain ints, or a tuple for LayerNorm)
STRUCTURE_ATTRS = (
    "in_channels",
    "out_channels",
    "groups",
    "num_features",
    "in_features",
    "out_features",
    "num_channels",
    "num_groups",
    "normalized_shape",
)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint dict loaded with weights_only=True; FileNotFoundError names the missing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"{path}: not a mycolens checkpoint (needs state_dict and hyper_parameters)")
    return ckpt


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """What a checkpoint says about its model: catalogue, image_size, mean, std, backbone, pruned."""
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    return {
        "catalogue": hp["catalogue"],
        "image_size": int(hp["image_size"]),
        "mean": [float(v) for v in hp["mean"]],
        "std": [float(v) for v in hp["std"]],
        "backbone": hp["backbone"],
        "pruned": "pruning" in ckpt,
    }


def net_structure(net: nn.Module) -> dict[str, Any]:
    """Plain-type description of a (pruned) network: per-module channel attributes and per-tensor shapes."""
    modules: dict[str, dict[str, Any]] = {}
    for name, module in net.named_modules():
        attrs = {a: getattr(module, a) for a in STRUCTURE_ATTRS if isinstance(getattr(module, a, None), (int, tuple))}
        if attrs:
            modules[name] = {a: list(v) if isinstance(v, tuple) else int(v) for a, v in attrs.items()}
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    return {"modules": modules, "shapes": shapes}


def apply_structure(net: nn.Module, structure: dict[str, Any]) -> nn.Module:
    """Reshape a freshly built backbone in place to a pruned structure (weights left uninitialised)."""
    modules = dict(net.named_modules())
    for name, attrs in structure["modules"].items():
        if name not in modules:
            raise ValueError(f"pruned structure names module {name!r}, which the backbone does not have")
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else int(value))
    for key, shape in structure["shapes"].items():
        owner, _, leaf = key.rpartition(".")
        module = modules.get(owner)
        if module is None:
            raise ValueError(f"pruned structure names tensor {key!r}, which the backbone does not have")
        if leaf in module._parameters and module._parameters[leaf] is not None:
            old = module._parameters[leaf]
            if list(old.shape) != shape:
                module._parameters[leaf] = nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad)
        elif leaf in module._buffers and module._buffers[leaf] is not None:
            old = module._buffers[leaf]
            if list(old.shape) != shape:
                module._buffers[leaf] = old.new_empty(shape)
        else:
            raise ValueError(f"pruned structure names tensor {key!r}, which the backbone does not have")
    return net


def _net_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's tensors from a LightningModule state_dict (drops `net.` and torch.compile's `_orig_mod.`)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("net."):
            out[key[4:].replace("_orig_mod.", "")] = value
    return out


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> MushroomClassifier:
    """A MushroomClassifier in eval mode from a teacher or a compressed checkpoint (weights_only=True)."""
    ckpt = read_checkpoint(path, map_location)
    hp = {k: v for k, v in ckpt["hyper_parameters"].items() if k in CLASSIFIER_KEYS}
    hp["compile"] = False  # inference: never compile on load
    num_classes = len(hp["catalogue"]["classes"])
    net = build_backbone(hp["backbone"], num_classes, **(hp.get("backbone_kwargs") or {}))
    if "pruning" in ckpt:
        apply_structure(net, ckpt["pruning"]["structure"])
    net.load_state_dict(_net_state(ckpt["state_dict"]), strict=True)
    model = MushroomClassifier(**hp, net=net)
    return model.to(map_location).eval()


__all__ = ["load_classifier", "checkpoint_meta", "read_checkpoint", "net_structure", "apply_structure"]
