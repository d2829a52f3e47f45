"""models/compressed.ckpt: a plain-types, Lightning-style checkpoint that rebuilds a pruned network (weights_only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning
from torch import nn

from mycolens.models.loading import CLASSIFIER_KEYS, net_structure
from mycolens.utils.io import save_torch_atomic


def plain(obj: Any) -> Any:
    """Nested dicts/lists of str, int, float, bool, None only (what torch.load(weights_only=True) accepts)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in a weights_only checkpoint")


def compressed_checkpoint(
    net: nn.Module, hyper_parameters: dict[str, Any], pruning: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint dict: state_dict (net.*), classifier hyper_parameters, pruning (incl. structure), extras."""
    state = {f"net.{k}": v.detach().cpu().clone() for k, v in net.state_dict().items()}
    hp = plain({k: v for k, v in hyper_parameters.items() if k in CLASSIFIER_KEYS})
    hp["compile"] = False
    return {
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": state,
        "hyper_parameters": hp,
        "pruning": plain({**pruning, "structure": net_structure(net)}),
        **plain(extra or {}),
    }


def save_compressed(
    path: str | Path,
    net: nn.Module,
    hyper_parameters: dict[str, Any],
    pruning: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the compressed checkpoint atomically; `mycolens.models.loading.load_classifier` reads it back."""
    ckpt = compressed_checkpoint(net, hyper_parameters, pruning, extra)
    return save_torch_atomic(path, ckpt)
