"""Hyperparameter sweep on Ray Tune: `python scripts/sweep.py [sweep=asha|optuna] [sweep.num_samples=16] [model=...]`.

Writes sweeps/<sweep.name>/ (results.csv, results.png, best.ckpt, summary.json) and the best trial's config as
conf/experiment/sweep_<name>.yaml (`python scripts/train.py experiment=sweep_<name>`). Running it again with the
same name resumes an interrupted sweep; `sweep.resume=false` starts over. `ray.address=auto` uses a running cluster.
"""

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mycolens.cli import quiet_environment, task
from mycolens.utils.paths import repo_root

quiet_environment()
CONF = repo_root(env=False) / "conf"  # the conf/ beside this script, which Hydra composes


@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep")
@task
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from mycolens.data.shards import read_manifest
    from mycolens.tuning.space import is_sweep_override
    from mycolens.tuning.sweep import run_sweep

    read_manifest(cfg.data.shards_dir)  # fail early, in one line, when the data stage has not run
    summary = run_sweep(
        config_dir=str(CONF),
        base_overrides=[o for o in HydraConfig.get().overrides.task if not is_sweep_override(o)],
        sweep=OmegaConf.to_container(cfg.sweep, resolve=True),
        ray_cfg=OmegaConf.to_container(cfg.ray, resolve=True),
        seed=int(cfg.seed),
        ray_train_trials=cfg.trainer.get("engine") == "ray",
    )
    print(json.dumps(summary["best"], indent=2))
    print(f"results: {summary['results_csv']}  plot: {summary['plot']}")
    print(f"train the best config: python scripts/train.py experiment={Path(summary['best']['experiment_file']).stem}")
    return summary["best"]["value"]


if __name__ == "__main__":
    main()
