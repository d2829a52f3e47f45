"""One sweep trial: compose the training config with the sampled overrides and fit it, reporting to Tune every epoch.

A trial runs plain Lightning in its Tune actor (resources: sweep.resources_per_trial), or, with `trainer=ray`, a
Ray Train run of trainer.num_workers DDP workers whose reports reach Tune through TuneReportCallback.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

from mycolens.params import compose_config
from mycolens.training.ray_train import CHECKPOINT_NAME, split_trainer_config, worker_options
from mycolens.training.run import build_callbacks, build_datamodule, build_loggers, build_module, build_trainer
from mycolens.tuning.space import objective_value, to_overrides

REPORTED_PREFIXES = ("val/", "train/")


def epoch_metrics(callback_metrics: Mapping[str, Any], objective: Mapping[str, float] | None) -> dict[str, float]:
    """The scalar train/ and val/ metrics of an epoch, plus `objective` when weights are given."""
    metrics = {
        k: float(v)
        for k, v in callback_metrics.items()
        if k.startswith(REPORTED_PREFIXES) and getattr(v, "numel", lambda: 1)() == 1
    }
    if objective:
        metrics["objective"] = objective_value(metrics, objective)
    return metrics


class TuneReportCallback(Callback):
    """After every validation epoch: report metrics (+ objective) and a full Lightning checkpoint to Ray Tune."""

    def __init__(self, objective: Mapping[str, float] | None = None) -> None:
        self.objective = dict(objective or {})

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        import ray.tune

        if trainer.sanity_checking:
            return
        metrics = epoch_metrics(trainer.callback_metrics, self.objective)
        metrics["epoch"] = int(trainer.current_epoch)
        with tempfile.TemporaryDirectory() as d:
            trainer.save_checkpoint(Path(d) / CHECKPOINT_NAME)
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(d))


def fit_trial(cfg: DictConfig, objective: Mapping[str, float] | None, resume_from: str | None) -> None:
    """Plain Lightning fit of one trial's config (no test, nothing published)."""
    seed_everything(int(cfg.seed), workers=True)
    torch.set_float32_matmul_precision(str(cfg.get("float32_matmul_precision", "high")))
    datamodule = build_datamodule(cfg)
    model = build_module(cfg, datamodule)
    callbacks = [c for c in build_callbacks(cfg) if not isinstance(c, (ModelCheckpoint, ProgressBar))]
    callbacks.append(TuneReportCallback(objective))
    trainer = build_trainer(cfg, callbacks, build_loggers(cfg), enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)


def fit_trial_on_ray_train(cfg: DictConfig, objective: Mapping[str, float] | None, trial_id: str) -> None:
    """`trainer=ray` trials: a TorchTrainer per trial; its workers' reports (+ objective) are forwarded to Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback as TrainToTune

    from mycolens.training.ray_train import fit_on_ray

    class ObjectiveToTune(TrainToTune):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if objective and metrics:
                metrics = [{**metrics[0], "objective": objective_value(metrics[0], objective)}, *metrics[1:]]
            super().after_report(run_context, metrics, checkpoint)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["trainer"], opts = split_trainer_config(resolved["trainer"])
    result = fit_on_ray(
        resolved,
        **worker_options(opts),
        storage_path=str(Path(resolved["ray"]["storage_path"]).resolve()),
        name=f"tune-{trial_id}",  # the same name after Tuner.restore: Ray Train picks up its own checkpoints
        callbacks=[ObjectiveToTune()],
    )
    if result.error is not None:
        raise result.error


def train_trial(
    params: dict[str, Any], *, config_dir: str, base_overrides: Sequence[str], objective: Mapping[str, float] | None
) -> None:
    """The Tune function trainable: base overrides + sampled params -> composed config -> fit, reporting each epoch."""
    import ray.tune

    context = ray.tune.get_context()
    trial_dir = context.get_trial_dir()
    cfg = compose_config([*base_overrides, *to_overrides(params)], config_dir)
    with open_dict(cfg):
        cfg.paths.output_dir = trial_dir  # the trial's own folder for loggers (no Hydra runtime in a Tune actor)
        cfg.test = False
    if cfg.trainer.get("engine") == "ray":
        fit_trial_on_ray_train(cfg, objective, context.get_trial_id())
        return
    checkpoint = ray.tune.get_checkpoint()  # set when Tuner.restore resumes this trial
    if checkpoint is None:
        fit_trial(cfg, objective, cfg.get("ckpt_path"))
        return
    with checkpoint.as_directory() as d:
        fit_trial(cfg, objective, str(Path(d) / CHECKPOINT_NAME))
