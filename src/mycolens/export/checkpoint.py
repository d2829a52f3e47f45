"""Classifier checkpoints: load (weights_only), check the class order, run, and count params and FLOPs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mycolens.catalogue import Catalogue
from mycolens.errors import UserError


def load_checkpoint(path: str | Path) -> Any:
    """A MushroomClassifier from a teacher or compressed checkpoint, in eval mode on CPU."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint not found: {path} (train with scripts/train.py, compress with scripts/compress.py)"
        )
    try:
        from mycolens.models.loading import load_classifier
    except ModuleNotFoundError as exc:  # before the compression stage exists only plain checkpoints load
        if exc.name != "mycolens.models.loading":
            raise
        from mycolens.models.module import MushroomClassifier

        model = MushroomClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    else:
        try:
            model = load_classifier(path)
        except ValueError as exc:  # not a mycolens checkpoint
            raise UserError(str(exc)) from None
    return model.to("cpu").eval()


def check_class_order(found: Catalogue, expected: Catalogue, what: str) -> None:
    """Refuse a model whose classes (order or edibility) differ from the configured catalogue's."""
    got = [(s.id, s.edibility) for s in found.species]
    want = [(s.id, s.edibility) for s in expected.species]
    if got != want:
        raise UserError(
            f"{what} has classes {found.ids} but the catalogue has {expected.ids} (order and edibility must match); "
            "use the catalogue the model was trained with (catalogue=...) or retrain"
        )


@torch.inference_mode()
def torch_logits(net: nn.Module, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """float32 logits of a float32 NCHW array, in batches."""
    net.eval()
    out = [
        net(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))).float().numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def count_params_flops(net: nn.Module, image_size: int) -> tuple[int, int]:
    """Parameters and FLOPs for one image, counted as the compression stage does (FLOPs = 2 x MACs, torch-pruning)."""
    from mycolens.compression.prune import count_ops

    was_training = net.training
    net.eval()  # the counting forward pass must not touch BatchNorm statistics
    ops = count_ops(net, image_size)
    net.train(was_training)
    return int(ops["params"]), int(ops["flops"])
