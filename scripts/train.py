"""Train a classifier: `python scripts/train.py [model=resnet18] [trainer=ddp trainer.devices=2] [debug=fdr]`.

On Ray Train workers: `trainer=ray trainer.num_workers=2` (`ray.address=auto` joins a running cluster).

Resume with `ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt`; print the config with `--cfg job`.
"""

import hydra
from omegaconf import DictConfig

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@task
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from mycolens.training.run import train

    if cfg.trainer.get("engine") == "ray":  # trainer=ray: the same fit under Ray Train (conf/trainer/ray.yaml)
        from mycolens.training.ray_train import train_on_ray as train

    multirun = HydraConfig.get().mode.name == "MULTIRUN"
    metrics = train(cfg, publish=not multirun)  # multirun jobs keep their results in their own folders
    print(f"run folder: {cfg.paths.output_dir}")
    return metrics.get("val/macro_f1")  # for Hydra sweepers


if __name__ == "__main__":
    main()
