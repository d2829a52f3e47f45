"""The compress stage: prune models/best.ckpt, distil it from the unpruned teacher with Lightning, publish the result."""

from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch import seed_everything
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import multiclass_f1_score

from mycolens.catalogue import Catalogue
from mycolens.compression.checkpoint import save_compressed
from mycolens.compression.distill import DistillationModule
from mycolens.compression.prune import count_ops, prune_network
from mycolens.data.shards import read_manifest
from mycolens.errors import UserError
from mycolens.models.loading import load_classifier
from mycolens.training.run import build_callbacks, build_datamodule, build_loggers, build_trainer
from mycolens.utils.io import sha256_file, write_json_atomic
from mycolens.verdict.rule import VerdictRule, decide

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_logits(
    net: nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and labels (N,) of a network in eval mode over a loader."""
    was_training = net.training
    net.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(net(x.to(device)).float().cpu())
        labels.append(y)
    net.train(was_training)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, catalogue: Catalogue, rule: VerdictRule
) -> dict[str, float]:
    """accuracy, macro_f1 and unsafe_edible_rate (softmax at T=1, the configured verdict rule) of logits."""
    probs = torch.from_numpy(logits).double().softmax(-1).numpy()
    danger = np.asarray(catalogue.dangerous_mask, bool)[labels]
    unsafe = 0.0
    if danger.any():
        verdicts = np.asarray(decide(probs[danger], catalogue.dangerous_mask, rule))
        unsafe = float((verdicts == "edible").mean())
    f1 = multiclass_f1_score(torch.from_numpy(logits), torch.from_numpy(labels), catalogue.num_classes, average="macro")
    return {
        "accuracy": float((logits.argmax(1) == labels).mean()),
        "macro_f1": float(f1),
        "unsafe_edible_rate": unsafe,
    }


def evaluate_nets(
    nets: dict[str, nn.Module], datamodule: Any, catalogue: Catalogue, rule: VerdictRule, device: torch.device | str
) -> dict[str, dict[str, float]]:
    """val/ and test/ metrics of each network on the datamodule's splits (plain loop, one process)."""
    out: dict[str, dict[str, float]] = {name: {} for name in nets}
    for split in ("val", "test"):
        loader = datamodule.eval_loader(split)  # in memory or streamed, as the run's data input
        for name, net in nets.items():
            metrics = classification_metrics(*predict_logits(net.to(device), loader, device), catalogue, rule)
            out[name].update({f"{split}/{k}": round(v, 6) for k, v in metrics.items()})
    return out


def _stage_config(cfg: DictConfig, image_size: int) -> DictConfig:
    """The composed config with the teacher's input size and compress.max_epochs as the trainer's."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if int(cfg.data.image_size) != image_size:
            log.warning("data.image_size=%s ignored: the teacher takes %d px images", cfg.data.image_size, image_size)
        cfg.data.image_size = image_size
        cfg.trainer.max_epochs = int(cfg.compress.max_epochs)
        cfg.trainer.min_epochs = min(int(cfg.trainer.get("min_epochs") or 1), int(cfg.compress.max_epochs))
    return cfg


def compress(cfg: DictConfig, publish: bool = True) -> dict[str, Any]:
    """Prune the teacher, distil the student, write compressed.ckpt + compress.json; return the report."""
    c = cfg.compress
    seed_everything(int(cfg.seed), workers=True)
    torch.set_float32_matmul_precision(str(cfg.get("float32_matmul_precision", "high")))
    teacher_path = Path(c.teacher_ckpt)
    if not teacher_path.is_file():
        raise UserError(f"no teacher checkpoint at {teacher_path}: train one first with `python scripts/train.py`")
    read_manifest(cfg.data.shards_dir)  # one clear line when the data stage has not run
    teacher = load_classifier(teacher_path)
    hp = teacher.hparams
    size = int(hp.image_size)
    cfg = _stage_config(cfg, size)
    datamodule = build_datamodule(cfg)
    if datamodule.catalogue.ids != teacher.catalogue.ids:
        raise UserError(f"{teacher_path} was trained on another class order than catalogue={cfg.catalogue}")

    pruning = {
        "ratio": float(c.pruning_ratio),
        "importance": str(c.importance),
        "importance_kwargs": OmegaConf.to_container(c.importance_kwargs, resolve=True) or {},
        "global_pruning": bool(c.global_pruning),
        "iterative_steps": int(c.iterative_steps),
        "round_to": None if c.round_to is None else int(c.round_to),
        "max_pruning_ratio": float(c.max_pruning_ratio),
    }
    student = prune_network(
        copy.deepcopy(teacher.net),
        size,
        teacher.catalogue.num_classes,
        pruning["ratio"],
        importance=pruning["importance"],
        importance_kwargs=pruning["importance_kwargs"],
        global_pruning=pruning["global_pruning"],
        iterative_steps=pruning["iterative_steps"],
        round_to=pruning["round_to"],
        max_pruning_ratio=pruning["max_pruning_ratio"],
    )
    ops = {"teacher": count_ops(teacher.net, size), "student": count_ops(student, size)}
    log.info(
        "pruned %s: params %d -> %d, MACs %d -> %d",
        hp.backbone,
        ops["teacher"]["params"],
        ops["student"]["params"],
        ops["teacher"]["macs"],
        ops["student"]["macs"],
    )

    d = c.distill
    verdict = {k: float(v) for k, v in OmegaConf.to_container(cfg.export.verdict, resolve=True).items()}
    module = DistillationModule(
        teacher=teacher.net,
        temperature=float(d.temperature),
        alpha=float(d.alpha),
        net=student,
        catalogue=dict(hp.catalogue),
        backbone=hp.backbone,
        backbone_kwargs=dict(hp.backbone_kwargs or {}),
        image_size=size,
        mean=list(hp.mean),
        std=list(hp.std),
        label_smoothing=float(d.label_smoothing),
        verdict=verdict,
        optimizer=instantiate(c.optimizer),
        scheduler=instantiate(c.scheduler) if c.get("scheduler") else None,
    )
    trainer = build_trainer(cfg, build_callbacks(cfg), build_loggers(cfg))
    start = time.perf_counter()
    with warnings.catch_warnings():  # the frozen teacher is in eval mode on purpose
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        trainer.fit(module, datamodule=datamodule)
    fit_s = time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best and Path(best).is_file():  # the best epoch by the callbacks' monitor (val/macro_f1), not the last
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
        log.info("restored the best distilled weights from %s", best)

    report: dict[str, Any] = {}
    if trainer.is_global_zero:
        device = trainer.strategy.root_device
        scores = evaluate_nets(
            {"teacher": module.teacher, "student": module.net},
            datamodule,
            teacher.catalogue,
            VerdictRule.from_dict(verdict),
            device,
        )
        report = _report(ops, scores, pruning, fit_s, int(trainer.current_epoch), best)
        out_ckpt = Path(c.output_ckpt) if publish else Path(cfg.paths.output_dir) / "compressed.ckpt"
        out_report = Path(c.report) if publish else Path(cfg.paths.output_dir) / "compress.json"
        extra = {
            "epoch": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "distillation": {"temperature": float(d.temperature), "alpha": float(d.alpha)},
            "teacher": {"ckpt": teacher_path.name, "sha256": sha256_file(teacher_path)},
            "ops": ops,
            "metrics": scores["student"],
        }
        save_compressed(out_ckpt, module.net, dict(hp), pruning, extra)
        write_json_atomic(out_report, report)
        log.info("compressed checkpoint -> %s, report -> %s", out_ckpt, out_report)
    return report


def _report(
    ops: dict[str, dict[str, int]],
    scores: dict[str, dict[str, float]],
    pruning: dict[str, Any],
    fit_s: float,
    epochs: int,
    best: str,
) -> dict[str, Any]:
    t, s = ops["teacher"], ops["student"]
    return {
        "teacher": {**t, **scores["teacher"]},
        "student": {**s, **scores["student"]},
        "params_ratio": round(s["params"] / t["params"], 6),
        "flops_ratio": round(s["macs"] / t["macs"], 6),
        "accuracy_drop": round(scores["teacher"]["test/accuracy"] - scores["student"]["test/accuracy"], 6),
        "val_accuracy_drop": round(scores["teacher"]["val/accuracy"] - scores["student"]["val/accuracy"], 6),
        "pruning": {k: v for k, v in pruning.items() if k != "importance_kwargs"},
        "epochs": epochs,
        "fit_seconds": round(fit_s, 1),
        "best_epoch_restored": bool(best),
    }
