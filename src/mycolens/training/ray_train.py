"""`trainer=ray`: the same LightningModule and DataModule under Ray Train's TorchTrainer (Lightning DDP on Ray workers).

Checkpoints are reported to Ray Train every epoch; a dead worker restarts the group from the latest one
(FailureConfig). The best one is copied to where a local run writes it (models/best.ckpt, reports/train.json).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from mycolens.data.shards import read_manifest
from mycolens.errors import UserError
from mycolens.training.run import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_module,
    build_trainer,
    evaluate_checkpoint,
    publish_results,
)
from mycolens.utils.io import write_json_atomic
from mycolens.utils.ray_session import ray_session, unshared

log = logging.getLogger(__name__)

# keys of conf/trainer/ray.yaml that configure Ray Train, not Lightning's Trainer
RAY_KEYS = (
    "engine",
    "num_workers",
    "use_gpu",
    "resources_per_worker",
    "placement_strategy",
    "max_failures",
    "checkpoints_to_keep",
)
CHECKPOINT_NAME = (
    "checkpoint.ckpt"  # file name inside a reported checkpoint (ray.train.lightning.RayTrainReportCallback)
)


def split_trainer_config(trainer_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Lightning Trainer kwargs, Ray Train options) from a resolved trainer section."""
    lightning = {k: v for k, v in trainer_cfg.items() if k not in RAY_KEYS}
    ray_opts = {k: trainer_cfg[k] for k in RAY_KEYS if k in trainer_cfg}
    return lightning, ray_opts


def checkpoint_monitor(cfg: Mapping[str, Any]) -> tuple[str, str]:
    """(metric, mode) that ranks checkpoints: the ModelCheckpoint's monitor if configured, else val/macro_f1 max."""
    mc = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    return str(mc.get("monitor") or "val/macro_f1"), str(mc.get("mode") or "max")


class EpochTimer(Callback):
    """Wall seconds of every training epoch, start to next start (checkpointing and reporting count), as JSON at `path`.

    Add it as `+callbacks.epoch_timer={_target_: mycolens.training.ray_train.EpochTimer, path: ...}`; rank 0 writes.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        ends = [*self.starts[1:], time.perf_counter()]
        if trainer.is_global_zero:
            write_json_atomic(self.path, {"epoch_seconds": [e - s for s, e in zip(self.starts, ends, strict=True)]})


def worker_loop(config: dict[str, Any]) -> dict[str, Any]:
    """Runs in every Ray Train worker: build data, model and callbacks as a local run does, then fit under DDP."""
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback, prepare_trainer

    cfg = OmegaConf.create(config["cfg"])
    seed_everything(int(cfg.seed), workers=True)
    torch.set_float32_matmul_precision(str(cfg.get("float32_matmul_precision", "high")))
    datamodule = build_datamodule(cfg)
    model = build_module(cfg, datamodule)
    # checkpoints go to Ray Train (RayTrainReportCallback); tqdm does not render in Ray's log stream
    callbacks = [c for c in build_callbacks(cfg) if not isinstance(c, (ModelCheckpoint, ProgressBar))]
    callbacks.append(RayTrainReportCallback())
    trainer = build_trainer(
        cfg,
        callbacks,
        build_loggers(cfg),
        accelerator="gpu" if config["use_gpu"] else "cpu",
        devices="auto",
        strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()],
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer = prepare_trainer(trainer)
    checkpoint = ray.train.get_checkpoint()  # set when the group restarts after a failure
    start = time.perf_counter()
    if checkpoint is None:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    else:
        with checkpoint.as_directory() as d:
            trainer.fit(model, datamodule=datamodule, ckpt_path=str(Path(d) / CHECKPOINT_NAME), weights_only=True)
    return {
        "resumed_from": checkpoint.path if checkpoint is not None else None,
        "fit_seconds": time.perf_counter() - start,
        "epochs": int(trainer.current_epoch),
    }


def worker_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """fit_on_ray's worker settings from the Ray keys of conf/trainer/ray.yaml (their only defaults)."""
    return {
        "num_workers": int(opts["num_workers"]),
        "use_gpu": bool(opts["use_gpu"]),
        "resources_per_worker": opts["resources_per_worker"],
        "placement_strategy": str(opts["placement_strategy"]),
        "max_failures": int(opts["max_failures"]),
        "checkpoints_to_keep": opts["checkpoints_to_keep"],
    }


