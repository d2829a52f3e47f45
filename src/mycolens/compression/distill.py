"""Knowledge distillation: a pruned student learns from the frozen, unpruned teacher's softened logits."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mycolens.models.module import MushroomClassifier


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """alpha x T^2 x KL(teacher_T || student_T) + (1 - alpha) x CE(student, labels); returns (loss, kd, ce)."""
    t = float(temperature)
    kd = F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=-1),
        F.log_softmax(teacher_logits.float() / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    known = targets >= 0  # -1: outlier-exposure images; they learn from the teacher's (near-uniform) output only
    ce = (
        F.cross_entropy(student_logits[known].float(), targets[known], label_smoothing=label_smoothing)
        if known.any()
        else student_logits.sum() * 0.0
    )
    return alpha * kd + (1.0 - alpha) * ce, kd, ce


class DistillationModule(MushroomClassifier):
    """The student (`net`, a pruned backbone) trained against a frozen teacher; validation/test as the classifier."""

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.5, **classifier: Any) -> None:
        if classifier.get("net") is None:
            raise ValueError("DistillationModule needs the student network as net=")
        with warnings.catch_warnings():  # the base class briefly sees `teacher` among the init arguments
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            super().__init__(**classifier)
        # keep hyper-parameters plain (weights_only checkpoints): drop the teacher module and the factories
        self.save_hyperparameters(ignore=["teacher", "net", "optimizer", "scheduler", "weights_path"])
        self.teacher = teacher
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> DistillationModule:
        """Lightning switches modules to train mode each epoch; the teacher stays in eval (frozen BatchNorm)."""
        super().train(mode)
        if "teacher" in self._modules:
            self.teacher.eval()
        return self

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        hp = self.hparams
        loss, kd, ce = distillation_loss(logits, teacher_logits, y, hp.temperature, hp.alpha, hp.label_smoothing)
        if (y >= 0).any():
            self.train_acc(logits[y >= 0], y[y >= 0])
        n = len(y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/kd_loss", kd, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/ce_loss", ce, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/accuracy", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def configure_optimizers(self) -> Any:
        """The classifier's optimizer and scheduler over the student's parameters only."""
        params = [p for p in self.net.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            return torch.optim.AdamW(params, lr=1e-3)
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
