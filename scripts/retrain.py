"""Retrain on feedback and promote past the safety gate: `python scripts/retrain.py` (`make retrain`).

Locations are in conf/retrain.yaml (`retrain.feedback_dir=DIR`, ...); any other override (e.g. `trainer.max_epochs=20`)
reaches every stage. Exit code 2 when a stage fails or the candidate is refused: the served model stays.
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="retrain")
@task
def main(cfg: DictConfig) -> None:
    import subprocess

    from mycolens.cli import UserError
    from mycolens.inference.onnx_model import ModelRefused
    from mycolens.monitoring.promotion import GateLimits, PromotionRefused
    from mycolens.monitoring.retrain import RetrainPaths, run_retrain

    section = OmegaConf.to_container(cfg.retrain, resolve=True)
    paths = RetrainPaths.from_config({k: v for k, v in section.items() if k not in ("variant", "reviewers_required")})
    given = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(("retrain.", "task_name"))]
    try:
        run_retrain(
            paths,
            Path(__file__).parent,
            GateLimits.from_config(cfg.export.safety_gate),
            str(section["variant"]),
            int(section["reviewers_required"]),
            given,
        )
    except subprocess.CalledProcessError as exc:
        raise UserError(f"retrain stopped: {' '.join(map(str, exc.cmd[1:3]))} failed; the served model stays") from None
    except PromotionRefused as exc:
        moved = ", ".join(exc.report.get("moved", [])) or "none"
        raise UserError(f"{exc}; species that moved: {moved}; the served model stays") from None
    except ModelRefused as exc:
        raise UserError(f"the candidate model is refused, the served model stays: {exc}") from None


if __name__ == "__main__":
    main()