def fit_on_ray(
    cfg: Mapping[str, Any],
    *,
    num_workers: int,
    use_gpu: bool,
    resources_per_worker: Mapping[str, float] | None,
    placement_strategy: str,
    max_failures: int,
    checkpoints_to_keep: int | None,
    storage_path: str,
    name: str,
    callbacks: list[Any] | None = None,
) -> Any:
    """Fit with TorchTrainer on the connected Ray; `cfg` is the resolved config without Ray keys. Returns ray's Result.

    `callbacks` are Ray Train UserCallbacks (e.g. Tune's TuneReportCallback when a sweep trial runs Ray Train).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    monitor, mode = checkpoint_monitor(cfg)
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"cfg": dict(cfg), "use_gpu": bool(use_gpu)},
        scaling_config=ScalingConfig(
            num_workers=int(num_workers),
            use_gpu=bool(use_gpu),
            resources_per_worker=dict(resources_per_worker) if resources_per_worker else None,
            placement_strategy=placement_strategy,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=callbacks or None,
            failure_config=FailureConfig(max_failures=int(max_failures)),
            checkpoint_config=CheckpointConfig(
                num_to_keep=checkpoints_to_keep, checkpoint_score_attribute=monitor, checkpoint_score_order=mode
            ),
        ),
    )
    return trainer.fit()


def best_checkpoint(result: Any, monitor: str, mode: str) -> tuple[Any, dict[str, Any]]:
    """(checkpoint, its reported metrics): the best by `monitor`, else the latest."""
    scored = [(c, m) for c, m in (result.best_checkpoints or []) if monitor in m]
    if scored:
        pick = max if mode == "max" else min
        return pick(scored, key=lambda cm: float(cm[1][monitor]))
    if result.checkpoint is None:
        raise UserError("the Ray Train run reported no checkpoint; see its logs under ray.storage_path")
    return result.checkpoint, dict(result.metrics or {})


def copy_checkpoint(checkpoint: Any, dest: Path) -> Path:
    """Copy a reported Lightning checkpoint (local or remote storage) to a local file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as d:
        shutil.copyfile(Path(d) / CHECKPOINT_NAME, dest)
    return dest


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def local_eval_config(resolved: Mapping[str, Any], use_gpu: bool) -> DictConfig:
    """The same config for a one-process evaluation in the driver (no Ray keys, one device)."""
    cfg = OmegaConf.create(dict(resolved))
    cfg.trainer.accelerator = "gpu" if use_gpu and torch.cuda.is_available() else "cpu"
    cfg.trainer.devices = 1
    cfg.trainer.pop("strategy", None)
    return cfg


def train_on_ray(cfg: DictConfig, publish: bool = True) -> dict[str, Any]:
    """`trainer=ray`: fit on Ray Train, copy the best checkpoint next to the run, test it, publish like a local run."""
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path not found: {cfg.ckpt_path} (resume from a run's checkpoints/last.ckpt)")
    read_manifest(cfg.data.shards_dir)  # fail early, in one line, when the data stage has not run
    resolved = OmegaConf.to_container(cfg, resolve=True)  # resolves ${hydra:...} paths here, in the driver
    resolved["trainer"], opts = split_trainer_config(resolved["trainer"])
    missing = [k for k in RAY_KEYS if k not in opts]
    if missing:
        raise UserError(f"trainer=ray needs trainer.{', trainer.'.join(missing)} (conf/trainer/ray.yaml sets them)")
    if int(opts["num_workers"]) < 1:
        raise UserError("trainer.num_workers must be >= 1 under trainer=ray")
    output_dir = Path(resolved["paths"]["output_dir"])
    monitor, mode = checkpoint_monitor(resolved)
    start = time.perf_counter()
    storage = Path((resolved.get("ray") or {}).get("storage_path") or output_dir / "ray").resolve()
    storage.mkdir(parents=True, exist_ok=True)
    with ray_session(resolved.get("ray") or {}):
        # every worker reads the shards and writes checkpoints itself: on several nodes both must be shared
        problem = unshared({"paths.shards_dir": resolved["paths"]["shards_dir"], "ray.storage_path": storage})
        if problem:
            raise UserError(problem)
        result = fit_on_ray(
            resolved,
            **worker_options(opts),
            storage_path=str(storage),
            name=f"{resolved.get('task_name', 'train')}-{output_dir.name}",
        )
    if result.error is not None:
        raise result.error
    fit_s = time.perf_counter() - start
    checkpoint, best_metrics = best_checkpoint(result, monitor, mode)
    best_path = copy_checkpoint(checkpoint, output_dir / "checkpoints" / "best.ckpt")
    log.info(
        "best Ray Train checkpoint %s (%s=%s) -> %s", checkpoint.path, monitor, best_metrics.get(monitor), best_path
    )
    latest = scalar_metrics(result.metrics or {})
    metrics: dict[str, Any] = {k: v for k, v in latest.items() if k not in ("epoch", "step")}
    if cfg.get("test", True):
        metrics.update(evaluate_checkpoint(local_eval_config(resolved, bool(opts.get("use_gpu"))), str(best_path)))
    resumed_from = (result.return_value or {}).get("resumed_from")
    if resumed_from:
        log.warning("the worker group restarted after a failure and resumed from %s", resumed_from)
    metrics.update(
        fit_seconds=round(fit_s, 1),
        epochs=int(latest.get("epoch", -1)) + 1,
        ray_workers=int(opts["num_workers"]),
        ray_restarted=int(bool(resumed_from)),  # 1: a worker group restarted from a reported checkpoint
        best_ckpt=str(best_path),
    )
    if publish:
        publish_results(cfg, str(best_path), metrics)
    return {
        **metrics,
        "best_metrics": scalar_metrics(best_metrics),
        "ray_checkpoint": checkpoint.path,
        "ray_run": result.path,
        "resumed_from": resumed_from,
    }
