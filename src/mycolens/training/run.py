"""Build the training objects from a composed config and fit them: the adapter between Hydra and Lightning."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mycolens.catalogue import load_catalogue
from mycolens.data.datamodule import ShardDataModule
from mycolens.data.shards import read_manifest
from mycolens.data.storage import configure_cache
from mycolens.errors import UserError
from mycolens.utils.io import save_torch_atomic, write_json_atomic

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> ShardDataModule:
    """The DataModule over cfg.data.shards_dir, checked against cfg.catalogue."""
    d = cfg.data
    stream = d.get("stream") or {}
    configure_cache(stream.get("remote_cache_dir"), stream.get("remote_cache_gb"))
    return ShardDataModule(
        shards_dir=str(d.shards_dir),
        catalogue=cfg.catalogue,
        image_size=int(d.image_size),
        batch_size=int(d.loader.batch_size),
        num_workers=int(d.loader.num_workers),
        pin_memory=bool(d.loader.pin_memory),
        augment=OmegaConf.to_container(d.augment, resolve=True),
        outliers=OmegaConf.to_container(d.outliers, resolve=True) if "outliers" in d else None,
        cache_max_gb=d.get("cache_max_gb"),
        shuffle_buffer=int(stream.get("shuffle_buffer", 2048)),
        seed=int(cfg.seed),
    )


def build_module(cfg: DictConfig, datamodule: ShardDataModule) -> LightningModule:
    """The classifier from cfg.model, with the catalogue and input normalization it will carry in checkpoints."""
    return instantiate(
        cfg.model,
        catalogue=load_catalogue(cfg.catalogue).to_dict(),
        image_size=int(cfg.data.image_size),
        mean=list(datamodule.mean),
        std=list(datamodule.std),
        verdict=OmegaConf.to_container(cfg.export.verdict, resolve=True),  # the one configured rule
        _convert_="all",
    )


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]


def build_loggers(cfg: DictConfig) -> list[Logger]:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]


def build_trainer(cfg: DictConfig, callbacks: list[Callback], loggers: list[Logger], **overrides: Any) -> Trainer:
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)


def train(cfg: DictConfig, publish: bool = True) -> dict[str, Any]:
    """Fit (optionally resume from cfg.ckpt_path), test the best checkpoint, publish it to models/; return metrics."""
    seed_everything(int(cfg.seed), workers=True)
    torch.set_float32_matmul_precision(str(cfg.get("float32_matmul_precision", "high")))
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path not found: {cfg.ckpt_path} (resume from a run's checkpoints/last.ckpt)")
    read_manifest(cfg.data.shards_dir)  # fail early, in one line, when the data stage has not run
    datamodule = build_datamodule(cfg)
    model = build_module(cfg, datamodule)
    trainer = build_trainer(cfg, build_callbacks(cfg), build_loggers(cfg))
    start = time.perf_counter()
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    fit_s = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test", True):
        test_ckpt = best or None  # no checkpoint under fast_dev_run: test the weights in memory
        trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True if test_ckpt else None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    metrics.update(fit_seconds=round(fit_s, 1), epochs=int(trainer.current_epoch), best_ckpt=best)
    if publish and trainer.is_global_zero:
        publish_results(cfg, best, metrics)
    return metrics


def portable_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint without callback state, whose run-folder paths would make equal weights differ in bytes."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt.pop("callbacks", None)
    return ckpt


@rank_zero_only
def publish_results(cfg: DictConfig, best_ckpt: str, metrics: dict[str, Any]) -> None:
    """Copy the best checkpoint to models/best.ckpt and write reports/train.json (atomically, rank zero only)."""
    models = Path(cfg.paths.models_dir)
    if best_ckpt and Path(best_ckpt).is_file():
        save_torch_atomic(models / "best.ckpt", portable_checkpoint(best_ckpt))
        log.info("best checkpoint -> %s", models / "best.ckpt")
    else:
        log.warning("no checkpoint was saved (fast_dev_run or train=false): models/best.ckpt left as it was")
    write_json_atomic(
        Path(cfg.paths.reports_dir) / "train.json", {k: v for k, v in metrics.items() if k != "best_ckpt"}
    )


def evaluate_checkpoint(cfg: DictConfig, ckpt_path: str) -> dict[str, float]:
    """Test one checkpoint on the test split with the same metrics as training."""
    from mycolens.models.module import MushroomClassifier

    if not Path(ckpt_path).is_file():
        raise UserError(f"checkpoint not found: {ckpt_path}")
    model = MushroomClassifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    datamodule = build_datamodule(cfg)
    if model.catalogue.ids != datamodule.catalogue.ids:
        raise UserError("the checkpoint's class order differs from the catalogue's; evaluate with its own catalogue")
    trainer = build_trainer(cfg, [], [])  # no loggers: logger=False
    (result,) = trainer.test(model, datamodule=datamodule)
    return {k: float(v) for k, v in result.items()}


def checkpoint_summary(path: str | Path) -> dict[str, Any]:
    """What a checkpoint says about itself: epoch, backbone, classes."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hp = ckpt.get("hyper_parameters", {})
    return {
        "epoch": ckpt.get("epoch"),
        "backbone": hp.get("backbone"),
        "classes": [c["id"] for c in hp["catalogue"]["classes"]],
    }


__all__ = ["LightningDataModule", "train", "evaluate_checkpoint", "checkpoint_summary"]
