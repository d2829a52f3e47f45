"""The LightningModule: a backbone, cross-entropy, and the metrics users read (accuracy, macro F1, safety)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from mycolens.catalogue import Catalogue
from mycolens.models.backbones import build_backbone
from mycolens.models.metrics import UnsafeEdibleRate
from mycolens.verdict.rule import VerdictRule

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def outlier_loss(logits: torch.Tensor) -> torch.Tensor:
    """Outlier exposure (Hendrycks et al.): cross-entropy to the uniform distribution, so outliers get low energy."""
    return -F.log_softmax(logits, dim=-1).mean(dim=-1).mean()


class MushroomClassifier(LightningModule):
    """Species classifier; its checkpoint carries the catalogue (class order + edibility) and backbone spec."""

    def __init__(
        self,
        catalogue: dict[str, Any],
        backbone: str = "small_cnn",
        backbone_kwargs: dict[str, Any] | None = None,
        weights_path: str | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        outlier_weight: float = 0.0,
        image_size: int = 64,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        compile: bool = False,
        verdict: dict[str, float] | None = None,
        net: nn.Module | None = None,
    ) -> None:
        super().__init__()
        # plain types only, so checkpoints load with weights_only=True
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "net", "weights_path"])
        self.catalogue = Catalogue.from_dict(catalogue)
        n = self.catalogue.num_classes
        self.net = net if net is not None else build_backbone(backbone, n, weights_path, **(backbone_kwargs or {}))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = self._metrics("val")
        self.test_metrics = self._metrics("test")
        self.train_acc = MulticlassAccuracy(num_classes=n)
        # the configured verdict rule (conf/export's `verdict`, passed by the builders); without one (a module
        # built by hand) the unsafe_edible_rate metrics are not logged
        rule = VerdictRule.from_dict(verdict) if verdict else None
        self.val_unsafe = UnsafeEdibleRate(self.catalogue.dangerous_mask, rule) if rule else None
        self.test_unsafe = UnsafeEdibleRate(self.catalogue.dangerous_mask, rule) if rule else None
        self.val_recall = MulticlassRecall(num_classes=n, average=None)

    def _metrics(self, prefix: str) -> MetricCollection:
        n = self.catalogue.num_classes
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(num_classes=n, average="micro"),
                "macro_f1": MulticlassF1Score(n, average="macro"),
            },
            prefix=f"{prefix}/",
        )

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net = torch.compile(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        return loss, logits, y

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        known = y >= 0  # label -1: a not-a-mushroom image (outlier exposure)
        loss = (
            F.cross_entropy(logits[known], y[known], label_smoothing=self.hparams.label_smoothing)
            if known.any()
            else logits.sum() * 0.0  # a batch of outliers only
        )
        if self.hparams.outlier_weight and not known.all():
            loss = loss + self.hparams.outlier_weight * outlier_loss(logits[~known])
        logits, y = logits[known], y[known]
        if len(y):
            self.train_acc(logits, y)
        n = len(known)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/accuracy", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, logits, y = self._step(batch)
        self.val_metrics.update(logits, y)
        if self.val_unsafe is not None:
            self.val_unsafe.update(logits.softmax(-1), y)
        self.val_recall.update(logits, y)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict(values, prog_bar=True, sync_dist=True)
        if self.val_unsafe is not None:
            self.log("val/unsafe_edible_rate", self.val_unsafe.compute(), prog_bar=True, sync_dist=True)
            self.val_unsafe.reset()
        for name, recall in zip(self.catalogue.ids, self.val_recall.compute(), strict=True):
            self.log(f"val_recall/{name}", recall, sync_dist=True)
        for m in (self.val_metrics, self.val_recall):
            m.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, logits, y = self._step(batch)
        self.test_metrics.update(logits, y)
        if self.test_unsafe is not None:
            self.test_unsafe.update(logits.softmax(-1), y)
        self.log("test/loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        if self.test_unsafe is not None:
            self.log("test/unsafe_edible_rate", self.test_unsafe.compute(), sync_dist=True)
            self.test_unsafe.reset()
        self.test_metrics.reset()

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(-1)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
