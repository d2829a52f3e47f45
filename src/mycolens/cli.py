"""The one failure handler at the edge: known errors become one clear line and a non-zero exit."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from mycolens.errors import UserError
from mycolens.utils.paths import repo_root

log = logging.getLogger("mycolens")


def quiet_environment() -> None:
    """No telemetry, no network waits: DVC analytics, Ray usage stats and W&B stay local."""
    os.environ.setdefault("MYCOLENS_ROOT", str(repo_root()))
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")


def known_errors() -> tuple[type[BaseException], ...]:
    from mycolens.catalogue import CatalogueError
    from mycolens.data.shards import ShardsError

    return (UserError, CatalogueError, ShardsError, FileNotFoundError)


def prepare(cfg: Any) -> None:
    """Fill what only the running job knows: its output folder, and the `dvc exp run -S` params."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    if HydraConfig.initialized():
        with open_dict(cfg):
            cfg.paths.output_dir = HydraConfig.get().runtime.output_dir
    if cfg.get("dvc_params"):
        from mycolens.params import apply_params_file

        applied = apply_params_file(cfg, repo_root() / "conf", cfg.dvc_params)
        if applied:
            log.info("from %s: %s", cfg.dvc_params, ", ".join(applied))


def task(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a stage's main: clear one-line errors for known failures, outputs folder filled in."""

    @functools.wraps(fn)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            prepare(cfg)
            return fn(cfg, *args, **kwargs)
        except known_errors() as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        finally:
            logging.shutdown()

    return wrapper
