"""Prune and distil the trained model: `python scripts/compress.py [compress.pruning_ratio=0.5] [trainer=ddp trainer.devices=2]`.

Reads models/best.ckpt, writes models/compressed.ckpt and reports/compress.json; `debug=fdr` runs one batch.
"""

import hydra
from omegaconf import DictConfig

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="compress")
@task
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from mycolens.compression.run import compress

    multirun = HydraConfig.get().mode.name == "MULTIRUN"
    report = compress(cfg, publish=not multirun)  # multirun jobs keep their results in their own folders
    print(f"run folder: {cfg.paths.output_dir}")
    return report.get("student", {}).get("val/accuracy")  # for Hydra sweepers


if __name__ == "__main__":
    main()
