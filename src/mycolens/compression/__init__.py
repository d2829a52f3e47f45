"""Model compression: structured pruning (torch-pruning), distillation from the unpruned teacher, compressed.ckpt."""

from mycolens.compression.checkpoint import save_compressed
from mycolens.compression.distill import DistillationModule, distillation_loss
from mycolens.compression.prune import count_ops, make_importance, prune_network

__all__ = [
    "DistillationModule",
    "count_ops",
    "distillation_loss",
    "make_importance",
    "prune_network",
    "save_compressed",
]
